"""Property-based tests: random landing files with random corruption, against the lakehouse invariants.

The strategies build *logical* records from small alphabets (4 emails, 3 serials, 6 timestamps) so
that customers recur with different updates and consent, serials are shared and readings collide.
Each record is rendered as a JSON line in one of many accepted spellings (key case, padding, numeric
strings, separators, key order, unknown keys) or corrupted so that it must be rejected (truncated,
invalid UTF-8, wrong type, missing key field); junk and blank lines are mixed in and the lines are
split over files with or without BOM, CRLF and a final newline. The generator therefore knows, for
every line, whether it must be accepted and with which values, and a tiny reference model in plain
Python (`Reference`) says what every trusted and curated table must hold.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import tempfile
import unicodedata
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st
from polars.exceptions import PanicException
from polars.testing import assert_frame_equal

from stedi_assets.cli import run_lakehouse
from stedi_assets.rules import contracts, parsing, transforms
from stedi_assets.rules.catalog import EVENT_DAY, LINE_NUMBER, SOURCE_FILE, SOURCES, TABLES
from stedi_assets.rules.parsing import RAW_LINE, REASON
from stedi_assets.rules.transforms import MlIdentity, MlJoin

T0 = 1_655_564_376_000
TIMES = tuple(T0 + 1_000 * k for k in range(6))
EMAILS = ("anna@test.com", "ben@test.com", "cy@test.com", "dee@test.com")
STRANGER = "zed@test.com"
"""A phone user who is never a customer."""
SERIALS = ("SER-1", "SER-2", "SER-3")
HOME_SERIAL = dict(zip(EMAILS, (*SERIALS, SERIALS[0]), strict=True))
UNCLAIMED = "SER-9"
"""A Step Trainer no customer claims."""
LANDED_AT = datetime(2024, 1, 1, tzinfo=UTC)
SECRET = b"property-test-key"
"""The pseudonym key of the training tables that run_chain builds."""

IDENTITY_FIELDS = ("email", "serialNumber", "user")
UNKNOWN_FIELDS = {"source": "app", "note": None, "appVersion": 3}
NOT_A_STRING = ({"v": 1}, [1, 2], {}, [])
NOT_A_NUMBER = ("soon", "", "  ", "12abc", True, *NOT_A_STRING)
NOT_AN_INTEGER = (*NOT_A_NUMBER, 1.5, "1.5")
INVALID_UTF8 = (b"\xff", b"\xfe\xff", b"\x80", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xc0\xaf")
JUNK = ("[1]", '"x"', "42", "null", "true", "[]", "{}", "{", "not json", '{"a": 1} {"b": 2}', '{"a": }')
BLANKS = ("", " ", "\t", "  \t ")
PADDING = st.sampled_from(("", " ", "\t", "  "))
SEPARATORS = st.sampled_from(((", ", ": "), (",", ":"), (" , ", " : "), (",\t", ":\t")))
SOURCE = {source.name: source for source in SOURCES}
SOURCE_NAMES = tuple(SOURCE)
# Column order of each source's declared landing columns (and of the rows the reference expects).
COLUMNS = {source.name: tuple(c.name for c in source.columns) for source in SOURCES}
DTYPES = {source.name: {c.name: c.dtype for c in source.columns} for source in SOURCES}

PROJECT = Path(__file__).resolve().parents[2]

FAST = settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def case_variant(text: str) -> st.SearchStrategy[str]:
    return st.sampled_from((text, text.upper(), text.lower(), text[:1].upper() + text[1:]))


FULLWIDTH = {code: code + 0xFEE0 for code in range(0x21, 0x7F)}
INVISIBLE = ("\u200b", "\u200d", "\ufeff", "\u00ad")


@st.composite
def identity_variant(draw, text: str) -> str:
    """One spelling of an email or serial: case, fullwidth letters, an invisible character inside."""
    text = draw(case_variant(text))
    if draw(st.booleans()):
        text = text.translate(FULLWIDTH)
    if draw(st.booleans()):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(INVISIBLE)) + text[at:]
    return text


@st.composite
def customer_records(draw, email: str | None = None) -> dict[str, Any]:
    email = email or draw(st.sampled_from(EMAILS))
    return {
        "customerName": email.split("@")[0].title(),
        "email": draw(identity_variant(email)),
        "phone": "8015551212",
        "birthDay": "1399-01-01",
        # mostly the customer's own device; dee's is anna's (a reused serial), and any may change
        "serialNumber": draw(
            st.sampled_from((*[HOME_SERIAL[email]] * 3, *SERIALS)).flatmap(identity_variant)
        ),
        "registrationDate": T0,
        "lastUpdateDate": draw(st.sampled_from((*TIMES, None))),
        "shareWithResearchAsOfDate": draw(st.sampled_from((None, 0, T0, T0 + 5, T0 + 9))),
        "shareWithPublicAsOfDate": None,
        "shareWithFriendsAsOfDate": draw(st.sampled_from((None, T0))),
    }


AXIS = st.sampled_from((-1.0, 0.0, 0.5, 2.25))


@st.composite
def accelerometer_records(draw, users: tuple[str, ...] = (*EMAILS, STRANGER)) -> dict[str, Any]:
    return {
        "user": draw(st.sampled_from(users).flatmap(identity_variant)),
        "timestamp": draw(st.sampled_from(TIMES)),
        "x": draw(AXIS),
        "y": draw(AXIS),
        "z": draw(AXIS | st.none()),
    }


@st.composite
def step_trainer_records(draw, serials: tuple[str, ...] = (*SERIALS, UNCLAIMED)) -> dict[str, Any]:
    return {
        "sensorReadingTime": draw(st.sampled_from(TIMES)),
        "serialNumber": draw(st.sampled_from(serials).flatmap(identity_variant)),
        "distanceFromObject": draw(st.sampled_from((200, 201, None))),
    }


RECORDS = {
    "customer": customer_records(),
    "accelerometer": accelerometer_records(),
    "step_trainer": step_trainer_records(),
}


def render_object(pairs: list[tuple[str, Any]], separators: tuple[str, str]) -> str:
    item, key_value = separators
    return "{" + item.join(json.dumps(k) + key_value + json.dumps(v) for k, v in pairs) + "}"


@st.composite
def accepted_value(draw, name: str, value: Any) -> Any:
    """A JSON value the parser must read back as `value`."""
    if value is None or (name not in IDENTITY_FIELDS and not isinstance(value, (int, float))):
        return value
    if name in IDENTITY_FIELDS:
        return draw(PADDING) + value + draw(PADDING)
    if draw(st.booleans()):
        return draw(PADDING) + str(value) + draw(PADDING)  # numeric strings are cast
    return value


@st.composite
def accepted_pairs(draw, record: dict[str, Any]) -> list[tuple[str, Any]]:
    """Keys in any case and order, nulls sometimes left out, unknown keys added."""
    pairs = [
        (draw(case_variant(name)), draw(accepted_value(name, value)))
        for name, value in record.items()
        if value is not None or draw(st.booleans())
    ]
    unknown = draw(st.lists(st.sampled_from(sorted(UNKNOWN_FIELDS)), unique=True, max_size=2))
    pairs += [(name, UNKNOWN_FIELDS[name]) for name in unknown]
    return list(draw(st.permutations(pairs)))


def _replace(pairs: list[tuple[str, Any]], column: str, new: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return [p for p in pairs if p[0].lower() != column.lower()] + new


CORRUPTIONS = ("truncated", "invalid UTF-8", "wrong type", "missing key field")


@st.composite
def corrupted_line(
    draw, source: str, pairs: list[tuple[str, Any]], separators: tuple[str, str], kinds=CORRUPTIONS
) -> bytes:
    """The record's line damaged so that it must be rejected."""
    kind = draw(st.sampled_from(kinds))
    if kind == "truncated":
        text = render_object(pairs, separators)
        return text[: draw(st.integers(1, len(text) - 1))].encode()
    if kind == "invalid UTF-8":
        data = render_object(pairs, separators).encode()
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.sampled_from(INVALID_UTF8)) + data[at:]
    if kind == "wrong type":
        column = draw(st.sampled_from(COLUMNS[source]))
        dtype = DTYPES[source][column]
        bad = NOT_AN_INTEGER if dtype.is_integer() else NOT_A_NUMBER if dtype.is_float() else NOT_A_STRING
        new = [(draw(case_variant(column)), draw(st.sampled_from(bad)))]
    else:
        column = draw(st.sampled_from(SOURCE[source].required))
        value = draw(st.sampled_from(("absent", None, "", "  ")))
        new = [] if value == "absent" else [(draw(case_variant(column)), value)]
    return render_object(_replace(pairs, column, new), separators).encode()


