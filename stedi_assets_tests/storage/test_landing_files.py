"""Landing files as they really arrive: gzip-compressed as Kinesis Firehose writes them (whole,
damaged, or not gzip at all) and named with bytes that are not UTF-8, ingested end to end."""

from __future__ import annotations

import gzip
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from stedi_assets.cli import run_lakehouse
from stedi_assets.rules.parsing import UNREADABLE
from stedi_assets.storage.environment import S3Options
from stedi_assets.storage.errors import StorageError
from stedi_assets.storage.lakehouse import SPLIT_BLOCK, Lakehouse, LandingZone
from stedi_assets.storage.manifest import MANIFEST, Manifest
from stedi_assets_tests.helpers import T1, T2, make_bucket, upload_tree

ACCEL = "accelerometer"
TABLES = ("accelerometer_landing", "accelerometer_rejects")


def reading(user: str, timestamp: int | str, x: float) -> bytes:
    return json.dumps({"user": user, "timestamp": timestamp, "x": x, "y": 0.0, "z": -1.0}).encode()


MESSY = b"\r\n".join(
    [
        b"\xef\xbb\xbf" + reading("Alice@test.com", T1, 5.0),
        reading("Bob@test.com", "soon", 6.0),
        b"",
        b'{"user": "Erin@test.com", "timestamp": ',
        b"[1, 2]",
        json.dumps({"timestamp": T2, "x": 1.0}).encode(),
        reading("Erin@test.com", T2, 7.0),  # no final newline
    ]
)
"""Valid UTF-8 (Polars reads it, gzip or not): a BOM, CRLF, a blank line and a bad line of each kind."""
UNDECODABLE = b"".join(
    line + b"\n"
    for line in (
        reading("Alice@test.com", T2, 8.0),
        b'{"user": "\xff@test.com", "timestamp": 1}',
        reading("Erin@test.com", T1, 9.0),
    )
)
"""A line that is not UTF-8: Polars refuses the file, which is read in Python (gzip or not)."""
THREE = b"".join(
    reading(user, T1, x) + b"\n"
    for user, x in (("Alice@test.com", 1.5), ("Bob@test.com", 2.5), ("Erin@test.com", 3.5))
)
GZIP_HEADER = 10
STORED_BLOCK_HEADER = 5


def cut_mid_third_line() -> bytes:
    """THREE as an uncompressed (stored) gzip cut in the middle of its third line: exactly two whole
    lines can be read back."""
    stored = gzip.compress(THREE, compresslevel=0, mtime=0)
    two_lines = THREE.index(b"\n", THREE.index(b"\n") + 1) + 1
    return stored[: GZIP_HEADER + STORED_BLOCK_HEADER + two_lines + 5]


def bad_checksum() -> bytes:
    """THREE gzip-compressed, with its CRC-32 damaged: every line inflates, the check then fails."""
    damaged = bytearray(gzip.compress(THREE, mtime=0))
    damaged[-8] ^= 0xFF
    return bytes(damaged)


def not_deflate() -> bytes:
    """A gzip header followed by data that is not deflate (a reserved block type): nothing inflates."""
    return gzip.compress(b"", mtime=0)[:GZIP_HEADER] + b"\x07 not deflate data\n"


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[Path], tuple[str, str]]:
    """Where a landing folder is ingested from and into: local folders, or a bucket of the S3 test server
    it is uploaded to; (landing_uri, lakehouse_uri)."""
    if request.param == "local":
        return lambda landing: (str(landing), str(tmp_path / "lakehouse"))
    request.getfixturevalue("s3_env")

    def uploaded(landing: Path) -> tuple[str, str]:
        bucket = f"landing-files-{uuid.uuid4().hex[:12]}"
        make_bucket(bucket)
        upload_tree(landing, bucket, "landing")
        return f"s3://{bucket}/landing", f"s3://{bucket}/lakehouse"

    return uploaded


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def ingest(landing_uri: str, lakehouse_uri: str) -> dict[str, Any]:
    """The ingest and the zones over it; the ingest must succeed with every line accounted for."""
    summary = run_lakehouse(landing_uri=landing_uri, lakehouse_uri=lakehouse_uri, max_reject_rate=0.9)
    assert summary["success"], summary["errors"]
    conserved = {(c["asset"], c["name"]): c["passed"] for c in summary["checks"]}
    assert conserved[("accelerometer_landing", "lines_conserved")]
    return summary


