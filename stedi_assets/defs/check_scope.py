"""What a check of a day-partitioned table examines: the days that changed since it last passed.

A check that passed on a table at some version proved the contract for every row then. A later
version differs from it only in the days whose data files changed (the Delta log says which), so
while the parents the contract compares with are still at the versions it saw, examining those days
proves the contract for the whole table again. Anything else (no passing evaluation on record, a
parent that changed, a table created anew, history that can no longer be read, another release of
this package) examines the whole table: a check never proves less than it claims.

Each passing evaluation records what it saw (VERIFIED: each table's URI, Delta table id and
version) in its metadata, where the next evaluation of the same check finds it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import dagster as dg
import polars as pl
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from stedi_assets.rules.catalog import on_days
from stedi_assets.storage.lakehouse import Lakehouse
from stedi_assets.storage.metadata import PARTITION_BY, ZONE

VERIFIED = "verified"
"""Check metadata: what a passing evaluation examined (JSON: release, and per table URI, id, version)."""
DAYS_CHECKED = "days_checked"
"""Check metadata: how many event days it examined ("all": the whole table)."""


def _release() -> str:
    try:
        return version("stedi-lakehouse")
    except PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class Examined:
    """The rows a check examines, the parents it compares them with, and what it saw of each."""

    frame: pl.LazyFrame
    """The subject table's rows in `days` (all of them when `days` is None)."""
    rows: int
    """The subject table's whole row count, from its log."""
    parents: dict[str, pl.LazyFrame]
    days: list[date | None] | None
    seen: dict[str, Any]

    def metadata(self, passed: bool) -> dict[str, Any]:
        """What the evaluation records: the days it examined and, when it passed, what it saw."""
        checked = {DAYS_CHECKED: "all" if self.days is None else len(self.days)}
        return {**checked, VERIFIED: dg.MetadataValue.json(self.seen)} if passed else checked


def examined(
    context: dg.AssetCheckExecutionContext,
    lakehouse: Lakehouse,
    subject: str,
    parents: Sequence[str] = (),
) -> Examined:
    """The days of table `subject` the step's checks must examine (see the module), with the parents'
    current versions. Each table is opened once, and scanned at the version recorded."""
    graph = context.op_execution_context.job_def.asset_layer.asset_graph
    opened, seen = {}, {"release": _release()}
    for name in (subject, *parents):
        metadata = graph.get(dg.AssetKey(name)).metadata
        uri = lakehouse.table_uri(str(metadata[ZONE]), name)
        table = lakehouse.open(uri)
        opened[name] = (uri, table)
        seen[name] = {"uri": uri, "id": table.metadata().id, "version": table.version()}
    frames = {name: lakehouse.scan_opened(uri, table) for name, (uri, table) in opened.items()}
    days = None
    if graph.get(dg.AssetKey(subject)).metadata.get(PARTITION_BY):
        earlier = [_last_verified(context.instance, key) for key in context.selected_asset_check_keys]
        days = _changed_days(lakehouse, subject, seen, earlier)
    frame = frames.pop(subject)
    return Examined(
        frame if days is None else on_days(frame, days),
        lakehouse.rows(opened[subject][0]),
        frames,
        days,
        seen,
    )


def _last_verified(instance: dg.DagsterInstance, key: dg.AssetCheckKey) -> dict | None:
    """What the newest passing evaluation of `key` recorded it saw; None when it recorded nothing."""
    records = instance.event_log_storage.get_asset_check_execution_history(
        key, limit=1, status={AssetCheckExecutionRecordStatus.SUCCEEDED}
    )
    data = records[0].event.dagster_event.event_specific_data if records and records[0].event else None
    value = getattr(data, "metadata", {}).get(VERIFIED)
    return value.value if value is not None and isinstance(value.value, dict) else None


def _changed_days(
    lakehouse: Lakehouse, subject: str, now: Mapping[str, Any], earlier: Sequence[dict | None]
) -> list[date | None] | None:
    """The days of `subject` changed since every one of the `earlier` passing evaluations, or None
    when one of them cannot vouch for the rest (see the module)."""
    days: set[date | None] = set()
    for then in earlier:
        if then is None or set(then) != set(now) or then["release"] != now["release"]:
            return None
        if any(then[name] != now[name] for name in now if name not in ("release", subject)):
            return None
        before, current = then[subject], now[subject]
        if (before.get("uri"), before.get("id")) != (current["uri"], current["id"]):
            return None
        if not isinstance(before.get("version"), int) or before["version"] > current["version"]:
            return None
        changed = lakehouse.changed_partitions(current["uri"], before["version"])
        if changed is None:
            return None
        days |= {None if day is None else date.fromisoformat(day) for day in changed}
    return sorted(days, key=lambda day: (day is None, day or date.min))
