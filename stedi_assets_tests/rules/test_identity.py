"""The canonical identity: one documented form, equal to its plain-Python definition."""

from __future__ import annotations

import hashlib
import hmac
import sys
import unicodedata

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stedi_assets.rules import identity, transforms
from stedi_assets.rules.identity import (
    KEY,
    SUBJECT_ID,
    _unicode_tables,
    canonical,
    keys,
    pseudonym,
    pseudonyms,
    with_key,
    with_pseudonym,
)
from stedi_assets.rules.transforms import MlIdentity, MlJoin
from stedi_assets_tests.frames import rows_frame


def python_canonical(value: str) -> str:
    """The documented definition: NFKC, format characters removed, casefold, trimmed."""
    value = unicodedata.normalize("NFKC", value)
    return "".join(c for c in value if unicodedata.category(c) != "Cf").casefold().strip()


def polars_canonical(values: list[str | None]) -> list[str | None]:
    return pl.DataFrame({"v": values}, schema={"v": pl.String}).select(canonical(pl.col("v")))["v"].to_list()


def test_spellings_of_one_email_are_one_identity():
    spellings = [
        "anna@test.com",
        " Anna@Test.com\t",
        "an\u200bna@test.com",  # zero-width space
        "\ufeffanna@test.com",  # byte order mark
        "an\u00adna@test.com",  # soft hyphen
        "an\u200dna@test.com",  # zero-width joiner
        "ＡＮＮＡ＠ｔｅｓｔ．ｃｏｍ",  # fullwidth
    ]
    assert set(polars_canonical(spellings)) == {"anna@test.com"}


def test_casefold_goes_beyond_lower_case():
    assert polars_canonical(["STRASSE@x.de", "straße@x.de", "ΟΔΟΣ@x.gr", "οδος@x.gr", None]) == [
        "strasse@x.de",
        "strasse@x.de",
        "οδοσ@x.gr",
        "οδοσ@x.gr",
        None,
    ]


def test_the_unicode_tables_are_those_of_a_scan_of_every_code_point():
    """The tables are found a block at a time; a character-by-character scan finds the same."""
    folds, whitespace = {}, []
    for point in range(sys.maxunicode + 1):
        if 0xD800 <= point <= 0xDFFF:
            continue
        char = chr(point)
        if char.lower() == char and char.casefold() != char:
            folds[char] = char.casefold()
        if char.isspace():
            whitespace.append(char)
    assert _unicode_tables() == (folds, "".join(whitespace))
    assert folds["ß"] == "ss" and "\u3000" in whitespace


# Polars' Unicode tables are newer than Python 3.11's (14.0): the forms agree on every character
# Python has assigned (category Cn is unassigned in Python's tables).
@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(st.text(st.characters(exclude_categories=["Cs", "Cn"]), max_size=12), max_size=8))
def test_polars_form_equals_the_python_definition(values: list[str]):
    assert polars_canonical(values) == [python_canonical(v) for v in values]


def test_with_key_joins_the_form_of_each_distinct_value_back_onto_every_row():
    frame = pl.LazyFrame({"user": ["A@x", "a@x ", None, "A@x"], "n": [1, 2, 3, 4]})
    assert with_key(frame, "user").collect().to_dict(as_series=False) == {
        "user": ["A@x", "a@x ", None, "A@x"],
        "n": [1, 2, 3, 4],
        KEY: ["a@x", "a@x", None, "a@x"],
    }
    assert keys(frame, "user").collect()[KEY].to_list() == ["a@x"]


KEY_ONE, KEY_TWO = b"pseudonym-key-one", b"pseudonym-key-two"


def python_subject_id(value: str, secret: bytes) -> str:
    """The documented subject_id: HMAC-SHA256 (hex) of the canonical identity."""
    return hmac.new(secret, python_canonical(value).encode(), hashlib.sha256).hexdigest()


def test_pseudonym_is_the_keyed_hash_of_the_canonical_identity():
    assert pseudonym("a@x.com", KEY_ONE) == python_subject_id("a@x.com", KEY_ONE)
    assert len(pseudonym("a@x.com", KEY_ONE)) == 64
    assert pseudonym("a@x.com", KEY_ONE) != pseudonym("a@x.com", KEY_TWO)
    assert pseudonym("a@x.com", KEY_ONE) != pseudonym("b@x.com", KEY_ONE)


