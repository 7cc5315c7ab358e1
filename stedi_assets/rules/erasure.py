"""Erasure requests as pure Polars: who asked to be forgotten, and which lines and rows are theirs.

A request is a line `{"email": "...", "requestedAt": <epoch ms>}` in `<landing>/erasure_requests/`.
Once recorded it stays in force: the erasure log keeps only keyed hashes (the person's subject_id
and the keyed hashes of the serial numbers they claimed), and every later ingest drops the lines of
those identities, so re-reading a landing file never brings the person back.
"""

from __future__ import annotations

import polars as pl

from stedi_assets.rules.catalog import LINE_NUMBER, SOURCE_FILE, Source
from stedi_assets.rules.identity import keys, pseudonym_keys, with_pseudonym
from stedi_assets.rules.parsing import RAW_LINE, non_blank_lines
from stedi_assets.rules.transforms import json_string, serial_claims

ERASURE_REQUESTS = "erasure_requests"
"""The landing folder of erasure request files."""
SUBJECT, DEVICE = "subject", "device"
ERASURE_LOG_SCHEMA = {
    "hashed_id": pl.String(),
    "kind": pl.String(),
    "requested_at": pl.Int64(),
    "found_in": pl.List(pl.String()),
}
ERASED = "_erased"


def request_lines(lines: pl.LazyFrame) -> pl.LazyFrame:
    """Every non-blank request line: its file and line number, `email` (null when none can be read)
    and `requestedAt` (null when missing or unreadable)."""
    raw = pl.col(RAW_LINE)
    return non_blank_lines(lines).select(
        pl.col(SOURCE_FILE),
        pl.col(LINE_NUMBER),
        email=json_string(raw, "email"),
        requestedAt=raw.str.extract(r'(?i)"requestedAt"\s*:\s*"?\s*(\d+)', 1).cast(pl.Int64, strict=False),
    )


def requests(lines: pl.LazyFrame) -> pl.LazyFrame:
    """The readable requests (`email`, `requestedAt`); see `request_lines` for the unreadable ones."""
    return request_lines(lines).filter(pl.col("email").is_not_null()).select("email", "requestedAt")


def erased_identities(
    requested: pl.LazyFrame,
    customer_landing: pl.LazyFrame,
    customer_rejects: pl.LazyFrame,
    secret: bytes,
) -> pl.LazyFrame:
    """Keyed hashes to erase: each requester (kind `subject`) and every serial any record of theirs
    claimed (kind `device`), accepted or quarantined, with the earliest request date."""
    people = with_pseudonym(requested, "email", secret, "hashed_id")
    subjects = people.group_by("hashed_id").agg(requested_at=pl.col("requestedAt").min())
    emails = keys(requested, "email", "_email")
    claimed = serial_claims(customer_landing, customer_rejects).join(emails, on="_email", how="semi")
    devices = pseudonym_keys(claimed.filter(pl.col("_serial").is_not_null()), "_serial", secret, "hashed_id")
    return pl.concat(
        [
            subjects.with_columns(kind=pl.lit(SUBJECT)),
            devices.with_columns(kind=pl.lit(DEVICE), requested_at=pl.lit(None, pl.Int64)),
        ],
        how="diagonal",
    ).select("hashed_id", "kind", "requested_at")


IDENTITY_KIND = {"email": SUBJECT, "user": SUBJECT, "serialNumber": DEVICE}
"""Which kind of erased identity an identity column holds."""


def mark_erased(
    frame: pl.LazyFrame, columns: dict[str, str], erased: pl.LazyFrame, secret: bytes
) -> pl.LazyFrame:
    """`frame` with a boolean `_erased`: a row one of whose identity `columns` (name -> kind) is erased."""
    flags = []
    for n, (column, kind) in enumerate(columns.items()):
        hashed, mark = f"_hash_{n}", f"_erased_{n}"
        of_kind = erased.filter(pl.col("kind") == kind).select(
            pl.col("hashed_id").alias(hashed), pl.lit(True).alias(mark)
        )
        frame = (
            with_pseudonym(frame, column, secret, hashed).join(of_kind, on=hashed, how="left").drop(hashed)
        )
        flags.append(pl.col(mark).fill_null(False))
    if not flags:
        return frame.with_columns(pl.lit(False).alias(ERASED))
    return frame.with_columns(pl.any_horizontal(flags).alias(ERASED)).drop(
        [f"_erased_{n}" for n in range(len(columns))]
    )


def landing_identities(source: Source) -> dict[str, str]:
    return {c: IDENTITY_KIND[c] for c in source.identities if c in IDENTITY_KIND}


def recovered_identities(rejects: pl.LazyFrame, source: Source) -> pl.LazyFrame:
    """`rejects` with each identity field of the source read from the raw line (for erasure)."""
    return rejects.with_columns(
        json_string(pl.col(RAW_LINE), c).alias(f"_raw_{c}") for c in landing_identities(source)
    )


def without_erased(
    accepted: pl.LazyFrame, rejected: pl.LazyFrame, source: Source, erased: pl.LazyFrame, secret: bytes
) -> tuple[pl.LazyFrame, pl.LazyFrame, pl.LazyFrame]:
    """The accepted and rejected rows of people not erased, and how many of each were erased (one row:
    `accepted`, `rejected`)."""
    columns = landing_identities(source)
    marked = mark_erased(accepted, columns, erased, secret)
    raw_columns = {f"_raw_{c}": kind for c, kind in columns.items()}
    marked_rejects = mark_erased(recovered_identities(rejected, source), raw_columns, erased, secret)
    counts = pl.concat(
        [
            marked.select(accepted=pl.col(ERASED).sum()),
            marked_rejects.select(rejected=pl.col(ERASED).sum()),
        ],
        how="horizontal",
    )
    return (
        marked.filter(~pl.col(ERASED)).drop(ERASED),
        marked_rejects.filter(~pl.col(ERASED)).drop(ERASED, *raw_columns),
        counts,
    )
