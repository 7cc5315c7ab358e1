"""What a crash or a second writer can do to a lakehouse table: real Delta tables, real processes.

The IO manager promises that a write is one overwrite commit, so a table changes whole or not at
all. These tests hold it to that when the writer is SIGKILLed half-way through its data files, when
two processes overwrite the same table at once, and when two `run_lakehouse` runs share a lakehouse.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable
from polars.testing import assert_frame_equal

from stedi_assets.cli import run_lakehouse
from stedi_assets.generate import generate_landing
from stedi_assets.io_manager import open_table, scan_table, write_table
from stedi_assets.resources import StediSettings
from stedi_assets_tests.conftest import make_bucket

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    """The subprocesses get only the settings the test gives them (conftest clears STEDI_* here)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEDI_") and k != "DAGSTER_HOME"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _python(code: str, *args: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _parquet_files(table: Path) -> set[str]:
    return {p.name for p in table.glob("*.parquet")}


def _log_versions(table: Path) -> list[int]:
    """Committed versions: only the NNNN.json names, not delta-rs' temporary _commit_* files."""
    return sorted(int(p.stem) for p in (table / "_delta_log").glob("*.json") if p.stem.isdigit())


def _history_versions(uri: str) -> list[int]:
    return sorted(entry["version"] for entry in open_table(uri).history())


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def table_root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the concurrent writers' tables live: a folder, or a bucket of the S3 test server."""
    if request.param == "local":
        return str(tmp_path / "tables")
    request.getfixturevalue("s3_env")
    bucket = f"race-{uuid.uuid4().hex[:12]}"
    make_bucket(bucket)
    return f"s3://{bucket}/tables"


# Barrier shared by every concurrent script below: signal "ready", wait for the "go" file.
_BARRIER = r"""
import os, sys, time
def wait_for_go(ready, go):
    open(ready, "w").close()
    deadline = time.monotonic() + 60
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            sys.exit("the start signal never came")
        time.sleep(0.0005)
"""


def _start_together(code: str, argvs: list[list[object]], workdir: Path, name: str) -> list[subprocess.Popen]:
    """Starts one process per argv; each warms up, says it is ready, and all start on one signal.

    Every script takes <ready-file> <go-file> as its last two arguments.
    """
    go = workdir / f"{name}-go"
    readies = [workdir / f"{name}-ready-{i}" for i in range(len(argvs))]
    processes = [_python(code, *argv, ready, go) for argv, ready in zip(argvs, readies)]
    deadline = time.monotonic() + 60
    while not all(r.exists() for r in readies):
        crashed = [p for p in processes if p.poll() is not None]
        if crashed or time.monotonic() > deadline:
            for p in processes:
                p.kill()
            details = "\n".join(p.communicate()[1][-2000:] for p in processes)
            pytest.fail(f"{name}: a process died or hung before the start signal:\n{details}")
        time.sleep(0.01)
    go.touch()
    return processes


def _results(processes: list[subprocess.Popen], timeout: float) -> list:
    """The JSON each process printed last; fails with its stderr when it crashed."""
    outputs = []
    for process in processes:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in processes:
                p.kill()
            pytest.fail(f"a process did not finish within {timeout} s")
        assert process.returncode == 0, f"process exited {process.returncode}:\n{stderr[-3000:]}"
        outputs.append(json.loads(stdout.strip().splitlines()[-1]))
    return outputs


def _overlap(windows: list[tuple[float, float]]) -> bool:
    return max(start for start, _ in windows) < min(end for _, end in windows)


# 1. A writer killed half-way through its data files leaves the table as it was.

BIG_WRITER = r"""
import sys
import polars as pl
from stedi_assets.io_manager import write_table

uri, rows = sys.argv[1], int(sys.argv[2])
frame = pl.LazyFrame().select(pl.int_range(0, rows, dtype=pl.Int64).alias("id")).with_columns(
    (pl.col("id") * 2654435761 % 1000003).alias("bucket"),
    pl.col("id").cast(pl.Float64).sqrt().alias("root"),
    (pl.col("id") % 97).cast(pl.String).alias("label"),
)
write_table(uri, frame)
print("committed")
"""

ORIGINAL = pl.DataFrame({"id": [1, 2, 3], "label": ["a", "b", "c"]})


def _written_bytes(table: Path, names: set[str]) -> int:
    sizes = 0
    for name in names:
        try:
            sizes += (table / name).stat().st_size
        except FileNotFoundError:
            pass
    return sizes


