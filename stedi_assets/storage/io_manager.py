"""Delta Lake IO manager on Polars' own readers and sinks: stage -> verify -> commit.

Each asset is a Delta table at <lakehouse>/<zone>/<table>/, the zone taken from the asset's
definition metadata. An asset returns its plan, or a `Publication` of it with the contract that
must hold on what is published. The plan is streamed into staged files no reader can see, the
contract is verified on those files, and only then one overwrite commit makes them the table: a
table that breaks its contract is never visible and its Delta version does not change. Inputs load
as lazy scans so plans stream.
"""

# No `from __future__ import annotations` here: Dagster resolves nested resources from real annotations.
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from typing import Any

import dagster as dg
import polars as pl

from stedi_assets.rules.contracts import Verdict
from stedi_assets.rules.identity import KEY, keys
from stedi_assets.storage.errors import StorageError, TableMissing
from stedi_assets.storage.lakehouse import Lakehouse, Staged
from stedi_assets.storage.metadata import (
    IDENTITIES,
    OPTIONAL_INPUT,
    PARTITION_BY,
    ZONE,
    markdown_table,
    pii_columns,
    verdict_metadata,
)
from stedi_assets.storage.resources import StediStorage, as_failure

PREVIEW_ROWS = 5
ROWS_WRITTEN = "rows_written"
"""Materialization metadata: rows this write committed (the whole table, or only the rows it
appended or the days it replaced, when dagster/row_count is the table's total); 0 for no write."""


def _table_uri(lakehouse: Lakehouse, key: dg.AssetKey, metadata: Mapping[str, Any]) -> str:
    zone = metadata.get(ZONE)
    if zone is None:
        raise dg.Failure(
            f"Asset {key.to_user_string()} has no {ZONE} metadata: declare it with the zone factories.",
            allow_retries=False,
        )
    return lakehouse.table_uri(str(zone), key.path[-1])


@dataclass(frozen=True)
class Publication:
    """A table's new content and what must hold on it before anyone may see it.

    `verify` is evaluated on the staged files (what would be published, not the plan that made
    them); `properties` are recorded in the Delta commit (the rules the table was made under).
    """

    frame: pl.LazyFrame | Sequence[pl.LazyFrame]
    """The table, or its parts (e.g. one per day), each streamed in turn into the staged version."""
    contract: str = ""
    verify: Callable[[pl.LazyFrame], Verdict] | None = None
    properties: Mapping[str, str] = field(default_factory=dict)
    identities: tuple[str, ...] = ()
    """Columns identifying whom a row is about: when one of them leaves, no older version stays."""
    no_history: bool = False
    """Keep no older version at all (a rewrite whose only purpose is to remove people)."""
    stats_columns: list[str] | None = None
    """Columns that may ever carry statistics in the Delta log (no personal data)."""
    secret: bytes | None = field(default=None, repr=False)
    """The pseudonym key: a broken contract's sample names people by keyed hash."""
    partition_by: tuple[str, ...] = ()
    """Columns the table is partitioned by: one staged file per partition."""
    append: bool = False
    """Add the frame's rows to the table (an incremental ingest) instead of replacing it."""
    replace_partitions: Sequence[str] | None = None
    """Replace only these partitions (values of the partition column): the frame holds just them."""
    based_on: int | None = None
    """The table version the frame read the table itself at (rows replaced in place): the commit
    follows that version, never a later one, so no other writer's rows are overwritten."""
    rebase: bool = True
    """Whether a partition replacement may follow another writer's commit to other partitions. False
    when the frame was computed from the table itself (a landing file's rows replaced in place):
    following that commit would drop its rows and the manifest entries that go with them."""
    published: Callable[[int, int | None], None] | None = None
    """Called once the IO manager has published the write (or found it the same as the table), with
    the table's version and the version the write followed (None: the table was created; the same
    version: nothing was committed): to record what the published content was made from."""


