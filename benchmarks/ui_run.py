"""A run launched from the web UI against `stedi run`, on the same data (issue 8, point 6).

Starts `dagster dev` on 127.0.0.1 with a DAGSTER_HOME of its own (the project's instance settings,
as `make dev` uses them), then, alternating, on the benchmark's landing data at one scale:

  (a) `stedi run` recorded in that DAGSTER_HOME (two runs: the ingest, then the zones);
  (u) every asset of `stedi_lakehouse_job` materialized as the UI's Materialize button launches it
      (the launchPipelineExecution mutation over the days (a) targeted), timed from the mutation
      until the run has finished: the queue, the run worker's start and its load of the code
      location count, as they do for a user.

Each writes a fresh lakehouse. Prints the medians and (u)/(a); the target is at most 1.5.

    .venv/bin/python -m benchmarks.ui_run --scale 10 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.measure import CommandFailed, measure
from benchmarks.replicas import ensure_scale
from benchmarks.run import DEFAULT_BENCH_DIR, stedi_env
from stedi_assets.cli import JOB
from stedi_assets.defs.partitions import RANGE_END_TAG, RANGE_START_TAG
from stedi_assets.rules.catalog import TABLES
from stedi_assets.storage.lakehouse import Lakehouse
from stedi_assets_tests.helpers import GraphQLError, dagster_dev, finished_run, materialize_from_ui, run_tags

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TARGET = 1.5


def recorded_stedi_run(
    landing: Path, lakehouse: Path, env: dict[str, str]
) -> tuple[float, str, dict[str, int]]:
    """(a): wall seconds, the id of its last run (the zones, whose days (u) targets) and its rows per
    table."""
    command = [str(BIN / "stedi"), "run", "--landing", str(landing), "--lakehouse", str(lakehouse), "--json"]
    sample = measure(command, env=env)
    summary = json.loads(sample.stdout.strip().splitlines()[-1])
    if not summary["success"]:
        raise CommandFailed(f"stedi run failed: {summary.get('errors')}")
    rows = {name: table["rows"] for name, table in summary["tables"].items()}
    return sample.wall_s, summary["run_ids"][-1], rows


def ui_run(
    url: str, landing: Path, lakehouse: Path, days: tuple[str, str], expected: dict[str, int]
) -> float:
    """(u): seconds from the Materialize mutation until its run finished successfully, having written
    the same rows as (a): a run that did less would not be a comparison."""
    storage = {"landing_uri": str(landing), "lakehouse_uri": str(lakehouse)}
    start = time.perf_counter()
    run_id, _ = materialize_from_ui(url, JOB, storage, days)
    status = finished_run(url, run_id, timeout=3600, poll=0.1)
    wall = time.perf_counter() - start
    if status != "SUCCESS":
        raise CommandFailed(f"the run launched from the UI ended {status} (run {run_id})")
    written = Lakehouse(str(lakehouse))
    rows = {name: written.rows(written.table_uri(TABLES[name].zone, name)) for name in expected}
    if rows != expected:
        wrong = {name: (rows[name], count) for name, count in expected.items() if rows[name] != count}
        raise CommandFailed(f"the run launched from the UI wrote other rows than stedi run: {wrong}")
    return wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=10, help="times the reference data (default 10)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bench-dir", type=Path, default=Path(DEFAULT_BENCH_DIR))
    parser.add_argument(
        "--reference",
        type=Path,
        default=Path(os.environ.get("STEDI_REFERENCE_DATA", REPO.parent / "shared/stedi-reference/landing")),
    )
    options = parser.parse_args(argv)
    landing, _ = ensure_scale(options.reference, options.bench_dir, options.scale)
    work = Path(tempfile.mkdtemp(prefix="stedi-ui-bench-"))
    home = work / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "stedi_assets" / "dagster.yaml", home / "dagster.yaml")
    env = stedi_env() | {"DAGSTER_HOME": str(home)}  # (a) records into the instance (u) runs in
    walls: dict[str, list[float]] = {"a": [], "u": []}
    try:
        with dagster_dev(home, env) as url:
            for repeat in range(options.repeats):
                wall, run_id, rows = recorded_stedi_run(landing.root, work / f"a-{repeat}", env)
                walls["a"].append(wall)
                tags = run_tags(url, run_id)
                days = tags[RANGE_START_TAG], tags[RANGE_END_TAG]
                walls["u"].append(ui_run(url, landing.root, work / f"u-{repeat}", days, rows))
                print(
                    f"repeat {repeat + 1}: (a) {walls['a'][-1]:.2f} s, (u) {walls['u'][-1]:.2f} s", flush=True
                )
    except (CommandFailed, GraphQLError, RuntimeError, TimeoutError) as error:
        print(f"ui_run: error: {error}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    a, u = statistics.median(walls["a"]), statistics.median(walls["u"])
    verdict = "met" if u / a <= TARGET else "**missed**"
    print(
        f"\n{options.scale}× the reference ({landing.total_lines:,} landing lines), {options.repeats} repeats"
    )
    print("| | command | wall s (median) | min–max s |\n|---|---|---:|---:|")
    for label, what in (("a", "`stedi run`, recorded in DAGSTER_HOME"), ("u", "Materialize from the UI")):
        print(
            f"| ({label}) | {what} | {statistics.median(walls[label]):.2f} | "
            f"{min(walls[label]):.2f}–{max(walls[label]):.2f} |"
        )
    print(f"\n(u)/(a) = {u / a:.2f} (target ≤ {TARGET}: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
