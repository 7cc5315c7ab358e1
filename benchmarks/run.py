"""`make bench`: the lakehouse against a plain Polars script, DuckDB SQL and the JSON parse floor.

At each scale (N times the reference landing data, see benchmarks/replicas.py) it measures, as
separate processes and alternating within each repeat so that a burst of other work on the
machine hits every contender alike:

  (a) `stedi run --json` on a fresh lakehouse: the whole Dagster graph with its checks;
  (b) benchmarks/plain_polars.py and (c) benchmarks/duckdb_sql.py: the same five transforms;
  (d) benchmarks/parse_only.py: only parsing the JSON, the floor of any pipeline;
  (f) benchmarks/own_rules.py: the lakehouse's own data rules (stedi_assets.rules) as a plain
      script, without Dagster, checks or Delta: what (a) costs beyond it is the orchestration and
      the checks, what it costs beyond (b) is the data work the lakehouse does and (b) does not;
  (e) at the largest scale only, `stedi run` again on (a)'s lakehouse after one new day of
      readings (1% of the lines) landed: what a daily run costs.

Every contender's row counts are checked against N times the reference counts, so a faster
contender cannot be faster by doing less. At the largest scale (a) reads a hard-linked copy of the
scale's files (same inodes, same bytes), because the new files of (e) are added to that copy.

    python -m benchmarks.run [--scales "1 10 100"] [--repeats 3] [--warmups 1] [--bench-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.measure import CommandFailed, Sample, measure
from benchmarks.replicas import GenerationError, Increment, Landing, ensure_increment, ensure_scale
from benchmarks.report import TITLES, Result, ScaleResult, load_average, machine_facts, render
from benchmarks.sources import REPO, SOURCES, TABLES, reference_counts

DEFAULT_SCALES = "1 10 100"
DEFAULT_BENCH_DIR = "/tmp/stedi-bench"
BENCH_PSEUDONYM_KEY = "stedi-bench-not-a-secret"
"""A fixed key for the measured runs, so they neither read nor create the user's generated key."""


class CountMismatch(RuntimeError):
    """A contender's tables do not hold N times the reference counts: it did not do the same work."""


@dataclass(frozen=True)
class Options:
    scales: list[int]
    repeats: int
    warmups: int
    bench_dir: Path
    reference: Path
    generate_only: bool


def _scales(text: str) -> list[int]:
    try:
        scales = sorted({int(part) for part in text.replace(",", " ").split()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"scales must be whole numbers, got {text!r}") from None
    if not scales or scales[0] < 1:
        raise argparse.ArgumentTypeError(f"scales must be 1 or more, got {text!r}")
    return scales


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def parse_args(argv: Sequence[str] | None) -> Options:
    """Options from the command line, defaulting to SCALES, REPEATS, BENCH_DIR and STEDI_REFERENCE_DATA."""
    env = os.environ
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--scales",
        type=_scales,
        default=env.get("SCALES") or DEFAULT_SCALES,
        help=f"multiples of the reference data, e.g. '1 10' (env SCALES; default '{DEFAULT_SCALES}')",
    )
    parser.add_argument(
        "--repeats",
        type=_at_least(1),
        default=env.get("REPEATS") or "3",
        help="measured runs of each command per scale; medians are reported (env REPEATS; default 3)",
    )
    parser.add_argument(
        "--warmups", type=_at_least(0), default=1, help="unmeasured runs of each command first (default 1)"
    )
    parser.add_argument(
        "--bench-dir",
        type=Path,
        default=Path(env.get("BENCH_DIR") or DEFAULT_BENCH_DIR),
        help=f"work folder: generated data (reused), run outputs, results.md (env BENCH_DIR; "
        f"default {DEFAULT_BENCH_DIR})",
    )
    parser.add_argument(
        "--reference",
        type=Path,
        default=Path(env.get("STEDI_REFERENCE_DATA") or REPO.parent / "shared/stedi-reference/landing"),
        help="reference landing root (env STEDI_REFERENCE_DATA; default ../shared/stedi-reference/landing)",
    )
    parser.add_argument(
        "--generate-only", action="store_true", help="make (or check) the landing data, measure nothing"
    )
    args = parser.parse_args(argv)
    return Options(
        args.scales, args.repeats, args.warmups, args.bench_dir.absolute(), args.reference, args.generate_only
    )


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def expect(counts: Mapping[str, int], expected: Mapping[str, int], who: str) -> None:
    """Raises CountMismatch naming every table whose count is not the expected one."""
    wrong = [
        f"{name} has {counts.get(name, 'no')} rows, expected {want:,}"
        for name, want in expected.items()
        if counts.get(name) != want
    ]
    if wrong:
        raise CountMismatch(f"{who} did not do the same work: " + "; ".join(wrong))


