"""The canonical identity: one documented form, equal to its plain-Python definition."""

from __future__ import annotations

import unicodedata

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from stedi_assets.rules.identity import KEY, canonical, keys, with_key


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
