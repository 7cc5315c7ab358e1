"""Landing zone: the raw JSON-lines sources, parsed into typed tables with their quarantine."""

from __future__ import annotations

import dagster as dg
import polars as pl

from stedi_assets import transforms
from stedi_assets.resources import LandingZone
from stedi_assets.schemas import LANDING, QUARANTINE, SOURCES, landing_table_name, rejects_table_name, table
from stedi_assets.zones import KINDS, STORAGE_RETRY

LINES_READ = "lines_read"
"""Materialization metadata: non-blank lines in the files this ingest read (the conservation baseline)."""


def _ingest_asset(source: str) -> dg.AssetsDefinition:
    landing_name, rejects_name = landing_table_name(source), rejects_table_name(source)

    @dg.multi_asset(
        name=f"ingest_{source}",
        outs={
            landing_name: dg.AssetOut(
                group_name=LANDING, kinds=KINDS, description=table(landing_name).description
            ),
            rejects_name: dg.AssetOut(
                group_name=QUARANTINE, kinds=KINDS, description=table(rejects_name).description
            ),
        },
        description=f"Reads every *.json file of the {source} source; lines that fail to parse are quarantined.",
        retry_policy=STORAGE_RETRY,
        pool=f"delta_{source}_ingest",
    )
    def ingest(landing: LandingZone):
        lines = landing.read_lines(source).lazy()
        read = transforms.non_blank_lines(lines).select(pl.len()).collect().item()
        parsed = transforms.parse_landing(lines, source, transforms.json_keys(lines)).collect()
        accepted = transforms.accepted_rows(parsed.lazy(), source)
        rejected = transforms.rejected_rows(parsed.lazy())
        yield dg.MaterializeResult(asset_key=landing_name, value=accepted, metadata={LINES_READ: read})
        yield dg.MaterializeResult(asset_key=rejects_name, value=rejected)

    return ingest


customer_landing, accelerometer_landing, step_trainer_landing = (_ingest_asset(s) for s in SOURCES)
landing_assets = [customer_landing, accelerometer_landing, step_trainer_landing]
