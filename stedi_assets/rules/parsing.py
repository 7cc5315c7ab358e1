"""Landing lines into typed rows and quarantine rows, as pure Polars.

A line is accepted when it is a JSON object whose fields cast to their declared types and whose
required fields are present; otherwise it gets a reason and goes to the quarantine table. Parsing
never raises on bad input.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import polars as pl

from stedi_assets.rules.catalog import INGESTED_AT, LINE_NUMBER, REJECT_COLUMNS, SOURCE_FILE, Source

RAW_LINE, UTF8_VALID, REASON = "raw_line", "_utf8_valid", "reason"
_BOM = b"\xef\xbb\xbf"
_JSON_KEY = r'"((?:[^"\\]|\\.)*)"\s*:'


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
    return raw_lines(b"", "", datetime.fromtimestamp(0, UTC)).clear()


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


def parse_landing(lines: pl.LazyFrame, source: Source, keys: Iterable[str]) -> pl.LazyFrame:
    """Parses non-blank JSON lines into the source's declared columns, giving each a reject reason or null.

    Keys match case-insensitively (Athena's JSON SerDe with case.insensitive) and unknown keys
    are ignored. Values are read as text and cast to the declared type, so a numeric string is
    accepted and a value that cannot be cast is a reason, not a crash. `keys` are the keys
    present in the lines (see json_keys): JSON decoding needs the exact spelling.
    """
    columns = source.columns
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
        # a personal value is not repeated in the reason: reasons are shown outside the lakehouse
        shown = (
            pl.lit(f"{c.name}: a value that")
            if c.pii
            else pl.concat_str(pl.lit(f"{c.name}: '"), text, pl.lit("'"))
        )
        reason = reason.when((text.is_not_null() & cast.is_null()) | nested[c.name]).then(
            pl.concat_str(shown, pl.lit(f" is not {_type_word(c.dtype)}"))
        )
    for name in source.required:
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


def accepted_rows(parsed: pl.LazyFrame, source: Source) -> pl.LazyFrame:
    return parsed.filter(pl.col(REASON).is_null()).select(
        pl.col(n).cast(t) for n, t in source.landing.dtypes.items()
    )


def rejected_rows(parsed: pl.LazyFrame) -> pl.LazyFrame:
    return parsed.filter(pl.col(REASON).is_not_null()).select(
        pl.col(c.name).cast(c.dtype) for c in REJECT_COLUMNS
    )
