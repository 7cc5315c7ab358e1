"""The zone rules (stedi_assets.rules.transforms) on tiny hand-made frames."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import polars as pl
from polars.testing import assert_frame_equal

from stedi_assets.rules import transforms
from stedi_assets.rules.catalog import PROVENANCE
from stedi_assets.rules.identity import pseudonym_map
from stedi_assets.rules.transforms import MlIdentity, MlJoin
from stedi_assets_tests.frames import CONSENT, NO_REJECTS, customer_rejects, landing, rows_frame

PROVENANCE_NAMES = {c.name for c in PROVENANCE}
SECRET = b"transform-test-key"


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
    assert_rows(transforms.customer_trusted(frame, NO_REJECTS), expected)


def test_consent_zero_or_null_is_not_consent() -> None:
    frame = customers(
        customer("zero@x.com", "s1", consent=0),
        customer("null@x.com", "s2", consent=None),
        customer("yes@x.com", "s3", consent=CONSENT),
    )
    assert_rows(
        transforms.customer_trusted(frame, NO_REJECTS),
        declared("customer_trusted", customer("yes@x.com", "s3")),
    )


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
    assert_rows(transforms.step_trainer_trusted(readings, curated, landing_customers, NO_REJECTS), expected)


def test_step_trainer_exact_duplicates_collapse() -> None:
    landing_customers = customers(customer("a@x.com", "s1"))
    curated = declared("customer_curated", customer("a@x.com", "s1")).lazy()
    readings = landing("step_trainer", step("s1", 1), step("s1", 1, _source_file="step_trainer-2.json"))
    expected = declared("step_trainer_trusted", step("s1", 1))
    assert_rows(transforms.step_trainer_trusted(readings, curated, landing_customers, NO_REJECTS), expected)


def test_serial_shared_with_non_curated_customer_excluded() -> None:
    landing_customers = customers(
        customer("a@x.com", "s1"),
        customer("d@x.com", "S1 ", consent=None),
        customer("e@x.com", "s5"),
    )
    curated = declared("customer_curated", customer("a@x.com", "s1"), customer("e@x.com", "s5")).lazy()
    readings = landing("step_trainer", step("s1", 1), step("s5", 2))
    assert_rows(
        transforms.step_trainer_trusted(readings, curated, landing_customers, NO_REJECTS),
        declared("step_trainer_trusted", step("s5", 2)),
    )
    assert_rows(
        transforms.ambiguous_serials(landing_customers, curated, NO_REJECTS),
        pl.DataFrame({"serialNumber": ["s1"]}, schema={"serialNumber": pl.String}),
    )


def test_serial_claimed_by_an_earlier_record_of_someone_else_is_not_attributable() -> None:
    """Fail closed: d once claimed s1, so an s1 reading may be d's, whoever holds s1 now."""
    landing_customers = customers(
        customer("a@x.com", "s1"),
        customer("d@x.com", "s1", consent=None, updated=1),
        customer("d@x.com", "s7", consent=None, updated=2),
    )
    curated = declared("customer_curated", customer("a@x.com", "s1")).lazy()
    readings = landing("step_trainer", step("s1", 1))
    assert (
        transforms.step_trainer_trusted(readings, curated, landing_customers, NO_REJECTS).collect().height
        == 0
    )
    assert transforms.ambiguous_serials(landing_customers, curated, NO_REJECTS).collect().rows() == [("s1",)]


def subject(user: str, secret: bytes = SECRET) -> str:
    """The subject_id of a reading's user: HMAC-SHA256 of the canonical email (for these ASCII test
    emails, lower-cased and trimmed), computed independently of the code under test."""
    return hmac.new(secret, user.strip().lower().encode(), hashlib.sha256).hexdigest()


def ml_row(st: dict[str, Any], acc: dict[str, Any]) -> dict[str, Any]:
    return st | acc | {"subject_id": subject(acc["user"])}


