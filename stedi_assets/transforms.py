"""The lakehouse rules as pure Polars: LazyFrame in, LazyFrame out, no Dagster and no I/O.

Every rule here is what the assets compute and what the tests pin down on hand-made frames.
Identities (emails, serial numbers) are compared trimmed and lower-cased on both sides of
every join, because the app and the website do not agree on case or whitespace.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from enum import Enum

import polars as pl

from stedi_assets.schemas import (
    INGESTED_AT,
    LINE_NUMBER,
    REJECT_COLUMNS,
    REQUIRED_FIELDS,
    SOURCE_COLUMNS,
    SOURCE_FILE,
    table,
)

RAW_LINE, UTF8_VALID, REASON = "raw_line", "_utf8_valid", "reason"
_BOM = b"\xef\xbb\xbf"
_JSON_KEY = r'"((?:[^"\\]|\\.)*)"\s*:'


class MlJoin(str, Enum):
    """How machine_learning_curated pairs a Step Trainer reading with accelerometer readings."""

    SEED = "seed"
    """Same timestamp only: the rule of the original Glue job; pairs different customers' readings."""
    SAME_CUSTOMER = "same_customer"
    """Same timestamp and the accelerometer's owner owns the Step Trainer."""


def identity(column: str | pl.Expr) -> pl.Expr:
    """The comparable form of an email or serial number."""
    expr = pl.col(column) if isinstance(column, str) else column
    return expr.str.strip_chars().str.to_lowercase()


def has_research_consent() -> pl.Expr:
    consent = pl.col("shareWithResearchAsOfDate")
    return consent.is_not_null() & (consent != 0)


def raw_lines(blob: bytes, source_file: str, landed_at: datetime) -> pl.DataFrame:
    """Splits one landing file into numbered lines, marking lines that are not valid UTF-8.

    `landed_at` (the file's modification time) is the rows' ingestion time: stable across
    re-runs, so re-ingesting the same files gives identical tables.

    A leading BOM and CRLF endings are normal input. Invalid UTF-8 only costs a per-line
    decode of the file that contains it; the line is kept (with U+FFFD) so it can be quarantined.
    """
    if blob.startswith(_BOM):
        blob = blob[len(_BOM) :]
    try:
        lines = pl.Series(RAW_LINE, [blob.decode("utf-8")]).str.split("\n").explode()
        valid = pl.repeat(True, len(lines), eager=True)
    except UnicodeDecodeError:
        pieces = blob.split(b"\n")
        lines = pl.Series(RAW_LINE, [p.decode("utf-8", "replace") for p in pieces])
        valid = pl.Series([_is_utf8(p) for p in pieces])
    frame = pl.DataFrame(
        {
            SOURCE_FILE: pl.repeat(source_file, len(lines), eager=True, dtype=pl.String),
            LINE_NUMBER: pl.int_range(1, len(lines) + 1, eager=True, dtype=pl.Int64),
            RAW_LINE: lines.str.strip_chars_end("\r"),
            UTF8_VALID: valid,
            INGESTED_AT: pl.repeat(landed_at, len(lines), eager=True, dtype=pl.Datetime("us", "UTC")),
        }
    )
    if blob.endswith(b"\n"):
        frame = frame.head(-1)
    return frame


def _is_utf8(piece: bytes) -> bool:
    try:
        piece.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def empty_raw_lines() -> pl.DataFrame:
    return raw_lines(b"", "", datetime.fromtimestamp(0, timezone.utc)).clear()


def non_blank_lines(lines: pl.LazyFrame) -> pl.LazyFrame:
    """Lines that carry content; blank lines are formatting, neither accepted nor rejected."""
    return lines.filter(~(pl.col(UTF8_VALID) & (pl.col(RAW_LINE).str.strip_chars() == "")))


def json_keys(lines: pl.LazyFrame) -> list[str]:
    """Every distinct object key that appears in the lines (collects a small result).

    Lines with a backslash are re-serialised first, so an escaped spelling (`"\\u0065mail"`)
    counts as the key it spells; the rest are scanned as they are, which is four times cheaper.
    """
    valid = lines.filter(pl.col(UTF8_VALID))
    escaped = pl.col(RAW_LINE).str.contains("\\", literal=True)
    texts = pl.concat(
        [
            valid.filter(~escaped).select(pl.col(RAW_LINE).alias("text")),
            valid.filter(escaped).select(pl.col(RAW_LINE).str.json_path_match("$").alias("text")),
        ]
    )
    keys = (
        texts.select(pl.col("text").str.extract_all(_JSON_KEY).alias("key"))
        .explode("key")
        .select(pl.col("key").unique().str.extract(_JSON_KEY).unique().drop_nulls())
        .collect()
    )
    return sorted(keys["key"].to_list())


