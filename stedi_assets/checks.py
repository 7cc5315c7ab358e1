"""Asset checks: the data contracts of contracts.py, shown in Dagster's check dashboards.

Privacy and join contracts are ERROR and blocking (a failure stops everything downstream);
the cross-customer pairing of the seed join is a WARN, a known drift rather than a break.
Table-level contracts (schema, duplicates, row counts) come from one factory per table.
"""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from stedi_assets import contracts, transforms
from stedi_assets.io_manager import markdown_table
from stedi_assets.landing import LINES_READ
from stedi_assets.resources import Settings, StediSettings
from stedi_assets.schemas import (
    SENSOR_TABLES,
    SOURCES,
    TABLES,
    landing_table_name,
    rejects_table_name,
)

ERROR, WARN = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN


def _metadata(verdict: contracts.Verdict) -> dict[str, Any]:
    metadata: dict[str, Any] = {"summary": verdict.summary}
    if verdict.observed is not None:
        metadata["observed"] = verdict.observed
    if verdict.expected is not None:
        metadata["expected"] = verdict.expected
    if verdict.offending.height:
        metadata["offending_rows"] = dg.MetadataValue.md(markdown_table(verdict.offending))
    return metadata


def check_result(
    verdict: contracts.Verdict, severity: dg.AssetCheckSeverity = ERROR, **key: str
) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=verdict.passed,
        severity=severity,
        metadata=_metadata(verdict),
        description=verdict.summary,
        **key,
    )


def publish_only_if(verdict: contracts.Verdict, contract: str) -> None:
    """Stops an asset before its IO manager publishes a table that breaks a privacy contract."""
    if not verdict.passed:
        raise dg.Failure(
            description=f"The {contract} contract is broken, so the table was not published: {verdict.summary}",
            metadata=_metadata(verdict),
            allow_retries=False,
        )


@dg.asset_check(
    asset="customer_trusted",
    blocking=True,
    additional_ins={"customer_landing": dg.AssetIn("customer_landing")},
    description="Every trusted customer's current record has research consent, and every consenting "
    "customer in landing is trusted.",
)
def consent_given(customer_trusted: pl.LazyFrame, customer_landing: pl.LazyFrame) -> dg.AssetCheckResult:
    return check_result(contracts.consent(customer_trusted, customer_landing))


@dg.asset_check(
    asset="step_trainer_trusted",
    additional_ins={
        "customer_landing": dg.AssetIn("customer_landing"),
        "customer_curated": dg.AssetIn("customer_curated"),
    },
    description="Serial numbers reused for a customer who is not curated: their readings cannot be "
    "attributed, so they are left out. Warns when any are found.",
)
def shared_serials_excluded(
    step_trainer_trusted: pl.LazyFrame, customer_landing: pl.LazyFrame, customer_curated: pl.LazyFrame
) -> dg.AssetCheckResult:
    shared = transforms.ambiguous_serials(customer_landing, customer_curated).collect()
    verdict = contracts.Verdict(
        shared.is_empty(),
        f"{shared.height} curated customers' serial numbers are shared with customers who are not curated",
        shared.height,
        0,
        shared.head(contracts.SAMPLE_ROWS),
    )
    return check_result(verdict, WARN)


@dg.asset_check(
    asset="machine_learning_curated",
    blocking=True,
    description="Every training row has a Step Trainer side and an accelerometer side taken at the same time.",
)
def rows_have_both_sides(machine_learning_curated: pl.LazyFrame) -> dg.AssetCheckResult:
    return check_result(contracts.both_sides_present(machine_learning_curated))


@dg.asset_check(
    asset="machine_learning_curated",
    additional_ins={"customer_curated": dg.AssetIn("customer_curated")},
    description="Training rows pairing one customer's Step Trainer with another customer's phone "
    "(timestamp-only join). Warns when any; set ml_join=same_customer to remove them.",
)
def cross_customer_pairs(
    machine_learning_curated: pl.LazyFrame, customer_curated: pl.LazyFrame
) -> dg.AssetCheckResult:
    return check_result(contracts.cross_customer(machine_learning_curated, customer_curated), WARN)


def membership_check(name: str, membership: contracts.Membership) -> dg.AssetChecksDefinition:
    """A blocking referential check: the join contract behind a trusted or curated table."""

    @dg.multi_asset_check(
        name=f"{membership.table}_{name}",
        specs=[
            dg.AssetCheckSpec(
                name,
                asset=membership.table,
                description=membership.description,
                blocking=True,
                additional_deps=[membership.parent],
            )
        ],
        ins={"subject": dg.AssetIn(membership.table), "parent": dg.AssetIn(membership.parent)},
    )
    def referential(subject: pl.LazyFrame, parent: pl.LazyFrame) -> Iterator[dg.AssetCheckResult]:
        yield check_result(membership.verdict(subject, parent), asset_key=membership.table, check_name=name)

    return referential


def expected_row_count(settings: Settings, name: str) -> int | None:
    """The exact count for a table from the configured expectations file, if any."""
    if not settings.expectations_file:
        return None
    path = Path(settings.expectations_file)
    if not path.is_file():
        raise dg.Failure(f"Expectations file {path.absolute()} does not exist (STEDI_EXPECTATIONS_FILE).")
    expected = json.loads(path.read_text()).get("row_counts", {}).get(name)
    if isinstance(expected, dict):
        expected = expected.get(settings.ml_join.value)
    return expected


UPSTREAM = {
    "customer_trusted": "customer_landing",
    "accelerometer_trusted": "accelerometer_landing",
    "step_trainer_trusted": "step_trainer_landing",
    "customer_curated": "customer_trusted",
}