@dataclass(frozen=True)
class Line:
    data: bytes
    """The line without its end of line."""
    record: dict[str, Any] | None = None
    """The values the line must be accepted with; None when it must be rejected."""
    blank: bool = False


@st.composite
def record_lines(draw, source: str, record: dict[str, Any]) -> Line:
    pairs, separators = draw(accepted_pairs(record)), draw(SEPARATORS)
    if draw(st.integers(0, 3)) == 0:
        return Line(draw(corrupted_line(source, pairs, separators)))
    text = draw(PADDING) + render_object(pairs, separators) + draw(PADDING)
    return Line(text.encode(), record)


JUNK_LINES = st.tuples(PADDING, st.sampled_from(JUNK), PADDING).map(lambda t: Line("".join(t).encode()))
BLANK_LINES = st.sampled_from(BLANKS).map(lambda b: Line(b.encode(), blank=True))


@dataclass(frozen=True)
class LandingFile:
    source: str
    name: str
    lines: tuple[Line, ...]
    bom: bool
    crlf: bool
    final_newline: bool

    def data(self) -> bytes:
        eol = b"\r\n" if self.crlf else b"\n"
        body = eol.join(line.data for line in self.lines)
        if self.lines and self.final_newline:
            body += eol
        return (b"\xef\xbb\xbf" if self.bom else b"") + body


