"""One measured command: wall seconds, CPU seconds and peak resident memory of the process it starts.

Every contender runs as its own process, so its interpreter start-up and imports count (they are
part of what a scheduled run costs) and its memory is its own, not the benchmark's. The child is
reaped with `os.wait4`, whose rusage on Linux covers the child and every descendant it waited for:
`ru_maxrss` is then the largest peak of any one process of the tree (not their sum), and
`ru_utime + ru_stime` the CPU time of the whole tree (every thread of every process). `stedi run`
executes the job in process, so for it that is the whole run.

A forked child starts with its parent's peak as its own, so the command is started by a tiny
launcher (`python -S`, no imports) rather than by the benchmark itself, whose peak grows when it
generates data: the floor is then the launcher's few MiB, not the benchmark's hundreds.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

KIB_PER_MAXRSS = 1 if sys.platform.startswith("linux") else 1 / 1024
"""ru_maxrss is in KiB on Linux and in bytes on macOS."""
LAUNCHER = (
    "import os, subprocess, sys\n"
    "child = subprocess.Popen(sys.argv[2:])\n"
    "_, status, usage = os.wait4(child.pid, 0)\n"
    "cpu = usage.ru_utime + usage.ru_stime\n"
    "open(sys.argv[1], 'w').write(f'{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss} {cpu}')\n"
)
"""Starts the measured command, reaps it and writes its exit code, ru_maxrss and CPU seconds to a file."""


class CommandFailed(RuntimeError):
    """A measured command exited non-zero or reported a failure."""


@dataclass(frozen=True)
class Sample:
    wall_s: float
    peak_rss_mib: float
    stdout: str
    cpu_s: float
    """User plus system CPU seconds of the process tree: wall × the cores it kept busy."""


def measure(
    command: Sequence[str],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    show_output: bool = False,
) -> Sample:
    """Runs `command` to completion; raises CommandFailed (with the end of its stderr) on exit != 0.

    Output goes to temporary files rather than pipes, so the benchmark never has to read while it
    waits (and a chatty child cannot block on a full pipe).
    """
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryDirectory() as tmp,
    ):
        report = Path(tmp) / "usage"
        launched = [sys.executable, "-S", "-c", LAUNCHER, str(report), *command]
        start = time.perf_counter()
        subprocess.run(launched, stdout=out, stderr=err, env=env, cwd=cwd, check=False)
        wall = time.perf_counter() - start
        code_text, maxrss_text, cpu_text = report.read_text().split()
        code, maxrss, cpu = int(code_text), int(maxrss_text), float(cpu_text)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if code != 0:
        # only the lakehouse masks personal data in what it prints: a baseline's parse error could
        # quote a landing line, so only the name of its exception is shown
        lines = stderr.strip().splitlines() or stdout.strip().splitlines() or [""]
        tail = "\n".join(lines[-15:]) if show_output else lines[-1].split(":", 1)[0]
        raise CommandFailed(f"`{' '.join(command)}` exited with {code}:\n{tail}")
    return Sample(wall, maxrss * KIB_PER_MAXRSS / 1024, stdout, cpu)
