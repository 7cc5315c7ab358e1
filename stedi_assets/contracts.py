"""Data contracts as pure Polars functions: each returns a Verdict with what it saw.

The asset checks (checks.py) and the in-asset privacy guards call these, and the tests run them
on good and bad frames directly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import polars as pl

from stedi_assets.schemas import PROFILE_COLUMNS, Table
from stedi_assets.transforms import (
    cross_customer_pairs,
    customer_current_state,
    has_research_consent,
    identity,
)

SAMPLE_ROWS = 5


@dataclass(frozen=True)
class Verdict:
    passed: bool
    summary: str
    observed: int | float | str | None = None
    expected: int | float | str | None = None
    offending: pl.DataFrame = field(default_factory=pl.DataFrame)


def _offending(rows: pl.LazyFrame) -> tuple[int, pl.DataFrame]:
    """How many offending rows, and a sample, in one pass over the plan."""
    frame = rows.with_columns(_n=pl.len()).head(SAMPLE_ROWS).collect()
    count = frame["_n"][0] if frame.height else 0
    return int(count), frame.drop("_n")


def consent_violations(customer_trusted: pl.LazyFrame, customer_landing: pl.LazyFrame) -> pl.LazyFrame:
    """Trusted rows without consent of their own, or whose customer's current record withdrew it."""
    consenting = (
        customer_current_state(customer_landing).filter(has_research_consent()).select(_key=identity("email"))
    )
    return (
        customer_trusted.join(consenting, left_on=identity("email"), right_on="_key", how="left")
        .filter(pl.col("_key").is_null() | ~has_research_consent().fill_null(False))
        .drop("_key")
    )


def consenting_only(customer_trusted: pl.LazyFrame, customer_landing: pl.LazyFrame) -> Verdict:
    """The privacy half of the consent contract: no trusted customer lacks current consent."""
    violations, sample = _offending(consent_violations(customer_trusted, customer_landing))
    return Verdict(
        violations == 0,
        f"{violations} trusted customers without current research consent",
        violations,
        0,
        sample,
    )


def consent(customer_trusted: pl.LazyFrame, customer_landing: pl.LazyFrame) -> Verdict:
    """Only customers whose current record consents are trusted, and every such customer is."""
    privacy = consenting_only(customer_trusted, customer_landing)
    expected = (
        customer_current_state(customer_landing)
        .filter(has_research_consent())
        .select(pl.len())
        .collect()
        .item()
    )
    observed = customer_trusted.select(pl.len()).collect().item()
    return Verdict(
        privacy.passed and observed == expected,
        f"{privacy.summary}; {observed} trusted of {expected} consenting customers in landing",
        observed,
        expected,
        privacy.offending,
    )


def orphans(child: pl.LazyFrame, child_key: str, parent: pl.LazyFrame, parent_key: str) -> pl.LazyFrame:
    """Rows of child whose identity key has no match in parent."""
    keys = parent.select(_key=identity(parent_key)).unique()
    return child.join(keys, left_on=identity(child_key), right_on="_key", how="anti")


def belongs_to(
    child: pl.LazyFrame, child_key: str, parent: pl.LazyFrame, parent_key: str, what: str
) -> Verdict:
    count, sample = _offending(orphans(child, child_key, parent, parent_key))
    return Verdict(count == 0, f"{count} rows whose {child_key} is not {what}", count, 0, sample)


@dataclass(frozen=True)
class Membership:
    """A referential contract: every row's `key` in `table` is a `parent_key` of `parent`."""

    table: str
    key: str
    parent: str
    parent_key: str
    parent_role: str

    @property
    def description(self) -> str:
        return f"Every {self.table} row's {self.key} is {self.parent_role} ({self.parent}.{self.parent_key})."

    def verdict(self, frame: pl.LazyFrame, parent: pl.LazyFrame) -> Verdict:
        return belongs_to(frame, self.key, parent, self.parent_key, self.parent_role)


