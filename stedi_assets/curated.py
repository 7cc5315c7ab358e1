"""Curated zone: the population of the training set and the training table itself."""

from __future__ import annotations

import dagster as dg
import polars as pl

from stedi_assets import transforms
from stedi_assets.checks import publish_only_if
from stedi_assets.contracts import MEMBERSHIPS
from stedi_assets.resources import StediSettings
from stedi_assets.zones import table_asset


@table_asset("customer_curated")
def customer_curated(customer_trusted: pl.LazyFrame, accelerometer_trusted: pl.LazyFrame) -> pl.LazyFrame:
    """Trusted customers with at least one trusted accelerometer reading, one row each."""
    return transforms.customer_curated(customer_trusted, accelerometer_trusted)


@table_asset("machine_learning_curated")
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
    publish_only_if(MEMBERSHIPS["users_are_curated_customers"].verdict(frame, customer_curated), "consent")
    return dg.MaterializeResult(value=frame, metadata={"ml_join": ml_join.value})


curated_assets = [customer_curated, machine_learning_curated]
