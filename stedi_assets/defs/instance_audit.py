"""Find and redact personal data that older versions wrote into the Dagster instance's event log.

Erasure in the lakehouse does not reach Dagster's own storage, where earlier versions left names,
emails and phones in materialization previews, check samples, failures and log lines. This module
reads the stored event JSON straight from the SQL event log storage (every run shard, the index DB
and its caches), so nothing nested is missed and rows without a match are never deserialized, and
the captured stdout/stderr of every step the local compute log manager keeps on disk.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as db
from dagster._core.instance.utils import RUNLESS_RUN_ID
from dagster._core.storage.event_log import SqlEventLogStorage, SqliteEventLogStorage
from dagster._core.storage.event_log.schema import (
    AssetCheckExecutionsTable,
    AssetEventTagsTable,
    AssetKeyTable,
    SqlEventLogStorageTable,
)
from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager
from dagster._serdes import deserialize_value, serialize_value

from stedi_assets.storage.metadata import MASK

LOG_MESSAGE = "LOG_MESSAGE"
"""Event type of a plain `context.log` line, which has no Dagster event type of its own."""
COMPUTE_LOG = "COMPUTE_LOG"
"""What a finding in a step's captured stdout or stderr is reported as."""
CAPTURED = (".out", ".err")
"""Extensions of the captured-output files of the local compute log manager."""
PAGE_ROWS = 500
"""Rows read per query: bounds memory on a large shard; every row is still read."""

_LOG = logging.getLogger(__name__)
_MASKED_METADATA: dict[str, Any] = json.loads(serialize_value(dg.MetadataValue.text(MASK)))
_METADATA_CLASSES = ("MetadataEntryData", "MetadataValue")
"""Stored class names of metadata values end so (e.g. MarkdownMetadataEntryData)."""
_STRUCTURE = frozenset(
    {
        "run_id",
        "step_key",
        "pipeline_name",
        "job_name",
        "logging_tags",
        "solid_handle",
        "node_handle",
        "step_handle",
        "step_kind_value",
        "event_type_value",
        "asset_key",
        "check_name",
        "partition",
    }
)
"""Serdes fields naming code (run, step, op, job, asset, check, partition), which Dagster also keeps in
indexed columns: masking them would break the event's identity, so they are not content."""
_UNICODE_ESCAPES = re.compile(r"(?:\\u[0-9a-fA-F]{4})+")

Connect = Callable[[], AbstractContextManager[Any]]


@dataclass(frozen=True)
class Finding:
    """Where a value is stored; names the needle by index so a report never repeats the value."""

    run_id: str
    event_type: str
    step_key: str | None
    """The step, or for a captured log the file's name (the step set's key and .out or .err)."""
    asset_key: str | None
    needle: int
    table: str
    """The table holding this copy: event_logs, or the asset_keys / asset_check_executions caches."""


@dataclass(frozen=True)
class _Source:
    """A text column of serialized events, and what to do with a row that cannot be redacted."""

    table: db.Table
    column: str
    run_id_column: str
    clear: bool
    """True: set the column to NULL (a cache Dagster can do without); False: delete the row."""
    event_type: str | None = None
    """The type of the events this table caches (for old rows that do not say)."""


_EVENT_LOGS = _Source(SqlEventLogStorageTable, "event", "run_id", clear=False)
_CACHES = (
    _Source(AssetKeyTable, "last_materialization", "last_run_id", True, "ASSET_MATERIALIZATION"),
    _Source(AssetCheckExecutionsTable, "evaluation_event", "run_id", False, "ASSET_CHECK_EVALUATION"),
)


@dataclass(frozen=True)
class _Place:
    connect: Connect
    source: _Source
    canonical: bool
    """The run's own copy of its events (not the index DB's mirror or cache): what purge counts."""
    index: bool
    """In the index DB, where asset event tags point at event ids."""