ML_CURATED = declared("customer_curated", customer("a@x.com", "s1"), customer("b@x.com", "s2"))
ST_A10, ST_B10, ST_A20 = step("S1", 10, 5), step("s2", 10, 6), step("s1", 20, 7)
ACC_A10, ACC_B10, ACC_A30 = reading("A@x.com", 10, 0.1), reading("b@x.com", 10, 0.2), reading("a@x.com", 30)
ML_STEPS = declared("step_trainer_trusted", ST_A10, ST_B10, ST_A20)
ML_READINGS = declared("accelerometer_trusted", ACC_A10, ACC_B10, ACC_A30)


def ml(join: MlJoin, identity: MlIdentity = MlIdentity.subject_id) -> pl.LazyFrame:
    return transforms.machine_learning_curated(
        ML_STEPS.lazy(), ML_READINGS.lazy(), ML_CURATED.lazy(), SECRET, join, identity
    )


def ml_expected(*rows: dict[str, Any], identity: MlIdentity = MlIdentity.subject_id) -> pl.DataFrame:
    """Expected training rows: declared columns in declared order, `user` only with ml_identity=email."""
    expected = declared("machine_learning_curated", *rows)
    return expected if identity is MlIdentity.email else expected.drop("user")


SEED_ROWS = (
    ml_row(ST_A10, ACC_A10),
    ml_row(ST_A10, ACC_B10),
    ml_row(ST_B10, ACC_A10),
    ml_row(ST_B10, ACC_B10),
)


def test_seed_join_pairs_every_reading_at_the_same_time() -> None:
    assert_rows(ml(MlJoin.seed), ml_expected(*SEED_ROWS))
    assert ml(MlJoin.seed).collect_schema().names() == [
        "sensorReadingTime",
        "serialNumber",
        "distanceFromObject",
        "subject_id",
        "timestamp",
        "x",
        "y",
        "z",
        "event_day",  # the UTC day of sensorReadingTime: the table's partition
    ]


def test_email_identity_keeps_the_user_beside_the_subject_id() -> None:
    expected = ml_expected(*SEED_ROWS, identity=MlIdentity.email)
    assert_rows(ml(MlJoin.seed, MlIdentity.email), expected)
    assert expected.columns[3:5] == ["subject_id", "user"]


def test_same_customer_join_pairs_owner_only() -> None:
    owner_rows = (ml_row(ST_A10, ACC_A10), ml_row(ST_B10, ACC_B10))
    assert_rows(ml(MlJoin.same_customer), ml_expected(*owner_rows))
    assert_rows(
        ml(MlJoin.same_customer, MlIdentity.email), ml_expected(*owner_rows, identity=MlIdentity.email)
    )


def test_cross_customer_pairs_are_the_seed_extras() -> None:
    extras = (ml_row(ST_A10, ACC_B10), ml_row(ST_B10, ACC_A10))
    assert_rows(
        transforms.cross_customer_pairs(ml(MlJoin.seed), ML_CURATED.lazy(), SECRET), ml_expected(*extras)
    )
    assert_rows(
        transforms.cross_customer_pairs(ml(MlJoin.seed, MlIdentity.email), ML_CURATED.lazy(), SECRET),
        ml_expected(*extras, identity=MlIdentity.email),
    )
    owners = transforms.cross_customer_pairs(ml(MlJoin.same_customer), ML_CURATED.lazy(), SECRET)
    assert owners.collect().height == 0
    # under another key no subject_id is a curated customer's: every row is someone else's pair
    other_key = transforms.cross_customer_pairs(ml(MlJoin.same_customer), ML_CURATED.lazy(), b"another-key")
    assert other_key.collect().height == 2


def trusted_emails(frame: pl.LazyFrame, rejects: pl.LazyFrame = NO_REJECTS) -> list[str]:
    return sorted(transforms.customer_trusted(frame, rejects).collect()["email"])


