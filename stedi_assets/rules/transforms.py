"""The zone rules as pure Polars: LazyFrame in, LazyFrame out, no Dagster and no I/O.

Every rule here is what an asset computes and what the tests pin down on hand-made frames.
Identities (emails, serial numbers) are compared trimmed and lower-cased on both sides of
every join, because the app and the website do not agree on case or whitespace.
"""

from __future__ import annotations

from enum import StrEnum

import polars as pl

from stedi_assets.rules.catalog import (
    ACCELEROMETER_TRUSTED,
    CUSTOMER_CURATED,
    CUSTOMER_TRUSTED,
    LINE_NUMBER,
    MACHINE_LEARNING_CURATED,
    SOURCE_FILE,
    STEP_TRAINER_TRUSTED,
    Table,
)


class MlJoin(StrEnum):
    """How machine_learning_curated pairs a Step Trainer reading with accelerometer readings."""

    seed = "seed"
    """Same timestamp only: the rule of the original Glue job; pairs different customers' readings."""
    same_customer = "same_customer"
    """Same timestamp and the accelerometer's owner owns the Step Trainer."""


def identity(column: str | pl.Expr) -> pl.Expr:
    """The comparable form of an email or serial number."""
    expr = pl.col(column) if isinstance(column, str) else column
    return expr.str.strip_chars().str.to_lowercase()


def has_research_consent() -> pl.Expr:
    consent = pl.col("shareWithResearchAsOfDate")
    return consent.is_not_null() & (consent != 0)


def _declared(frame: pl.LazyFrame, declared: Table) -> pl.LazyFrame:
    return frame.select(pl.col(n).cast(t) for n, t in declared.dtypes.items())


def customer_current_state(customer_landing: pl.LazyFrame) -> pl.LazyFrame:
    """One row per customer (by email): the record with the latest lastUpdateDate.

    Ties are broken by source file, then line, so the latest delivery wins deterministically.
    """
    order = ["lastUpdateDate", SOURCE_FILE, LINE_NUMBER]
    return (
        customer_landing.with_columns(_email_key=identity("email"))
        .group_by("_email_key")
        .agg(pl.all().sort_by(order, nulls_last=False).last())
        .drop("_email_key")
    )


_STRING_PAIR = r'(?i)"{key}"\s*:\s*"((?:[^"\\]|\\.)*)"'
_NUMBER_PAIR = r'(?i)"{key}"\s*:\s*"?\s*(\d+)'


def recovered_customer_claims(customer_rejects: pl.LazyFrame) -> pl.LazyFrame:
    """What each quarantined customer line still says about whom it concerns.

    A line that could not be ingested may still be a withdrawal or a claim on a serial number, so
    its `"email": "..."`, `"serialNumber": "..."` and `lastUpdateDate` pairs are read from its raw
    text (keys in any case, whether or not the line is valid JSON). Lines naming neither are left out.
    """
    raw = pl.col("raw_line")
    return customer_rejects.select(
        email=raw.str.extract(_STRING_PAIR.format(key="email"), 1),
        serialNumber=raw.str.extract(_STRING_PAIR.format(key="serialNumber"), 1),
        lastUpdateDate=raw.str.extract(_NUMBER_PAIR.format(key="lastUpdateDate"), 1).cast(
            pl.Int64, strict=False
        ),
    ).filter(pl.col("email").is_not_null() | pl.col("serialNumber").is_not_null())


def customers_with_certain_consent(customer_landing: pl.LazyFrame) -> pl.LazyFrame:
    """Identity keys (`_key`) of customers whose consent is certain.

    Records that cannot be ordered before the newest one (no lastUpdateDate, or the same
    lastUpdateDate as the newest) could each be the current state, so every one of them must
    consent: an undated or tied withdrawal means no consent.
    """
    newest = pl.col("lastUpdateDate").max().over("_key")
    undecided = pl.col("lastUpdateDate").is_null() | (pl.col("lastUpdateDate") == newest)
    return (
        customer_landing.with_columns(_key=identity("email"))
        .with_columns(_consents=has_research_consent() | ~undecided)
        .group_by("_key")
        .agg(pl.col("_consents").all())
        .filter("_consents")
        .select("_key")
    )


def customers_on_hold(customer_landing: pl.LazyFrame, customer_rejects: pl.LazyFrame) -> pl.LazyFrame:
    """Identity keys (`_key`) of customers named by a quarantined line that no valid record supersedes.

    Such a line may be a withdrawal, so the customer is left out until the line is fixed or a valid
    record with a later lastUpdateDate than the line's arrives.
    """
    newest = customer_landing.group_by(_key=identity("email")).agg(_newest=pl.col("lastUpdateDate").max())
    claims = recovered_customer_claims(customer_rejects).filter(pl.col("email").is_not_null())
    return (
        claims.select(_key=identity("email"), _updated=pl.col("lastUpdateDate"))
        .join(newest, on="_key", how="left")
        .filter(~(pl.col("_updated") < pl.col("_newest")).fill_null(False))
        .select("_key")
        .unique()
    )


def consenting_customers(customer_landing: pl.LazyFrame, customer_rejects: pl.LazyFrame) -> pl.LazyFrame:
    """The current record of each customer whose research consent is certain and not on hold."""
    return (
        customer_current_state(customer_landing)
        .with_columns(_key=identity("email"))
        .join(customers_with_certain_consent(customer_landing), on="_key", how="semi")
        .join(customers_on_hold(customer_landing, customer_rejects), on="_key", how="anti")
        .drop("_key")
    )