def parse_landing(lines: pl.LazyFrame, source: str, keys: Iterable[str]) -> pl.LazyFrame:
    """Parses non-blank JSON lines into the source's declared columns, giving each a reject reason or null.

    Keys match case-insensitively (Athena's JSON SerDe with case.insensitive) and unknown keys
    are ignored. Values are read as text and cast to the declared type, so a numeric string is
    accepted and a value that cannot be cast is a reason, not a crash. `keys` are the keys
    present in the lines (see json_keys): JSON decoding needs the exact spelling.
    """
    columns = SOURCE_COLUMNS[source]
    spellings: dict[str, list[str]] = {c.name: [] for c in columns}
    by_lower = {c.name.lower(): c.name for c in columns}
    for key in keys:
        if key.lower() in by_lower:
            spellings[by_lower[key.lower()]].append(key)
    normalized = pl.col("_json")
    text_values = {
        c.name: (
            pl.coalesce([normalized.str.json_path_match(f"$.{k}") for k in spellings[c.name]])
            if spellings[c.name]
            else pl.lit(None, pl.String)
        )
        for c in columns
    }
    nested = {c.name: _is_nested(normalized, spellings[c.name], pl.col(f"_text_{c.name}")) for c in columns}
    stripped = pl.col(RAW_LINE).str.strip_chars()
    reason = (
        pl.when(~pl.col(UTF8_VALID))
        .then(pl.lit("invalid UTF-8"))
        .when(normalized.is_null() & (stripped != "null"))
        .then(pl.lit("not valid JSON"))
        .when(~stripped.str.starts_with("{"))
        .then(pl.lit("not a JSON object"))
    )
    for c in columns:
        text, cast = pl.col(f"_text_{c.name}"), pl.col(c.name)
        reason = reason.when((text.is_not_null() & cast.is_null()) | nested[c.name]).then(
            pl.concat_str(pl.lit(f"{c.name}: '"), text, pl.lit(f"' is not {_type_word(c.dtype)}"))
        )
    for name in REQUIRED_FIELDS[source]:
        reason = reason.when(pl.col(name).is_null() | (pl.col(name).cast(pl.String) == "")).then(
            pl.lit(f"missing required field {name}")
        )

    return (
        non_blank_lines(lines)
        .with_columns(_json=pl.when(pl.col(UTF8_VALID)).then(pl.col(RAW_LINE).str.json_path_match("$")))
        .with_columns(**{f"_text_{name}": expr for name, expr in text_values.items()})
        .with_columns(
            pl.col(f"_text_{c.name}").str.strip_chars().cast(c.dtype, strict=False).alias(c.name)
            for c in columns
        )
        .with_columns(reason.otherwise(None).alias(REASON))
    )


def _is_nested(document: pl.Expr, spellings: list[str], text: pl.Expr) -> pl.Expr:
    """Whether a top-level value is an object or array rather than a string that looks like one.

    JSONPath returns both as the same text; only the document shows whether it was quoted.
    """
    if not spellings:
        return pl.lit(False)
    encoded = pl.struct(text.alias("v")).struct.json_encode()
    quoted = encoded.str.slice(5, encoded.str.len_chars() - 6)
    as_string = pl.any_horizontal(
        [document.str.contains(pl.lit(f'"{key}":') + quoted, literal=True) for key in spellings]
    )
    return text.str.contains(r"^[\[{]").fill_null(False) & ~as_string.fill_null(False)


def _type_word(dtype: pl.DataType) -> str:
    if dtype.is_integer():
        return "an integer"
    if dtype.is_float():
        return "a number"
    return "a string"


def accepted_rows(parsed: pl.LazyFrame, source: str) -> pl.LazyFrame:
    landing = table(f"{source}_landing")
    return parsed.filter(pl.col(REASON).is_null()).select(
        pl.col(n).cast(t) for n, t in landing.dtypes.items()
    )


def rejected_rows(parsed: pl.LazyFrame) -> pl.LazyFrame:
    return parsed.filter(pl.col(REASON).is_not_null()).select(
        pl.col(c.name).cast(c.dtype) for c in REJECT_COLUMNS
    )


def _declared(frame: pl.LazyFrame, name: str) -> pl.LazyFrame:
    return frame.select(pl.col(n).cast(t) for n, t in table(name).dtypes.items())


def customer_current_state(customer_landing: pl.LazyFrame) -> pl.LazyFrame:
    """One row per customer (by email): the record with the latest lastUpdateDate.

    Ties are broken by source file, then line, so the latest delivery wins deterministically.
    """
    order = ["lastUpdateDate", SOURCE_FILE, LINE_NUMBER]
    return (
        customer_landing.with_columns(_email_key=identity("email"))
        .group_by("_email_key")
        .agg(pl.all().sort_by(order, nulls_last=False).last())
        .drop("_email_key")
    )


