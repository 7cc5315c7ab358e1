"""What a crash or a second writer can do to a lakehouse table: real Delta tables, real processes.

`Lakehouse.write` promises one overwrite commit, so a table changes whole or not at all, and a write
that loses a race fails as a transient StorageError instead of being rebased onto the winner. These
tests hold it to that when the writer is SIGKILLed half-way through its data files, when another
process commits first, when two processes overwrite or create the same table at once, and when two
`run_lakehouse` runs share a lakehouse.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError
from polars.testing import assert_frame_equal

from stedi_assets.cli import run_lakehouse
from stedi_assets.generate import generate_landing
from stedi_assets.storage.errors import StorageError, TableMissing
from stedi_assets.storage.lakehouse import Lakehouse

REPO = Path(__file__).resolve().parents[2]
LOST_RACE = "Another writer committed {uri} at the same time; this write was not applied."
# What delta-rs 1.6 raises for the loser of either race (TransactionError::MaxCommitAttempts(0)).
DELTA_LOST_RACE = "Failed to commit transaction: 0"
TABLE_ALREADY_CREATED = "Generic error: A Delta Lake table already exists at that location."


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


def _history_versions(lakehouse: Lakehouse, uri: str) -> list[int]:
    return sorted(entry["version"] for entry in lakehouse.open(uri).history())


# 0. The basics every other test leans on.


def test_table_uris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    assert Lakehouse("lake/").table_uri("trusted", "customer_trusted") == str(
        tmp_path / "lake" / "trusted" / "customer_trusted"
    )
    assert (
        Lakehouse("s3://bucket/prefix/").table_uri("curated", "machine_learning_curated")
        == "s3://bucket/prefix/curated/machine_learning_curated"
    )


def test_missing_table_is_table_missing(lakehouse: Lakehouse):
    uri = lakehouse.table_uri("trusted", "customer_trusted")
    with pytest.raises(TableMissing) as raised:
        lakehouse.scan(uri)

    assert raised.value.message == (
        f"No Delta table at {uri}: materialize that asset first (or check --lakehouse / STEDI_LAKEHOUSE_URI)."
    )
    assert raised.value.transient is False


def test_each_write_is_one_version_and_old_versions_stay_readable(lakehouse: Lakehouse):
    uri = lakehouse.table_uri("landing", "customer_landing")
    first = pl.DataFrame({"id": [1, 2, 3], "label": ["a", "b", "c"]})
    second = pl.DataFrame({"id": [10, 20], "score": [1.5, 2.5]})  # a different schema replaces the old

    lakehouse.write(uri, first.lazy())
    lakehouse.write(uri, second.lazy())

    assert lakehouse.open(uri).version() == 1
    assert _history_versions(lakehouse, uri) == [0, 1]
    assert_frame_equal(lakehouse.scan(uri).collect(), second, check_row_order=False)
    assert_frame_equal(lakehouse.scan(uri, 0).collect(), first, check_row_order=False)
    assert_frame_equal(lakehouse.scan(uri, 1).collect(), second, check_row_order=False)


# 1. A write that another process overtakes fails whole, as a transient error, and is not rebased.

RIVAL = r"""
import sys
import polars as pl
from stedi_assets.storage.environment import S3Options
from stedi_assets.storage.lakehouse import Lakehouse

