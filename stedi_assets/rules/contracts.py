"""Data contracts as pure Polars functions: each returns a Verdict with what it saw.

The asset checks and the in-asset privacy guards call these, and the tests run them on good and
bad frames directly. A verdict carries its own severity: ERROR for a broken contract, WARN for
known drift that a person should look at.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import polars as pl

from stedi_assets.rules.catalog import PROFILE_COLUMNS, Table
from stedi_assets.rules.identity import (
    KEY,
    SUBJECT_ID,
    canonical,
    keys,
    pseudonym_keys,
    with_pseudonym,
    with_record_key,
)
from stedi_assets.rules.transforms import (
    ambiguous_serials,
    consenting_customers,
    cross_customer_pairs,
    customers_on_hold,
    has_research_consent,
)

SAMPLE_ROWS = 5


class Severity(StrEnum):
    ERROR = "ERROR"
    WARN = "WARN"


@dataclass(frozen=True)
class Verdict:
    passed: bool
    summary: str
    observed: int | float | str | None = None
    expected: int | float | str | None = None
    offending: pl.DataFrame = field(default_factory=pl.DataFrame)
    severity: Severity = Severity.ERROR


def no_offending_rows(rows: pl.LazyFrame, what: str, severity: Severity = Severity.ERROR) -> Verdict:
    """Passes when `rows` is empty; otherwise counts them and keeps a sample, in one pass over the plan.

    `what` completes "<n> ...", e.g. "rows are exact duplicates of another row".
    """
    return _offending(_sampled(rows).collect(), what, severity)


def _sampled(rows: pl.LazyFrame) -> pl.LazyFrame:
    """The first SAMPLE_ROWS rows, each with the count of all rows (`_n`)."""
    return rows.with_columns(_n=pl.len()).head(SAMPLE_ROWS)


def _offending(sample: pl.DataFrame, what: str, severity: Severity = Severity.ERROR) -> Verdict:
    count = int(sample["_n"][0]) if sample.height else 0
    return Verdict(count == 0, f"{count} {what}", count, 0, sample.drop("_n"), severity)


def consent_violations(
    customer_trusted: pl.LazyFrame, customer_landing: pl.LazyFrame, customer_rejects: pl.LazyFrame
) -> pl.LazyFrame:
    """Trusted rows whose customer's consent is not certain now, or that carry no consent of their own."""
    consenting = keys(consenting_customers(customer_landing, customer_rejects), "email").with_columns(
        _consenting=pl.lit(True)
    )
    return (
        with_record_key(customer_trusted, "email")
        .join(consenting, on=KEY, how="left", maintain_order="left")
        .filter(pl.col("_consenting").is_null() | ~has_research_consent().fill_null(False))
        .drop(KEY, "_consenting")
    )


def consenting_only(
    customer_trusted: pl.LazyFrame, customer_landing: pl.LazyFrame, customer_rejects: pl.LazyFrame
) -> Verdict:
    """The privacy half of the consent contract: no trusted customer lacks certain, current consent."""
    return no_offending_rows(
        consent_violations(customer_trusted, customer_landing, customer_rejects),
        "trusted customers without current research consent",
    )


def consent(
    customer_trusted: pl.LazyFrame, customer_landing: pl.LazyFrame, customer_rejects: pl.LazyFrame
) -> Verdict:
    """Only customers whose consent is certain are trusted, and every such customer is.

    One collection of the three answers, so the consent decision they share is made once."""
    violations, consenting, trusted = pl.collect_all(
        [
            _sampled(consent_violations(customer_trusted, customer_landing, customer_rejects)),
            consenting_customers(customer_landing, customer_rejects).select(pl.len()),
            customer_trusted.select(pl.len()),
        ]
    )
    privacy = _offending(violations, "trusted customers without current research consent")
    expected, observed = consenting.item(), trusted.item()
    return Verdict(
        privacy.passed and observed == expected,
        f"{privacy.summary}; {observed} trusted of {expected} consenting customers in landing",
        observed,
        expected,
        privacy.offending,
    )


