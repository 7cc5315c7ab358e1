"""Where the data lives: the landing zone's files and the lakehouse's Delta tables, local or on S3.

Plain classes with no Dagster in them: the storage resource builds them for the assets and the IO
manager, and `stedi sql` builds one directly. Every failure is a StorageError naming the URI.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import polars as pl
from botocore.exceptions import BotoCoreError, ClientError
from deltalake import CommitProperties, DeltaTable
from deltalake.exceptions import DeltaError
from deltalake.schema import Schema
from deltalake.transaction import AddAction, create_table_with_add_actions

from stedi_assets.rules.catalog import INGESTED_AT, LINE_NUMBER, SOURCE_FILE
from stedi_assets.rules.parsing import RAW_LINE, UTF8_VALID, empty_raw_lines, raw_lines, unreadable_rest
from stedi_assets.storage.environment import S3Options
from stedi_assets.storage.errors import StorageError, TableMissing, classify

T = TypeVar("T")
PARTITION_ROW_GROUP = 16_384
MAINTENANCE = frozenset({"VACUUM START", "VACUUM END", "SET TBLPROPERTIES", "OPTIMIZE", "CHECKPOINT"})
"""Commit operations that change no rows."""
HISTORY_LOOKBACK = 50
PARTITION_COMMIT_RETRIES = 5
COMPACT_AFTER_FILES = 64
"""A table appended to more often than this many data files gets its small files compacted."""
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
"""The folder name of a partition whose value is null, as Delta and Hive spell it."""
STREAMED = pl.QueryOptFlags(comm_subplan_elim=False)
"""How a table's plan is sunk: an input used twice (an identity's distinct values joined back onto
it) is read twice rather than cached whole in memory, which would not stream."""
DEFAULT_LANDING_URI = "data/landing"
DEFAULT_LAKEHOUSE_URI = "lakehouse"
DEFAULT_RETENTION_HOURS = 168
LANDING_SETTING = "--landing / STEDI_LANDING_URI"
LAKEHOUSE_SETTING = "--lakehouse / STEDI_LAKEHOUSE_URI"
LANDING_SUFFIXES = (".json", ".json.gz")
"""The landing files of a source: JSON lines, plain or gzip-compressed (as Kinesis Firehose writes)."""
READ_BLOCK = 1 << 20
"""Bytes read, and inflated, at a time by the Python reader of landing files."""
SPLIT_BLOCK = 16 << 20
"""Bytes of whole lines the Python reader splits and spills at a time: what it holds of a file."""


def is_s3(uri: str) -> bool:
    return uri.startswith(("s3://", "s3a://"))


def _partition_value(value: Any) -> str | None:
    """A partition value as the Delta log records it (a date as YYYY-MM-DD)."""
    return None if value is None else str(value)


def _root(uri: str) -> str:
    uri = uri.rstrip("/")
    return uri if is_s3(uri) else str(Path(uri).absolute())


@dataclass(frozen=True)
class StagedFile:
    """A data file written into a table's folder but not yet in its log, so no reader sees it."""

    path: str
    """Relative to the table's root, as the Delta log records it."""
    size: int
    rows: int
    partition: Mapping[str, str | None] = field(default_factory=dict)
    """The file's partition values (hive-style folder), empty for an unpartitioned table."""


@dataclass(frozen=True)
class Staged:
    """A table's next version, written and not yet committed: verify it, then commit or discard it."""

    uri: str
    files: tuple[StagedFile, ...]
    schema: pl.Schema
    read_version: int | None
    """The table's version before the plan ran (None: no table yet); the commit must follow it."""
    partition_by: tuple[str, ...] = ()

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)