root, uri = sys.argv[1:3]
Lakehouse(root, S3Options.from_environment()).write(uri, pl.LazyFrame({"id": [99], "writer": ["rival"]}))
"""


def _overtaken(lakehouse: Lakehouse, uri: str) -> pl.LazyFrame:
    """A plan whose rows exist only after another process has committed `uri`.

    The write has read the table (or found none) before it pulls the rows, so it is sure to lose.
    """
    committed = []

    def rival_commits_first(frame: pl.DataFrame) -> pl.DataFrame:
        if not committed:
            rival = _python(RIVAL, lakehouse.root, uri)
            _, stderr = rival.communicate(timeout=60)
            assert rival.returncode == 0, stderr[-3000:]
            committed.append(True)
        return frame

    mine = pl.LazyFrame({"id": [1, 2, 3], "writer": ["me"] * 3})
    return mine.map_batches(rival_commits_first, schema=mine.collect_schema())


@pytest.mark.parametrize("existing", [True, False], ids=["existing-table", "new-table"])
def test_write_overtaken_by_another_writer_fails_whole(lakehouse: Lakehouse, existing: bool):
    uri = lakehouse.table_uri("landing", "customer_landing")
    if existing:
        lakehouse.write(uri, pl.LazyFrame({"id": [0], "writer": ["seed"]}))

    with pytest.raises(StorageError) as raised:
        lakehouse.write(uri, _overtaken(lakehouse, uri))

    assert (raised.value.message, raised.value.transient) == (LOST_RACE.format(uri=uri), True)
    cause = raised.value.__cause__
    if existing:  # the commit after the version the write read is taken
        assert isinstance(cause, CommitFailedError) and str(cause) == DELTA_LOST_RACE
    else:  # the table the write would create exists
        assert str(cause) == TABLE_ALREADY_CREATED
    # The table is the rival's write alone: nothing of the lost write, nothing rebased onto it.
    rival = pl.DataFrame({"id": [99], "writer": ["rival"]})
    assert_frame_equal(lakehouse.scan(uri).collect(), rival)
    assert _history_versions(lakehouse, uri) == ([0, 1] if existing else [0])

    # The caller recomputes and writes again: now it is the next version, whole.
    lakehouse.write(uri, pl.LazyFrame({"id": [1, 2, 3], "writer": ["me"] * 3}))
    assert lakehouse.scan(uri).collect()["writer"].to_list() == ["me"] * 3
    assert _history_versions(lakehouse, uri) == ([0, 1, 2] if existing else [0, 1])


@pytest.mark.parametrize("rebase", [True, False], ids=["rebased", "not-rebased"])
def test_a_partition_replacement_follows_a_rival_commit_only_when_it_may_rebase(
    lakehouse: Lakehouse, rebase: bool
):
    """A replacement recomputed from other tables may follow another writer's commit to other days; one
    computed from the table itself (a landing file's rows replaced in place) must not: it would drop
    that writer's rows on its days."""
    uri = lakehouse.table_uri("landing", "accelerometer_landing")
    day = {"day": ["2022-06-18", "2022-06-19"], "x": [1, 2]}
    lakehouse.commit(lakehouse.stage(uri, pl.LazyFrame(day), ("day",)))
    mine = lakehouse.stage(uri, pl.LazyFrame({"day": ["2022-06-18"], "x": [10]}), ("day",))
    rival = lakehouse.stage(uri, pl.LazyFrame({"day": ["2022-06-19"], "x": [20]}), ("day",))
    lakehouse.commit(rival, append=True)

    if rebase:
        lakehouse.commit(mine, replace_partitions=["2022-06-18"])
        assert sorted(lakehouse.scan(uri).collect()["x"]) == [2, 10, 20]
    else:
        with pytest.raises(StorageError) as raised:
            lakehouse.commit(mine, replace_partitions=["2022-06-18"], rebase=False)
        assert (raised.value.message, raised.value.transient) == (LOST_RACE.format(uri=uri), True)
        assert sorted(lakehouse.scan(uri).collect()["x"]) == [1, 2, 20]


def test_the_log_tells_the_days_a_table_gained_from_those_that_changed(lakehouse: Lakehouse):
    """What the incremental checks and customer_curated start from: from the log alone, the days
    written since a version, and whether those are all days the table did not hold then."""
    uri = lakehouse.table_uri("trusted", "accelerometer_trusted")
    lakehouse.commit(lakehouse.stage(uri, pl.LazyFrame({"day": ["2022-06-18"], "x": [1]}), ("day",)))
    lakehouse.commit(
        lakehouse.stage(uri, pl.LazyFrame({"day": ["2022-06-19"], "x": [2]}), ("day",)), append=True
    )
    assert lakehouse.gained_partitions(uri, 0) == lakehouse.changed_partitions(uri, 0) == {"2022-06-19"}
    assert lakehouse.gained_partitions(uri, 1) == lakehouse.changed_partitions(uri, 1) == set()

    # another row on a day it held at version 1: changed, not gained
    lakehouse.commit(
        lakehouse.stage(uri, pl.LazyFrame({"day": ["2022-06-18"], "x": [3]}), ("day",)), append=True
    )
    assert lakehouse.changed_partitions(uri, 1) == {"2022-06-18"}
    assert lakehouse.gained_partitions(uri, 1) is None
    assert lakehouse.gained_partitions(uri, 0) is None  # 2022-06-19 gained, but 2022-06-18 changed
    # up to a given version (the one a check examines), not the latest: version 2's change is not in it
    assert lakehouse.gained_partitions(uri, 0, 1) == lakehouse.changed_partitions(uri, 0, 1) == {"2022-06-19"}
    assert lakehouse.changed_partitions(uri, 1, 2) == {"2022-06-18"}
    assert lakehouse.changed_partitions(uri, 2, 2) == lakehouse.gained_partitions(uri, 2, 2) == set()
    # a version that cannot be read: nothing is known
    assert lakehouse.gained_partitions(uri, 9) is None and lakehouse.changed_partitions(uri, 9) is None


def test_a_plan_based_on_an_older_version_commits_only_after_it(lakehouse: Lakehouse):
    """Rows computed from the table at version 0 (`based_on`) are not written over version 1."""
    uri = lakehouse.table_uri("landing", "customer_landing")
    lakehouse.write(uri, pl.LazyFrame({"id": [1]}))
    lakehouse.commit(lakehouse.stage(uri, pl.LazyFrame({"id": [2]})), append=True)

    with pytest.raises(StorageError) as raised:
        lakehouse.commit(lakehouse.stage(uri, pl.LazyFrame({"id": [1, 3]}), based_on=0))

    assert (raised.value.message, raised.value.transient) == (LOST_RACE.format(uri=uri), True)
    assert sorted(lakehouse.scan(uri).collect()["id"]) == [1, 2]


# 2. A writer killed half-way through its data files leaves the table as it was.

BIG_WRITER = r"""
import sys
import polars as pl
from stedi_assets.storage.lakehouse import Lakehouse

root, uri, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
frame = pl.LazyFrame().select(pl.int_range(0, rows, dtype=pl.Int64).alias("id")).with_columns(
    (pl.col("id") * 2654435761 % 1000003).alias("bucket"),
    pl.col("id").cast(pl.Float64).sqrt().alias("root"),
    (pl.col("id") % 97).cast(pl.String).alias("label"),
)
Lakehouse(root).write(uri, frame)
print("committed")
"""

ORIGINAL = pl.DataFrame({"id": [1, 2, 3], "label": ["a", "b", "c"]})


def _written_bytes(table: Path, names: set[str]) -> int:
    sizes = 0
    for name in names:
        with contextlib.suppress(FileNotFoundError):  # listed a moment ago, possibly gone since
            sizes += (table / name).stat().st_size
    return sizes


@pytest.mark.slow
def test_writer_killed_mid_write_leaves_table_unchanged(tmp_path: Path):
    lakehouse = Lakehouse(str(tmp_path / "lakehouse"))
    deadline = time.monotonic() + 55
    rows = 30_000_000  # ~3-4 s and hundreds of MB of Parquet when nothing kills it
    attempts: list[str] = []
    achieved = False
    for attempt in range(3):
        uri = lakehouse.table_uri("landing", f"table-{attempt}")
        table = Path(uri)
        lakehouse.write(uri, ORIGINAL.lazy())
        assert _log_versions(table) == [0]
        committed_files = _parquet_files(table)

        writer = _python(BIG_WRITER, lakehouse.root, uri, rows)
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
    live_files = {Path(u).name for u in lakehouse.open(uri).file_uris()}
    assert live_files == committed_files
    assert not (live_files & orphans)
    assert _log_versions(table) == [0]
    assert lakehouse.open(uri).version() == 0
    assert_frame_equal(pl.read_delta(uri).sort("id"), ORIGINAL)
    assert_frame_equal(lakehouse.scan(uri).collect().sort("id"), ORIGINAL)

    # The orphans do not get in the way of the next write, and version 0 stays readable.
    replacement = pl.DataFrame({"id": [10, 20], "label": ["x", "y"], "extra": [1.5, 2.5]})
    lakehouse.write(uri, replacement.lazy())
    assert lakehouse.open(uri).version() == 1
    assert _log_versions(table) == [0, 1]
    assert_frame_equal(pl.read_delta(uri).sort("id"), replacement)
    assert_frame_equal(lakehouse.scan(uri, 0).collect().sort("id"), ORIGINAL)
    print(
        f"\nSIGKILL after {len(orphans)} uncommitted data file(s), {_written_bytes(table, orphans)} bytes; "
        f"attempts before: {attempts}"
    )


# 3. Two processes writing one table at once: every commit is one whole frame.

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
    processes = [_python(code, *argv, ready, go) for argv, ready in zip(argvs, readies, strict=True)]
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


WRITER = (
    _BARRIER
    + r"""
import json
import polars as pl
from deltalake.exceptions import CommitFailedError
from stedi_assets.storage.environment import S3Options
from stedi_assets.storage.errors import StorageError
from stedi_assets.storage.lakehouse import Lakehouse

writer = int(sys.argv[1])
jobs = json.loads(sys.argv[2])  # [[uri, seq], ...]
root, warm_uri, sync, peers, ready, go = *sys.argv[3:6], int(sys.argv[6]), *sys.argv[7:9]
lakehouse = Lakehouse(root, S3Options.from_environment())

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

lakehouse.write(warm_uri, frame(-1))  # imports and the Delta writer warmed up before the start
wait_for_go(ready, go)
outcomes = []
for job, (uri, seq) in enumerate(jobs):
    lockstep(job)
    started = time.time()
    try:
        lakehouse.write(uri, frame(seq))
        outcome = {"ok": True}
    except Exception as error:
        cause = error.__cause__
        outcome = {
            "ok": False,
            "error": f"{type(error).__module__}.{type(error).__qualname__}",
            "is_storage_error": isinstance(error, StorageError),
            "transient": getattr(error, "transient", None),
            "message": str(error),
            "cause": None if cause is None else f"{type(cause).__module__}.{type(cause).__qualname__}",
            "cause_is_commit_failed": isinstance(cause, CommitFailedError),
            "cause_message": str(cause),
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


def _run_writers(
    lakehouse: Lakehouse, workdir: Path, jobs_of: dict[int, list[tuple[str, int]]], name: str
) -> list[dict]:
    sync = workdir / f"{name}-sync"
    sync.mkdir()
    argvs = [
        [
            writer,
            json.dumps(jobs),
            lakehouse.root,
            lakehouse.table_uri("warm", f"{name}-{writer}"),
            sync,
            len(jobs_of),
        ]
        for writer, jobs in jobs_of.items()
    ]
    return [o for result in _results(_start_together(WRITER, argvs, workdir, name), 60) for o in result]


def _assert_lost_races(outcomes: list[dict]) -> list[dict]:
    """Every failed write lost a commit race, and says so in the one transient sentence."""
    failed = [o for o in outcomes if not o["ok"]]
    for o in failed:
        assert o["is_storage_error"] and o["transient"] is True, o
        assert o["message"] == LOST_RACE.format(uri=o["uri"]), o
        lost_commit = o["cause_is_commit_failed"] and o["cause_message"] == DELTA_LOST_RACE
        assert lost_commit or o["cause_message"] == TABLE_ALREADY_CREATED, o
    return failed


@pytest.mark.slow
def test_concurrent_overwrites_commit_whole_frames(tmp_path: Path, lakehouse: Lakehouse):
    writes = 10
    for attempt in range(3):
        uri = lakehouse.table_uri("landing", f"shared-{attempt}")
        lakehouse.write(uri, pl.LazyFrame({"row": [0], "writer": [0], "seq": [0]}).cast(pl.Int64))
        jobs = {writer: [(uri, seq) for seq in range(writes)] for writer in (1, 2)}
        outcomes = _run_writers(lakehouse, tmp_path, jobs, f"overwrite-{attempt}")
        windows = [
            (
                min(o["started"] for o in outcomes if o["writer"] == w),
                max(o["ended"] for o in outcomes if o["writer"] == w),
            )
            for w in jobs
        ]
        if _overlap(windows) and not all(o["ok"] for o in outcomes):
            break
    else:
        pytest.fail(f"the two writers never raced: windows {windows}, all {2 * writes} writes committed")

    succeeded = {(o["writer"], o["seq"]) for o in outcomes if o["ok"]}
    failed = _assert_lost_races(outcomes)

    # The table opens, and its latest version is one whole frame that a writer reported as written.
    table = lakehouse.open(uri)
    latest = lakehouse.scan(uri).collect()
    assert _single_frame(latest, "latest version") in succeeded

    # Every version is one whole frame; each successful write is exactly one version; no failed one is.
    versions = _history_versions(lakehouse, uri)
    assert versions == list(range(table.version() + 1))
    assert len(versions) == 1 + len(succeeded)
    committed = [_single_frame(lakehouse.scan(uri, v).collect(), f"version {v}") for v in versions[1:]]
    assert sorted(committed) == sorted(succeeded)
    interleavings = sum(1 for a, b in itertools.pairwise(committed) if a[0] != b[0])
    print(
        f"\n{len(succeeded)} of {2 * writes} overwrites committed, {len(failed)} lost the race "
        f"({sorted({(o['cause'], o['cause_message']) for o in failed})}); "
        f"versions 0..{table.version()}, writer changes between consecutive versions: {interleavings}"
    )


@pytest.mark.slow
def test_concurrent_first_writes_of_a_new_table_commit_whole_frames(tmp_path: Path, lakehouse: Lakehouse):
    tables = 20
    for attempt in range(3):
        uris = [lakehouse.table_uri(f"round-{attempt}", f"t{k}") for k in range(tables)]
        jobs = {writer: [(uri, k) for k, uri in enumerate(uris)] for writer in (1, 2)}
        outcomes = _run_writers(lakehouse, tmp_path, jobs, f"create-{attempt}")
        if not all(o["ok"] for o in outcomes):
            break
    else:
        pytest.fail(f"no two first writes of {tables} new tables ever raced in 3 rounds")

    failed = _assert_lost_races(outcomes)
    for uri in uris:
        # Each new table is one whole frame, from a writer that reported success, and each
        # successful write is one version of it: nothing rebased, nothing mixed.
        reported = {(o["writer"], o["seq"]) for o in outcomes if o["uri"] == uri and o["ok"]}
        versions = _history_versions(lakehouse, uri)
        assert len(versions) == len(reported) >= 1, (uri, versions, reported)
        committed = {_single_frame(lakehouse.scan(uri, v).collect(), f"{uri}@{v}") for v in versions}
        assert committed == reported
    both = sum(1 for uri in uris if all(o["ok"] for o in outcomes if o["uri"] == uri))
    print(
        f"\n{len(failed)} of {tables} first writes lost the race "
        f"({sorted({(o['cause'], o['cause_message']) for o in failed})}); "
        f"{both} tables got both writes one after the other"
    )


# 4. Two Dagster runs materializing the same assets into one lakehouse.

RUNNER = (
    _BARRIER
    + r"""
import json
from stedi_assets.cli import run_lakehouse
import stedi_assets.definitions  # the asset graph is built before the start

landing, lakehouse, ready, go = sys.argv[1:5]
wait_for_go(ready, go)
started = time.time()
summary = run_lakehouse(landing_uri=landing, lakehouse_uri=lakehouse)
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
    reference = run_lakehouse(landing_uri=str(landing), lakehouse_uri=str(reference_lakehouse))
    assert reference["success"], reference["errors"]
    if prefilled:
        seed = run_lakehouse(landing_uri=str(landing), lakehouse_uri=str(shared))
        assert seed["success"], seed["errors"]
    expected = {
        name: _sorted(pl.read_delta(str(path))) for name, path in _tables(reference_lakehouse).items()
    }
    assert len(expected) == len(reference["tables"]) == 12

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
    reader = Lakehouse(str(shared))
    for name, path in tables.items():
        uri = str(path)
        assert_frame_equal(_sorted(reader.scan(uri).collect()), expected[name], check_dtypes=True)
        # Every write was of the same data: each version is that whole table, at most one per
        # materialization plus one per retried attempt that committed before its step failed.
        versions = _history_versions(reader, uri)
        materialized = sum(1 for s in summaries if name in s["tables"])
        step = f"ingest_{name.rsplit('_', 1)[0]}" if name.endswith(("_landing", "_rejects")) else name
        retried = sum(s["retries"].get(step, 0) for s in summaries)
        assert versions == list(range(len(versions))), (name, versions)
        # a landing or quarantine table gets no version from a run that found no file it lacks
        # (its manifest, committed with its rows, says which it holds), a reading table none when
        # its input days did not change, and any other none when it would hold the rows it read
        assert 1 <= len(versions) <= prefilled + materialized + retried, (
            name,
            versions,
            materialized,
            retried,
        )
        for version in versions:
            assert_frame_equal(_sorted(reader.scan(uri, version).collect()), expected[name])
    print(
        "\nconcurrent runs: "
        + "; ".join(
            f"success={s['success']} tables={len(s['tables'])} retries={s['retries']} errors={s['errors']}"
            for s in summaries
        )
    )


def test_appends_are_compacted_and_keep_their_rows_and_manifest(tmp_path: Path):
    """Many small appends (one per incremental run) are rewritten into fewer files in one commit that
    changes no row; the manifest property of the last append is still what the table holds."""
    lakehouse = Lakehouse(str(tmp_path / "tables"))
    uri = lakehouse.table_uri("landing", "accelerometer_landing")
    day = pl.lit(date(2022, 6, 18)).alias("event_day")
    for run in range(6):
        frame = pl.LazyFrame({"n": [run * 2, run * 2 + 1]}).with_columns(day)
        staged = lakehouse.stage(uri, frame, ("event_day",))
        lakehouse.commit(staged, {"stedi.manifest": f"run {run}"}, append=run > 0)

    assert not lakehouse.compact(uri, most_files=6)  # not yet fragmented
    assert lakehouse.compact(uri, most_files=5)

    table = DeltaTable(uri)
    assert len(table.file_uris()) == 1
    assert table.history(1)[0]["operation"] == "OPTIMIZE"
    assert sorted(pl.read_delta(uri)["n"]) == list(range(12))
    assert lakehouse.rows(uri) == 12
    assert lakehouse.latest_write_property(uri, "stedi.manifest") == "run 5"