def options(uri: str) -> dict[str, str] | None:
    return S3Options.from_environment().delta_options() if uri.startswith("s3://") else None


def table(summary: dict[str, Any], name: str) -> pl.DataFrame:
    uri = summary["tables"][name]["uri"]
    return pl.read_delta(uri, storage_options=options(uri))


def versions(lakehouse_uri: str) -> dict[str, int]:
    store = Lakehouse(lakehouse_uri, S3Options.from_environment())
    return {
        name: store.open(store.table_uri(zone, name)).version()
        for zone, name in zip(("landing", "quarantine"), TABLES, strict=True)
    }


def by_file(frame: pl.DataFrame, *columns: str) -> dict[str, list[tuple]]:
    """Each file's rows (the columns given, by line number), the file named relative to its source."""
    named = frame.with_columns(pl.col("_source_file").str.replace(r"^.*/accelerometer/", ""))
    return {
        file: rows.sort("_line_number").select("_line_number", *columns).rows()
        for (file,), rows in named.group_by("_source_file")
    }


def test_gzip_files_give_the_rows_and_reasons_of_their_plain_copies(
    tiny_landing: Path, place: Callable[[Path], tuple[str, str]]
):
    for name, data in (("messy", MESSY), ("undecodable", UNDECODABLE)):
        write(tiny_landing / ACCEL / f"{name}.json", data)
        write(tiny_landing / ACCEL / f"{name}.json.gz", gzip.compress(data))

    summary = ingest(*place(tiny_landing))

    landing, rejects = table(summary, "accelerometer_landing"), table(summary, "accelerometer_rejects")
    accepted = by_file(landing, "user", "timestamp", "x")
    messy = [(1, "Alice@test.com", T1, 5.0), (7, "Erin@test.com", T2, 7.0)]
    undecodable = [(1, "Alice@test.com", T2, 8.0), (3, "Erin@test.com", T1, 9.0)]
    assert accepted["messy.json.gz"] == accepted["messy.json"] == messy
    assert accepted["undecodable.json.gz"] == accepted["undecodable.json"] == undecodable
    reasons = by_file(rejects, "reason")
    assert (
        reasons["messy.json.gz"]
        == reasons["messy.json"]
        == [
            (2, "timestamp: 'soon' is not an integer"),
            (4, "not valid JSON"),
            (5, "not a JSON object"),
            (6, "missing required field user"),
        ]
    )
    assert reasons["undecodable.json.gz"] == reasons["undecodable.json"] == [(2, "invalid UTF-8")]
    assert set(reasons) == {"messy.json", "messy.json.gz", "undecodable.json", "undecodable.json.gz"}
    # the same rows, column for column, whatever the file's compression
    for frame in (landing, rejects):
        plain = frame.filter(~pl.col("_source_file").str.ends_with(".gz"))
        unzipped = frame.filter(pl.col("_source_file").str.ends_with(".gz")).with_columns(
            pl.col("_source_file").str.strip_suffix(".gz")
        )
        columns = [c for c in frame.columns if c != "_ingested_at"]
        order = ["_source_file", "_line_number"]
        assert (
            unzipped.select(columns)
            .sort(order)
            .equals(
                plain.filter(pl.col("_source_file").str.contains("/(messy|undecodable)"))
                .select(columns)
                .sort(order)
            )
        )


