"""The landing zone streamed by Polars: numbered lines per file, as the Python splitter numbers them."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
from polars.testing import assert_frame_equal

from stedi_assets.rules import parsing
from stedi_assets.rules.catalog import INGESTED_AT, LINE_NUMBER, SOURCE_FILE
from stedi_assets.storage.lakehouse import LandingZone

FILES = {
    "a.json": b'\xef\xbb\xbf{"n": 1}\r\n{"n": 2}\r\n\r\n{"n": 3}',  # BOM, CRLF, no final newline
    "b.json": b"\n\n",  # only blank lines
    "c.json": b'{"n": 4}\n{"n": "\xff"}\n{"n": 6}\n',  # one line that is not UTF-8
    "d.json": b'{"n": 7}\n\xef\xbb\xbf{"n": 8}\n',  # a BOM that does not start the file is content
    "sub/e.json": b"",  # empty, in a subfolder
}


def _landing(root: Path) -> list[Path]:
    paths = []
    for index, (name, blob) in enumerate(FILES.items()):
        path = root / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
        os.utime(path, (1_700_000_000 + index, 1_700_000_000 + index))
        paths.append(path)
    return paths


def _split_in_python(paths: list[Path]) -> pl.DataFrame:
    """What raw_lines (the Python splitter) makes of each file, in path order."""
    zone_files = LandingZone(str(paths[0].parent.parent)).files("src")
    frames = [parsing.raw_lines(Path(f.uri).read_bytes(), f.uri, f.modified) for f in zone_files]
    return pl.concat(frames)


def test_streamed_lines_are_the_lines_python_splits(tmp_path: Path):
    paths = _landing(tmp_path)
    zone = LandingZone(str(tmp_path))

    streamed = zone.read_lines("src")

    expected = _split_in_python(paths)
    # blank lines carry nothing and are dropped before parsing: the two may differ only in those
    order = [SOURCE_FILE, LINE_NUMBER]
    assert_frame_equal(
        parsing.non_blank_lines(streamed.lazy()).collect().sort(order),
        parsing.non_blank_lines(expected.lazy()).collect().sort(order),
    )
    assert streamed.filter(~pl.col(parsing.UTF8_VALID))[LINE_NUMBER].to_list() == [2]
    by_file = streamed.group_by(SOURCE_FILE).agg(pl.col(INGESTED_AT).first()).sort(SOURCE_FILE)
    assert by_file[INGESTED_AT].dt.epoch("s").to_list() == [
        1_700_000_000,
        1_700_000_001,
        1_700_000_002,
        1_700_000_003,
    ]


def test_a_file_that_is_not_utf8_does_not_stop_the_others(tmp_path: Path):
    _landing(tmp_path)
    parsed = (
        LandingZone(str(tmp_path))
        .collect(
            LandingZone(str(tmp_path)).files("src"),
            lambda lines: parsing.non_blank_lines(lines).select(SOURCE_FILE, LINE_NUMBER).collect(),
        )
        .with_columns(pl.col(SOURCE_FILE).str.extract(r"src/(.*)$"))
        .sort(SOURCE_FILE, LINE_NUMBER)
    )
    assert parsed.rows() == [
        ("a.json", 1),
        ("a.json", 2),
        ("a.json", 4),
        ("c.json", 1),
        ("c.json", 2),
        ("c.json", 3),
        ("d.json", 1),
        ("d.json", 2),
    ]