@pytest.mark.slow
def test_writer_killed_mid_write_leaves_table_unchanged(tmp_path: Path):
    deadline = time.monotonic() + 55
    rows = 30_000_000  # ~3-4 s and hundreds of MB of Parquet when nothing kills it
    attempts: list[str] = []
    achieved = False
    for attempt in range(3):
        table = tmp_path / f"table-{attempt}"
        uri = str(table)
        write_table(uri, ORIGINAL.lazy())
        assert _log_versions(table) == [0]
        committed_files = _parquet_files(table)

        writer = _python(BIG_WRITER, uri, rows)
        attempt_deadline = min(deadline, time.monotonic() + 25)
        killed = False
        while writer.poll() is None and time.monotonic() < attempt_deadline:
            new_files = _parquet_files(table) - committed_files
            if _written_bytes(table, new_files) > 0 and _log_versions(table) == [0]:
                os.kill(writer.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.005)
        else:
            writer.kill()
        stdout, stderr = writer.communicate(timeout=30)
        orphans = _parquet_files(table) - committed_files
        achieved = killed and writer.returncode == -signal.SIGKILL and _log_versions(table) == [0] and orphans
        if achieved:
            break
        attempts.append(
            f"rows={rows}: exit {writer.returncode}, log {_log_versions(table)}, {len(orphans)} new files, "
            f"stdout {stdout.strip()!r}, stderr {stderr.strip()[-300:]!r}"
        )
        if time.monotonic() > deadline:
            break
        rows *= 2
    if not achieved:
        pytest.fail(
            "never SIGKILLed the writer between its first data bytes and its commit:\n" + "\n".join(attempts)
        )

    # The killed write left data files behind, but none of them is part of the table.
    live_files = {Path(u).name for u in DeltaTable(uri).file_uris()}
    assert live_files == committed_files
    assert not (live_files & orphans)
    assert _log_versions(table) == [0]
    assert DeltaTable(uri).version() == 0
    assert_frame_equal(pl.read_delta(uri).sort("id"), ORIGINAL)
    assert_frame_equal(scan_table(uri).collect().sort("id"), ORIGINAL)

    # The orphans do not get in the way of the next write, and version 0 stays readable.
    replacement = pl.DataFrame({"id": [10, 20], "label": ["x", "y"], "extra": [1.5, 2.5]})
    write_table(uri, replacement.lazy())
    assert DeltaTable(uri).version() == 1
    assert _log_versions(table) == [0, 1]
    assert_frame_equal(pl.read_delta(uri).sort("id"), replacement)
    assert_frame_equal(scan_table(uri, 0).collect().sort("id"), ORIGINAL)
    print(
        f"\nSIGKILL after {len(orphans)} uncommitted data file(s), {_written_bytes(table, orphans)} bytes; "
        f"attempts before: {attempts}"
    )


# 2. Two processes overwriting one table: every commit is one whole frame.

WRITER = (
    _BARRIER
    + r"""
import json
import dagster as dg
import polars as pl
from deltalake.exceptions import DeltaError
from stedi_assets.io_manager import write_table

writer = int(sys.argv[1])
jobs = json.loads(sys.argv[2])  # [[uri, seq], ...]
warm_uri, sync, peers, ready, go = sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6], sys.argv[7]

def lockstep(job):  # waits until every writer is about to start job number `job`, so they collide
    open(os.path.join(sync, f"{job}-{writer}"), "w").close()
    deadline = time.monotonic() + 30
    while sum(1 for name in os.listdir(sync) if name.startswith(f"{job}-")) < peers:
        if time.monotonic() > deadline:
            sys.exit(f"the other writers never reached job {job}")
        time.sleep(0.0002)

def frame(seq):
    rows = 2000 + 100 * writer + seq
    return pl.LazyFrame().select(pl.int_range(0, rows, dtype=pl.Int64).alias("row")).with_columns(
        pl.lit(writer, dtype=pl.Int64).alias("writer"), pl.lit(seq, dtype=pl.Int64).alias("seq")
    )

write_table(warm_uri, frame(-1))  # imports and the Delta writer warmed up before the start
wait_for_go(ready, go)
outcomes = []
for job, (uri, seq) in enumerate(jobs):
    lockstep(job)
    started = time.time()
    try:
        write_table(uri, frame(seq))
        outcome = {"ok": True}
    except Exception as error:
        cause = error.__cause__
        outcome = {
            "ok": False,
            "error": f"{type(error).__module__}.{type(error).__qualname__}",
            "is_dagster_failure": isinstance(error, dg.Failure),
            "message": str(error),
            "cause": None if cause is None else f"{type(cause).__module__}.{type(cause).__qualname__}",
            "cause_is_delta_error": isinstance(cause, DeltaError),
        }
    outcome.update(uri=uri, writer=writer, seq=seq, started=started, ended=time.time())
    outcomes.append(outcome)
print(json.dumps(outcomes))
"""
)


