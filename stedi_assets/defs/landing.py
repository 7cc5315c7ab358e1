"""Landing zone: each declared source's JSON lines parsed into a typed table and its quarantine.

Everything here is generated from the source declarations in rules/catalog.py: the ingest step
that writes both tables, the check that no line is lost, and each table's table-level contracts.
"""

# No `from __future__ import annotations` here: Dagster reads the context annotation at runtime.

import tempfile
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import polars as pl

from stedi_assets.defs.factories import (
    KINDS,
    STORAGE_RETRY,
    CheckPart,
    check_result,
    check_step,
    latest_metadata,
    table_contracts_part,
)
from stedi_assets.defs.partitions import SINGLE_RUN
from stedi_assets.defs.settings import StediSettings
from stedi_assets.rules import contracts, erasure, parsing
from stedi_assets.rules.catalog import ERASURE_LOG, SOURCE_FILE, SOURCES, Source, Table, on_days
from stedi_assets.storage import manifest
from stedi_assets.storage.errors import StorageError
from stedi_assets.storage.io_manager import Publication, as_declared, held_metadata, publish
from stedi_assets.storage.lakehouse import Lakehouse
from stedi_assets.storage.metadata import definition_metadata
from stedi_assets.storage.resources import StediStorage, as_failure, pseudonym_of

LINES_READ = "lines_read"
"""Materialization metadata: non-blank lines of every file the landing table holds (the conservation
baseline), from its manifest."""
LINES_ERASED = "lines_erased"
"""Materialization metadata: lines dropped because their person or device is in the erasure log."""
FILES_ADDED = "files_added"
"""Materialization metadata: landing files whose lines this write added (every file on a rebuild)."""
FILES_REPLACED = "files_replaced"
"""Materialization metadata: files that changed or vanished since the last write, whose rows left."""


def _out(declared: Table) -> dg.AssetOut:
    return dg.AssetOut(
        group_name=declared.zone,
        kinds=KINDS,
        description=declared.description,
        metadata=definition_metadata(declared),
    )


