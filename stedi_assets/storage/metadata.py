"""How a declared table describes itself to Dagster: zone, column schema and frame previews."""

from __future__ import annotations

from typing import Any

import dagster as dg
import polars as pl

from stedi_assets.rules.catalog import Table

ZONE = "stedi/zone"
"""Definition metadata: the lakehouse zone (folder) of the asset's Delta table."""


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
    return {ZONE: declared.zone, "dagster/column_schema": column_schema(declared)}


def markdown_table(frame: pl.DataFrame) -> str:
    """A GitHub-style markdown table; Dagster renders it as the preview."""

    def cell(value: Any) -> str:
        return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * frame.width
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join([header, rule, *rows])