@dataclass(frozen=True)
class Membership:
    """A referential contract: every row's `key` in `table` is a `parent_key` of `parent`.

    Declared once beside the table it guards; the asset's privacy guard and its blocking check
    both evaluate it.
    """

    name: str
    table: str
    key: str
    parent: str
    parent_key: str
    parent_role: str
    pseudonymous: bool = False
    """`key` holds keyed hashes (subject_id) of the parent's identities."""

    @property
    def description(self) -> str:
        return f"Every {self.table} row's {self.key} is {self.parent_role} ({self.parent}.{self.parent_key})."

    @property
    def offence(self) -> str:
        return f"rows whose {self.key} is not {self.parent_role}"

    def of_no_rows(self) -> Verdict:
        """The verdict on no rows at all (nothing to examine): it holds, as on any empty table."""
        return Verdict(True, f"0 {self.offence}", 0, 0)

    def verdict(self, frame: pl.LazyFrame, parent: pl.LazyFrame, secret: bytes | None = None) -> Verdict:
        if self.pseudonymous and secret is None:
            raise ValueError(f"{self.name} compares keyed hashes: it needs the pseudonym key")
        parents = (
            pseudonym_keys(parent, self.parent_key, secret)
            if self.pseudonymous and secret is not None
            else keys(parent, self.parent_key)
        )
        # The distinct values are compared (a few thousand), then only the rows holding one that is
        # not a parent's, or none, are read again: memory is bounded by the identities, not the rows.
        distinct = frame.select(pl.col(self.key)).unique().filter(pl.col(self.key).is_not_null())
        foreign = (
            distinct.with_columns(canonical(pl.col(self.key)).alias(KEY))
            .join(parents, on=KEY, how="anti")
            .collect(engine="streaming")
            .get_column(self.key)
        )
        orphans = frame.filter(pl.col(self.key).is_null() | pl.col(self.key).is_in(foreign.implode()))
        return no_offending_rows(orphans, self.offence)


def both_sides_present(machine_learning_curated: pl.LazyFrame) -> Verdict:
    missing = machine_learning_curated.filter(
        pl.any_horizontal(pl.col("sensorReadingTime", "serialNumber", "distanceFromObject").is_null())
        | pl.any_horizontal(pl.col(SUBJECT_ID, "timestamp", "x", "y", "z").is_null())
        | (pl.col("sensorReadingTime") != pl.col("timestamp"))
    )
    return no_offending_rows(
        missing, "rows missing a Step Trainer or accelerometer side, or pairing different times"
    )


CROSS_CUSTOMER = "rows pair one customer's Step Trainer with another customer's phone"


def cross_customer(
    machine_learning_curated: pl.LazyFrame, customer_curated: pl.LazyFrame, secret: bytes
) -> Verdict:
    """Drift, not a break: the seed join pairs readings of different customers taken at the same time."""
    return no_offending_rows(
        cross_customer_pairs(machine_learning_curated, customer_curated, secret),
        CROSS_CUSTOMER,
        Severity.WARN,
    )


def recounted(examined: Verdict, then: int, recorded: int, what: str) -> Verdict:
    """A count over a whole table from a count over some of its days: `recorded` (the whole table's,
    some time ago), less `then` (those days' rows then), plus what `examined` found in them now. Its
    sample is the examined days'."""
    total = recorded - then + int(examined.observed or 0)
    return Verdict(total == 0, f"{total} {what}", total, 0, examined.offending, examined.severity)


def customers_held(customer_landing: pl.LazyFrame, customer_rejects: pl.LazyFrame, secret: bytes) -> Verdict:
    """Drift, not a break: customers left out because a quarantined line names them.

    The sample identifies them by keyed hash (subject_id): emails do not leave the lakehouse.
    """
    held = with_pseudonym(customers_on_hold(customer_landing, customer_rejects), KEY, secret).select(
        SUBJECT_ID
    )
    return no_offending_rows(
        held.sort(SUBJECT_ID),
        "customers on hold: a quarantined customer line names them and no later valid record supersedes it",
        Severity.WARN,
    )


