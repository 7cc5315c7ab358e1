"""What the report draws: small aggregates of the tables, computed lazily so only they are collected.

No aggregate names anyone: the sampled customers are numbered 1..n, chosen by a hash of their
identity seeded from the pseudonym key (stable under one key, unrelated to who they are; the hash
never leaves the process), and their readings are
placed by the time elapsed since their own first reading, not by when they were taken.
"""

from __future__ import annotations

import hashlib

import polars as pl

from stedi_assets.rules.catalog import CURATED, LANDING, TABLES, TRUSTED
from stedi_assets.rules.identity import canonical

REPORT_PATH = "report/curated_report.html"
"""Where the report's HTML file lands, relative to the lakehouse root: it holds charts drawn
from people's readings, so a withdrawal removes it (customer_trusted) until it is redrawn."""

FUNNEL = tuple(t for t in TABLES.values() if t.zone in (LANDING, TRUSTED, CURATED))
"""The tables of the funnel, landing first, then trusted, then curated."""
SAMPLE = 5
"""How many customers the accelerometer chart shows at most."""
POINTS = 300
"""How many time buckets a sampled customer's series has at most."""
BINS = 30
CUSTOMER, ELAPSED, MAGNITUDE, READINGS = "customer", "elapsed_ms", "magnitude", "readings"
START, END, COUNT = "start", "end", "count"


def histogram(frame: pl.LazyFrame, column: str, bins: int = BINS) -> pl.LazyFrame:
    """The non-null values of `column` counted in at most `bins` equal bins from its minimum to its
    maximum (the maximum in the last bin), as (start, end, count); bins holding nothing are left out.
    Integers are binned by whole numbers (each bin holds as many values), so the bars do not alternate."""
    value = pl.col(column).cast(pl.Float64)
    low, high = value.min(), value.max()
    if frame.collect_schema()[column].is_integer():
        width = ((high - low + 1) / bins).ceil()
    else:
        width = pl.when(high > low).then((high - low) / bins).otherwise(1.0)
    index = ((value - low) / width).floor().clip(0, bins - 1)
    # counted per distinct value first (a streaming aggregation), then binned: memory holds the
    # distinct values, not the column
    per_value = frame.select(value).drop_nulls().group_by(column).agg(pl.len().alias("_n"))
    return (
        per_value.select(index.alias("_bin"), low.alias("_low"), width.alias("_width"), "_n")
        .group_by("_bin")
        .agg(pl.col("_n").sum().cast(pl.Int64).alias(COUNT), pl.col("_low").first(), pl.col("_width").first())
        .select(
            (pl.col("_low") + pl.col("_bin") * pl.col("_width")).alias(START),
            (pl.col("_low") + (pl.col("_bin") + 1) * pl.col("_width")).alias(END),
            COUNT,
        )
        .sort(START)
    )


def sample_seed(secret: bytes) -> int:
    """The 64-bit seed of the sample's hash, derived from the pseudonym key."""
    return int.from_bytes(hashlib.sha256(b"stedi.report.sample\0" + secret).digest()[:8], "big")


def sampled_people(frame: pl.LazyFrame, column: str, secret: bytes, n: int = SAMPLE) -> pl.LazyFrame:
    """Up to `n` people of `column`, those whose identity (canonical form) has the smallest hash
    seeded from `secret`, numbered 1..n in that order, as (each spelling of their identity in
    `column`, customer number). Polars' own hash, not the pseudonym's HMAC: it only orders people,
    and hashes every identity in one vectorized pass."""
    spellings = (
        frame.select(column).unique().drop_nulls().with_columns(canonical(pl.col(column)).alias("_canonical"))
    )
    rank = pl.col("_canonical").hash(seed=sample_seed(secret))
    chosen = (
        spellings.select("_canonical")
        .unique()
        .sort(rank, "_canonical")
        .head(n)
        .with_row_index(CUSTOMER, offset=1)
        .with_columns(pl.col(CUSTOMER).cast(pl.Int64))
    )
    return spellings.join(chosen, on="_canonical").select(column, CUSTOMER)


def magnitude_series(
    readings: pl.LazyFrame, people: pl.DataFrame, column: str, time: str, points: int = POINTS
) -> pl.LazyFrame:
    """The mean magnitude sqrt(x² + y² + z²) of the sampled people's readings per time bucket, as
    (customer, elapsed_ms: the bucket's start after the customer's first reading, magnitude,
    readings). Buckets are whole seconds, as few as keep the longest series within `points`."""
    magnitude = (pl.col("x") ** 2 + pl.col("y") ** 2 + pl.col("z") ** 2).sqrt()
    sampled = (
        # the sampled people's readings found by a filter that streams (an inner join held the
        # readings), then numbered
        readings.filter(pl.col(column).is_in(people.get_column(column).implode()))
        .join(people.lazy(), on=column)
        .select(CUSTOMER, pl.col(time), magnitude.alias(MAGNITUDE))
        .drop_nulls()
        .with_columns((pl.col(time) - pl.col(time).min().over(CUSTOMER)).alias(ELAPSED))
    )
    seconds = (pl.col(ELAPSED).max() / 1000 / points).floor() + 1
    bucket = pl.col(ELAPSED) // (seconds * 1000).cast(pl.Int64) * (seconds * 1000).cast(pl.Int64)
    return (
        sampled.with_columns(bucket.alias(ELAPSED))
        .group_by(CUSTOMER, ELAPSED)
        .agg(pl.col(MAGNITUDE).mean(), pl.len().cast(pl.Int64).alias(READINGS))
        .sort(CUSTOMER, ELAPSED)
    )