MEMBERSHIPS = {
    "users_are_trusted_customers": Membership(
        "accelerometer_trusted", "user", "customer_trusted", "email", "a trusted customer"
    ),
    "serials_belong_to_curated_customers": Membership(
        "step_trainer_trusted",
        "serialNumber",
        "customer_curated",
        "serialNumber",
        "a curated customer's device",
    ),
    "customers_have_accelerometer_data": Membership(
        "customer_curated", "email", "accelerometer_trusted", "user", "the user of a trusted reading"
    ),
    "users_are_curated_customers": Membership(
        "machine_learning_curated", "user", "customer_curated", "email", "a curated customer"
    ),
}


def both_sides_present(machine_learning_curated: pl.LazyFrame) -> Verdict:
    missing = machine_learning_curated.filter(
        pl.any_horizontal(pl.col("sensorReadingTime", "serialNumber", "distanceFromObject").is_null())
        | pl.any_horizontal(pl.col("user", "timestamp", "x", "y", "z").is_null())
        | (pl.col("sensorReadingTime") != pl.col("timestamp"))
    )
    count, sample = _offending(missing)
    return Verdict(
        count == 0,
        f"{count} rows missing a Step Trainer or accelerometer side, or pairing different times",
        count,
        0,
        sample,
    )


def cross_customer(machine_learning_curated: pl.LazyFrame, customer_curated: pl.LazyFrame) -> Verdict:
    count, sample = _offending(cross_customer_pairs(machine_learning_curated, customer_curated))
    return Verdict(
        count == 0,
        f"{count} rows pair one customer's Step Trainer with another customer's phone",
        count,
        0,
        sample,
    )


def profile_columns(columns: Sequence[str]) -> Verdict:
    leaked = sorted(set(columns) & set(PROFILE_COLUMNS))
    return Verdict(
        not leaked,
        f"customer profile columns present: {', '.join(leaked) or 'none'}",
        ", ".join(leaked) or "none",
        "none",
    )


def schema_matches(actual: Mapping[str, pl.DataType], declared: Table) -> Verdict:
    expected = declared.dtypes
    differences = [
        f"{name}: {actual.get(name, 'missing')} (declared {dtype})"
        for name, dtype in expected.items()
        if actual.get(name) != dtype
    ] + [f"{name}: not declared" for name in actual if name not in expected]
    return Verdict(
        not differences,
        "; ".join(differences) or "columns and types as declared",
        len(differences),
        0,
    )


def duplicate_rows(frame: pl.LazyFrame) -> Verdict:
    duplicated = frame.filter(pl.struct(pl.all()).is_duplicated())
    count, sample = _offending(duplicated)
    return Verdict(count == 0, f"{count} rows are exact duplicates of another row", count, 0, sample)


def unique_identity(frame: pl.LazyFrame, key: str) -> Verdict:
    duplicated = frame.filter(identity(key).is_duplicated())
    count, sample = _offending(duplicated)
    return Verdict(count == 0, f"{count} rows share their {key} with another row", count, 0, sample)


def row_count(
    observed: int, upstream: int | None = None, expected: int | None = None, upstream_name: str = ""
) -> Verdict:
    """Non-empty, no more rows than the table it filters, and the expected count when one is set."""
    problems = []
    if observed == 0:
        problems.append("table is empty")
    if upstream is not None and observed > upstream:
        problems.append(f"{observed} rows exceed {upstream} in {upstream_name}")
    if expected is not None and observed != expected:
        problems.append(f"{observed} rows, expected exactly {expected}")
    return Verdict(
        not problems,
        "; ".join(problems) or f"{observed} rows",
        observed,
        expected,
    )


def conservation(lines_read: int, accepted: int, rejected: int) -> Verdict:
    """Every non-blank line read is either a landing row or a quarantined reject."""
    return Verdict(
        lines_read == accepted + rejected,
        f"{lines_read} non-blank lines read, {accepted} accepted + {rejected} rejected",
        accepted + rejected,
        lines_read,
    )


def reject_rate(lines_read: int, rejected: int, max_rate: float) -> Verdict:
    """Fails on any reject; `observed` (the rate) against `expected` (the limit) sets how loudly."""
    rate = rejected / lines_read if lines_read else 0.0
    return Verdict(
        rejected == 0,
        f"{rejected} of {lines_read} lines rejected ({rate:.2%}; limit {max_rate:.2%})",
        rate,
        max_rate,
    )
