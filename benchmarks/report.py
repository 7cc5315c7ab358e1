"""The benchmark's results as Markdown: one table per scale, the ratios with their targets, the machine.

Printed to the terminal and written to `<work dir>/results.md` as the same text, so what is seen
is what gets pasted into benchmarks/RESULTS.md. Wall time is the median of the repeats; peak RSS
is the largest of the repeats, because the memory targets are about the worst run. CPU seconds
(user plus system, median) show how much work a command does whatever the cores: a wall-time target
on a machine of N cores is also a budget of N × that wall in CPU seconds, which a command that does
more work than that cannot meet however well it uses the cores.
"""

from __future__ import annotations

import itertools
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from benchmarks.measure import Sample
from benchmarks.replicas import Landing
from benchmarks.sources import REPO

TITLES = {
    "a": "`stedi run` (whole Dagster graph, checks, Delta)",
    "b": "plain Polars lazy script",
    "c": "DuckDB SQL",
    "d": "parse-only floor (Polars)",
    "e": "incremental: `stedi run` after +1% new readings",
    "f": "the lakehouse's own data rules as a plain Polars script (no Dagster, checks or Delta)",
}

MAX_WALL_VS_POLARS = 2.5
MAX_RSS_MIB_AT_100 = 1024.0
MAX_RSS_GROWTH_10_TO_100 = 1.5
MAX_INCREMENTAL_VS_FULL = 0.25


@dataclass
class Result:
    """The samples of one contender at one scale."""

    label: str
    lines: int
    """Landing lines the command reads."""
    samples: list[Sample] = field(default_factory=list)

    @property
    def wall_s(self) -> float:
        return statistics.median(s.wall_s for s in self.samples)

    @property
    def peak_rss_mib(self) -> float:
        return max(s.peak_rss_mib for s in self.samples)

    @property
    def cpu_s(self) -> float:
        return statistics.median(s.cpu_s for s in self.samples)

    @property
    def cores_busy(self) -> float:
        """CPU seconds per wall second: how many cores the command kept busy on average."""
        return self.cpu_s / self.wall_s

    @property
    def lines_per_s(self) -> float:
        return self.lines / self.wall_s


@dataclass
class ScaleResult:
    scale: int
    landing: Landing
    reused: bool
    results: dict[str, Result]
    new_lines: int = 0
    """Lines the incremental case added (0 when it did not run at this scale)."""


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _verdict(value: float, limit: float) -> str:
    return f"≤ {limit:g}: {'met' if value <= limit else '**missed**'}"


RATIO_HEADER = ["| ratio | wall | CPU | peak RSS | target |", "|---|---:|---:|---:|---|"]


def _ratio_row(res: dict[str, Result], top: str, other: str, limit: float | None = None) -> str:
    """One row of the ratio table: `top` over `other` in wall, CPU and peak RSS, the wall's target."""
    high, low = res[top], res[other]
    wall = high.wall_s / low.wall_s
    target = "" if limit is None else _verdict(wall, limit) + " (wall)"
    return (
        f"| ({top})/({other}) | {wall:.2f} | {high.cpu_s / low.cpu_s:.2f} | "
        f"{high.peak_rss_mib / low.peak_rss_mib:.2f} | {target} |"
    )


def _ratio_rows(scale: ScaleResult) -> list[str]:
    res = scale.results
    pairs = [("a", "b"), ("a", "c"), ("a", "d"), ("a", "f"), ("f", "b")]
    rows = [
        _ratio_row(res, top, other, MAX_WALL_VS_POLARS if (top, other) == ("a", "b") else None)
        for top, other in pairs
        if top in res and other in res
    ]
    if "e" in res:
        rows.append(_ratio_row(res, "e", "a", MAX_INCREMENTAL_VS_FULL))
    if scale.scale == 100:
        rss = res["a"].peak_rss_mib
        rows.append(f"| (a) peak RSS, MiB | | | {rss:,.0f} | {_verdict(rss, MAX_RSS_MIB_AT_100)} |")
    return rows


def cpu_budget(scale: ScaleResult, cores: int) -> str:
    """What the (a)/(b) wall target allows in CPU seconds on this machine, against what (a) and (f)
    used: the target cannot be met by using the cores better when the work alone is over budget."""
    res = scale.results
    if "a" not in res or "b" not in res:
        return ""
    wall = MAX_WALL_VS_POLARS * res["b"].wall_s
    text = (
        f"CPU budget of (a)/(b) ≤ {MAX_WALL_VS_POLARS:g}: {wall:.2f} s of wall, so at most "
        f"{cores * wall:.1f} CPU s on {cores} core(s); (a) used {res['a'].cpu_s:.1f} "
        f"({res['a'].cores_busy:.2f} cores busy)"
    )
    if "f" in res:
        text += f", (f), its data rules alone, {res['f'].cpu_s:.1f} ({res['f'].cores_busy:.2f} cores busy)"
    return text + "."


