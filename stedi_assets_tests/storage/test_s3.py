"""The same graph with landing and lakehouse in buckets of a real S3 API server on 127.0.0.1.

The error sentences are the product's contract: each names the URI, what went wrong and what to fix.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import boto3
import polars as pl
import pytest

from stedi_assets.cli import run_lakehouse
from stedi_assets.rules.parsing import LINE_NUMBER, RAW_LINE, SOURCE_FILE
from stedi_assets.storage.environment import S3Options
from stedi_assets.storage.lakehouse import Lakehouse, LandingZone
from stedi_assets_tests.helpers import (
    T2,
    free_port,
    make_bucket,
    moto_server,
    read_table,
    reference_counts,
    upload_tree,
    write_jsonl,
    write_tiny_landing,
)

pytestmark = pytest.mark.s3


def test_generated_data_on_s3_matches_local(s3_env: str, generated_landing: Path, tmp_path: Path):
    make_bucket("stedi-gen-landing")
    make_bucket("stedi-gen-lake")
    upload_tree(generated_landing, "stedi-gen-landing", "raw/landing")
    boto3.client("s3").put_object(Bucket="stedi-gen-landing", Key="raw/landing/customer/_SUCCESS", Body=b"")

    on_s3 = run_lakehouse(
        landing_uri="s3://stedi-gen-landing/raw/landing", lakehouse_uri="s3://stedi-gen-lake/lh"
    )
    local = run_lakehouse(landing_uri=str(generated_landing), lakehouse_uri=str(tmp_path / "lh"))

    assert on_s3["success"], on_s3["errors"]
    assert local["success"], local["errors"]
    assert len(on_s3["tables"]) == 12
    assert {n: t["rows"] for n, t in on_s3["tables"].items()} == {
        n: t["rows"] for n, t in local["tables"].items()
    }
    uri = on_s3["tables"]["customer_trusted"]["uri"]
    assert uri == "s3://stedi-gen-lake/lh/trusted/customer_trusted"
    from_s3 = pl.read_delta(uri, storage_options=S3Options.from_environment().delta_options())
    from_disk = pl.read_delta(local["tables"]["customer_trusted"]["uri"])
    assert from_s3.height > 0
    assert from_s3.sort("email").equals(from_disk.sort("email"))
    keys = {
        o["Key"]
        for o in boto3.client("s3").list_objects_v2(Bucket="stedi-gen-lake", Prefix="lh/")["Contents"]
    }
    assert any(k.startswith("lh/curated/machine_learning_curated/_delta_log/") for k in keys)


def test_empty_landing_prefix_is_one_clear_error(s3_env: str, tmp_path: Path):
    make_bucket("stedi-empty-landing")
    summary = run_lakehouse(
        "key:customer_landing",
        landing_uri="s3://stedi-empty-landing/nothing-here",
        lakehouse_uri=str(tmp_path),
    )

    assert summary["errors"] == [
        "ingest_customer: Nothing under s3://stedi-empty-landing/nothing-here/customer/: put the customer "
        "JSON-lines files there or point --landing / STEDI_LANDING_URI at the landing root."
    ]
    assert summary["retries"] == {}


def test_missing_bucket_is_one_clear_error(s3_env: str, tmp_path: Path):
    summary = run_lakehouse(landing_uri="s3://no-such-bucket/landing", lakehouse_uri=str(tmp_path))

    assert not summary["success"]
    assert summary["retries"] == {}
    # the first step to read the landing zone (the erasure requests) says it; nothing runs after it
    assert summary["errors"] == [
        f"erasure_log: Bucket of s3://no-such-bucket/landing/erasure_requests/ does not exist at {s3_env}: "
        "create it or fix --landing / STEDI_LANDING_URI."
    ]


@pytest.mark.reference
def test_reference_counts_on_s3(s3_env: str, reference_landing: Path):
    make_bucket("stedi-ref-landing")
    make_bucket("stedi-ref-lake")
    upload_tree(reference_landing, "stedi-ref-landing", "landing")
    summary = run_lakehouse(landing_uri="s3://stedi-ref-landing/landing", lakehouse_uri="s3://stedi-ref-lake")

    expected = reference_counts()
    assert summary["success"], summary["errors"]
    assert expected, "the reference expectations name no table"
    assert {n: summary["tables"][n]["rows"] for n in expected} == expected


def test_missing_lakehouse_bucket_is_one_clear_error(s3_env: str, generated_landing: Path):
    summary = run_lakehouse(
        "key:customer_landing", landing_uri=str(generated_landing), lakehouse_uri="s3://no-such-lake/lh"
    )

    assert not summary["success"]
    assert summary["retries"] == {}
    assert summary["errors"] == [
        "ingest_customer: Bucket of s3://no-such-lake/lh/privacy/erasure_log does not exist at "
        f"{s3_env}: create it or fix --lakehouse / STEDI_LAKEHOUSE_URI."
    ]


@pytest.fixture(scope="module")
def s3_with_auth() -> Iterator[str]:
    """A second S3 server that checks credentials (moto with IAM auth on from the first request)."""
    with moto_server({"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as endpoint:
        yield endpoint


def test_bad_credentials_are_one_clear_error(s3_with_auth: str, s3_env: str, monkeypatch, tmp_path: Path):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_with_auth)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "not-a-key")
    summary = run_lakehouse(
        "key:customer_landing", landing_uri="s3://stedi-landing/landing", lakehouse_uri=str(tmp_path)
    )

    assert summary["errors"] == [
        "ingest_customer: Access to s3://stedi-landing/landing/customer/ was denied (InvalidAccessKeyId): "
        "check the AWS credentials and the bucket policy."
    ]
    assert summary["retries"] == {}


def test_bad_credentials_on_the_lakehouse(
    s3_with_auth: str, s3_env: str, monkeypatch, generated_landing: Path
):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_with_auth)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "not-a-key")
    summary = run_lakehouse(
        "key:customer_landing", landing_uri=str(generated_landing), lakehouse_uri="s3://stedi-lake/lh"
    )

    assert summary["errors"] == [
        "ingest_customer: Access to s3://stedi-lake/lh/privacy/erasure_log was denied "
        "(InvalidAccessKeyId): check the AWS credentials and the bucket policy."
    ]
    assert summary["retries"] == {}


@pytest.mark.slow
def test_unreachable_endpoint_is_retried_then_one_clear_error(s3_env: str, monkeypatch, tmp_path: Path):
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed)
    summary = run_lakehouse(
        "key:customer_landing", landing_uri="s3://stedi-landing/landing", lakehouse_uri=str(tmp_path)
    )

    assert summary["errors"] == [
        f"ingest_customer: Cannot reach {closed} for s3://stedi-landing/landing/customer/: "
        "check AWS_ENDPOINT_URL and that the S3 server is running."
    ]
    assert summary["retries"] == {"ingest_customer": 3}


@pytest.mark.slow
def test_unreachable_lakehouse_is_retried_then_one_clear_error(
    s3_env: str, monkeypatch, generated_landing: Path
):
    """The same fault met by delta-rs instead of boto3: the same sentence, the same retries."""
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed)
    summary = run_lakehouse(
        "key:customer_landing", landing_uri=str(generated_landing), lakehouse_uri="s3://stedi-lake/lh"
    )

    assert summary["errors"] == [
        f"ingest_customer: Cannot reach {closed} for s3://stedi-lake/lh/privacy/erasure_log: "
        "check AWS_ENDPOINT_URL and that the S3 server is running."
    ]
    assert summary["retries"] == {"ingest_customer": 3}


def test_landing_files_on_s3_are_downloaded_once_and_scanned_from_the_copies(
    s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Numbering a file's lines and parsing them read it twice: from a local copy, not from S3."""
    local = tmp_path / "landing" / "src"
    local.mkdir(parents=True)
    (local / "a.json").write_text('{"n": 1}\n{"n": 2}\n')
    (local / "b.json.gz").write_bytes(gzip.compress(b'{"n": 3}\n{"n": 4}\n{"n": 5}\n'))
    make_bucket("stedi-once")
    upload_tree(tmp_path / "landing", "stedi-once", "landing")
    scanned: list[str] = []
    scan_lines = pl.scan_lines

    def recording(source, *args, **kwargs):
        scanned.extend(source)
        return scan_lines(source, *args, **kwargs)

    monkeypatch.setattr(pl, "scan_lines", recording)

    lines = LandingZone("s3://stedi-once/landing").read_lines("src")

    assert scanned and not any(path.startswith("s3://") for path in scanned), scanned
    assert lines.select(SOURCE_FILE, LINE_NUMBER, RAW_LINE).rows() == [
        ("s3://stedi-once/landing/src/a.json", 1, '{"n": 1}'),
        ("s3://stedi-once/landing/src/a.json", 2, '{"n": 2}'),
        ("s3://stedi-once/landing/src/b.json.gz", 1, '{"n": 3}'),
        ("s3://stedi-once/landing/src/b.json.gz", 2, '{"n": 4}'),
        ("s3://stedi-once/landing/src/b.json.gz", 3, '{"n": 5}'),
    ]


