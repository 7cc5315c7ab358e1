"""The curated zone through the code location's job: the training table under both join rules."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from stedi_assets.cli import run_lakehouse
from stedi_assets_tests.helpers import T1, T2


def _ml(lakehouse: Path) -> pl.DataFrame:
    return pl.read_delta(str(lakehouse / "curated" / "machine_learning_curated"))


def test_seed_join_pairs_readings_by_timestamp_only(tiny_landing: Path, tmp_path: Path):
    lakehouse = tmp_path / "lakehouse"
    summary = run_lakehouse(landing_uri=str(tiny_landing), lakehouse_uri=str(lakehouse))

    assert summary["success"], summary["errors"]
    assert sorted(pl.read_delta(str(lakehouse / "curated" / "customer_curated"))["email"]) == [
        "Alice@test.com",
        "Erin@test.com",
    ]
    ml = _ml(lakehouse).sort("serialNumber", "sensorReadingTime", "user")
    assert ml.select("sensorReadingTime", "serialNumber", "user", "x").rows() == [
        (T1, "S-A", "Alice@test.com", 1.0),
        (T2, "S-A", "Alice@test.com", 2.0),
        (T2, "S-A", "Erin@test.com", 4.0),
        (T2, "S-E", "Alice@test.com", 2.0),
        (T2, "S-E", "Erin@test.com", 4.0),
    ]
    cross = next(c for c in summary["checks"] if c["name"] == "cross_customer_pairs")
    assert (cross["passed"], cross["severity"]) == (False, "WARN")
    assert cross["summary"] == "2 rows pair one customer's Step Trainer with another customer's phone"


def test_same_customer_join_keeps_only_owners_pairs(tiny_landing: Path, tmp_path: Path):
    lakehouse = tmp_path / "lakehouse"
    summary = run_lakehouse(
        landing_uri=str(tiny_landing), lakehouse_uri=str(lakehouse), ml_join="same_customer"
    )

    assert summary["success"], summary["errors"]
    ml = _ml(lakehouse).sort("serialNumber", "sensorReadingTime")
    assert ml.select("sensorReadingTime", "serialNumber", "user").rows() == [
        (T1, "S-A", "Alice@test.com"),
        (T2, "S-A", "Alice@test.com"),
        (T2, "S-E", "Erin@test.com"),
    ]
    cross = next(c for c in summary["checks"] if c["name"] == "cross_customer_pairs")
    assert (cross["passed"], cross["summary"]) == (
        True,
        "0 rows pair one customer's Step Trainer with another customer's phone",
    )
