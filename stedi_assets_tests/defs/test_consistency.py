"""Consistent zones after a failure: a consent decision reaches every table before it is published."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from deltalake import DeltaTable

from stedi_assets.cli import run_lakehouse
from stedi_assets.rules import transforms
from stedi_assets_tests.helpers import T2, customer, write_jsonl

PEOPLE = [
    ("trusted", "customer_trusted", "email"),
    ("trusted", "accelerometer_trusted", "user"),
    ("curated", "customer_curated", "email"),
    ("curated", "machine_learning_curated", "user"),
]
DEVICES = [("trusted", "step_trainer_trusted"), ("curated", "machine_learning_curated")]


def _people(lakehouse: Path, zone: str, name: str, column: str) -> set[str]:
    return set(pl.read_delta(str(lakehouse / zone / name))[column].str.to_lowercase())


def _devices(lakehouse: Path, zone: str, name: str) -> set[str]:
    return set(pl.read_delta(str(lakehouse / zone / name))["serialNumber"])


def _alice_withdraws(landing: Path) -> None:
    write_jsonl(
        landing / "customer" / "customer-2.json", [customer("Alice A", "S-A", None, lastUpdateDate=T2)]
    )


def _alice_everywhere(lakehouse: Path) -> bool:
    return all("alice@test.com" in _people(lakehouse, *table) for table in PEOPLE) and all(
        "S-A" in _devices(lakehouse, *table) for table in DEVICES
    )


def test_a_run_failing_after_the_consent_decision_leaves_no_withdrawn_row_anywhere(
    tiny_landing: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    lakehouse = tmp_path / "lakehouse"
    settings = {"landing_uri": str(tiny_landing), "lakehouse_uri": str(lakehouse)}
    assert run_lakehouse(**settings)["success"]
    assert _alice_everywhere(lakehouse)
    _alice_withdraws(tiny_landing)

    def disk_full(*args, **kwargs):
        raise dg.Failure("No space left on device (os error 28)", allow_retries=False)

    monkeypatch.setattr(transforms, "accelerometer_trusted", disk_full)
    summary = run_lakehouse(**settings)

    assert not summary["success"]
    assert summary["errors"] == ["accelerometer_trusted: No space left on device (os error 28)"]
    # accelerometer_trusted, customer_curated, step_trainer_trusted and the training table were not
    # recomputed, yet none of them holds Alice or her device any more
    assert not {"accelerometer_trusted", "customer_curated", "machine_learning_curated"} & set(
        summary["tables"]
    )
    for table in PEOPLE:
        people = _people(lakehouse, *table)
        assert "alice@test.com" not in people and "erin@test.com" in people, table
    for table in DEVICES:
        devices = _devices(lakehouse, *table)
        assert "S-A" not in devices and "S-E" in devices, table
    assert summary["tables"]["customer_trusted"]["rows"] == 2

    # the next run that succeeds leaves the same tables as a run that never failed
    monkeypatch.undo()
    assert run_lakehouse(**settings)["success"]
    assert not any("alice@test.com" in _people(lakehouse, *table) for table in PEOPLE)


def test_when_the_withdrawal_cannot_reach_a_table_the_decision_is_not_published(
    tiny_landing: Path, tmp_path: Path
):
    """Fail closed: if a downstream table cannot be cleaned, customer_trusted keeps its old version
    (and the run says which table), rather than publish a decision the zones do not follow."""
    lakehouse = tmp_path / "lakehouse"
    settings = {"landing_uri": str(tiny_landing), "lakehouse_uri": str(lakehouse)}
    assert run_lakehouse(**settings)["success"]
    trusted_version = DeltaTable(str(lakehouse / "trusted" / "customer_trusted")).version()
    _alice_withdraws(tiny_landing)
    # the step_trainer_trusted table's data file is lost (a broken disk, a bad manual clean-up)
    for data_file in (lakehouse / "trusted" / "step_trainer_trusted").glob("*.parquet"):
        data_file.unlink()

    summary = run_lakehouse(dg.AssetSelection.assets("customer_trusted"), **settings)

    assert not summary["success"]
    assert len(summary["errors"]) == 1 and summary["errors"][0].startswith("customer_trusted: ")
    assert "step_trainer_trusted" in summary["errors"][0]
    assert DeltaTable(str(lakehouse / "trusted" / "customer_trusted")).version() == trusted_version
