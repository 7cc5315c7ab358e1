"""The report: pictures of the lakehouse for people, drawn after the tables they show.

Three charts (SVG, written from their numbers by defs/charts.py): the rows of each table from
landing to curated (from the Delta logs, no data read), the distribution of distanceFromObject, and
the accelerometer magnitude of up to five customers, numbered, never named. They are written as one
standalone HTML file at <lakehouse>/report/curated_report.html; the two aggregate charts are also
shown with the materialization (the per-person one is not: see PER_PERSON).
"""

# No `from __future__ import annotations` here: Dagster reads the context annotation at runtime.
import base64
import html
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import polars as pl

from stedi_assets.defs import charts, conditions
from stedi_assets.defs.check_scope import VERDICT, recorded, release, remember, state, what_was_seen
from stedi_assets.defs.factories import STORAGE_RETRY
from stedi_assets.defs.partitions import SINGLE_RUN
from stedi_assets.rules import report
from stedi_assets.rules.catalog import (
    ACCELEROMETER_TRUSTED,
    CURATED,
    LANDING,
    STEP_TRAINER_TRUSTED,
    TABLES,
    TRUSTED,
    Table,
)
from stedi_assets.storage.errors import StorageError
from stedi_assets.storage.lakehouse import Lakehouse
from stedi_assets.storage.resources import StediStorage, as_failure, pseudonym_of

REPORT_GROUP = "report"
REPORT_PATH = report.REPORT_PATH
DISTANCE = "distanceFromObject"
OWNER, READ_AT = "user", "timestamp"
"""The columns of accelerometer_trusted naming the phone's owner and when a reading was taken."""
FUNNEL_TITLE = "Rows per table, landing → trusted → curated"
NOTHING = "no readings yet"
SVG = "image/svg+xml"
ZONE_COLOURS = {LANDING: "#8da0cb", TRUSTED: "#66c2a5", CURATED: "#fc8d62"}
UNITS = ((86_400_000, "days"), (3_600_000, "hours"), (60_000, "minutes"), (1_000, "seconds"))


def funnel_chart(rows: dict[str, int]) -> bytes:
    """One bar per table, landing at the top, coloured by zone, each labelled with its row count, on
    a logarithmic scale where an empty table still has its place."""
    bars = [(name, count, ZONE_COLOURS[TABLES[name].zone]) for name, count in rows.items()]
    keys = [(colour, zone) for zone, colour in ZONE_COLOURS.items()]
    return charts.log_bars(FUNNEL_TITLE, bars, "rows (logarithmic scale)", keys)


def histogram_chart(bins: pl.DataFrame, readings: int) -> bytes:
    title = f"{DISTANCE} in {STEP_TRAINER_TRUSTED.name} ({readings:,} readings)"
    if bins.is_empty():
        return charts.nothing(title, NOTHING)
    columns = (bins[name].to_list() for name in (report.START, report.END, report.COUNT))
    return charts.histogram(title, *columns, DISTANCE, "readings")


def magnitude_chart(series: pl.DataFrame) -> bytes:
    """A line per sampled customer, labelled only by its number, over the time since its first
    reading (never the time it was taken)."""
    title = "Accelerometer magnitude √(x² + y² + z²) of sampled customers"
    if series.is_empty():
        return charts.nothing(title, NOTHING)
    longest = int(series[report.ELAPSED].max() or 0)
    unit, name = next((ms, n) for ms, n in UNITS if longest >= 2 * ms or ms == UNITS[-1][0])
    lines = [
        (f"customer {customer}", (part[report.ELAPSED] / unit).to_list(), part[report.MAGNITUDE].to_list())
        for (customer,), part in series.group_by(report.CUSTOMER, maintain_order=True)
    ]
    return charts.lines(
        title, lines, f"{name} since the customer's first reading (bucket means)", "magnitude"
    )


def _uri(lakehouse: Lakehouse, table: Table) -> str:
    return lakehouse.table_uri(table.zone, table.name)


def _page(drawn: dict[str, tuple[str, bytes]], rows: dict[str, int], made: str) -> str:
    """A standalone HTML page: every image inline, nothing fetched."""
    figures = "".join(
        f'<h2>{html.escape(title)}</h2>\n<img alt="{html.escape(title)}" '
        f'src="data:{SVG};base64,{base64.b64encode(svg).decode()}">\n'
        for title, svg in drawn.values()
    )
    table = "".join(f"<tr><td>{html.escape(n)}</td><td>{r:,}</td></tr>" for n, r in rows.items())
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>STEDI lakehouse report</title>"
        "<style>body{font-family:sans-serif;max-width:48rem;margin:2rem auto}"
        "td{padding:0 1rem}td+td{text-align:right}img{max-width:100%}</style></head><body>\n"
        f"<h1>STEDI lakehouse report</h1>\n<p>Made {html.escape(made)}.</p>\n{figures}"
        f"<h2>Row counts</h2>\n<table>{table}</table>\n</body></html>\n"
    )


REPORT_NAME, DRAWN = "curated_report", "drawn"
"""The record (check_scope) of what the report was last drawn from: verified/curated_report/drawn.json."""
REDRAWN = "redrawn"
"""Materialization metadata: whether the charts were drawn again (False: the tables they draw, the
rules and the key were as when they were last drawn, so the same charts are shown again)."""
PER_PERSON = frozenset({"accelerometer_magnitude"})
"""Charts drawn from individual people's readings: only in the HTML file in the lakehouse, which
the next zones run (the one that carries out a withdrawal or an erasure) redraws without them. The
Dagster instance keeps every materialization's metadata for good, so they never go there."""
AGGREGATE_CHARTS = ("funnel", "distance_histogram")
"""The charts the materialization shows; their SVG files are also kept beside the HTML file, to be shown
again while nothing they draw changes."""