def removed_identities(previous: pl.LazyFrame, staged: pl.LazyFrame, columns: tuple[str, ...]) -> int:
    """How many distinct identities of the previous version are not in the new one."""
    gone = [keys(previous, c).join(keys(staged, c), on=KEY, how="anti") for c in columns]
    return pl.concat(gone).select(pl.len()).collect().item() if gone else 0


def same_rows(left: pl.LazyFrame, right: pl.LazyFrame) -> bool:
    """Whether two frames hold the same rows (in any order) under the same schema."""
    if left.collect_schema() != right.collect_schema():
        return False
    hashes = [
        frame.select(pl.struct(pl.all()).hash().sort()).collect().to_series() for frame in (left, right)
    ]
    return hashes[0].equals(hashes[1])


def _same_as_read(lakehouse: Lakehouse, uri: str, staged: Staged, publication: Publication) -> bool:
    """A whole-table rewrite holding exactly the rows of the version it read, under the same commit
    properties: committing it would only make a new version, and every reader of the table (the
    reading tables' day planning, the checks' scope) would take it for a change."""
    if publication.append or publication.replace_partitions is not None or publication.no_history:
        return False
    if staged.read_version is None:
        return False
    table = lakehouse.open(uri)  # once: its version, last commit, row count and rows
    if table.version() != staged.read_version:
        return False
    latest = lakehouse.latest_write(uri, table)
    if any(str(latest.get(key)) != str(value) for key, value in publication.properties.items()):
        return False
    if lakehouse.rows(uri, table) != staged.rows:
        return False
    return same_rows(lakehouse.scan_opened(uri, table), lakehouse.scan_staged(staged))


def publish(lakehouse: Lakehouse, uri: str, publication: Publication) -> tuple[Staged | None, int]:
    """Stage, verify, commit, then expire history; the staged write and the committed version.

    A whole-table rewrite identical to the version it read is not committed (None, that version).

    When the contract is broken the staged files are deleted and nothing is committed: a
    dg.Failure that is not retried (recomputing gives the same table), with a masked sample.
    When the new version drops an identity the previous one held (a withdrawal, an erasure), every
    older version is deleted, so no retained version holds the person; otherwise versions older
    than the retention are.
    """
    staged = lakehouse.stage(uri, publication.frame, publication.partition_by, publication.based_on)
    if publication.verify is not None:
        try:
            verdict = publication.verify(lakehouse.scan_staged(staged))
        except BaseException:
            lakehouse.discard(staged)
            raise
        if not verdict.passed:
            lakehouse.discard(staged)
            raise dg.Failure(
                description=f"The {publication.contract} contract is broken, so the table was not "
                f"published: {verdict.summary}",
                metadata=verdict_metadata(verdict, publication.secret),
                allow_retries=False,
            )
    try:
        unchanged = _same_as_read(lakehouse, uri, staged, publication)
    except BaseException:
        lakehouse.discard(staged)
        raise
    if unchanged:  # older versions still expire on time
        lakehouse.discard(staged)
        lakehouse.expire(uri)
        return None, int(staged.read_version or 0)
    removed = publication.no_history
    if not removed and not publication.append and publication.identities and staged.read_version is not None:
        try:
            previous = lakehouse.scan(uri, staged.read_version)
            if publication.replace_partitions is not None:  # only these partitions are replaced
                column = publication.partition_by[0]
                previous = previous.filter(
                    pl.col(column).cast(pl.String).is_in(publication.replace_partitions)
                )
            removed = removed_identities(previous, lakehouse.scan_staged(staged), publication.identities) > 0
        except BaseException:
            lakehouse.discard(staged)
            raise
    version = lakehouse.commit(
        staged,
        publication.properties,
        publication.stats_columns,
        publication.append,
        publication.replace_partitions,
        publication.rebase,
    )
    if removed:
        lakehouse.forget_history(uri)
    else:
        if publication.append:
            lakehouse.compact(uri)
        lakehouse.expire(uri)
    return staged, version