@dataclass(frozen=True)
class Landing:
    files: tuple[LandingFile, ...]

    def of(self, source: str) -> list[LandingFile]:
        return [f for f in self.files if f.source == source]

    def numbered(self, source: str) -> list[tuple[str, int, Line]]:
        return [(f.name, n, line) for f in self.of(source) for n, line in enumerate(f.lines, 1)]

    def accepted(self, source: str) -> dict[tuple[str, int], dict[str, Any]]:
        """(file, line) -> values, for the lines that must be accepted."""
        return {(name, n): line.record for name, n, line in self.numbered(source) if line.record is not None}

    def rejected_text(self, source: str) -> list[str]:
        """The text of every line that must be quarantined."""
        return [
            line.data.decode("utf-8", "replace")
            for _, _, line in self.numbered(source)
            if line.record is None and not line.blank
        ]


@st.composite
def source_files(draw, source: str, records: list[dict[str, Any]]) -> list[LandingFile]:
    """The records' lines, junk and blank lines split over 1 to 3 files, one may be delivered twice."""
    lines = [draw(record_lines(source, record)) for record in records]
    lines += draw(st.lists(JUNK_LINES, max_size=2)) + draw(st.lists(BLANK_LINES, max_size=2))
    lines = list(draw(st.permutations(lines)))
    n_files = draw(st.integers(1, 3))
    cuts = sorted(draw(st.lists(st.integers(0, len(lines)), min_size=n_files - 1, max_size=n_files - 1)))
    chunks = [lines[a:b] for a, b in zip([0, *cuts], [*cuts, len(lines)], strict=True)]
    if draw(st.integers(0, 3)) == 0:
        chunks.append(draw(st.sampled_from(chunks)))  # resent under another name
    return [
        LandingFile(
            source, f"{source}/{source}-{i}.json", tuple(chunk), *draw(st.tuples(*[st.booleans()] * 3))
        )
        for i, chunk in enumerate(chunks)
    ]


@st.composite
def landings(draw) -> Landing:
    """Readings mostly of the drawn customers' emails and serials, some of nobody's."""
    # each customer has 0 to 3 records: updates that may withdraw or re-grant consent
    customers = [r for email in EMAILS for r in draw(st.lists(customer_records(email), max_size=3))]
    users = (*sorted({ident(c["email"]) for c in customers}), STRANGER)
    serials = (*sorted({ident(c["serialNumber"]) for c in customers}), UNCLAIMED)
    readings = draw(st.lists(accelerometer_records(users), min_size=4, max_size=20))
    steps = draw(st.lists(step_trainer_records(serials), min_size=4, max_size=20))
    return Landing(
        tuple(
            draw(source_files("customer", customers))
            + draw(source_files("accelerometer", readings))
            + draw(source_files("step_trainer", steps))
        )
    )