def scale_section(scale: ScaleResult) -> str:
    """The table of one scale: each contender's median wall, peak RSS and throughput, then the ratios."""
    landing = scale.landing
    origin = "reused" if scale.reused else "generated"
    lines = [
        f"### {scale.scale}× — {landing.total_lines:,} landing lines, "
        f"{landing.size_bytes / 2**20:,.0f} MiB of JSON ({origin}, `{landing.root}`)",
        "",
        "| | command | wall s (median) | min–max s | CPU s (median) | cores busy | peak RSS MiB | lines/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, result in scale.results.items():
        walls = [s.wall_s for s in result.samples]
        lines.append(
            f"| ({label}) | {TITLES[label]} | {result.wall_s:.2f} | {min(walls):.2f}–{max(walls):.2f} | "
            f"{result.cpu_s:.2f} | {result.cores_busy:.2f} | {result.peak_rss_mib:,.0f} | "
            f"{result.lines_per_s:,.0f} |"
        )
    if scale.new_lines:
        lines += [
            "",
            f"(e) added {scale.new_lines:,} lines ({scale.new_lines / landing.total_lines:.2%}) "
            "in one new file per reading source, one day after all others.",
        ]
    lines += ["", *RATIO_HEADER, *_ratio_rows(scale)]
    budget = cpu_budget(scale, usable_cores())
    return "\n".join([*lines, *(["", budget] if budget else [])])


def scaling_section(scales: list[ScaleResult]) -> str:
    """How (a) grows from one scale to the next: the memory target is about 10× → 100×."""
    rows = ["| (a) from → to | lines × | wall × | peak RSS × | target |", "|---|---:|---:|---:|---|"]
    for low, high in itertools.pairwise(scales):
        a_low, a_high = low.results["a"], high.results["a"]
        growth = a_high.peak_rss_mib / a_low.peak_rss_mib
        target = (
            _verdict(growth, MAX_RSS_GROWTH_10_TO_100) + " (RSS)"
            if (low.scale, high.scale) == (10, 100)
            else ""
        )
        rows.append(
            f"| {low.scale}× → {high.scale}× | {a_high.lines / a_low.lines:.1f} | "
            f"{a_high.wall_s / a_low.wall_s:.2f} | {growth:.2f} | {target} |"
        )
    return "\n".join(rows)


def _package(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _output(command: list[str], cwd: Path) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, cwd=cwd, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def code_version(code: Path) -> str:
    """The commit of the code `stedi run` executes, and the files that differ from it.

    Normally the repository's working tree; another tree (say a `git archive` of an older commit on
    PYTHONPATH) is named by its path, with its commit when it is a git checkout.
    """
    commit = _output(["git", "rev-parse", "--short", "HEAD"], code)
    if not commit:
        return f"{code} (not a git checkout)"
    changed = _output(["git", "diff", "--name-only", "HEAD"], code).split()
    where = "" if code == REPO else f" in {code}"
    return commit + where + (f" + uncommitted changes to {', '.join(changed)}" if changed else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        return float("nan")


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: above the core count, others' work competed."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_facts(code: Path) -> dict[str, str]:
    """What the numbers depend on: the code measured (`code`: the folder stedi_assets is imported
    from), the machine, the versions, and the load when the benchmark started (others' work)."""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "code measured": code_version(code),
        "CPU": _cpu_model(),
        "cores": f"{os.cpu_count()} ({usable_cores()} usable)",
        "RAM": f"{_ram_gib():.1f} GiB",
        "OS": platform.platform(),
        "load average at start": load_average(),
        "Python": sys.version.split()[0],
        "polars": _package("polars"),
        "duckdb": _package("duckdb"),
        "deltalake": _package("deltalake"),
        "dagster": _package("dagster"),
    }


def render(scales: list[ScaleResult], facts: dict[str, str], repeats: int, warmups: int) -> str:
    """The whole report as Markdown."""
    parts = [
        "## Results",
        "",
        f"{repeats} repeat(s) after {warmups} warm-up run(s), the commands alternating within each "
        "repeat; wall and CPU (user + system seconds) = median, peak RSS = largest of the repeats "
        "(of the measured process tree); cores busy = CPU / wall; lines/s = landing lines read / "
        "median wall.",
        "",
        "| machine | |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in facts.items()),
    ]
    parts += ["", *(block for scale in scales for block in (scale_section(scale), ""))]
    if len(scales) > 1:
        parts += ["### Scaling", "", scaling_section(scales)]
    return "\n".join(parts).rstrip() + "\n"
