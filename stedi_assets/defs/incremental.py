"""Day-scoped recomputation of the partitioned reading tables.

A reading table records in each commit what it was built from: the version of each partitioned
input (a landing or trusted reading table) and a fingerprint of everything else it depends on (the
consent decision, the devices, the settings, the pseudonym key's id). The next run recomputes only
the days whose input partitions changed since (of the days its run targets: the rest are recorded
as pending for a later run), and replaces just those partitions in one commit.
Anything else changed (a consent decision, a setting, a withdrawal rewrite in between, history that
can no longer be read) rebuilds the whole table: privacy first, never day by day.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import dagster as dg
import polars as pl

from stedi_assets.defs.check_scope import Guard, vouch
from stedi_assets.defs.partitions import EVENT_DAYS, in_window, targeted_days
from stedi_assets.rules.catalog import (
    ACCELEROMETER,
    ACCELEROMETER_TRUSTED,
    EVENT_DAY,
    MACHINE_LEARNING_CURATED,
    STEP_TRAINER,
    STEP_TRAINER_TRUSTED,
    TABLES,
    Table,
    day_parts,
    on_days,
)
from stedi_assets.rules.contracts import Verdict
from stedi_assets.storage.errors import StorageError
from stedi_assets.storage.io_manager import Publication, held_metadata
from stedi_assets.storage.lakehouse import Lakehouse
from stedi_assets.storage.resources import as_failure

BUILT_FROM = "stedi.built_from"
"""The commit property recording a reading table's inputs (JSON)."""
DAYS_COMPUTED = "days_computed"
"""Materialization metadata: how many event days of its inputs a write recomputed (a number, also
when days_recomputed is "all"); 0 for no write."""


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
    pending: int = 0
    """Changed days outside the run's range, left for a later run."""

    @property
    def nothing(self) -> bool:
        return self.days == []

    @property
    def metadata(self) -> dict[str, int | str]:
        """What the materialization says of the write: days recomputed, or the whole table."""
        return {
            "days_recomputed": "all" if self.days is None else len(self.days),
            "days_pending": self.pending,
        }

    def properties(self, properties: Mapping[str, str]) -> dict[str, str]:
        return {**properties, BUILT_FROM: self.record}


def _built_from(lakehouse: Lakehouse, table: Table) -> dict | None:
    """What the newest write of `table` recorded of its inputs (None: nothing readable)."""
    try:
        uri = lakehouse.table_uri(table.zone, table.name)
        built = json.loads(lakehouse.latest_write_property(uri, BUILT_FROM) or "null")
    except ValueError:
        return None
    return built if isinstance(built, dict) else None


def _days_changed(
    lakehouse: Lakehouse,
    built: dict | None,
    inputs: Mapping[str, Table],
    versions: Mapping[str, int] | None = None,
) -> set[str] | None:
    """The days whose `inputs` partitions changed since the build `built` recorded, with the days it
    left pending; None when that is not known (no record, other inputs, history that can no longer
    be read, a change that is not a day's). Changed up to the input `versions` the caller read
    (default: the latest)."""
    if built is None or set(built.get("inputs", {})) != set(inputs):
        return None
    pending = built.get("pending", [])
    days = {day if isinstance(day, str) else None for day in pending} if isinstance(pending, list) else {None}
    for name, declared in inputs.items():
        uri = lakehouse.table_uri(declared.zone, declared.name)
        changed = lakehouse.changed_partitions(uri, int(built["inputs"][name]), (versions or {}).get(name))
        days |= changed if changed is not None else {None}
    return None if None in days else {day for day in days if day is not None}


