"""Declared tables of the lakehouse: zone, columns, types and which columns are personal data.

One registry serves the transforms (projection and casts), the IO manager (table paths),
the asset metadata (column schema) and the checks (schema and privacy contracts).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

LANDING, TRUSTED, CURATED, QUARANTINE = "landing", "trusted", "curated", "quarantine"

SOURCE_FILE, LINE_NUMBER, INGESTED_AT = "_source_file", "_line_number", "_ingested_at"
PROVENANCE: dict[str, pl.DataType] = {
    SOURCE_FILE: pl.String(),
    LINE_NUMBER: pl.Int64(),
    INGESTED_AT: pl.Datetime("us", "UTC"),
}
PROVENANCE_DESCRIPTIONS = {
    SOURCE_FILE: "Landing file the row was read from.",
    LINE_NUMBER: "1-based line number of the row in its landing file.",
    INGESTED_AT: "When the run that read the row started (UTC).",
}


@dataclass(frozen=True)
class Column:
    name: str
    dtype: pl.DataType
    description: str
    pii: bool = False
    profile: bool = False
    """Customer profile data that must never reach a sensor or ML table."""


@dataclass(frozen=True)
class Table:
    name: str
    zone: str
    description: str
    columns: tuple[Column, ...]
    key: str | None = None
    """Identity column: at most one row per trimmed, lower-cased value."""
    with_provenance: bool = False

    @property
    def dtypes(self) -> dict[str, pl.DataType]:
        declared = {c.name: c.dtype for c in self.columns}
        if self.with_provenance:
            declared.update(PROVENANCE)
        return declared


def _epoch(name: str, description: str, **kwargs: bool) -> Column:
    return Column(name, pl.Int64(), f"{description} (epoch milliseconds).", **kwargs)


CUSTOMER_COLUMNS = (
    Column("customerName", pl.String(), "Full name.", pii=True, profile=True),
    Column("email", pl.String(), "Email address; the customer's identity.", pii=True),
    Column("phone", pl.String(), "Phone number.", pii=True, profile=True),
    Column("birthDay", pl.String(), "Birthday as entered (unvalidated).", pii=True, profile=True),
    Column("serialNumber", pl.String(), "Serial number of the customer's Step Trainer."),
    _epoch("registrationDate", "When the customer registered", profile=True),
    _epoch("lastUpdateDate", "When the record last changed", profile=True),
    _epoch(
        "shareWithResearchAsOfDate", "Research consent given at; null or 0 means no consent", profile=True
    ),
    _epoch("shareWithPublicAsOfDate", "Public sharing consent given at", profile=True),
    _epoch("shareWithFriendsAsOfDate", "Friends sharing consent given at", profile=True),
)
ACCELEROMETER_COLUMNS = (
    Column("user", pl.String(), "Email of the phone's owner.", pii=True),
    _epoch("timestamp", "Reading time"),
    Column("x", pl.Float64(), "Acceleration along x."),
    Column("y", pl.Float64(), "Acceleration along y."),
    Column("z", pl.Float64(), "Acceleration along z."),
)
STEP_TRAINER_COLUMNS = (
    _epoch("sensorReadingTime", "Reading time"),
    Column("serialNumber", pl.String(), "Serial number of the Step Trainer."),
    Column("distanceFromObject", pl.Int64(), "Distance to the object in front of the sensor."),
)

SOURCE_COLUMNS: dict[str, tuple[Column, ...]] = {
    "customer": CUSTOMER_COLUMNS,
    "accelerometer": ACCELEROMETER_COLUMNS,
    "step_trainer": STEP_TRAINER_COLUMNS,
}
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "customer": ("email", "serialNumber"),
    "accelerometer": ("user", "timestamp"),
    "step_trainer": ("serialNumber", "sensorReadingTime"),
}
SOURCES = tuple(SOURCE_COLUMNS)

REJECT_COLUMNS = (
    Column(SOURCE_FILE, pl.String(), PROVENANCE_DESCRIPTIONS[SOURCE_FILE]),
    Column(LINE_NUMBER, pl.Int64(), PROVENANCE_DESCRIPTIONS[LINE_NUMBER]),
    Column("reason", pl.String(), "Why the line was set aside."),
    Column("raw_line", pl.String(), "The line as read (invalid UTF-8 replaced by U+FFFD)."),
    Column(INGESTED_AT, pl.Datetime("us", "UTC"), PROVENANCE_DESCRIPTIONS[INGESTED_AT]),
)


def landing_table_name(source: str) -> str:
    return f"{source}_landing"


def rejects_table_name(source: str) -> str:
    return f"{source}_rejects"


TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table(
            "customer_landing",
            LANDING,
            "Every customer record from the fulfilment website, as delivered, with its source line.",
            CUSTOMER_COLUMNS,
            with_provenance=True,
        ),
        Table(
            "accelerometer_landing",
            LANDING,
            "Every accelerometer reading from the mobile app, as delivered, with its source line.",
            ACCELEROMETER_COLUMNS,
            with_provenance=True,
        ),
        Table(
            "step_trainer_landing",
            LANDING,
            "Every Step Trainer reading, as delivered, with its source line.",
            STEP_TRAINER_COLUMNS,
            with_provenance=True,
        ),
        *(
            Table(
                rejects_table_name(source),
                QUARANTINE,
                f"Lines of the {source} landing files that could not be ingested, with the reason.",
                REJECT_COLUMNS,
            )
            for source in SOURCES
        ),
        Table(
            "customer_trusted",
            TRUSTED,
            "Current state of each customer who agreed to share their data for research.",
            CUSTOMER_COLUMNS,
            key="email",
        ),
        Table(
            "accelerometer_trusted",
            TRUSTED,
            "Accelerometer readings of research-consenting customers only.",
            ACCELEROMETER_COLUMNS,
        ),
        Table(
            "step_trainer_trusted",
            TRUSTED,
            "Step Trainer readings of devices that belong to curated customers only.",
            STEP_TRAINER_COLUMNS,
        ),
        Table(
            "customer_curated",
            CURATED,
            "Consenting customers who have accelerometer data: the population of the training set.",
            CUSTOMER_COLUMNS,
            key="email",
        ),
        Table(
            "machine_learning_curated",
            CURATED,
            "Step Trainer readings paired with accelerometer readings of the same timestamp: "
            "the step-detection training table.",
            STEP_TRAINER_COLUMNS + ACCELEROMETER_COLUMNS,
        ),
    )
}

SENSOR_TABLES = ("accelerometer_trusted", "step_trainer_trusted", "machine_learning_curated")
PROFILE_COLUMNS = tuple(c.name for c in CUSTOMER_COLUMNS if c.profile)


def table(name: str) -> Table:
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"{name!r} is not a declared table; declared: {', '.join(TABLES)}") from None
