"""The consent sweep's predicate, shared by the sweep itself and by the writes it would examine.

Before customer_trusted publishes a decision, every table the decision reaches is swept: whoever it
does not allow leaves (trusted.withdraw_downstream). The sweep examines only the days changed since
a sweep under the same decision last left a table holding no one else (its record, check_scope).
A write of one of those tables evaluates the very same predicate on its staged files, against the
decision as published, before it commits; when that passes, its commit is recorded as swept
(check_scope.vouch), so the next sweep does not read again the rows the write just verified. Rows
that reach a table any other way (a writer behind the pipeline's back) change days no record
covers, and are swept.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import polars as pl
from deltalake import DeltaTable

from stedi_assets.defs.check_scope import Guard, release, state
from stedi_assets.defs.incremental import fingerprint
from stedi_assets.rules import contracts, transforms
from stedi_assets.rules.catalog import CUSTOMER, CUSTOMER_TRUSTED, Table
from stedi_assets.storage.errors import StorageError
from stedi_assets.storage.lakehouse import Lakehouse
from stedi_assets.storage.pseudonym import PseudonymKey
from stedi_assets.storage.resources import as_failure

SWEEP = "consent_sweep"
"""The record (check_scope) of the newest sweep, or guarded write, that left a downstream table
holding no one the decision does not allow."""
DECIDED_FROM = (CUSTOMER.landing, CUSTOMER.rejects, CUSTOMER_TRUSTED)
"""The tables a consent decision is read from: the published decision and the customer tables that
say which devices it allows."""

_decisions: dict[str, tuple[transforms.ConsentDecision, str]] = {}
"""Decisions made in this process, by what they were made from (made_from): at most two."""


def made_from(
    states: Mapping[str, Mapping[str, Any]], key: PseudonymKey, policy: transforms.ConsentPolicy
) -> str:
    """What a decision is a function of: the tables of DECIDED_FROM (their states), the rules, the
    key and the policy."""
    made = {"release": release(), "key": key.key_id, "policy": transforms.ConsentPolicy(policy).value}
    return json.dumps({**made, **states}, sort_keys=True)


def decide(
    decided: pl.LazyFrame,
    customer_landing: pl.LazyFrame,
    customer_rejects: pl.LazyFrame,
    key: PseudonymKey,
    policy: transforms.ConsentPolicy,
) -> tuple[transforms.ConsentDecision, str]:
    """The decision over the consenting customers' records `decided`, and its digest: who and which
    devices it allows (and since when). Equal digests, equal decisions."""
    decision = transforms.ConsentDecision.of(
        decided, customer_landing, customer_rejects, key.secret, policy=policy
    )
    digest = fingerprint(
        decision.consenting.collect(), decision.subjects.collect(), decision.attributable.collect()
    )
    return decision, digest


def remember_decision(made: str, decision: tuple[transforms.ConsentDecision, str]) -> None:
    """Keeps a decision this process made for the writes that follow (see published_decision)."""
    while len(_decisions) >= 2:
        _decisions.pop(next(iter(_decisions)))
    _decisions[made] = decision


def published_decision(
    lakehouse: Lakehouse,
    key: PseudonymKey,
    policy: transforms.ConsentPolicy,
    trusted: DeltaTable | None = None,
) -> tuple[transforms.ConsentDecision, str]:
    """The published decision (customer_trusted as `trusted` was opened, default the latest) with the
    customer tables as they are now, and its digest; made once per process for the same tables."""
    opened = {}
    for declared in DECIDED_FROM:
        uri = lakehouse.table_uri(declared.zone, declared.name)
        given = trusted if declared is CUSTOMER_TRUSTED else None
        opened[declared.name] = (uri, given if given is not None else lakehouse.open(uri))
    made = made_from({name: state(*table) for name, table in opened.items()}, key, policy)
    if made not in _decisions:
        landing, rejects, decided = (lakehouse.scan_opened(*table) for table in opened.values())
        remember_decision(made, decide(decided, landing, rejects, key, policy))
    return _decisions[made]


def allowed_only(
    decision: transforms.ConsentDecision, declared: Table
) -> Callable[[pl.LazyFrame], contracts.Verdict]:
    """The sweep's predicate on rows of `declared`: no identity the decision does not allow."""

    def verify(rows: pl.LazyFrame) -> contracts.Verdict:
        return contracts.no_offending_rows(
            decision.outside(rows, declared), "identities the consent decision does not allow"
        )

    return verify


def sweep_guard(
    lakehouse: Lakehouse,
    declared: Table,
    key: PseudonymKey,
    policy: transforms.ConsentPolicy,
    first: Callable[[pl.LazyFrame], contracts.Verdict],
    trusted: DeltaTable | None = None,
) -> tuple[Guard, Callable[[pl.LazyFrame], contracts.Verdict]]:
    """The sweep's predicate as a privacy guard of a write of `declared`, after the write's own
    (`first`), against the published decision (customer_trusted as `trusted` was opened, when the
    write decided from it): the guard, whose pass is recorded as the sweep's, and the verification of
    the staged files, which fails with the first contract broken. A table that cannot be read is the
    step's failure (retried when transient)."""
    try:
        decision, digest = published_decision(lakehouse, key, policy, trusted)
    except StorageError as error:
        raise as_failure(error) from error
    swept = allowed_only(decision, declared)

    def verify(staged: pl.LazyFrame) -> contracts.Verdict:
        verdict = first(staged)
        return swept(staged) if verdict.passed else verdict

    return Guard(SWEEP, {}, {"decision": digest}), verify
