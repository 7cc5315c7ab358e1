"""Landing data at N times the reference, and the one-day increment of the incremental case.

Replica i of the reference renames every email (`local+r{i}@domain`) and serial number (`…-r{i}`)
and shifts every epoch-ms time by i whole days; replica 0 is the reference itself. So replicas
share no customer, device or reading time (the reference spans under an hour): every count of
every table, the seed rule's timestamp-only join included, is exactly N times the reference's,
which is what lets the benchmark assert that each contender did all the work.

The reference is small (11 MB), so each file is parsed once and every replica of it is streamed
out by Polars (`sink_ndjson`); no Python loop touches a row. A scale folder is built under a
temporary name and renamed when complete, with a marker saying what it was made from, so a later
run reuses it and an interrupted one never leaves half a scale behind.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from benchmarks.sources import FIELDS, READING_TIME, SOURCES, TIME_FIELDS, landing_files

DAY_MS = 86_400_000
GENERATOR_VERSION = 1
"""Bump when the generated data changes, so folders made by an older generator are rebuilt."""
MARKER = "bench-landing.json"

EMAIL_FIELDS = {"customer": ("email",), "accelerometer": ("user",)}
SERIAL_FIELDS = {"customer": ("serialNumber",), "step_trainer": ("serialNumber",)}

INCREMENT_SHARE = 0.01
"""The incremental case adds this share of the scale's lines, as new readings on a new day."""

_DTYPES: dict[str, pl.DataType] = {"string": pl.String(), "int": pl.Int64(), "float": pl.Float64()}


class GenerationError(RuntimeError):
    """The landing data could not be made (missing reference, unexpected content)."""


@dataclass(frozen=True)
class Landing:
    """A landing root the benchmark measures, with what it holds."""

    root: Path
    lines: dict[str, int]
    """Lines per source."""
    size_bytes: int

    @property
    def total_lines(self) -> int:
        return sum(self.lines.values())


@dataclass(frozen=True)
class Increment:
    """The incremental case: a hard-linked copy of a scale's landing and the new files to add to it."""

    landing: Landing
    """The copy as the full run sees it (the new files absent)."""
    new_files: dict[Path, Path]
    """Each new file (kept outside the landing root) and where it goes in the copy."""
    new_lines: dict[str, int]

    def add(self) -> None:
        """Puts the new files into the landing copy (hard links; instant)."""
        for staged, target in self.new_files.items():
            _link(staged, target)

    def remove(self) -> None:
        """Takes the new files out again, so the next full run starts from the scale's data alone."""
        for target in self.new_files.values():
            target.unlink(missing_ok=True)


def polars_schema(source: str) -> pl.Schema:
    return pl.Schema({name: _DTYPES[kind] for name, kind in FIELDS[source].items()})


def check_reference(reference: Path) -> None:
    """Fails with one line when the reference landing data is not where it should be."""
    missing = [s for s in SOURCES if not landing_files(reference, s)]
    if missing:
        raise GenerationError(
            f"no reference landing data: {reference} has no {', '.join(f'{s}/*.json' for s in missing)}; "
            "set STEDI_REFERENCE_DATA (or --reference) to the reference landing root"
        )


def replica(frame: pl.LazyFrame, source: str, tag: int, day: int) -> pl.LazyFrame:
    """The frame's rows as replica `tag` (renamed identities; 0 keeps them) shifted by `day` days.

    Null and 0 times mean "not set" (no consent), so they stay as they are.
    """
    changes = []
    for name in TIME_FIELDS[source]:
        time = pl.col(name)
        unset = time.is_null() | (time == 0)
        changes.append(pl.when(unset).then(time).otherwise(time + day * DAY_MS).alias(name))
    if tag:
        suffix = f"+r{tag}"
        for name in EMAIL_FIELDS.get(source, ()):
            email = pl.col(name)
            renamed = email.str.replace("@", f"{suffix}@", literal=True)
            changes.append(
                pl.when(email.str.contains("@", literal=True))
                .then(renamed)
                .otherwise(email + suffix)
                .alias(name)
            )
        changes += [(pl.col(name) + f"-r{tag}").alias(name) for name in SERIAL_FIELDS.get(source, ())]
    return frame.with_columns(changes)


def _fingerprint(reference: Path) -> dict[str, int]:
    return {
        str(path.relative_to(reference)): path.stat().st_size
        for source in SOURCES
        for path in landing_files(reference, source)
    }


def _size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*.json"))


