"""Delta Lake IO manager on Polars' own readers and sinks.

Each asset is a Delta table at <lakehouse>/<zone>/<table>/, the zone taken from the asset's
definition metadata. A write is one overwrite commit, so a re-run replaces the table atomically
(readers see the old or the new version, never a mix). Inputs load as lazy scans so plans stream.
"""

# No `from __future__ import annotations` here: Dagster resolves nested resources from real annotations.
from collections.abc import Mapping
from typing import Any

import dagster as dg
import polars as pl

from stedi_assets.storage.errors import StorageError
from stedi_assets.storage.lakehouse import Lakehouse
from stedi_assets.storage.metadata import ZONE, markdown_table, pii_columns
from stedi_assets.storage.resources import StediStorage, as_failure

PREVIEW_ROWS = 5


def _table_uri(lakehouse: Lakehouse, key: dg.AssetKey, metadata: Mapping[str, Any]) -> str:
    zone = metadata.get(ZONE)
    if zone is None:
        raise dg.Failure(
            f"Asset {key.to_user_string()} has no {ZONE} metadata: declare it with the zone factories.",
            allow_retries=False,
        )
    return lakehouse.table_uri(str(zone), key.path[-1])


class DeltaIOManager(dg.ConfigurableIOManager):
    """Stores Polars frames as Delta tables in the lakehouse, local or on S3."""

    storage: StediStorage

    def handle_output(self, context: dg.OutputContext, obj: pl.LazyFrame | pl.DataFrame | None) -> None:
        if obj is None:
            return
        lakehouse = self.storage.lakehouse
        uri = _table_uri(lakehouse, context.asset_key, context.definition_metadata)
        try:
            lakehouse.write(uri, obj.lazy())
            context.add_output_metadata(
                table_metadata(lakehouse, uri, pii_columns(context.definition_metadata))
            )
        except StorageError as error:
            raise as_failure(error) from error

    def load_input(self, context: dg.InputContext) -> pl.LazyFrame | pl.DataFrame:
        lakehouse = self.storage.lakehouse
        upstream = context.upstream_output
        uri = _table_uri(lakehouse, context.asset_key, upstream.definition_metadata if upstream else {})
        try:
            frame = lakehouse.scan(uri)
        except StorageError as error:
            raise as_failure(error) from error
        return frame.collect() if context.dagster_type.typing_type is pl.DataFrame else frame


def table_metadata(lakehouse: Lakehouse, uri: str, pii: frozenset[str]) -> dict[str, Any]:
    """What Dagster's UI shows for a materialization: rows, preview (PII masked), URI, Delta version."""
    table = lakehouse.open(uri)
    version, frame = table.version(), lakehouse.scan_opened(uri, table)
    return {
        "dagster/row_count": frame.select(pl.len()).collect().item(),
        "dagster/uri": dg.MetadataValue.path(uri),
        "table_uri": dg.MetadataValue.path(uri),
        "delta_version": version,
        "preview": dg.MetadataValue.md(markdown_table(frame.head(PREVIEW_ROWS).collect(), pii)),
    }