@dataclass(frozen=True)
class Lakehouse:
    """Delta tables at `<root>/<zone>/<table>/`, written stage -> verify -> commit.

    A write streams the plan into Parquet files inside the table's folder that no Delta log entry
    names yet (invisible to every reader), the caller verifies what was staged, and one commit of
    those files makes the new version visible: the table changes whole or not at all, and a table
    that breaks a contract is never visible, not even for a moment.
    """

    root: str
    s3: S3Options = field(default_factory=S3Options)
    retention_hours: int = DEFAULT_RETENTION_HOURS
    """How long replaced versions stay readable (time travel) when a write removed no one."""

    def table_uri(self, zone: str, name: str) -> str:
        return f"{_root(self.root)}/{zone}/{name}"

    def _options(self, uri: str) -> dict[str, str] | None:
        return self.s3.delta_options() if is_s3(uri) else None

    def _failure(self, uri: str, error: BaseException) -> StorageError:
        return classify(uri, error, LAKEHOUSE_SETTING, self.s3.endpoint)

    def reading(self, uri: str, plan: pl.LazyFrame, streaming: bool = False) -> pl.DataFrame:
        """Collects a plan that reads `uri` (`streaming`: in bounded memory, for a small result of a
        large table); a missing or unreadable data file is a StorageError."""
        try:
            return plan.collect(engine="streaming") if streaming else plan.collect()
        except (OSError, DeltaError, pl.exceptions.ComputeError) as error:
            raise self._failure(uri, error) from error

    def stage(
        self,
        uri: str,
        frame: pl.LazyFrame | Sequence[pl.LazyFrame],
        partition_by: tuple[str, ...] = (),
        based_on: int | None = None,
    ) -> Staged:
        """Streams the plan into new data files of the table, invisible until `commit`: one file, or
        one per partition (hive-style folders, `<column>=<value>/`) of a partitioned table.

        Several plans (each a part of the table, e.g. one day) are streamed one after the other,
        so memory is bounded by the largest part, not the table. The commit will follow the table's
        version now, or `based_on`: the version the plan itself read the table at.
        """
        plans = [frame] if isinstance(frame, pl.LazyFrame) else list(frame)
        try:
            read_version: int | None = self.open(uri).version() if based_on is None else based_on
        except TableMissing:
            read_version = None
        written: list[tuple[str, dict[str, str | None]]] = []

        def place(args: Any) -> str:
            values = {c: _partition_value(args.partition_keys[c][0]) for c in partition_by}
            folder = "/".join(f"{c}={HIVE_NULL if v is None else v}" for c, v in values.items())
            name = f"{folder}/part-{uuid.uuid4()}.parquet"
            written.append((name, values))
            return name

        options = self._options(uri)
        try:
            if not is_s3(uri):
                Path(uri).mkdir(parents=True, exist_ok=True)
            for plan in plans:
                if partition_by:
                    target: Any = pl.PartitionBy(
                        uri, key=list(partition_by), include_key=False, file_path_provider=place
                    )
                else:
                    name = f"part-{uuid.uuid4()}.parquet"
                    target = f"{uri}/{name}"
                    written.append((name, {}))
                plan.sink_parquet(
                    target,
                    storage_options=options,
                    credential_provider=None,
                    optimizations=STREAMED,
                    mkdir=True,
                    # a partitioned sink keeps a row group open per partition: keep them small
                    row_group_size=PARTITION_ROW_GROUP if partition_by else None,
                )
            files = []
            for name, values in written:
                scanned = pl.scan_parquet(f"{uri}/{name}", storage_options=options, credential_provider=None)
                rows = scanned.select(pl.len()).collect().item()
                files.append(StagedFile(name, self._size(f"{uri}/{name}"), rows, values))
        except BaseException as error:
            self._delete([f"{uri}/{name}" for name, _ in written])
            if isinstance(error, (OSError, DeltaError, ClientError, BotoCoreError)):
                raise self._failure(uri, error) from error
            raise
        # the files hold every column but the partition's, which their folders say
        return Staged(uri, tuple(files), plans[0].collect_schema(), read_version, partition_by)

    def scan_staged(self, staged: Staged) -> pl.LazyFrame:
        """What `commit` would publish, read back from the staged files."""
        paths = [f"{staged.uri}/{f.path}" for f in staged.files]
        if not paths:
            return pl.LazyFrame(schema=staged.schema)
        return pl.scan_parquet(
            paths,
            storage_options=self._options(staged.uri),
            credential_provider=None,
            hive_partitioning=bool(staged.partition_by),
            hive_schema={c: staged.schema[c] for c in staged.partition_by} or None,
            schema=staged.schema if staged.partition_by else None,
        )

    def commit(
        self,
        staged: Staged,
        properties: Mapping[str, str] | None = None,
        stats_columns: list[str] | None = None,
        append: bool = False,
        replace_partitions: Sequence[str] | None = None,
        rebase: bool = True,
    ) -> int:
        """Makes the staged files the table's whole content in one overwrite commit (or adds them to
        it, `append`; or replaces only the partitions `replace_partitions`); the new version.

        The commit follows the version the table had before the plan ran and, unless it replaces
        only some partitions, is never rebased (max_commit_retries=0): if another writer committed in
        between, this write fails as a transient error and the caller recomputes from the newer
        inputs. A partition replacement may follow a concurrent commit to other partitions, unless
        `rebase` is False (its rows were computed from the table itself, so following another
        writer's commit would drop that writer's rows). `properties` are recorded in the commit
        (the rules the data was made under). Staged files are deleted when the commit fails.
        """
        now = int(time.time() * 1000)
        actions = [
            AddAction(f.path, f.size, dict(f.partition), now, True, json.dumps({"numRecords": f.rows}))
            for f in staged.files
        ]
        schema = Schema.from_arrow(pl.DataFrame(schema=staged.schema).to_arrow().schema)
        # A partition overwrite may follow a concurrent writer of other partitions (delta-rs refuses
        # the rebase if they overlap); a whole-table write never rebases.
        retries = PARTITION_COMMIT_RETRIES if replace_partitions is not None and rebase else 0
        commit = CommitProperties(max_commit_retries=retries, custom_metadata=dict(properties or {}))
        options = self._options(staged.uri)
        try:
            if staged.read_version is None:
                return self._create(staged, schema, actions, commit, stats_columns)
            table = DeltaTable(staged.uri, storage_options=options, version=staged.read_version)
            table.create_write_transaction(
                actions,
                mode="append" if append else "overwrite",
                schema=schema,
                partition_by=list(staged.partition_by) or None,
                partition_filters=[(staged.partition_by[0], "in", list(replace_partitions))]
                if replace_partitions is not None
                else None,
                commit_properties=commit,
            )
            return staged.read_version + 1
        except BaseException as error:
            self.discard(staged)
            if isinstance(error, (OSError, DeltaError)):
                raise self._failure(staged.uri, error) from error
            raise

    def _create(
        self,
        staged: Staged,
        schema: Schema,
        actions: list[AddAction],
        commit: CommitProperties,
        stats_columns: list[str] | None,
    ) -> int:
        # Only these columns may ever get min/max statistics in the log (our own commits record
        # row counts only): an identity must not survive in the Delta log.
        configuration = {"delta.logRetentionDuration": f"interval {self.retention_hours} hours"}
        if stats_columns is not None:
            configuration["delta.dataSkippingStatsColumns"] = ",".join(stats_columns)
        try:
            create_table_with_add_actions(
                staged.uri,
                schema,
                actions,
                mode="error",
                partition_by=list(staged.partition_by) or None,
                configuration=configuration,
                storage_options=self._options(staged.uri),
                commit_properties=commit,
            )
        except DeltaError as error:
            if self.exists(staged.uri):
                raise StorageError(
                    f"Another writer committed {staged.uri} at the same time; this write was not applied.",
                    True,
                ) from error
            raise
        return 0

    def forget_history(self, uri: str) -> int:
        """After a write that removed someone: no earlier version stays readable.

        Every data file the latest version does not use is deleted (each holds many people, so the
        whole time travel before this version goes), and the log entries before it are cleaned up.
        How many files were deleted.
        """
        try:
            table = self.open(uri)
            deleted = self._vacuum(table, 0)
            retention = table.metadata().configuration.get("delta.logRetentionDuration")
            table.alter.set_table_properties({"delta.logRetentionDuration": "interval 0 seconds"})
            table.create_checkpoint()
            table.cleanup_metadata()
            table.alter.set_table_properties(
                {"delta.logRetentionDuration": retention or f"interval {self.retention_hours} hours"}
            )
        except (OSError, DeltaError) as error:
            raise self._failure(uri, error) from error
        return deleted

    def latest_write_property(self, uri: str, key: str) -> str | None:
        """A property recorded by the newest commit that wrote data (maintenance commits, such as a
        vacuum's, are skipped); None when that commit has none, or there is no table."""
        value = self.latest_write(uri).get(key)
        return None if value is None else str(value)

    def latest_write(self, uri: str, table: DeltaTable | None = None) -> dict[str, Any]:
        """The newest commit that wrote data, as its history entry (empty: none, or no table); of
        `table` when it is already open."""
        try:
            history = (table or self.open(uri)).history(HISTORY_LOOKBACK)
        except TableMissing:
            return {}
        except (OSError, DeltaError) as error:
            raise self._failure(uri, error) from error
        return next((entry for entry in history if entry.get("operation") not in MAINTENANCE), {})

    def changed_partitions(self, uri: str, since: int, until: int | None = None) -> set[str | None] | None:
        """The partition values whose data files differ between version `since` and version `until`
        (default: the latest), from the log alone; None when a version can no longer be read (then
        everything may have)."""
        found = self._changes_since(uri, since, until)
        return None if found is None else found[0]

    def gained_partitions(self, uri: str, since: int, until: int | None = None) -> set[str | None] | None:
        """The partition values the table gained between version `since` and version `until` (default:
        the latest; held no data in then), when those are all that changed: every partition it held
        then is exactly as it was. None when one of them changed (rows added, removed or rewritten,
        compaction included) or a version can no longer be read."""
        found = self._changes_since(uri, since, until)
        return None if found is None or found[0] & found[1] else found[0]

    def _changes_since(
        self, uri: str, since: int, until: int | None
    ) -> tuple[set[str | None], set[str | None]] | None:
        """The partition values changed from version `since` to `until` (None: the latest), and those
        held then; None: unreadable. From a version to itself nothing changed, and nothing is read:
        one version of one table is one set of files (the callers pass versions they opened)."""
        if since == until:
            return set(), set()
        try:
            now = self._files_by_partition(self.open(uri, until))
            then = self._files_by_partition(self.open(uri, since))
        except (StorageError, OSError, DeltaError):
            return None
        return {value for path, value in now.items() ^ then.items()}, set(then.values())

    def partition_values(self, uri: str, version: int | None = None) -> set[str | None]:
        """The partition values the table holds data in (at `version`, default the latest), from the
        log alone (none: no table)."""
        try:
            return set(self._files_by_partition(self.open(uri, version)).values())
        except TableMissing:
            return set()
        except (OSError, DeltaError) as error:
            raise self._failure(uri, error) from error

    @staticmethod
    def _files_by_partition(table: DeltaTable) -> dict[str, str | None]:
        actions = pl.DataFrame(table.get_add_actions(flatten=True))
        partitions = [c for c in actions.columns if c.startswith("partition.")]
        if not partitions or actions.is_empty():
            return dict.fromkeys(actions["path"].to_list() if "path" in actions.columns else [], None)
        values = actions[partitions[0]].cast(pl.String).to_list()
        return dict(zip(actions["path"].to_list(), values, strict=True))

    def rows(self, uri: str, table: DeltaTable | None = None) -> int:
        """The table's row count from its log (each file's numRecords), without reading data; of
        `table` when it is already open."""
        try:
            actions = (table or self.open(uri)).get_add_actions(flatten=True)
        except (OSError, DeltaError) as error:
            raise self._failure(uri, error) from error
        return int(pl.DataFrame(actions)["num_records"].sum() or 0)

    def compact(self, uri: str, most_files: int = COMPACT_AFTER_FILES) -> bool:
        """After appends: when the table has more than `most_files` data files, rewrites small ones
        into larger (one OPTIMIZE commit, same rows) and checkpoints the log, so reads stay fast as
        appends accumulate; whether it did."""
        try:
            table = self.open(uri)
            if len(table.file_uris()) <= most_files:
                return False
            table.optimize.compact(commit_properties=CommitProperties(max_commit_retries=0))
            table.create_checkpoint()
        except (OSError, DeltaError) as error:
            raise self._failure(uri, error) from error
        return True

    def expire(self, uri: str) -> int:
        """Deletes the data files of versions replaced more than retention_hours ago; how many."""
        try:
            return self._vacuum(self.open(uri), self.retention_hours)
        except (OSError, DeltaError) as error:
            raise self._failure(uri, error) from error

    @staticmethod
    def _vacuum(table: DeltaTable, hours: int) -> int:
        """Vacuum only removed files (never a writer's staged ones), committing only when any are due."""
        due = table.vacuum(retention_hours=hours, dry_run=True, enforce_retention_duration=False)
        if due:
            table.vacuum(retention_hours=hours, dry_run=False, enforce_retention_duration=False)
        return len(due)

    def discard(self, staged: Staged) -> None:
        """Deletes staged files that will not be committed (best effort: they are invisible anyway)."""
        self._delete([f"{staged.uri}/{f.path}" for f in staged.files])

    def write(self, uri: str, frame: pl.LazyFrame, properties: Mapping[str, str] | None = None) -> int:
        """Stage and commit without a verification step; the new version."""
        return self.commit(self.stage(uri, frame), properties)

    def file_uri(self, path: str) -> str:
        """The URI of a file that is not a table (a report, a check's record) at `<root>/<path>`."""
        return f"{_root(self.root)}/{path.lstrip('/')}"

    def put_bytes(self, path: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Writes a file that is not a table (a report) at `<root>/<path>`, replacing it whole: a
        reader sees the old file or the new one, never part of one. Its URI."""
        uri = self.file_uri(path)
        try:
            if is_s3(uri):
                parsed = urlparse(uri)
                self.s3.boto3_client().put_object(
                    Bucket=parsed.netloc, Key=parsed.path.lstrip("/"), Body=data, ContentType=content_type
                )
                return uri
            target = Path(uri)
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
            try:
                partial.write_bytes(data)
                partial.replace(target)
            finally:
                partial.unlink(missing_ok=True)
        except (OSError, ClientError, BotoCoreError) as error:
            raise self._failure(uri, error) from error
        return uri

    def get_bytes(self, path: str) -> bytes | None:
        """A file that is not a table at `<root>/<path>`; None when there is none."""
        uri = self.file_uri(path)
        try:
            if is_s3(uri):
                parsed = urlparse(uri)
                try:
                    found = self.s3.boto3_client().get_object(
                        Bucket=parsed.netloc, Key=parsed.path.lstrip("/")
                    )
                except ClientError as error:
                    if _not_found(error):
                        return None
                    raise
                return found["Body"].read()
            target = Path(uri)
            return target.read_bytes() if target.exists() else None
        except (OSError, ClientError, BotoCoreError) as error:
            raise self._failure(uri, error) from error

    def has_file(self, path: str) -> bool:
        """Whether a file that is not a table is at `<root>/<path>` (asked of its metadata: no byte
        of it is read)."""
        uri = self.file_uri(path)
        try:
            if is_s3(uri):
                parsed = urlparse(uri)
                try:
                    self.s3.boto3_client().head_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))
                except ClientError as error:
                    if _not_found(error):
                        return False
                    raise
                return True
            return Path(uri).is_file()
        except (OSError, ClientError, BotoCoreError) as error:
            raise self._failure(uri, error) from error

    def remove_file(self, path: str) -> bool:
        """Deletes a file that is not a table at `<root>/<path>`; whether there was one. A failure is
        a StorageError: a caller removing personal data must know it is gone."""
        if not self.has_file(path):
            return False
        uri = self.file_uri(path)
        try:
            self._delete_object(uri)
        except (OSError, ClientError, BotoCoreError) as error:
            raise self._failure(uri, error) from error
        return True

    def _size(self, target: str) -> int:
        if not is_s3(target):
            return Path(target).stat().st_size
        parsed = urlparse(target)
        head = self.s3.boto3_client().head_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))
        return int(head["ContentLength"])

    def _delete_object(self, target: str) -> None:
        """Deletes one file or S3 object (none there: nothing to do); the client's own error if not."""
        if is_s3(target):
            parsed = urlparse(target)
            self.s3.boto3_client().delete_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))
        else:
            Path(target).unlink(missing_ok=True)

    def _delete(self, targets: list[str]) -> None:
        for target in targets:
            with contextlib.suppress(OSError, ClientError, BotoCoreError):
                self._delete_object(target)

    def open(self, uri: str, version: int | None = None) -> DeltaTable:
        """The table at one version (default: the latest); TableMissing when it was never written."""
        try:
            return DeltaTable(uri, storage_options=self._options(uri), version=version)
        except (OSError, DeltaError) as error:
            raise self._failure(uri, error) from error

    def exists(self, uri: str) -> bool:
        try:
            self.open(uri)
        except TableMissing:
            return False
        return True

    def scan(self, uri: str, version: int | None = None) -> pl.LazyFrame:
        """A lazy scan of one version (default: the latest) of a table."""
        return self.scan_opened(uri, self.open(uri, version))

    def scan_opened(self, uri: str, table: DeltaTable) -> pl.LazyFrame:
        """A lazy scan of a table already opened (at the version it was opened at)."""
        return pl.scan_delta(table, storage_options=self._options(uri), credential_provider=None)


