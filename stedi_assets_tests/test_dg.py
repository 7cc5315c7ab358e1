"""The `dg` and `dagster` command lines serve the same code location from the repository root:
`dg` checks its definitions and launches runs; `dagster` lists its jobs and assets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster
import polars as pl
import pytest
from dagster._core.instance.ref import InstanceRef

from stedi_assets.defs.partitions import RANGE_END_TAG, RANGE_START_TAG
from stedi_assets_tests.helpers import T2, TINY_DAY, write_jsonl

NEXT_DAY = T2 + 86_400_000

REPO = Path(__file__).resolve().parents[1]
DG = Path(sys.executable).parent / "dg"
DAGSTER = Path(sys.executable).parent / "dagster"

pytestmark = pytest.mark.slow


def _from_repository_root(
    command: Path, args: tuple[str, ...], env: dict[str, str]
) -> subprocess.CompletedProcess:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("STEDI_", "DAGSTER_HOME"))}
    return subprocess.run(
        [command, *args], cwd=REPO, capture_output=True, text=True, timeout=300, env={**inherited, **env}
    )


def dg(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return _from_repository_root(DG, args, env)


def dagster_command(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return _from_repository_root(DAGSTER, args, env)


def test_the_dagster_command_lists_the_jobs_and_assets_from_the_repository_root(tmp_path: Path):
    """`dagster job list` finds the code location in pyproject.toml's [tool.dagster]; `dagster asset
    list` is given the module, as the README says: Dagster 1.13 reads the pyproject block only for
    the commands that load a workspace (when the bare command starts working, the README changes)."""
    from stedi_assets.definitions import defs

    env = {"DAGSTER_HOME": str(tmp_path)}
    jobs = dagster_command("job", "list", env=env)
    assert jobs.returncode == 0, jobs.stderr[-2000:]
    assert {"stedi_lakehouse_job", "stedi_ingest_job"} <= set(jobs.stdout.split())
    assets = dagster_command("asset", "list", "-m", "stedi_assets.definitions", env=env)
    assert assets.returncode == 0, assets.stderr[-2000:]
    expected = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert set(assets.stdout.split()) == expected
    bare = dagster_command("asset", "list", env=env)
    assert bare.returncode == 2 and "Invalid set of CLI arguments" in bare.stderr


def test_dg_checks_the_definitions(tmp_path: Path):
    done = dg("check", "defs", env={"DAGSTER_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "All definitions loaded successfully." in done.stdout + done.stderr


def test_dg_launches_the_lakehouse_over_a_range_of_days_in_one_run(tiny_landing: Path, tmp_path: Path):
    write_jsonl(
        tiny_landing / "accelerometer" / "accelerometer-2.json",
        [{"user": "Erin@test.com", "timestamp": NEXT_DAY, "x": 1.0, "y": 0.0, "z": 0.0}],
    )
    lakehouse, home = tmp_path / "lakehouse", tmp_path / "home"
    home.mkdir()
    env = {
        "DAGSTER_HOME": str(home),
        "STEDI_LANDING_URI": str(tiny_landing),
        "STEDI_LAKEHOUSE_URI": str(lakehouse),
    }
    days = (TINY_DAY, "2022-06-19")
    done = dg("launch", "--job", "stedi_lakehouse_job", "--partition-range", "...".join(days), env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    with dagster.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        (run,) = instance.get_runs()
        assert run.is_success
        assert (run.tags[RANGE_START_TAG], run.tags[RANGE_END_TAG]) == days
        assert instance.get_materialized_partitions(dagster.AssetKey("accelerometer_trusted")) == set(days)
    trusted = pl.read_delta(str(lakehouse / "trusted" / "accelerometer_trusted"))
    assert sorted(trusted["event_day"].cast(pl.String).unique()) == list(days)
    assert pl.read_delta(str(lakehouse / "curated" / "machine_learning_curated")).height == 5