def _rows_of(writer: int, seq: int) -> int:
    return 2000 + 100 * writer + seq


def _single_frame(frame: pl.DataFrame, where: str) -> tuple[int, int]:
    """The (writer, seq) of a frame that must be exactly one whole written frame."""
    pairs = frame.select("writer", "seq").unique().rows()
    assert len(pairs) == 1, (
        f"{where} mixes {len(pairs)} writes: {frame.group_by('writer', 'seq').len().rows()}"
    )
    writer, seq = pairs[0]
    assert frame.height == _rows_of(writer, seq), (
        f"{where}: {frame.height} rows, wrote {_rows_of(writer, seq)}"
    )
    assert frame["row"].sort().to_list() == list(range(frame.height)), f"{where}: rows duplicated or missing"
    return writer, seq


def _run_writers(workdir: Path, jobs_of: dict[int, list[tuple[str, int]]], name: str) -> list[dict]:
    sync = workdir / f"{name}-sync"
    sync.mkdir()
    argvs = [
        [writer, json.dumps(jobs), workdir / f"{name}-warm-{writer}", sync, len(jobs_of)]
        for writer, jobs in jobs_of.items()
    ]
    outcomes = [o for result in _results(_start_together(WRITER, argvs, workdir, name), 60) for o in result]
    return outcomes


def _assert_clean_failures(outcomes: list[dict]) -> None:
    for failed in (o for o in outcomes if not o["ok"]):
        assert failed["is_dagster_failure"], failed
        assert failed["cause_is_delta_error"], failed
        assert failed["uri"] in failed["message"] and "\n" not in failed["message"], failed


@pytest.mark.slow
def test_concurrent_overwrites_commit_whole_frames(tmp_path: Path, table_root: str):
    writes = 10
    for attempt in range(3):
        uri = f"{table_root}/shared-{attempt}"
        write_table(uri, pl.LazyFrame({"row": [0], "writer": [0], "seq": [0]}).cast(pl.Int64))
        jobs = {writer: [(uri, seq) for seq in range(writes)] for writer in (1, 2)}
        outcomes = _run_writers(tmp_path, jobs, f"overwrite-{attempt}")
        windows = [
            (
                min(o["started"] for o in outcomes if o["writer"] == w),
                max(o["ended"] for o in outcomes if o["writer"] == w),
            )
            for w in jobs
        ]
        if _overlap(windows):
            break
    else:
        pytest.fail(f"the two writers never ran at the same time: {windows}")

    succeeded = {(o["writer"], o["seq"]) for o in outcomes if o["ok"]}
    failed = [o for o in outcomes if not o["ok"]]
    _assert_clean_failures(outcomes)

    # The table opens, and its latest version is one whole frame that a writer reported as written.
    table = open_table(uri)
    latest = scan_table(uri).collect()
    assert _single_frame(latest, "latest version") in succeeded

    # Every version is one whole frame; each successful write is exactly one version; no failed one is.
    versions = _history_versions(uri)
    assert versions == list(range(table.version() + 1))
    assert len(versions) == 1 + len(succeeded)
    committed = [_single_frame(scan_table(uri, v).collect(), f"version {v}") for v in versions[1:]]
    assert sorted(committed) == sorted(succeeded)
    interleavings = sum(1 for a, b in itertools.pairwise(committed) if a[0] != b[0])
    print(
        f"\n{len(succeeded)} of {2 * writes} overwrites committed, {len(failed)} failed "
        f"({sorted({(o['cause'], o['message']) for o in failed})[:1]}); "
        f"versions 0..{table.version()}, writer changes between consecutive versions: {interleavings}"
    )


