"""Delta Lake IO manager on Polars' own readers and sinks.

Each asset is a Delta table at <lakehouse>/<zone>/<table>/. A write is one overwrite commit, so
a re-run replaces the table atomically (readers see the old or the new version, never a mix)
and never appends duplicates. Inputs load as lazy scans so downstream plans stream.
"""

# No `from __future__ import annotations` here: Dagster resolves nested resources from real annotations.

from typing import Any

import dagster as dg
import polars as pl
from deltalake import CommitProperties, DeltaTable
from deltalake.exceptions import DeltaError, TableNotFoundError

from stedi_assets.resources import StediSettings, storage_failure, storage_options, table_uri
from stedi_assets.schemas import TABLES, Table

PREVIEW_ROWS = 5
LAKEHOUSE_SETTING = "--lakehouse / STEDI_LAKEHOUSE_URI"


def asset_table(key: dg.AssetKey) -> Table:
    name = key.path[-1]
    if name not in TABLES:
        raise dg.Failure(f"Asset {key.to_user_string()} is not a declared lakehouse table (schemas.TABLES).")
    return TABLES[name]


def column_schema(declared: Table) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=name,
                type=str(dtype),
                description=next((c.description for c in declared.columns if c.name == name), None),
                tags={"pii": ""} if any(c.name == name and c.pii for c in declared.columns) else {},
            )
            for name, dtype in declared.dtypes.items()
        ]
    )


def markdown_table(frame: pl.DataFrame) -> str:
    """A GitHub-style markdown table; Dagster renders it as the preview."""

    def cell(value: Any) -> str:
        return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * frame.width
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join([header, rule, *rows])


class DeltaLakehouseIOManager(dg.ConfigurableIOManager):
    """Stores Polars frames as Delta tables in the lakehouse, local or on S3."""

    settings: StediSettings

    def uri_for(self, key: dg.AssetKey) -> str:
        declared = asset_table(key)
        return table_uri(self.settings.resolved().lakehouse_uri, declared.zone, declared.name)

    def handle_output(self, context: dg.OutputContext, obj: pl.LazyFrame | pl.DataFrame | None) -> None:
        if obj is None:
            return
        uri = self.uri_for(context.asset_key)
        write_table(uri, obj.lazy())
        context.add_output_metadata(table_metadata(uri, asset_table(context.asset_key)))

    def load_input(self, context: dg.InputContext) -> pl.LazyFrame | pl.DataFrame:
        uri = self.uri_for(context.asset_key)
        frame = scan_table(uri)
        if context.dagster_type.typing_type is pl.DataFrame:
            return frame.collect()
        return frame


def write_table(uri: str, frame: pl.LazyFrame) -> None:
    """Streams the plan into one overwrite commit: the table changes whole or not at all.

    Commits are never rebased (max_commit_retries=0): delta-rs would otherwise rebase an overwrite
    that raced another writer's first commit onto it, keeping both frames. A lost race fails the
    step instead, and the RetryPolicy recomputes and overwrites.
    """
    try:
        frame.sink_delta(
            uri,
            mode="overwrite",
            storage_options=storage_options(uri),
            credential_provider=None,
            delta_write_options={
                "schema_mode": "overwrite",
                "commit_properties": CommitProperties(max_commit_retries=0),
            },
        )
    except (OSError, DeltaError) as error:
        raise storage_failure(uri, error, LAKEHOUSE_SETTING) from error


def open_table(uri: str, version: int | None = None) -> DeltaTable:
    """The Delta table at uri, with a readable error when it was never materialized or is unreachable."""
    try:
        return DeltaTable(uri, storage_options=storage_options(uri), version=version)
    except TableNotFoundError:
        raise dg.Failure(
            f"No Delta table at {uri}: materialize that asset first (or check --lakehouse / "
            f"STEDI_LAKEHOUSE_URI).",
            allow_retries=False,
        ) from None
    except (OSError, DeltaError) as error:
        raise storage_failure(uri, error, LAKEHOUSE_SETTING) from error


def scan_table(uri: str, version: int | None = None) -> pl.LazyFrame:
    """A lazy scan of one version (default: the latest) of a lakehouse table."""
    table = open_table(uri, version)
    return pl.scan_delta(table, storage_options=storage_options(uri), credential_provider=None)


def table_metadata(uri: str, declared: Table) -> dict[str, Any]:
    """What Dagster's UI shows for a materialization: rows, schema, preview, URI, Delta version."""
    version = open_table(uri).version()
    frame = scan_table(uri, version)
    rows = frame.select(pl.len()).collect().item()
    return {
        "dagster/row_count": rows,
        "dagster/column_schema": column_schema(declared),
        "dagster/uri": dg.MetadataValue.path(uri),
        "table_uri": dg.MetadataValue.path(uri),
        "delta_version": version,
        "preview": dg.MetadataValue.md(markdown_table(frame.head(PREVIEW_ROWS).collect())),
    }