def table_contract_checks(name: str) -> dg.AssetChecksDefinition:
    """Schema, row count, duplicate, uniqueness and privacy-column contracts of one table."""
    zone = TABLES[name].zone
    upstream = UPSTREAM.get(name)
    specs = {
        "schema_as_declared": ("Columns and dtypes are exactly as declared in schemas.py.", False),
    }
    if zone != "quarantine":
        specs["row_count"] = (
            "The table is not empty, has no more rows than "
            + (upstream or "its sources")
            + ", and matches the expectations file when one is configured.",
            False,
        )
    if zone in ("trusted", "curated"):
        specs["no_duplicate_rows"] = ("No row is an exact duplicate of another.", False)
    key = TABLES[name].key
    if key:
        specs[f"unique_by_{key}"] = (f"One row per {key} (trimmed, lower-cased).", False)
    if name in SENSOR_TABLES:
        specs["no_profile_columns"] = (
            "No customer profile column (name, phone, birthday, registration or consent dates).",
            True,
        )

    ins = {"subject": dg.AssetIn(name)}
    if upstream:
        ins["upstream"] = dg.AssetIn(upstream)

    def evaluate(settings: StediSettings, subject: pl.LazyFrame, upstream_rows: int | None):
        resolved = settings.resolved()
        schema = subject.collect_schema()
        results = {"schema_as_declared": contracts.schema_matches(dict(schema), TABLES[name])}
        if "row_count" in specs:
            observed = subject.select(pl.len()).collect().item()
            results["row_count"] = contracts.row_count(
                observed, upstream_rows, expected_row_count(resolved, name), upstream or ""
            )
        if "no_duplicate_rows" in specs:
            results["no_duplicate_rows"] = contracts.duplicate_rows(subject)
        if key:
            results[f"unique_by_{key}"] = contracts.unique_identity(subject, key)
        if "no_profile_columns" in specs:
            results["no_profile_columns"] = contracts.profile_columns(schema.names())
        for check_name, verdict in results.items():
            yield check_result(verdict, asset_key=name, check_name=check_name)

    decorator = dg.multi_asset_check(
        name=f"{name}_contracts",
        specs=[
            dg.AssetCheckSpec(
                check,
                asset=name,
                description=description,
                blocking=blocking,
                additional_deps=[upstream] if upstream and check == "row_count" else None,
            )
            for check, (description, blocking) in specs.items()
        ],
        ins=ins,
    )
    if upstream:

        @decorator
        def with_upstream(
            settings: StediSettings, subject: pl.LazyFrame, upstream: pl.LazyFrame
        ) -> Iterator[dg.AssetCheckResult]:
            yield from evaluate(settings, subject, upstream.select(pl.len()).collect().item())

        return with_upstream

    @decorator
    def alone(settings: StediSettings, subject: pl.LazyFrame) -> Iterator[dg.AssetCheckResult]:
        yield from evaluate(settings, subject, None)

    return alone


def _lines_read(instance: dg.DagsterInstance, landing_name: str) -> int | None:
    """The non-blank line count that the latest ingest recorded for exactly the files it read."""
    event = instance.get_latest_materialization_event(dg.AssetKey(landing_name))
    recorded = event.asset_materialization.metadata.get(LINES_READ) if event else None
    return None if recorded is None else int(recorded.value)


def landing_conservation_checks(source: str) -> dg.AssetChecksDefinition:
    """Nothing silently dropped: every non-blank line is a landing row or a quarantined reject."""
    landing_name, rejects_name = landing_table_name(source), rejects_table_name(source)

    @dg.multi_asset_check(
        name=f"{source}_lines_accounted_for",
        specs=[
            dg.AssetCheckSpec(
                "lines_conserved",
                asset=landing_name,
                description="Accepted rows plus quarantined rejects equal the non-blank lines the ingest read.",
                blocking=True,
                additional_deps=[rejects_name],
            ),
            dg.AssetCheckSpec(
                "reject_rate",
                asset=landing_name,
                description="Warns on any rejected line; fails above the configured max_reject_rate.",
                additional_deps=[rejects_name],
            ),
        ],
        ins={"accepted": dg.AssetIn(landing_name), "rejected": dg.AssetIn(rejects_name)},
    )
    def lines_accounted_for(
        context: dg.AssetCheckExecutionContext,
        settings: StediSettings,
        accepted: pl.LazyFrame,
        rejected: pl.LazyFrame,
    ) -> Iterator[dg.AssetCheckResult]:
        read = _lines_read(context.instance, landing_name)
        n_accepted = accepted.select(pl.len()).collect().item()
        n_rejected = rejected.select(pl.len()).collect().item()
        if read is None:
            missing = contracts.Verdict(
                False, f"no materialization of {landing_name} recorded its lines_read"
            )
            for name in ("lines_conserved", "reject_rate"):
                yield check_result(missing, asset_key=landing_name, check_name=name)
            return
        yield check_result(
            contracts.conservation(read, n_accepted, n_rejected),
            asset_key=landing_name,
            check_name="lines_conserved",
        )
        max_rate = settings.resolved().max_reject_rate
        rate = contracts.reject_rate(read, n_rejected, max_rate)
        severity = ERROR if rate.observed > max_rate else WARN
        yield check_result(rate, severity, asset_key=landing_name, check_name="reject_rate")

    return lines_accounted_for


privacy_and_join_checks = [
    consent_given,
    *(membership_check(name, membership) for name, membership in contracts.MEMBERSHIPS.items()),
    shared_serials_excluded,
    rows_have_both_sides,
    cross_customer_pairs,
]
table_checks = [table_contract_checks(name) for name in TABLES]
landing_checks = [landing_conservation_checks(source) for source in SOURCES]
all_checks = [*privacy_and_join_checks, *table_checks, *landing_checks]