@pytest.mark.parametrize("secret", [b"", KEY_ONE, b"k" * 64, b"k" * 65, bytes(range(256))])
def test_pseudonyms_of_a_series_are_hmac_sha256_under_any_key_length(secret):
    """The batch form builds HMAC's keyed states itself (a key longer than SHA-256's block is hashed
    first): it must equal Python's hmac for keys shorter than, equal to and longer than a block."""
    values = pl.Series(["a@x.com", None, "ß\u00e9@x.com", ""])
    expected = [
        hmac.new(secret, v.encode(), hashlib.sha256).hexdigest() if v is not None else None for v in values
    ]
    assert pseudonyms(values, secret).to_list() == expected


def test_remembered_pseudonyms_are_never_another_keys(monkeypatch):
    """Pseudonyms are remembered per key for the process: the same values hashed again, under
    another key in between, and past the memory's limit, are each key's own HMAC."""
    monkeypatch.setattr(identity, "KNOWN_LIMIT", 2)
    monkeypatch.setattr(identity, "_known", {})
    values = pl.Series(["a@x.com", "b@x.com", None, "c@x.com", "a@x.com"])

    def expected(secret: bytes) -> list[str | None]:
        return [
            None if v is None else hmac.new(secret, v.encode(), hashlib.sha256).hexdigest() for v in values
        ]

    for secret in (KEY_ONE, KEY_TWO, KEY_ONE, KEY_TWO):
        assert pseudonyms(values, secret).to_list() == expected(secret)
    assert sorted(len(known) for known in identity._known.values()) == [2, 2]
    assert KEY_ONE not in identity._known and KEY_TWO not in identity._known


def test_with_pseudonym_hashes_each_spelling_of_one_email_alike():
    frame = pl.LazyFrame({"user": ["A@x.com", " a\u200b@X.COM", None, "b@x.com"], "n": [1, 2, 3, 4]})
    hashed = with_pseudonym(frame, "user", KEY_ONE).collect()
    assert hashed.columns == ["user", "n", SUBJECT_ID]
    assert hashed["n"].to_list() == [1, 2, 3, 4]
    assert hashed[SUBJECT_ID].to_list() == [
        python_subject_id("a@x.com", KEY_ONE),
        python_subject_id("a@x.com", KEY_ONE),
        None,
        python_subject_id("b@x.com", KEY_ONE),
    ]


def _training_subject_ids(secret: bytes) -> list[str]:
    """The subject_ids the training-table rule gives two spellings of one email, in row order."""
    steps = rows_frame(
        "step_trainer_trusted",
        [{"sensorReadingTime": t, "serialNumber": "s1", "distanceFromObject": 5} for t in (10, 20)],
    )
    readings = rows_frame(
        "accelerometer_trusted",
        [
            {"user": "A@x.com", "timestamp": 10, "x": 0.1, "y": 0.2, "z": 0.3},
            {"user": " a\u200b@X.COM", "timestamp": 20, "x": 0.1, "y": 0.2, "z": 0.3},
        ],
    )
    curated = rows_frame("customer_curated", [{"email": "a@x.com", "serialNumber": "s1"}])
    frame = transforms.machine_learning_curated(
        steps.lazy(), readings.lazy(), curated.lazy(), secret, MlJoin.same_customer, MlIdentity.email
    )
    return frame.sort("sensorReadingTime").collect()[SUBJECT_ID].to_list()


def test_subject_id_is_stable_under_one_key_one_per_person_and_changes_with_the_key():
    first = _training_subject_ids(KEY_ONE)
    assert first == _training_subject_ids(KEY_ONE)  # a second run with the same key
    assert first == [python_subject_id("a@x.com", KEY_ONE)] * 2  # both spellings: one person
    other = _training_subject_ids(KEY_TWO)
    assert other == [python_subject_id("a@x.com", KEY_TWO)] * 2
    assert not set(first) & set(other)