def ingest_asset(source: Source) -> dg.AssetsDefinition:
    """One step per source: read its files once, write the accepted rows and the rejects."""
    landing, rejects = source.landing.name, source.rejects.name

    @dg.multi_asset(
        name=f"ingest_{source.name}",
        outs={landing: _out(source.landing), rejects: _out(source.rejects)},
        description=f"Reads every *.json and *.json.gz file of the {source.name} source; lines that "
        "fail to parse are quarantined.",
        retry_policy=STORAGE_RETRY,
        backfill_policy=SINGLE_RUN,
        pool=f"delta_{source.name}_ingest",
        ins={"erasure_log": dg.AssetIn(ERASURE_LOG.name)},
    )
    def ingest(storage: StediStorage, erasure_log: pl.LazyFrame | None) -> Iterator[dg.MaterializeResult]:
        lakehouse = storage.lakehouse
        uris = {
            name: lakehouse.table_uri(declared.zone, declared.name)
            for name, declared in ((landing, source.landing), (rejects, source.rejects))
        }
        erased_log = None if erasure_log is None else erasure_log.collect()
        erasures = 0 if erased_log is None else erased_log.height
        try:
            files = storage.landing.files(source.name)
            held = {
                name: manifest.Manifest.loads(lakehouse.latest_write_property(uri, manifest.MANIFEST))
                for name, uri in uris.items()
            }
        except StorageError as error:
            raise as_failure(error) from error
        applied = max((m.erasures for m in held.values() if m is not None), default=0)
        if erasures < applied:  # fail closed: rebuilding now would bring erased people back
            raise dg.Failure(
                f"The erasure log holds {erasures} entries, fewer than the {applied} the {source.name} "
                f"tables were built with: it was lost or rolled back. Restore {ERASURE_LOG.name} "
                "(or the request files under erasure_requests/) and run again; nothing was ingested.",
                allow_retries=False,
            )
        plans = {name: manifest.plan(held[name], files, erasures) for name in uris}
        # only the files some table does not hold yet are read
        needed = {uri for p in plans.values() for uri in p.uris}
        to_read = [f for f in files if f.uri in needed]
        # the one-pass parse streams every line into a local file; the tables are staged from it
        with tempfile.TemporaryDirectory(prefix=f"stedi-ingest-{source.name}-") as work:
            parsed_file = Path(work) / "parsed.parquet"

            def to_disk(plan: pl.LazyFrame) -> pl.LazyFrame:
                plan.sink_parquet(parsed_file)
                return pl.scan_parquet(parsed_file)

            try:
                parsed = storage.landing.collect(
                    to_read, lambda lines: parsing.parse_lines(lines, source, to_disk)
                )
            except StorageError as error:
                raise as_failure(error) from error
            lines = dict(parsed.group_by(SOURCE_FILE).agg(pl.len()).collect().iter_rows())
            accepted = parsing.accepted_rows(_of_files(parsed, plans[landing], needed), source)
            rejected = parsing.rejected_rows(_of_files(parsed, plans[rejects], needed))
            n_erased = 0
            if erasures:  # nothing to mark (or hash) without erasures
                accepted, rejected, erased = erasure.without_erased(
                    accepted, rejected, source, erased_log.lazy(), pseudonym_of(storage).secret
                )
                n_erased = int(erased.collect().sum_horizontal().item())
            # Fail closed: quarantined lines can only hold people back (a withdrawal that could not
            # be parsed, a claim on a serial), while landing rows can let them in; whatever stops the
            # run between two commits, the quarantine must not be the one behind. When it only grows
            # it commits first. When rows of changed files leave it (a corrected line no longer holds
            # anyone), the new quarantined lines are added first (with the old manifest: a crash
            # after it replaces those files again), then the landing rows, then the old lines leave.
            order = ((rejects, rejected), (landing, accepted))
            if plans[rejects].replaced:
                try:
                    _hold_first(lakehouse, uris[rejects], source, rejected, plans[rejects], held[rejects])
                except StorageError as error:
                    raise as_failure(error) from error
                order = order[::-1]
            for name, frame in order:
                plan = plans[name]
                after = plan.manifest(lines, n_erased if name == landing else 0, erasures)
                metadata = {LINES_READ: after.lines, LINES_ERASED: after.erased} if name == landing else {}
                metadata[FILES_ADDED] = len(plan.files)
                metadata[FILES_REPLACED] = len(plan.replaced)
                if plan.append and not plan.files and not plan.replaced:  # nothing new: nothing read
                    metadata |= held_metadata(lakehouse, uris[name])
                    yield dg.MaterializeResult(asset_key=name, value=None, metadata=metadata)
                    continue
                properties = {manifest.MANIFEST: after.dumps()}
                declared = source.landing if name == landing else source.rejects
                try:
                    publication = (
                        _replacing(lakehouse, uris[name], declared, frame, plan.replaced, properties)
                        if plan.replaced
                        else Publication(frame, append=plan.append, properties=properties)
                    )
                except StorageError as error:
                    raise as_failure(error) from error
                yield dg.MaterializeResult(asset_key=name, value=publication, metadata=metadata)

    return ingest


def _hold_first(
    lakehouse: Lakehouse,
    uri: str,
    source: Source,
    rejected: pl.LazyFrame,
    plan: manifest.Plan,
    previous: manifest.Manifest | None,
) -> None:
    """Appends the quarantined lines of the changed files to the quarantine before anything leaves
    either table, under the manifest it already had (see the ingest's commit order)."""
    holds = rejected.filter(pl.col(SOURCE_FILE).is_in(list(plan.replaced)))
    if lakehouse.reading(uri, holds.select(pl.len())).item() == 0:
        return
    properties = {manifest.MANIFEST: (previous or manifest.Manifest()).dumps()}
    held_rows = Publication(holds, append=True, properties=properties)
    publish(lakehouse, uri, as_declared(held_rows, definition_metadata(source.rejects)))


