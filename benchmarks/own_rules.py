"""Contender (f): the lakehouse's own data rules as a plain Polars script, without Dagster, checks or Delta.

The functions `stedi run` calls for its data (stedi_assets.rules and the landing reader): the
one-pass parse of every line with its exact quarantine, the landing and quarantine tables with
their provenance columns, the canonical identities, the fail-closed consent decision, the shared
serial rule and the pseudonymous training table, each table sunk whole to one Parquet file and
read back by the tables that need it, as (b) does. So the benchmark splits (a)'s cost in two: what
(f) costs beyond (b) is the data work the lakehouse does and the baseline does not; what (a) costs
beyond (f) is Dagster, the Delta commits, the days and parts, and every check, guard and sweep.

    python -m benchmarks.own_rules LANDING OUT_DIR   # prints {"tables": {name: rows}}
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl

from stedi_assets.rules import parsing, transforms
from stedi_assets.rules.catalog import ACCELEROMETER, CUSTOMER, STEP_TRAINER, Source
from stedi_assets.storage.lakehouse import LandingZone

SECRET = b"stedi-bench-not-a-secret"
"""The pseudonym key of the training table's subject_id (the value does not change the work)."""


def run(landing: Path, out: Path) -> dict[str, int]:
    """Writes every table of the lakehouse's data path as `<out>/<table>.parquet`; their row counts."""
    out.mkdir(parents=True, exist_ok=True)
    zone = LandingZone(str(landing))

    def write(name: str, frame: pl.LazyFrame) -> pl.LazyFrame:
        path = out / f"{name}.parquet"
        frame.sink_parquet(path)
        return pl.scan_parquet(path)

    tables = {}
    for source in (CUSTOMER, ACCELEROMETER, STEP_TRAINER):
        parsed_path = out / f"{source.name}_parsed.parquet"

        def to_disk(plan: pl.LazyFrame, path: Path = parsed_path) -> pl.LazyFrame:
            plan.sink_parquet(path)
            return pl.scan_parquet(path)

        def parse(lines: pl.LazyFrame, source: Source = source) -> pl.LazyFrame:
            return parsing.parse_lines(lines, source, to_disk)

        parsed = zone.collect(zone.files(source.name), parse)
        tables[source.landing.name] = write(source.landing.name, parsing.accepted_rows(parsed, source))
        tables[source.rejects.name] = write(source.rejects.name, parsing.rejected_rows(parsed))
        parsed_path.unlink()
    customers, rejects = tables[CUSTOMER.landing.name], tables[CUSTOMER.rejects.name]
    trusted = write("customer_trusted", transforms.customer_trusted(customers, rejects))
    readings = write(
        "accelerometer_trusted", transforms.accelerometer_trusted(tables[ACCELEROMETER.landing.name], trusted)
    )
    curated = write("customer_curated", transforms.customer_curated(trusted, readings))
    devices = transforms.trusted_devices(curated, customers, rejects).collect().lazy()
    steps = write(
        "step_trainer_trusted", transforms.readings_of_devices(tables[STEP_TRAINER.landing.name], devices)
    )
    write("machine_learning_curated", transforms.machine_learning_curated(steps, readings, curated, SECRET))
    counted = (path for path in out.glob("*.parquet"))
    return {path.stem: pl.scan_parquet(path).select(pl.len()).collect().item() for path in counted}


if __name__ == "__main__":
    landing_root, out_dir = map(Path, sys.argv[1:3])
    print(json.dumps({"tables": run(landing_root, out_dir)}))