@dataclass(frozen=True)
class Ingested:
    lines: pl.DataFrame
    parsed: pl.DataFrame
    accepted: pl.DataFrame
    rejected: pl.DataFrame


def ingest(files: list[LandingFile], source: str) -> Ingested:
    """What the ingest asset does with one source's files, on bytes instead of a folder.

    One chunk per file, as LandingZone.read_lines concatenates them: the chunk layout matters
    (test_ingest_survives_a_blank_file_before_a_bad_value).
    """
    frames = [parsing.raw_lines(f.data(), f.name, LANDED_AT) for f in files if f.source == source]
    lines = pl.concat(frames) if frames else parsing.empty_raw_lines()
    lazy = lines.lazy()
    try:
        parsed = parsing.parse_lines(lazy, SOURCE[source]).collect()
        exact = parsing.parse_landing(lazy, SOURCE[source], parsing.json_keys(lazy)).collect()
    except PanicException as panic:  # a BaseException: re-raised as a failure so hypothesis shrinks it
        raise AssertionError(f"parsing {source} lines panicked: {panic}") from None
    # the one-pass parse decides every line as the exact parse does
    exact = exact.with_columns(pl.when(pl.col(REASON).is_not_null()).then(pl.col(RAW_LINE)).alias(RAW_LINE))
    order = [SOURCE_FILE, LINE_NUMBER]
    assert_frame_equal(parsed.sort(order), exact.select(parsed.columns).sort(order))
    accepted = parsing.accepted_rows(parsed.lazy(), SOURCE[source]).collect()
    return Ingested(lines, parsed, accepted, parsing.rejected_rows(parsed.lazy()).collect())


def _collected(plan: pl.LazyFrame) -> pl.DataFrame:
    try:
        return plan.collect()
    except PanicException as panic:  # a BaseException: re-raised as a failure so hypothesis shrinks it
        raise AssertionError(f"the zone rules panicked: {panic}") from None


def run_chain(files: list[LandingFile]) -> dict[str, pl.DataFrame]:
    """Every table of the lakehouse from the pure rules, keyed by table name.

    Each table is computed from the collected tables it depends on, as each asset reads its inputs
    from the lakehouse (one lazy graph of the whole chain would be planned as one huge query).
    """
    ingested = {source: ingest(files, source) for source in SOURCE_NAMES}
    customer, accel, steps = (ingested[s].accepted.lazy() for s in SOURCE_NAMES)
    rejects = ingested["customer"].rejected.lazy()
    tables = {"customer_trusted": _collected(transforms.customer_trusted(customer, rejects))}
    trusted = tables["customer_trusted"].lazy()
    tables["accelerometer_trusted"] = _collected(transforms.accelerometer_trusted(accel, trusted))
    readings = tables["accelerometer_trusted"].lazy()
    tables["customer_curated"] = _collected(transforms.customer_curated(trusted, readings))
    curated = tables["customer_curated"].lazy()
    tables["step_trainer_trusted"] = _collected(
        transforms.step_trainer_trusted(steps, curated, customer, rejects)
    )
    step_readings = tables["step_trainer_trusted"].lazy()
    for join in MlJoin:
        tables[f"machine_learning_curated[{join.value}]"] = _collected(
            transforms.machine_learning_curated(
                step_readings, readings, curated, SECRET, join, MlIdentity.email
            )
        )
    for source in SOURCE_NAMES:
        tables[f"{source}_landing"] = ingested[source].accepted
        tables[f"{source}_rejects"] = ingested[source].rejected
    return tables


def ident(value: str) -> str:
    """The canonical identity as documented (rules/identity.py), in plain Python."""
    value = unicodedata.normalize("NFKC", value)
    return "".join(c for c in value if unicodedata.category(c) != "Cf").casefold().strip()


