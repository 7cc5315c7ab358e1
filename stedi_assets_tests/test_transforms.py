"""The lakehouse rules (stedi_assets.transforms) on tiny hand-made frames."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from stedi_assets import transforms
from stedi_assets.schemas import INGESTED_AT, LINE_NUMBER, PROVENANCE, SOURCE_FILE
from stedi_assets.transforms import RAW_LINE, REASON, UTF8_VALID, MlJoin
from stedi_assets_tests.frames import CONSENT, LANDED_AT, landing, rows_frame


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
    return rows_frame(name, [{k: v for k, v in r.items() if k not in PROVENANCE} for r in rows])


def sort(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(frame.columns, nulls_last=True)


def assert_rows(actual: pl.LazyFrame | pl.DataFrame, expected: pl.DataFrame) -> None:
    """Same rows in any order, same columns in the same order, same dtypes."""
    actual = actual.collect() if isinstance(actual, pl.LazyFrame) else actual
    assert_frame_equal(sort(actual), sort(expected))


def raw(file: str, *lines: str | tuple[str, bool]) -> pl.DataFrame:
    """Expected raw_lines output; a line given as (text, False) is flagged invalid UTF-8."""
    texts = [line if isinstance(line, str) else line[0] for line in lines]
    valid = [True if isinstance(line, str) else line[1] for line in lines]
    n = len(lines)
    return pl.DataFrame(
        {
            SOURCE_FILE: [file] * n,
            LINE_NUMBER: list(range(1, n + 1)),
            RAW_LINE: texts,
            UTF8_VALID: valid,
            INGESTED_AT: [LANDED_AT] * n,
        },
        schema={
            SOURCE_FILE: pl.String,
            LINE_NUMBER: pl.Int64,
            RAW_LINE: pl.String,
            UTF8_VALID: pl.Boolean,
            INGESTED_AT: pl.Datetime("us", "UTC"),
        },
    )


def parse(blob: bytes, source: str, file: str = "file.json") -> pl.DataFrame:
    lines = transforms.raw_lines(blob, file, LANDED_AT).lazy()
    return transforms.parse_landing(lines, source, transforms.json_keys(lines)).collect()


def accepted(blob: bytes, source: str) -> pl.DataFrame:
    return transforms.accepted_rows(parse(blob, source).lazy(), source).collect()


def rejected(blob: bytes, source: str) -> pl.DataFrame:
    return transforms.rejected_rows(parse(blob, source).lazy()).collect()


def rejects(*rows: tuple[int, str, str]) -> pl.DataFrame:
    """Expected rejects of file.json: (line number, reason, raw line)."""
    return rows_frame(
        "customer_rejects",
        [
            {SOURCE_FILE: "file.json", LINE_NUMBER: n, REASON: reason, RAW_LINE: line, INGESTED_AT: LANDED_AT}
            for n, reason, line in rows
        ],
    )


def test_lines_numbered_per_file() -> None:
    first = transforms.raw_lines(b"a\nb\nc\n", "a.json", LANDED_AT)
    second = transforms.raw_lines(b"d\ne\n", "b.json", LANDED_AT)
    expected = pl.concat([raw("a.json", "a", "b", "c"), raw("b.json", "d", "e")])
    assert_frame_equal(pl.concat([first, second]), expected)


def test_bom_and_crlf_stripped() -> None:
    blob = b'\xef\xbb\xbf{"user": "a"}\r\n{"user": "b"}\r\n'
    expected = raw("f.json", '{"user": "a"}', '{"user": "b"}')
    assert_frame_equal(transforms.raw_lines(blob, "f.json", LANDED_AT), expected)


def test_trailing_newline_adds_no_line() -> None:
    with_newline = transforms.raw_lines(b"a\nb\n", "f.json", LANDED_AT)
    without = transforms.raw_lines(b"a\nb", "f.json", LANDED_AT)
    assert_frame_equal(with_newline, raw("f.json", "a", "b"))
    assert_frame_equal(without, raw("f.json", "a", "b"))


def test_blank_lines_numbered_but_not_parsed() -> None:
    first, last = '{"user": "a@x.com", "timestamp": 1}', '{"user": "b@x.com", "timestamp": 2}'
    blob = f"{first}\n\n   \r\n{last}\n".encode()
    expected = raw("file.json", first, "", "   ", last)
    assert_frame_equal(transforms.raw_lines(blob, "file.json", LANDED_AT), expected)
    parsed = parse(blob, "accelerometer")
    assert parsed[LINE_NUMBER].to_list() == [1, 4]
    assert parsed[REASON].to_list() == [None, None]


def test_invalid_utf8_flags_only_its_line() -> None:
    blob = b"\xef\xbb\xbfok one\r\n\xff\xfebad\r\nok \xc3\xa9\r\n"
    assert_frame_equal(
        transforms.raw_lines(blob, "f.json", LANDED_AT),
        raw("f.json", "ok one", ("\ufffd\ufffdbad", False), "ok \u00e9"),
    )


def test_keys_match_case_insensitively_and_unknown_keys_are_ignored() -> None:
    blob = (
        b'{"CustomerName": "Ann Lee", "EMAIL": "ann@x.com", "SerialNumber": "s1", '
        b'"REGISTRATIONDATE": 5, "lastupdatedate": 6, "favouriteColour": "red"}\n'
        b'{"customerName": "Bo Ng", "email": "bo@x.com", "serialNumber": "s2", '
        b'"shareWithResearchAsOfDate": 7}\n'
    )
    expected = landing(
        "customer",
        {
            "customerName": "Ann Lee",
            "email": "ann@x.com",
            "serialNumber": "s1",
            "registrationDate": 5,
            "lastUpdateDate": 6,
            SOURCE_FILE: "file.json",
        },
        {
            "customerName": "Bo Ng",
            "email": "bo@x.com",
            "serialNumber": "s2",
            "shareWithResearchAsOfDate": 7,
            SOURCE_FILE: "file.json",
        },
    ).collect()
    assert_frame_equal(accepted(blob, "customer"), expected)


def test_numeric_string_cast_to_int64() -> None:
    blob = (
        b'{"email": "a@x.com", "serialNumber": "s1", '
        b'"registrationDate": "1655564376361", "lastUpdateDate": " 7 "}\n'
    )
    expected = landing(
        "customer",
        customer(
            "a@x.com", "s1", consent=None, updated=7, registrationDate=1655564376361, _source_file="file.json"
        ),
    ).collect()
    assert_frame_equal(accepted(blob, "customer"), expected)


def test_accelerometer_axes_are_floats() -> None:
    blob = b'{"user": "a@x.com", "timestamp": 1655564376361, "x": 1, "y": "-0.5", "z": 2.25}\n'
    row = reading("a@x.com", 1655564376361, 1.0, -0.5, 2.25, _source_file="file.json")
    expected = landing("accelerometer", row)
    assert_frame_equal(accepted(blob, "accelerometer"), expected.collect())


def test_step_trainer_line_accepted() -> None:
    blob = b'{"sensorReadingTime": 1655564376361, "serialNumber": "s1", "distanceFromObject": "231"}\n'
    expected = landing("step_trainer", step("s1", 1655564376361, 231, _source_file="file.json"))
    assert_frame_equal(accepted(blob, "step_trainer"), expected.collect())


GOOD_LINE = {
    "customer": '{"email": "a@x.com", "serialNumber": "s1"}',
    "accelerometer": '{"user": "a@x.com", "timestamp": 1, "x": 0.1, "y": 0.2, "z": 0.3}',
    "step_trainer": '{"sensorReadingTime": 1, "serialNumber": "s1", "distanceFromObject": 3}',
}


@pytest.mark.parametrize(
    ("source", "line", "reason"),
    [
        ("customer", b"\xff\xfe{}", "invalid UTF-8"),
        ("customer", b'{"email": "a@x.com", "serialNum', "not valid JSON"),
        ("customer", b"[1]", "not a JSON object"),
        ("customer", b"42", "not a JSON object"),
        (
            "customer",
            b'{"email": "b@x.com", "serialNumber": "s2", "registrationDate": "abc"}',
            "registrationDate: 'abc' is not an integer",
        ),
        ("customer", b'{"serialNumber": "s2"}', "missing required field email"),
        ("customer", b'{"email": "   ", "serialNumber": "s2"}', "missing required field email"),
        ("customer", b'{"email": "b@x.com"}', "missing required field serialNumber"),
        ("customer", b'{"email": "b@x.com", "serialNumber": null}', "missing required field serialNumber"),
        ("accelerometer", b'{"timestamp": 2, "x": 0.1}', "missing required field user"),
        ("accelerometer", b'{"user": "b@x.com", "x": 0.1}', "missing required field timestamp"),
        ("accelerometer", b'{"user": "b@x.com", "timestamp": 2, "x": "abc"}', "x: 'abc' is not a number"),
        (
            "step_trainer",
            b'{"sensorReadingTime": 2, "distanceFromObject": 3}',
            "missing required field serialNumber",
        ),
        (
            "step_trainer",
            b'{"serialNumber": "s2", "distanceFromObject": 3}',
            "missing required field sensorReadingTime",
        ),
        (
            "step_trainer",
            b'{"sensorReadingTime": 2, "serialNumber": "s2", "distanceFromObject": "1.5"}',
            "distanceFromObject: '1.5' is not an integer",
        ),
    ],
)
def test_reject_reason(source: str, line: bytes, reason: str) -> None:
    blob = GOOD_LINE[source].encode() + b"\n" + line + b"\n"
    shown = line.decode("utf-8", "replace")
    assert_frame_equal(rejected(blob, source), rejects((2, reason, shown)))
    assert accepted(blob, source)[LINE_NUMBER].to_list() == [1]


def test_every_non_blank_line_accepted_or_rejected_once() -> None:
    blob = (
        b"\n".join(
            [
                b'{"email": "a@x.com", "serialNumber": "s1"}',  # 1 accepted
                b"",  # 2 blank
                b"[1]",  # 3 rejected
                b'{"email": "b@x.com", "serialNumber": "s2", "lastUpdateDate": "x"}',  # 4 rejected
                b"  ",  # 5 blank
                b"\xff",  # 6 rejected
                b'{"EMAIL": "c@x.com", "serialnumber": "s3"}',  # 7 accepted
                b'{"email": "d@x.com"',  # 8 rejected
            ]
        )
        + b"\n"
    )
    good, bad = accepted(blob, "customer"), rejected(blob, "customer")
    assert good[LINE_NUMBER].to_list() == [1, 7]
    assert bad[LINE_NUMBER].to_list() == [3, 4, 6, 8]
    assert good.height + bad.height == 6


def test_empty_input_parses_to_no_rows() -> None:
    parsed = transforms.parse_landing(transforms.empty_raw_lines().lazy(), "customer", []).collect()
    assert transforms.accepted_rows(parsed.lazy(), "customer").collect().height == 0
    assert transforms.rejected_rows(parsed.lazy()).collect().height == 0


def test_json_string_line_is_not_an_object() -> None:
    line = '"{\\"email\\": \\"b@x.com\\", \\"serialNumber\\": \\"s2\\"}"'
    blob = GOOD_LINE["customer"].encode() + b"\n" + line.encode() + b"\n"
    assert_frame_equal(rejected(blob, "customer"), rejects((2, "not a JSON object", line)))


def test_string_line_starting_with_brace_is_rejected() -> None:
    blob = GOOD_LINE["customer"].encode() + b'\n"{abc"\n'
    assert_frame_equal(rejected(blob, "customer"), rejects((2, "not a JSON object", '"{abc"')))


def test_nested_value_is_a_reason_not_a_crash() -> None:
    blob = GOOD_LINE["customer"].encode() + b'\n{"email": "b@x.com", "serialNumber": {"id": 1}}\n'
    bad = rejected(blob, "customer")
    assert bad[LINE_NUMBER].to_list() == [2]
    assert bad[REASON].to_list() == ["serialNumber: '{\"id\":1}' is not a string"]


def test_null_line_is_not_an_object() -> None:
    blob = GOOD_LINE["customer"].encode() + b"\nnull\n"
    assert_frame_equal(rejected(blob, "customer"), rejects((2, "not a JSON object", "null")))


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
    assert_rows(ml(MlJoin.SEED), expected)


def test_same_customer_join_pairs_owner_only() -> None:
    expected = declared("machine_learning_curated", ml_row(ST_A10, ACC_A10), ml_row(ST_B10, ACC_B10))
    assert_rows(ml(MlJoin.SAME_CUSTOMER), expected)


def test_cross_customer_pairs_are_the_seed_extras() -> None:
    expected = declared("machine_learning_curated", ml_row(ST_A10, ACC_B10), ml_row(ST_B10, ACC_A10))
    assert_rows(transforms.cross_customer_pairs(ml(MlJoin.SEED), ML_CURATED.lazy()), expected)
    assert transforms.cross_customer_pairs(ml(MlJoin.SAME_CUSTOMER), ML_CURATED.lazy()).collect().height == 0


def test_string_value_that_looks_like_json_is_a_string() -> None:
    blob = b'{"email": "a@x.com", "serialNumber": "{not-an-object}", "phone": "[1]"}\n'
    row = accepted(blob, "customer")
    assert row.select("serialNumber", "phone").rows() == [("{not-an-object}", "[1]")]


def test_same_name_inside_an_unknown_object_is_ignored() -> None:
    blob = b'{"extra": {"email": {"nested": 1}}, "email": "a@x.com", "serialNumber": "s1"}\n'
    assert accepted(blob, "customer").select("email", "serialNumber").rows() == [("a@x.com", "s1")]
    assert rejected(blob, "customer").height == 0


def test_blank_file_before_a_bad_line_is_no_crash() -> None:
    lines = pl.concat(
        [
            transforms.raw_lines(b"\n\n", "a.json", LANDED_AT),
            transforms.raw_lines(
                b'{"email": "a", "serialNumber": "s", "registrationDate": "x"}\n', "b.json", LANDED_AT
            ),
        ],
        rechunk=False,
    ).lazy()
    parsed = transforms.parse_landing(lines, "customer", transforms.json_keys(lines)).collect(
        engine="streaming"
    )
    assert parsed["reason"].to_list() == ["registrationDate: 'x' is not an integer"]


def test_escaped_key_spelling_is_the_key_it_spells() -> None:
    blob = b'{"\\u0065mail": "a@x.com", "serialNumber": "s1"}\n'
    assert accepted(blob, "customer").select("email", "serialNumber").rows() == [("a@x.com", "s1")]
