"""Landing lines into typed rows and rejects (stedi_assets.rules.parsing) on tiny hand-made files."""

from __future__ import annotations

import json
from typing import Any

import polars as pl
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from stedi_assets.rules import parsing
from stedi_assets.rules.catalog import CUSTOMER, INGESTED_AT, LINE_NUMBER, SOURCE_FILE, SOURCES
from stedi_assets.rules.parsing import RAW_LINE, REASON, UTF8_VALID
from stedi_assets_tests.frames import LANDED_AT, landing, rows_frame

SOURCE = {source.name: source for source in SOURCES}


def reading(user: str, timestamp: int, x: float = 0.5, y: float = -1.0, z: float = 2.0, **prov: Any):
    return {"user": user, "timestamp": timestamp, "x": x, "y": y, "z": z, **prov}


def step(serial: str, time: int, distance: int = 10, **prov: Any):
    return {"sensorReadingTime": time, "serialNumber": serial, "distanceFromObject": distance, **prov}


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
    """What the ingest does (the one-pass parse, then the exact one for the lines it leaves), checked
    against the exact parse of every line: both must decide each line alike."""
    lines = parsing.raw_lines(blob, file, LANDED_AT).lazy()
    parsed = parsing.parse_lines(lines, SOURCE[source]).collect().sort(SOURCE_FILE, LINE_NUMBER)
    exact = parsing.parse_landing(lines, SOURCE[source], parsing.json_keys(lines)).collect()
    exact = exact.with_columns(pl.when(pl.col(REASON).is_not_null()).then(pl.col(RAW_LINE)).alias(RAW_LINE))
    # Exact but for the last bit of a float with 17 significant digits: the exact parser reads values
    # through JSONPath, whose number parsing can round such a float one unit in the last place off
    # (0.029999999329447746 becomes ...743); the one-pass decoding rounds correctly, as Python does.
    assert_frame_equal(parsed, exact.select(parsed.columns), rel_tol=2.5e-16, abs_tol=0.0)
    return parsed


def accepted(blob: bytes, source: str) -> pl.DataFrame:
    return parsing.accepted_rows(parse(blob, source).lazy(), SOURCE[source]).collect()


def rejected(blob: bytes, source: str) -> pl.DataFrame:
    return parsing.rejected_rows(parse(blob, source).lazy()).collect()


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
    first = parsing.raw_lines(b"a\nb\nc\n", "a.json", LANDED_AT)
    second = parsing.raw_lines(b"d\ne\n", "b.json", LANDED_AT)
    expected = pl.concat([raw("a.json", "a", "b", "c"), raw("b.json", "d", "e")])
    assert_frame_equal(pl.concat([first, second]), expected)


def test_bom_and_crlf_stripped() -> None:
    blob = b'\xef\xbb\xbf{"user": "a"}\r\n{"user": "b"}\r\n'
    expected = raw("f.json", '{"user": "a"}', '{"user": "b"}')
    assert_frame_equal(parsing.raw_lines(blob, "f.json", LANDED_AT), expected)


def test_trailing_newline_adds_no_line() -> None:
    with_newline = parsing.raw_lines(b"a\nb\n", "f.json", LANDED_AT)
    without = parsing.raw_lines(b"a\nb", "f.json", LANDED_AT)
    assert_frame_equal(with_newline, raw("f.json", "a", "b"))
    assert_frame_equal(without, raw("f.json", "a", "b"))


def test_blank_lines_numbered_but_not_parsed() -> None:
    first, last = '{"user": "a@x.com", "timestamp": 1}', '{"user": "b@x.com", "timestamp": 2}'
    blob = f"{first}\n\n   \r\n{last}\n".encode()
    expected = raw("file.json", first, "", "   ", last)
    assert_frame_equal(parsing.raw_lines(blob, "file.json", LANDED_AT), expected)
    parsed = parse(blob, "accelerometer")
    assert parsed[LINE_NUMBER].to_list() == [1, 4]
    assert parsed[REASON].to_list() == [None, None]


def test_a_float_of_17_digits_is_rounded_correctly_where_the_exact_parser_is_one_bit_off() -> None:
    line = '{"user":"a@x.com","timestamp":1,"x":0.029999999329447746,"y":0.1,"z":1}'
    assert parse(line.encode(), "accelerometer")["x"].to_list() == [float("0.029999999329447746")]


