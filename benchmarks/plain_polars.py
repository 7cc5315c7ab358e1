"""Baseline (b): the five transforms as a plain Polars lazy script, JSON lines in, Parquet out.

What a hand-written job with no orchestration, no quarantine, no checks and no Delta log costs:
scan_ndjson → joins → sink_parquet per table, each table read back by the ones that need it (as
the lakehouse's assets read their upstream tables). Identities are compared trimmed and
lower-cased, which on the reference data agrees with the lakehouse's canonical form.

    python -m benchmarks.plain_polars LANDING OUT_DIR   # prints {"tables": {name: rows}}
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl

from benchmarks.sources import FIELDS, landing_files

_DTYPES: dict[str, pl.DataType] = {"string": pl.String(), "int": pl.Int64(), "float": pl.Float64()}


def scan(landing: Path, source: str) -> pl.LazyFrame:
    schema = {name: _DTYPES[kind] for name, kind in FIELDS[source].items()}
    return pl.scan_ndjson(landing_files(landing, source), schema=schema)


def key(column: str) -> pl.Expr:
    """The identity form compared in joins: trimmed, lower-case."""
    return pl.col(column).str.strip_chars().str.to_lowercase()


def customer_trusted(customer: pl.LazyFrame) -> pl.LazyFrame:
    """Each customer's latest record (by lastUpdateDate), kept when it consents to research."""
    consent = pl.col("shareWithResearchAsOfDate")
    return (
        customer.with_columns(_key=key("email"))
        .group_by("_key")
        .agg(pl.all().sort_by("lastUpdateDate", nulls_last=False).last())
        .filter(consent.is_not_null() & (consent != 0))
        .drop("_key")
    )


def accelerometer_trusted(accelerometer: pl.LazyFrame, trusted: pl.LazyFrame) -> pl.LazyFrame:
    """Distinct readings whose user is a trusted customer."""
    return accelerometer.join(
        trusted.select(key("email")), left_on=key("user"), right_on="email", how="semi"
    ).unique()


def customer_curated(trusted: pl.LazyFrame, readings: pl.LazyFrame) -> pl.LazyFrame:
    """Trusted customers with at least one trusted accelerometer reading."""
    return trusted.join(readings.select(key("user")), left_on=key("email"), right_on="user", how="semi")


def step_trainer_trusted(step_trainer: pl.LazyFrame, curated: pl.LazyFrame) -> pl.LazyFrame:
    """Distinct readings of curated customers' devices."""
    return step_trainer.join(
        curated.select(key("serialNumber")), left_on=key("serialNumber"), right_on="serialNumber", how="semi"
    ).unique()


def machine_learning_curated(steps: pl.LazyFrame, readings: pl.LazyFrame) -> pl.LazyFrame:
    """Each Step Trainer reading with the accelerometer readings of the same millisecond."""
    return steps.join(
        readings, left_on="sensorReadingTime", right_on="timestamp", how="inner", coalesce=False
    )


def run(landing: Path, out: Path) -> dict[str, int]:
    """Writes the five tables as `<out>/<table>.parquet`; returns their row counts."""
    out.mkdir(parents=True, exist_ok=True)

    def write(name: str, frame: pl.LazyFrame) -> pl.LazyFrame:
        path = out / f"{name}.parquet"
        frame.sink_parquet(path)
        return pl.scan_parquet(path)

    trusted = write("customer_trusted", customer_trusted(scan(landing, "customer")))
    readings = write("accelerometer_trusted", accelerometer_trusted(scan(landing, "accelerometer"), trusted))
    curated = write("customer_curated", customer_curated(trusted, readings))
    steps = write("step_trainer_trusted", step_trainer_trusted(scan(landing, "step_trainer"), curated))
    write("machine_learning_curated", machine_learning_curated(steps, readings))
    return {
        path.stem: pl.scan_parquet(path).select(pl.len()).collect().item() for path in out.glob("*.parquet")
    }


if __name__ == "__main__":
    landing_root, out_dir = map(Path, sys.argv[1:3])
    print(json.dumps({"tables": run(landing_root, out_dir)}))