@pytest.mark.slow
def test_concurrent_first_writes_of_a_new_table_commit_whole_frames(tmp_path: Path, table_root: str):
    tables = 20
    for attempt in range(3):
        root = f"{table_root}/round-{attempt}"
        jobs = {writer: [(f"{root}/t{k}", k) for k in range(tables)] for writer in (1, 2)}
        outcomes = _run_writers(tmp_path, jobs, f"create-{attempt}")
        _assert_clean_failures(outcomes)
        mixed = []
        for k in range(tables):
            uri = f"{root}/t{k}"
            frame = scan_table(uri).collect()
            pairs = frame.group_by("writer", "seq").len().sort("writer").rows()
            if len(pairs) != 1 or frame.height != _rows_of(*pairs[0][:2]):
                reported = [o["ok"] for o in outcomes if o["uri"] == uri]
                mixed.append(
                    f"t{k}: version {open_table(uri).version()} holds {pairs}; writers reported ok={reported}"
                )
        if mixed:
            break
    # Whatever the interleaving, each new table must be one whole frame from a writer that succeeded.
    assert not mixed, f"{len(mixed)} of {tables} tables mix two writes:\n" + "\n".join(mixed)
    for o in outcomes:
        frame = scan_table(o["uri"]).collect()
        _single_frame(frame, o["uri"])


# 3. Two Dagster runs materializing the same assets into one lakehouse.

RUNNER = (
    _BARRIER
    + r"""
import json
from stedi_assets.cli import run_lakehouse
from stedi_assets.resources import StediSettings
from stedi_assets_tests.conftest import make_bucket
import stedi_assets.checks, stedi_assets.definitions  # the asset graph is built before the start

landing, lakehouse, ready, go = sys.argv[1:5]
wait_for_go(ready, go)
started = time.time()
summary = run_lakehouse(StediSettings(landing_uri=landing, lakehouse_uri=lakehouse))
summary["window"] = [started, time.time()]
print(json.dumps(summary, default=str))
"""
)


def _tables(lakehouse: Path) -> dict[str, Path]:
    return {p.name: p for p in lakehouse.glob("*/*") if (p / "_delta_log").is_dir()}


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(frame.columns, nulls_last=True)


def _checks(summary: dict) -> set[tuple]:
    return {(c["asset"], c["name"], c["passed"], c["severity"], c["summary"]) for c in summary["checks"]}


@pytest.mark.slow
@pytest.mark.parametrize("prefilled", [True, False], ids=["existing-lakehouse", "empty-lakehouse"])
def test_concurrent_runs_leave_clean_tables(tmp_path: Path, prefilled: bool):
    """Two runs materialize the same lakehouse at once (the schedule firing while someone runs
    `stedi run`), over tables a first run created or over an empty lakehouse, where both create
    every table."""
    landing = tmp_path / "landing"
    generate_landing(landing, customers=60, seed=11)
    reference_lakehouse, shared = tmp_path / "reference", tmp_path / "shared"
    reference = run_lakehouse(StediSettings(landing_uri=str(landing), lakehouse_uri=str(reference_lakehouse)))
    assert reference["success"], reference["errors"]
    if prefilled:
        seed = run_lakehouse(StediSettings(landing_uri=str(landing), lakehouse_uri=str(shared)))
        assert seed["success"], seed["errors"]
    expected = {
        name: _sorted(pl.read_delta(str(path))) for name, path in _tables(reference_lakehouse).items()
    }
    assert len(expected) == len(reference["tables"]) == 11

    summaries = _results(
        _start_together(RUNNER, [[landing, shared], [landing, shared]], tmp_path, "runs"), timeout=120
    )
    assert _overlap([tuple(s["window"]) for s in summaries]), [s["window"] for s in summaries]

    for summary in summaries:
        if summary["success"]:
            assert _checks(summary) == _checks(reference)
        else:  # a clean failure: one readable line per failed step, no traceback
            assert summary["errors"], summary["checks"]
            for error in summary["errors"]:
                assert error.strip() and "\n" not in error and "Traceback" not in error, error

    tables = _tables(shared)
    assert set(tables) == set(expected)
    for name, path in tables.items():
        uri = str(path)
        assert_frame_equal(_sorted(scan_table(uri).collect()), expected[name], check_dtypes=True)
        # Every write was of the same data: each version is that whole table, one per materialization.
        versions = _history_versions(uri)
        materialized = sum(1 for s in summaries if name in s["tables"])
        assert versions == list(range(prefilled + materialized)), (name, versions, materialized)
        for version in versions:
            assert_frame_equal(_sorted(scan_table(uri, version).collect()), expected[name])
    print(
        "\nconcurrent runs: "
        + "; ".join(
            f"success={s['success']} tables={len(s['tables'])} errors={s['errors']}" for s in summaries
        )
    )
