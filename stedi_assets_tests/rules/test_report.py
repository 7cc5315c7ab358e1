"""The report's aggregates on hand-made frames: exact rows, and no one named in them."""

from __future__ import annotations

import polars as pl
from polars.testing import assert_frame_equal

from stedi_assets.rules import report

SECRET = b"report-test-key"


def test_histogram_counts_values_in_equal_bins_the_maximum_in_the_last():
    frame = pl.LazyFrame({"d": [0.0, 10.0, 10.0, 20.0, None]})

    bins = report.histogram(frame, "d", bins=2).collect()

    expected = pl.DataFrame({"start": [0.0, 10.0], "end": [10.0, 20.0], "count": [1, 3]})
    assert_frame_equal(bins, expected)


def test_histogram_of_integers_gives_each_bin_as_many_whole_numbers():
    frame = pl.LazyFrame({"d": list(range(10))})

    bins = report.histogram(frame, "d", bins=3).collect()

    assert bins.rows() == [(0.0, 4.0, 4), (4.0, 8.0, 4), (8.0, 12.0, 2)]


def test_histogram_of_one_value_is_one_bin_and_of_nothing_is_empty():
    one = report.histogram(pl.LazyFrame({"d": [7, 7]}), "d", bins=30).collect()
    nothing = report.histogram(pl.LazyFrame({"d": [None]}, schema={"d": pl.Int64}), "d").collect()

    assert one.rows() == [(7.0, 8.0, 2)]
    assert nothing.height == 0


def _order(*emails: str, secret: bytes = SECRET) -> list[str]:
    """Canonical emails in the order of their hashes seeded from the key (the sample's order)."""
    hashes = pl.Series(emails).hash(seed=report.sample_seed(secret)).to_list()
    return [email for _, email in sorted(zip(hashes, emails, strict=True))]


def test_the_sample_is_numbered_by_keyed_hash_and_spellings_of_one_person_share_a_number():
    frame = pl.LazyFrame({"user": ["a@x.com", "A@X.com ", "b@x.com", "c@x.com", None]})

    sampled = report.sampled_people(frame, "user", SECRET, n=3).collect()

    rank = {email: i for i, email in enumerate(_order("a@x.com", "b@x.com", "c@x.com"), start=1)}
    assert dict(sampled.iter_rows()) == {
        "a@x.com": rank["a@x.com"],
        "A@X.com ": rank["a@x.com"],
        "b@x.com": rank["b@x.com"],
        "c@x.com": rank["c@x.com"],
    }


def test_the_sample_is_the_same_every_time_and_at_most_n():
    frame = pl.LazyFrame({"user": [f"p{i}@x.com" for i in range(20)]})

    first = report.sampled_people(frame, "user", SECRET).collect().sort("customer")
    again = report.sampled_people(frame.reverse(), "user", SECRET).collect().sort("customer")

    assert_frame_equal(first, again)
    assert first["customer"].to_list() == [1, 2, 3, 4, 5]
    assert first["user"].to_list() == _order(*(f"p{i}@x.com" for i in range(20)))[:5]


def test_another_key_samples_other_people():
    people = [f"p{i}@x.com" for i in range(20)]
    frame = pl.LazyFrame({"user": people})

    other = report.sampled_people(frame, "user", b"another key").collect().sort("customer")

    assert other["user"].to_list() == _order(*people, secret=b"another key")[:5]
    assert other["user"].to_list() != _order(*people)[:5]


def _readings() -> pl.LazyFrame:
    return pl.LazyFrame(
        {
            "user": ["a@x.com", "a@x.com", "a@x.com", "b@x.com", "c@x.com"],
            "timestamp": [10_000, 10_500, 12_000, 99_000, 5_000],
            "x": [3.0, 0.0, 1.0, 0.0, 9.0],
            "y": [4.0, 0.0, 2.0, 1.0, 9.0],
            "z": [0.0, 1.0, 2.0, 0.0, 9.0],
        }
    )


def test_the_magnitude_is_averaged_per_second_since_each_customers_first_reading():
    people = pl.DataFrame({"user": ["a@x.com", "b@x.com"], "customer": [1, 2]})

    series = report.magnitude_series(_readings(), people, "user", "timestamp").collect()

    expected = pl.DataFrame(
        {
            "customer": [1, 1, 2],
            "elapsed_ms": [0, 2_000, 0],
            "magnitude": [(5.0 + 1.0) / 2, 3.0, 1.0],
            "readings": [2, 1, 1],
        }
    )
    assert_frame_equal(series, expected)
    assert "user" not in series.columns and "timestamp" not in series.columns


def test_longer_series_get_wider_buckets_within_the_points():
    people = pl.DataFrame({"user": ["a@x.com"], "customer": [1]})

    series = report.magnitude_series(_readings(), people, "user", "timestamp", points=1).collect()

    # 2 s from first to last reading in at most 1 point: buckets of 3 s
    assert series.rows() == [(1, 0, (5.0 + 1.0 + 3.0) / 3, 3)]


def test_the_funnel_goes_from_landing_to_curated():
    assert [t.zone for t in report.FUNNEL] == ["landing"] * 3 + ["trusted"] * 3 + ["curated"] * 2
    assert report.FUNNEL[-1].name == "machine_learning_curated"