def shared_serials(
    customer_landing: pl.LazyFrame, customer_curated: pl.LazyFrame, customer_rejects: pl.LazyFrame
) -> Verdict:
    """Drift, not a break: reused serial numbers whose readings were left out as unattributable."""
    return no_offending_rows(
        ambiguous_serials(customer_landing, customer_curated, customer_rejects),
        "curated customers' serial numbers are shared with customers who are not curated",
        Severity.WARN,
    )


def no_profile_columns(columns: Sequence[str]) -> Verdict:
    leaked = ", ".join(sorted(set(columns) & set(PROFILE_COLUMNS))) or "none"
    return Verdict(leaked == "none", f"customer profile columns present: {leaked}", leaked, "none")


def schema_matches(actual: Mapping[str, pl.DataType], declared: Table) -> Verdict:
    expected = declared.dtypes
    optional = {c.name for c in declared.columns if c.optional}
    differences = [
        f"{name}: {actual.get(name, 'missing')} (declared {dtype})"
        for name, dtype in expected.items()
        if actual.get(name) != dtype and not (name in optional and name not in actual)
    ] + [f"{name}: not declared" for name in actual if name not in expected]
    return Verdict(
        not differences, "; ".join(differences) or "columns and types as declared", len(differences), 0
    )


def no_duplicate_rows(frame: pl.LazyFrame) -> Verdict:
    """No row twice. One streaming pass hashes every row; only rows whose hash recurs (neighbours in
    the sorted hashes) are then compared exactly. Memory holds eight bytes a row, not the rows, and a
    hash collision costs a comparison, never a wrong verdict."""
    row_hash = pl.struct(pl.all()).hash()
    hashes = frame.select(row_hash.alias("_hash")).collect(engine="streaming").to_series().sort()
    recurring = hashes.filter(hashes == hashes.shift(1)).unique()
    # no hash recurs, so no row does: the rows are not read again (duplicates share their hash)
    candidates = frame.filter(row_hash.is_in(recurring.implode())) if recurring.len() else frame.clear()
    return no_offending_rows(
        candidates.filter(pl.struct(pl.all()).is_duplicated()), "rows are exact duplicates of another row"
    )


def unique_identity(frame: pl.LazyFrame, key: str) -> Verdict:
    return no_offending_rows(
        with_record_key(frame, key).filter(pl.col(KEY).is_duplicated()).drop(KEY),
        f"rows share their {key} with another row",
    )


def row_count(
    observed: int, subset_of: int | None = None, expected: int | None = None, subset_name: str = ""
) -> Verdict:
    """Non-empty, no more rows than the table it filters, and the expected count when one is set."""
    problems = []
    if observed == 0:
        problems.append("table is empty")
    if subset_of is not None and observed > subset_of:
        problems.append(f"{observed} rows exceed {subset_of} in {subset_name}")
    if expected is not None and observed != expected:
        problems.append(f"{observed} rows, expected exactly {expected}")
    return Verdict(not problems, "; ".join(problems) or f"{observed} rows", observed, expected)


def conservation(lines_read: int, accepted: int, rejected: int, erased: int = 0) -> Verdict:
    """Every non-blank line read is a landing row, a quarantined reject, or a line of an erased person."""
    erasures = f" + {erased} erased" if erased else ""
    return Verdict(
        lines_read == accepted + rejected + erased,
        f"{lines_read} non-blank lines read, {accepted} accepted + {rejected} rejected{erasures}",
        accepted + rejected + erased,
        lines_read,
    )


def reject_rate(lines_read: int, rejected: int, max_rate: float) -> Verdict:
    """Fails on any reject: a WARN up to `max_rate`, an ERROR above it."""
    rate = rejected / lines_read if lines_read else 0.0
    return Verdict(
        rejected == 0,
        f"{rejected} of {lines_read} lines rejected ({rate:.2%}; limit {max_rate:.2%})",
        rate,
        max_rate,
        severity=Severity.ERROR if rate > max_rate else Severity.WARN,
    )