def test_lines_in_declared_order_decode_straight_to_the_values_the_text_path_reads() -> None:
    """The producers' own shape (declared keys in order, values of their types) is decoded into the
    declared types directly; values, reasons and rows equal the exact parse's (see `parse`)."""
    ordered = [
        '{"user":" a@x.com\\u2003","timestamp":1655564444103,"x":0.1,"y":-1.0000000000000002,"z":3}',
        '{ "user" : "a\\u0040x.com" , "timestamp" : 123456789012345678 , "x" : -0.5 , "y" : 0.0 , "z" : 1 }',
        '{"user":" \\t","timestamp":1,"x":1.0,"y":2.0,"z":3.0}',
    ]
    other = [
        '{"user":" b@x.com ","timestamp":2,"x":"1.5","y":1,"z":1}',  # a numeric string: the text path
        '{"timestamp":3,"user":"c@x.com","x":1,"y":1,"z":1}',  # another order
        '{"user":"d@x.com","timestamp":4.5,"x":1,"y":1,"z":1}',  # a fraction under an integer field
    ]
    shape = pl.Series([*ordered, *other]).str.contains(parsing.ordered_object(SOURCE["accelerometer"]))
    assert shape.to_list() == [True, True, True, False, False, False]
    parsed = parse("\n".join([*ordered, *other]).encode(), "accelerometer")
    assert parsed["user"].to_list() == ["a@x.com", "a@x.com", "", "b@x.com", "c@x.com", "d@x.com"]
    assert parsed["timestamp"].to_list() == [1655564444103, 123456789012345678, 1, 2, 3, None]
    assert parsed["x"].to_list() == [0.1, -0.5, 1.0, 1.5, 1.0, 1.0]
    assert parsed["z"].to_list() == [3.0, 1.0, 3.0, 1.0, 1.0, 1.0]
    assert parsed["y"].to_list() == [-1.0000000000000002, 0.0, 2.0, 1.0, 1.0, 1.0]
    assert parsed[REASON].to_list() == [
        None,
        None,
        "missing required field user",
        None,
        None,
        "timestamp: '4.5' is not an integer",
    ]


def test_customer_lines_in_declared_order_may_leave_out_or_null_fields_that_are_not_required() -> None:
    """Delivered as the reference export writes them: optional keys left out or null, still decoded
    straight into the declared types, with the exact parser's values and reasons (see `parse`)."""
    head = '{"customerName": "A", "email": "a@x.com", "phone": "1", "birthDay": "1900-01-01", '
    ordered = [
        head + '"serialNumber": "S-1", "registrationDate": 1, "lastUpdateDate": 2, '
        '"shareWithResearchAsOfDate": 3, "shareWithPublicAsOfDate": 4, "shareWithFriendsAsOfDate": 5}',
        head + '"serialNumber": "S-2", "registrationDate": 1, "shareWithFriendsAsOfDate": 5}',
        '{"email": "b@x.com", "serialNumber": "S-3", "shareWithResearchAsOfDate": null}',
        '{"email": null, "serialNumber": "S-4"}',
    ]
    other = [
        '{"serialNumber": "S-5", "email": "c@x.com"}',  # another order
        '{"email": "d@x.com"}',  # a required field left out
        '{"customerName": "E"}',
    ]
    shape = pl.Series([*ordered, *other]).str.contains(parsing.ordered_object(CUSTOMER))
    assert shape.to_list() == [True, True, True, True, False, False, False]
    parsed = parse("\n".join([*ordered, *other]).encode(), "customer")
    assert parsed["serialNumber"].to_list() == ["S-1", "S-2", "S-3", "S-4", "S-5", None, None]
    assert parsed["lastUpdateDate"].to_list() == [2, None, None, None, None, None, None]
    assert parsed["shareWithFriendsAsOfDate"].to_list() == [5, 5, None, None, None, None, None]
    assert parsed[REASON].to_list() == [
        None,
        None,
        None,
        "missing required field email",
        None,
        "missing required field serialNumber",
        "missing required field email",
    ]


