"""Day-scoped recomputation of the partitioned reading tables.

A reading table records in each commit what it was built from: the version of each partitioned
input (a landing or trusted reading table) and a fingerprint of everything else it depends on (the
consent decision, the devices, the settings, the pseudonym key's id). The next run recomputes only
the days whose input partitions changed since, and replaces just those partitions in one commit.
Anything else changed (a consent decision, a setting, a withdrawal rewrite in between, history that
can no longer be read) rebuilds the whole table: privacy first, never day by day.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import dagster as dg
import polars as pl

from stedi_assets.rules.catalog import EVENT_DAY, Table, day_parts, on_days
from stedi_assets.storage.io_manager import Publication, held_metadata
from stedi_assets.storage.lakehouse import Lakehouse

BUILT_FROM = "stedi.built_from"
"""The commit property recording a reading table's inputs (JSON)."""


def fingerprint(*parts: pl.DataFrame | str) -> str:
    """A digest of frames (order-independent) and settings: equal only when they are."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, str):
            digest.update(part.encode())
        else:
            digest.update(str(part.schema).encode())
            hashes = part.hash_rows().sort().to_arrow()
            digest.update(memoryview(hashes.buffers()[1]) if len(hashes) else b"")
        digest.update(b"\0")
    return digest.hexdigest()


@dataclass(frozen=True)
class Rebuild:
    """What a write of a reading table covers, and the inputs to compute it from."""

    days: list[str] | None
    """The partitions to replace (UTC days, YYYY-MM-DD); None: the whole table."""
    inputs: dict[str, pl.LazyFrame]
    """Each partitioned input, read at the version recorded."""
    record: str
    """What to record in the commit (BUILT_FROM)."""

    @property
    def nothing(self) -> bool:
        return self.days == []

    @property
    def metadata(self) -> dict[str, int | str]:
        """What the materialization says of the write: days recomputed, or the whole table."""
        return {"days_recomputed": "all" if self.days is None else len(self.days)}

    def properties(self, properties: Mapping[str, str]) -> dict[str, str]:
        return {**properties, BUILT_FROM: self.record}


def plan_rebuild(lakehouse: Lakehouse, table: Table, inputs: Mapping[str, Table], digest: str) -> Rebuild:
    """Which days of `table` to recompute from its partitioned `inputs`, given the digest of the rest."""
    opened = {
        name: lakehouse.open(lakehouse.table_uri(declared.zone, declared.name))
        for name, declared in inputs.items()
    }
    versions = {name: table_.version() for name, table_ in opened.items()}
    frames = {
        name: lakehouse.scan_opened(lakehouse.table_uri(inputs[name].zone, inputs[name].name), opened_)
        for name, opened_ in opened.items()
    }
    record = json.dumps({"inputs": versions, "digest": digest}, sort_keys=True)
    uri = lakehouse.table_uri(table.zone, table.name)
    try:
        built = json.loads(lakehouse.latest_write_property(uri, BUILT_FROM) or "null")
    except ValueError:
        built = None
    if (
        not isinstance(built, dict)
        or built.get("digest") != digest
        or set(built.get("inputs", {})) != set(versions)
    ):
        return Rebuild(None, frames, record)
    days: set[str | None] = set()
    for name, declared in inputs.items():
        changed = lakehouse.changed_partitions(
            lakehouse.table_uri(declared.zone, declared.name), int(built["inputs"][name])
        )
        if changed is None or None in changed:
            return Rebuild(None, frames, record)
        days |= changed
    return Rebuild(sorted(d for d in days if d is not None), frames, record)


def on_rebuilt_days(frame: pl.LazyFrame, rebuild: Rebuild) -> pl.LazyFrame:
    """The rows of `frame` in the days `rebuild` recomputes (all of them for a whole rebuild)."""
    if rebuild.days is None:
        return frame
    return frame.filter(pl.col(EVENT_DAY).cast(pl.String).is_in(rebuild.days))


def recompute_by_day(
    lakehouse: Lakehouse,
    table: Table,
    inputs: Mapping[str, Table],
    digest: str,
    compute: Callable[[dict[str, pl.LazyFrame]], pl.LazyFrame],
    publication: Callable[[list[pl.LazyFrame]], Publication],
    metadata: Mapping[str, object] | None = None,
) -> dg.MaterializeResult:
    """A reading table's write: the days to recompute (plan_rebuild), `compute` applied to each part
    of them (a few days of every input at a time, parts taken from the first input: memory bounded
    by a part), published as `publication` of those parts replacing just those days; no write when
    no input day changed."""
    rebuild = plan_rebuild(lakehouse, table, inputs, digest)
    extra = dict(metadata or {})
    if rebuild.nothing:  # no new version: the materialization says what the table holds
        held = held_metadata(lakehouse, lakehouse.table_uri(table.zone, table.name))
        return dg.MaterializeResult(value=None, metadata={**held, **rebuild.metadata, **extra})
    driver = on_rebuilt_days(next(iter(rebuild.inputs.values())), rebuild)
    parts = [
        compute({name: on_days(frame, part) for name, frame in rebuild.inputs.items()})
        for part in day_parts(driver)
    ]
    written = publication(parts)
    written = replace(
        written, properties=rebuild.properties(written.properties), replace_partitions=rebuild.days
    )
    return dg.MaterializeResult(value=written, metadata={**rebuild.metadata, **extra})
