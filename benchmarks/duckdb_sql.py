"""Baseline (c): the five transforms in DuckDB SQL, JSON lines in (read_json), Parquet out (COPY).

The same rules as benchmarks/plain_polars.py, written as a SQL engine's user would: each table
one COPY statement reading the JSON files or the Parquet of the tables it depends on.

    python -m benchmarks.duckdb_sql LANDING OUT_DIR   # prints {"tables": {name: rows}}
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import duckdb

from benchmarks.sources import FIELDS, TABLES, landing_files

_TYPES = {"string": "VARCHAR", "int": "BIGINT", "float": "DOUBLE"}


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def read_json(landing: Path, source: str) -> str:
    """A read_json call over the source's files with its declared columns (no type sniffing)."""
    files = ", ".join(_literal(str(p)) for p in landing_files(landing, source))
    columns = ", ".join(
        f"{_literal(name)}: {_literal(_TYPES[kind])}" for name, kind in FIELDS[source].items()
    )
    return f"read_json([{files}], format = 'newline_delimited', columns = {{{columns}}})"


def key(column: str) -> str:
    """The identity form compared in joins: trimmed, lower-case."""
    return f'lower(trim("{column}"))'


def statements(landing: Path, out: Path) -> dict[str, str]:
    """The SELECT of each table, in dependency order; upstream tables are read from their Parquet."""
    table = {name: _literal(str(out / f"{name}.parquet")) for name in TABLES}
    return {
        "customer_trusted": f"""
            SELECT * FROM {read_json(landing, "customer")}
            QUALIFY row_number() OVER (
                    PARTITION BY {key("email")} ORDER BY lastUpdateDate DESC NULLS LAST
                ) = 1
                AND shareWithResearchAsOfDate IS NOT NULL AND shareWithResearchAsOfDate <> 0""",
        "accelerometer_trusted": f"""
            SELECT DISTINCT * FROM {read_json(landing, "accelerometer")}
            WHERE {key("user")} IN (SELECT {key("email")} FROM {table["customer_trusted"]})""",
        "customer_curated": f"""
            SELECT * FROM {table["customer_trusted"]}
            WHERE {key("email")} IN (SELECT {key("user")} FROM {table["accelerometer_trusted"]})""",
        "step_trainer_trusted": f"""
            SELECT DISTINCT * FROM {read_json(landing, "step_trainer")}
            WHERE {key("serialNumber")} IN (SELECT {key("serialNumber")} FROM {table["customer_curated"]})""",
        "machine_learning_curated": f"""
            SELECT s.*, a.* FROM {table["step_trainer_trusted"]} AS s
            JOIN {table["accelerometer_trusted"]} AS a ON s.sensorReadingTime = a.timestamp""",
    }


def run(landing: Path, out: Path) -> dict[str, int]:
    """Writes the five tables as `<out>/<table>.parquet`; returns their row counts."""
    out.mkdir(parents=True, exist_ok=True)
    connection = duckdb.connect()
    counts = {}
    for name, select in statements(landing, out).items():
        path = _literal(str(out / f"{name}.parquet"))
        connection.execute(f"COPY ({select}) TO {path} (FORMAT parquet)")
        (counts[name],) = connection.execute(f"SELECT count(*) FROM {path}").fetchone() or (0,)
    return counts


if __name__ == "__main__":
    landing_root, out_dir = map(Path, sys.argv[1:3])
    print(json.dumps({"tables": run(landing_root, out_dir)}))