def subject_id(identity: str) -> str:
    """The documented subject_id of an identity under SECRET: HMAC-SHA256 (hex) of its canonical form."""
    return hmac.new(SECRET, ident(identity).encode(), hashlib.sha256).hexdigest()


def values(record: dict[str, Any], source: str) -> tuple:
    """A record as a row of its declared columns, in declared order."""
    return tuple(record[c] for c in COLUMNS[source])


JSON_STRING = r'"((?:[^"\\]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*)"'


def recovered(text: str, key: str, value: str = JSON_STRING) -> str | None:
    """A `"key": value` pair read from a quarantined line's text (JSON escapes decoded), as the
    consent rule does."""
    found = re.search(rf'"{key}"\s*:\s*{value}', text, re.IGNORECASE)
    if not found:
        return None
    return json.loads(f'"{found.group(1)}"') if value == JSON_STRING else found.group(1)


def consents(record: dict[str, Any]) -> bool:
    return record["shareWithResearchAsOfDate"] not in (None, 0)


class Reference:
    """What the trusted and curated tables must hold, from the generated records alone."""

    def __init__(self, landing: Landing):
        current: dict[str, tuple[tuple, dict[str, Any]]] = {}
        records: dict[str, list[dict[str, Any]]] = {}
        for (file, line), record in landing.accepted("customer").items():
            updated = record["lastUpdateDate"]
            # latest lastUpdateDate wins (a missing one is older than any), then the later file, then line
            order = (updated is not None, updated or 0, file, line)
            key = ident(record["email"])
            records.setdefault(key, []).append(record)
            if key not in current or order > current[key][0]:
                current[key] = (order, record)
        self.current = {key: record for key, (_, record) in current.items()}
        newest = {
            key: max((r["lastUpdateDate"] for r in rs if r["lastUpdateDate"] is not None), default=None)
            for key, rs in records.items()
        }
        # fail closed: every record that could be the newest (undated, or dated the newest) consents
        certain = {
            key
            for key, rs in records.items()
            if all(consents(r) for r in rs if r["lastUpdateDate"] in (None, newest[key]))
        }
        quarantined = [
            (
                recovered(text, "email"),
                recovered(text, "serialNumber"),
                recovered(text, "lastUpdateDate", r'"?\s*(\d+)'),
            )
            for text in landing.rejected_text("customer")
        ]
        # a quarantined line naming a customer holds them, unless a valid record is provably later
        self.held = {
            ident(email)
            for email, _, updated in quarantined
            if email is not None
            and not (
                updated is not None
                and newest.get(ident(email)) is not None
                and int(updated) < newest[ident(email)]
            )
        }
        self.consenting = {key for key, r in self.current.items() if consents(r)} & certain - self.held
        readings = {values(r, "accelerometer") for r in landing.accepted("accelerometer").values()}
        self.accelerometer_trusted = {r for r in readings if ident(r[0]) in self.consenting}
        self.curated = self.consenting & {ident(r[0]) for r in self.accelerometer_trusted}
        # every record claims its serial, accepted or quarantined (None: a claimant with no readable email)
        claimants: dict[str, set[str | None]] = {}
        for key, rs in records.items():
            for record in rs:
                claimants.setdefault(ident(record["serialNumber"]), set()).add(key)
        for email, serial, _ in quarantined:
            if serial is not None:
                claimants.setdefault(ident(serial), set()).add(None if email is None else ident(email))
        self.claimants = claimants
        owned = {ident(self.current[key]["serialNumber"]) for key in self.curated}
        self.attributable = {serial for serial in owned if claimants[serial] <= self.curated}
        steps = {values(r, "step_trainer") for r in landing.accepted("step_trainer").values()}
        self.step_trainer_trusted = {s for s in steps if ident(s[1]) in self.attributable}
        owner_serial = {key: ident(self.current[key]["serialNumber"]) for key in self.curated}
        pairs = [
            (s, a) for s in self.step_trainer_trusted for a in self.accelerometer_trusted if s[0] == a[1]
        ]
        # declared column order: the Step Trainer's, subject_id, then the accelerometer's (user first)
        self.machine_learning_curated = {
            MlJoin.seed: Counter((*s, subject_id(a[0]), *a) for s, a in pairs),
            MlJoin.same_customer: Counter(
                (*s, subject_id(a[0]), *a) for s, a in pairs if owner_serial[ident(a[0])] == ident(s[1])
            ),
        }
        # every identity the landing names, by subject_id: to tell whose a training row is
        people = {*records, *(ident(r[0]) for r in readings), STRANGER}
        people |= {ident(email) for email, _, _ in quarantined if email is not None}
        self.by_subject_id = {subject_id(person): person for person in people}
        self.cross_customer_pairs = sum(self.machine_learning_curated[MlJoin.seed].values()) - sum(
            self.machine_learning_curated[MlJoin.same_customer].values()
        )

    def customer_rows(self, keys: set[str]) -> Counter:
        return Counter(values(self.current[k], "customer") for k in keys)


