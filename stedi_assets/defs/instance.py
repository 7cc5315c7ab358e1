"""Runs whose `stedi run` process died (kill -9, a crash) stay STARTED and keep their pool slots: with
a pool limit of 1, every later run would wait for those slots forever. This finds and releases them.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import dagster as dg

HOST_TAG, PID_TAG, PROCESS_START_TAG = "stedi/host", "stedi/pid", "stedi/process_start"
PID_NAMESPACE_TAG = "stedi/pid_namespace"
FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
UNFINISHED = [status for status in dg.DagsterRunStatus if status not in FINISHED]


def process_tags() -> dict[str, str]:
    """Tags naming the process that executes a run in process, so a later run can tell it died."""
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    started, namespace = _process_stat(os.getpid()), _pid_namespace()
    if started:
        tags[PROCESS_START_TAG] = started[1]
    if namespace:
        tags[PID_NAMESPACE_TAG] = namespace
    return tags


def _pid_namespace() -> str | None:
    """Containers may share a host name (host networking) but not their PIDs: those of another
    namespace are not ours to judge."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _process_stat(pid: int) -> tuple[str, str] | None:
    """The state of `pid` and when it started ("<boot id>:<clock ticks>"), from Linux's /proc; else None.

    The start tells a process from a later one that reuses its PID, in this boot or another.
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count fields after its last ")".
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], f"{boot}:{fields[19]}"


def is_dead(run: dg.DagsterRun) -> bool:
    """True only when the run's process certainly no longer runs: it ran on this host, and its PID is
    gone, a zombie, or now names a process that started at another time. Untagged runs are never dead.
    """
    host, pid = run.tags.get(HOST_TAG), run.tags.get(PID_TAG, "")
    if os.name != "posix" or host != socket.gethostname() or not pid.isdigit() or int(pid) <= 0:
        return False
    if run.tags.get(PID_NAMESPACE_TAG, _pid_namespace()) != _pid_namespace():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    recorded, now = run.tags.get(PROCESS_START_TAG), _process_stat(int(pid))
    if now is None:
        return False
    state, started = now
    return state in ("Z", "X") or (recorded is not None and started != recorded)


def release_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Marks failed the unfinished runs of dead `stedi run` processes on this host and frees every pool
    slot (claimed or queued) they hold; returns their run ids.

    Runs without the process tags (launched by `dagster dev`) are left to its daemon (its run
    monitoring: stedi_assets/dagster.yaml).
    """
    storage = instance.event_log_storage
    on_this_host = {HOST_TAG: socket.gethostname()}
    runs = list(instance.get_runs(dg.RunsFilter(statuses=UNFINISHED, tags=on_this_host)))
    holding = storage.get_concurrency_run_ids() if storage.supports_global_concurrency_limits else set()
    if holding:
        # Finished runs too: one marked failed or canceled elsewhere (the UI) keeps its slots.
        runs += instance.get_runs(
            dg.RunsFilter(run_ids=sorted(holding), statuses=FINISHED, tags=on_this_host)
        )
    released = []
    for run in runs:
        if not is_dead(run):
            continue
        current = instance.get_run_by_id(run.run_id)
        if current and not current.is_finished:
            instance.report_run_failed(
                current,
                f"The process that executed this run (pid {run.tags[PID_TAG]} on {run.tags[HOST_TAG]}) "
                "died without finishing it (killed?). A later `stedi run` marked it failed and freed "
                "the concurrency pool slots it held.",
            )
        if storage.supports_global_concurrency_limits:
            storage.free_concurrency_slots_for_run(run.run_id)
        released.append(run.run_id)
    return released
