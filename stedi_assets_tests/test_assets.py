"""The whole graph materialized in process into a temporary lakehouse."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from deltalake import DeltaTable
from polars.testing import assert_frame_equal

from stedi_assets.checks import all_checks
from stedi_assets.cli import run_lakehouse
from stedi_assets.definitions import all_assets, build_resources
from stedi_assets.resources import StediSettings
from stedi_assets_tests.conftest import T1, T2


def _read(lakehouse: Path, zone: str, name: str) -> pl.DataFrame:
    return pl.read_delta(str(lakehouse / zone / name))


def test_tiny_landing_gives_exact_tables(tiny_landing: Path, tmp_path: Path):
    lakehouse = tmp_path / "lakehouse"
    summary = run_lakehouse(StediSettings(landing_uri=str(tiny_landing), lakehouse_uri=str(lakehouse)))

    assert summary["success"], summary["errors"]
    rows = {name: info["rows"] for name, info in summary["tables"].items()}
    assert rows == {
        "customer_landing": 5,
        "accelerometer_landing": 4,
        "step_trainer_landing": 4,
        "customer_rejects": 0,
        "accelerometer_rejects": 0,
        "step_trainer_rejects": 0,
        "customer_trusted": 3,
        "accelerometer_trusted": 3,
        "customer_curated": 2,
        "step_trainer_trusted": 3,
        "machine_learning_curated": 5,
    }
    assert sorted(_read(lakehouse, "trusted", "customer_trusted")["email"]) == [
        "Alice@test.com",
        "Carol@test.com",
        "Erin@test.com",
    ]
    assert sorted(_read(lakehouse, "curated", "customer_curated")["email"]) == [
        "Alice@test.com",
        "Erin@test.com",
    ]
    ml = _read(lakehouse, "curated", "machine_learning_curated").sort(
        "serialNumber", "sensorReadingTime", "user"
    )
    assert ml.select("sensorReadingTime", "serialNumber", "user", "x").rows() == [
        (T1, "S-A", "Alice@test.com", 1.0),
        (T2, "S-A", "Alice@test.com", 2.0),
        (T2, "S-A", "Erin@test.com", 4.0),
        (T2, "S-E", "Alice@test.com", 2.0),
        (T2, "S-E", "Erin@test.com", 4.0),
    ]
    cross = next(c for c in summary["checks"] if c["name"] == "cross_customer_pairs")
    assert (cross["passed"], cross["severity"]) == (False, "WARN")
    assert cross["summary"].startswith("2 rows")


def test_same_customer_join_keeps_only_owners_pairs(tiny_landing: Path, tmp_path: Path):
    lakehouse = tmp_path / "lakehouse"
    settings = StediSettings(
        landing_uri=str(tiny_landing), lakehouse_uri=str(lakehouse), ml_join="same_customer"
    )
    summary = run_lakehouse(settings)

    assert summary["success"], summary["errors"]
    ml = _read(lakehouse, "curated", "machine_learning_curated").sort("serialNumber", "sensorReadingTime")
    assert ml.select("sensorReadingTime", "serialNumber", "user").rows() == [
        (T1, "S-A", "Alice@test.com"),
        (T2, "S-A", "Alice@test.com"),
        (T2, "S-E", "Erin@test.com"),
    ]
    cross = next(c for c in summary["checks"] if c["name"] == "cross_customer_pairs")
    assert cross["passed"]


def test_materialization_metadata(tiny_landing: Path, tmp_path: Path):
    lakehouse = tmp_path / "lakehouse"
    result = dg.materialize(
        [*all_assets, *all_checks],
        resources=build_resources(StediSettings(landing_uri=str(tiny_landing), lakehouse_uri=str(lakehouse))),
    )
    events = {
        e.asset_key.to_user_string(): e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    trusted = events["customer_trusted"]
    assert trusted["dagster/row_count"].value == 3
    assert trusted["table_uri"].value == str(lakehouse / "trusted" / "customer_trusted")
    assert trusted["delta_version"].value == 0
    columns = [c.name for c in trusted["dagster/column_schema"].schema.columns]
    assert columns[:2] == ["customerName", "email"]
    preview = trusted["preview"].value
    assert preview.splitlines()[0].startswith("| customerName | email |")
    assert len(preview.splitlines()) == 2 + 3
    assert events["machine_learning_curated"]["ml_join"].value == "seed"
    landing_columns = [c.name for c in events["customer_landing"]["dagster/column_schema"].schema.columns]
    assert landing_columns[-3:] == ["_source_file", "_line_number", "_ingested_at"]


def test_rerun_overwrites_and_is_idempotent(generated_landing: Path, tmp_path: Path):
    lakehouse = tmp_path / "lakehouse"
    settings = StediSettings(landing_uri=str(generated_landing), lakehouse_uri=str(lakehouse))
    first = run_lakehouse(settings)
    before = {name: pl.read_delta(info["uri"]) for name, info in first["tables"].items()}
    second = run_lakehouse(settings)

    assert first["success"] and second["success"]
    assert first["tables"] == second["tables"]
    for name, info in second["tables"].items():
        assert DeltaTable(info["uri"]).version() == 1, name
        assert_frame_equal(pl.read_delta(info["uri"]), before[name], check_row_order=False)
    error_checks = [c for c in second["checks"] if c["severity"] == "ERROR"]
    assert error_checks and all(c["passed"] for c in error_checks)


def test_failing_blocking_check_stops_downstream(tiny_landing: Path, tmp_path: Path):
    lakehouse = tmp_path / "lakehouse"
    settings = StediSettings(landing_uri=str(tiny_landing), lakehouse_uri=str(lakehouse))
    assert run_lakehouse(settings)["success"]
    trusted_uri = str(lakehouse / "trusted" / "customer_trusted")
    tampered = pl.read_delta(trusted_uri).with_columns(
        pl.when(pl.col("email") == "Carol@test.com")
        .then(None)
        .otherwise(pl.col("shareWithResearchAsOfDate"))
        .alias("shareWithResearchAsOfDate")
    )
    tampered.write_delta(trusted_uri, mode="overwrite")
    accel_version = DeltaTable(str(lakehouse / "trusted" / "accelerometer_trusted")).version()

    trusted = dg.AssetSelection.assets("customer_trusted")
    downstream_and_checks = (trusted.downstream() - trusted) | dg.AssetSelection.checks_for_assets(
        "customer_trusted"
    )
    summary = run_lakehouse(settings, select=downstream_and_checks)

    consent = next(c for c in summary["checks"] if c["name"] == "consent_given")
    assert consent["passed"] is False
    assert "1 trusted customers without current research consent" in consent["summary"]
    assert not summary["success"]
    assert "accelerometer_trusted" not in summary["tables"]
    assert DeltaTable(str(lakehouse / "trusted" / "accelerometer_trusted")).version() == accel_version


def test_missing_landing_folder_is_one_clear_error(tmp_path: Path):
    summary = run_lakehouse(
        StediSettings(landing_uri=str(tmp_path / "nowhere"), lakehouse_uri=str(tmp_path / "lh"))
    )

    assert not summary["success"]
    assert summary["tables"] == {}
    assert any(
        f"Landing folder {tmp_path / 'nowhere' / 'customer'} does not exist" in error
        for error in summary["errors"]
    )


def test_run_config_reaches_every_resource(tiny_landing: Path, tmp_path: Path):
    """The launchpad's resources.settings.config configures the IO manager and landing reader too."""
    from stedi_assets.definitions import defs

    lakehouse = tmp_path / "configured"
    job = defs.resolve_job_def("stedi_lakehouse_job")
    config = {"landing_uri": str(tiny_landing), "lakehouse_uri": str(lakehouse), "ml_join": "same_customer"}
    result = job.execute_in_process(run_config={"resources": {"settings": {"config": config}}})

    assert result.success
    ml = pl.read_delta(str(lakehouse / "curated" / "machine_learning_curated"))
    assert ml.height == 3


def test_privacy_guard_refuses_to_publish_a_broken_table():
    """The guard runs inside the asset, so a table that breaks a privacy contract is never written."""
    from stedi_assets import contracts
    from stedi_assets.checks import publish_only_if

    leaked = pl.LazyFrame({"user": ["bob@test.com"]})
    trusted = pl.LazyFrame({"email": ["alice@test.com"]})
    verdict = contracts.MEMBERSHIPS["users_are_trusted_customers"].verdict(leaked, trusted)

    with pytest.raises(dg.Failure) as failure:
        publish_only_if(verdict, "consent")
    assert failure.value.description == (
        "The consent contract is broken, so the table was not published: "
        "1 rows whose user is not a trusted customer"
    )
    assert "bob@test.com" in failure.value.metadata["offending_rows"].value