def _trie_pattern(words: Iterable[str]) -> str:
    """One regex for many literals that branches per character, so it does not try each in turn."""
    root: dict[str, dict] = {}
    for word in words:
        node = root
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def build(node: dict[str, dict]) -> str:
        branches = []
        for first, child in sorted(node.items()):
            if not first:
                continue
            chain = [first]
            while len(child) == 1 and "" not in child:
                ((char, child),) = child.items()
                chain.append(char)
            branches.append(re.escape("".join(chain)) + build(child))
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return build(root)


class _Needles:
    """Case-insensitive matching of all needles at once: a cheap test on raw JSON, an exact one on values."""

    def __init__(self, needles: Collection[str]) -> None:
        self.indices: dict[str, list[int]] = {}
        for index, needle in enumerate(needles):
            if needle:  # an empty needle would match, and redact, everything
                self.indices.setdefault(needle.lower(), []).append(index)
        self._lengths = sorted({len(n) for n in self.indices}, reverse=True)
        # Stored JSON escapes quotes, backslashes and control characters; non-ASCII is unescaped first.
        self._raw = re.compile(_trie_pattern(json.dumps(n, ensure_ascii=False)[1:-1] for n in self.indices))
        self._values = re.compile(f"(?=({_trie_pattern(self.indices)}))")

    def may_hold(self, raw: str) -> bool:
        """False only if no needle is anywhere in this serialized text."""
        if "\\u" in raw:
            raw = _UNICODE_ESCAPES.sub(lambda m: json.loads(f'"{m.group(0)}"'), raw)
        return self._raw.search(raw.lower()) is not None

    def within(self, text: str) -> set[int]:
        """Every needle in `text`, including needles inside or overlapping other needles."""
        found: set[int] = set()
        if text.rstrip("*") == MASK:  # our own mask, which a short needle could match
            return found
        for match in self._values.finditer(text.lower()):
            longest = match.group(1)  # the longest needle starting here; shorter ones are its prefixes
            for length in self._lengths:
                if length <= len(longest):
                    found.update(self.indices.get(longest[:length], ()))
        return found


def _redact(node: Any, needles: _Needles, in_metadata: bool = False) -> tuple[Any, set[int]]:
    """The parsed event with every string and metadata value holding a needle masked, and the needles.

    A metadata value (a whole preview table, a number) becomes the text "[redacted]"; any other string
    (a description, a message, a stack frame, a tag) becomes MASK. Serdes markers and field names,
    and the fields in _STRUCTURE, are neither searched nor changed.
    """
    if isinstance(node, str):
        hits = needles.within(node)
        return (MASK if hits else node), hits
    if isinstance(node, int | float) and not isinstance(node, bool):
        return node, (needles.within(str(node)) if in_metadata else set())
    if isinstance(node, list):
        pairs = [_redact(item, needles, in_metadata) for item in node]
        return [item for item, _ in pairs], set().union(*(hits for _, hits in pairs))
    if not isinstance(node, dict):
        return node, set()
    kind = node.get("__class__")
    metadata = in_metadata or (isinstance(kind, str) and kind.endswith(_METADATA_CLASSES))
    found: set[int] = set()
    result: dict[str, Any] = {}
    for key, value in node.items():
        dunder = key.startswith("__") and key.endswith("__")
        if (dunder and isinstance(value, str)) or (kind is not None and key in _STRUCTURE):
            result[key] = value
            continue
        value, hits = _redact(value, needles, metadata)
        found |= hits
        if kind is None and not dunder and (key_hits := needles.within(key)):  # a mapping's label or tag
            found |= key_hits
            key = MASK
            while key in result or key in node:
                key += "*"
        result[key] = value
    if found and metadata and not in_metadata:
        return dict(_MASKED_METADATA), found
    return result, found


def _storage(instance: dg.DagsterInstance) -> SqlEventLogStorage:
    storage = instance.event_log_storage
    if not isinstance(storage, SqlEventLogStorage):
        raise TypeError(f"Cannot audit {type(storage).__name__}: only SQL event log storages are supported.")
    if storage.is_run_sharded and not isinstance(storage, SqliteEventLogStorage):
        raise TypeError(f"Cannot list the run shards of {type(storage).__name__}.")
    return storage


