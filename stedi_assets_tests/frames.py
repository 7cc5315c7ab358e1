"""Builders of small typed frames for the rule and contract tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import polars as pl

from stedi_assets.rules.catalog import (
    EVENT_DAY,
    INGESTED_AT,
    LINE_NUMBER,
    SOURCE_FILE,
    TABLES,
    with_event_day,
)

LANDED_AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CONSENT = 1_655_564_376_361


def rows_frame(name: str, rows: list[dict[str, Any]]) -> pl.DataFrame:
    """A frame of the declared table `name`; columns a row does not mention are null, except the
    partition day, derived from the row's time as the rules derive it."""
    declared = TABLES[name]
    dtypes = declared.dtypes
    for row in rows:
        assert row.keys() <= dtypes.keys(), f"undeclared columns {row.keys() - dtypes.keys()}"
    frame = pl.DataFrame([{c: row.get(c) for c in dtypes} for row in rows], schema=dtypes)
    if declared.partition_time and all(EVENT_DAY not in row for row in rows):
        frame = with_event_day(frame.drop(EVENT_DAY).lazy(), declared).select(list(dtypes)).collect()
    return frame


def landing(source: str, *rows: dict[str, Any]) -> pl.LazyFrame:
    """A typed landing frame of the source named `source`; provenance defaults to line i of
    `<source>-1.json`."""
    with_provenance = [
        {SOURCE_FILE: f"{source}-1.json", LINE_NUMBER: i, INGESTED_AT: LANDED_AT} | row
        for i, row in enumerate(rows, 1)
    ]
    return rows_frame(f"{source}_landing", with_provenance).lazy()


def customer_rejects(*raw_lines: str) -> pl.LazyFrame:
    """Quarantined customer lines, each with a reason, as the ingest writes them."""
    return rows_frame(
        "customer_rejects",
        [
            {SOURCE_FILE: "customer-9.json", LINE_NUMBER: i, "reason": "not valid JSON", "raw_line": raw}
            for i, raw in enumerate(raw_lines, 1)
        ],
    ).lazy()


NO_REJECTS = customer_rejects()
