"""The floor (d): Polars parsing every landing line of the three sources and counting rows.

No pipeline can read its input faster than this. Counting alone lets Polars skip the parse, so
every column's null count is taken as well: each value of each line is parsed, nothing is kept.

    python -m benchmarks.parse_only LANDING   # prints {"lines": {source: rows}}
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl

from benchmarks.sources import FIELDS, SOURCES, landing_files

_DTYPES: dict[str, pl.DataType] = {"string": pl.String(), "int": pl.Int64(), "float": pl.Float64()}


def parse(landing: Path, source: str) -> int:
    schema = {name: _DTYPES[kind] for name, kind in FIELDS[source].items()}
    frame = pl.scan_ndjson(landing_files(landing, source), schema=schema)
    counted = frame.select(pl.len(), pl.all().null_count()).collect(engine="streaming")
    return int(counted.item(0, 0))


if __name__ == "__main__":
    landing_root = Path(sys.argv[1])
    print(json.dumps({"lines": {source: parse(landing_root, source) for source in SOURCES}}))