def test_an_undated_withdrawal_means_no_consent() -> None:
    frame = customers(
        customer("a@x.com", "s1", updated=5, consent=CONSENT),
        customer("a@x.com", "s1", updated=None, consent=None),
        customer("b@x.com", "s2", updated=5, consent=CONSENT),
        customer("b@x.com", "s2", updated=None, consent=CONSENT),
    )
    assert trusted_emails(frame) == ["b@x.com"]


def test_records_tied_on_the_newest_date_must_all_consent() -> None:
    frame = customers(
        customer("a@x.com", "s1", updated=5, consent=CONSENT, _source_file="customer-2.json"),
        customer("A@x.com", "s1", updated=5, consent=0, _source_file="customer-1.json"),
        customer("b@x.com", "s2", updated=5, consent=CONSENT),
        customer("b@x.com", "s2", updated=5, consent=CONSENT + 1),
        customer("c@x.com", "s3", updated=4, consent=None),
        customer("c@x.com", "s3", updated=5, consent=CONSENT),
    )
    assert trusted_emails(frame) == ["b@x.com", "c@x.com"]


def test_a_quarantined_line_naming_a_customer_holds_them() -> None:
    frame = customers(
        customer("a@x.com", "s1", updated=5),
        customer("b@x.com", "s2", updated=5),
        customer("c@x.com", "s3", updated=5),
        customer("d@x.com", "s4", updated=5),
    )
    rejects = customer_rejects(
        '{"email": " A@X.com", "shareWithResearchAsOfDate": false}',
        '{"EMAIL":"b@x.com","serialNumber":"s2","lastUpdateDate": 9',
        '{"email": "c@x.com", "lastUpdateDate": 4, "shareWithResearchAsOfDate": "no"}',
        '{"customerName": "nobody in particular"',
    )
    assert trusted_emails(frame, rejects) == ["c@x.com", "d@x.com"]
    assert sorted(transforms.customers_on_hold(frame, rejects).collect()["_key"]) == ["a@x.com", "b@x.com"]


def test_recovered_claims_read_the_raw_text() -> None:
    rejects = customer_rejects(
        '{"Email": "a@x.com", "SerialNumber": "s1", "lastUpdateDate": "12"}',
        '{"serialNumber": "s9"',
        "not json at all",
    )
    assert transforms.recovered_customer_claims(rejects).collect().rows() == [
        ("a@x.com", "s1", 12),
        (None, "s9", None),
    ]


def test_what_json_forbids_in_a_quarantined_value_is_no_crash() -> None:
    """A control character or a lone UTF-16 surrogate escape in a quarantined line's email used to
    make the decoding raise, failing every run on one bad line; the identity is still recovered."""
    rejects = customer_rejects(
        '{"email": "a\x01b@x.com", "serialNumber": "s1"',
        '{"email": "c\\ud800d@x.com", "serialNumber": "s2"',
        '{"email": "e\\\\ud800@x.com", "serialNumber": "s3"',  # an escaped backslash, then text
        '{"email": "f\\ud83d\\ude00g@x.com", "serialNumber": "s4"',  # a valid pair: an emoji
    )
    assert transforms.recovered_customer_claims(rejects).collect().select("email").to_series().to_list() == [
        "ab@x.com",
        "cd@x.com",
        "e\\ud800@x.com",
        "f\U0001f600g@x.com",  # the person the line names, as the line's own JSON parse gives it
    ]


def test_a_serial_claimed_by_a_quarantined_line_is_not_attributable() -> None:
    landing_customers = customers(customer("a@x.com", "s1"), customer("b@x.com", "s2"))
    curated = declared("customer_curated", customer("a@x.com", "s1"), customer("b@x.com", "s2")).lazy()
    readings = landing("step_trainer", step("s1", 1), step("s2", 2))
    rejects = customer_rejects(
        '{"serialNumber": "S1 ", "email": ', '{"email": "b@x.com", "serialNumber": "s2"'
    )
    assert_rows(
        transforms.step_trainer_trusted(readings, curated, landing_customers, rejects),
        declared("step_trainer_trusted", step("s2", 2)),
    )


