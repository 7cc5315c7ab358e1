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
from botocore.exceptions import BotoCoreError, ClientError
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
            configured = os.environ.get("STEDI_MAX_REJECT_RATE") or str(DEFAULT_MAX_REJECT_RATE)
            try:
                rate = float(configured)
            except ValueError:
                raise dg.Failure(
                    f"STEDI_MAX_REJECT_RATE={configured!r} is not a number (e.g. 0.05)"
                ) from None
        return Settings(
            landing_uri=_pick(self.landing_uri, "STEDI_LANDING_URI", DEFAULT_LANDING_URI).rstrip("/"),
            lakehouse_uri=_pick(self.lakehouse_uri, "STEDI_LAKEHOUSE_URI", DEFAULT_LAKEHOUSE_URI).rstrip("/"),
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
    options["AWS_REGION"] = (
        os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    )
    endpoint = options.get("AWS_ENDPOINT_URL", "")
    if endpoint.startswith("http://"):
        options["AWS_ALLOW_HTTP"] = "true"
    options.update({"connect_timeout": "5s", "timeout": "60s", "retry_timeout": "60s"})
    return options


def table_uri(lakehouse_uri: str, zone: str, name: str) -> str:
    root = lakehouse_uri
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
            listed = [
                (obj["Key"], obj["LastModified"])
                for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                for obj in page.get("Contents", [])
            ]
            if not listed:
                raise dg.Failure(
                    f"Nothing under {uri}: put the {source} JSON-lines files there or point "
                    f"--landing / STEDI_LANDING_URI at the landing root.",
                    allow_retries=False,
                )
            objects = sorted((key, modified) for key, modified in listed if key.endswith(".json"))
            return [
                (f"s3://{bucket}/{key}", client.get_object(Bucket=bucket, Key=key)["Body"].read(), modified)
                for key, modified in objects
            ]
        except (ClientError, BotoCoreError) as error:
            raise storage_failure(uri, error, "--landing / STEDI_LANDING_URI") from error


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_DENIED = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken", "403 Forbidden")
_UNREACHABLE = ("Connection refused", "operation timed out", "dns error", "Could not connect to the endpoint")
_THROTTLED = ("SlowDown", "ServiceUnavailable", "InternalError", "503", "500 Internal")


def storage_failure(uri: str, error: Exception, setting: str) -> dg.Failure:
    """One readable sentence for a storage failure (boto3 or delta-rs): which URI, what to fix.

    Only faults that can pass (an unreachable endpoint, throttling) are left to the RetryPolicy;
    a missing bucket or refused credentials fail at once.
    """
    text = _ANSI.sub("", str(error))
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or "the default AWS endpoint"
    denied = next((code for code in _DENIED if code in text), None)
    if "NoSuchBucket" in text:
        message, transient = (
            f"Bucket of {uri} does not exist at {endpoint}: create it or fix {setting}.",
            False,
        )
    elif denied:
        code = denied.replace("403 Forbidden", "403")
        message = f"Access to {uri} was denied ({code}): check the AWS credentials and the bucket policy."
        transient = False
    elif "Unable to locate credentials" in text:
        message = (
            f"No AWS credentials for {uri}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)."
        )
        transient = False
    elif "URL scheme is not allowed" in text:
        message, transient = f"{endpoint} is plain http: set AWS_ALLOW_HTTP=true for {uri}.", False
    elif "Failed to commit transaction" in text or ("already exists" in text and "_delta_log" in text):
        message = f"Another writer committed {uri} at the same time; this write was not applied."
        transient = True
    elif any(marker in text for marker in _UNREACHABLE):
        message = (
            f"Cannot reach {endpoint} for {uri}: check AWS_ENDPOINT_URL and that the S3 server is running."
        )
        transient = True
    else:
        first = next((line.strip(" ↳") for line in text.splitlines() if line.strip()), text)
        message, transient = f"Storage error on {uri}: {first}", any(m in text for m in _THROTTLED)
    return dg.Failure(message, allow_retries=transient)
