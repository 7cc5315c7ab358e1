"""How a run computes: the consent policy, the training-table join and what the checks expect."""

# No `from __future__ import annotations` here: Dagster reads the field types at runtime.
import json
from pathlib import Path

import dagster as dg
from pydantic import Field

from stedi_assets.rules.transforms import ConsentPolicy, MlIdentity, MlJoin
from stedi_assets.storage.pseudonym import PseudonymKey
from stedi_assets.storage.resources import EnvironmentDefaults

DEFAULT_MAX_REJECT_RATE = 0.05


class StediSettings(EnvironmentDefaults):
    """Run settings of the lakehouse; each falls back to its STEDI_* variable, then its default."""

    ml_join: MlJoin = Field(
        MlJoin.seed,
        description="How machine_learning_curated pairs readings: 'seed' (same timestamp, the original "
        "rule) or 'same_customer' (also the phone's owner owns the Step Trainer) (env STEDI_ML_JOIN).",
    )
    ml_identity: MlIdentity = Field(
        MlIdentity.subject_id,
        description="How machine_learning_curated identifies a phone's owner: 'subject_id' (a keyed hash "
        "of the email, keyed by STEDI_PSEUDONYM_KEY) or 'email' (the hash and the email) "
        "(env STEDI_ML_IDENTITY).",
    )
    consent_policy: ConsentPolicy = Field(
        ConsentPolicy.any_time,
        description="Which readings of a consenting customer are trusted: 'any_time' (every reading, "
        "the original rule) or 'from_consent_date' (only those taken at or after "
        "shareWithResearchAsOfDate) (env STEDI_CONSENT_POLICY).",
    )
    max_reject_rate: float = Field(
        DEFAULT_MAX_REJECT_RATE,
        ge=0.0,
        le=1.0,
        description="Share of rejected landing lines above which reject_rate fails as an ERROR; any "
        "reject below it is a WARN (env STEDI_MAX_REJECT_RATE).",
    )
    expectations_file: str | None = Field(
        None,
        description="JSON file of exact row counts per table that row_count checks compare with, e.g. "
        "stedi_assets/expectations/reference.json (env STEDI_EXPECTATIONS_FILE).",
    )

    def expected_row_count(self, table: str) -> int | None:
        """The exact count for a table from the expectations file, if one is configured."""
        if not self.expectations_file:
            return None
        path = Path(self.expectations_file)
        if not path.is_file():
            raise dg.Failure(
                f"Expectations file {path.absolute()} does not exist (STEDI_EXPECTATIONS_FILE).",
                allow_retries=False,
            )
        expectations = json.loads(path.read_text())
        counts = expectations.get("row_counts", {}) | expectations.get(
            "row_counts_by_consent_policy", {}
        ).get(self.consent_policy.value, {})
        expected = counts.get(table)
        if isinstance(expected, dict):
            expected = expected.get(self.ml_join.value)
        return expected


def commit_properties(settings: StediSettings, key: PseudonymKey) -> dict[str, str]:
    """The rules a trusted or curated table was made under, recorded in its Delta commit (the key's
    public id, never the key)."""
    return {
        "stedi.consent_policy": settings.consent_policy.value,
        "stedi.ml_join": settings.ml_join.value,
        "stedi.ml_identity": settings.ml_identity.value,
        "stedi.pseudonym_key_id": key.key_id,
    }
