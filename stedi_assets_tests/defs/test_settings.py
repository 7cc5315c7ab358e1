"""Typed settings: run config first, then STEDI_* variables, then defaults; bad values refused."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from stedi_assets.cli import run_config, run_lakehouse, summarize
from stedi_assets.definitions import defs
from stedi_assets.defs.partitions import range_tags
from stedi_assets.defs.settings import StediSettings
from stedi_assets.rules.transforms import MlJoin
from stedi_assets.storage.resources import InvalidSettings, StediStorage
from stedi_assets_tests.helpers import TINY_DAY


def test_defaults_without_run_config_or_environment():
    settings, storage = StediSettings(), StediStorage()
    assert (settings.ml_join, settings.max_reject_rate, settings.expectations_file) == (
        MlJoin.seed,
        0.05,
        None,
    )
    assert (storage.landing_uri, storage.lakehouse_uri) == ("data/landing", "lakehouse")


def test_environment_fills_what_run_config_leaves_out(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("STEDI_ML_JOIN", "same_customer")
    monkeypatch.setenv("STEDI_MAX_REJECT_RATE", "0.25")
    monkeypatch.setenv("STEDI_LAKEHOUSE_URI", "s3://from-env/lh")
    monkeypatch.setenv("STEDI_LANDING_URI", "")

    settings = StediSettings(max_reject_rate=0.5)
    storage = StediStorage(landing_uri="given")
    assert (settings.ml_join, settings.max_reject_rate) == (MlJoin.same_customer, 0.5)
    assert (storage.landing_uri, storage.lakehouse_uri) == ("given", "s3://from-env/lh")


def test_a_bad_environment_value_names_the_setting(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("STEDI_MAX_REJECT_RATE", "lots")
    with pytest.raises(InvalidSettings) as raised:
        StediSettings()
    assert str(raised.value) == (
        "STEDI_MAX_REJECT_RATE='lots': Input should be a valid number, unable to parse string as a number"
    )


def test_run_config_reaches_every_resource(tiny_landing: Path, tmp_path: Path, monkeypatch):
    """Launchpad-style run config configures the landing reader, the IO manager and the rules."""
    monkeypatch.setenv("STEDI_LAKEHOUSE_URI", str(tmp_path / "not-this-one"))
    lakehouse = tmp_path / "configured"
    result = defs.resolve_job_def("stedi_lakehouse_job").execute_in_process(
        run_config={
            "resources": {
                "storage": {"config": {"landing_uri": str(tiny_landing), "lakehouse_uri": str(lakehouse)}},
                "settings": {"config": {"ml_join": "same_customer"}},
            }
        },
        tags=range_tags(TINY_DAY, TINY_DAY),  # as the launchpad sets for a chosen range of days
    )

    assert result.success
    assert not (tmp_path / "not-this-one").exists()
    ml = next(
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key.path == ["machine_learning_curated"]
    )
    assert ml.materialization.metadata["dagster/row_count"].value == 3
    assert ml.materialization.metadata["ml_join"].value == "same_customer"


def test_environment_reaches_a_run(tiny_landing: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("STEDI_ML_JOIN", "same_customer")
    summary = run_lakehouse(landing_uri=str(tiny_landing), lakehouse_uri=str(tmp_path / "lh"))
    assert summary["tables"]["machine_learning_curated"]["rows"] == 3


def test_an_unknown_ml_join_is_refused_before_the_run_starts(tmp_path: Path):
    instance = dg.DagsterInstance.ephemeral()
    with pytest.raises(dg.DagsterInvalidConfigError, match="ml_join"):
        defs.resolve_job_def("stedi_lakehouse_job").execute_in_process(
            run_config=run_config(ml_join="bogus", lakehouse_uri=str(tmp_path)), instance=instance
        )
    assert instance.get_runs() == []


def test_run_config_sends_each_setting_to_its_resource():
    config = run_config("INFO", landing_uri="l", lakehouse_uri=None, ml_join="seed", max_reject_rate=0.1)
    assert config == {
        "resources": {
            "storage": {"config": {"landing_uri": "l"}},
            "settings": {"config": {"ml_join": "seed", "max_reject_rate": 0.1}},
        },
        "loggers": {"console": {"config": {"log_level": "INFO"}}},
    }


def test_run_config_takes_enum_members_as_their_values():
    config = run_config(ml_join=MlJoin.same_customer)
    assert config["resources"]["settings"]["config"] == {"ml_join": "same_customer"}


def test_a_bad_value_in_run_config_fails_the_run_at_its_start_with_one_line(tmp_path: Path):
    """Launched from the launchpad: a value of the right type but out of range fails the run as its
    resources start (before any step, never retried), and the summary says which value in one line."""
    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def("stedi_ingest_job").execute_in_process(
        run_config=run_config(max_reject_rate=5.0, lakehouse_uri=str(tmp_path)),
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    assert not any(event.is_step_start for event in result.all_events)
    assert summarize(result)["errors"] == [
        "run: InvalidSettings: max_reject_rate=5.0: Input should be less than or equal to 1"
    ]
