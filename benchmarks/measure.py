"""One measured command: wall seconds and peak resident memory of the process it starts.

Every contender runs as its own process, so its interpreter start-up and imports count (they are
part of what a scheduled run costs) and its memory is its own, not the benchmark's. The child is
reaped with `os.wait4`, whose rusage on Linux covers the child and every descendant it waited for:
`ru_maxrss` is then the largest peak of any one process of the tree (not their sum). `stedi run`
executes the job in process, so for it that is the whole run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

KIB_PER_MAXRSS = 1 if sys.platform.startswith("linux") else 1 / 1024
"""ru_maxrss is in KiB on Linux and in bytes on macOS."""


class CommandFailed(RuntimeError):
    """A measured command exited non-zero or reported a failure."""


@dataclass(frozen=True)
class Sample:
    wall_s: float
    peak_rss_mib: float
    stdout: str


def measure(command: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Sample:
    """Runs `command` to completion; raises CommandFailed (with the end of its stderr) on exit != 0.

    Output goes to temporary files rather than pipes, so the benchmark never has to read while it
    waits (and a chatty child cannot block on a full pipe).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=cwd)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if child.returncode != 0:
        tail = "\n".join(stderr.strip().splitlines()[-15:]) or stdout.strip()[-2000:]
        raise CommandFailed(f"`{' '.join(command)}` exited with {child.returncode}:\n{tail}")
    return Sample(wall, usage.ru_maxrss * KIB_PER_MAXRSS / 1024, stdout)
