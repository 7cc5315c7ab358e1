"""Curated zone: the population of the training set and the training table, with their checks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import suppress
from datetime import date

import dagster as dg
import polars as pl
from deltalake import DeltaTable

from stedi_assets.defs import conditions
from stedi_assets.defs.check_scope import (
    counted,
    examined,
    gained_since,
    recorded,
    release,
    remember,
    state,
)
from stedi_assets.defs.consent_sweep import sweep_guard
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
    CUSTOMER_CURATED,
    CUSTOMER_TRUSTED,
    MACHINE_LEARNING_CURATED,
    STEP_TRAINER_TRUSTED,
    on_days,
)
from stedi_assets.rules.identity import SUBJECT_ID, pseudonym_map
from stedi_assets.storage.errors import StorageError, TableMissing
from stedi_assets.storage.io_manager import Publication
from stedi_assets.storage.lakehouse import Lakehouse
from stedi_assets.storage.resources import StediStorage, as_failure, pseudonym_of

SUBJECTS = "_subjects"
"""What the training table's write decides once for all its parts (incremental.recompute_by_day): the
pseudonym of each spelling of the readings' users."""
CUSTOMERS_HAVE_ACCELEROMETER_DATA = contracts.Membership(
    "customers_have_accelerometer_data",
    "customer_curated",
    "email",
    "accelerometer_trusted",
    "user",
    "the user of a trusted reading",
)
CURATED_CUSTOMERS_ARE_TRUSTED = contracts.Membership(
    "curated_customers_are_trusted",
    "customer_curated",
    "email",
    "customer_trusted",
    "email",
    "a trusted customer",
)
"""The consent contract verified on customer_curated before it is published."""
USERS_ARE_CURATED_CUSTOMERS = contracts.Membership(
    "users_are_curated_customers",
    "machine_learning_curated",
    SUBJECT_ID,
    "customer_curated",
    "email",
    "a curated customer (by keyed hash)",
    pseudonymous=True,
)


CURATED_FROM = "customer_curated"
"""The record (check_scope, kept under accelerometer_trusted) of what customer_curated was last
published from: the states of customer_trusted, accelerometer_trusted and customer_curated itself."""
DAYS_READ = "days_read"
"""Materialization metadata: how many event days of accelerometer_trusted the write read ("all": the
whole table)."""


@table_asset(
    CUSTOMER_CURATED,
    automation=conditions.follows("accelerometer_trusted"),
    deps=[CUSTOMER_TRUSTED.name, ACCELEROMETER_TRUSTED.name],
)
def customer_curated(settings: StediSettings, storage: StediStorage) -> dg.Output:
    """Trusted customers with at least one trusted accelerometer reading, one row each.

    When customer_trusted and this table are as it was last published from, and accelerometer_trusted
    has only gained days since (days it did not hold then), the customers already curated stay and
    only the new days' users are read: a customer is curated once they have a reading, and no reading
    left. Anything else (a new decision, a replaced or removed day, another writer, a lost record)
    reads every reading.

    Its data version is a digest of its rows: the tables decided from it (step_trainer_trusted,
    machine_learning_curated) follow it by automation only when the population changed."""
    lakehouse = storage.lakehouse
    try:
        opened = {
            declared.name: (uri, lakehouse.open(uri))
            for declared in (CUSTOMER_TRUSTED, ACCELEROMETER_TRUSTED)
            for uri in [lakehouse.table_uri(declared.zone, declared.name)]
        }
        customer_trusted, readings = (lakehouse.scan_opened(*table) for table in opened.values())
        seen: dict[str, object] = {"release": release(), **{name: state(*t) for name, t in opened.items()}}
        own = lakehouse.table_uri(CUSTOMER_CURATED.zone, CUSTOMER_CURATED.name)
        try:
            held: DeltaTable | None = lakehouse.open(own)
        except TableMissing:
            held = None
        added = _added_days(lakehouse, {**seen, CUSTOMER_CURATED.name: state(own, held)}) if held else None
        plan = transforms.customer_curated(
            customer_trusted, readings if added is None else on_days(readings, added)
        )
        if added is not None:
            plan = pl.concat([lakehouse.scan_opened(own, held), plan]).unique(maintain_order=True)
        # one row per customer, from every reading's user: collected in bounded memory
        curated = lakehouse.reading(opened[ACCELEROMETER_TRUSTED.name][0], plan, streaming=True)
    except StorageError as error:
        raise as_failure(error) from error

    def published(version: int, _: int | None) -> None:  # best effort: without it, all days are read
        with suppress(StorageError):
            made = {**seen, CUSTOMER_CURATED.name: state(own, lakehouse.open(own, version))}
            remember(lakehouse, ACCELEROMETER_TRUSTED.name, CURATED_FROM, made)

    publication = Publication(
        curated.lazy(),
        "consent",
        lambda staged: CURATED_CUSTOMERS_ARE_TRUSTED.verdict(staged, customer_trusted),
        commit_properties(settings, pseudonym_of(storage)),
        published=published,
    )
    metadata = {DAYS_READ: "all" if added is None else len(added)}
    return dg.Output(publication, data_version=dg.DataVersion(fingerprint(curated)), metadata=metadata)


def _added_days(lakehouse: Lakehouse, seen: dict[str, object]) -> list[date | None] | None:
    """The days accelerometer_trusted gained since customer_curated was last published from it, the
    rest (customer_trusted, customer_curated, the rules) being as then; None when anything else
    changed: another decision, a day it held then that changed, no record."""
    made = recorded(lakehouse, ACCELEROMETER_TRUSTED.name, CURATED_FROM)
    days = gained_since(lakehouse, made, seen, ACCELEROMETER_TRUSTED.name)
    return None if days is None or None in days else days