def test_invalid_utf8_flags_only_its_line() -> None:
    blob = b"\xef\xbb\xbfok one\r\n\xff\xfebad\r\nok \xc3\xa9\r\n"
    assert_frame_equal(
        parsing.raw_lines(blob, "f.json", LANDED_AT),
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
        {
            "email": "a@x.com",
            "serialNumber": "s1",
            "lastUpdateDate": 7,
            "shareWithResearchAsOfDate": None,
            "registrationDate": 1655564376361,
            SOURCE_FILE: "file.json",
        },
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
    parsed = parsing.parse_landing(parsing.empty_raw_lines().lazy(), CUSTOMER, []).collect()
    assert_frame_equal(
        parsing.accepted_rows(parsed.lazy(), CUSTOMER).collect(), rows_frame("customer_landing", [])
    )
    assert_frame_equal(parsing.rejected_rows(parsed.lazy()).collect(), rows_frame("customer_rejects", []))


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
            parsing.raw_lines(b"\n\n", "a.json", LANDED_AT),
            parsing.raw_lines(
                b'{"email": "a", "serialNumber": "s", "registrationDate": "x"}\n', "b.json", LANDED_AT
            ),
        ],
        rechunk=False,
    ).lazy()
    parsed = parsing.parse_landing(lines, CUSTOMER, parsing.json_keys(lines)).collect(engine="streaming")
    assert parsed[REASON].to_list() == ["registrationDate: 'x' is not an integer"]


def test_escaped_key_spelling_is_the_key_it_spells() -> None:
    blob = b'{"\\u0065mail": "a@x.com", "serialNumber": "s1"}\n'
    assert accepted(blob, "customer").select("email", "serialNumber").rows() == [("a@x.com", "s1")]


def test_a_reason_never_repeats_a_personal_value() -> None:
    blob = (
        GOOD_LINE["customer"].encode()
        + b'\n{"email": "b@x.com", "serialNumber": "s", "phone": ["555 0100"]}\n'
    )
    assert rejected(blob, "customer")[REASON].to_list() == ["phone: a value that is not a string"]


def _json_value(dtype: pl.DataType) -> st.SearchStrategy[str]:
    """A JSON text of the field's type as producers write it: any float repr, integers of up to 18
    digits, strings with escapes, surrounding spaces and non-ASCII; or null."""
    if dtype.is_integer():
        number = st.integers(-(10**18) + 1, 10**18 - 1).map(str)
    elif dtype.is_float():
        number = st.one_of(
            st.floats(allow_nan=False, allow_infinity=False).map(repr),
            st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
            st.integers(-(10**18) + 1, 10**18 - 1).map(str),
            st.from_regex(r"-?(0|[1-9][0-9]{0,20})\.[0-9]{1,25}", fullmatch=True),
        )
    else:
        padding = st.sampled_from(["", " ", "\t", "\u2003", "\u200b"])
        text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
        number = st.tuples(padding, text, padding).map(lambda parts: json.dumps("".join(parts)))
    return st.one_of(number, st.just("null"))


@st.composite
def _ordered_line(draw: st.DrawFn, source_name: str) -> str:
    source = SOURCE[source_name]
    space = st.sampled_from(["", " "])
    pairs = [
        f'"{c.name}"{draw(space)}:{draw(space)}{draw(_json_value(c.dtype))}'
        for c in source.columns
        if c.name in source.required or draw(st.booleans())
    ]
    return "{" + draw(st.sampled_from([",", ", "])).join(pairs) + "}"


@pytest.mark.parametrize("source_name", ["accelerometer", "customer", "step_trainer"])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_lines_in_declared_order_parse_as_the_exact_parser_reads_them(source_name: str, data: st.DataObject):
    """Whatever a producer writes in declared order (floats of every magnitude and precision, integers
    at the 18-digit limit, escaped and non-ASCII strings, nulls, fields left out), the ingest's
    straight decoding gives each line the exact parser's values and reason (`parse` compares them)."""
    lines = data.draw(st.lists(_ordered_line(source_name), min_size=1, max_size=8))
    parse("\n".join(lines).encode(), source_name)
    shape = pl.Series(lines).str.contains(parsing.ordered_object(SOURCE[source_name]))
    event(f"lines decoded straight: {shape.sum() > 0}")
