"""Landing lines into typed rows and quarantine rows, as pure Polars.

A line is accepted when it is a JSON object whose fields cast to their declared types and whose
required fields are present; otherwise it gets a reason and goes to the quarantine table. Parsing
never raises on bad input.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import polars as pl

from stedi_assets.rules.catalog import (
    INGESTED_AT,
    LINE_NUMBER,
    REJECT_COLUMNS,
    SOURCE_FILE,
    Source,
    with_event_day,
)

RAW_LINE, UTF8_VALID, REASON = "raw_line", "_utf8_valid", "reason"
LINE_COLUMNS = (SOURCE_FILE, LINE_NUMBER, RAW_LINE, UTF8_VALID, INGESTED_AT)
"""The columns of numbered landing lines (raw_lines, LandingZone.lines)."""
SLOW = "_slow"
"""Set on a line the one-pass parse leaves to the exact path (see parse_fast)."""
UNREADABLE = "truncated or corrupt compressed data: the file cannot be read from this line on"
"""The reason of the line that stands for the rest of a compressed file that could not be read
(unreadable_rest: the only kind of line without a raw_line)."""
_BOM = b"\xef\xbb\xbf"
_JSON_KEY = r'"((?:[^"\\]|\\.)*)"\s*:'
_STRING = r'"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u(?:[0-9a-cA-CefEF][0-9a-fA-F]{3}|[dD][0-7][0-9a-fA-F]{2}))*"'
_INTEGER = r"(?:0|-?[1-9][0-9]{0,17})"  # no exponent, no -0, fits in 64 bits
_DECIMAL = r"(?:-?0\.[0-9]*[1-9][0-9]*|0\.0+|-?[1-9][0-9]{0,17}\.[0-9]+)"
_WS = r"[ \t\r\n]*"  # JSON's whitespace, not Unicode's


def flat_object(source: Source) -> str:
    """A regex for a JSON object whose values are all scalars, strictly valid (no lone surrogates, no
    control characters in strings, no number out of range): the shape of nearly every landing line,
    and one Polars' json_decode never fails on. A number with a fraction is allowed only under a
    float field's declared key, so a decoded value's text is what the exact parse would read."""
    floats = "|".join(re.escape(c.name) for c in source.columns if c.dtype.is_float())
    scalar = rf"(?:{_STRING}|{_INTEGER}|true|false|null)"
    pair = rf"{_STRING}{_WS}:{_WS}{scalar}"
    if floats:
        pair = rf"(?:\"(?:{floats})\"{_WS}:{_WS}{_DECIMAL}|{pair})"
    return rf"^{_WS}\{{{_WS}(?:{pair}{_WS}(?:,{_WS}{pair}{_WS})*)?\}}{_WS}$"


def ordered_object(source: Source) -> str:
    """A regex for the line a producer writes: the declared fields in declared order under their
    declared spellings, no other key, each a JSON value of the field's type (a string, an integer, or
    for a float field an integer or a decimal) or null, strictly valid as in flat_object; a field
    that is not required may be left out. Such a line decodes straight into the declared types, and
    to the same values the exact parser reads: that parser's JSON decoder parses a number the same
    way before writing it back as text, and reads an absent key as it reads null."""

    def value(dtype: pl.DataType) -> str:
        if dtype.is_integer():
            return rf"(?:{_INTEGER}|null)"
        if dtype.is_float():
            return rf"(?:{_DECIMAL}|{_INTEGER}|null)"
        return rf"(?:{_STRING}|null)"

    pairs = [(c.name, rf'"{re.escape(c.name)}"{_WS}:{_WS}{value(c.dtype)}') for c in source.columns]
    comma = rf"{_WS},{_WS}"
    # one alternative per field that can come first: those up to the first required one
    alternatives = []
    for first, (name, pair) in enumerate(pairs):
        rest = (
            p if n in source.required else f"(?:{p})?"
            for n, p in ((n, comma + q) for n, q in pairs[first + 1 :])
        )
        alternatives.append(pair + "".join(rest))
        if name in source.required:
            break
    return rf"^{_WS}\{{{_WS}(?:{'|'.join(alternatives)}){_WS}\}}{_WS}$"


def raw_lines(blob: bytes, source_file: str, landed_at: datetime, first_line: int = 1) -> pl.DataFrame:
    """Splits one landing file (or a block of its whole lines starting at line `first_line`) into
    numbered lines, marking lines that are not valid UTF-8.

    `landed_at` (the file's modification time) is the rows' ingestion time: stable across
    re-runs, so re-ingesting the same files gives identical tables.

    A leading BOM (at the start of the file only) and CRLF endings are normal input. Invalid UTF-8
    only costs a per-line decode of the file that contains it; the line is kept (with U+FFFD) so it
    can be quarantined.
    """
    if first_line == 1 and blob.startswith(_BOM):
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
            LINE_NUMBER: pl.int_range(first_line, first_line + len(lines), eager=True, dtype=pl.Int64),
            RAW_LINE: lines.str.strip_chars_end("\r"),
            UTF8_VALID: valid,
            INGESTED_AT: pl.repeat(landed_at, len(lines), eager=True, dtype=pl.Datetime("us", "UTC")),
        }
    )
    if blob.endswith(b"\n"):
        frame = frame.head(-1)
    return frame


def unreadable_rest(source_file: str, line: int, landed_at: datetime) -> pl.DataFrame:
    """The one line that stands for the rest of a file from `line` on, when it could not be read (a
    truncated or corrupt gzip file): it has no raw_line, and is quarantined as UNREADABLE."""
    frame = raw_lines(b"", source_file, landed_at, line)
    return frame.with_columns(pl.lit(None, pl.String).alias(RAW_LINE), pl.lit(False).alias(UTF8_VALID))


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
    structural = [
        (pl.col(RAW_LINE).is_null(), UNREADABLE),
        (~pl.col(UTF8_VALID), "invalid UTF-8"),
        (normalized.is_null() & (stripped != "null"), "not valid JSON"),
        (~stripped.str.starts_with("{"), "not a JSON object"),
    ]
    return (
        non_blank_lines(lines)
        .with_columns(_json=pl.when(pl.col(UTF8_VALID)).then(pl.col(RAW_LINE).str.json_path_match("$")))
        .with_columns(**{f"_text_{name}": expr for name, expr in text_values.items()})
        .with_columns(_typed(source))
        .with_columns(_first_reason([*structural, *_field_reasons(source, nested)]).alias(REASON))
    )


def _typed(source: Source) -> list[pl.Expr]:
    """Each declared column from its text: trimmed, cast leniently (a failed cast is a reason)."""
    return [
        pl.col(f"_text_{c.name}").str.strip_chars().cast(c.dtype, strict=False).alias(c.name)
        for c in source.columns
    ]


def _field_reasons(source: Source, nested: dict[str, pl.Expr]) -> list[tuple[pl.Expr, pl.Expr | str]]:
    """Why a JSON object's fields cannot be ingested: a value of the wrong type, a missing field."""
    reasons: list[tuple[pl.Expr, pl.Expr | str]] = []
    for c in source.columns:
        text, cast = pl.col(f"_text_{c.name}"), pl.col(c.name)
        # a personal value is not repeated in the reason: reasons are shown outside the lakehouse
        shown = (
            pl.lit(f"{c.name}: a value that")
            if c.pii
            else pl.concat_str(pl.lit(f"{c.name}: '"), text, pl.lit("'"))
        )
        wrong = text.is_not_null() & cast.is_null()
        if c.name in nested:
            wrong = wrong | nested[c.name]
        reasons.append((wrong, pl.concat_str(shown, pl.lit(f" is not {_type_word(c.dtype)}"))))
    for name in source.required:
        missing = pl.col(name).is_null() | (pl.col(name).cast(pl.String) == "")
        reasons.append((missing, f"missing required field {name}"))
    return reasons


def _first_reason(reasons: list[tuple[pl.Expr, pl.Expr | str]]) -> pl.Expr:
    """The first reason whose condition holds, else null."""
    (condition, reason), *rest = reasons
    chain = pl.when(condition).then(pl.lit(reason) if isinstance(reason, str) else reason)
    for condition, reason in rest:
        chain = chain.when(condition).then(pl.lit(reason) if isinstance(reason, str) else reason)
    return chain.otherwise(None)


def parse_fast(lines: pl.LazyFrame, source: Source) -> pl.LazyFrame:
    """The one-pass parse of non-blank lines: each line JSON-decoded once into the declared fields.

    A line that is a flat JSON object (flat_object) and carries every declared field under its
    declared spelling, non-null, is decided here with the same reasons as parse_landing (a value
    that cannot be cast, an empty required field). Any other line, a few in real data, is marked
    SLOW and left undecided (null fields, null reason): parse_landing decides it exactly (other
    key spellings, absent or null fields, nested values, invalid JSON or UTF-8). Streams.
    """
    ordered = pl.col(UTF8_VALID) & pl.col(RAW_LINE).str.contains(ordered_object(source))
    # the flat-object test and the text decoding only look at the few lines that are not ordered
    flat = pl.when(~pl.col("_ordered")).then(pl.col(RAW_LINE)).str.contains(flat_object(source))
    typed = pl.Struct({c.name: c.dtype for c in source.columns})
    fields = pl.Struct({c.name: pl.String() for c in source.columns})
    texts = [f"_text_{c.name}" for c in source.columns]
    return (
        non_blank_lines(lines)
        .with_columns(_ordered=ordered)
        .with_columns(
            _typed=pl.when("_ordered").then(pl.col(RAW_LINE)).str.json_decode(typed),
            _doc=pl.when(flat & pl.col(UTF8_VALID)).then(pl.col(RAW_LINE)).str.json_decode(fields),
        )
        .with_columns(pl.col("_doc").struct.field(c.name).alias(f"_text_{c.name}") for c in source.columns)
        .with_columns(
            (
                ~pl.col("_ordered") & pl.any_horizontal(pl.col(t).is_null() for t in texts).fill_null(True)
            ).alias(SLOW)
        )
        # an ordered line's values come decoded (its texts are null, so no cast can fail for it),
        # strings trimmed as the text path trims every value
        .with_columns(
            pl.coalesce(_decoded(pl.col("_typed").struct.field(c.name), c.dtype), typed_value).alias(c.name)
            for c, typed_value in zip(source.columns, _typed(source), strict=True)
        )
        .with_columns(pl.when(~pl.col(SLOW)).then(_first_reason(_field_reasons(source, {}))).alias(REASON))
        .drop("_ordered", "_typed")
    )


def _decoded(value: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    return value.str.strip_chars() if dtype == pl.String else value


def _in_memory(frame: pl.LazyFrame) -> pl.LazyFrame:
    return frame.collect().lazy()


def parse_lines(
    lines: pl.LazyFrame,
    source: Source,
    materialize: Callable[[pl.LazyFrame], pl.LazyFrame] = _in_memory,
) -> pl.LazyFrame:
    """Every non-blank line with its declared columns and its reject reason (null when accepted).

    One pass decides nearly every line (parse_fast) and hands it to `materialize` (the ingest
    streams it into a file; by default it is collected); the few lines it leaves are then parsed
    exactly (parse_landing). Both give the same rows and reasons for a line; the output keeps
    raw_line only on rejected lines, and lists the exactly-parsed lines last.
    """
    output = list(dict.fromkeys(c.name for c in (*source.columns, *REJECT_COLUMNS)))
    keep_raw = pl.when(pl.col(REASON).is_not_null() | pl.col(SLOW)).then(pl.col(RAW_LINE)).alias(RAW_LINE)
    first = materialize(
        parse_fast(lines, source).select(*(c for c in output if c != RAW_LINE), keep_raw, UTF8_VALID, SLOW)
    )
    left = first.filter(pl.col(SLOW)).select(LINE_COLUMNS).collect().lazy()
    exact = parse_landing(left, source, json_keys(left)).collect().lazy()
    exact = exact.with_columns(pl.when(pl.col(REASON).is_not_null()).then(pl.col(RAW_LINE)).alias(RAW_LINE))
    return pl.concat([first.filter(~pl.col(SLOW)).select(output), exact.select(output)])


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
    accepted = with_event_day(parsed.filter(pl.col(REASON).is_null()), source.landing)
    return accepted.select(pl.col(n).cast(t) for n, t in source.landing.dtypes.items())


def rejected_rows(parsed: pl.LazyFrame) -> pl.LazyFrame:
    return parsed.filter(pl.col(REASON).is_not_null()).select(
        pl.col(c.name).cast(c.dtype) for c in REJECT_COLUMNS
    )