class NoSuchSource(StorageError):
    """The landing zone has no folder (or prefix) for a source."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message, transient)


@dataclass(frozen=True)
class LandingFile:
    """One landing file as listed: where it is, how big, when it last changed, its ETag on S3."""

    uri: str
    """How tables, manifests and messages name the file: always valid UTF-8 (a local name that is not
    has its undecodable bytes escaped, `acc\\xff.json`)."""
    size: int
    modified: datetime
    etag: str | None = None
    local_name: str | None = None
    """The local path to open when `uri` had to escape it (as os.fsdecode spells it)."""


def _not_found(error: ClientError) -> bool:
    """Whether S3 answered that the object does not exist."""
    return error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


def _invalid_utf8(error: BaseException) -> bool:
    return isinstance(error, pl.exceptions.ComputeError) and "utf8" in str(error).lower().replace("-", "")


def _escaped(path: str) -> str:
    """A local path as valid UTF-8: the bytes of a name that do not decode are shown as `\\xNN`."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _nameless(error: BaseException) -> BaseException:
    """An OSError without the file name it carries (which may not be valid UTF-8): the message that
    reports it names the file by its uri."""
    if isinstance(error, OSError) and error.filename is not None:
        return type(error)(error.errno, error.strerror)
    return error


def _compression(head: bytes) -> int | None:
    """The zlib `wbits` that inflate a file starting with `head` when its magic bytes say gzip or zlib,
    None for plain text. Polars recognises compression the same way: by content, whatever the name."""
    if len(head) < 4:
        return None
    if head.startswith(b"\x1f\x8b"):
        return 31
    return 15 if head[:2] in (b"\x78\x01", b"\x78\x9c", b"\x78\xda") else None