def test_a_damaged_gzip_file_keeps_the_lines_before_the_damage(
    tiny_landing: Path, place: Callable[[Path], tuple[str, str]]
):
    write(tiny_landing / ACCEL / "cut.json.gz", cut_mid_third_line())
    write(tiny_landing / ACCEL / "bad-checksum.json.gz", bad_checksum())
    write(tiny_landing / ACCEL / "not-deflate.json.gz", not_deflate())
    write(tiny_landing / ACCEL / "plain-text.json.gz", THREE)  # named .gz, read as the text it is
    landing_uri, lakehouse_uri = place(tiny_landing)

    summary = ingest(landing_uri, lakehouse_uri)

    accepted = by_file(table(summary, "accelerometer_landing"), "user", "x")
    three = [(1, "Alice@test.com", 1.5), (2, "Bob@test.com", 2.5), (3, "Erin@test.com", 3.5)]
    assert accepted["cut.json.gz"] == three[:2]
    assert accepted["bad-checksum.json.gz"] == three
    assert accepted["plain-text.json.gz"] == three
    assert "not-deflate.json.gz" not in accepted
    assert by_file(table(summary, "accelerometer_rejects"), "reason", "raw_line") == {
        "bad-checksum.json.gz": [(4, UNREADABLE, None)],
        "cut.json.gz": [(3, UNREADABLE, None)],
        "not-deflate.json.gz": [(1, UNREADABLE, None)],
    }
    assert UNREADABLE == "truncated or corrupt compressed data: the file cannot be read from this line on"
    # nothing new: the manifest holds every file, damaged ones included, and no version is written
    before = versions(lakehouse_uri)
    again = ingest(landing_uri, lakehouse_uri)
    assert versions(lakehouse_uri) == before
    assert again["tables"]["accelerometer_rejects"]["rows"] == 3


def test_a_rerun_reads_no_byte_of_the_gzip_files_it_holds(tiny_landing: Path, tmp_path: Path):
    gzipped = {"messy.json.gz": gzip.compress(MESSY), "cut.json.gz": cut_mid_third_line()}
    for name, data in gzipped.items():
        write(tiny_landing / ACCEL / name, data)
    lakehouse_uri = str(tmp_path / "lakehouse")
    first = ingest(str(tiny_landing), lakehouse_uri)
    store = Lakehouse(lakehouse_uri)
    held = Manifest.loads(store.latest_write_property(store.table_uri("landing", TABLES[0]), MANIFEST))
    assert held is not None
    assert {Path(uri).name: entry["lines"] for uri, entry in held.files.items()} == {
        "accelerometer-1.json": 4,
        "cut.json.gz": 3,  # two lines and the unreadable rest
        "messy.json.gz": 6,  # the blank line is not counted
    }
    # Same size and modification time, different bytes: had the run read them, the tables would change.
    for name in gzipped:
        path = tiny_landing / ACCEL / name
        stat = path.stat()
        path.write_bytes(bytes(stat.st_size))
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    before = versions(lakehouse_uri)

    second = ingest(str(tiny_landing), lakehouse_uri)

    assert versions(lakehouse_uri) == before
    for name in TABLES:
        assert table(second, name).equals(table(first, name))


NOT_UTF8 = {
    b"acc\xff.json": reading("Alice@test.com", T2, 11.0) + b"\n" + b'{"user": "Bob@test.com"}\n',
    b"d\xfe/acc\xff.json.gz": gzip.compress(reading("Erin@test.com", T1, 12.0) + b"\n" + b"[]\n"),
}


