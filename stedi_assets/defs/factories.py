"""What every zone shares: the table asset decorator, contract verdicts as check results, the
privacy guard, and the check factories (referential contracts and table-level contracts).
"""

# No `from __future__ import annotations` here: Dagster reads the context annotation at runtime.

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import dagster as dg
import polars as pl

from stedi_assets.defs.check_scope import Examined, Guard, added_rows, examined
from stedi_assets.defs.partitions import EVENT_DAYS, SINGLE_RUN
from stedi_assets.defs.settings import StediSettings
from stedi_assets.rules import contracts
from stedi_assets.rules.catalog import CURATED, LANDING, TABLES, TRUSTED, Table
from stedi_assets.storage.errors import StorageError
from stedi_assets.storage.lakehouse import Lakehouse
from stedi_assets.storage.metadata import definition_metadata, verdict_metadata
from stedi_assets.storage.pseudonym import PseudonymKey
from stedi_assets.storage.resources import StediStorage, as_failure, pseudonym_of

KINDS = {"polars", "delta"}
STORAGE_RETRY = dg.RetryPolicy(max_retries=3, delay=1.0, backoff=dg.Backoff.EXPONENTIAL)
SEVERITY = {
    contracts.Severity.ERROR: dg.AssetCheckSeverity.ERROR,
    contracts.Severity.WARN: dg.AssetCheckSeverity.WARN,
}


def table_asset(
    declared: Table,
    daily: bool = False,
    automation: dg.AutomationCondition | None = None,
    deps: Sequence[str] = (),
) -> Callable[..., dg.AssetsDefinition]:
    """@dg.asset for a declared table: its zone is the group, its description the table's; `daily`:
    partitioned by event day, a backfill of any range in one run; `automation`: when declarative
    automation requests it (defs/conditions.py); `deps`: tables it reads itself, at the versions it
    opens (a reading table's inputs and its guard's parent), so the IO manager loads none of them.

    The pool `delta_<table>` lets an instance limit writers of one table to one step at a time.
    """
    return dg.asset(
        partitions_def=EVENT_DAYS if daily else None,
        backfill_policy=SINGLE_RUN,
        name=declared.name,
        group_name=declared.zone,
        kinds=KINDS,
        description=declared.description,
        metadata=definition_metadata(declared),
        retry_policy=STORAGE_RETRY,
        pool=f"delta_{declared.name}",
        automation_condition=automation,
        deps=list(deps),
    )


def check_result(
    verdict: contracts.Verdict, secret: bytes | None = None, examined: Examined | None = None, **key: Any
) -> dg.AssetCheckResult:
    """A verdict as a check result; with the pseudonym key, its sample names people by keyed hash;
    with what it examined, the days it examined and, when it passed, the versions it saw."""
    scope = examined.metadata(verdict.passed) if examined else {}
    return dg.AssetCheckResult(
        passed=verdict.passed,
        severity=SEVERITY[verdict.severity],
        metadata={**verdict_metadata(verdict, secret), **scope},
        description=verdict.summary,
        **key,
    )


@dataclass(frozen=True)
class CheckPart:
    """Checks of one table evaluated together, as they share what they read; a table's checks run
    as one step (check_step) of such parts."""

    specs: tuple[dg.AssetCheckSpec, ...]
    evaluate: Callable[
        [dg.AssetCheckExecutionContext, StediSettings, StediStorage, list[str]], Iterable[dg.AssetCheckResult]
    ]
    """Yields the results of the named checks (those of `specs` the run selected), each with its
    asset key and check name."""


def check_step(name: str, parts: Sequence[CheckPart]) -> dg.AssetChecksDefinition:
    """The checks of `parts` as one step named `name`: a step costs Dagster a few hundredths of a
    second whatever it does (more for a day-partitioned table, whose days it enumerates), and most
    checks of an incremental run read nothing. Any subset can be run (the launchpad's "Execute" of
    one check runs that check alone); Dagster fails the step after all its results when a blocking
    check failed."""

    @dg.multi_asset_check(name=name, specs=[spec for part in parts for spec in part.specs], can_subset=True)
    def step(
        context: dg.AssetCheckExecutionContext, settings: StediSettings, storage: StediStorage
    ) -> Iterator[dg.AssetCheckResult]:
        selected = context.selected_asset_check_keys
        for part in parts:
            chosen = [spec.name for spec in part.specs if spec.key in selected]
            if chosen:
                yield from part.evaluate(context, settings, storage, chosen)

    return step


def table_check_step(declared: Table, parts: Sequence[CheckPart]) -> dg.AssetChecksDefinition:
    """Every check of a trusted or curated table, its contracts included, as the step `<table>_checks`."""
    return check_step(f"{declared.name}_checks", [*parts, table_contracts_part(declared)])


def membership_part(membership: contracts.Membership) -> CheckPart:
    """A blocking referential check: the join contract behind a trusted or curated table (of a
    day-partitioned table, the days changed since it last passed, see check_scope)."""
    spec = dg.AssetCheckSpec(
        membership.name,
        asset=membership.table,
        description=membership.description,
        blocking=True,
        additional_deps=[membership.parent],
    )

    def referential(
        context: dg.AssetCheckExecutionContext, _: StediSettings, storage: StediStorage, chosen: list[str]
    ) -> Iterator[dg.AssetCheckResult]:
        key = pseudonym_of(storage)
        secret = key.secret
        seen = examined(
            context,
            storage.lakehouse,
            membership.table,
            [membership.parent],
            _depends_on(membership, key),
            checks=chosen,
        )
        added = _added_members(seen, membership)
        if added is not None:
            seen = replace(seen, frame=added.lazy(), added_only=True)
        if seen.days == [] or (added is not None and added.is_empty()):
            # nothing it has not passed on (or its guard examined): no query at all
            verdict = membership.of_no_rows()
        else:
            parent = seen.parents[membership.parent]
            verdict = membership.verdict(seen.frame, parent, secret if membership.pseudonymous else None)
        seen.remember(membership.name, verdict)
        yield check_result(
            verdict,
            secret,
            seen,
            asset_key=membership.table,
            check_name=membership.name,
        )

    return CheckPart((spec,), referential)


