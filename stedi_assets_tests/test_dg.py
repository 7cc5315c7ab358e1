"""The `dg` command line serves the same code location: checks its definitions and launches runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from stedi_assets_tests.helpers import TINY_DAY

REPO = Path(__file__).resolve().parents[1]
DG = Path(sys.executable).parent / "dg"

pytestmark = pytest.mark.slow


def dg(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("STEDI_", "DAGSTER_HOME"))}
    return subprocess.run(
        [DG, *args], cwd=REPO, capture_output=True, text=True, timeout=300, env={**inherited, **env}
    )


def test_dg_checks_the_definitions(tmp_path: Path):
    done = dg("check", "defs", env={"DAGSTER_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "All definitions loaded successfully." in done.stdout + done.stderr


def test_dg_launches_the_lakehouse_over_a_range_of_days_in_one_run(tiny_landing: Path, tmp_path: Path):
    lakehouse = tmp_path / "lakehouse"
    env = {
        "DAGSTER_HOME": str(tmp_path / "home"),
        "STEDI_LANDING_URI": str(tiny_landing),
        "STEDI_LAKEHOUSE_URI": str(lakehouse),
    }
    (tmp_path / "home").mkdir()
    done = dg(
        "launch", "--job", "stedi_lakehouse_job", "--partition-range", f"{TINY_DAY}...{TINY_DAY}", env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert pl.read_delta(str(lakehouse / "curated" / "machine_learning_curated")).height == 5
    assert pl.read_delta(str(lakehouse / "trusted" / "customer_trusted")).height == 3