def _places(storage: SqlEventLogStorage) -> Iterator[_Place]:
    """Every table that holds event JSON, on the connection it lives on.

    Run-sharded SQLite (the default) keeps each run's events in a file of its own, listed from disk
    so that runs no longer in the run storage and runless events are included, and mirrors asset,
    check and run status events into the index DB; other storages keep all runs in one table.
    """
    sharded = isinstance(storage, SqliteEventLogStorage)
    if sharded:
        for run_id in sorted({*storage.get_all_run_ids(), RUNLESS_RUN_ID}):
            if os.path.exists(storage.path_for_shard(run_id)):  # connecting would create an empty shard
                yield _Place(lambda run_id=run_id: storage.run_connection(run_id), _EVENT_LOGS, True, False)
    yield _Place(storage.index_connection, _EVENT_LOGS, canonical=not sharded, index=True)
    for source in _CACHES:
        if storage.has_table(source.table.name):
            yield _Place(storage.index_connection, source, canonical=False, index=True)


def _pages(place: _Place) -> Iterator[list[Any]]:
    """All rows, by id, in pages; each page's connection is closed before its rows are used."""
    table, source = place.source.table, place.source
    columns = [table.c.id, table.c[source.column], table.c[source.run_id_column], table.c.asset_key]
    if source is _EVENT_LOGS:
        columns += [table.c.dagster_event_type, table.c.step_key]
    last: int | None = None
    while True:
        query = db.select(*columns).order_by(table.c.id.asc()).limit(PAGE_ROWS)
        if last is not None:
            query = query.where(table.c.id > last)
        with place.connect() as conn:  # SQLite storages hold a lock while a connection is open
            rows = conn.execute(query).fetchall()
        if not rows:
            return
        yield rows
        last = rows[-1].id


def _scan(storage: SqlEventLogStorage, needles: _Needles) -> Iterator[tuple[_Place, Any, Any, set[int]]]:
    """Each stored row holding a needle, with its redacted parse and the needles it holds."""
    if not needles.indices:
        return
    for place in _places(storage):
        for rows in _pages(place):
            for row in rows:
                raw = getattr(row, place.source.column)
                if raw and needles.may_hold(raw):
                    redacted, hits = _redact(json.loads(raw), needles)
                    if hits:
                        yield place, row, redacted, hits


def _user_key(key: Any) -> str | None:
    if isinstance(key, dict) and isinstance(key.get("path"), list):
        return dg.AssetKey(key["path"]).to_user_string()
    if isinstance(key, str) and key:
        return dg.AssetKey.from_db_string(key).to_user_string()
    return None


def _findings(place: _Place, row: Any, parsed: Any, hits: set[int]) -> Iterator[Finding]:
    entry = parsed.get("event_log_entry", parsed) if isinstance(parsed, dict) else {}  # a record wraps it
    event = entry.get("dagster_event") or {}
    data = event.get("event_specific_data")
    asset_key = _user_key(row.asset_key) or _user_key(
        data.get("asset_key") if isinstance(data, dict) else None
    )
    kind = place.source.event_type or getattr(row, "dagster_event_type", None) or LOG_MESSAGE
    for needle in sorted(hits):
        yield Finding(
            run_id=entry.get("run_id") or getattr(row, place.source.run_id_column) or "",
            event_type=event.get("event_type_value") or kind,
            step_key=entry.get("step_key") or event.get("step_key") or getattr(row, "step_key", None),
            asset_key=asset_key,
            needle=needle,
            table=place.source.table.name,
        )


def find_values(instance: dg.DagsterInstance, needles: Collection[str]) -> list[Finding]:
    """Where the instance's event log storage holds any of `needles` (case-insensitive), without repeats.

    Covers every run's events (metadata, check evaluations, failures, log lines, nested errors) and
    the index DB's mirrors and caches of them; a mirror and its original make one Finding.
    """
    found: dict[Finding, None] = {}
    matcher = _Needles(needles)
    for place, row, parsed, hits in _scan(_storage(instance), matcher):
        found.update(dict.fromkeys(_findings(place, row, parsed, hits)))
    for run_id, path in _captured_logs(instance):
        hits = set().union(*(matcher.within(line) for line in _lines(path))) if matcher.indices else set()
        for needle in sorted(hits):
            found[Finding(run_id, COMPUTE_LOG, path.name, None, needle, "compute_logs")] = None
    return list(found)


