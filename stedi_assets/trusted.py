"""Trusted zone: only research-consenting customers and their readings.

Privacy contracts are verified on the computed plan before the asset returns, so a table that
breaks them is never written: Dagster's IO manager publishes before blocking checks run.
"""

from __future__ import annotations

import polars as pl

from stedi_assets import contracts, transforms
from stedi_assets.checks import publish_only_if
from stedi_assets.contracts import MEMBERSHIPS
from stedi_assets.zones import table_asset


@table_asset("customer_trusted")
def customer_trusted(customer_landing: pl.LazyFrame) -> pl.LazyFrame:
    """The current record of each customer whose research consent is set and not 0."""
    frame = transforms.customer_trusted(customer_landing)
    publish_only_if(contracts.consenting_only(frame, customer_landing), "consent")
    return frame


@table_asset("accelerometer_trusted")
def accelerometer_trusted(
    accelerometer_landing: pl.LazyFrame, customer_trusted: pl.LazyFrame
) -> pl.LazyFrame:
    """Accelerometer readings whose user is a trusted customer."""
    frame = transforms.accelerometer_trusted(accelerometer_landing, customer_trusted)
    publish_only_if(MEMBERSHIPS["users_are_trusted_customers"].verdict(frame, customer_trusted), "consent")
    return frame


@table_asset("step_trainer_trusted")
def step_trainer_trusted(
    step_trainer_landing: pl.LazyFrame, customer_curated: pl.LazyFrame, customer_landing: pl.LazyFrame
) -> pl.LazyFrame:
    """Step Trainer readings of devices owned only by curated customers."""
    frame = transforms.step_trainer_trusted(step_trainer_landing, customer_curated, customer_landing)
    publish_only_if(
        MEMBERSHIPS["serials_belong_to_curated_customers"].verdict(frame, customer_curated), "consent"
    )
    return frame


trusted_assets = [customer_trusted, accelerometer_trusted, step_trainer_trusted]
