"""Synthetic STEDI landing-zone data, quirks included.

The real STEDI exports are messy in ways the pipeline has to cope with, so the
generator reproduces that mess on purpose instead of producing tidy data:

- Research consent (``shareWithResearchAsOfDate``) is a real epoch-ms for about
  half the customers; for the rest the key is missing, null or ``0``, and only a
  non-zero value counts as consent.
- The fulfilment website reused serial numbers, so a few customers share a
  device serial. Step-trainer readings are keyed by serial only, so a serial
  alone cannot tell which customer produced a reading.
- Accelerometer and step-trainer readings can only be paired by timestamp, and
  timestamps are not unique: customers registered in the same millisecond
  produce identical reading times, and a phone sometimes reports twice at
  the same timestamp.
- Some birthdays are placeholders such as ``1399-01-01`` or ``1900-01-01``.
- Not every customer has readings, and not every phone user has a step trainer.

Output is byte-identical for a given ``(customers, seed)``. Per-customer choices
come from ``random.Random(seed)``; per-reading randomness is a counter-based
splitmix64 evaluated by Polars, which keeps generation vectorised and, unlike
``Expr.hash``, does not change between Polars versions.
"""

from __future__ import annotations

import datetime as dt
import math
import pathlib
import random
import uuid

import polars as pl

_FIRST_NAMES = (
    "Santosh",
    "Sarah",
    "Spencer",
    "Jerry",
    "Frank",
    "Angie",
    "Lyn",
    "Bobby",
    "Ben",
    "Chris",
    "Danny",
    "Ethan",
    "Gail",
    "Jackie",
    "Jeff",
    "Jim",
    "John",
    "Kathy",
    "Larry",
    "Liz",
    "Mohammed",
    "Neeraj",
    "Olivia",
    "Rafael",
    "Raju",
    "Robert",
    "Sean",
    "Senthil",
    "Steph",
    "Trevor",
    "Ava",
    "Maya",
    "Nadia",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Tariq",
    "Uma",
    "Wei",
)
_LAST_NAMES = (
    "Clayton",
    "Jones",
    "Lincoln",
    "Huey",
    "Davis",
    "Aristotle",
    "Anandh",
    "Gonzalez",
    "Spencer",
    "Mitra",
    "Hansen",
    "Alfaro",
    "Doshi",
    "Kim",
    "Habschied",
    "Lewis",
    "Wu",
    "Staples",
    "Young",
    "Stafford",
    "Khatri",
    "Abram",
    "Fibonacci",
    "Gauss",
    "Hopper",
    "Lovelace",
    "Noether",
    "Ramanujan",
    "Turing",
    "Euler",
    "Okafor",
    "Petrov",
    "Quist",
    "Rivera",
    "Sato",
    "Tanaka",
    "Urbina",
    "Vega",
    "Weber",
    "Zhou",
)
_PLACEHOLDER_BIRTHDAYS = ("1399-01-01", "1900-01-01")
_PHONE = "8015551212"

_FIRST_REGISTRATION_MS = 1655564376361
_REGISTRATION_WINDOW_MS = 30 * 24 * 3600 * 1000
_FILE_STAMP_MS = 1691348231425
_FILE_OFFSETS_MS = {
    "customer": (0,),
    "accelerometer": (385, 2117, 3904),
    "step_trainer": (5230, 6871),
}

_RESEARCH_CONSENT_RATE = 0.50
_RESEARCH_ZERO_RATE = 0.02
_OTHER_SHARE_RATE = 0.50
_PLACEHOLDER_BIRTHDAY_RATE = 0.03
_SERIAL_REUSE_RATE = 0.03
_SAME_MS_REGISTRATION_RATE = 0.03
_ACCELEROMETER_RATE = 0.85
_STEP_TRAINER_RATE = 0.90
_DOUBLE_READING_RATE = 0.03
_READINGS_RANGE = (5, 40)
_READING_STEP_MS_RANGE = (200, 600)

_CUSTOMER_SCHEMA = {
    "customerName": pl.String,
    "email": pl.String,
    "birthDay": pl.String,
    "serialNumber": pl.String,
    "registrationDate": pl.Int64,
    "research": pl.Int64,
    "public": pl.Int64,
    "friends": pl.Int64,
    "omit_missing_keys": pl.Boolean,
    "readings": pl.Int64,
    "cadence_ms": pl.Int64,
    "has_step_trainer": pl.Boolean,
}
_TENTHS = {i: i / 10 for i in range(-20, 21)}
_U64 = pl.UInt64
_GOLDEN = 0x9E3779B97F4A7C15


