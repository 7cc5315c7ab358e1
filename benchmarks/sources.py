"""What the benchmark knows about the landing data, shared by the generator and the baselines.

Deliberately free of Polars and DuckDB imports: every baseline imports this module, and the
baselines are measured (import time and memory included), so a DuckDB run must not pay for Polars.
Field types are spelled as plain kinds that each baseline maps to its own types.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

Kind = Literal["string", "int", "float"]

FIELDS: dict[str, dict[str, Kind]] = {
    "customer": {
        "customerName": "string",
        "email": "string",
        "phone": "string",
        "birthDay": "string",
        "serialNumber": "string",
        "registrationDate": "int",
        "lastUpdateDate": "int",
        "shareWithResearchAsOfDate": "int",
        "shareWithPublicAsOfDate": "int",
        "shareWithFriendsAsOfDate": "int",
    },
    "accelerometer": {"user": "string", "timestamp": "int", "x": "float", "y": "float", "z": "float"},
    "step_trainer": {"sensorReadingTime": "int", "serialNumber": "string", "distanceFromObject": "int"},
}
"""The fields of each landing source as the reference data spells them (stedi_assets/rules/catalog.py)."""

SOURCES = tuple(FIELDS)

TIME_FIELDS: dict[str, tuple[str, ...]] = {
    "customer": (
        "registrationDate",
        "lastUpdateDate",
        "shareWithResearchAsOfDate",
        "shareWithPublicAsOfDate",
        "shareWithFriendsAsOfDate",
    ),
    "accelerometer": ("timestamp",),
    "step_trainer": ("sensorReadingTime",),
}
"""Epoch-millisecond fields: a replica shifts them by whole days (null and 0 mean "never")."""

READING_TIME = {"accelerometer": "timestamp", "step_trainer": "sensorReadingTime"}
"""When each reading source's reading was taken: what the training table joins on."""

TABLES = (
    "customer_trusted",
    "accelerometer_trusted",
    "customer_curated",
    "step_trainer_trusted",
    "machine_learning_curated",
)
"""The five transforms every contender computes, in dependency order."""

REPO = Path(__file__).resolve().parents[1]
EXPECTATIONS = REPO / "stedi_assets" / "expectations" / "reference.json"


def landing_files(landing: Path, source: str) -> list[Path]:
    """The `*.json` files of one source, in path order: the files `stedi run` reads."""
    return sorted(p for p in (landing / source).glob("*.json") if p.is_file())


def reference_counts() -> dict[str, int]:
    """Exact row counts on the reference data, from the file the lakehouse's own row_count checks use.

    Landing counts are keyed by source name (`customer`, ...), table counts by table name; the
    training table's count is the one of the default `ml_join=seed` rule, which the baselines copy.
    """
    counts = json.loads(EXPECTATIONS.read_text())["row_counts"]
    ml = counts["machine_learning_curated"]
    tables = {
        name: int(ml["seed"] if name == "machine_learning_curated" else counts[name]) for name in TABLES
    }
    lines = {source: int(counts[f"{source}_landing"]) for source in SOURCES}
    return lines | tables