def test_a_file_whose_name_is_not_utf8_is_ingested_under_its_escaped_name(tiny_landing: Path, tmp_path: Path):
    folder = os.fsencode(tiny_landing / ACCEL)
    for name, data in NOT_UTF8.items():
        os.makedirs(os.path.dirname(folder + b"/" + name), exist_ok=True)
        with open(folder + b"/" + name, "wb") as file:
            file.write(data)
    lakehouse_uri = str(tmp_path / "lakehouse")

    summary = ingest(str(tiny_landing), lakehouse_uri)

    assert by_file(table(summary, "accelerometer_landing"), "user", "x") == {
        "accelerometer-1.json": [
            (1, "Alice@test.com", 1.0),
            (2, "Alice@test.com", 2.0),
            (3, "Bob@test.com", 3.0),
            (4, "Erin@test.com", 4.0),
        ],
        "acc\\xff.json": [(1, "Alice@test.com", 11.0)],
        "d\\xfe/acc\\xff.json.gz": [(1, "Erin@test.com", 12.0)],
    }
    assert by_file(table(summary, "accelerometer_rejects"), "reason") == {
        "acc\\xff.json": [(2, "missing required field timestamp")],
        "d\\xfe/acc\\xff.json.gz": [(2, "not a JSON object")],
    }
    store = Lakehouse(lakehouse_uri)
    for name in TABLES:
        zone = "landing" if name.endswith("landing") else "quarantine"
        recorded = store.latest_write_property(store.table_uri(zone, name), MANIFEST)
        assert recorded is not None
        recorded.encode("utf-8")  # no lone surrogate
        held = Manifest.loads(recorded)
        assert held is not None
        assert sorted(held.files) == [
            f"{tiny_landing}/{ACCEL}/acc\\xff.json",
            f"{tiny_landing}/{ACCEL}/accelerometer-1.json",
            f"{tiny_landing}/{ACCEL}/d\\xfe/acc\\xff.json.gz",
        ]
    # the escaped names are the manifest's keys: nothing new on the next run
    before = versions(lakehouse_uri)
    ingest(str(tiny_landing), lakehouse_uri)
    assert versions(lakehouse_uri) == before


def test_a_file_that_cannot_be_read_is_named_escaped_in_the_error(tmp_path: Path):
    folder = os.fsencode(tmp_path / "landing" / ACCEL)
    os.makedirs(folder)
    with open(folder + b"/acc\xff.json", "wb") as file:
        file.write(reading("Alice@test.com", T1, 1.0) + b"\n")
    zone = LandingZone(str(tmp_path / "landing"))
    files = zone.files(ACCEL)
    os.remove(folder + b"/acc\xff.json")  # gone between the listing and the read

    with pytest.raises(StorageError) as raised:
        zone.collect(files, lambda lines: lines.collect())

    assert raised.value.message == (
        f"Storage error on {tmp_path}/landing/{ACCEL}/acc\\xff.json: [Errno 2] No such file or directory"
    )
    assert not raised.value.transient


def test_a_damaged_gzip_file_bigger_than_a_block_is_numbered_across_blocks(tmp_path: Path):
    """Read in Python block by block, its lines are numbered as one file; the invalid line is found."""
    pad = "x" * 100
    count = 2 * SPLIT_BLOCK // (len(pad) + 24) + 1_000
    text = "".join(f'{{"n": {n}, "pad": "{pad}"}}\n' for n in range(1, count + 1)).encode()
    invalid = count // 2
    text = text.replace(
        f'{{"n": {invalid}, '.encode(), f'{{"n": {invalid}, "bad": "\xff", '.encode("latin-1")
    )
    write(
        tmp_path / "landing" / ACCEL / "big.json.gz", gzip.compress(text, compresslevel=1)[:-8]
    )  # no trailer

    lines = LandingZone(str(tmp_path / "landing")).read_lines(ACCEL)

    assert len(text) > 2 * SPLIT_BLOCK
    assert lines.height == count + 1
    assert lines["_line_number"].to_list() == list(range(1, count + 2))
    expected = pl.concat_str(pl.lit('{"n": '), pl.col("_line_number"), pl.lit(f', "pad": "{pad}"}}'))
    intact = lines.filter(pl.col("_line_number") <= count, pl.col("_line_number") != invalid)
    assert intact.filter(pl.col("raw_line") != expected).height == 0
    assert intact["_utf8_valid"].all()
    assert lines.filter(pl.col("_line_number") == invalid)["_utf8_valid"].to_list() == [False]
    assert lines.tail(1).select("raw_line", "_utf8_valid").rows() == [(None, False)]