def _added_members(seen: Examined, membership: contracts.Membership) -> pl.DataFrame | None:
    """Of a table without days examined whole (customer_curated, whose parent accelerometer_trusted
    gained a day): only its rows added since the check last passed, when the parent only gained days
    since, or did not change (check_scope.added_rows); else None."""
    if seen.days is not None or seen.partitioned:
        return None
    return added_rows(seen, membership.name, membership.key, membership.parent)


def guard_of(lakehouse: Lakehouse, membership: contracts.Membership, key: PseudonymKey) -> Guard:
    """The membership contract as a write's privacy guard, against its parent as opened now: its pass
    on the staged files also stands for the blocking check of the same contract (check_scope.vouch)."""
    parent = TABLES[membership.parent]
    uri = lakehouse.table_uri(parent.zone, parent.name)
    try:
        opened = lakehouse.open(uri)
    except StorageError as error:
        raise as_failure(error) from error
    return Guard(membership.name, {membership.parent: (uri, opened)}, _depends_on(membership, key))


def _depends_on(membership: contracts.Membership, key: PseudonymKey) -> dict[str, str]:
    """What a membership verdict depends on besides its tables: the key, when it compares keyed hashes."""
    return {"pseudonym_key": key.key_id} if membership.pseudonymous else {}


def latest_metadata(instance: dg.DagsterInstance, table: str, key: str) -> Any:
    """A value the latest materialization of `table` recorded, or None."""
    event = instance.get_latest_materialization_event(dg.AssetKey(table))
    value = event.asset_materialization.metadata.get(key) if event and event.asset_materialization else None
    return None if value is None else value.value


@dataclass(frozen=True)
class TableCheck:
    name: str
    description: str
    evaluate: Callable[[Examined, StediSettings, dg.DagsterInstance], contracts.Verdict]
    blocking: bool = False
    depends_on: str | None = None


def table_contracts(declared: Table) -> list[TableCheck]:
    """The table-level contracts a declaration implies.

    Every table: schema as declared. Landing, trusted and curated: a row count (non-empty, within
    the table it filters, equal to the expectations file). Trusted and curated: no duplicate rows,
    one row per key, and no profile column where none is declared.
    """
    name, subset_of, key = declared.name, declared.subset_of, declared.key

    def row_count(seen: Examined, settings: StediSettings, instance: dg.DagsterInstance):
        within = latest_metadata(instance, subset_of, "dagster/row_count") if subset_of else None
        return contracts.row_count(seen.rows, within, settings.expected_row_count(name), subset_of or "")

    found = [
        TableCheck(
            "schema_as_declared",
            "Columns and dtypes are exactly as declared.",
            lambda seen, *_: contracts.schema_matches(dict(seen.frame.collect_schema()), declared),
        )
    ]
    if declared.zone in (LANDING, TRUSTED, CURATED):
        within = f"no more rows than {subset_of}, " if subset_of else ""
        description = f"Not empty, {within}and exactly the expectations file's count when one is set."
        found.append(TableCheck("row_count", description, row_count, depends_on=subset_of))
    if declared.zone in (TRUSTED, CURATED):
        found.append(
            TableCheck(
                "no_duplicate_rows",
                "No row is an exact duplicate of another.",
                lambda seen, *_: contracts.no_duplicate_rows(seen.frame),
            )
        )
    if key:
        found.append(
            TableCheck(
                f"unique_by_{key}",
                f"One row per {key} (canonical identity: NFKC, no format characters, case-folded, trimmed).",
                lambda seen, *_: contracts.unique_identity(seen.frame, key),
            )
        )
    if declared.sensor_only:
        found.append(
            TableCheck(
                "no_profile_columns",
                "No customer profile column (name, phone, birthday, registration or consent dates).",
                lambda seen, *_: contracts.no_profile_columns(seen.frame.collect_schema().names()),
                blocking=True,
            )
        )
    return found


def table_contracts_part(declared: Table) -> CheckPart:
    """The table's contracts: the row count from the table's log, the schema from its metadata, the
    rest each a query of the rows to examine (of a day-partitioned table, the days changed since the
    step last passed, see check_scope)."""
    name, checks = declared.name, table_contracts(declared)
    specs = tuple(
        dg.AssetCheckSpec(
            check.name,
            asset=name,
            description=check.description,
            blocking=check.blocking,
            additional_deps=[check.depends_on] if check.depends_on else None,
        )
        for check in checks
    )

    def contracts_of_table(
        context: dg.AssetCheckExecutionContext,
        settings: StediSettings,
        storage: StediStorage,
        chosen: list[str],
    ) -> Iterator[dg.AssetCheckResult]:
        secret = pseudonym_of(storage).secret
        seen = examined(context, storage.lakehouse, name, checks=chosen)
        for check in checks:
            if check.name in chosen:
                verdict = check.evaluate(seen, settings, context.instance)
                seen.remember(check.name, verdict)
                yield check_result(verdict, secret, seen, asset_key=name, check_name=check.name)

    return CheckPart(specs, contracts_of_table)


def table_checks(declared: Table) -> dg.AssetChecksDefinition:
    """The contracts of a table whose step has no other check (the erasure log) as the step
    `<table>_table_contracts`."""
    return check_step(f"{declared.name}_table_contracts", [table_contracts_part(declared)])