def generate_landing(out_dir: str | pathlib.Path, customers: int = 200, seed: int = 42) -> dict[str, int]:
    """Writes JSON-lines files under <out_dir>/<source>/ for each source; returns the lines per source."""
    rng = random.Random(seed)
    people = _customers(customers, rng)
    slots = _reading_slots(people)
    accelerometer = _accelerometer(slots, rng)
    step_trainer = _step_trainer(slots, rng)

    out = pathlib.Path(out_dir)
    return {
        "customer": _write_lines(_customer_lines(people), out, "customer"),
        "accelerometer": _write_ndjson(accelerometer, out, "accelerometer"),
        "step_trainer": _write_ndjson(step_trainer, out, "step_trainer"),
    }


def _quota(n: int, rate: float, minimum: int) -> int:
    """Guarantees every quirk shows up once there are enough customers to test against."""
    return max(minimum, round(n * rate)) if n >= 20 else round(n * rate)


def _unique_names(n: int, rng: random.Random) -> list[tuple[str, str]]:
    """Emails identify customers downstream, so names repeat only with a numbered surname."""
    pairs = [(first, last) for first in _FIRST_NAMES for last in _LAST_NAMES]
    rng.shuffle(pairs)
    names: list[tuple[str, str]] = []
    for i in range(n):
        first, last = pairs[i % len(pairs)]
        lap = i // len(pairs)
        names.append((first, f"{last}{lap + 1}" if lap else last))
    return names


def _birthday(rng: random.Random) -> str:
    if rng.random() < _PLACEHOLDER_BIRTHDAY_RATE:
        return rng.choice(_PLACEHOLDER_BIRTHDAYS)
    return (dt.date(1935, 1, 1) + dt.timedelta(days=rng.randrange(70 * 365))).isoformat()


def _share_date(rng: random.Random, registered_ms: int, rate: float, zero_rate: float = 0.0) -> int | None:
    """Consent dates equal the registration time; 0 is the bogus value some real rows carry."""
    u = rng.random()
    if u < zero_rate:
        return 0
    return registered_ms if u < zero_rate + rate else None