class _Corrupt(Exception):
    """Compressed data that stops inflating, or ends before its end."""


def _inflated(chunks: Iterator[bytes], wbits: int) -> Iterator[bytes]:
    """The inflated bytes of a gzip (each of its members, as gzip reads them) or zlib stream, at most
    READ_BLOCK at a time; _Corrupt where the data is damaged or cut short."""
    inflater = zlib.decompressobj(wbits)
    for chunk in chunks:
        pending = chunk
        while pending:
            if inflater.eof:  # another member follows
                inflater = zlib.decompressobj(wbits)
            before = inflater.copy()
            try:
                piece = inflater.decompress(pending, READ_BLOCK)
            except zlib.error as error:
                yield _before_damage(before, pending)
                raise _Corrupt(str(error)) from error
            yield piece
            pending = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
    yield inflater.flush()
    if not inflater.eof:
        raise _Corrupt("the compressed data ends early")


def _before_damage(inflater: Any, data: bytes) -> bytes:
    """What `inflater` inflates of `data` before the damage that makes it fail: zlib keeps nothing of
    a call that fails, so the longest prefix of `data` that inflates is searched for (each try on a
    copy). Its output is at most READ_BLOCK, as the failed call's would have been."""
    good, bad = 0, len(data)
    while bad - good > 1:
        middle = (good + bad) // 2
        try:
            inflater.copy().decompress(data[:middle], READ_BLOCK)
        except zlib.error:
            bad = middle
        else:
            good = middle
    return inflater.decompress(data[:good], READ_BLOCK)