def plan_rebuild(
    lakehouse: Lakehouse,
    table: Table,
    inputs: Mapping[str, Table],
    digest: str,
    targeted: Sequence[str] | None = None,
    decided_from: Mapping[str, int] | None = None,
) -> Rebuild:
    """Which days of `table` to recompute from its partitioned `inputs`, given the digest of the rest:
    of the `targeted` days (None: all), those whose inputs changed since the last build or that an
    earlier run left pending. Changed days outside `targeted` are recorded as pending. A changed
    digest rebuilds the whole table whatever the run targets (privacy first). `decided_from`: the
    version of each table the digest was computed from, recorded with the build (decided_from_newer)."""
    opened = {
        name: lakehouse.open(lakehouse.table_uri(declared.zone, declared.name))
        for name, declared in inputs.items()
    }
    versions = {name: table_.version() for name, table_ in opened.items()}
    frames = {
        name: lakehouse.scan_opened(lakehouse.table_uri(inputs[name].zone, inputs[name].name), opened_)
        for name, opened_ in opened.items()
    }

    def record(pending: Sequence[str] = ()) -> str:
        made = {"inputs": versions, "digest": digest, "pending": sorted(pending)}
        return json.dumps(made | {"decided_from": dict(decided_from or {})}, sort_keys=True)

    built = _built_from(lakehouse, table)
    due = _days_changed(lakehouse, built, inputs, versions)
    if due is None or built is None or built.get("digest") != digest:
        return Rebuild(None, frames, record())
    if targeted is None:
        return Rebuild(sorted(due), frames, record())
    # days outside the partitions' window belong to no Dagster partition: every run does its share
    chosen = (due & set(targeted)) | (due - in_window(due))
    left = due - chosen
    return Rebuild(sorted(chosen), frames, record(left), len(left))


READING_INPUTS: tuple[tuple[Table, dict[str, Table]], ...] = (
    (ACCELEROMETER_TRUSTED, {"accelerometer_landing": ACCELEROMETER.landing}),
    (STEP_TRAINER_TRUSTED, {"step_trainer_landing": STEP_TRAINER.landing}),
    (
        MACHINE_LEARNING_CURATED,
        {"step_trainer_trusted": STEP_TRAINER_TRUSTED, "accelerometer_trusted": ACCELEROMETER_TRUSTED},
    ),
)
"""Each reading table and its partitioned inputs, by name as its asset reads them."""


def inputs_of(table: Table) -> dict[str, Table]:
    return next(inputs for declared, inputs in READING_INPUTS if declared.name == table.name)


LANDING_READINGS = (ACCELEROMETER.landing, STEP_TRAINER.landing)


def _present(lakehouse: Lakehouse, tables: Sequence[Table]) -> set[str]:
    """The days of the partitions' window in which `tables` hold readings (from their logs)."""
    return in_window(
        day
        for table in tables
        for day in lakehouse.partition_values(lakehouse.table_uri(table.zone, table.name))
    )


def days_due(lakehouse: Lakehouse, declared: Table) -> set[str]:
    """The days of the partitions' window a run of the reading table `declared` would recompute now
    (what plan_rebuild finds, before the digest): those whose inputs changed since its last build or
    that a run left pending; every day its inputs hold when that is not known (never built, history
    gone). What declarative automation requests of the table (defs/conditions.py)."""
    inputs = inputs_of(declared)
    changed = _days_changed(lakehouse, _built_from(lakehouse, declared), inputs)
    days = changed if changed is not None else _present(lakehouse, list(inputs.values()))
    return in_window(days)


def decided_from_newer(lakehouse: Lakehouse, declared: Table) -> bool:
    """Whether a table the reading table `declared` was decided from (its guard's parent: the consent
    decision or the curated customers) has a newer version than its last build was made from. False
    when it was never built (then days_due has every day) or its build recorded none."""
    built = _built_from(lakehouse, declared)
    decided_from = built.get("decided_from") if built else None
    if not isinstance(decided_from, dict):
        return False
    return any(
        lakehouse.open(lakehouse.table_uri(TABLES[name].zone, name)).version() != version
        for name, version in decided_from.items()
        if name in TABLES
    )


def refresh_range(lakehouse: Lakehouse) -> tuple[str, str]:
    """The day range a run of the trusted and curated zones must target after an ingest: from the
    first to the last day any reading table has to recompute (days_due); the newest day with
    readings when none has to, so consent changes still run. Days outside the window (a device
    clock in 1970) are done by any run, so they never widen the range: each day in a range costs
    Dagster bookkeeping."""
    days = set().union(*(days_due(lakehouse, declared) for declared, _ in READING_INPUTS))
    days = days or set(sorted(_present(lakehouse, LANDING_READINGS))[-1:])
    if not days:
        last = str(EVENT_DAYS.get_last_partition_key())
        return last, last
    return min(days), max(days)


def on_rebuilt_days(frame: pl.LazyFrame, rebuild: Rebuild) -> pl.LazyFrame:
    """The rows of `frame` in the days `rebuild` recomputes (all of them for a whole rebuild)."""
    if rebuild.days is None:
        return frame
    return frame.filter(pl.col(EVENT_DAY).cast(pl.String).is_in(rebuild.days))


