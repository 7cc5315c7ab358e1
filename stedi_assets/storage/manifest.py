"""Which landing files a table already holds, recorded in the same Delta commit as their rows.

Each landing and quarantine table keeps its own manifest: every file whose lines it holds, with the
file's size, modification time and ETag as listed and its number of non-blank lines. Because the
manifest is a property of the commit that added the rows, a crash can never leave rows without
their manifest entry or an entry without its rows: the next run adds exactly what is missing, to
each table on its own, and never duplicates a row.

A run then reads only files no manifest lists, and the files that changed since: a changed or
vanished file's rows are replaced (for a day-partitioned table, in the days they and the new rows
touch), the other files are not read again. An erasure request recorded since makes the table
rebuild from all files, as does a changed file when the table holds erased lines (their count is
not kept per file).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from stedi_assets.storage.lakehouse import LandingFile

MANIFEST = "stedi.manifest"
"""The commit property holding a table's manifest (JSON)."""


def signature(file: LandingFile) -> dict[str, Any]:
    """What identifies a file's content as listed: a different value means the file changed."""
    return {"size": file.size, "modified": file.modified.isoformat(), "etag": file.etag}


@dataclass(frozen=True)
class Manifest:
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    """uri -> the file's signature and its non-blank `lines`."""
    erased: int = 0
    """Lines of these files dropped because their person asked for erasure."""
    erasures: int = 0
    """Erasure-log entries in force when the rows were written."""

    @classmethod
    def loads(cls, text: str | None) -> Manifest | None:
        """The manifest a commit recorded; None when there is none (or it cannot be read)."""
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(dict(data["files"]), int(data["erased"]), int(data["erasures"]))
        except (ValueError, KeyError, TypeError):
            return None

    def dumps(self) -> str:
        return json.dumps({"files": self.files, "erased": self.erased, "erasures": self.erasures})

    @property
    def lines(self) -> int:
        return sum(int(entry["lines"]) for entry in self.files.values())


@dataclass(frozen=True)
class Plan:
    """What one table's write adds: the rows of `files`, appended (in place of the rows of the files
    `replaced`), or replacing the table."""

    files: list[LandingFile]
    append: bool
    previous: Manifest
    replaced: tuple[str, ...] = ()
    """Files the table holds rows of that changed or vanished: their rows leave with this write."""

    @property
    def uris(self) -> list[str]:
        return [f.uri for f in self.files]

    def manifest(self, lines: dict[str, int], erased: int, erasures: int) -> Manifest:
        """The manifest after this write: the previous one (when appending) and the files it adds."""
        added = {f.uri: {**signature(f), "lines": lines.get(f.uri, 0)} for f in self.files}
        if not self.append:
            return Manifest(added, erased, erasures)
        kept = {uri: entry for uri, entry in self.previous.files.items() if uri not in self.replaced}
        return Manifest({**kept, **added}, self.previous.erased + erased, erasures)


def plan(previous: Manifest | None, files: list[LandingFile], erasures: int) -> Plan:
    """Read the files `previous` does not list and those that changed since, replacing the rows of the
    changed or vanished ones; rebuild from all `files` when there is no manifest, the erasure log
    grew, or a file changed under a manifest that counts erased lines."""
    if previous is None or previous.erasures != erasures:
        return Plan(files, append=False, previous=Manifest())
    current = {f.uri: signature(f) for f in files}
    replaced = tuple(
        uri
        for uri, entry in previous.files.items()
        if current.get(uri) != {k: entry.get(k) for k in ("size", "modified", "etag")}
    )
    if replaced and previous.erased:
        return Plan(files, append=False, previous=Manifest())
    reading = [f for f in files if f.uri not in previous.files or f.uri in replaced]
    return Plan(reading, append=True, previous=previous, replaced=replaced)
