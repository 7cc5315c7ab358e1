"""The benchmark's measurement and report (benchmarks/): what `make bench` prints is what the targets
are judged on, so its arithmetic is tested here; the benchmark itself is not a timed test."""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks.measure import Sample, measure
from benchmarks.replicas import Landing
from benchmarks.report import Result, ScaleResult, cpu_budget, scale_section

BURN = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass\n"
"""A command that spends 0.4 s of CPU in one thread, then exits."""


def test_a_measured_command_reports_the_cpu_time_of_its_process() -> None:
    sample = measure([sys.executable, "-c", BURN])

    assert 0.4 <= sample.cpu_s < 0.4 + 0.5  # its own 0.4 s plus the interpreter's start
    assert sample.cpu_s <= sample.wall_s + 0.05  # one thread cannot keep two cores busy


def _result(label: str, wall: float, cpu: float, rss: float = 100.0) -> Result:
    return Result(label, 1_000, [Sample(wall, rss, "", cpu)])


def test_the_cpu_budget_of_the_wall_target_is_the_cores_times_the_wall_it_allows() -> None:
    scale = ScaleResult(
        100,
        Landing(Path("/landing"), {"accelerometer": 1_000}, 2**20),
        reused=True,
        results={
            "a": _result("a", 20.0, 36.0),
            "b": _result("b", 5.0, 9.5),
            "f": _result("f", 12.0, 23.0),
        },
    )

    assert cpu_budget(scale, cores=2) == (
        "CPU budget of (a)/(b) ≤ 2.5: 12.50 s of wall, so at most 25.0 CPU s on 2 core(s); "
        "(a) used 36.0 (1.80 cores busy), (f), its data rules alone, 23.0 (1.92 cores busy)."
    )
    section = scale_section(scale)
    assert "| (a)/(b) | 4.00 | 3.79 | 1.00 | ≤ 2.5: **missed** (wall) |" in section
    assert "| (a)/(f) | 1.67 | 1.57 | 1.00 |  |" in section
    assert "| (f) |" in section and "| 12.00 | 12.00–12.00 | 23.00 | 1.92 | 100 |" in section
