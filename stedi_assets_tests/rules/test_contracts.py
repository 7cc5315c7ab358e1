"""The data contracts (stedi_assets.rules.contracts): each passes a good frame and fails a bad one."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from stedi_assets.rules import contracts, transforms
from stedi_assets.rules.catalog import ACCELEROMETER, INGESTED_AT, PROVENANCE, TABLES
from stedi_assets.rules.contracts import Severity
from stedi_assets.rules.transforms import MlJoin
from stedi_assets_tests.frames import CONSENT, NO_REJECTS, customer_rejects, landing, rows_frame

SECRET = b"contract-test-key"
OTHER_SECRET = b"another-key"


def customer_landing(*rows: dict[str, Any]) -> pl.LazyFrame:
    return landing("customer", *rows)


def customer(email: str, serial: str, consent: int | None = CONSENT) -> dict[str, Any]:
    return {"email": email, "serialNumber": serial, "lastUpdateDate": 1, "shareWithResearchAsOfDate": consent}


def reading(user: str, timestamp: int, x: float | None = 0.5) -> dict[str, Any]:
    return {"user": user, "timestamp": timestamp, "x": x, "y": 1.0, "z": -1.0}


def subject(canonical_email: str, secret: bytes = SECRET) -> str:
    """The subject_id of a canonical email, computed independently of the code under test."""
    return hmac.new(secret, canonical_email.encode(), hashlib.sha256).hexdigest()


def ml_reading(user: str, timestamp: int, x: float | None = 0.5, secret: bytes = SECRET) -> dict[str, Any]:
    """An accelerometer side of a training row: the reading and its owner's subject_id (the canonical
    form of these test emails is their lower-cased, trimmed spelling)."""
    return reading(user, timestamp, x) | {"subject_id": subject(user.strip().lower(), secret)}


def step(serial: str, time: int) -> dict[str, Any]:
    return {"sensorReadingTime": time, "serialNumber": serial, "distanceFromObject": 9}


def assert_verdict(
    verdict: contracts.Verdict,
    passed: bool,
    observed: Any,
    expected: Any,
    offending: pl.DataFrame | None = None,
    severity: Severity = Severity.ERROR,
) -> None:
    seen = (verdict.passed, verdict.observed, verdict.expected, verdict.severity)
    assert seen == (passed, observed, expected, severity), verdict.summary
    if offending is not None:
        assert_frame_equal(verdict.offending, offending)


def test_no_offending_rows_passes_an_empty_frame() -> None:
    frame = pl.DataFrame({"a": [1, 2]}).clear()
    verdict = contracts.no_offending_rows(frame.lazy(), "rows are odd")
    assert_verdict(verdict, True, 0, 0, frame)
    assert verdict.summary == "0 rows are odd"


def test_no_offending_rows_counts_all_samples_five_and_carries_severity() -> None:
    frame = pl.DataFrame({"a": [7, 6, 5, 4, 3, 2, 1], "b": list("abcdefg")})
    verdict = contracts.no_offending_rows(frame.lazy(), "rows are odd", Severity.WARN)
    assert_verdict(verdict, False, 7, 0, frame.head(5), Severity.WARN)
    assert verdict.summary == "7 rows are odd"


def test_no_offending_rows_is_an_error_by_default() -> None:
    frame = pl.DataFrame({"a": [1]})
    assert_verdict(contracts.no_offending_rows(frame.lazy(), "rows are odd"), False, 1, 0, frame)


LANDING = customer_landing(customer("a@x.com", "s1"), customer("b@x.com", "s2", consent=0))


def test_consent_passes_trusted_customers() -> None:
    trusted = transforms.customer_trusted(LANDING, NO_REJECTS)
    verdict = contracts.consent(trusted, LANDING, NO_REJECTS)
    assert_verdict(verdict, True, 1, 1, rows_frame("customer_trusted", []))
    assert verdict.summary == (
        "0 trusted customers without current research consent; 1 trusted of 1 consenting customers in landing"
    )


def test_consent_fails_non_consenting_customer() -> None:
    rows = [customer("a@x.com", "s1"), customer("b@x.com", "s2", consent=0)]
    trusted = rows_frame("customer_trusted", rows)
    verdict = contracts.consent(trusted.lazy(), LANDING, NO_REJECTS)
    assert_verdict(verdict, False, 2, 1, trusted[1:2])


def test_consent_fails_swapped_customer_with_right_count() -> None:
    trusted = rows_frame("customer_trusted", [customer("b@x.com", "s2", consent=0)])
    assert_verdict(contracts.consent(trusted.lazy(), LANDING, NO_REJECTS), False, 1, 1, trusted)


def test_consent_fails_missing_consenting_customer() -> None:
    trusted = rows_frame("customer_trusted", [])
    assert_verdict(contracts.consent(trusted.lazy(), LANDING, NO_REJECTS), False, 0, 1, trusted)


def test_consenting_only_fails_a_stale_consenting_record_of_a_withdrawn_customer() -> None:
    withdrawn = customer("A@x.com ", "s1", consent=None) | {"lastUpdateDate": 2}
    landing = customer_landing(customer("a@x.com", "s1"), withdrawn)
    stale = rows_frame("customer_trusted", [customer("a@x.com", "s1")])

    verdict = contracts.consenting_only(stale.lazy(), landing, NO_REJECTS)

    assert_verdict(verdict, False, 1, 0, stale)
    assert verdict.summary == "1 trusted customers without current research consent"
    assert contracts.consenting_only(
        transforms.customer_trusted(landing, NO_REJECTS), landing, NO_REJECTS
    ).passed


PARENTS = rows_frame("customer_trusted", [customer(" A@x.COM", "s1")]).lazy()
USERS_ARE_TRUSTED = contracts.Membership(
    "users_are_trusted", "accelerometer_trusted", "user", "customer_trusted", "email", "a trusted customer"
)


def test_membership_passes_known_children() -> None:
    child = rows_frame("accelerometer_trusted", [reading(" A@X.com", 1), reading("a@x.com", 2)])
    verdict = USERS_ARE_TRUSTED.verdict(child.lazy(), PARENTS)
    assert_verdict(verdict, True, 0, 0, child.clear())
    assert verdict.summary == "0 rows whose user is not a trusted customer"


def test_membership_of_no_rows_says_what_an_empty_table_gets() -> None:
    """The verdict a check gives without a query (nothing to examine) is the one a query of no rows gives."""
    empty = rows_frame("accelerometer_trusted", [reading("z@x.com", 1)]).clear()
    queried, unqueried = USERS_ARE_TRUSTED.verdict(empty.lazy(), PARENTS), USERS_ARE_TRUSTED.of_no_rows()
    fields = ("passed", "summary", "observed", "expected", "severity")
    assert [getattr(unqueried, f) for f in fields] == [getattr(queried, f) for f in fields]


def test_membership_fails_orphans() -> None:
    child = rows_frame("accelerometer_trusted", [reading("a@x.com", 1), reading("z@x.com", 2)])
    verdict = USERS_ARE_TRUSTED.verdict(child.lazy(), PARENTS)
    assert_verdict(verdict, False, 1, 0, child[1:2])
    assert verdict.summary == "1 rows whose user is not a trusted customer"


def test_membership_counts_a_row_without_the_key_as_an_orphan() -> None:
    child = rows_frame(
        "accelerometer_trusted",
        [reading("z@x.com", 1), reading("a@x.com", 2), reading(None, 3), reading("z@x.com", 4)],
    )
    verdict = USERS_ARE_TRUSTED.verdict(child.lazy(), PARENTS)
    assert_verdict(verdict, False, 3, 0, child[[0, 2, 3]])


def test_membership_fails_every_row_against_an_empty_parent() -> None:
    child = rows_frame("accelerometer_trusted", [reading("a@x.com", 1), reading("b@x.com", 2)])
    verdict = USERS_ARE_TRUSTED.verdict(child.lazy(), PARENTS.clear())
    assert_verdict(verdict, False, 2, 0, child)


def test_membership_describes_itself() -> None:
    assert USERS_ARE_TRUSTED.description == (
        "Every accelerometer_trusted row's user is a trusted customer (customer_trusted.email)."
    )


def ml_frame(*rows: dict[str, Any]) -> pl.DataFrame:
    """Training rows as the default (pseudonymous) table holds them: subject_id, no user column."""
    return rows_frame("machine_learning_curated", list(rows)).drop("user")


GOOD_PAIR = step("s1", 10) | ml_reading("a@x.com", 10)


def test_both_sides_present_passes_paired_rows() -> None:
    frame = ml_frame(GOOD_PAIR)
    assert_verdict(contracts.both_sides_present(frame.lazy()), True, 0, 0, frame.clear())
    # with ml_identity=email the table also keeps the email
    with_email = rows_frame("machine_learning_curated", [GOOD_PAIR])
    assert_verdict(contracts.both_sides_present(with_email.lazy()), True, 0, 0, with_email.clear())


def test_both_sides_present_fails_missing_side_or_different_time() -> None:
    frame = ml_frame(
        GOOD_PAIR,
        step("s1", 10) | ml_reading("a@x.com", 10, x=None),
        step("s1", 10) | ml_reading("a@x.com", 11),
        {"subject_id": subject("a@x.com"), "timestamp": 10, "x": 0.1, "y": 0.1, "z": 0.1},
        step("s1", 10) | reading("a@x.com", 10),  # a reading of no one: no subject_id
    )
    assert_verdict(contracts.both_sides_present(frame.lazy()), False, 4, 0, frame[1:])
    assert contracts.both_sides_present(frame.lazy()).summary == (
        "4 rows missing a Step Trainer or accelerometer side, or pairing different times"
    )


CURATED = rows_frame("customer_curated", [customer("a@x.com", "s1"), customer("b@x.com", "s2")]).lazy()


def test_cross_customer_passes_owner_pairs() -> None:
    frame = ml_frame(step("S1", 10) | ml_reading("A@x.com ", 10), step("s2", 10) | ml_reading("b@x.com", 10))
    verdict = contracts.cross_customer(frame.lazy(), CURATED, SECRET)
    assert_verdict(verdict, True, 0, 0, frame.clear(), Severity.WARN)


def test_cross_customer_fails_foreign_pairs() -> None:
    frame = ml_frame(
        step("s1", 10) | ml_reading("a@x.com", 10),
        step("s1", 10) | ml_reading("b@x.com", 10),
        step("s2", 10) | ml_reading("a@x.com", 10),
    )
    verdict = contracts.cross_customer(frame.lazy(), CURATED, SECRET)
    assert_verdict(verdict, False, 2, 0, frame[1:], Severity.WARN)
    assert verdict.summary == "2 rows pair one customer's Step Trainer with another customer's phone"


def test_cross_customer_finds_no_owner_for_a_subject_id_made_with_another_key() -> None:
    frame = ml_frame(step("s1", 10) | ml_reading("a@x.com", 10, secret=OTHER_SECRET))
    verdict = contracts.cross_customer(frame.lazy(), CURATED, SECRET)
    assert_verdict(verdict, False, 1, 0, frame, Severity.WARN)


def test_cross_customer_flags_the_seed_join_only() -> None:
    steps = rows_frame("step_trainer_trusted", [step("s1", 10), step("s2", 10)]).lazy()
    readings = rows_frame("accelerometer_trusted", [reading("a@x.com", 10), reading("b@x.com", 10)]).lazy()
    seed = transforms.machine_learning_curated(steps, readings, CURATED, SECRET, MlJoin.seed)
    owner = transforms.machine_learning_curated(steps, readings, CURATED, SECRET, MlJoin.same_customer)
    assert contracts.cross_customer(seed, CURATED, SECRET).observed == 2
    assert contracts.cross_customer(owner, CURATED, SECRET).passed
    # compared under another key, no row's subject_id is a curated customer's
    assert contracts.cross_customer(owner, CURATED, OTHER_SECRET).observed == 2


SUBJECTS_ARE_CURATED = contracts.Membership(
    "users_are_curated_customers",
    "machine_learning_curated",
    "subject_id",
    "customer_curated",
    "email",
    "a curated customer (by keyed hash)",
    pseudonymous=True,
)


def test_pseudonymous_membership_compares_keyed_hashes_under_the_given_key() -> None:
    child = ml_frame(step("s1", 10) | ml_reading(" A@x.com", 10), step("s1", 10) | ml_reading("z@x.com", 10))
    verdict = SUBJECTS_ARE_CURATED.verdict(child.lazy(), CURATED, SECRET)
    assert_verdict(verdict, False, 1, 0, child[1:2])
    assert verdict.summary == "1 rows whose subject_id is not a curated customer (by keyed hash)"
    assert SUBJECTS_ARE_CURATED.verdict(child.lazy(), CURATED, OTHER_SECRET).observed == 2
    with pytest.raises(ValueError, match="needs the pseudonym key"):
        SUBJECTS_ARE_CURATED.verdict(child.lazy(), CURATED)


def test_customers_held_warns_with_the_held_customers_keyed_hashes_only() -> None:
    landing = customer_landing(
        customer("a@x.com", "s1"), customer("b@x.com", "s2"), customer("c@x.com", "s3")
    )
    rejects = customer_rejects(
        '{"email": " B@x.com", "shareWithResearchAsOfDate": false}',
        '{"EMAIL": "a@x.com", "serialNumber": "s1"',
        '{"customerName": "nobody in particular"',
    )
    verdict = contracts.customers_held(landing, rejects, SECRET)
    held = pl.DataFrame({"subject_id": sorted([subject("a@x.com"), subject("b@x.com")])})
    assert_verdict(verdict, False, 2, 0, held, Severity.WARN)
    assert verdict.summary == (
        "2 customers on hold: a quarantined customer line names them and no later valid record supersedes it"
    )
    assert_verdict(
        contracts.customers_held(landing, NO_REJECTS, SECRET), True, 0, 0, held.clear(), Severity.WARN
    )


SERIALS = pl.DataFrame({"serialNumber": ["s1"]}, schema={"serialNumber": pl.String})


def test_shared_serials_passes_serials_of_curated_customers_only() -> None:
    landing = customer_landing(customer("a@x.com", "s1"), customer("b@x.com", "s2"))
    verdict = contracts.shared_serials(landing, CURATED, NO_REJECTS)
    assert_verdict(verdict, True, 0, 0, SERIALS.clear(), Severity.WARN)


def test_shared_serials_warns_on_a_serial_also_claimed_by_a_customer_not_curated() -> None:
    landing = customer_landing(
        customer("a@x.com", "s1"), customer("b@x.com", "s2"), customer("d@x.com", " S1", consent=None)
    )
    verdict = contracts.shared_serials(landing, CURATED, NO_REJECTS)
    assert_verdict(verdict, False, 1, 0, SERIALS, Severity.WARN)
    assert (
        verdict.summary == "1 curated customers' serial numbers are shared with customers who are not curated"
    )


def test_no_profile_columns_pass_sensor_columns() -> None:
    verdict = contracts.no_profile_columns([c.name for c in ACCELEROMETER.columns])
    assert_verdict(verdict, True, "none", "none")


def test_no_profile_columns_fail_profile_data() -> None:
    columns = ["user", "timestamp", "phone", "registrationDate", "birthDay", "email"]
    verdict = contracts.no_profile_columns(columns)
    assert_verdict(verdict, False, "birthDay, phone, registrationDate", "none")
    assert verdict.summary == "customer profile columns present: birthDay, phone, registrationDate"


ACCEL = TABLES["accelerometer_trusted"]


def test_schema_matches_declared() -> None:
    verdict = contracts.schema_matches(dict(ACCEL.dtypes), ACCEL)
    assert_verdict(verdict, True, 0, 0)
    assert verdict.summary == "columns and types as declared"


def test_schema_missing_column() -> None:
    actual = {k: v for k, v in ACCEL.dtypes.items() if k != "z"}
    verdict = contracts.schema_matches(actual, ACCEL)
    assert_verdict(verdict, False, 1, 0)
    assert verdict.summary == "z: missing (declared Float64)"


def test_schema_wrong_dtype() -> None:
    verdict = contracts.schema_matches(ACCEL.dtypes | {"timestamp": pl.String()}, ACCEL)
    assert_verdict(verdict, False, 1, 0)
    assert verdict.summary == "timestamp: String (declared Int64)"


def test_schema_wrong_time_zone() -> None:
    landing = TABLES["customer_landing"]
    verdict = contracts.schema_matches(landing.dtypes | {INGESTED_AT: pl.Datetime("us")}, landing)
    assert_verdict(verdict, False, 1, 0)
    assert verdict.summary.startswith(f"{INGESTED_AT}: ")


def test_schema_extra_column() -> None:
    verdict = contracts.schema_matches(ACCEL.dtypes | {"phone": pl.String()}, ACCEL)
    assert_verdict(verdict, False, 1, 0)
    assert verdict.summary == "phone: not declared"


def test_schema_provenance_is_declared_for_landing_only() -> None:
    with_provenance = ACCEL.dtypes | {c.name: c.dtype for c in PROVENANCE}
    assert contracts.schema_matches(with_provenance, TABLES["accelerometer_landing"]).passed
    assert contracts.schema_matches(with_provenance, ACCEL).observed == 3


def test_no_duplicate_rows_pass_distinct_rows() -> None:
    frame = pl.DataFrame({"a": [1, 1, 2], "b": ["x", "y", "x"]})
    assert_verdict(contracts.no_duplicate_rows(frame.lazy()), True, 0, 0, frame.clear())


def test_no_duplicate_rows_count_all_and_sample_five() -> None:
    frame = pl.DataFrame({"a": [1, 2, 1, 3, 2, 3, 4], "b": ["x"] * 7})
    verdict = contracts.no_duplicate_rows(frame.lazy())
    assert_verdict(verdict, False, 6, 0, pl.DataFrame({"a": [1, 2, 1, 3, 2], "b": ["x"] * 5}))
    assert verdict.summary == "6 rows are exact duplicates of another row"


def test_no_duplicate_rows_compares_rows_whose_hashes_recur_exactly() -> None:
    """Floats, nulls and strings: only equal rows count, every copy of them, in table order."""
    frame = pl.DataFrame(
        {
            "a": [0.1, 0.1, None, None, 0.1 + 0.2, 0.3],
            "b": ["x", "x", None, None, "y", "y"],
            "day": [1, 1, 2, 2, 3, 3],
        }
    )
    verdict = contracts.no_duplicate_rows(pl.concat([frame, frame[4:6]]).lazy())
    assert_verdict(verdict, False, 8, 0, frame[[0, 1, 2, 3, 4]])


def test_unique_identity_passes_distinct_emails() -> None:
    frame = rows_frame("customer_curated", [customer("a@x.com", "s1"), customer("b@x.com", "s1")])
    assert_verdict(contracts.unique_identity(frame.lazy(), "email"), True, 0, 0, frame.clear())


def test_unique_identity_fails_same_email_other_spelling() -> None:
    frame = rows_frame(
        "customer_curated", [customer(" A@x.com", "s1"), customer("b@x.com", "s2"), customer("a@X.COM", "s3")]
    )
    verdict = contracts.unique_identity(frame.lazy(), "email")
    assert_verdict(verdict, False, 2, 0, frame[[0, 2]])
    assert verdict.summary == "2 rows share their email with another row"


@pytest.mark.parametrize(
    ("observed", "upstream", "expected", "passed", "summary"),
    [
        (0, 10, None, False, "table is empty"),
        (11, 10, None, False, "11 rows exceed 10 in customer_landing"),
        (7, 10, 8, False, "7 rows, expected exactly 8"),
        (0, 10, 8, False, "table is empty; 0 rows, expected exactly 8"),
        (8, 10, 8, True, "8 rows"),
        (10, 10, None, True, "10 rows"),
        (10, None, None, True, "10 rows"),
    ],
)
def test_row_count(
    observed: int, upstream: int | None, expected: int | None, passed: bool, summary: str
) -> None:
    verdict = contracts.row_count(observed, upstream, expected, "customer_landing")
    assert_verdict(verdict, passed, observed, expected)
    assert verdict.summary == summary


def test_conservation_passes_when_every_line_is_accounted() -> None:
    verdict = contracts.conservation(10, 7, 3)
    assert_verdict(verdict, True, 10, 10)
    assert verdict.summary == "10 non-blank lines read, 7 accepted + 3 rejected"


def test_conservation_fails_lost_line() -> None:
    assert_verdict(contracts.conservation(10, 7, 2), False, 9, 10)


def test_conservation_fails_invented_line() -> None:
    assert_verdict(contracts.conservation(10, 8, 3), False, 11, 10)


def test_reject_rate_fails_on_any_reject_and_reports_the_rate() -> None:
    verdict = contracts.reject_rate(200, 2, 0.01)
    assert_verdict(verdict, False, 0.01, 0.01, severity=Severity.WARN)
    assert verdict.summary == "2 of 200 lines rejected (1.00%; limit 1.00%)"


def test_reject_rate_above_the_limit_is_observed_above_expected() -> None:
    assert_verdict(contracts.reject_rate(200, 3, 0.01), False, 0.015, 0.01)


def test_reject_rate_passes_without_rejects() -> None:
    assert_verdict(contracts.reject_rate(200, 0, 0.01), True, 0.0, 0.01, severity=Severity.WARN)


def test_reject_rate_of_nothing_read_is_zero() -> None:
    assert_verdict(contracts.reject_rate(0, 0, 0.0), True, 0.0, 0.0, severity=Severity.WARN)


@pytest.mark.parametrize(
    ("read", "rejected", "max_rate", "severity"),
    [
        (200, 1, 0.01, Severity.WARN),
        (200, 2, 0.01, Severity.WARN),
        (200, 3, 0.01, Severity.ERROR),
        (10, 10, 1.0, Severity.WARN),
        (10, 1, 0.0, Severity.ERROR),
    ],
)
def test_reject_rate_warns_up_to_the_limit_and_is_an_error_above_it(
    read: int, rejected: int, max_rate: float, severity: Severity
) -> None:
    verdict = contracts.reject_rate(read, rejected, max_rate)
    assert (verdict.passed, verdict.severity) == (False, severity), verdict.summary


def test_recounted_replaces_the_examined_days_old_count_with_their_new_one() -> None:
    sample = pl.DataFrame({"n": [1]})
    examined = contracts.Verdict(False, "3 things", 3, 0, sample, Severity.WARN)
    verdict = contracts.recounted(examined, then=2, recorded=10, what="things")
    assert (verdict.passed, verdict.observed, verdict.summary, verdict.severity) == (
        False,
        11,
        "11 things",
        Severity.WARN,
    )
    assert verdict.offending.equals(sample)
    assert contracts.recounted(
        contracts.Verdict(True, "0 things", 0), then=4, recorded=4, what="things"
    ).passed
