"""What every zone shares: the table asset decorator, contract verdicts as check results, the
privacy guard, and the check factories (referential contracts and table-level contracts).
"""

# No `from __future__ import annotations` here: Dagster reads the context annotation at runtime.

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import dagster as dg
import polars as pl

from stedi_assets.defs.partitions import EVENT_DAYS, SINGLE_RUN
from stedi_assets.defs.settings import StediSettings
from stedi_assets.rules import contracts
from stedi_assets.rules.catalog import CURATED, LANDING, TRUSTED, Table
from stedi_assets.storage.metadata import definition_metadata, verdict_metadata
from stedi_assets.storage.resources import StediStorage, pseudonym_of

KINDS = {"polars", "delta"}
STORAGE_RETRY = dg.RetryPolicy(max_retries=3, delay=1.0, backoff=dg.Backoff.EXPONENTIAL)
SEVERITY = {
    contracts.Severity.ERROR: dg.AssetCheckSeverity.ERROR,
    contracts.Severity.WARN: dg.AssetCheckSeverity.WARN,
}


def table_asset(declared: Table, daily: bool = False) -> Callable[..., dg.AssetsDefinition]:
    """@dg.asset for a declared table: its zone is the group, its description the table's; `daily`:
    partitioned by event day, a backfill of any range in one run.

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
    )


def check_result(verdict: contracts.Verdict, secret: bytes | None = None, **key: Any) -> dg.AssetCheckResult:
    """A verdict as a check result; with the pseudonym key, its sample names people by keyed hash."""
    return dg.AssetCheckResult(
        passed=verdict.passed,
        severity=SEVERITY[verdict.severity],
        metadata=verdict_metadata(verdict, secret),
        description=verdict.summary,
        **key,
    )


def membership_check(membership: contracts.Membership) -> dg.AssetChecksDefinition:
    """A blocking referential check: the join contract behind a trusted or curated table."""

    @dg.multi_asset_check(
        name=f"{membership.table}_{membership.name}",
        specs=[
            dg.AssetCheckSpec(
                membership.name,
                asset=membership.table,
                description=membership.description,
                blocking=True,
                additional_deps=[membership.parent],
            )
        ],
        ins={"subject": dg.AssetIn(membership.table), "parent": dg.AssetIn(membership.parent)},
    )
    def referential(
        storage: StediStorage, subject: pl.LazyFrame, parent: pl.LazyFrame
    ) -> Iterator[dg.AssetCheckResult]:
        secret = pseudonym_of(storage).secret
        yield check_result(
            membership.verdict(subject, parent, secret if membership.pseudonymous else None),
            secret,
            asset_key=membership.table,
            check_name=membership.name,
        )

    return referential


def latest_metadata(instance: dg.DagsterInstance, table: str, key: str) -> Any:
    """A value the latest materialization of `table` recorded, or None."""
    event = instance.get_latest_materialization_event(dg.AssetKey(table))
    value = event.asset_materialization.metadata.get(key) if event and event.asset_materialization else None
    return None if value is None else value.value


@dataclass(frozen=True)
class TableCheck:
    name: str
    description: str
    evaluate: Callable[[pl.LazyFrame, StediSettings, dg.DagsterInstance], contracts.Verdict]
    blocking: bool = False
    depends_on: str | None = None


def table_contracts(declared: Table) -> list[TableCheck]:
    """The table-level contracts a declaration implies.

    Every table: schema as declared. Landing, trusted and curated: a row count (non-empty, within
    the table it filters, equal to the expectations file). Trusted and curated: no duplicate rows,
    one row per key, and no profile column where none is declared.
    """
    name, subset_of, key = declared.name, declared.subset_of, declared.key

    def row_count(frame: pl.LazyFrame, settings: StediSettings, instance: dg.DagsterInstance):
        within = latest_metadata(instance, subset_of, "dagster/row_count") if subset_of else None
        observed = frame.select(pl.len()).collect().item()
        return contracts.row_count(observed, within, settings.expected_row_count(name), subset_of or "")

    found = [
        TableCheck(
            "schema_as_declared",
            "Columns and dtypes are exactly as declared.",
            lambda frame, *_: contracts.schema_matches(dict(frame.collect_schema()), declared),
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
                lambda frame, *_: contracts.no_duplicate_rows(frame, declared.partition_by),
            )
        )
    if key:
        found.append(
            TableCheck(
                f"unique_by_{key}",
                f"One row per {key} (canonical identity: NFKC, no format characters, case-folded, trimmed).",
                lambda frame, *_: contracts.unique_identity(frame, key),
            )
        )
    if declared.sensor_only:
        found.append(
            TableCheck(
                "no_profile_columns",
                "No customer profile column (name, phone, birthday, registration or consent dates).",
                lambda frame, *_: contracts.no_profile_columns(frame.collect_schema().names()),
                blocking=True,
            )
        )
    return found


def table_checks(declared: Table) -> dg.AssetChecksDefinition:
    """The table's contracts as one check step; each contract is its own query of the table."""
    name, checks = declared.name, table_contracts(declared)

    @dg.multi_asset_check(
        name=f"{name}_table_contracts",
        specs=[
            dg.AssetCheckSpec(
                check.name,
                asset=name,
                description=check.description,
                blocking=check.blocking,
                additional_deps=[check.depends_on] if check.depends_on else None,
            )
            for check in checks
        ],
        ins={"subject": dg.AssetIn(name)},
    )
    def contracts_of_table(
        context: dg.AssetCheckExecutionContext,
        settings: StediSettings,
        storage: StediStorage,
        subject: pl.LazyFrame,
    ) -> Iterator[dg.AssetCheckResult]:
        secret = pseudonym_of(storage).secret
        for check in checks:
            verdict = check.evaluate(subject, settings, context.instance)
            yield check_result(verdict, secret, asset_key=name, check_name=check.name)

    return contracts_of_table