@table_asset(
    MACHINE_LEARNING_CURATED,
    daily=True,
    automation=conditions.reading_table(
        MACHINE_LEARNING_CURATED,
        ["step_trainer_trusted", "accelerometer_trusted"],
        ["customer_curated"],
    ),
    deps=[STEP_TRAINER_TRUSTED.name, ACCELEROMETER_TRUSTED.name, CUSTOMER_CURATED.name],
)
def machine_learning_curated(
    context,  # unannotated: this module defers annotations, which Dagster cannot read for the context
    settings: StediSettings,
    storage: StediStorage,
) -> dg.MaterializeResult:
    """Step Trainer readings joined to accelerometer readings of the same timestamp (and, with
    ml_join=same_customer, of the device's owner only)."""
    key = pseudonym_of(storage)
    ml_join, ml_identity = settings.ml_join, settings.ml_identity
    # the curated customers as the guard opened them: paired from and verified against one version
    guard = guard_of(storage.lakehouse, USERS_ARE_CURATED_CUSTOMERS, key)
    owners = guard.scan(storage.lakehouse, CUSTOMER_CURATED.name)
    curated = owners.collect()
    # and the consent sweep's own predicate, against the published decision
    swept, verify = sweep_guard(
        storage.lakehouse,
        MACHINE_LEARNING_CURATED,
        key,
        settings.consent_policy,
        lambda staged: USERS_ARE_CURATED_CUSTOMERS.verdict(staged, owners, key.secret),
    )
    # equal timestamps share a day, so each part pairs readings of the same days
    return recompute_by_day(
        context,
        storage.lakehouse,
        MACHINE_LEARNING_CURATED,
        fingerprint(curated, ml_join.value, ml_identity.value, key.key_id),
        lambda part: transforms.machine_learning_curated(
            part["step_trainer_trusted"],
            part["accelerometer_trusted"],
            curated.lazy(),
            key.secret,
            ml_join,
            ml_identity,
            part[SUBJECTS],
        ),
        verify,
        commit_properties(settings, key),
        {
            "ml_join": ml_join.value,
            "ml_identity": ml_identity.value,
            "pseudonym_key_id": key.key_id,
            "pseudonym_key": key.origin,
        },
        guards=(guard, swept),
        decided=lambda days: {SUBJECTS: pseudonym_map(days["accelerometer_trusted"], "user", key.secret)},
    )


BOTH_SIDES = dg.AssetCheckSpec(
    "rows_have_both_sides",
    asset=MACHINE_LEARNING_CURATED.name,
    blocking=True,
    description="Every training row has a Step Trainer side and an accelerometer side taken at the "
    "same time.",
)


def rows_have_both_sides(
    context: dg.AssetCheckExecutionContext, _: StediSettings, storage: StediStorage, chosen: list[str]
) -> Iterator[dg.AssetCheckResult]:
    """Of the days changed since it last passed (check_scope)."""
    seen = examined(context, storage.lakehouse, MACHINE_LEARNING_CURATED.name, checks=chosen)
    verdict = contracts.both_sides_present(seen.frame)
    seen.remember(BOTH_SIDES.name, verdict)
    yield check_result(verdict, examined=seen, asset_key=BOTH_SIDES.asset_key, check_name=BOTH_SIDES.name)


CROSS_CUSTOMER_PAIRS = dg.AssetCheckSpec(
    "cross_customer_pairs",
    asset=MACHINE_LEARNING_CURATED.name,
    additional_deps=[CUSTOMER_CURATED.name],
    description="Training rows pairing one customer's Step Trainer with another customer's phone "
    "(timestamp-only join). Warns when any; set ml_join=same_customer to remove them.",
)


def cross_customer_pairs(
    context: dg.AssetCheckExecutionContext, _: StediSettings, storage: StediStorage, chosen: list[str]
) -> Iterator[dg.AssetCheckResult]:
    """Counted over the whole table from the days changed since its last evaluation (check_scope)."""
    key = pseudonym_of(storage)
    secret = key.secret
    seen = examined(
        context,
        storage.lakehouse,
        MACHINE_LEARNING_CURATED.name,
        [CUSTOMER_CURATED.name],
        {"pseudonym_key": key.key_id},
        checks=chosen,
    )
    owners = seen.parents[CUSTOMER_CURATED.name]
    verdict = counted(
        storage.lakehouse,
        seen,
        CROSS_CUSTOMER_PAIRS.name,
        lambda frame: transforms.cross_customer_pairs(frame, owners, secret),
        contracts.CROSS_CUSTOMER,
    )
    named = {"asset_key": CROSS_CUSTOMER_PAIRS.asset_key, "check_name": CROSS_CUSTOMER_PAIRS.name}
    yield check_result(verdict, secret, seen, **named)


curated_assets = [customer_curated, machine_learning_curated]
curated_checks = [
    table_check_step(CUSTOMER_CURATED, [membership_part(CUSTOMERS_HAVE_ACCELEROMETER_DATA)]),
    table_check_step(
        MACHINE_LEARNING_CURATED,
        [
            membership_part(USERS_ARE_CURATED_CUSTOMERS),
            CheckPart((BOTH_SIDES,), rows_have_both_sides),
            CheckPart((CROSS_CUSTOMER_PAIRS,), cross_customer_pairs),
        ],
    ),
]
