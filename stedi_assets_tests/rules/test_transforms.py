"""The zone rules (stedi_assets.rules.transforms) on tiny hand-made frames."""

from __future__ import annotations

from typing import Any

import polars as pl
from polars.testing import assert_frame_equal

from stedi_assets.rules import transforms
from stedi_assets.rules.catalog import PROVENANCE
from stedi_assets.rules.transforms import MlJoin
from stedi_assets_tests.frames import CONSENT, landing, rows_frame

PROVENANCE_NAMES = {c.name for c in PROVENANCE}


def customer(
    email: str, serial: str, *, consent: int | None = CONSENT, updated: int | None = 1, **fields: Any
) -> dict[str, Any]:
    return {
        "email": email,
        "serialNumber": serial,
        "lastUpdateDate": updated,
        "shareWithResearchAsOfDate": consent,
        **fields,
    }


def customers(*rows: dict[str, Any]) -> pl.LazyFrame:
    return landing("customer", *rows)


def reading(user: str, timestamp: int, x: float = 0.5, y: float = -1.0, z: float = 2.0, **prov: Any):
    return {"user": user, "timestamp": timestamp, "x": x, "y": y, "z": z, **prov}


def step(serial: str, time: int, distance: int = 10, **prov: Any):
    return {"sensorReadingTime": time, "serialNumber": serial, "distanceFromObject": distance, **prov}


def declared(name: str, *rows: dict[str, Any]) -> pl.DataFrame:
    """Expected rows of a table without provenance: provenance keys in `rows` are dropped."""
    return rows_frame(name, [{k: v for k, v in r.items() if k not in PROVENANCE_NAMES} for r in rows])