def stedi_env() -> dict[str, str]:
    """The caller's environment without STEDI_* settings or DAGSTER_HOME: the defaults are measured,
    the run goes to an ephemeral instance, and a fixed pseudonym key leaves ~/.config alone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEDI_") and k != "DAGSTER_HOME"}
    return env | {"STEDI_PSEUDONYM_KEY": BENCH_PSEUDONYM_KEY}


def measured_code() -> Path:
    """The folder `stedi run` imports stedi_assets from (the repository, unless PYTHONPATH says otherwise)."""
    probe = "import pathlib, stedi_assets; print(pathlib.Path(stedi_assets.__file__).parents[1])"
    found = subprocess.run(
        [sys.executable, "-c", probe], env=stedi_env(), cwd="/", capture_output=True, text=True, check=False
    )
    if found.returncode != 0:
        raise CommandFailed(f"stedi_assets cannot be imported: {found.stderr.strip()[-500:]}")
    return Path(found.stdout.strip())


def _fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    return folder


@dataclass(frozen=True)
class Contenders:
    """How to run each contender at one scale, and what each must produce there."""

    landing: Landing
    increment: Increment | None
    runs: Path
    """Where the outputs of the run being measured go (deleted after it)."""
    tables: dict[str, int]
    """The five tables' expected counts at this scale."""

    def _stedi(self, lakehouse: Path, who: str) -> tuple[Sample, dict[str, int]]:
        stedi = Path(sys.executable).with_name("stedi")
        if not stedi.exists():
            raise CommandFailed(f"{stedi} not found: run the benchmark with the project's .venv (make bench)")
        landing = self.increment.landing.root if self.increment else self.landing.root
        command = [str(stedi), "run", "--landing", str(landing), "--lakehouse", str(lakehouse), "--json"]
        sample = measure(command, env=stedi_env(), show_output=True)
        return sample, stedi_tables(sample.stdout, who)

    def _script(self, module: str, *args: Path) -> Sample:
        return measure([sys.executable, "-m", f"benchmarks.{module}", *map(str, args)], cwd=REPO)

    def round(self) -> Iterator[tuple[str, Sample]]:
        """Runs each contender once, in the order (a), (e), (b), (c), (d), (f), checking what each
        produced."""
        lakehouse = _fresh(self.runs / "lakehouse")
        sample, tables = self._stedi(lakehouse, "(a) stedi run")
        expect(tables, self.tables, "(a) stedi run")
        yield "a", sample
        if self.increment:
            self.increment.add()
            try:
                sample, tables = self._stedi(lakehouse, "(e) incremental stedi run")
            finally:
                self.increment.remove()
            landed = {
                f"{s}_landing": self.landing.lines[s] + self.increment.new_lines.get(s, 0) for s in SOURCES
            }
            expect(tables, landed, "(e) incremental stedi run")
            yield "e", sample
        shutil.rmtree(lakehouse)
        for label, module in (("b", "plain_polars"), ("c", "duckdb_sql")):
            out = _fresh(self.runs / label)
            sample = self._script(module, self.landing.root, out)
            expect(json.loads(sample.stdout)["tables"], self.tables, f"({label}) {module}")
            shutil.rmtree(out)
            yield label, sample
        sample = self._script("parse_only", self.landing.root)
        expect(json.loads(sample.stdout)["lines"], self.landing.lines, "(d) parse_only")
        yield "d", sample
        out = _fresh(self.runs / "f")
        sample = self._script("own_rules", self.landing.root, out)
        landed = {f"{s}_landing": n for s, n in self.landing.lines.items()}
        expect(json.loads(sample.stdout)["tables"], self.tables | landed, "(f) own_rules")
        shutil.rmtree(out)
        yield "f", sample