def rows(frame: pl.DataFrame) -> Counter:
    """The rows as a multiset, without the partition day, which must be the UTC day of the row's
    reading time (as Python's datetime computes it)."""
    if EVENT_DAY in frame.columns:
        time = "sensorReadingTime" if "sensorReadingTime" in frame.columns else "timestamp"
        for millis, day in zip(frame[time], frame[EVENT_DAY], strict=True):
            if abs(millis) < 10**14:  # within datetime's years 1..9999
                assert day == datetime.fromtimestamp(millis / 1000, UTC).date(), (millis, day)
        frame = frame.drop(EVENT_DAY)
    return Counter(frame.rows())


def identities(frame: pl.DataFrame, column: str, ref: Reference | None = None) -> list[str]:
    """The canonical identities in `column`; a subject_id column is mapped back to the identity it
    hashes (via the reference's table of every identity in the landing), an unknown hash is kept as
    is, so it matches no customer."""
    if column == "subject_id":
        assert ref is not None, "subject_id needs the reference's identities"
        return [ref.by_subject_id.get(v, f"unknown subject_id {v}") for v in frame[column].to_list()]
    return [ident(v) for v in frame[column].to_list()]


@FAST
@given(landing=landings())
def test_every_non_blank_line_is_accepted_or_rejected_once(landing: Landing):
    for source in SOURCE_NAMES:
        got = ingest(landing.of(source), source)
        non_blank = {(name, n) for name, n, line in landing.numbered(source) if not line.blank}
        read = parsing.non_blank_lines(got.lines.lazy()).collect().height
        assert read == len(non_blank), source
        assert got.accepted.height + got.rejected.height == read, source
        assert contracts.conservation(read, got.accepted.height, got.rejected.height).passed

        accepted = list(zip(got.accepted[SOURCE_FILE], got.accepted[LINE_NUMBER], strict=True))
        rejected = list(zip(got.rejected[SOURCE_FILE], got.rejected[LINE_NUMBER], strict=True))
        assert len(set(accepted)) == len(accepted) and len(set(rejected)) == len(rejected), source
        assert not set(accepted) & set(rejected), f"{source}: lines both accepted and rejected"
        assert set(accepted) | set(rejected) == non_blank, source
        assert all(reason and reason.strip() for reason in got.rejected["reason"].to_list()), source


@FAST
@given(landing=landings())
def test_each_line_is_accepted_with_its_values_or_rejected_as_the_generator_says(landing: Landing):
    for source in SOURCE_NAMES:
        got = ingest(landing.of(source), source)
        expected = landing.accepted(source)
        accepted = {
            (row[SOURCE_FILE], row[LINE_NUMBER]): {c: row[c] for c in COLUMNS[source]}
            for row in got.accepted.iter_rows(named=True)
        }
        wrongly_rejected = {
            (file, n): reason
            for file, n, reason in got.rejected.select(SOURCE_FILE, LINE_NUMBER, "reason").rows()
            if (file, n) in expected
        }
        assert not wrongly_rejected, f"{source}: valid lines rejected: {wrongly_rejected}"
        assert accepted == expected, source
        raw = {(name, n): line.data.decode("utf-8", "replace") for name, n, line in landing.numbered(source)}
        for file, n, raw_line in got.rejected.select(SOURCE_FILE, LINE_NUMBER, "raw_line").rows():
            assert raw_line == raw[(file, n)], (source, file, n)