def customer_trusted(customer_landing: pl.LazyFrame) -> pl.LazyFrame:
    """Customers whose current record gives research consent."""
    current = customer_current_state(customer_landing)
    return _declared(current.filter(has_research_consent()), "customer_trusted")


def accelerometer_trusted(
    accelerometer_landing: pl.LazyFrame, customer_trusted: pl.LazyFrame
) -> pl.LazyFrame:
    """Readings whose user is a trusted customer, each distinct reading once."""
    consenting = customer_trusted.select(_key=identity("email"))
    readings = accelerometer_landing.join(consenting, left_on=identity("user"), right_on="_key", how="semi")
    return _declared(readings, "accelerometer_trusted").unique(maintain_order=True)


def customer_curated(customer_trusted: pl.LazyFrame, accelerometer_trusted: pl.LazyFrame) -> pl.LazyFrame:
    """Trusted customers with at least one trusted accelerometer reading."""
    users = accelerometer_trusted.select(_key=identity("user"))
    curated = customer_trusted.join(users, left_on=identity("email"), right_on="_key", how="semi")
    return _declared(curated, "customer_curated")


def attributable_serials(customer_landing: pl.LazyFrame, customer_curated: pl.LazyFrame) -> pl.LazyFrame:
    """Serial numbers whose every current claimant is a curated customer.

    The fulfilment website reused serial numbers; a device shared with a customer who did not
    consent cannot be told apart, so its readings stay out of the trusted zone.
    """
    claimants = customer_current_state(customer_landing).select(
        _serial=identity("serialNumber"), _email=identity("email")
    )
    curated = customer_curated.select(_email=identity("email"), _curated=pl.lit(True))
    return (
        claimants.join(curated, on="_email", how="left")
        .group_by("_serial")
        .agg(pl.col("_curated").fill_null(False).all().alias("_all_curated"))
        .filter(pl.col("_all_curated"))
        .select("_serial")
    )


def ambiguous_serials(customer_landing: pl.LazyFrame, customer_curated: pl.LazyFrame) -> pl.LazyFrame:
    """Serials of curated customers that are also claimed by someone who is not curated."""
    curated = customer_curated.select(_serial=identity("serialNumber")).unique()
    return curated.join(
        attributable_serials(customer_landing, customer_curated), on="_serial", how="anti"
    ).rename({"_serial": "serialNumber"})


def step_trainer_trusted(
    step_trainer_landing: pl.LazyFrame,
    customer_curated: pl.LazyFrame,
    customer_landing: pl.LazyFrame,
) -> pl.LazyFrame:
    """Readings of devices owned by curated customers (and by nobody else), each distinct reading once."""
    serials = attributable_serials(customer_landing, customer_curated)
    readings = step_trainer_landing.join(
        serials, left_on=identity("serialNumber"), right_on="_serial", how="semi"
    )
    return _declared(readings, "step_trainer_trusted").unique(maintain_order=True)


def _owner_serials(customer_curated: pl.LazyFrame) -> pl.LazyFrame:
    return customer_curated.select(_user=identity("email"), _owner_serial=identity("serialNumber"))


def machine_learning_curated(
    step_trainer_trusted: pl.LazyFrame,
    accelerometer_trusted: pl.LazyFrame,
    customer_curated: pl.LazyFrame,
    ml_join: MlJoin = MlJoin.SEED,
) -> pl.LazyFrame:
    """Each Step Trainer reading paired with the accelerometer readings taken at the same time."""
    if MlJoin(ml_join) is MlJoin.SEED:
        paired = step_trainer_trusted.join(
            accelerometer_trusted,
            left_on="sensorReadingTime",
            right_on="timestamp",
            how="inner",
            coalesce=False,
        )
    else:
        owned = accelerometer_trusted.join(
            _owner_serials(customer_curated), left_on=identity("user"), right_on="_user"
        )
        paired = step_trainer_trusted.join(
            owned,
            left_on=[pl.col("sensorReadingTime"), identity("serialNumber")],
            right_on=[pl.col("timestamp"), pl.col("_owner_serial")],
            how="inner",
            coalesce=False,
        )
    return _declared(paired, "machine_learning_curated")


def cross_customer_pairs(
    machine_learning_curated: pl.LazyFrame, customer_curated: pl.LazyFrame
) -> pl.LazyFrame:
    """Training rows whose accelerometer owner does not own the Step Trainer of the row."""
    owners = _owner_serials(customer_curated)
    return (
        machine_learning_curated.join(owners, left_on=identity("user"), right_on="_user", how="left")
        .filter(pl.col("_owner_serial").is_null() | (pl.col("_owner_serial") != identity("serialNumber")))
        .drop("_user", "_owner_serial", strict=False)
    )
