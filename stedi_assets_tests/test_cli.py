"""The `stedi` command as other tools use it: a subprocess, its JSON and its exit status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stedi_assets_tests.helpers import (
    REFERENCE_CROSS_CUSTOMER_PAIRS,
    REFERENCE_EXPECTATIONS,
    reference_counts,
)

STEDI = str(Path(sys.executable).parent / "stedi")
REPO = Path(__file__).resolve().parents[1]


def stedi(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Runs the console script with only the settings the test gives it."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("STEDI_") and k != "DAGSTER_HOME"}
    return subprocess.run(
        [STEDI, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**inherited, **(env or {})},
    )


def stedi_run(landing: Path, lakehouse: Path, *args: str, env: dict[str, str] | None = None):
    """`stedi run` of a landing folder into a lakehouse folder."""
    return stedi("run", "--landing", str(landing), "--lakehouse", str(lakehouse), *args, env=env)


@pytest.fixture(scope="module")
def reference_run(reference_landing: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    lakehouse = tmp_path_factory.mktemp("reference") / "lakehouse"
    # a module fixture is set up before the conftest's per-test environment, so the test config
    # folder is given here: the generated pseudonym key must not land in the user's own config
    done = stedi(
        "run",
        "--landing",
        str(reference_landing),
        "--lakehouse",
        str(lakehouse),
        "--expectations",
        REFERENCE_EXPECTATIONS,
        "--json",
        env={"XDG_CONFIG_HOME": str(tmp_path_factory.getbasetemp() / "config")},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout), lakehouse


@pytest.mark.reference
def test_reference_counts_exactly(reference_run):
    summary, lakehouse = reference_run
    assert summary["success"] is True
    assert {name: info["rows"] for name, info in summary["tables"].items()} == reference_counts()
    assert summary["tables"]["customer_trusted"]["uri"] == str(
        lakehouse.absolute() / "trusted" / "customer_trusted"
    )


@pytest.mark.reference
def test_reference_checks(reference_run):
    summary, _ = reference_run
    checks = {(c["asset"], c["name"]): c for c in summary["checks"]}
    assert len(checks) == 45
    failing_errors = [k for k, c in checks.items() if c["severity"] == "ERROR" and not c["passed"]]
    assert failing_errors == []
    assert set(checks[("machine_learning_curated", "row_count")]) == {
        "asset",
        "name",
        "passed",
        "severity",
        "summary",
    }
    cross = checks[("machine_learning_curated", "cross_customer_pairs")]
    assert (cross["passed"], cross["severity"]) == (False, "WARN")
    assert cross["summary"] == (
        f"{REFERENCE_CROSS_CUSTOMER_PAIRS} rows pair one customer's Step Trainer "
        "with another customer's phone"
    )


@pytest.mark.reference
def test_sql_over_reference_lakehouse(reference_run):
    _, lakehouse = reference_run
    done = stedi(
        "sql",
        "select count(*) as n, count(distinct subject_id) as subjects, "
        "count(distinct serialNumber) as devices from machine_learning_curated",
        "--lakehouse",
        str(lakehouse),
        "--csv",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "n,subjects,devices\n43681,482,482\n"


@pytest.mark.reference
def test_same_customer_join_from_environment(reference_landing: Path, tmp_path: Path):
    done = stedi(
        "run",
        "--landing",
        str(reference_landing),
        "--lakehouse",
        str(tmp_path / "lakehouse"),
        "--select",
        "*",
        "--json",
        env={"STEDI_ML_JOIN": "same_customer", "STEDI_EXPECTATIONS_FILE": REFERENCE_EXPECTATIONS},
    )
    summary = json.loads(done.stdout)
    assert done.returncode == 0, summary["errors"]
    assert (
        summary["tables"]["machine_learning_curated"]["rows"]
        == reference_counts("same_customer")["machine_learning_curated"]
    )
    cross = next(c for c in summary["checks"] if c["name"] == "cross_customer_pairs")
    assert cross["passed"] is True


@pytest.mark.slow
def test_generate_then_run_then_sql(tmp_path: Path):
    landing, lakehouse = tmp_path / "landing", tmp_path / "lakehouse"
    generated = stedi("generate", "--out", str(landing), "--customers", "40", "--seed", "3")
    assert generated.returncode == 0, generated.stderr
    customer_files = list((landing / "customer").glob("*.json"))
    assert sum(len(f.read_text().splitlines()) for f in customer_files) == 40

    ran = stedi("run", "--landing", str(landing), "--lakehouse", str(lakehouse))
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "customer_landing" in ran.stdout and "consent_given" in ran.stdout

    queried = stedi(
        "sql", "select count(*) as n from customer_landing", "--lakehouse", str(lakehouse), "--csv"
    )
    assert queried.returncode == 0, queried.stderr
    assert queried.stdout == "n\n40\n"


@pytest.mark.slow
def test_run_on_missing_landing_fails_with_one_readable_line(tmp_path: Path):
    done = stedi("run", "--landing", str(tmp_path / "absent"), "--lakehouse", str(tmp_path / "lh"), "--json")

    assert done.returncode == 1
    summary = json.loads(done.stdout)
    assert summary["success"] is False
    assert summary["errors"][0].endswith(
        f"Landing folder {tmp_path / 'absent' / 'accelerometer'} does not exist. Put the accelerometer "
        f"JSON-lines files there, point --landing / STEDI_LANDING_URI at the landing root, or run "
        f"`stedi generate --out {tmp_path / 'absent'}` for sample data."
    )
    assert "Traceback" not in done.stdout


@pytest.mark.slow
def test_run_records_to_dagster_home(tiny_landing: Path, tmp_path: Path):
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    home = tmp_path / "dagster_home"
    done = stedi_run(tiny_landing, tmp_path / "lh", "--json", env={"DAGSTER_HOME": str(home)})
    assert done.returncode == 0, done.stderr[-2000:]
    run_id = json.loads(done.stdout)["run_id"]
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        run = instance.get_run_by_id(run_id)
        assert (run.job_name, run.is_success) == ("stedi_lakehouse_job", True)
        assert run.tags["stedi/launched_by"] == "stedi run"
        event = instance.get_latest_materialization_event(dg.AssetKey("machine_learning_curated"))
        assert event.run_id == run_id


def test_sql_without_tables_says_so(tmp_path: Path):
    done = stedi("sql", "select 1", "--lakehouse", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr == f"stedi sql: no tables under {tmp_path}; run `stedi run` first\n"


def test_run_with_a_selection_matching_nothing_is_a_usage_error(tmp_path: Path):
    done = stedi("run", "--select", "key:no_such_table", "--lakehouse", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip() == "stedi run: invalid --select 'key:no_such_table': it matches no asset"


@pytest.mark.parametrize(
    ("days", "message"),
    [
        ("June", "'June' is not a day as YYYY-MM-DD (use START..END)"),
        ("2021-12-31..2022-01-02", "2021-12-31 is outside the partitions 2022-01-01.."),
        ("2022-06-19..2022-06-18", "2022-06-19..2022-06-18 ends before it starts"),
    ],
)
def test_run_with_days_that_are_not_partitions_is_a_usage_error(tmp_path: Path, days: str, message: str):
    done = stedi("run", "--partitions", days, "--lakehouse", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.startswith(f"stedi run: invalid --partitions {days!r}: {message}")
    assert done.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []  # nothing ran


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("STEDI_ML_JOIN", "bogus", "STEDI_ML_JOIN='bogus': Input should be 'seed' or 'same_customer'"),
        (
            "STEDI_RETENTION_HOURS",
            "-5",
            "STEDI_RETENTION_HOURS='-5': Input should be greater than or equal to 0",
        ),
        ("STEDI_MAX_REJECT_RATE", "lots", "STEDI_MAX_REJECT_RATE='lots': Input should be a valid number"),
    ],
)
def test_a_bad_setting_in_the_environment_stops_the_run_before_it_starts_with_one_line(
    tiny_landing: Path, tmp_path: Path, variable: str, value: str, message: str
):
    home = tmp_path / "dagster_home"
    done = stedi_run(tiny_landing, tmp_path / "lh", env={variable: value, "DAGSTER_HOME": str(home)})
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith(f"stedi run: invalid settings: {message}")
    assert done.stderr.count("\n") == 1
    assert not (tmp_path / "lh").exists()
    assert not (home / "history").exists()  # no run was recorded


def test_a_failing_run_prints_the_summary_and_one_line_per_failure_and_nothing_else(tmp_path: Path):
    done = stedi_run(tmp_path / "nowhere", tmp_path / "lh")
    assert done.returncode == 1
    assert done.stderr == ""
    errors = [line for line in done.stdout.splitlines() if line.startswith("error: ")]
    assert [line.split(":")[1].strip() for line in errors] == [
        "ingest_accelerometer",
        "ingest_customer",
        "ingest_step_trainer",
    ]
    assert errors[1] == (
        f"error: ingest_customer: Landing folder {tmp_path}/nowhere/customer does not exist. Put the "
        f"customer JSON-lines files there, point --landing / STEDI_LANDING_URI at the landing root, or "
        f"run `stedi generate --out {tmp_path}/nowhere` for sample data."
    )
    assert done.stdout.splitlines()[-1] == "run FAILED"


def test_a_successful_run_writes_nothing_to_stderr(tiny_landing: Path, tmp_path: Path):
    home = tmp_path / "new_dagster_home"  # a new instance: no first-use banner either
    done = stedi_run(tiny_landing, tmp_path / "lh", env={"DAGSTER_HOME": str(home)})
    assert (done.returncode, done.stderr) == (0, "")
    assert (home / "dagster.yaml").read_text() == (REPO / "stedi_assets" / "dagster.yaml").read_text()
    # tables grouped by zone, in the order data flows
    zones = [line.split()[0] for line in done.stdout.split("\n\n")[0].splitlines()[1:]]
    assert zones == ["privacy"] + ["landing"] * 3 + ["quarantine"] * 3 + ["trusted"] * 3 + ["curated"] * 2
