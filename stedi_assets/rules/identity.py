"""One canonical identity for emails and serial numbers, compared the same way everywhere.

The phone app, the website and hand-edited records do not agree on how an identity is spelled, and a
withdrawal that does not reach its consenting record is a privacy breach. So every join, check and
hash compares identities in one canonical form:

1. Unicode NFKC (fullwidth and other compatibility forms become their plain letters),
2. format characters removed (Unicode category Cf: zero-width spaces and joiners, BOM, soft hyphen),
3. case-folded as Python's `str.casefold` does (`ß` is `ss`, final `ς` is `σ`),
4. trimmed of surrounding whitespace.

The form is computed once per distinct value and joined back, never once per row: a table of
millions of readings has a few thousand identities.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import sys
from array import array
from functools import cache

import polars as pl

KEY = "_key"
SUBJECT_ID = "subject_id"


CHUNK = 512


@cache
def _unicode_tables() -> tuple[dict[str, str], str]:
    """What Python's `str.casefold` maps further than lower-casing does (about 180 characters, e.g.
    ß -> ss), and the characters `str.strip` removes (Unicode whitespace plus \\x1c-\\x1f).

    Computed from the running Python's Unicode data, without a Python step per code point (that
    took half a second at every start): every code point but the surrogates decoded at once from
    their UTF-32 encoding, whitespace by one regular-expression scan (`\\s` is `str.isspace`), folds
    by comparing `casefold` with `lower` a block of code points at a time and looking at single
    characters only in the few blocks where the two differ."""
    points = array("I", range(0xD800))
    points.extend(range(0xE000, sys.maxunicode + 1))
    every = points.tobytes().decode(f"utf-32-{sys.byteorder[0]}e")
    folds = {}
    for start in range(0, len(every), CHUNK):
        block = every[start : start + CHUNK]
        if block.casefold() != block.lower():
            folds |= {c: c.casefold() for c in block if c.lower() == c and c.casefold() != c}
    return folds, "".join(re.findall(r"\s", every))


def canonical(expr: pl.Expr) -> pl.Expr:
    """The canonical form of a string expression. Use it on distinct values (see `with_key`)."""
    folds, whitespace = _unicode_tables()
    return (
        expr.str.normalize("NFKC")
        .str.replace_all(r"\p{Cf}", "")
        .str.to_lowercase()
        .str.replace_many(list(folds), list(folds.values()))
        .str.strip_chars(whitespace)
    )


def with_key(frame: pl.LazyFrame, column: str, key: str = KEY) -> pl.LazyFrame:
    """`frame` with the canonical identity of `column` as `key` (null where `column` is null)."""
    distinct = frame.select(pl.col(column)).unique().filter(pl.col(column).is_not_null())
    return frame.join(
        distinct.with_columns(canonical(pl.col(column)).alias(key)),
        on=column,
        how="left",
        maintain_order="left",
    )


def with_record_key(frame: pl.LazyFrame, column: str, key: str = KEY) -> pl.LazyFrame:
    """with_key for a table whose values seldom repeat, such as a customer table (a record or two
    per customer): the canonical identity computed on every row, where finding the distinct values
    first would cost a join and save no work."""
    return frame.with_columns(canonical(pl.col(column)).alias(key))


def spellings(frame: pl.LazyFrame, column: str, other: pl.LazyFrame, key: str = KEY) -> pl.LazyFrame:
    """The distinct values of `column` in `frame` whose canonical identity is one of other's `key`s,
    with other's other columns: a few thousand rows, what join_on_identity joins the frame with."""
    distinct = frame.select(pl.col(column)).unique().filter(pl.col(column).is_not_null())
    return distinct.with_columns(canonical(pl.col(column)).alias(key)).join(other, on=key).drop(key)


def join_on_identity(
    frame: pl.LazyFrame,
    column: str,
    other: pl.LazyFrame,
    key: str = KEY,
    how: str = "inner",
    spelled: pl.LazyFrame | None = None,
) -> pl.LazyFrame:
    """`frame` joined (`inner` or `semi`) to `other` where the canonical identity of `column` is
    other's `key`, without a `key` column. The identity is computed once per distinct value and the
    frame joined once, on its own column: a table of millions of readings is never joined twice.
    `spelled`: `spellings(...)` of these rows (or of more) when it was decided already."""
    matched = spellings(frame, column, other, key) if spelled is None else spelled
    if how == "semi":
        matched = matched.select(column)
    return frame.join(matched, on=column, how=how)  # type: ignore[arg-type]