@FAST
@given(
    source=st.sampled_from(SOURCE_NAMES),
    data=st.data(),
    inner=st.sampled_from(({}, [], {"v": 1}, [1], 1, "s", "{not nested}", None)),
    in_list=st.booleans(),
)
def test_unknown_keys_are_ignored_whatever_their_value(
    source: str, data: st.DataObject, inner: Any, in_list: bool
):
    """Regression: a declared key inside an unknown key's object once made the line a reject."""
    record = data.draw(RECORDS[source], label="record")
    pairs, separators = data.draw(accepted_pairs(record)), data.draw(SEPARATORS)
    nested_key = data.draw(st.sampled_from(COLUMNS[source]).flatmap(case_variant), label="nested_key")
    unknown = [{nested_key: inner}] if in_list else {nested_key: inner}
    line = render_object([*pairs, ("extra", unknown)], separators)
    got = ingest(
        [LandingFile(source, f"{source}-0.json", (Line(line.encode()),), False, False, True)], source
    )
    assert got.rejected["reason"].to_list() == []
    assert {c: got.accepted[c][0] for c in COLUMNS[source]} == record


@settings(FAST, max_examples=10)
@given(source=st.sampled_from(SOURCE_NAMES), data=st.data())
def test_ingest_survives_a_blank_file_before_a_bad_value(source: str, data: st.DataObject):
    """Regression: with pl.format in the reject reason, Polars 2.1's streaming engine panicked
    ('assertion failed: i < self.len()') when the non-blank filter dropped a whole per-file chunk."""
    blanks = data.draw(st.lists(BLANK_LINES, max_size=2), label="blank file")
    record = data.draw(RECORDS[source], label="record")
    pairs, separators = data.draw(accepted_pairs(record)), data.draw(SEPARATORS)
    bad = data.draw(corrupted_line(source, pairs, separators, kinds=("wrong type",)), label="bad line")
    good = Line(render_object(pairs, separators).encode(), record)
    flags = data.draw(st.tuples(*[st.booleans()] * 3), label="bom, crlf, final newline")
    files = [
        LandingFile(source, f"{source}/{source}-0.json", tuple(blanks), *flags),
        LandingFile(source, f"{source}/{source}-1.json", (Line(bad), *[good] * 200), False, False, True),
    ]
    got = ingest(files, source)
    assert (got.accepted.height, got.rejected.height) == (200, 1)


def _ml(tables: dict[str, pl.DataFrame], join: MlJoin) -> pl.DataFrame:
    return tables[f"machine_learning_curated[{join.value}]"]


@FAST
@given(landing=landings())
def test_no_row_of_a_customer_without_current_consent_reaches_trusted_or_curated(landing: Landing):
    tables = run_chain(list(landing.files))
    ref = Reference(landing)
    consenting = ref.consenting

    for name, column in (
        ("customer_trusted", "email"),
        ("customer_curated", "email"),
        ("accelerometer_trusted", "user"),
        *((f"machine_learning_curated[{j.value}]", "user") for j in MlJoin),
        *((f"machine_learning_curated[{j.value}]", "subject_id") for j in MlJoin),
    ):
        leaked = set(identities(tables[name], column, ref)) - consenting
        assert not leaked, f"{name} holds customers without current consent: {leaked} ({column})"
    not_consenting = {sid for sid, person in ref.by_subject_id.items() if person not in consenting}
    for join in MlJoin:
        subject_ids = set(_ml(tables, join)["subject_id"].to_list())
        assert not subject_ids & not_consenting, f"machine_learning_curated[{join.value}]: subject_id leaked"

    curated = ref.curated  # consenting customers with at least one reading, from the reference
    for name in ("step_trainer_trusted", *(f"machine_learning_curated[{j.value}]" for j in MlJoin)):
        for serial in set(identities(tables[name], "serialNumber")):
            claimants = ref.claimants.get(serial, set())
            assert claimants, f"{name}: serial {serial!r} is claimed by no customer"
            assert claimants <= consenting, f"{name}: serial {serial!r} claimed by {claimants - consenting}"
            assert claimants <= curated, (
                f"{name}: serial {serial!r} claimed by non-curated {claimants - curated}"
            )
    for join in MlJoin:
        for column in ("user", "subject_id"):
            users = set(identities(_ml(tables, join), column, ref))
            assert users <= curated, (
                f"machine_learning_curated[{join.value}]: {column}s {users - curated} not curated"
            )


