"""The curated zone through the code location's job: the training table under both join rules."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
from pathlib import Path

import dagster as dg
import polars as pl
from deltalake import DeltaTable

from stedi_assets.cli import run_lakehouse
from stedi_assets_tests.helpers import T1, T2, write_jsonl

STEP_COLUMNS = ["sensorReadingTime", "serialNumber", "distanceFromObject"]
READING_COLUMNS = ["timestamp", "x", "y", "z"]


def _ml(lakehouse: Path) -> pl.DataFrame:
    return pl.read_delta(str(lakehouse / "curated" / "machine_learning_curated"))


def _generated_key() -> bytes:
    """The key a local run generates when STEDI_PSEUDONYM_KEY is not set: in the user's config folder
    (the test session's, see conftest), never in the lakehouse."""
    return (Path(os.environ["XDG_CONFIG_HOME"]) / "stedi" / "pseudonym.key").read_bytes().strip()


def _subject_id(canonical_email: str) -> str:
    """HMAC-SHA256 (hex) of the canonical email under the run's key, computed independently."""
    return hmac.new(_generated_key(), canonical_email.encode(), hashlib.sha256).hexdigest()


def test_seed_join_pairs_readings_by_timestamp_only(tiny_landing: Path, tmp_path: Path):
    lakehouse = tmp_path / "lakehouse"
    summary = run_lakehouse(landing_uri=str(tiny_landing), lakehouse_uri=str(lakehouse))

    assert summary["success"], summary["errors"]
    assert sorted(pl.read_delta(str(lakehouse / "curated" / "customer_curated"))["email"]) == [
        "Alice@test.com",
        "Erin@test.com",
    ]
    alice, erin = _subject_id("alice@test.com"), _subject_id("erin@test.com")
    ml = _ml(lakehouse)
    # pseudonymous by default: the subject_id, no email
    assert ml.columns == [*STEP_COLUMNS, "subject_id", *READING_COLUMNS, "event_day"]
    assert ml.sort("serialNumber", "sensorReadingTime", "x").select(
        "sensorReadingTime", "serialNumber", "subject_id", "x"
    ).rows() == [
        (T1, "S-A", alice, 1.0),
        (T2, "S-A", alice, 2.0),
        (T2, "S-A", erin, 4.0),
        (T2, "S-E", alice, 2.0),
        (T2, "S-E", erin, 4.0),
    ]
    commit = DeltaTable(str(lakehouse / "curated" / "machine_learning_curated")).history(1)[0]
    key_id = hashlib.sha256(b"stedi-pseudonym-key-id:" + _generated_key()).hexdigest()[:12]
    assert (commit["stedi.ml_identity"], commit["stedi.pseudonym_key_id"]) == ("subject_id", key_id)
    cross = next(c for c in summary["checks"] if c["name"] == "cross_customer_pairs")
    assert (cross["passed"], cross["severity"]) == (False, "WARN")
    assert cross["summary"] == "2 rows pair one customer's Step Trainer with another customer's phone"
    members = next(c for c in summary["checks"] if c["name"] == "users_are_curated_customers")
    assert (members["passed"], members["summary"]) == (
        True,
        "0 rows whose subject_id is not a curated customer (by keyed hash)",
    )


def test_same_customer_join_keeps_only_owners_pairs(tiny_landing: Path, tmp_path: Path):
    lakehouse = tmp_path / "lakehouse"
    summary = run_lakehouse(
        landing_uri=str(tiny_landing),
        lakehouse_uri=str(lakehouse),
        ml_join="same_customer",
        ml_identity="email",
    )

    assert summary["success"], summary["errors"]
    alice, erin = _subject_id("alice@test.com"), _subject_id("erin@test.com")
    ml = _ml(lakehouse)
    # ml_identity=email keeps the email beside the subject_id
    assert ml.columns == [*STEP_COLUMNS, "subject_id", "user", *READING_COLUMNS, "event_day"]
    assert ml.sort("serialNumber", "sensorReadingTime").select(
        "sensorReadingTime", "serialNumber", "subject_id", "user"
    ).rows() == [
        (T1, "S-A", alice, "Alice@test.com"),
        (T2, "S-A", alice, "Alice@test.com"),
        (T2, "S-E", erin, "Erin@test.com"),
    ]
    commit = DeltaTable(str(lakehouse / "curated" / "machine_learning_curated")).history(1)[0]
    assert (commit["stedi.ml_join"], commit["stedi.ml_identity"]) == ("same_customer", "email")
    cross = next(c for c in summary["checks"] if c["name"] == "cross_customer_pairs")
    assert (cross["passed"], cross["summary"]) == (
        True,
        "0 rows pair one customer's Step Trainer with another customer's phone",
    )


def _curated(instance: dg.DagsterInstance, lakehouse: Path) -> tuple[list[str], object]:
    """customer_curated's emails, and how many days of readings its latest write read."""
    event = instance.get_latest_materialization_event(dg.AssetKey("customer_curated"))
    emails = sorted(pl.read_delta(str(lakehouse / "curated" / "customer_curated"))["email"])
    return emails, event.asset_materialization.metadata["days_read"].value


def test_curated_customers_read_only_the_days_the_readings_gained(tiny_landing: Path, tmp_path: Path):
    """A new day of readings adds its users to those already curated without reading the other days;
    a day that changed (a reading left) reads them all, so no one stays curated without a reading."""
    lakehouse = tmp_path / "lakehouse"
    settings = {"landing_uri": str(tiny_landing), "lakehouse_uri": str(lakehouse)}
    with dg.instance_for_test() as instance:
        assert run_lakehouse(instance=instance, **settings)["success"]
        assert _curated(instance, lakehouse) == (["Alice@test.com", "Erin@test.com"], "all")
        # Carol (consenting, no phone data until now) and Bob (not consenting) read on a new day
        next_day = T1 + 86_400_000
        write_jsonl(
            tiny_landing / "accelerometer" / "accelerometer-2.json",
            [
                {"user": u, "timestamp": next_day, "x": 5.0, "y": 0.0, "z": 0.0}
                for u in ("Carol@test.com", "Bob@test.com")
            ],
        )

        assert run_lakehouse(instance=instance, **settings)["success"]
        assert _curated(instance, lakehouse) == (["Alice@test.com", "Carol@test.com", "Erin@test.com"], 1)

        # the same population as reading every day (the record of what it was made from is lost)
        shutil.rmtree(lakehouse / "verified" / "accelerometer_trusted")
        assert run_lakehouse(instance=instance, **settings)["success"]
        assert _curated(instance, lakehouse) == (["Alice@test.com", "Carol@test.com", "Erin@test.com"], "all")

        # another reading on a day it held (a day that changed, not one gained): every day is read
        write_jsonl(
            tiny_landing / "accelerometer" / "accelerometer-3.json",
            [{"user": "Alice@test.com", "timestamp": T1 + 1_000, "x": 6.0, "y": 0.0, "z": 0.0}],
        )
        assert run_lakehouse(instance=instance, **settings)["success"]
        assert _curated(instance, lakehouse) == (["Alice@test.com", "Carol@test.com", "Erin@test.com"], "all")

        # Erin's only reading is withdrawn from the first file: she is no longer curated
        first = tiny_landing / "accelerometer" / "accelerometer-1.json"
        readings = [json.loads(line) for line in first.read_text().splitlines()]
        write_jsonl(first, [reading for reading in readings if reading["user"] != "Erin@test.com"])
        assert run_lakehouse(instance=instance, **settings)["success"]
        assert _curated(instance, lakehouse) == (["Alice@test.com", "Carol@test.com"], "all")