def _captured_logs(instance: dg.DagsterInstance) -> Iterator[tuple[str, Path]]:
    """Each captured stdout/stderr file of the local compute log manager, with its run id.

    It keeps them as <base_dir>/<run id>/compute_logs/<step or step set>.out|.err. Captured logs
    kept elsewhere (a cloud compute log manager) cannot be listed here, and say so.
    """
    manager = instance.compute_log_manager
    if not isinstance(manager, LocalComputeLogManager):
        if type(manager).__name__ != "NoOpComputeLogManager":
            _LOG.warning("Captured step logs in %s are not audited.", type(manager).__name__)
        return
    base = Path(manager._base_dir)  # the manager has no public way to list its files
    if not base.is_dir():
        return
    for path in sorted(base.rglob("*")):
        if path.suffix in CAPTURED and path.is_file() and "compute_logs" in path.parts:
            yield path.relative_to(base).parts[0], path


def _lines(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8", errors="replace", newline="") as captured:
        yield from captured


def _purge_captured(path: Path, needles: _Needles) -> bool:
    """Masks each line of a captured log that holds a needle; whether the file changed."""
    lines = list(_lines(path))
    masked = [
        (MASK + "\n" if line.endswith("\n") else MASK) if needles.within(line) else line for line in lines
    ]
    if masked == lines:
        return False
    staged = path.with_name(path.name + ".redacting")
    staged.write_text("".join(masked), encoding="utf-8", newline="")
    staged.replace(path)
    return True


@contextmanager
def _transaction(connect: Connect) -> Iterator[Any]:
    """A write that zeroes the old text in SQLite's free pages, whatever the build's default."""
    with connect() as conn, nullcontext() if conn.in_transaction() else conn.begin():
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA secure_delete = ON")
        yield conn


def _store(storage: SqlEventLogStorage, place: _Place, row: Any, redacted: Any, needles: _Needles) -> None:
    """Writes the redacted event, unless Dagster could not read it back or it still holds a needle."""
    text = json.dumps(redacted)
    try:
        deserialize_value(text)
        clean = not (needles.may_hold(text) and _redact(redacted, needles)[1])
    except Exception:
        clean = False
    table, source = place.source.table, place.source
    with _transaction(place.connect) as conn:
        if clean:
            conn.execute(table.update().where(table.c.id == row.id).values({source.column: text}))
        elif source.clear:
            _LOG.warning("Cleared %s row %s, which could not be redacted.", table.name, row.id)
            conn.execute(table.update().where(table.c.id == row.id).values({source.column: None}))
        else:
            _LOG.warning(
                "Deleted %s row %s (run %s), which could not be redacted.", table.name, row.id, row.run_id
            )
            conn.execute(table.delete().where(table.c.id == row.id))
            if source is _EVENT_LOGS and place.index and storage.has_table(AssetEventTagsTable.name):
                conn.execute(AssetEventTagsTable.delete().where(AssetEventTagsTable.c.event_id == row.id))


def purge_values(instance: dg.DagsterInstance, needles: Collection[str]) -> int:
    """Masks `needles` in every stored event and cached copy, keeping the events and the run history.

    Each metadata value, description, message or stack frame holding a needle becomes "[redacted]";
    a row that could not be read back once redacted is deleted instead (a cache is cleared); in a
    captured step log, each line holding one becomes "[redacted]". Returns how many events and log
    files were changed, each event counted once however many copies of it were stored.
    """
    storage = _storage(instance)
    matcher = _Needles(needles)
    changed = 0
    for place, row, redacted, _ in _scan(storage, matcher):
        _store(storage, place, row, redacted, matcher)
        changed += place.canonical
    if matcher.indices:
        changed += sum(_purge_captured(path, matcher) for _, path in _captured_logs(instance))
    return changed