@dg.asset(
    group_name=REPORT_GROUP,
    kinds={"polars", "svg", "html"},
    deps=[t.name for t in report.FUNNEL],
    retry_policy=STORAGE_RETRY,
    backfill_policy=SINGLE_RUN,
    pool="report_curated_report",
    automation_condition=conditions.follows(*(t.name for t in report.FUNNEL)),
)
def curated_report(context: dg.AssetExecutionContext, storage: StediStorage) -> dg.MaterializeResult:
    """Pictures of the lakehouse: rows per table from landing to curated, the distribution of
    distanceFromObject, the accelerometer magnitude of up to five customers (numbered, never named);
    one HTML file at <lakehouse>/report/curated_report.html, and the aggregate charts here."""
    lakehouse, key = storage.lakehouse, pseudonym_of(storage)
    steps, phones = _uri(lakehouse, STEP_TRAINER_TRUSTED), _uri(lakehouse, ACCELEROMETER_TRUSTED)
    try:
        opened = {t.name: (_uri(lakehouse, t), lakehouse.open(_uri(lakehouse, t))) for t in report.FUNNEL}
        rows = {name: lakehouse.rows(uri, table) for name, (uri, table) in opened.items()}
        seen = {"release": release(), "pseudonym_key": key.key_id}
        seen |= {name: state(uri, table) for name, (uri, table) in opened.items()}
        kept = _kept(lakehouse, seen)
        if kept is not None:
            uri, images, numbers = kept
            return dg.MaterializeResult(metadata={**_metadata(uri, images, rows, numbers), REDRAWN: False})
        step_readings = lakehouse.scan_opened(*opened[STEP_TRAINER_TRUSTED.name])
        bins = lakehouse.reading(steps, report.histogram(step_readings, DISTANCE))
        readings = lakehouse.scan_opened(*opened[ACCELEROMETER_TRUSTED.name])
        people = lakehouse.reading(phones, report.sampled_people(readings, OWNER, key.secret))
        series = lakehouse.reading(phones, report.magnitude_series(readings, people, OWNER, READ_AT))
        distances = int(bins[report.COUNT].sum())
        drawn = {
            "funnel": ("Rows per table, landing to curated", funnel_chart(rows)),
            "distance_histogram": (
                f"{DISTANCE} in {STEP_TRAINER_TRUSTED.name}",
                histogram_chart(bins, distances),
            ),
            "accelerometer_magnitude": (
                "Accelerometer magnitude of sampled customers",
                magnitude_chart(series),
            ),
        }
        made = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC by run {context.run.run_id}"
        images = {name: svg for name, (_, svg) in drawn.items() if name not in PER_PERSON}
        for name, svg in images.items():  # aggregates only, shown again while nothing they draw changes
            lakehouse.put_bytes(_image_path(name), svg, SVG)
        uri = lakehouse.put_bytes(REPORT_PATH, _page(drawn, rows, made).encode(), "text/html; charset=utf-8")
        numbers = {
            "step_trainer_readings": distances,
            "customers_sampled": series[report.CUSTOMER].n_unique(),
            "image_bytes": sum(len(svg) for _, svg in drawn.values()),
        }
        remember(lakehouse, REPORT_NAME, DRAWN, {**seen, VERDICT: numbers})
    except StorageError as error:
        raise as_failure(error) from error
    return dg.MaterializeResult(metadata={**_metadata(uri, images, rows, numbers), REDRAWN: True})


def _image_path(name: str) -> str:
    return f"{report.REPORT_PATH.rsplit('/', 1)[0]}/{name}.svg"


def _kept(lakehouse: Lakehouse, seen: dict[str, Any]) -> tuple[str, dict[str, bytes], dict[str, int]] | None:
    """The report as last drawn (its URI, its aggregate charts, its numbers) when the tables it draws,
    the rules and the key are all as they were then and its files are all there; else None."""
    record = recorded(lakehouse, REPORT_NAME, DRAWN)
    if record is None or what_was_seen(record) != seen:
        return None
    numbers = record.get(VERDICT)
    if not isinstance(numbers, dict) or not lakehouse.has_file(REPORT_PATH):
        return None
    images = {name: lakehouse.get_bytes(_image_path(name)) for name in AGGREGATE_CHARTS}
    kept = {name: svg for name, svg in images.items() if svg is not None}
    return (lakehouse.file_uri(REPORT_PATH), kept, numbers) if len(kept) == len(images) else None


def _metadata(
    uri: str, images: dict[str, bytes], rows: dict[str, int], numbers: dict[str, int]
) -> dict[str, Any]:
    images = {  # aggregates only: the instance keeps every materialization's metadata for good
        name: dg.MetadataValue.md(f"![{name}](data:{SVG};base64,{base64.b64encode(svg).decode()})")
        for name, svg in images.items()
    }
    return {
        "dagster/uri": dg.MetadataValue.path(uri),
        "report_uri": dg.MetadataValue.path(uri),
        **images,
        **{f"rows/{name}": count for name, count in rows.items()},
        **numbers,
    }
