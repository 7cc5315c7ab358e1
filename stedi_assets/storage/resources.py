"""The Dagster face of storage: typed settings with environment defaults, and the storage resource.

Each setting is taken from run config (the launchpad, a schedule, `stedi run` flags), else from its
`STEDI_<NAME>` environment variable, else its default. The environment is read when a run builds
its resources, never when the code location is imported.
"""

# No `from __future__ import annotations` here: Dagster resolves nested resources from real annotations.
from enum import Enum
from typing import Any

import dagster as dg
from pydantic import Field, ValidationError, model_validator

from stedi_assets.storage.environment import (
    S3Options,
    from_environment,
    settings_from_environment,
    variable,
)
from stedi_assets.storage.errors import StorageError
from stedi_assets.storage.lakehouse import (
    DEFAULT_LAKEHOUSE_URI,
    DEFAULT_LANDING_URI,
    DEFAULT_RETENTION_HOURS,
    Lakehouse,
    LandingZone,
)
from stedi_assets.storage.pseudonym import PseudonymKey, pseudonym_key


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


class InvalidSettings(ValueError):
    """Settings that do not validate: one line naming each bad value and where it came from."""


class EnvironmentDefaults(dg.ConfigurableResource):
    """A resource whose fields not set in run config come from their STEDI_* variables.

    Dagster passes a field's default along as if it were set, so a value equal to the default
    also gives way to the environment. A value that does not validate raises InvalidSettings: one
    line naming each bad value, where it came from (run config or its STEDI_* variable) and what is
    allowed, so a run that starts with it fails with that line (a bad value is never retried).
    """

    def __init__(self, **data: Any):
        try:
            super().__init__(**data)
        except ValidationError as error:
            raise InvalidSettings(_problems(error)) from None

    @model_validator(mode="before")
    @classmethod
    def _environment(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        unset = {
            name: value
            for name, value in data.items()
            if name not in cls.model_fields or _plain(value) != _plain(cls.model_fields[name].default)
        }
        return settings_from_environment(unset, cls.model_fields)


def _problems(error: ValidationError) -> str:
    problems = []
    for problem in error.errors():
        field = str(problem["loc"][0]) if problem["loc"] else ""
        value = problem.get("input")
        message = problem["msg"].removeprefix("Value error, ")
        problems.append(
            f"{variable(field) if from_environment(field, value) else field}={value!r}: {message}"
        )
    return "; ".join(problems)


class StediStorage(EnvironmentDefaults):
    """Where the landing zone and the lakehouse live: local folders or s3:// prefixes.

    S3 credentials and endpoint come from the standard AWS variables (AWS_ENDPOINT_URL for
    S3-compatible servers).
    """

    landing_uri: str = Field(
        DEFAULT_LANDING_URI,
        description="Landing root, a folder or s3://bucket/prefix holding <source>/*.json "
        "(env STEDI_LANDING_URI).",
    )
    lakehouse_uri: str = Field(
        DEFAULT_LAKEHOUSE_URI,
        description="Lakehouse root, a folder or s3://bucket/prefix; each table is a Delta table at "
        "<root>/<zone>/<table> (env STEDI_LAKEHOUSE_URI).",
    )

    retention_hours: int = Field(
        DEFAULT_RETENTION_HOURS,
        ge=0,
        description="Hours a replaced table version stays readable (time travel) when the write removed "
        "no one; a write that removes a person deletes every older version (env STEDI_RETENTION_HOURS).",
    )

    @property
    def s3(self) -> S3Options:
        return S3Options.from_environment()

    @property
    def lakehouse(self) -> Lakehouse:
        return Lakehouse(self.lakehouse_uri, self.s3, self.retention_hours)

    @property
    def landing(self) -> LandingZone:
        return LandingZone(self.landing_uri, self.s3)

    @property
    def pseudonym(self) -> PseudonymKey:
        """The key of subject_id and of every keyed hash in checks and logs (StorageError if none)."""
        return pseudonym_key(self.lakehouse_uri)


def pseudonym_of(storage: StediStorage) -> PseudonymKey:
    """The pseudonym key, or a failure that is not retried (a missing key stays missing)."""
    try:
        return storage.pseudonym
    except StorageError as error:
        raise as_failure(error) from error


def as_failure(error: StorageError) -> dg.Failure:
    """A storage error as a step failure; only transient ones are left to the RetryPolicy."""
    return dg.Failure(error.message, allow_retries=error.transient)
