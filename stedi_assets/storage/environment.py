"""The one place that reads the process environment.

`STEDI_<SETTING>` variables fill settings that run config or the CLI left out, and the standard AWS
variables give the S3 options. Nothing here imports Dagster, so `stedi sql` starts fast.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PREFIX = "STEDI_"


def variable(setting: str) -> str:
    """The environment variable of a setting: `ml_join` is `STEDI_ML_JOIN`."""
    return PREFIX + setting.upper()


def settings_from_environment(
    given: Mapping[str, Any], names: Iterable[str], environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """`given`, with each of `names` that it lacks taken from its STEDI_* variable when that is set."""
    environ = os.environ if environ is None else environ
    filled = dict(given)
    for name in names:
        value = environ.get(variable(name), "")
        if name not in filled and value != "":
            filled[name] = value
    return filled


def from_environment(setting: str, value: object, environ: Mapping[str, str] | None = None) -> bool:
    """Whether `value` of a setting is what its STEDI_* variable says (to name where it came from)."""
    return (os.environ if environ is None else environ).get(variable(setting)) == str(value)


ALERT_WEBHOOK_VARIABLE = "STEDI_ALERT_WEBHOOK"


def alert_webhook(environ: Mapping[str, str] | None = None) -> str | None:
    """Where failed runs are reported (STEDI_ALERT_WEBHOOK), if anywhere."""
    return (os.environ if environ is None else environ).get(ALERT_WEBHOOK_VARIABLE) or None


PSEUDONYM_KEY_VARIABLE = "STEDI_PSEUDONYM_KEY"


def pseudonym_key_variable(environ: Mapping[str, str] | None = None) -> str | None:
    """The pseudonym key given in the environment, if any."""
    environ = os.environ if environ is None else environ
    return environ.get(PSEUDONYM_KEY_VARIABLE) or None


def user_config_folder(environ: Mapping[str, str] | None = None) -> Path:
    """Where per-user STEDI files live: $XDG_CONFIG_HOME/stedi, else ~/.config/stedi."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".config")
    return Path(base) / "stedi"


@dataclass(frozen=True)
class S3Options:
    """How to reach S3 or an S3-compatible server; credentials stay with the standard AWS chain."""

    endpoint_url: str | None = None
    region: str = "us-east-1"

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> S3Options:
        environ = os.environ if environ is None else environ
        return cls(
            endpoint_url=environ.get("AWS_ENDPOINT_URL") or None,
            region=environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        )

    @property
    def endpoint(self) -> str:
        return self.endpoint_url or "the default AWS endpoint"

    def delta_options(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """delta-rs (object_store) options: the AWS variables it reads, plus what plain-http servers need."""
        environ = os.environ if environ is None else environ
        options = {
            key: environ[key]
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
            if environ.get(key)
        }
        options["AWS_REGION"] = self.region
        if self.endpoint_url:
            options["AWS_ENDPOINT_URL"] = self.endpoint_url
            if self.endpoint_url.startswith("http://"):
                options["AWS_ALLOW_HTTP"] = "true"
        options.update({"connect_timeout": "5s", "timeout": "60s", "retry_timeout": "60s"})
        return options

    def boto3_client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5),
        )
