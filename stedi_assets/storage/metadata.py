"""How a declared table describes itself to Dagster: zone, column schema and frame previews."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg
import polars as pl

from stedi_assets.rules.catalog import PII_COLUMNS, Table
from stedi_assets.rules.contracts import Verdict
from stedi_assets.rules.identity import KEY, with_pseudonym

ZONE = "stedi/zone"
"""Definition metadata: the lakehouse zone (folder) of the asset's Delta table."""
OPTIONAL_INPUT = "stedi/optional_input"
"""Definition metadata: readers get None instead of an error while the table was never written."""
IDENTITIES = "stedi/identities"
"""Definition metadata: columns identifying whom a row is about (when one leaves, history goes too)."""
PARTITION_BY = "stedi/partition_by"
"""Definition metadata: the columns the asset's Delta table is partitioned by (the event day)."""
WARNING = "stedi/warning"
"""Materialization metadata: a sentence for whoever runs the lakehouse (`stedi run` prints it)."""
MASK = "[redacted]"
CELL_CHARACTERS = 60
"""Longer cells are cut: a reason or value must not carry a whole line into Dagster's event log."""


def column_schema(declared: Table) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=c.name, type=str(c.dtype), description=c.description, tags={"pii": ""} if c.pii else {}
            )
            for c in declared.columns
        ]
    )


def definition_metadata(declared: Table) -> dict[str, Any]:
    """Metadata of the asset that stores `declared`: where the IO manager puts it and its columns."""
    return {
        ZONE: declared.zone,
        IDENTITIES: list(declared.identities),
        PARTITION_BY: list(declared.partition_by),
        "dagster/column_schema": column_schema(declared),
    }


def pii_columns(metadata: Mapping[str, Any]) -> frozenset[str]:
    """Every catalog PII column, plus those tagged `pii` in an asset's declared column schema."""
    schema = metadata.get("dagster/column_schema")
    tagged = {c.name for c in schema.columns if "pii" in c.tags} if schema else set()
    return PII_COLUMNS | tagged


def markdown_table(frame: pl.DataFrame, pii: frozenset[str] = PII_COLUMNS) -> str:
    """A GitHub-style markdown table for Dagster's metadata, which lives outside the lakehouse.

    Values of personal-data columns, and of the canonical identity (`_key`: an email or a serial,
    as a contract's sample of identities names them), are masked and every cell is cut short, so no
    name, email, phone, birthday or raw customer line reaches the Dagster instance's event log.
    """

    def cell(value: Any, masked: bool) -> str:
        if value is None:
            return ""
        text = MASK if masked else str(value).replace("|", "\\|").replace("\n", " ")
        return text if len(text) <= CELL_CHARACTERS else text[: CELL_CHARACTERS - 1] + "…"

    masked = [name in pii or name == KEY for name in frame.columns]
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * frame.width
    rows = [
        "| " + " | ".join(cell(v, m) for v, m in zip(row, masked, strict=True)) + " |"
        for row in frame.iter_rows()
    ]
    return "\n".join([header, rule, *rows])


HASHED_IDENTITIES = ("email", "user")
"""Identity columns a sample shows as keyed hashes (so a person can be found by subject_id), not masked."""
HASH_CHARACTERS = 16


def pseudonymized(frame: pl.DataFrame, secret: bytes) -> pl.DataFrame:
    """A sample whose email columns are replaced by the first characters of their keyed hash (the
    person's subject_id), renamed `<column> (keyed hash)`."""
    for column in (c for c in HASHED_IDENTITIES if c in frame.columns):
        hashed = with_pseudonym(frame.lazy().select(column), column, secret, "_hash").collect()["_hash"]
        frame = frame.with_columns(hashed.str.slice(0, HASH_CHARACTERS).alias(column)).rename(
            {column: f"{column} (keyed hash)"}
        )
    return frame


def verdict_metadata(verdict: Verdict, secret: bytes | None = None) -> dict[str, Any]:
    """What a contract saw, for a check result or a failure: summary, counts, and a sample with PII
    masked and, when the pseudonym key is given, people identified by keyed hash."""
    metadata: dict[str, Any] = {"summary": verdict.summary}
    if verdict.observed is not None:
        metadata["observed"] = verdict.observed
    if verdict.expected is not None:
        metadata["expected"] = verdict.expected
    if verdict.offending.height:
        sample = verdict.offending if secret is None else pseudonymized(verdict.offending, secret)
        metadata["offending_rows"] = dg.MetadataValue.md(markdown_table(sample))
    return metadata
