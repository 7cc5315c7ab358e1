"""Property: no sequence of landing updates leaves a non-consenting person in any retained version.

Each example is a sequence of customer updates (consent, withdrawal, a withdrawal that cannot be
parsed, re-consent), each under some spelling of the person's email (case, fullwidth letters, an
invisible character), with a full run of the real job on real Delta tables after every update.
A plain-Python model says who consents after each update; every retained version of every trusted
and curated table may hold only those people.
"""

from __future__ import annotations

import json
import tempfile
import unicodedata
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stedi_assets.cli import run_lakehouse
from stedi_assets.storage.environment import S3Options
from stedi_assets.storage.lakehouse import Lakehouse
from stedi_assets_tests.helpers import T1, customer, make_bucket, read_table, retained_versions, write_jsonl

PEOPLE = ("Alice", "Bob", "Cy")
ACTIONS = ("consent", "withdraw", "malformed_withdrawal")
PERSON_TABLES = [
    ("trusted", "customer_trusted", "email"),
    ("trusted", "accelerometer_trusted", "user"),
    ("curated", "customer_curated", "email"),
    ("curated", "machine_learning_curated", "user"),
]


def canonical(value: str) -> str:
    value = unicodedata.normalize("NFKC", value)
    return "".join(c for c in value if unicodedata.category(c) != "Cf").casefold().strip()


def spelling(name: str, variant: int) -> str:
    email = f"{name}@test.com"
    return [
        email,
        email.upper(),
        email.translate({c: c + 0xFEE0 for c in range(0x21, 0x7F)}),
        email[:2] + "\u200b" + email[2:],
    ][variant]


updates = st.lists(
    st.tuples(st.sampled_from(PEOPLE), st.sampled_from(ACTIONS), st.integers(0, 3)), min_size=1, max_size=3
)


def _check(sequence: list[tuple[str, str, int]], landing: Path, lakehouse: Lakehouse) -> None:
    # everyone consents at first and has phone and Step Trainer readings at the same time
    write_jsonl(landing / "customer" / "0.json", [customer(n, f"S-{n}", T1) for n in PEOPLE])
    write_jsonl(
        landing / "accelerometer" / "0.json",
        [{"user": f"{n}@test.com", "timestamp": T1, "x": 1.0, "y": 0.0, "z": 0.0} for n in PEOPLE],
    )
    write_jsonl(
        landing / "step_trainer" / "0.json",
        [{"sensorReadingTime": T1, "serialNumber": f"S-{n}", "distanceFromObject": 1} for n in PEOPLE],
    )
    consenting = {canonical(f"{n}@test.com") for n in PEOPLE}
    settings_ = {
        "landing_uri": str(landing),
        "lakehouse_uri": lakehouse.root,
        "ml_identity": "email",
        "max_reject_rate": 1,  # a malformed withdrawal is a reject
    }
    assert run_lakehouse(**settings_)["errors"] == []
    for step, (name, action, variant) in enumerate(sequence, start=1):
        email, updated = spelling(name, variant), T1 + step
        path = landing / "customer" / f"{step}.json"
        # dates only grow, so the latest update decides: a later valid consent supersedes an
        # earlier line that could not be parsed
        if action == "malformed_withdrawal":  # quarantined: consent given as a word
            line = {"email": email, "lastUpdateDate": updated, "shareWithResearchAsOfDate": "no"}
            path.write_text(json.dumps(line) + "\n")
        else:
            given = T1 if action == "consent" else None
            write_jsonl(path, [customer(name, f"S-{name}", given, email=email, lastUpdateDate=updated)])
        if action == "consent":
            consenting.add(canonical(email))
        else:
            consenting.discard(canonical(email))
        # every step runs (when no one consents, the row_count checks fail on the empty tables)
        summary = run_lakehouse(**settings_)
        assert summary["errors"] == [], (step, summary["errors"])

        # exactly the consenting people are trusted, and no retained version holds anyone else
        trusted = read_table(lakehouse, "trusted", "customer_trusted")["email"].to_list()
        assert {canonical(v) for v in trusted} == consenting, step
        for zone, table, column in PERSON_TABLES:
            for frame in retained_versions(lakehouse, zone, table).values():
                present = {canonical(v) for v in frame[column].to_list()}
                assert present <= consenting, (step, table, present - consenting)


@pytest.mark.slow
@settings(max_examples=6, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(sequence=updates)
def test_no_update_sequence_leaves_a_non_consenting_person_in_any_retained_version(sequence):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _check(sequence, root / "landing", Lakehouse(str(root / "lakehouse")))


@pytest.mark.slow
@pytest.mark.s3
@settings(max_examples=2, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(sequence=updates)
def test_no_update_sequence_leaves_a_non_consenting_person_in_any_retained_version_on_s3(
    sequence, s3_env: str
):
    with tempfile.TemporaryDirectory() as tmp:
        bucket = f"sequences-{uuid.uuid4().hex[:12]}"
        make_bucket(bucket)
        lakehouse = Lakehouse(f"s3://{bucket}/lakehouse", S3Options.from_environment())
        _check(sequence, Path(tmp) / "landing", lakehouse)
