"""Trusted zone: only research-consenting customers and their readings, with the checks that guard them.

Each asset returns a Publication: the IO manager stages the table, verifies its privacy contract
on the staged files and only then commits, so a table that breaks the contract never becomes
visible (Dagster's blocking checks run after the IO manager has published, too late for that).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import suppress

import dagster as dg
import polars as pl
from deltalake import DeltaTable

from stedi_assets.defs import conditions
from stedi_assets.defs.check_scope import days_to_examine, examined, release, remember, state, still_holds
from stedi_assets.defs.consent_sweep import (
    SWEEP,
    allowed_only,
    decide,
    made_from,
    remember_decision,
    sweep_guard,
)
from stedi_assets.defs.factories import (
    CheckPart,
    check_result,
    guard_of,
    membership_part,
    table_asset,
    table_check_step,
)
from stedi_assets.defs.incremental import fingerprint, recompute_by_day
from stedi_assets.defs.settings import StediSettings, commit_properties
from stedi_assets.rules import contracts, transforms
from stedi_assets.rules.catalog import (
    ACCELEROMETER_TRUSTED,
    CUSTOMER,
    CUSTOMER_CURATED,
    CUSTOMER_TRUSTED,
    MACHINE_LEARNING_CURATED,
    STEP_TRAINER_TRUSTED,
    on_days,
)
from stedi_assets.rules.contracts import Severity
from stedi_assets.rules.identity import SUBJECT_ID
from stedi_assets.rules.report import REPORT_PATH
from stedi_assets.storage.errors import StorageError, TableMissing
from stedi_assets.storage.io_manager import Publication, as_declared, held_metadata, publish
from stedi_assets.storage.lakehouse import Lakehouse
from stedi_assets.storage.metadata import WARNING, definition_metadata
from stedi_assets.storage.pseudonym import PseudonymKey
from stedi_assets.storage.resources import StediStorage, as_failure, pseudonym_of

USERS_ARE_TRUSTED_CUSTOMERS = contracts.Membership(
    "users_are_trusted_customers",
    "accelerometer_trusted",
    "user",
    "customer_trusted",
    "email",
    "a trusted customer",
)
SERIALS_BELONG_TO_CURATED_CUSTOMERS = contracts.Membership(
    "serials_belong_to_curated_customers",
    "step_trainer_trusted",
    "serialNumber",
    "customer_curated",
    "serialNumber",
    "a curated customer's device",
)


USERS, SERIALS = "_users", "_serials"
"""What a reading table's write decides once for all its parts (incremental.recompute_by_day): the
spellings of the identities it keeps, trusted customers' users and trusted devices' serials."""
DOWNSTREAM_OF_CONSENT = (
    ACCELEROMETER_TRUSTED,
    STEP_TRAINER_TRUSTED,
    CUSTOMER_CURATED,
    MACHINE_LEARNING_CURATED,
)
"""Every table a consent decision reaches; each is rewritten without the people it no longer allows
before the decision itself (customer_trusted) is published."""
DECIDED = "decision_recomputed"
"""Materialization metadata: whether the consent decision was made again (False: its inputs, rules,
settings and key were as it was last made from, so it stands)."""


def withdraw_downstream(
    lakehouse: Lakehouse,
    decision: transforms.ConsentDecision,
    allowed: str,
    key: PseudonymKey,
    properties: dict[str, str],
) -> tuple[dict[str, int], list[str], bool, dict[str, int | str]]:
    """Removes everyone the consent decision does not allow from every existing downstream table;
    how many identities (people or devices) lost rows in each table, the tables whose subject_ids
    were made under another pseudonym key (all their rows leave: no one's consent can be matched),
    whether the report file was removed (before the first table loses anyone), and how many days of
    each table were examined ("all": the whole table). `allowed` is the decision's digest.

    This runs before customer_trusted publishes, so whatever fails later in the run (a bad file, a
    full disk, a kill), no trusted or curated table holds a row the published decision disallows.
    A table is rewritten only when someone must leave it, stage -> verify -> commit like any write.

    Like a check (check_scope), the sweep of a day-partitioned table examines only the days changed
    since a sweep under the same decision last left it holding no one else, or since a write
    verified under it (consent_sweep); any other decision, or no record, examines every day.
    """
    removed, examined = {}, {}
    changed_keys: list[str] = []
    report_removed, report_handled = False, False
    for declared in DOWNSTREAM_OF_CONSENT:
        uri = lakehouse.table_uri(declared.zone, declared.name)
        try:
            table = lakehouse.open(uri)
        except TableMissing:
            continue
        current = lakehouse.scan_opened(uri, table)
        seen = {"release": release(), "decision": allowed, declared.name: state(uri, table)}
        days = days_to_examine(lakehouse, declared.name, SWEEP, seen) if declared.partition_by else None
        if declared.person == SUBJECT_ID:
            made_with = table.history(1)[0].get("stedi.pseudonym_key_id")
            if made_with not in (None, key.key_id):
                # its subject_ids cannot be matched to anyone's consent: none of its rows can stay
                changed_keys.append(f"{declared.name} (made with key {made_with}, now {key.key_id})")
                days = None
        examined[declared.name] = "all" if days is None else len(days)
        in_days = current if days is None else on_days(current, days)
        outside = decision.outside(in_days, declared).select(pl.len())
        count = lakehouse.reading(uri, outside).item() if days != [] else 0
        if count and not report_handled:
            # the report's charts may show someone who is leaving: it goes first, so a retry after
            # any failure below still finds someone to remove and removes it
            report_removed, report_handled = lakehouse.remove_file(REPORT_PATH), True
        if count:
            kept = decision.within(current, declared)
            verify = allowed_only(decision, declared)
            rewrite = Publication(kept, "consent", verify, properties, no_history=True)
            publish(lakehouse, uri, as_declared(rewrite, definition_metadata(declared)))
            seen[declared.name] = state(uri, lakehouse.open(uri))  # verified on its staged files
        remember(lakehouse, declared.name, SWEEP, seen)
        removed[declared.name] = count
    if changed_keys and not report_handled:
        report_removed = lakehouse.remove_file(REPORT_PATH)
    return removed, changed_keys, report_removed, examined


SHARED_SERIALS = "shared_serials_excluded"
"""The check of reused serial numbers, a verdict on the customer tables (recorded under customer_curated)."""
DECISION = "consent_decision"
"""The record (check_scope) of what the published consent decision was made from: the customer
tables' states, the rules (release) and the settings and key (commit properties)."""


@table_asset(CUSTOMER_TRUSTED)
def customer_trusted(
    context,  # unannotated: this module defers annotations, which Dagster cannot read for the context
    settings: StediSettings,
    storage: StediStorage,
    customer_landing: pl.LazyFrame,
    customer_rejects: pl.LazyFrame,
) -> dg.MaterializeResult:
    """The current record of each customer whose research consent is certain: set and not 0 in every
    record that could be the newest, and named by no quarantined line. Everyone it leaves out is
    removed from every downstream table first.

    The decision is made from the customer tables as opened here (the inputs are for the graph's
    lineage). When they, the rules, the settings and the key are all as the published decision was
    made from, and no one has written the table since, the published decision stands: it is not made
    or written again, but the downstream tables are still swept against it (the days changed since
    the last sweep), so rows slipped in behind the pipeline's back still leave."""
    key, lakehouse = pseudonym_of(storage), storage.lakehouse
    properties = commit_properties(settings, key)
    uri = lakehouse.table_uri(CUSTOMER_TRUSTED.zone, CUSTOMER_TRUSTED.name)
    try:
        opened = {
            declared.name: (table_uri, lakehouse.open(table_uri))
            for declared in (CUSTOMER.landing, CUSTOMER.rejects)
            for table_uri in [lakehouse.table_uri(declared.zone, declared.name)]
        }
        seen: dict[str, object] = {"release": release(), "properties": properties}
        seen |= {name: state(*table) for name, table in opened.items()}
        standing = _standing_decision(lakehouse, uri, seen)
    except StorageError as error:
        raise as_failure(error) from error
    customer_landing, customer_rejects = (
        lakehouse.scan_opened(*opened[declared.name]) for declared in (CUSTOMER.landing, CUSTOMER.rejects)
    )
    decided = (
        lakehouse.scan_opened(uri, standing)
        if standing is not None
        else transforms.customer_trusted(customer_landing, customer_rejects).collect().lazy()
    )
    policy, made = settings.consent_policy, {name: state(*table) for name, table in opened.items()}
    try:
        decision, allowed = decide(decided, customer_landing, customer_rejects, key, policy)
        if standing is not None:  # the writes that follow verify against this very decision
            made[CUSTOMER_TRUSTED.name] = state(uri, standing)
            remember_decision(made_from(made, key, policy), (decision, allowed))
        removed, changed_keys, report_removed, examined = withdraw_downstream(
            lakehouse, decision, allowed, key, properties
        )
    except StorageError as error:
        raise as_failure(error) from error
    metadata: dict[str, object] = {f"withdrawn_from/{name}": count for name, count in removed.items()}
    metadata |= {f"days_swept/{name}": days for name, days in examined.items()}
    metadata[DECIDED] = standing is None
    if report_removed:
        metadata["report_removed"] = REPORT_PATH
    if standing is not None:  # the published decision stands: no write
        try:
            metadata |= held_metadata(lakehouse, uri)
        except StorageError as error:
            raise as_failure(error) from error
        return dg.MaterializeResult(value=None, metadata=metadata)

    def published(version: int, _: int | None) -> None:
        with suppress(StorageError):  # best effort: without the record, the next run decides again
            now = state(uri, lakehouse.open(uri, version))
            remember(lakehouse, CUSTOMER_TRUSTED.name, DECISION, {**seen, CUSTOMER_TRUSTED.name: now})
            made_then = made_from({**made, CUSTOMER_TRUSTED.name: now}, key, policy)
            remember_decision(made_then, (decision, allowed))  # for the writes that follow

    publication = Publication(
        decided,
        "consent",
        lambda staged: contracts.consenting_only(staged, customer_landing, customer_rejects),
        properties,
        published=published,
    )
    if changed_keys:
        metadata["pseudonym_key_changed"] = "; ".join(changed_keys)
        metadata[WARNING] = (
            f"The pseudonym key changed: emptied {metadata['pseudonym_key_changed']}; set "
            "STEDI_PSEUDONYM_KEY to the old key to keep them."
        )
        context.log.warning(metadata[WARNING])
    return dg.MaterializeResult(value=publication, metadata=metadata)


def _standing_decision(lakehouse: Lakehouse, uri: str, seen: dict[str, object]) -> DeltaTable | None:
    """customer_trusted as published, when it was made from what `seen` says (the customer tables'
    states, the rules, the settings and the key) and no one has written it since; else None."""
    if not lakehouse.exists(uri):
        return None
    table = lakehouse.open(uri)
    made = {**seen, CUSTOMER_TRUSTED.name: state(uri, table)}
    return table if days_to_examine(lakehouse, CUSTOMER_TRUSTED.name, DECISION, made) == [] else None


@table_asset(
    ACCELEROMETER_TRUSTED,
    daily=True,
    automation=conditions.reading_table(ACCELEROMETER_TRUSTED, ["accelerometer_landing"], []),
    deps=["accelerometer_landing", CUSTOMER_TRUSTED.name],
)
def accelerometer_trusted(context, settings: StediSettings, storage: StediStorage) -> dg.MaterializeResult:
    """Accelerometer readings whose user is a trusted customer (under consent_policy=from_consent_date,
    taken since they consented). Only the days whose landing readings changed are recomputed, unless
    the consent decision changed."""
    policy, key = settings.consent_policy, pseudonym_of(storage)
    # the consent decision as its guard opened it: computed from and verified against one version
    guard = guard_of(storage.lakehouse, USERS_ARE_TRUSTED_CUSTOMERS, key)
    parent = guard.scan(storage.lakehouse, CUSTOMER_TRUSTED.name)
    consenting = parent.collect()
    # and the sweep's own predicate, against the decision as the guard opened it
    swept, verify = sweep_guard(
        storage.lakehouse,
        ACCELEROMETER_TRUSTED,
        key,
        policy,
        lambda staged: USERS_ARE_TRUSTED_CUSTOMERS.verdict(staged, parent),
        guard.parents[CUSTOMER_TRUSTED.name][1],
    )
    return recompute_by_day(
        context,
        storage.lakehouse,
        ACCELEROMETER_TRUSTED,
        fingerprint(consenting, policy.value),
        lambda part: transforms.accelerometer_trusted(
            part["accelerometer_landing"], consenting.lazy(), policy, part[USERS]
        ),
        verify,
        commit_properties(settings, key),
        guards=(guard, swept),
        decided=lambda days: {
            USERS: transforms.trusted_users(days["accelerometer_landing"], consenting.lazy())
        },
    )


@table_asset(
    STEP_TRAINER_TRUSTED,
    daily=True,
    automation=conditions.reading_table(STEP_TRAINER_TRUSTED, ["step_trainer_landing"], ["customer_curated"]),
    deps=["step_trainer_landing", CUSTOMER_CURATED.name],
)
def step_trainer_trusted(
    context,
    settings: StediSettings,
    storage: StediStorage,
    customer_landing: pl.LazyFrame,
    customer_rejects: pl.LazyFrame,
) -> dg.MaterializeResult:
    """Step Trainer readings of devices claimed only by curated customers, in any record (under
    consent_policy=from_consent_date, taken since the owner consented). Only the days whose landing
    readings changed are recomputed, unless the trusted devices changed."""
    key = pseudonym_of(storage)
    # the curated customers as the guard opened them: devices decided from and verified against one version
    guard = guard_of(storage.lakehouse, SERIALS_BELONG_TO_CURATED_CUSTOMERS, key)
    parent = guard.scan(storage.lakehouse, CUSTOMER_CURATED.name)
    devices = transforms.trusted_devices(
        parent, customer_landing, customer_rejects, settings.consent_policy
    ).collect()
    # and the sweep's own predicate, against the published decision
    swept, verify = sweep_guard(
        storage.lakehouse,
        STEP_TRAINER_TRUSTED,
        key,
        settings.consent_policy,
        lambda staged: SERIALS_BELONG_TO_CURATED_CUSTOMERS.verdict(staged, parent),
    )
    return recompute_by_day(
        context,
        storage.lakehouse,
        STEP_TRAINER_TRUSTED,
        fingerprint(devices, settings.consent_policy.value),
        lambda part: transforms.readings_of_devices(
            part["step_trainer_landing"], devices.lazy(), part[SERIALS]
        ),
        verify,
        commit_properties(settings, key),
        guards=(guard, swept),
        decided=lambda days: {
            SERIALS: transforms.device_serials(days["step_trainer_landing"], devices.lazy())
        },
    )


CONSENT_CHECKS = (
    dg.AssetCheckSpec(
        "consent_given",
        asset="customer_trusted",
        blocking=True,
        additional_deps=["customer_landing", "customer_rejects"],
        description="Every trusted customer's consent is certain (every record that could be the "
        "newest consents, no quarantined line names them), and every such customer is trusted.",
    ),
    dg.AssetCheckSpec(
        "customers_on_hold",
        asset="customer_trusted",
        additional_deps=["customer_landing", "customer_rejects"],
        description="Customers left out because a quarantined customer line names them and no later "
        "valid record supersedes it (sample by subject_id, a keyed hash). Warns when any; fix the line "
        "to release them.",
    ),
)


def consent_checks(
    context: dg.AssetCheckExecutionContext, _: StediSettings, storage: StediStorage, chosen: list[str]
) -> Iterator[dg.AssetCheckResult]:
    """Both verdicts from the three tables as opened here, once each (their states are what a pass
    records); when they are as both checks last passed on them, under the same rules and key, the
    verdicts stand without reading any row (check_scope)."""
    asset, key = {"asset_key": "customer_trusted"}, pseudonym_of(storage)
    parents = [CUSTOMER.landing.name, CUSTOMER.rejects.name]
    depends_on = {"pseudonym_key": key.key_id}
    seen = examined(context, storage.lakehouse, CUSTOMER_TRUSTED.name, parents, depends_on, checks=chosen)
    if seen.days == []:
        for name, severity in (("consent_given", Severity.ERROR), ("customers_on_hold", Severity.WARN)):
            if name in chosen:
                yield check_result(still_holds(seen, name, severity), examined=seen, check_name=name, **asset)
        return
    landing, rejects = (seen.parents[name] for name in parents)
    if "consent_given" in chosen:
        consent = contracts.consent(seen.whole, landing, rejects)
        seen.remember("consent_given", consent)
        yield check_result(consent, key.secret, seen, check_name="consent_given", **asset)
    if "customers_on_hold" in chosen:
        held = contracts.customers_held(landing, rejects, key.secret)
        seen.remember("customers_on_hold", held)
        yield check_result(held, examined=seen, check_name="customers_on_hold", **asset)


SHARED_SERIALS_CHECK = dg.AssetCheckSpec(
    SHARED_SERIALS,
    asset=STEP_TRAINER_TRUSTED.name,
    additional_deps=[CUSTOMER.landing.name, CUSTOMER_CURATED.name, CUSTOMER.rejects.name],
    description="Serial numbers of curated customers also claimed by a record (accepted or quarantined) "
    "of someone who is not curated: their readings cannot be attributed, so they are left out. Warns "
    "when any are found.",
)


def shared_serials_excluded(
    context: dg.AssetCheckExecutionContext, _: StediSettings, storage: StediStorage, chosen: list[str]
) -> Iterator[dg.AssetCheckResult]:
    """A verdict on the customer tables alone: when they are as it last passed on them, it stands
    without reading any row (check_scope)."""
    parents = [CUSTOMER.landing.name, CUSTOMER.rejects.name]
    seen = examined(context, storage.lakehouse, CUSTOMER_CURATED.name, parents, checks=chosen)
    named = {"asset_key": STEP_TRAINER_TRUSTED.name, "check_name": SHARED_SERIALS}
    if seen.days == []:
        yield check_result(still_holds(seen, SHARED_SERIALS, Severity.WARN), examined=seen, **named)
        return
    landing, rejects = (seen.parents[name] for name in parents)
    verdict = contracts.shared_serials(landing, seen.whole, rejects)
    seen.remember(SHARED_SERIALS, verdict)
    yield check_result(verdict, examined=seen, **named)


trusted_assets = [customer_trusted, accelerometer_trusted, step_trainer_trusted]
trusted_checks = [
    table_check_step(CUSTOMER_TRUSTED, [CheckPart(CONSENT_CHECKS, consent_checks)]),
    table_check_step(ACCELEROMETER_TRUSTED, [membership_part(USERS_ARE_TRUSTED_CUSTOMERS)]),
    table_check_step(
        STEP_TRAINER_TRUSTED,
        [
            membership_part(SERIALS_BELONG_TO_CURATED_CUSTOMERS),
            CheckPart((SHARED_SERIALS_CHECK,), shared_serials_excluded),
        ],
    ),
]
