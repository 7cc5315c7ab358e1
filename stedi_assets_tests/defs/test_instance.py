"""A killed `stedi run` must not block later runs: its run is failed and its pool slots freed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef

from stedi_assets.defs.instance import (
    HOST_TAG,
    PID_NAMESPACE_TAG,
    PID_TAG,
    PROCESS_START_TAG,
    process_tags,
    release_dead_runs,
)

REPO = Path(__file__).resolve().parents[2]
STEDI = str(Path(sys.executable).parent / "stedi")
JOB = "stedi_lakehouse_job"


@contextmanager
def instance_at(home: Path) -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        yield instance


def claimed_slots(instance: dg.DagsterInstance) -> list[tuple[str, str]]:
    """(pool, run id) of every claimed slot."""
    storage = instance.event_log_storage
    infos = storage.get_concurrency_infos(sorted(storage.get_concurrency_keys()))
    return [(pool, slot.run_id) for pool, info in infos.items() for slot in info.claimed_slots]


def kill_while_holding_a_slot(process: subprocess.Popen, instance: dg.DagsterInstance) -> tuple[str, str]:
    """SIGKILLs `process` at a moment its run holds a pool slot; returns (pool, run id).

    The process is stopped before the slot is checked again, so the slot cannot be freed in between.
    """
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run finished before any step held a pool slot"
        if claimed_slots(instance):
            os.kill(process.pid, signal.SIGSTOP)
            held = claimed_slots(instance)
            if held:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
                return held[0]
            os.kill(process.pid, signal.SIGCONT)
        time.sleep(0.005)
    process.kill()
    process.wait(timeout=30)
    raise AssertionError("no step of the run held a pool slot within 120 s")


@pytest.mark.slow
def test_run_after_a_killed_run_completes_and_releases_it(generated_landing: Path, tmp_path: Path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "stedi_assets" / "dagster.yaml", home / "dagster.yaml")
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("STEDI_")}
    env = inherited | {"DAGSTER_HOME": str(home)}
    run = [STEDI, "run", "--landing", str(generated_landing), "--lakehouse", str(tmp_path / "lh"), "--json"]
    killed = subprocess.Popen(run, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    with instance_at(home) as instance:
        _, killed_run_id = kill_while_holding_a_slot(killed, instance)
        assert instance.get_run_by_id(killed_run_id).status == dg.DagsterRunStatus.STARTED

        # subprocess.run SIGKILLs the run on timeout: a regression fails here instead of hanging.
        done = subprocess.run(run, env=env, capture_output=True, text=True, timeout=120)

        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads(done.stdout)["success"] is True
        assert instance.get_run_by_id(killed_run_id).status == dg.DagsterRunStatus.FAILURE
        (failure,) = instance.all_logs(killed_run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        assert failure.dagster_event.message.startswith(
            f"The process that executed this run (pid {killed.pid} on "
        )
        assert "died without finishing it" in failure.dagster_event.message
        assert claimed_slots(instance) == []
        assert instance.event_log_storage.get_concurrency_run_ids() == set()


def started_run(instance: dg.DagsterInstance, tags: dict[str, str]) -> str:
    """A STARTED run holding a slot of a pool of its own, as an in-process run has mid-step."""
    run_id = str(uuid.uuid4())
    instance.add_run(
        dg.DagsterRun(job_name=JOB, run_id=run_id, status=dg.DagsterRunStatus.STARTED, tags=tags)
    )
    pool = f"delta_{run_id[:8]}"
    instance.event_log_storage.set_concurrency_slots(pool, 1)
    assert instance.event_log_storage.claim_concurrency_slot(pool, run_id, "ingest").is_claimed
    return run_id


def exited_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    return child.pid


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.local_temp(str(tmp_path)) as instance:
        yield instance


def test_live_and_untagged_runs_are_left_alone(instance: dg.DagsterInstance):
    alive = started_run(instance, process_tags())
    untagged = started_run(instance, {})
    gone = str(exited_pid())
    elsewhere = started_run(instance, process_tags() | {HOST_TAG: "another-host", PID_TAG: gone})
    # Another container with the same host name (host networking): its PIDs are not in our namespace.
    container = started_run(instance, process_tags() | {PID_NAMESPACE_TAG: "pid:[1]", PID_TAG: gone})

    assert release_dead_runs(instance) == []

    for run_id in (alive, untagged, elsewhere, container):
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
    assert {run_id for _, run_id in claimed_slots(instance)} == {alive, untagged, elsewhere, container}


def test_runs_of_exited_or_reused_pids_are_failed_and_their_slots_freed(instance: dg.DagsterInstance):
    gone = started_run(instance, process_tags() | {PID_TAG: str(exited_pid())})
    alive = started_run(instance, process_tags())
    released = [gone]
    if PROCESS_START_TAG in process_tags():  # Linux: this PID, but recorded for a process started earlier
        reused = started_run(instance, process_tags() | {PROCESS_START_TAG: "another-boot:1"})
        released.append(reused)

    assert sorted(release_dead_runs(instance)) == sorted(released)

    for run_id in released:
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
    assert claimed_slots(instance) == [(f"delta_{alive[:8]}", alive)]
    assert release_dead_runs(instance) == []