def test_from_consent_date_keeps_readings_taken_since_consenting() -> None:
    trusted = declared(
        "customer_trusted", customer("a@x.com", "s1", consent=100), customer("b@x.com", "s2", consent=300)
    )
    readings = landing(
        "accelerometer", reading("a@x.com", 99), reading("A@x.com", 100), reading("b@x.com", 200)
    )
    policy = transforms.ConsentPolicy.from_consent_date
    assert_rows(
        transforms.accelerometer_trusted(readings, trusted.lazy(), policy),
        declared("accelerometer_trusted", reading("A@x.com", 100)),
    )
    assert_rows(
        transforms.accelerometer_trusted(readings, trusted.lazy()),
        declared(
            "accelerometer_trusted", reading("a@x.com", 99), reading("A@x.com", 100), reading("b@x.com", 200)
        ),
    )
    landing_customers = customers(
        customer("a@x.com", "s1", consent=100), customer("b@x.com", "s2", consent=300)
    )
    steps = landing("step_trainer", step("s1", 99), step("s1", 100), step("s2", 200), step("s2", 300))
    assert_rows(
        transforms.step_trainer_trusted(steps, trusted.lazy(), landing_customers, NO_REJECTS, policy),
        declared("step_trainer_trusted", step("s1", 100), step("s2", 300)),
    )


def test_identities_decided_over_all_days_give_each_part_the_rows_it_gives_alone() -> None:
    """A reading table's write decides once, over every day it recomputes, which spellings of an
    identity it keeps (and their pseudonyms); a part given that decision keeps exactly the rows it
    keeps deciding alone, under both consent policies, whatever other days' spellings it holds."""
    day = 86_400_000
    trusted = declared(
        "customer_trusted", customer("a@x.com", "s1", consent=100), customer("b@x.com", "s2", consent=day)
    ).lazy()
    readings = landing(
        "accelerometer",
        reading("A@x.com ", 99),
        reading("a@x.com", 150),
        reading("c@x.com", 160),
        reading("B@X.com", day + 5),
        reading("b@x.com", day - 1),
    )
    first_day = readings.filter(pl.col("timestamp") < day)
    users = transforms.trusted_users(readings, trusted).collect().lazy()
    for policy in transforms.ConsentPolicy:
        alone = transforms.accelerometer_trusted(first_day, trusted, policy).collect()
        assert_rows(transforms.accelerometer_trusted(first_day, trusted, policy, users), alone)
        assert alone.height == (3 if policy is transforms.ConsentPolicy.any_time else 1)

    landing_customers = customers(
        customer("a@x.com", "s1", consent=100), customer("b@x.com", "s2", consent=day)
    )
    steps = landing("step_trainer", step("S1 ", 99), step("s1", 150), step("s9", 160), step("s2", day + 5))
    for policy in transforms.ConsentPolicy:
        devices = transforms.trusted_devices(trusted, landing_customers, NO_REJECTS, policy).collect().lazy()
        serials = transforms.device_serials(steps, devices).collect().lazy()
        part = steps.filter(pl.col("sensorReadingTime") < day)
        alone = transforms.readings_of_devices(part, devices).collect()
        assert_rows(transforms.readings_of_devices(part, devices, serials), alone)
        assert alone.height == (2 if policy is transforms.ConsentPolicy.any_time else 1)

    subjects = pseudonym_map(ML_READINGS.lazy(), "user", SECRET).collect().lazy()
    part = ML_READINGS.lazy().filter(pl.col("timestamp") < 20)
    for join in MlJoin:
        alone = transforms.machine_learning_curated(ML_STEPS.lazy(), part, ML_CURATED.lazy(), SECRET, join)
        given = transforms.machine_learning_curated(
            ML_STEPS.lazy(), part, ML_CURATED.lazy(), SECRET, join, subjects=subjects
        )
        assert_rows(given, alone.collect())