def customer_trusted(customer_landing: pl.LazyFrame, customer_rejects: pl.LazyFrame) -> pl.LazyFrame:
    """Customers whose consent is certain: fails closed on undated, tied and quarantined records."""
    return _declared(consenting_customers(customer_landing, customer_rejects), CUSTOMER_TRUSTED)


def accelerometer_trusted(
    accelerometer_landing: pl.LazyFrame, customer_trusted: pl.LazyFrame
) -> pl.LazyFrame:
    """Readings whose user is a trusted customer, each distinct reading once."""
    consenting = customer_trusted.select(_key=identity("email"))
    readings = accelerometer_landing.join(consenting, left_on=identity("user"), right_on="_key", how="semi")
    return _declared(readings, ACCELEROMETER_TRUSTED).unique(maintain_order=True)


def customer_curated(customer_trusted: pl.LazyFrame, accelerometer_trusted: pl.LazyFrame) -> pl.LazyFrame:
    """Trusted customers with at least one trusted accelerometer reading."""
    users = accelerometer_trusted.select(_key=identity("user"))
    curated = customer_trusted.join(users, left_on=identity("email"), right_on="_key", how="semi")
    return _declared(curated, CUSTOMER_CURATED)


def serial_claims(customer_landing: pl.LazyFrame, customer_rejects: pl.LazyFrame) -> pl.LazyFrame:
    """Every (`_serial`, `_email`) claim of any customer record, accepted or quarantined.

    A quarantined line's claimant is null when no email can be read from it.
    """
    accepted = customer_landing.select(_serial=identity("serialNumber"), _email=identity("email"))
    quarantined = (
        recovered_customer_claims(customer_rejects)
        .filter(pl.col("serialNumber").is_not_null())
        .select(_serial=identity("serialNumber"), _email=identity("email"))
    )
    return pl.concat([accepted, quarantined])


def attributable_serials(
    customer_landing: pl.LazyFrame, customer_curated: pl.LazyFrame, customer_rejects: pl.LazyFrame
) -> pl.LazyFrame:
    """Serial numbers of curated customers' devices that no one else claims, in any record.

    The fulfilment website reused serial numbers; a device also claimed by a customer who is not
    curated, or by a quarantined record whose claimant cannot be read, cannot be told apart, so its
    readings stay out of the trusted zone.
    """
    curated = customer_curated.select(_email=identity("email"))
    owned = customer_curated.select(_serial=identity("serialNumber")).unique()
    # a null claimant (no readable email) matches no curated customer, so it stays a foreign claim
    foreign = serial_claims(customer_landing, customer_rejects).join(curated, on="_email", how="anti")
    return owned.join(foreign.select("_serial"), on="_serial", how="anti")


def ambiguous_serials(
    customer_landing: pl.LazyFrame, customer_curated: pl.LazyFrame, customer_rejects: pl.LazyFrame
) -> pl.LazyFrame:
    """Serials of curated customers that are also claimed by someone who is not curated."""
    curated = customer_curated.select(_serial=identity("serialNumber")).unique()
    return curated.join(
        attributable_serials(customer_landing, customer_curated, customer_rejects), on="_serial", how="anti"
    ).rename({"_serial": "serialNumber"})


def step_trainer_trusted(
    step_trainer_landing: pl.LazyFrame,
    customer_curated: pl.LazyFrame,
    customer_landing: pl.LazyFrame,
    customer_rejects: pl.LazyFrame,
) -> pl.LazyFrame:
    """Readings of devices owned by curated customers (and by nobody else), each distinct reading once."""
    serials = attributable_serials(customer_landing, customer_curated, customer_rejects)
    readings = step_trainer_landing.join(
        serials, left_on=identity("serialNumber"), right_on="_serial", how="semi"
    )
    return _declared(readings, STEP_TRAINER_TRUSTED).unique(maintain_order=True)


def _owner_serials(customer_curated: pl.LazyFrame) -> pl.LazyFrame:
    return customer_curated.select(_user=identity("email"), _owner_serial=identity("serialNumber"))


def machine_learning_curated(
    step_trainer_trusted: pl.LazyFrame,
    accelerometer_trusted: pl.LazyFrame,
    customer_curated: pl.LazyFrame,
    ml_join: MlJoin = MlJoin.seed,
) -> pl.LazyFrame:
    """Each Step Trainer reading paired with the accelerometer readings taken at the same time."""
    if MlJoin(ml_join) is MlJoin.seed:
        paired = step_trainer_trusted.join(
            accelerometer_trusted,
            left_on="sensorReadingTime",
            right_on="timestamp",
            how="inner",
            coalesce=False,
        )
    else:
        owned = accelerometer_trusted.join(
            _owner_serials(customer_curated), left_on=identity("user"), right_on="_user"
        )
        paired = step_trainer_trusted.join(
            owned,
            left_on=[pl.col("sensorReadingTime"), identity("serialNumber")],
            right_on=[pl.col("timestamp"), pl.col("_owner_serial")],
            how="inner",
            coalesce=False,
        )
    return _declared(paired, MACHINE_LEARNING_CURATED)


def cross_customer_pairs(
    machine_learning_curated: pl.LazyFrame, customer_curated: pl.LazyFrame
) -> pl.LazyFrame:
    """Training rows whose accelerometer owner does not own the Step Trainer of the row."""
    owners = _owner_serials(customer_curated)
    return (
        machine_learning_curated.join(owners, left_on=identity("user"), right_on="_user", how="left")
        .filter(pl.col("_owner_serial").is_null() | (pl.col("_owner_serial") != identity("serialNumber")))
        .drop("_user", "_owner_serial", strict=False)
    )