def sort(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(frame.columns, nulls_last=True)


def assert_rows(actual: pl.LazyFrame | pl.DataFrame, expected: pl.DataFrame) -> None:
    """Same rows in any order, same columns in the same order, same dtypes."""
    actual = actual.collect() if isinstance(actual, pl.LazyFrame) else actual
    assert_frame_equal(sort(actual), sort(expected))


def test_latest_update_wins() -> None:
    rows = [
        customer("a@x.com", "s1", updated=1, customerName="Old"),
        customer("a@x.com", "s1", updated=3, customerName="New"),
        customer("a@x.com", "s1", updated=2, customerName="Middle"),
    ]
    expected = landing("customer", *rows).collect()[1:2]
    assert_rows(transforms.customer_current_state(customers(*rows)), expected)


def test_undated_record_never_wins() -> None:
    rows = [
        customer("a@x.com", "s1", updated=1, customerName="Dated"),
        customer("a@x.com", "s1", updated=None),
    ]
    expected = landing("customer", *rows).collect()[0:1]
    assert_rows(transforms.customer_current_state(customers(*rows)), expected)


def test_update_tie_broken_by_file_then_line() -> None:
    rows = [
        customer("a@x.com", "s1", customerName="A", _source_file="customer-2.json", _line_number=1),
        customer("a@x.com", "s1", customerName="A old", _source_file="customer-1.json", _line_number=9),
        customer("b@x.com", "s2", customerName="B", _source_file="customer-1.json", _line_number=5),
        customer("b@x.com", "s2", customerName="B old", _source_file="customer-1.json", _line_number=4),
    ]
    expected = landing("customer", rows[0], rows[2]).collect()
    assert_rows(transforms.customer_current_state(customers(*rows)), expected)


def test_email_identity_ignores_case_and_whitespace() -> None:
    rows = [customer(" A@X.com", "s1", updated=1), customer("a@x.com", "s1", updated=2)]
    expected = landing("customer", *rows).collect()[1:2]
    assert_rows(transforms.customer_current_state(customers(*rows)), expected)


def test_latest_record_without_consent_not_trusted() -> None:
    frame = customers(
        customer("a@x.com", "s1", updated=1, consent=CONSENT),
        customer(" A@x.com ", "s1", updated=2, consent=None),
        customer("b@x.com", "s2", updated=1, consent=None),
        customer("b@x.com", "s2", updated=2, consent=CONSENT),
    )
    expected = declared("customer_trusted", customer("b@x.com", "s2", updated=2, consent=CONSENT))
    assert_rows(transforms.customer_trusted(frame), expected)


def test_consent_zero_or_null_is_not_consent() -> None:
    frame = customers(
        customer("zero@x.com", "s1", consent=0),
        customer("null@x.com", "s2", consent=None),
        customer("yes@x.com", "s3", consent=CONSENT),
    )
    assert_rows(transforms.customer_trusted(frame), declared("customer_trusted", customer("yes@x.com", "s3")))


def test_accelerometer_only_trusted_users() -> None:
    trusted = declared("customer_trusted", customer("a@x.com", "s1"), customer(" B@X.COM", "s2")).lazy()
    readings = landing(
        "accelerometer",
        reading("A@x.com ", 1),
        reading("b@x.com", 2),
        reading("c@x.com", 3),
        reading("a@x.com.evil", 4),
    )
    expected = declared("accelerometer_trusted", reading("A@x.com ", 1), reading("b@x.com", 2))
    assert_rows(transforms.accelerometer_trusted(readings, trusted), expected)


def test_accelerometer_exact_duplicates_collapse() -> None:
    trusted = declared("customer_trusted", customer("a@x.com", "s1")).lazy()
    readings = landing(
        "accelerometer",
        reading("a@x.com", 1, _source_file="accelerometer-1.json", _line_number=1),
        reading("a@x.com", 1, _source_file="accelerometer-2.json", _line_number=7),
        reading("a@x.com", 1, x=0.75),
    )
    expected = declared("accelerometer_trusted", reading("a@x.com", 1), reading("a@x.com", 1, x=0.75))
    assert_rows(transforms.accelerometer_trusted(readings, trusted), expected)


def test_curated_needs_a_reading() -> None:
    trusted = declared("customer_trusted", customer("a@x.com", "s1"), customer("b@x.com", "s2"))
    readings = declared("accelerometer_trusted", reading(" A@X.com", 1), reading("c@x.com", 2))
    expected = declared("customer_curated", customer("a@x.com", "s1"))
    assert_rows(transforms.customer_curated(trusted.lazy(), readings.lazy()), expected)


def test_step_trainer_only_curated_serials() -> None:
    landing_customers = customers(customer("a@x.com", "s1"), customer("b@x.com", "s2", consent=None))
    curated = declared("customer_curated", customer("a@x.com", "s1")).lazy()
    readings = landing("step_trainer", step("s1", 1), step(" S1", 2), step("s2", 3), step("s9", 4))
    expected = declared("step_trainer_trusted", step("s1", 1), step(" S1", 2))
    assert_rows(transforms.step_trainer_trusted(readings, curated, landing_customers), expected)


def test_step_trainer_exact_duplicates_collapse() -> None:
    landing_customers = customers(customer("a@x.com", "s1"))
    curated = declared("customer_curated", customer("a@x.com", "s1")).lazy()
    readings = landing("step_trainer", step("s1", 1), step("s1", 1, _source_file="step_trainer-2.json"))
    expected = declared("step_trainer_trusted", step("s1", 1))
    assert_rows(transforms.step_trainer_trusted(readings, curated, landing_customers), expected)


def test_serial_shared_with_non_curated_customer_excluded() -> None:
    landing_customers = customers(
        customer("a@x.com", "s1"),
        customer("d@x.com", "S1 ", consent=None),
        customer("e@x.com", "s5"),
    )
    curated = declared("customer_curated", customer("a@x.com", "s1"), customer("e@x.com", "s5")).lazy()
    readings = landing("step_trainer", step("s1", 1), step("s5", 2))
    assert_rows(
        transforms.step_trainer_trusted(readings, curated, landing_customers),
        declared("step_trainer_trusted", step("s5", 2)),
    )
    assert_rows(
        transforms.ambiguous_serials(landing_customers, curated),
        pl.DataFrame({"serialNumber": ["s1"]}, schema={"serialNumber": pl.String}),
    )


def test_serial_released_by_earlier_record_is_attributable() -> None:
    landing_customers = customers(
        customer("a@x.com", "s1"),
        customer("d@x.com", "s1", consent=None, updated=1),
        customer("d@x.com", "s7", consent=None, updated=2),
    )
    curated = declared("customer_curated", customer("a@x.com", "s1")).lazy()
    readings = landing("step_trainer", step("s1", 1))
    assert_rows(
        transforms.step_trainer_trusted(readings, curated, landing_customers),
        declared("step_trainer_trusted", step("s1", 1)),
    )
    assert transforms.ambiguous_serials(landing_customers, curated).collect().height == 0


def ml_row(st: dict[str, Any], acc: dict[str, Any]) -> dict[str, Any]:
    return st | acc


ML_CURATED = declared("customer_curated", customer("a@x.com", "s1"), customer("b@x.com", "s2"))
ST_A10, ST_B10, ST_A20 = step("S1", 10, 5), step("s2", 10, 6), step("s1", 20, 7)
ACC_A10, ACC_B10, ACC_A30 = reading("A@x.com", 10, 0.1), reading("b@x.com", 10, 0.2), reading("a@x.com", 30)
ML_STEPS = declared("step_trainer_trusted", ST_A10, ST_B10, ST_A20)
ML_READINGS = declared("accelerometer_trusted", ACC_A10, ACC_B10, ACC_A30)


def ml(join: MlJoin) -> pl.LazyFrame:
    return transforms.machine_learning_curated(ML_STEPS.lazy(), ML_READINGS.lazy(), ML_CURATED.lazy(), join)


def test_seed_join_pairs_every_reading_at_the_same_time() -> None:
    expected = declared(
        "machine_learning_curated",
        ml_row(ST_A10, ACC_A10),
        ml_row(ST_A10, ACC_B10),
        ml_row(ST_B10, ACC_A10),
        ml_row(ST_B10, ACC_B10),
    )
    assert_rows(ml(MlJoin.seed), expected)


def test_same_customer_join_pairs_owner_only() -> None:
    expected = declared("machine_learning_curated", ml_row(ST_A10, ACC_A10), ml_row(ST_B10, ACC_B10))
    assert_rows(ml(MlJoin.same_customer), expected)


def test_cross_customer_pairs_are_the_seed_extras() -> None:
    expected = declared("machine_learning_curated", ml_row(ST_A10, ACC_B10), ml_row(ST_B10, ACC_A10))
    assert_rows(transforms.cross_customer_pairs(ml(MlJoin.seed), ML_CURATED.lazy()), expected)
    assert transforms.cross_customer_pairs(ml(MlJoin.same_customer), ML_CURATED.lazy()).collect().height == 0