def mark_days_written(
    context: dg.AssetExecutionContext, lakehouse: Lakehouse, uri: str, version: int, targeted: Sequence[str]
) -> None:
    """After a whole rebuild by a run that targeted only some days: marks as materialized the other
    days the table now holds readings in that Dagster has never seen materialized (a first build
    from the landing sensor's run, a new day rebuilt with a consent change), so the partitions the UI
    shows match the table. Days Dagster already knows keep their last materialization: a rebuild
    over a thousand days does not write a thousand events."""
    try:
        held = in_window(lakehouse.partition_values(uri, version))
    except StorageError:
        return  # best effort: the table is published either way
    known = context.instance.get_materialized_partitions(context.asset_key)
    for day in sorted(held - known - set(targeted)):
        context.log_event(
            dg.AssetMaterialization(
                context.asset_key, partition=day, metadata={"written_by": "a whole rebuild"}
            )
        )


def recompute_by_day(
    context: dg.AssetExecutionContext,
    lakehouse: Lakehouse,
    table: Table,
    digest: str,
    compute: Callable[[dict[str, pl.LazyFrame]], pl.LazyFrame],
    verify: Callable[[pl.LazyFrame], Verdict],
    properties: Mapping[str, str],
    metadata: Mapping[str, object] | None = None,
    guards: Sequence[Guard] = (),
    decided: Callable[[dict[str, pl.LazyFrame]], dict[str, pl.LazyFrame]] | None = None,
) -> dg.MaterializeResult:
    """A reading table's write: of the days the run targets (targeted_days), those to recompute
    (plan_rebuild) from its inputs (READING_INPUTS), `compute` applied to each part of them (a few
    days of every input at a time, each part at most ROWS_PER_PART rows of all inputs together unless
    one day holds more: memory bounded by a part), given also what `decided` makes of the inputs'
    rows in all those days (small frames, such as which spellings of an identity are allowed:
    decided once in one streaming pass, not again in every part),
    published under the consent contract `verify` replacing just those days; no write when no input
    day changed. `verify` evaluates the predicate of each of `guards` (a blocking check's, the consent
    sweep's): its pass on the staged files is recorded for each (check_scope.vouch), which then
    examines nothing it already saw."""
    targeted = targeted_days(context)
    try:
        parents = {name: opened for guard in guards for name, (_, opened) in guard.parents.items()}
        decided_from = {name: opened.version() for name, opened in parents.items()}
        rebuild = plan_rebuild(lakehouse, table, inputs_of(table), digest, targeted, decided_from)
    except StorageError as error:  # only a transient one is retried, as every other write's
        raise as_failure(error) from error
    extra = dict(metadata or {})
    if rebuild.nothing:  # no new version: the materialization says what the table holds
        held = held_metadata(lakehouse, lakehouse.table_uri(table.zone, table.name))
        return dg.MaterializeResult(
            value=None, metadata={**held, **rebuild.metadata, DAYS_COMPUTED: 0, **extra}
        )
    rebuilt = {name: on_rebuilt_days(frame, rebuild) for name, frame in rebuild.inputs.items()}
    # parts bounded by the rows of every input together: a join's part holds both of its sides
    days = day_parts(pl.concat([frame.select(EVENT_DAY) for frame in rebuilt.values()]))
    plans = decided(rebuilt) if decided else {}
    collected = pl.collect_all(list(plans.values()), engine="streaming")  # small: identities, not rows
    shared = {name: frame.lazy() for name, frame in zip(plans, collected, strict=True)}
    parts = [
        compute({**{name: on_days(frame, part) for name, frame in rebuild.inputs.items()}, **shared})
        for part in days
    ]
    extra[DAYS_COMPUTED] = sum(len(part) for part in days)
    uri, made = lakehouse.table_uri(table.zone, table.name), rebuild.properties(properties)

    def published(version: int, read_version: int | None) -> None:
        for guard in guards if version != read_version else ():  # each pass stands for its check
            vouch(lakehouse, table.name, uri, guard, read_version, rebuild.days, made)
        if rebuild.days is None and targeted is not None and version != read_version:
            mark_days_written(context, lakehouse, uri, version, targeted)

    written = Publication(
        parts, "consent", verify, made, replace_partitions=rebuild.days, published=published
    )
    return dg.MaterializeResult(value=written, metadata={**rebuild.metadata, **extra})