def _reuse(folder: Path, made_from: dict[str, object]) -> Landing | None:
    """The landing in `folder` if it is complete and made from the same reference by this generator."""
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (FileNotFoundError, ValueError):
        return None
    if marker.get("made_from") != made_from:
        return None
    return Landing(
        folder / "landing", {k: int(v) for k, v in marker["lines"].items()}, int(marker["size_bytes"])
    )


def _publish(partial: Path, folder: Path, made_from: dict[str, object], lines: dict[str, int]) -> Landing:
    """Writes the marker and moves the finished folder into place."""
    size = _size(partial / "landing")
    marker = {"made_from": made_from, "lines": lines, "size_bytes": size}
    (partial / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return Landing(folder / "landing", lines, size)


def ensure_scale(reference: Path, bench_dir: Path, scale: int) -> tuple[Landing, bool]:
    """The landing data at `scale` times the reference under `bench_dir`, and whether it was reused."""
    check_reference(reference)
    folder = bench_dir / f"scale-{scale}"
    made_from = {
        "generator": GENERATOR_VERSION,
        "reference": str(reference.resolve()),
        "files": _fingerprint(reference),
        "scale": scale,
    }
    found = _reuse(folder, made_from)
    if found:
        return found, True
    partial = bench_dir / f".scale-{scale}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    width = max(3, len(str(scale - 1)))
    lines = {}
    for source in SOURCES:
        out = partial / "landing" / source
        out.mkdir(parents=True)
        lines[source] = 0
        for path in landing_files(reference, source):
            frame = pl.read_ndjson(path, schema=polars_schema(source))
            lines[source] += frame.height * scale
            for tag in range(scale):
                target = out / f"{path.stem}-r{tag:0{width}d}.json"
                replica(frame.lazy(), source, tag, day=tag).sink_ndjson(target)
    return _publish(partial, folder, made_from, lines), False


def _link(source: Path, target: Path) -> None:
    """A hard link (same inode, same mtime, no copy), or a copy across file systems."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def ensure_increment(reference: Path, bench_dir: Path, scale: int, landing: Landing) -> Increment:
    """A hard-linked copy of a scale's landing, and one new file per reading source for the next day.

    The new readings are the reference customers' (replica 0: existing, trusted or not), taken on
    day `scale`, after every replica's day. Readings are chosen by their time (`time % 10000`), so
    an accelerometer reading and the Step Trainer reading of the same millisecond come together
    and the training table grows too. They hold INCREMENT_SHARE of the scale's lines (capped by the
    reference's readings: at most one replica's worth, which is 1% at 100x).
    """
    folder = bench_dir / f"scale-{scale}-incremental"
    share = min(1.0, INCREMENT_SHARE * scale)
    made_from = {
        "generator": GENERATOR_VERSION,
        "scale_landing": str(landing.root),
        # the scale's own marker: a rebuilt scale folder must not leave links to its old files here
        "scale": json.loads((landing.root.parent / MARKER).read_text())["made_from"],
        "share_of_reference": share,
    }
    names = {s: f"{s}-day{scale:03d}-new.json" for s in READING_TIME}
    found = _reuse(folder, made_from)
    if not found:
        partial = bench_dir / f".scale-{scale}-incremental.partial"
        shutil.rmtree(partial, ignore_errors=True)
        for path in landing.root.rglob("*.json"):
            _link(path, partial / "landing" / path.relative_to(landing.root))
        new_lines = {}
        for source, time in READING_TIME.items():
            files = landing_files(reference, source)
            chosen = pl.scan_ndjson(files, schema=polars_schema(source)).filter(
                pl.col(time) % 10_000 < round(share * 10_000)
            )
            target = partial / "new" / source / names[source]
            target.parent.mkdir(parents=True)
            replica(chosen, source, tag=0, day=scale).sink_ndjson(target)
            new_lines[source] = (
                pl.scan_ndjson(target, schema=polars_schema(source)).select(pl.len()).collect().item()
            )
        (partial / "new_lines.json").write_text(json.dumps(new_lines) + "\n")
        found = _publish(partial, folder, made_from, landing.lines)
        # _publish sized the copy's landing only; the new files live beside it
    new_lines = json.loads((folder / "new_lines.json").read_text())
    increment = Increment(
        found,
        {folder / "new" / s / names[s]: found.root / s / names[s] for s in READING_TIME},
        {s: int(new_lines.get(s, 0)) for s in SOURCES},
    )
    increment.remove()  # a run interrupted between add() and remove() left them in
    return increment