def _replacing(
    lakehouse: Lakehouse,
    uri: str,
    declared: Table,
    added: pl.LazyFrame,
    replaced: tuple[str, ...],
    properties: dict[str, str],
) -> Publication:
    """The write that puts `added` (the rows of the new and changed files) in place of the rows of the
    files `replaced`, keeping every other row without reading its landing file again.

    A day-partitioned table replaces only the days the leaving and the added rows are in (its other
    days' data files stay as they are); an unpartitioned one, or one with rows of no day, is
    rewritten whole from its own rows. Either commit follows only the version read here (`based_on`,
    never rebased): another writer's commit in between fails it as a transient error, retried from
    the new version, as it fails an append.
    """
    table = lakehouse.open(uri)  # the commit follows this version, never a later one
    current = lakehouse.scan_opened(uri, table)
    based_on = table.version()
    kept = current.filter(~pl.col(SOURCE_FILE).is_in(list(replaced)))
    columns = added.collect_schema().names()
    if declared.partition_by:
        day = declared.partition_by[0]
        leaving = current.filter(pl.col(SOURCE_FILE).is_in(list(replaced))).select(day)
        touched = pl.concat([leaving, added.select(day)]).unique()
        days = lakehouse.reading(uri, touched).get_column(day).to_list()
        if None not in days:  # a partition of no day cannot be named in a partition filter
            frame = pl.concat([on_days(kept, days).select(columns), added])
            replaced_days = [str(d) for d in days]
            return Publication(
                frame,
                properties=properties,
                replace_partitions=replaced_days,
                based_on=based_on,
                rebase=False,
            )
    return Publication(pl.concat([kept.select(columns), added]), properties=properties, based_on=based_on)


def _of_files(parsed: pl.LazyFrame, plan: manifest.Plan, read: set[str]) -> pl.LazyFrame:
    """The parsed lines of the files a table's write adds (all that were read, usually)."""
    if set(plan.uris) == read:
        return parsed
    return parsed.filter(pl.col(SOURCE_FILE).is_in(plan.uris))


def lines_accounted_for(source: Source) -> CheckPart:
    """Nothing silently dropped: every non-blank line is a landing row or a quarantined reject."""
    landing, rejects = source.landing, source.rejects
    specs = (
        dg.AssetCheckSpec(
            "lines_conserved",
            asset=landing.name,
            description="Accepted rows plus quarantined rejects equal the non-blank lines the ingest read.",
            blocking=True,
            additional_deps=[rejects.name],
        ),
        dg.AssetCheckSpec(
            "reject_rate",
            asset=landing.name,
            description="Warns on any rejected line; fails above the configured max_reject_rate.",
            additional_deps=[rejects.name],
        ),
    )

    def accounted_for(
        context: dg.AssetCheckExecutionContext,
        settings: StediSettings,
        storage: StediStorage,
        chosen: list[str],
    ) -> Iterator[dg.AssetCheckResult]:
        named = {"asset_key": landing.name}
        read = latest_metadata(context.instance, landing.name, LINES_READ)
        erased = latest_metadata(context.instance, landing.name, LINES_ERASED) or 0
        if read is None:
            missing = contracts.Verdict(
                False, f"no materialization of {landing.name} recorded its {LINES_READ}"
            )
            yield from (check_result(missing, check_name=name, **named) for name in chosen)
            return
        try:
            n_accepted, n_rejected = (
                storage.lakehouse.scan(storage.lakehouse.table_uri(table.zone, table.name))
                .select(pl.len())
                .collect()
                .item()
                for table in (landing, rejects)
            )
        except StorageError as error:
            raise as_failure(error) from error
        if "lines_conserved" in chosen:
            conserved = contracts.conservation(int(read), n_accepted, n_rejected, int(erased))
            yield check_result(conserved, check_name="lines_conserved", **named)
        if "reject_rate" in chosen:
            rate = contracts.reject_rate(int(read), n_rejected, settings.max_reject_rate)
            yield check_result(rate, check_name="reject_rate", **named)

    return CheckPart(specs, accounted_for)


def source_definitions(source: Source) -> tuple[dg.AssetsDefinition, list[dg.AssetChecksDefinition]]:
    """The ingest asset of a declared source and every check of its two tables, as one step
    `<source>_landing_checks` (factories.check_step)."""
    parts = [
        lines_accounted_for(source),
        table_contracts_part(source.landing),
        table_contracts_part(source.rejects),
    ]
    return ingest_asset(source), [check_step(f"{source.name}_landing_checks", parts)]


_generated = [source_definitions(source) for source in SOURCES]
landing_assets = [asset for asset, _ in _generated]
landing_checks = [check for _, checks in _generated for check in checks]
