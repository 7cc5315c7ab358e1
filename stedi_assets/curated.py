"""Curated zone: the population of the training set and the training table itself."""

from __future__ import annotations

import dagster as dg
import polars as pl

from stedi_assets import contracts, transforms
from stedi_assets.checks import publish_only_if
from stedi_assets.landing import KINDS, STORAGE_RETRY
from stedi_assets.resources import StediSettings
from stedi_assets.schemas import CURATED, table


def _curated(name: str):
    return dg.asset(
        name=name,
        group_name=CURATED,
        kinds=KINDS,
        description=table(name).description,
        retry_policy=STORAGE_RETRY,
        pool=f"delta_{name}",
    )


@_curated("customer_curated")
def customer_curated(customer_trusted: pl.LazyFrame, accelerometer_trusted: pl.LazyFrame) -> pl.LazyFrame:
    """Trusted customers with at least one trusted accelerometer reading, one row each."""
    return transforms.customer_curated(customer_trusted, accelerometer_trusted)


@_curated("machine_learning_curated")
def machine_learning_curated(
    settings: StediSettings,
    step_trainer_trusted: pl.LazyFrame,
    accelerometer_trusted: pl.LazyFrame,
    customer_curated: pl.LazyFrame,
) -> dg.MaterializeResult:
    """Step Trainer readings joined to accelerometer readings of the same timestamp (and, with
    ml_join=same_customer, of the device's owner only)."""
    ml_join = settings.resolved().ml_join
    frame = transforms.machine_learning_curated(
        step_trainer_trusted, accelerometer_trusted, customer_curated, ml_join
    )
    publish_only_if(
        contracts.belongs_to(frame, "user", customer_curated, "email", "a curated customer"), "consent"
    )
    return dg.MaterializeResult(value=frame, metadata={"ml_join": ml_join.value})


curated_assets = [customer_curated, machine_learning_curated]
