"""Settings and storage: the one place that decides local folders or S3.

Every setting resolves in the same order: explicit value (Definitions, run config or CLI flag),
then its `STEDI_*` environment variable, then the default that makes `make demo` work on a
laptop. dg.EnvVar has no default, so the environment is read here, at run time, and nowhere else.
"""

# No `from __future__ import annotations` here: Dagster resolves nested resources from real annotations.
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg
import polars as pl
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError
from dagster_aws.s3 import S3Resource

from stedi_assets.transforms import MlJoin, empty_raw_lines, raw_lines

DEFAULT_LANDING_URI = "data/landing"
DEFAULT_LAKEHOUSE_URI = "lakehouse"
DEFAULT_MAX_REJECT_RATE = 0.05

LandingFile = tuple[str, bytes, datetime]


@dataclass(frozen=True)
class Settings:
    landing_uri: str
    lakehouse_uri: str
    ml_join: MlJoin
    expectations_file: str | None
    max_reject_rate: float


def is_s3(uri: str) -> bool:
    return uri.startswith(("s3://", "s3a://"))


def _pick(value: str | None, env: str, default: str | None) -> str | None:
    return value if value not in (None, "") else os.environ.get(env) or default


class StediSettings(dg.ConfigurableResource):
    """Where the landing zone and the lakehouse live, and how the training table is joined."""

    landing_uri: str | None = None
    lakehouse_uri: str | None = None
    ml_join: str | None = None
    expectations_file: str | None = None
    max_reject_rate: float | None = None

    def resolved(self) -> Settings:
        ml_join = _pick(self.ml_join, "STEDI_ML_JOIN", MlJoin.SEED.value)
        try:
            join = MlJoin(ml_join)
        except ValueError:
            choices = ", ".join(m.value for m in MlJoin)
            raise dg.Failure(f"ml_join {ml_join!r} is not one of: {choices}") from None
        rate = self.max_reject_rate
        if rate is None:
            rate = float(os.environ.get("STEDI_MAX_REJECT_RATE") or DEFAULT_MAX_REJECT_RATE)
        return Settings(
            landing_uri=_pick(self.landing_uri, "STEDI_LANDING_URI", DEFAULT_LANDING_URI).rstrip("/"),
            lakehouse_uri=_pick(self.lakehouse_uri, "STEDI_LAKEHOUSE_URI", DEFAULT_LAKEHOUSE_URI).rstrip(
                "/"
            ),
            ml_join=join,
            expectations_file=_pick(self.expectations_file, "STEDI_EXPECTATIONS_FILE", None),
            max_reject_rate=rate,
        )


def storage_options(uri: str) -> dict[str, str] | None:
    """delta-rs options for a table URI: standard AWS variables, plus what S3-compatible servers need."""
    if not is_s3(uri):
        return None
    options = {
        key: os.environ[key]
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL")
        if os.environ.get(key)
    }
    options["AWS_REGION"] = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    endpoint = options.get("AWS_ENDPOINT_URL", "")
    if endpoint.startswith("http://"):
        options["AWS_ALLOW_HTTP"] = "true"
    options.update({"connect_timeout": "5s", "timeout": "60s", "retry_timeout": "60s"})
    return options


def table_uri(lakehouse_uri: str, zone: str, name: str) -> str:
    root = lakehouse_uri.rstrip("/")
    if not is_s3(root):
        root = str(Path(root).absolute())
    return f"{root}/{zone}/{name}"


class LandingZone(dg.ConfigurableResource):
    """Reads the raw JSON-lines files of one source, from a folder or an S3 prefix."""

    settings: StediSettings
    s3: S3Resource

    def read_lines(self, source: str) -> pl.DataFrame:
        """All lines of every `*.json` file under <landing>/<source>/, numbered per file, in path order."""
        root = self.settings.resolved().landing_uri
        files = self._read_s3(root, source) if is_s3(root) else self._read_local(root, source)
        frames = [raw_lines(blob, name, landed_at) for name, blob, landed_at in files]
        return pl.concat(frames) if frames else empty_raw_lines()

    @staticmethod
    def _read_local(root: str, source: str) -> list[LandingFile]:
        folder = Path(root) / source
        if not folder.is_dir():
            raise dg.Failure(
                f"Landing folder {folder.absolute()} does not exist. Put the {source} JSON-lines files "
                f"there, point --landing / STEDI_LANDING_URI at the landing root, or run "
                f"`stedi generate --out {root}` for sample data.",
                allow_retries=False,
            )
        return [
            (str(p), p.read_bytes(), datetime.fromtimestamp(p.stat().st_mtime, timezone.utc))
            for p in sorted(folder.rglob("*.json"))
            if p.is_file()
        ]

    def _read_s3(self, root: str, source: str) -> list[LandingFile]:
        parsed = urlparse(root)
        bucket, prefix = parsed.netloc, f"{parsed.path.strip('/')}/{source}/".lstrip("/")
        uri = f"s3://{bucket}/{prefix}"
        client = self.s3.get_client()
        try:
            objects = sorted(
                (obj["Key"], obj["LastModified"])
                for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                for obj in page.get("Contents", [])
                if obj["Key"].endswith(".json")
            )
            return [
                (f"s3://{bucket}/{key}", client.get_object(Bucket=bucket, Key=key)["Body"].read(), modified)
                for key, modified in objects
            ]
        except (ClientError, BotoCoreError) as error:
            raise dg.Failure(s3_error_message(uri, error), allow_retries=_transient(error)) from error


def _transient(error: Exception) -> bool:
    if isinstance(error, ClientError):
        return error.response.get("Error", {}).get("Code") in {"SlowDown", "InternalError", "ServiceUnavailable"}
    return isinstance(error, EndpointConnectionError)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def delta_error_message(uri: str, error: Exception) -> str:
    """One readable sentence for a delta-rs / object-store failure on a lakehouse table."""
    text = _ANSI.sub("", str(error))
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or "the default AWS endpoint"
    if "NoSuchBucket" in text:
        return f"Bucket of {uri} does not exist at {endpoint}: create it or fix --lakehouse / STEDI_LAKEHOUSE_URI."
    if "Connection refused" in text or "operation timed out" in text or "dns error" in text:
        return f"Cannot reach {endpoint} for {uri}: check AWS_ENDPOINT_URL and that the S3 server is running."
    if "InvalidAccessKeyId" in text or "SignatureDoesNotMatch" in text or "AccessDenied" in text or "403" in text:
        return f"Access to {uri} was denied: check the AWS credentials and the bucket policy."
    if "URL scheme is not allowed" in text:
        return f"{endpoint} is plain http: set AWS_ALLOW_HTTP=true (done automatically for http AWS_ENDPOINT_URL)."
    first = next((line.strip(" ↳") for line in text.splitlines() if line.strip()), text)
    return f"Storage error on {uri}: {first}"


def s3_error_message(uri: str, error: Exception) -> str:
    """One readable sentence about an S3 failure: what went wrong with which URI and what to fix."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or "the default AWS endpoint"
    if isinstance(error, NoCredentialsError):
        return f"No AWS credentials for {uri}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)."
    if isinstance(error, EndpointConnectionError):
        return f"Cannot reach {endpoint} for {uri}: check AWS_ENDPOINT_URL and that the S3 server is running."
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        if code == "NoSuchBucket":
            return f"Bucket of {uri} does not exist at {endpoint}: create it or fix the URI."
        if code in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"}:
            return f"Access to {uri} was denied ({code}): check the AWS credentials and the bucket policy."
        return f"S3 refused {uri} ({code}): {error}"
    return f"S3 error on {uri}: {error}"