def stedi_tables(stdout: str, who: str) -> dict[str, int]:
    """Rows per table from `stedi run --json` (its last JSON line); raises when the run reports failure."""
    objects = [line for line in stdout.splitlines() if line.startswith("{")]
    if not objects:
        raise CommandFailed(f"{who} printed no JSON summary: {stdout.strip()[-500:]!r}")
    summary = json.loads(objects[-1])
    if not summary.get("success"):
        failed = [
            f"{c['asset']}.{c['name']}: {c['summary']}"
            for c in summary.get("checks", [])
            if not c["passed"] and c["severity"] == "ERROR"
        ]
        raise CommandFailed(f"{who} reported failure: {'; '.join(summary.get('errors', []) + failed)}")
    return {name: int(info["rows"]) for name, info in summary["tables"].items()}


def measure_scale(
    options: Options, scale: int, landing: Landing, reused: bool, increment: Increment | None
) -> ScaleResult:
    """Warm-up rounds, then the measured ones, each running every contender once."""
    reference = reference_counts()
    contenders = Contenders(
        landing, increment, options.bench_dir / "runs", {t: reference[t] * scale for t in TABLES}
    )
    results = {label: Result(label, landing.total_lines) for label in "abcdf"}
    if increment:
        # the incremental run reads only the new lines (the manifest says the rest is ingested)
        results["e"] = Result("e", sum(increment.new_lines.values()))
    for number in range(options.warmups + options.repeats):
        measured = number >= options.warmups
        name = f"repeat {number - options.warmups + 1}/{options.repeats}" if measured else "warm-up"
        for label, sample in contenders.round():
            _progress(
                f"[{scale}×] {name:<12} ({label}) {sample.wall_s:8.2f} s {sample.cpu_s:8.2f} CPU s "
                f"{sample.peak_rss_mib:8,.0f} MiB  {TITLES[label]}"
            )
            if measured:
                results[label].samples.append(sample)
    new_lines = sum(increment.new_lines.values()) if increment else 0
    return ScaleResult(scale, landing, reused, dict(sorted(results.items())), new_lines)


def prepare(options: Options, scale: int) -> tuple[Landing, bool, Increment | None]:
    """The scale's landing data (made or reused) and, at the largest scale, the incremental case."""
    landing, reused = ensure_scale(options.reference, options.bench_dir, scale)
    expected = {source: reference_counts()[source] * scale for source in SOURCES}
    if landing.lines != expected:
        raise GenerationError(f"{landing.root} holds {landing.lines} lines, expected {expected}")
    _progress(
        f"[{scale}×] {'reusing' if reused else 'generated'} {landing.root}: "
        f"{landing.total_lines:,} lines, {landing.size_bytes / 2**20:,.0f} MiB"
    )
    increment = None
    if scale == options.scales[-1]:
        increment = ensure_increment(options.reference, options.bench_dir, scale, landing)
        added = sum(increment.new_lines.values())
        _progress(
            f"[{scale}×] incremental case: {increment.landing.root} + {added:,} new lines "
            f"({added / landing.total_lines:.2%}) in {', '.join(p.name for p in increment.new_files)}"
        )
    return landing, reused, increment


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    # the generated data holds names, emails and phones (synthetic copies): readable by its owner only
    options.bench_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    options.bench_dir.chmod(0o700)
    try:
        facts = machine_facts(measured_code())
        prepared = {scale: prepare(options, scale) for scale in options.scales}
        if options.generate_only:
            return 0
        scales = [measure_scale(options, scale, *prepared[scale]) for scale in options.scales]
    except (GenerationError, CommandFailed, CountMismatch) as error:
        print(f"bench: error: {error}", file=sys.stderr)
        return 1
    facts["load average at end"] = load_average()
    report = render(scales, facts, options.repeats, options.warmups)
    path = options.bench_dir / "results.md"
    path.write_text(report)
    print(report)
    print(f"Written to {path}; paste it into benchmarks/RESULTS.md.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