def test_a_changed_file_on_s3_replaces_its_own_rows_in_its_own_days(s3_env: str, tmp_path: Path):
    """The same replacement as on disk: the corrected object (a new ETag) is read alone, its day is
    rewritten from the table's own rows and the file's, the other day's data files stay."""
    landing = write_tiny_landing(tmp_path / "landing")
    next_day = {"user": "Erin@test.com", "timestamp": T2 + 86_400_000, "x": 7.0, "y": 0.0, "z": 0.0}
    write_jsonl(landing / "accelerometer" / "accelerometer-2.json", [next_day])
    make_bucket("stedi-replace-landing")
    make_bucket("stedi-replace-lake")
    upload_tree(landing, "stedi-replace-landing", "landing")
    settings = {
        "landing_uri": "s3://stedi-replace-landing/landing",
        "lakehouse_uri": "s3://stedi-replace-lake/lh",
    }
    assert run_lakehouse(**settings)["success"]
    lakehouse = Lakehouse("s3://stedi-replace-lake/lh", S3Options.from_environment())
    uri = lakehouse.table_uri("landing", "accelerometer_landing")
    next_day_files = [f for f in lakehouse.open(uri).file_uris() if "event_day=2022-06-19" in f]
    changed = landing / "accelerometer" / "accelerometer-1.json"
    changed.write_text("".join(line for line in changed.read_text().splitlines(True) if "Bob" not in line))
    boto3.client("s3").upload_file(
        str(changed), "stedi-replace-landing", "landing/accelerometer/accelerometer-1.json"
    )

    summary = run_lakehouse(**settings)

    assert summary["success"], summary["errors"]
    rows = read_table(lakehouse, "landing", "accelerometer_landing")
    assert sorted(rows["x"]) == [1.0, 2.0, 4.0, 7.0]
    assert [f for f in lakehouse.open(uri).file_uris() if "event_day=2022-06-19" in f] == next_day_files