ObjectLister = Callable[..., Sequence[Mapping[str, Any]]]
"""Lists the objects under a prefix: `(bucket=, prefix=, client=)` -> list_objects_v2 `Contents` entries."""


def _paginated_objects(bucket: str, prefix: str, client: Any) -> list[Mapping[str, Any]]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [obj for page in pages for obj in page.get("Contents", [])]


@dataclass(frozen=True)
class LandingZone:
    """The raw JSON-lines files under `<root>/<source>/`, plain or gzip-compressed, from a folder or
    an S3 prefix.

    Files are listed, then streamed by Polars line by line (a file on S3 from a local copy made
    first, since the scan reads a file twice); Polars inflates a gzip file as it reads it (it
    recognises compression by the file's first bytes, not its name: a `.json.gz` that holds plain
    text is read as text). No file is held whole in memory. Three kinds of file Polars cannot
    read are read in Python instead (see _python_lines): one that is not valid UTF-8, so that only
    its bad lines are quarantined; a compressed one that is truncated or corrupt, so that its lines
    before the damage are kept and one quarantined line stands for the rest; and a local one whose
    name is not valid UTF-8, which Polars cannot open. The trade-off: such a file is read once more,
    by slower Python code, and its lines pass through a temporary Parquet file, a block of
    SPLIT_BLOCK bytes at a time, so memory stays bounded by that block rather than the file.
    """

    root: str
    s3: S3Options = field(default_factory=S3Options)

    def files(
        self, source: str, optional: bool = False, list_objects: ObjectLister | None = None
    ) -> list[LandingFile]:
        """Every `*.json` and `*.json.gz` file under <root>/<source>/, in path order.

        A missing folder (or an empty prefix) is an error, unless the source is `optional`. On S3 the
        objects are listed by `list_objects(bucket=, prefix=, client=)` (default: list_objects_v2
        page by page; the landing sensor passes dagster-aws's `get_objects`).
        """
        root = self.root.rstrip("/")
        try:
            if is_s3(root):
                return self._list_s3(root, source, list_objects or _paginated_objects)
            return self._list_local(root, source)
        except NoSuchSource:
            if optional:
                return []
            raise

    def lines(
        self,
        files: list[LandingFile],
        read: Mapping[str, pl.LazyFrame] | None = None,
        copies: Mapping[str, str] | None = None,
    ) -> pl.LazyFrame:
        """The numbered lines of `files` as one lazy scan (see parsing.LINE_COLUMNS); the lines of the
        files in `read` (uri -> lines read in Python, see _spilled) are taken from there, and the
        files in `copies` (uri -> local path of a copy) are read from their copy."""
        read = read or {}
        scanned = [f for f in files if f.uri not in read]
        frames = [self._scan(scanned, copies)] if scanned else []
        frames += [read[f.uri] for f in files if f.uri in read]
        return pl.concat(frames, how="vertical") if frames else empty_raw_lines().lazy()

    def collect(self, files: list[LandingFile], plan: Callable[[pl.LazyFrame], T]) -> T:
        """`plan(lines of files)`, run once; if Polars cannot read some files (not valid UTF-8, or
        compressed and damaged), run again with those read in Python. A local file whose name is not
        valid UTF-8 is always read in Python. A file that cannot be read is a StorageError naming it.

        The lines read in Python are spilled to a temporary folder that lives while `plan` runs:
        `plan` collects or sinks what it needs of them.
        """
        in_python = [f for f in files if f.local_name is not None]
        try:
            return self._planned(files, in_python, plan)
        except (OSError, pl.exceptions.ComputeError) as error:
            unscannable = self._unscannable([f for f in files if f.local_name is None])
            if not unscannable:
                raise self._failure(files, error) from error
        try:
            return self._planned(files, in_python + unscannable, plan)
        except (OSError, pl.exceptions.ComputeError) as error:
            raise self._failure(files, error) from error

    def read_lines(self, source: str, optional: bool = False) -> pl.DataFrame:
        """All lines of a source's files, numbered per file, in path order (small sources only)."""
        return self.collect(self.files(source, optional), lambda lines: lines.collect())

    def _options(self) -> dict[str, str] | None:
        return self.s3.delta_options() if is_s3(self.root) else None

    def _scan(self, files: list[LandingFile], copies: Mapping[str, str] | None = None) -> pl.LazyFrame:
        """One streaming scan of many files (one scan per file would cost ~10 ms each to run), each
        read from its local copy when `copies` has one.

        Its row index counts across files, so each file's first index is found first (a pass that
        reads but does not parse) and subtracted; the file's position in `files` finds it, its URI
        and its modification time without a join (a join or a replace on the path column is not
        streamed).
        """
        uris = [f.uri for f in files]
        paths = [(copies or {}).get(uri, uri) for uri in uris]
        scanned = pl.scan_lines(
            paths,
            name=RAW_LINE,
            row_index_name="_row",
            glob=False,
            storage_options=self._options() if any(is_s3(path) for path in paths) else None,
            credential_provider=None,
            include_file_paths=SOURCE_FILE,
        )
        starts = dict(scanned.group_by(SOURCE_FILE).agg(pl.col("_row").min()).collect().iter_rows())
        position = pl.col(SOURCE_FILE).cast(pl.Enum(paths)).to_physical()
        first_row = pl.lit(pl.Series([starts.get(p, 0) for p in paths], dtype=pl.Int64)).gather(position)
        modified = pl.lit(pl.Series([f.modified for f in files], dtype=pl.Datetime("us", "UTC")))
        number = pl.col("_row").cast(pl.Int64) - first_row + 1
        line = pl.col(RAW_LINE).str.strip_chars_end("\r")
        return scanned.select(
            pl.lit(pl.Series(uris, dtype=pl.String)).gather(position).alias(SOURCE_FILE),
            number.alias(LINE_NUMBER),
            # a byte-order mark only at the start of a file
            pl.when(number == 1).then(line.str.strip_prefix("\ufeff")).otherwise(line).alias(RAW_LINE),
            pl.lit(True).alias(UTF8_VALID),
            modified.gather(position).alias(INGESTED_AT),
        )

    def _planned(
        self, files: list[LandingFile], in_python: list[LandingFile], plan: Callable[[pl.LazyFrame], T]
    ) -> T:
        """`plan` over the lines of `files`; those `in_python` read in Python, and files on S3 first
        copied to a local folder (one download each: the scan reads a file twice, to number its
        lines and to parse them). The folder lives while `plan` runs."""
        remote = [f for f in files if is_s3(f.uri) and f not in in_python]
        if not in_python and not remote:
            return plan(self.lines(files))
        with tempfile.TemporaryDirectory(prefix="stedi-landing-") as work:
            copies = {f.uri: self._downloaded(f, Path(work) / f"copy-{n}") for n, f in enumerate(remote)}
            read = {f.uri: self._spilled(f, Path(work) / str(n)) for n, f in enumerate(in_python)}
            return plan(self.lines(files, read, copies))

    def _downloaded(self, file: LandingFile, target: Path) -> str:
        """A local copy of a file on S3, streamed to disk; a failed download is a StorageError naming it."""
        parsed = urlparse(file.uri)
        try:
            self.s3.boto3_client().download_file(parsed.netloc, parsed.path.lstrip("/"), str(target))
        except (OSError, ClientError, BotoCoreError) as error:
            raise self._failure([file], error) from error
        return str(target)

    def _unscannable(self, files: list[LandingFile]) -> list[LandingFile]:
        """The files Polars cannot read, each tried on its own: not valid UTF-8, or compressed and
        failing to inflate. Any other failure is a StorageError naming the file."""
        found = []
        for file in files:
            try:
                self._scan([file]).select(pl.col(RAW_LINE).str.len_bytes().sum()).collect()
            except (OSError, pl.exceptions.ComputeError) as error:
                if not _invalid_utf8(error) and _compression(self._head(file)) is None:
                    raise self._failure([file], error) from error
                found.append(file)
        return found

    def _spilled(self, file: LandingFile, folder: Path) -> pl.LazyFrame:
        """The lines of a file read in Python (see _python_lines), written block by block into Parquet
        files under `folder` and scanned back: memory holds one block, never the file."""
        folder.mkdir()
        parts = []
        for n, block in enumerate(self._python_lines(file)):
            parts.append(folder / f"{n}.parquet")
            block.write_parquet(parts[-1])
        return pl.scan_parquet(parts) if parts else empty_raw_lines().lazy()

    def _python_lines(self, file: LandingFile) -> Iterator[pl.DataFrame]:
        """A file's numbered lines, split in Python (parsing.raw_lines) SPLIT_BLOCK bytes of whole lines
        at a time; compressed data (recognised as Polars does) is inflated as it is read.

        Where compressed data is truncated or corrupt, the whole lines before the damage are kept and
        one line (parsing.unreadable_rest, quarantined with its reason) stands for the rest of the
        file, a partly read last line included: a damaged file costs its unreadable part, not the run.
        """
        pieces: list[bytes] = []
        size, line = 0, 1
        try:
            for piece in self._text(file):
                pieces.append(piece)
                size += len(piece)
                if size < SPLIT_BLOCK or b"\n" not in piece:
                    continue  # a line longer than a block waits for its end
                blob = b"".join(pieces)
                cut = blob.rfind(b"\n") + 1
                yield raw_lines(blob[:cut], file.uri, file.modified, line)
                line += blob.count(b"\n", 0, cut)
                pieces, size = [blob[cut:]], len(blob) - cut
        except _Corrupt:
            blob = b"".join(pieces)
            cut = blob.rfind(b"\n") + 1
            if cut:
                yield raw_lines(blob[:cut], file.uri, file.modified, line)
            yield unreadable_rest(file.uri, line + blob.count(b"\n", 0, cut), file.modified)
            return
        blob = b"".join(pieces)
        if blob:
            yield raw_lines(blob, file.uri, file.modified, line)

    def _text(self, file: LandingFile) -> Iterator[bytes]:
        """A file's bytes, inflated when its first bytes say gzip or zlib."""
        chunks = self._chunks(file)
        head = b""
        for chunk in chunks:
            head += chunk
            if len(head) >= 4:
                break
        wbits = _compression(head)
        stream = itertools.chain([head], chunks)
        return stream if wbits is None else _inflated(stream, wbits)

    def _head(self, file: LandingFile) -> bytes:
        """The first bytes of a file, enough for its magic bytes."""
        with contextlib.closing(self._chunks(file, 4)) as chunks:
            return next(chunks, b"")

    def _chunks(self, file: LandingFile, size: int = READ_BLOCK) -> Iterator[bytes]:
        """A file's bytes as stored, `size` at a time; a failed read is a StorageError naming the file."""
        try:
            if is_s3(file.uri):
                parsed = urlparse(file.uri)
                client = self.s3.boto3_client()
                body = client.get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"]
                with contextlib.closing(body):
                    yield from body.iter_chunks(size)
            else:
                with open(file.local_name or file.uri, "rb") as stream:
                    while chunk := stream.read(size):
                        yield chunk
        except (OSError, ClientError, BotoCoreError) as error:
            nameless = _nameless(error)
            raise classify(file.uri, nameless, LANDING_SETTING, self.s3.endpoint) from nameless

    def _failure(self, files: list[LandingFile], error: BaseException) -> StorageError:
        named = next((f.uri for f in files if f.uri in str(error)), None)
        uri = named or (files[0].uri.rsplit("/", 1)[0] + "/" if files else self.root)
        return classify(uri, error, LANDING_SETTING, self.s3.endpoint)

    @staticmethod
    def _list_local(root: str, source: str) -> list[LandingFile]:
        folder = Path(root) / source
        if not folder.is_dir():
            raise NoSuchSource(
                f"Landing folder {_escaped(str(folder.absolute()))} does not exist. Put the {source} "
                f"JSON-lines files there, point {LANDING_SETTING} at the landing root, or run "
                f"`stedi generate --out {_escaped(root)}` for sample data.",
                False,
            )
        listed = []
        for path in sorted(folder.rglob("*")):
            if path.name.endswith(LANDING_SUFFIXES) and path.is_file():
                stat = path.stat()
                name, uri = str(path), _escaped(str(path))
                modified = datetime.fromtimestamp(stat.st_mtime, UTC)
                listed.append(
                    LandingFile(uri, stat.st_size, modified, local_name=None if uri == name else name)
                )
        return listed

    def _list_s3(self, root: str, source: str, list_objects: ObjectLister) -> list[LandingFile]:
        parsed = urlparse(root)
        bucket, prefix = parsed.netloc, f"{parsed.path.strip('/')}/{source}/".lstrip("/")
        uri = f"s3://{bucket}/{prefix}"
        try:
            listed = list_objects(bucket=bucket, prefix=prefix, client=self.s3.boto3_client())
        except (ClientError, BotoCoreError) as error:
            raise classify(uri, error, LANDING_SETTING, self.s3.endpoint) from error
        if not listed:
            raise NoSuchSource(
                f"Nothing under {uri}: put the {source} JSON-lines files there or point "
                f"{LANDING_SETTING} at the landing root.",
                False,
            )
        return [
            LandingFile(f"s3://{bucket}/{obj['Key']}", int(obj["Size"]), obj["LastModified"], obj.get("ETag"))
            for obj in sorted(listed, key=lambda o: o["Key"])
            if obj["Key"].endswith(LANDING_SUFFIXES)
        ]