def keys(frame: pl.LazyFrame, column: str, key: str = KEY) -> pl.LazyFrame:
    """The distinct canonical identities of `column` in `frame`, as one column `key` (no nulls)."""
    distinct = frame.select(pl.col(column)).unique().filter(pl.col(column).is_not_null())
    return distinct.select(canonical(pl.col(column)).alias(key)).unique()


def pseudonym(identity: str, secret: bytes) -> str:
    """The keyed hash of one canonical identity: HMAC-SHA256, hex. Stable under one key, unlinkable
    without it."""
    return hmac.new(secret, identity.encode(), hashlib.sha256).hexdigest()


_INNER_PAD = bytes(b ^ 0x36 for b in range(256))
_OUTER_PAD = bytes(b ^ 0x5C for b in range(256))


KNOWN_LIMIT = 1_000_000
"""The most pseudonyms remembered per key (see pseudonyms): about 150 MB at most, a few MB for the
customers of the reference data replicated a hundred times."""
_known: dict[bytes, dict[str, str]] = {}


def pseudonyms(values: pl.Series, secret: bytes) -> pl.Series:
    """`pseudonym` of each value (null stays null), three times faster than calling it per value:
    HMAC's two keyed SHA-256 states (RFC 2104) are made once and copied for each value.

    A run hashes the same customers in several steps (the consent decision, the sweep, the checks,
    the report), so each value's pseudonym is remembered for the life of the process, per key (by a
    digest of the key: the key itself is not kept), up to KNOWN_LIMIT values; the memory holds only
    identities the process has already read."""
    block = hashlib.sha256().block_size
    key = (hashlib.sha256(secret).digest() if len(secret) > block else secret).ljust(block, b"\0")
    inner, outer = hashlib.sha256(key.translate(_INNER_PAD)), hashlib.sha256(key.translate(_OUTER_PAD))
    known = _known.setdefault(hashlib.sha256(b"stedi.pseudonyms\0" + secret).digest(), {})

    def keyed(value: str) -> str:
        found = known.get(value)
        if found is not None:
            return found
        digest = inner.copy()
        digest.update(value.encode())
        result = outer.copy()
        result.update(digest.digest())
        hashed = result.hexdigest()
        if len(known) < KNOWN_LIMIT:
            known[value] = hashed
        return hashed

    return pl.Series([None if v is None else keyed(v) for v in values], dtype=pl.String)


def _hashed(column: str, secret: bytes) -> pl.Expr:
    return pl.col(column).map_batches(lambda values: pseudonyms(values, secret), return_dtype=pl.String)


def pseudonym_map(frame: pl.LazyFrame, column: str, secret: bytes, into: str = SUBJECT_ID) -> pl.LazyFrame:
    """Each distinct value of `column` in `frame` (`column`) with the keyed hash of its canonical
    identity (`into`): a few thousand rows, hashed once per identity in Python's hmac."""
    distinct = frame.select(pl.col(column)).unique().filter(pl.col(column).is_not_null())
    canonicals = distinct.with_columns(canonical(pl.col(column)).alias("_canonical"))
    hashed = canonicals.select("_canonical").unique().with_columns(_hashed("_canonical", secret).alias(into))
    return canonicals.join(hashed, on="_canonical").select(column, into)


def with_pseudonym(
    frame: pl.LazyFrame,
    column: str,
    secret: bytes,
    into: str = SUBJECT_ID,
    mapped: pl.LazyFrame | None = None,
) -> pl.LazyFrame:
    """`frame` with the keyed hash of the canonical identity of `column` as `into`.

    The distinct values are mapped to their hashes first (pseudonym_map; `mapped`: that map made
    already, from these rows or more), so the frame itself is joined once, on its own column.
    """
    mapping = pseudonym_map(frame, column, secret, into) if mapped is None else mapped
    return frame.join(mapping, on=column, how="left", maintain_order="left")


def pseudonym_keys(frame: pl.LazyFrame, column: str, secret: bytes, key: str = KEY) -> pl.LazyFrame:
    """The distinct keyed hashes of the identities of `column`, as one column `key`."""
    return keys(frame, column, "_canonical").select(_hashed("_canonical", secret).alias(key))