def as_declared(publication: Publication, metadata: Mapping[str, Any]) -> Publication:
    """`publication` with what its table's definition metadata declares: the identity columns, the
    partition columns and the columns that may carry statistics in the Delta log. Every write of a
    table, by the IO manager or not, goes through this, so none loses the table's layout."""
    pii = pii_columns(metadata)
    schema = metadata.get("dagster/column_schema")
    return replace(
        publication,
        identities=tuple(metadata.get(IDENTITIES, ())),
        partition_by=tuple(metadata.get(PARTITION_BY, ())),
        stats_columns=[c.name for c in schema.columns if c.name not in pii] if schema else None,
    )


class DeltaIOManager(dg.ConfigurableIOManager):
    """Stores Polars frames as Delta tables in the lakehouse, local or on S3."""

    storage: StediStorage

    def handle_output(
        self, context: dg.OutputContext, obj: Publication | pl.LazyFrame | pl.DataFrame | None
    ) -> None:
        if obj is None:
            return
        publication = obj if isinstance(obj, Publication) else Publication(obj.lazy())
        metadata = context.definition_metadata
        pii = pii_columns(metadata)
        publication = as_declared(publication, metadata)
        if publication.verify is not None and publication.secret is None:
            with suppress(StorageError):  # no key: a broken contract's sample stays masked
                publication = replace(publication, secret=self.storage.pseudonym.secret)
        lakehouse = self.storage.lakehouse
        uri = _table_uri(lakehouse, context.asset_key, metadata)
        try:
            staged, version = publish(lakehouse, uri, publication)
            if publication.published is not None:
                publication.published(version, staged.read_version if staged is not None else version)
            if staged is None:  # nothing changed: no new version
                context.add_output_metadata(held_metadata(lakehouse, uri))
                return
            metadata = table_metadata(lakehouse, staged, version, pii)
            if publication.append or publication.replace_partitions is not None:
                # the table holds more than this write: its count from the log
                metadata["dagster/row_count"] = lakehouse.rows(uri)
            context.add_output_metadata(metadata)
        except StorageError as error:
            raise as_failure(error) from error

    def load_input(self, context: dg.InputContext) -> pl.LazyFrame | pl.DataFrame | None:
        lakehouse = self.storage.lakehouse
        upstream = context.upstream_output
        uri = _table_uri(lakehouse, context.asset_key, upstream.definition_metadata if upstream else {})
        try:
            frame = lakehouse.scan(uri)
        except TableMissing as error:
            if upstream and upstream.definition_metadata.get(OPTIONAL_INPUT):
                return None
            raise as_failure(error) from error
        except StorageError as error:
            raise as_failure(error) from error
        return frame.collect() if context.dagster_type.typing_type is pl.DataFrame else frame


def held_metadata(lakehouse: Lakehouse, uri: str) -> dict[str, Any]:
    """What a materialization that wrote no new version says: what the table holds (from its log),
    the count and the version from one opening of it."""
    table = lakehouse.open(uri)
    return {
        "dagster/row_count": lakehouse.rows(uri, table),
        ROWS_WRITTEN: 0,
        "dagster/uri": dg.MetadataValue.path(uri),
        "table_uri": dg.MetadataValue.path(uri),
        "delta_version": table.version(),
    }


def table_metadata(lakehouse: Lakehouse, staged: Staged, version: int, pii: frozenset[str]) -> dict[str, Any]:
    """What Dagster's UI shows for a materialization: rows (from the write, not a re-scan), a preview
    with PII masked, URI and Delta version."""
    preview = lakehouse.scan_staged(staged).head(PREVIEW_ROWS).collect()
    return {
        "dagster/row_count": staged.rows,
        ROWS_WRITTEN: staged.rows,
        "dagster/uri": dg.MetadataValue.path(staged.uri),
        "table_uri": dg.MetadataValue.path(staged.uri),
        "delta_version": version,
        "preview": dg.MetadataValue.md(markdown_table(preview, pii)),
    }