def _customers(n: int, rng: random.Random) -> pl.DataFrame:
    """One row per customer, plus the hidden reading plan (count, cadence, devices)."""
    names = _unique_names(n, rng)
    serials = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)]
    registered = [_FIRST_REGISTRATION_MS + rng.randrange(_REGISTRATION_WINDOW_MS) for _ in range(n)]
    cadence = [rng.randint(*_READING_STEP_MS_RANGE) for _ in range(n)]
    has_accelerometer = [rng.random() < _ACCELEROMETER_RATE for _ in range(n)]
    has_step_trainer = [a and rng.random() < _STEP_TRAINER_RATE for a in has_accelerometer]
    readings = [rng.randint(*_READINGS_RANGE) if a else 0 for a in has_accelerometer]

    reuse = _quota(n, _SERIAL_REUSE_RATE, minimum=1)
    chosen = rng.sample(range(n), 2 * reuse)
    for borrower, owner in zip(chosen[:reuse], chosen[reuse:], strict=False):
        serials[borrower] = serials[owner]

    with_readings = [i for i, a in enumerate(has_accelerometer) if a]
    twins = min(_quota(n, _SAME_MS_REGISTRATION_RATE, minimum=2), len(with_readings) // 2)
    chosen = rng.sample(with_readings, 2 * twins)
    for copy, original in zip(chosen[:twins], chosen[twins:], strict=False):
        registered[copy] = registered[original]
        cadence[copy] = cadence[original]

    research = [_share_date(rng, r, _RESEARCH_CONSENT_RATE, _RESEARCH_ZERO_RATE) for r in registered]
    public = [_share_date(rng, r, _OTHER_SHARE_RATE) for r in registered]
    friends = [_share_date(rng, r, _OTHER_SHARE_RATE) for r in registered]

    return pl.DataFrame(
        {
            "customerName": [f"{first} {last}" for first, last in names],
            "email": [f"{first}.{last}@test.com" for first, last in names],
            "birthDay": [_birthday(rng) for _ in range(n)],
            "serialNumber": serials,
            "registrationDate": registered,
            "research": research,
            "public": public,
            "friends": friends,
            "omit_missing_keys": [rng.random() < 0.5 for _ in range(n)],
            "readings": readings,
            "cadence_ms": cadence,
            "has_step_trainer": has_step_trainer,
        },
        schema=_CUSTOMER_SCHEMA,
    )


def _share_field(key: str, column: str) -> pl.Expr:
    """Missing consent is either a null or an omitted key; the real export has both."""
    return (
        pl.when(pl.col(column).is_not_null())
        .then(pl.format(f', "{key}": {{}}', pl.col(column)))
        .when(pl.col("omit_missing_keys"))
        .then(pl.lit(""))
        .otherwise(pl.lit(f', "{key}": null'))
    )


def _customer_lines(people: pl.DataFrame) -> pl.Series:
    """Built by hand because the customer export uses spaced separators and optional keys."""
    return people.select(
        pl.format(
            '{{"customerName": "{customerName}", "email": "{email}", "phone": "{}", '
            '"birthDay": "{birthDay}", "serialNumber": "{serialNumber}", '
            '"registrationDate": {registrationDate}, "lastUpdateDate": {registrationDate}'
            "{}{}{}}}",
            pl.lit(_PHONE),
            _share_field("shareWithResearchAsOfDate", "research"),
            _share_field("shareWithPublicAsOfDate", "public"),
            _share_field("shareWithFriendsAsOfDate", "friends"),
        )
    ).to_series()


def _random_u64(base: int) -> pl.Expr:
    """Row-indexed splitmix64 stream, so every row gets an independent, reproducible draw."""
    row = pl.int_range(pl.len(), dtype=_U64) + 1
    state = pl.lit(base, dtype=_U64) + row * pl.lit(_GOLDEN, dtype=_U64)
    z = (state ^ (state // 2**30)) * pl.lit(0xBF58476D1CE4E5B9, dtype=_U64)
    z = (z ^ (z // 2**27)) * pl.lit(0x94D049BB133111EB, dtype=_U64)
    return z ^ (z // 2**31)


def _uniform(base: int) -> pl.Expr:
    """Top 53 bits give an exact float in [0, 1), as random.random() does."""
    return (_random_u64(base) // 2**11).cast(pl.Float64) / 2.0**53


def _reading_slots(people: pl.DataFrame) -> pl.DataFrame:
    """One row per reading time; both devices report at these shared timestamps."""
    return (
        people.filter(pl.col("readings") > 0)
        .select(
            "email",
            "serialNumber",
            "has_step_trainer",
            timestamp=pl.col("registrationDate")
            + pl.int_ranges(0, pl.col("readings")) * pl.col("cadence_ms"),
        )
        .explode("timestamp")
    )


def _axis(base: int) -> pl.Expr:
    """Mostly -1/0/1 like the real phones, otherwise a small value in tenths.

    Tenths are looked up rather than divided, as Polars turns ``/ 10`` into ``* 0.1``
    and would print -1.7000000000000002.
    """
    r = _random_u64(base)
    tenths = (
        pl.when(r % 5 < 3)
        .then((r // 8 % 3).cast(pl.Int64) * 10 - 10)
        .otherwise((r // 8 % 41).cast(pl.Int64) - 20)
    )
    return tenths.replace_strict(_TENTHS, return_dtype=pl.Float64)


def _accelerometer(slots: pl.DataFrame, rng: random.Random) -> pl.DataFrame:
    copies = 1 + (_uniform(rng.getrandbits(64)) < _DOUBLE_READING_RATE).cast(pl.Int64)
    return (
        slots.with_columns(copy=pl.int_ranges(0, copies))
        .explode("copy")
        .select(
            user="email",
            timestamp="timestamp",
            x=_axis(rng.getrandbits(64)),
            y=_axis(rng.getrandbits(64)),
            z=_axis(rng.getrandbits(64)),
        )
        .sort("timestamp", "user", maintain_order=True)
    )


def _step_trainer(slots: pl.DataFrame, rng: random.Random) -> pl.DataFrame:
    return (
        slots.filter("has_step_trainer")
        .select(
            sensorReadingTime="timestamp",
            serialNumber="serialNumber",
            distanceFromObject=(180 + _random_u64(rng.getrandbits(64)) % 120).cast(pl.Int64),
        )
        .sort("sensorReadingTime", "serialNumber", maintain_order=True)
    )


def _part_paths(out: pathlib.Path, source: str) -> list[pathlib.Path]:
    directory = out / source
    directory.mkdir(parents=True, exist_ok=True)
    return [directory / f"{source}-{_FILE_STAMP_MS + o}.json" for o in _FILE_OFFSETS_MS[source]]


def _write_lines(lines: pl.Series, out: pathlib.Path, source: str) -> int:
    (path,) = _part_paths(out, source)
    path.write_bytes("".join(f"{line}\n" for line in lines).encode())
    return lines.len()


def _write_ndjson(frame: pl.DataFrame, out: pathlib.Path, source: str) -> int:
    """Splits into consecutive time slices, one per file, like the batched real exports."""
    paths = _part_paths(out, source)
    size = math.ceil(frame.height / len(paths))
    for i, path in enumerate(paths):
        frame.slice(i * size, size).write_ndjson(path)
    return frame.height