@settings(FAST, max_examples=60)
@given(landing=landings())
def test_trusted_and_curated_tables_match_the_reference_model(landing: Landing):
    tables = run_chain(list(landing.files))
    ref = Reference(landing)
    # steer generation towards landings where the joins have something to get wrong
    target(float(len(ref.curated)), label="curated customers")
    target(float(len(ref.step_trainer_trusted)), label="attributable Step Trainer readings")
    target(float(ref.cross_customer_pairs), label="cross-customer training rows")
    assert rows(tables["customer_trusted"]) == ref.customer_rows(ref.consenting)
    assert rows(tables["accelerometer_trusted"]) == Counter(ref.accelerometer_trusted)
    assert rows(tables["customer_curated"]) == ref.customer_rows(ref.curated)
    assert rows(tables["step_trainer_trusted"]) == Counter(ref.step_trainer_trusted)
    for join in MlJoin:
        assert rows(_ml(tables, join)) == ref.machine_learning_curated[join], join.value


def assert_same_tables(left: dict[str, pl.DataFrame], right: dict[str, pl.DataFrame]) -> None:
    assert left.keys() == right.keys()
    for name, frame in left.items():
        try:
            assert_frame_equal(frame, right[name], check_row_order=False)
        except AssertionError as error:
            raise AssertionError(f"{name}: {error}") from None


@settings(FAST, max_examples=25)
@given(landing=landings(), data=st.data())
def test_chain_is_deterministic_and_independent_of_file_order(landing: Landing, data: st.DataObject):
    first = run_chain(list(landing.files))
    assert_same_tables(first, run_chain(list(landing.files)))
    shuffled = data.draw(st.permutations(landing.files), label="file order")
    assert_same_tables(first, run_chain(list(shuffled)))


def read_tables(lakehouse: Path) -> dict[str, pl.DataFrame]:
    found = {}
    for name, declared in TABLES.items():
        path = lakehouse / declared.zone / name
        if path.is_dir():
            found[name] = pl.read_delta(str(path))
    return found


@pytest.mark.slow
@settings(max_examples=5, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(landing=landings())
def test_lakehouse_runs_are_repeatable_and_keep_their_contracts(landing: Landing):
    with tempfile.TemporaryDirectory() as tmp:
        root, lakehouse = Path(tmp) / "landing", Path(tmp) / "lakehouse"
        for source in SOURCE_NAMES:
            (root / source).mkdir(parents=True)
        for f in landing.files:
            (root / f.name).write_bytes(f.data())
        (root / "customer" / "_SUCCESS").write_text("not json\n")

        # a rerun with nothing new (which rewrites little), then an independent build elsewhere
        summaries, tables = [], []
        for target in (lakehouse, lakehouse, Path(tmp) / "elsewhere"):
            summaries.append(
                run_lakehouse(landing_uri=str(root), lakehouse_uri=str(target), max_reject_rate=1.0)
            )
            tables.append(read_tables(target))

        counts = [{name: info["rows"] for name, info in s["tables"].items()} for s in summaries]
        assert set(counts[0]) == set(TABLES), summaries[0]["errors"]
        assert counts[0] == counts[1] == counts[2]
        assert tables[0].keys() == tables[1].keys() == tables[2].keys() == TABLES.keys()
        assert_same_tables(tables[0], tables[1])
        assert_same_tables(tables[0], tables[2])
        for summary in summaries:
            checks = {(c["asset"], c["name"]): c for c in summary["checks"]}
            wanted = [
                *((f"{source}_landing", "lines_conserved") for source in SOURCE_NAMES),
                ("customer_trusted", "consent_given"),
                ("accelerometer_trusted", "users_are_trusted_customers"),
            ]
            for key in wanted:
                assert key in checks and checks[key]["passed"], (key, checks.get(key))
        trusted = set(identities(tables[1]["customer_trusted"], "email"))
        assert trusted == Reference(landing).consenting
