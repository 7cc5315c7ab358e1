"""What a check of a day-partitioned table examines: the days that changed since it last passed.

A check that passed on a table at some version proved the contract for every row then. A later
version differs from it only in the days whose data files changed (the Delta log says which), so
while the parents the contract compares with are still at the versions it saw, examining those days
proves the contract for the whole table again. Anything else (no passing evaluation on record, a
parent that changed, a table created anew, history that can no longer be read, another release of
this package or other code of its rules) examines the whole table: a check never proves less than
it claims.

Each passing evaluation records what it saw (each table's URI, Delta table id and version) in the
lakehouse itself, at `verified/<table>/<check>.json`, so the record lives and dies with the tables it
speaks of, whichever Dagster instance ran the check (an ephemeral one included). Any passing record
is a sound starting point, however old: the days changed since it are examined. So the record is
written on a best-effort basis; one lost costs the next evaluation a whole-table examination.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import date
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
from deltalake import DeltaTable

from stedi_assets import rules
from stedi_assets.rules import contracts
from stedi_assets.rules.catalog import on_days
from stedi_assets.storage.errors import StorageError
from stedi_assets.storage.lakehouse import Lakehouse
from stedi_assets.storage.metadata import PARTITION_BY, ZONE

VERIFIED = "verified"
"""Check metadata, and the lakehouse folder of the records: what a passing evaluation saw (JSON:
the release, and each table's URI, id and version)."""
COUNT = "count"
"""In a count check's record: the whole table's count in the state recorded."""
VERDICT = "verdict"
"""In a record: what the passing evaluation said (summary, observed, expected; no data)."""
DAYS_CHECKED = "days_checked"
"""Check metadata: how many event days it examined ("all": the whole table; ADDED: see added_rows)."""
ADDED = "added rows"
"""days_checked of a table without days when only the rows it gained since the last pass were examined."""


@cache
def release() -> str:
    """What a record's verdict was reached under: this package's version and a digest of the rules'
    code (the contracts, the transforms and the catalog), so that a changed rule, released or not,
    examines every day again."""
    try:
        number = version("stedi-lakehouse")
    except PackageNotFoundError:
        number = "unknown"
    code = hashlib.sha256()
    for source in sorted(Path(rules.__file__).parent.glob("*.py")):
        code.update(source.read_bytes())
    return f"{number}+{code.hexdigest()[:16]}"


@dataclass(frozen=True)
class Examined:
    """The rows a check examines, the parents it compares them with, and what it saw of each."""

    frame: pl.LazyFrame
    """The subject table's rows in `days` (all of them when `days` is None)."""
    whole: pl.LazyFrame
    """All of the subject table's rows (at the same version)."""
    rows: int
    """The subject table's whole row count, from its log."""
    parents: dict[str, pl.LazyFrame]
    days: list[date | None] | None
    seen: dict[str, Any]
    lakehouse: Lakehouse
    subject: str
    partitioned: bool
    """The subject table is partitioned by event day."""
    records: dict[str, dict | None]
    """What each check examined together last recorded (as read for `days`)."""
    added_only: bool = False
    """`frame` holds only the rows added since the check last passed (added_rows)."""

    def metadata(self, passed: bool) -> dict[str, Any]:
        """What the evaluation reports: the days it examined and, when it passed, what it saw."""
        days = ADDED if self.added_only else "all" if self.days is None else len(self.days)
        checked = {DAYS_CHECKED: days}
        return {**checked, VERIFIED: dg.MetadataValue.json(self.seen)} if passed else checked

    def record(self, check: str) -> dict | None:
        """What `check` last recorded: as read for `days` when it was examined with them."""
        return self.records[check] if check in self.records else _record(self.lakehouse, self.subject, check)

    def remember(self, check: str, verdict: contracts.Verdict) -> None:
        """After a passing evaluation of `check`: records what it saw, and its verdict, for the next."""
        if verdict.passed:
            said = {"summary": verdict.summary, "observed": verdict.observed, "expected": verdict.expected}
            remember(self.lakehouse, self.subject, check, {**self.seen, VERDICT: said})


def _record_path(subject: str, check: str) -> str:
    return f"{VERIFIED}/{subject}/{check}.json"


def remember(lakehouse: Lakehouse, subject: str, check: str, seen: Mapping[str, Any]) -> None:
    """Records that `check` held on `subject` in the state `seen` (best effort, see the module)."""
    with suppress(StorageError):
        lakehouse.put_bytes(_record_path(subject, check), json.dumps(seen).encode())


def state(uri: str, table: DeltaTable) -> dict[str, Any]:
    """What a record says of one table: where it is, which Delta table it is, at which version."""
    return {"uri": uri, "id": table.metadata().id, "version": table.version()}


def days_to_examine(
    lakehouse: Lakehouse, subject: str, check: str, seen: Mapping[str, Any]
) -> list[date | None] | None:
    """The days of `subject` that `check`, about to run in the state `seen` (the release and each
    table's state, or any other value it depends on), must examine; None: the whole table."""
    return _changed_days(lakehouse, subject, seen, [_record(lakehouse, subject, check)])


def counted(
    lakehouse: Lakehouse,
    seen: Examined,
    check: str,
    offending: Callable[[pl.LazyFrame], pl.LazyFrame],
    what: str,
    severity: contracts.Severity = contracts.Severity.WARN,
) -> contracts.Verdict:
    """A count check (a warning: how many rows are `offending`) over the whole table, examining only
    the days changed since its last evaluation: that evaluation's count (recorded with what it saw,
    whatever the outcome), less those days' count as they were then, plus their count now. With no
    day changed, the recorded count stands without a query."""
    if seen.days == []:
        before = seen.record(check) or {}
        if isinstance(before.get(COUNT), int):
            nothing = contracts.Verdict(True, "", 0, 0, severity=severity)
            return contracts.recounted(nothing, 0, before[COUNT], what)
    now = contracts.no_offending_rows(offending(seen.frame), what, severity)
    verdict = now
    if seen.days is not None:
        before = seen.record(check) or {}
        try:
            uri, version = seen.seen[seen.subject]["uri"], int(before[seen.subject]["version"])
            held = lakehouse.partition_values(uri, version)
            # a day the table did not hold then (a new one) counted nothing then: no query for it
            then_days = [day for day in seen.days if (None if day is None else day.isoformat()) in held]
            then = 0
            if then_days:
                then_frame = lakehouse.scan(uri, version)
                then = contracts.no_offending_rows(offending(on_days(then_frame, then_days)), what).observed
            verdict = contracts.recounted(now, int(then or 0), int(before[COUNT]), what)
        except (StorageError, KeyError, TypeError, ValueError):  # no count to start from: every day
            return counted(
                lakehouse, replace(seen, frame=seen.whole, days=None), check, offending, what, severity
            )
    remember(lakehouse, seen.subject, check, {**seen.seen, COUNT: verdict.observed})
    return verdict


def examined(
    context: dg.AssetCheckExecutionContext,
    lakehouse: Lakehouse,
    subject: str,
    parents: Sequence[str] = (),
    depends_on: Mapping[str, str] | None = None,
    *,
    checks: Sequence[str],
) -> Examined:
    """The days of table `subject` the `checks` (evaluated together, on the same tables) must examine
    (see the module), with the parents' current versions. Each table is opened once, and scanned at
    the version recorded. `depends_on`: anything else the contract's answer depends on (the
    pseudonym key's id); another value examines every day. A table that is not partitioned has no
    days: it is examined whole, or not at all (no day, days_checked 0) when it and its parents are
    as every one of the checks last passed on them, since the same rows under the same rules give
    the same verdict."""
    graph = context.op_execution_context.job_def.asset_layer.asset_graph
    opened, seen = {}, {"release": release(), **(depends_on or {})}
    for name in (subject, *parents):
        metadata = graph.get(dg.AssetKey(name)).metadata
        uri = lakehouse.table_uri(str(metadata[ZONE]), name)
        table = lakehouse.open(uri)
        opened[name] = (uri, table)
        seen[name] = state(uri, table)
    frames = {name: lakehouse.scan_opened(uri, table) for name, (uri, table) in opened.items()}
    records = {check: _record(lakehouse, subject, check) for check in checks}
    days = _changed_days(lakehouse, subject, seen, list(records.values()))
    partitioned = bool(graph.get(dg.AssetKey(subject)).metadata.get(PARTITION_BY))
    if not partitioned and days:  # a table without days is examined whole or, unchanged, not at all
        days = None
    frame = frames.pop(subject)
    return Examined(
        frame if days is None else on_days(frame, days) if partitioned else frame.head(0),
        frame,
        lakehouse.rows(*opened[subject]),
        frames,
        days,
        seen,
        lakehouse,
        subject,
        partitioned,
        records,
    )


def still_holds(seen: Examined, check: str, severity: contracts.Severity) -> contracts.Verdict:
    """The verdict of a check whose table and parents are as it last passed on them (seen.days is
    empty, see examined): it passes again, on the same rows under the same rules, and says what it
    said then."""
    said = (seen.record(check) or {}).get(VERDICT)
    if not isinstance(said, dict) or not isinstance(said.get("summary"), str):
        said = {"summary": f"{seen.subject} is as when this check last passed on it", "observed": seen.rows}
    return contracts.Verdict(
        True, said["summary"], said.get("observed"), said.get("expected"), severity=severity
    )


@dataclass(frozen=True)
class Guard:
    """A blocking membership check whose very predicate a write's privacy guard evaluates on the
    staged files, against `parents` as opened for it (so what they were is known exactly)."""

    check: str
    parents: dict[str, tuple[str, DeltaTable]]
    """Each parent's name, URI and table as the guard read it."""
    depends_on: dict[str, str] = field(default_factory=dict)
    """What else the verdict depends on (the pseudonym key's id), as the check records it."""

    def scan(self, lakehouse: Lakehouse, name: str) -> pl.LazyFrame:
        return lakehouse.scan_opened(*self.parents[name])


def vouch(
    lakehouse: Lakehouse,
    subject: str,
    uri: str,
    guard: Guard,
    read_version: int | None,
    days: Sequence[str] | None,
    made: Mapping[str, str],
) -> None:
    """After a write of `subject` whose guard passed: records that `guard.check` holds on the table
    now, exactly as the check records it, when the guard examined every row that can differ from what
    the check last passed on, and the table's newest write is this one (its commit properties `made`).
    That is a whole rewrite (`days` None); or the partitions `days` replaced on top of the very version
    (`read_version`) the check's record was made at, under the same parents, rules and key, and no
    other partition changed since. The check then examines only what changed since (nothing, until
    another write). Best effort, like every record: without it the check examines the whole table."""
    now: dict[str, Any] = {"release": release(), **guard.depends_on}
    now |= {name: state(parent_uri, table) for name, (parent_uri, table) in guard.parents.items()}
    with suppress(StorageError):
        table = lakehouse.open(uri)
        latest = lakehouse.latest_write(uri, table)
        if any(str(latest.get(key)) != str(value) for key, value in made.items()):
            return  # another writer's commit since: not what the guard examined
        if days is not None:
            if read_version is None:
                return
            before = {**now, subject: state(uri, lakehouse.open(uri, read_version))}
            if what_was_seen(_record(lakehouse, subject, guard.check) or {}) != before:
                return
            changed = lakehouse.changed_partitions(uri, read_version)
            if changed is None or not changed <= set(days):
                return
        remember(lakehouse, subject, guard.check, {**now, subject: state(uri, table)})


def what_was_seen(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record without what the evaluation found (its count, its verdict): the state it saw."""
    return {key: value for key, value in record.items() if key not in (COUNT, VERDICT)}


def recorded(lakehouse: Lakehouse, subject: str, check: str) -> dict | None:
    """What `remember` last recorded for `check` of `subject`; None when nothing readable."""
    return _record(lakehouse, subject, check)


def _record(lakehouse: Lakehouse, subject: str, check: str) -> dict | None:
    """What the newest passing evaluation of `check` recorded it saw; None when nothing readable."""
    try:
        found = json.loads(lakehouse.get_bytes(_record_path(subject, check)) or b"null")
    except (StorageError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def gained_since(
    lakehouse: Lakehouse,
    record: Mapping[str, Any] | None,
    now: Mapping[str, Any],
    grown: str,
    rewritten: Sequence[str] = (),
) -> list[date | None] | None:
    """The days the day-partitioned table `grown` gained since the state `record` saw, when that is
    all that changed of it: every day it held then is exactly as then. The rest must be as then (the
    release, the other tables, any other value), except the tables `rewritten`, which may be at a
    later version of the same table. None otherwise (no record, another table or rule, a changed or
    removed day, history that can no longer be read)."""
    then = None if record is None else what_was_seen(record)
    if then is None or set(then) != set(now):
        return None
    if any(then[name] != now[name] for name in now if name not in (grown, *rewritten)):
        return None
    for name in (grown, *rewritten):
        before, current = then[name], now[name]
        if not isinstance(before, dict) or not isinstance(before.get("version"), int):
            return None
        same_table = (before.get("uri"), before.get("id")) == (current["uri"], current["id"])
        if not same_table or before["version"] > current["version"]:
            return None
    gained = lakehouse.gained_partitions(now[grown]["uri"], then[grown]["version"], now[grown]["version"])
    if gained is None:
        return None
    return sorted(
        (None if day is None else date.fromisoformat(day) for day in gained),
        key=lambda day: (day is None, day or date.min),
    )


def added_rows(seen: Examined, check: str, column: str, grown: str) -> pl.DataFrame | None:
    """For a membership of a table's `column` in the parent `grown`: the rows whose value the table
    did not hold when `check` last passed, when since then only the table itself changed and `grown`
    only gained days (gained_since; a parent without days: did not change). Every value held then
    had its parent rows then, on days that are all still as they were: the membership still holds
    for it, so only the values added since need examining. None: examine what `seen` says."""
    record = seen.record(check)
    if record is None or gained_since(seen.lakehouse, record, seen.seen, grown, [seen.subject]) is None:
        return None
    try:
        held = seen.lakehouse.scan(seen.seen[seen.subject]["uri"], record[seen.subject]["version"])
        return seen.whole.join(held.select(column).unique(), on=column, how="anti").collect()
    except (StorageError, OSError, pl.exceptions.PolarsError):  # that version's files are gone: all
        return None


def _changed_days(
    lakehouse: Lakehouse, subject: str, now: Mapping[str, Any], earlier: Sequence[dict | None]
) -> list[date | None] | None:
    """The days of `subject` changed since every one of the `earlier` passing evaluations, or None
    when one of them cannot vouch for the rest (see the module). The days are those that differ
    between the version each record saw and the version `now` examines (not a later one), each
    earlier version compared once."""
    days: set[date | None] = set()
    compared: dict[int, set[str | None] | None] = {}
    for record in earlier:
        then = None if record is None else what_was_seen(record)
        if then is None or set(then) != set(now) or then["release"] != now["release"]:
            return None
        if any(then[name] != now[name] for name in now if name not in ("release", subject)):
            return None
        before, current = then[subject], now[subject]
        if not isinstance(before, dict) or (before.get("uri"), before.get("id")) != (
            current["uri"],
            current["id"],
        ):
            return None
        if not isinstance(before.get("version"), int) or before["version"] > current["version"]:
            return None
        if before["version"] not in compared:
            compared[before["version"]] = lakehouse.changed_partitions(
                current["uri"], before["version"], current["version"]
            )
        changed = compared[before["version"]]
        if changed is None:
            return None
        days |= {None if day is None else date.fromisoformat(day) for day in changed}
    return sorted(days, key=lambda day: (day is None, day or date.min))
