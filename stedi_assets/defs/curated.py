"""Curated zone: the population of the training set and the training table, with their checks."""

from __future__ import annotations

import dagster as dg
import polars as pl

from stedi_assets.defs import conditions
from stedi_assets.defs.check_scope import counted, examined
from stedi_assets.defs.consent_sweep import sweep_guard
from stedi_assets.defs.factories import (
    check_result,
    guard_of,
    membership_check,
    table_asset,
    table_checks,
)
from stedi_assets.defs.incremental import fingerprint, recompute_by_day
from stedi_assets.defs.settings import StediSettings, commit_properties
from stedi_assets.rules import contracts, transforms
from stedi_assets.rules.catalog import (
    ACCELEROMETER_TRUSTED,
    CUSTOMER_CURATED,
    MACHINE_LEARNING_CURATED,
    STEP_TRAINER_TRUSTED,
)
from stedi_assets.rules.identity import SUBJECT_ID, pseudonym_map
from stedi_assets.storage.errors import StorageError
from stedi_assets.storage.io_manager import Publication
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


@table_asset(CUSTOMER_CURATED, automation=conditions.follows("accelerometer_trusted"))
def customer_curated(
    settings: StediSettings,
    storage: StediStorage,
    customer_trusted: pl.LazyFrame,
    accelerometer_trusted: pl.LazyFrame,
) -> dg.Output:
    """Trusted customers with at least one trusted accelerometer reading, one row each.

    Its data version is a digest of its rows: the tables decided from it (step_trainer_trusted,
    machine_learning_curated) follow it by automation only when the population changed."""
    plan = transforms.customer_curated(customer_trusted, accelerometer_trusted)
    lakehouse = storage.lakehouse
    try:  # one row per customer, from every reading's user: collected in bounded memory
        readings = lakehouse.table_uri(ACCELEROMETER_TRUSTED.zone, ACCELEROMETER_TRUSTED.name)
        curated = lakehouse.reading(readings, plan, streaming=True)
    except StorageError as error:
        raise as_failure(error) from error
    publication = Publication(
        curated.lazy(),
        "consent",
        lambda staged: CURATED_CUSTOMERS_ARE_TRUSTED.verdict(staged, customer_trusted),
        commit_properties(settings, pseudonym_of(storage)),
    )
    return dg.Output(publication, data_version=dg.DataVersion(fingerprint(curated)))


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
    try:  # and the consent sweep's own predicate, against the published decision
        swept, verify = sweep_guard(
            storage.lakehouse,
            MACHINE_LEARNING_CURATED,
            key,
            settings.consent_policy,
            lambda staged: USERS_ARE_CURATED_CUSTOMERS.verdict(staged, owners, key.secret),
        )
    except StorageError as error:
        raise as_failure(error) from error
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


@dg.asset_check(
    asset=machine_learning_curated,
    blocking=True,
    description="Every training row has a Step Trainer side and an accelerometer side taken at the "
    "same time.",
)
def rows_have_both_sides(context, storage: StediStorage) -> dg.AssetCheckResult:  # context: see above
    """Of the days changed since it last passed (check_scope)."""
    seen = examined(context, storage.lakehouse, MACHINE_LEARNING_CURATED.name)
    verdict = contracts.both_sides_present(seen.frame)
    seen.remember("rows_have_both_sides", verdict)
    return check_result(verdict, examined=seen)


@dg.asset_check(
    asset=machine_learning_curated,
    additional_deps=["customer_curated"],
    description="Training rows pairing one customer's Step Trainer with another customer's phone "
    "(timestamp-only join). Warns when any; set ml_join=same_customer to remove them.",
)
def cross_customer_pairs(context, storage: StediStorage) -> dg.AssetCheckResult:  # context: see above
    """Counted over the whole table from the days changed since its last evaluation (check_scope)."""
    key = pseudonym_of(storage)
    secret = key.secret
    seen = examined(
        context,
        storage.lakehouse,
        MACHINE_LEARNING_CURATED.name,
        [CUSTOMER_CURATED.name],
        {"pseudonym_key": key.key_id},
    )
    owners = seen.parents[CUSTOMER_CURATED.name]
    verdict = counted(
        storage.lakehouse,
        seen,
        "cross_customer_pairs",
        lambda frame: transforms.cross_customer_pairs(frame, owners, secret),
        contracts.CROSS_CUSTOMER,
    )
    return check_result(verdict, secret, seen)


curated_assets = [customer_curated, machine_learning_curated]
curated_checks = [
    rows_have_both_sides,
    cross_customer_pairs,
    membership_check(CUSTOMERS_HAVE_ACCELEROMETER_DATA),
    membership_check(USERS_ARE_CURATED_CUSTOMERS),
    table_checks(CUSTOMER_CURATED),
    table_checks(MACHINE_LEARNING_CURATED),
]
