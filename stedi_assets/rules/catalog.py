"""The lakehouse's declared sources and tables: zone, columns, types, keys and personal data.

A `Source` is declared once; its landing and quarantine tables are generated from it. Trusted and
curated tables are declared here too. Everything else (parsing, assets, checks, the IO manager's
column schema) reads these declarations instead of repeating them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date

import polars as pl

LANDING, QUARANTINE, TRUSTED, CURATED, PRIVACY = "landing", "quarantine", "trusted", "curated", "privacy"

SOURCE_FILE, LINE_NUMBER, INGESTED_AT = "_source_file", "_line_number", "_ingested_at"
EVENT_DAY = "event_day"
"""The UTC day a reading was taken: the Delta partition of the reading tables."""


@dataclass(frozen=True)
class Column:
    name: str
    dtype: pl.DataType
    description: str
    pii: bool = False
    """Personal data: never shown outside the lakehouse."""
    profile: bool = False
    """Customer profile data that must never reach a sensor or training table."""
    optional: bool = False
    """Present only under some settings (the training table's email, with ml_identity=email)."""


PROVENANCE = (
    Column(SOURCE_FILE, pl.String(), "Landing file the row was read from."),
    Column(LINE_NUMBER, pl.Int64(), "1-based line number of the row in its landing file."),
    Column(INGESTED_AT, pl.Datetime("us", "UTC"), "When the landing file was last modified (UTC)."),
)


@dataclass(frozen=True)
class Table:
    name: str
    zone: str
    description: str
    columns: tuple[Column, ...]
    key: str | None = None
    """Identity column: at most one row per identity."""
    subset_of: str | None = None
    """A table whose rows this one only filters, so it can never have more rows."""
    person: str | None = None
    """Column identifying the customer a row is about (an email, or subject_id: its keyed hash)."""
    device: str | None = None
    """Column holding the serial number of the Step Trainer a row came from."""
    person_time: str | None = None
    """Column holding when the person's reading was taken (epoch ms): under the from_consent_date
    policy a row stays only when it is at or after the person's consent date."""
    device_time: str | None = None
    """Column holding when the device's reading was taken, likewise against its owner's consent date."""
    partition_time: str | None = None
    """The epoch-ms column whose UTC day (EVENT_DAY, a declared column) partitions the table."""

    @property
    def partition_by(self) -> tuple[str, ...]:
        return (EVENT_DAY,) if self.partition_time else ()

    identity_columns: tuple[str, ...] = ()
    """Identity columns of a table that is about no one in particular (a landing table)."""

    @property
    def identities(self) -> tuple[str, ...]:
        """Columns identifying whom or which device a row is about: who may have to leave the table."""
        return self.identity_columns or tuple(c for c in (self.person, self.device) if c)

    @property
    def dtypes(self) -> dict[str, pl.DataType]:
        return {c.name: c.dtype for c in self.columns}

    @property
    def sensor_only(self) -> bool:
        """A trusted or curated table declared without profile columns: none may ever appear in it."""
        return self.zone in (TRUSTED, CURATED) and not any(c.profile for c in self.columns)


REJECT_COLUMNS = (
    PROVENANCE[0],
    PROVENANCE[1],
    Column("reason", pl.String(), "Why the line was set aside."),
    Column("raw_line", pl.String(), "The line as read (invalid UTF-8 replaced by U+FFFD).", pii=True),
    PROVENANCE[2],
)


@dataclass(frozen=True)
class Source:
    """One raw JSON-lines source under `<landing>/<name>/`: what a line holds and what it must hold."""

    name: str
    description: str
    """What the source's landing table holds."""
    columns: tuple[Column, ...]
    required: tuple[str, ...]
    """Fields a line must carry (non-empty) to be ingested; lines without them are quarantined."""
    identities: tuple[str, ...] = ()
    """Columns holding an email or a serial number, compared in their identity form in every join."""
    event_time: str | None = None
    """The epoch-ms column that says when a reading was taken."""

    @property
    def landing(self) -> Table:
        return Table(
            f"{self.name}_landing",
            LANDING,
            self.description,
            self.columns + PROVENANCE + ((day_column(self.event_time),) if self.event_time else ()),
            identity_columns=self.identities,
            partition_time=self.event_time,
        )

    @property
    def rejects(self) -> Table:
        return Table(
            f"{self.name}_rejects",
            QUARANTINE,
            f"Lines of the {self.name} landing files that could not be ingested, with the reason.",
            REJECT_COLUMNS,
            identity_columns=("raw_line",),  # a line that leaves (fixed, erased) takes its history along
        )


def day_column(time: str) -> Column:
    return Column(EVENT_DAY, pl.Date(), f"UTC day of {time}: the table's partition.")


def with_event_day(frame: pl.LazyFrame, declared: Table) -> pl.LazyFrame:
    """`frame` with the table's partition day, derived from its partition time, when it has none."""
    if not declared.partition_time or EVENT_DAY in frame.collect_schema().names():
        return frame
    day = pl.from_epoch(pl.col(declared.partition_time), time_unit="ms").dt.date()
    return frame.with_columns(day.alias(EVENT_DAY))


ROWS_PER_PART = 500_000
"""How many rows a table is processed in at a time: days are grouped up to this many rows, so memory
is bounded by it and the per-part overhead (tens of ms) stays small next to the work."""


def day_parts(frame: pl.LazyFrame, rows_per_part: int = ROWS_PER_PART) -> list[list[date | None]]:
    """The partition days of a partitioned table, in order, grouped into parts of at most
    `rows_per_part` rows (a bigger day is a part of its own); one empty part for an empty table."""
    counts = frame.group_by(EVENT_DAY).agg(pl.len()).collect().sort(EVENT_DAY, nulls_last=True)
    parts: list[list[date | None]] = [[]]
    size = 0
    for day, rows in counts.iter_rows():
        if parts[-1] and size + rows > rows_per_part:
            parts.append([])
            size = 0
        parts[-1].append(day)
        size += rows
    return parts


def on_days(frame: pl.LazyFrame, days: list[date | None]) -> pl.LazyFrame:
    """The rows of some partition days (a partitioned scan reads only those days' files)."""
    known = [d for d in days if d is not None]
    keep = pl.col(EVENT_DAY).is_in(known)
    if None in days:
        keep = keep | pl.col(EVENT_DAY).is_null()
    return frame.filter(keep)


def _epoch(name: str, description: str, **flags: bool) -> Column:
    return Column(name, pl.Int64(), f"{description} (epoch milliseconds).", **flags)


CUSTOMER = Source(
    "customer",
    "Every customer record from the fulfilment website, as delivered, with its source line.",
    (
        Column("customerName", pl.String(), "Full name.", pii=True, profile=True),
        Column("email", pl.String(), "Email address; the customer's identity.", pii=True),
        Column("phone", pl.String(), "Phone number.", pii=True, profile=True),
        Column("birthDay", pl.String(), "Birthday as entered (unvalidated).", pii=True, profile=True),
        Column("serialNumber", pl.String(), "Serial number of the customer's Step Trainer."),
        _epoch("registrationDate", "When the customer registered", profile=True),
        _epoch("lastUpdateDate", "When the record last changed", profile=True),
        _epoch(
            "shareWithResearchAsOfDate",
            "Research consent given at; null or 0 means no consent",
            profile=True,
        ),
        _epoch("shareWithPublicAsOfDate", "Public sharing consent given at", profile=True),
        _epoch("shareWithFriendsAsOfDate", "Friends sharing consent given at", profile=True),
    ),
    required=("email", "serialNumber"),
    identities=("email", "serialNumber"),
)
ACCELEROMETER = Source(
    "accelerometer",
    "Every accelerometer reading from the mobile app, as delivered, with its source line.",
    (
        Column("user", pl.String(), "Email of the phone's owner.", pii=True),
        _epoch("timestamp", "Reading time"),
        Column("x", pl.Float64(), "Acceleration along x."),
        Column("y", pl.Float64(), "Acceleration along y."),
        Column("z", pl.Float64(), "Acceleration along z."),
    ),
    required=("user", "timestamp"),
    identities=("user",),
    event_time="timestamp",
)
STEP_TRAINER = Source(
    "step_trainer",
    "Every Step Trainer reading, as delivered, with its source line.",
    (
        _epoch("sensorReadingTime", "Reading time"),
        Column("serialNumber", pl.String(), "Serial number of the Step Trainer."),
        Column("distanceFromObject", pl.Int64(), "Distance to the object in front of the sensor."),
    ),
    required=("serialNumber", "sensorReadingTime"),
    identities=("serialNumber",),
    event_time="sensorReadingTime",
)
SOURCES = (CUSTOMER, ACCELEROMETER, STEP_TRAINER)

CUSTOMER_TRUSTED = Table(
    "customer_trusted",
    TRUSTED,
    "Current state of each customer who agreed to share their data for research.",
    CUSTOMER.columns,
    key="email",
    subset_of=CUSTOMER.landing.name,
    person="email",
)
ACCELEROMETER_TRUSTED = Table(
    "accelerometer_trusted",
    TRUSTED,
    "Accelerometer readings of research-consenting customers only.",
    (*ACCELEROMETER.columns, day_column("timestamp")),
    subset_of=ACCELEROMETER.landing.name,
    person="user",
    person_time="timestamp",
    partition_time="timestamp",
)
STEP_TRAINER_TRUSTED = Table(
    "step_trainer_trusted",
    TRUSTED,
    "Step Trainer readings of devices that belong to curated customers only.",
    (*STEP_TRAINER.columns, day_column("sensorReadingTime")),
    subset_of=STEP_TRAINER.landing.name,
    device="serialNumber",
    device_time="sensorReadingTime",
    partition_time="sensorReadingTime",
)
CUSTOMER_CURATED = Table(
    "customer_curated",
    CURATED,
    "Consenting customers who have accelerometer data: the population of the training set.",
    CUSTOMER.columns,
    key="email",
    subset_of=CUSTOMER_TRUSTED.name,
    person="email",
)
SUBJECT = Column(
    "subject_id",
    pl.String(),
    "Keyed hash (HMAC-SHA256, hex) of the canonical email of the phone's owner: a stable pseudonym.",
)
MACHINE_LEARNING_CURATED = Table(
    "machine_learning_curated",
    CURATED,
    "Step Trainer readings paired with accelerometer readings of the same timestamp: "
    "the step-detection training table, pseudonymous (subject_id; the email only with ml_identity=email).",
    (
        *STEP_TRAINER.columns,
        SUBJECT,
        *(replace(c, optional=True) if c.name == "user" else c for c in ACCELEROMETER.columns),
        day_column("sensorReadingTime"),
    ),
    person=SUBJECT.name,
    device="serialNumber",
    person_time="timestamp",
    device_time="sensorReadingTime",
    partition_time="sensorReadingTime",
)

ERASURE_LOG = Table(
    "erasure_log",
    PRIVACY,
    "Every erasure request in force, by keyed hash only: the person (subject) and the serial numbers "
    "they claimed (device), when it was requested and the tables they were found in when recorded.",
    (
        Column("hashed_id", pl.String(), "Keyed hash (HMAC-SHA256) of the canonical email or serial."),
        Column("kind", pl.String(), "'subject' (a person) or 'device' (a serial number they claimed)."),
        Column("requested_at", pl.Int64(), "requestedAt of the earliest request (epoch ms), if given."),
        Column("found_in", pl.List(pl.String()), "Tables that held the identity when it was recorded."),
    ),
)

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        *(s.landing for s in SOURCES),
        *(s.rejects for s in SOURCES),
        CUSTOMER_TRUSTED,
        ACCELEROMETER_TRUSTED,
        STEP_TRAINER_TRUSTED,
        CUSTOMER_CURATED,
        MACHINE_LEARNING_CURATED,
        ERASURE_LOG,
    )
}
PROFILE_COLUMNS = tuple(c.name for s in SOURCES for c in s.columns if c.profile)
PII_COLUMNS = frozenset(c.name for t in TABLES.values() for c in t.columns if c.pii)
"""Columns whose values never leave the lakehouse (previews and check samples show them masked)."""
