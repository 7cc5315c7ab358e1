"""Erasure requests end to end: gone from every table and every retained version, and for good."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import boto3
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from stedi_assets.cli import main, run_lakehouse
from stedi_assets.rules.identity import pseudonym
from stedi_assets.storage.environment import S3Options
from stedi_assets.storage.lakehouse import Lakehouse
from stedi_assets.storage.pseudonym import pseudonym_key
from stedi_assets_tests.helpers import make_bucket, retained_versions, upload_tree, write_jsonl

ALICE = "alice@test.com"
TABLES = [
    ("landing", "customer_landing", "email"),
    ("landing", "accelerometer_landing", "user"),
    ("trusted", "customer_trusted", "email"),
    ("trusted", "accelerometer_trusted", "user"),
    ("curated", "customer_curated", "email"),
]
DEVICE_TABLES = [
    ("landing", "step_trainer_landing"),
    ("trusted", "step_trainer_trusted"),
    ("curated", "machine_learning_curated"),
]


def _holds(lakehouse: Path) -> list[str]:
    """Every table with a retained version that still holds Alice or her device."""
    held, store = [], Lakehouse(str(lakehouse))
    for zone, name, column in TABLES:
        versions = retained_versions(store, zone, name).values()
        if any(ALICE in f[column].str.to_lowercase().to_list() for f in versions):
            held.append(name)
    for zone, name in DEVICE_TABLES:
        versions = retained_versions(store, zone, name).values()
        if any("S-A" in f["serialNumber"].to_list() for f in versions):
            held.append(name)
    return held


def _request(landing: Path) -> Path:
    path = landing / "erasure_requests" / "2024-06-01.json"
    write_jsonl(path, [{"email": " ALICE@Test.com\u200b", "requestedAt": 1_717_200_000_000}])
    return path


def test_an_erasure_request_removes_the_person_from_every_table_and_version_for_good(
    tiny_landing: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    lakehouse = tmp_path / "lakehouse"
    settings = {"landing_uri": str(tiny_landing), "lakehouse_uri": str(lakehouse), "ml_identity": "email"}
    assert run_lakehouse(**settings)["success"]
    assert set(_holds(lakehouse)) == {n for _, n, _ in TABLES} | {n for _, n in DEVICE_TABLES}
    request = _request(tiny_landing)

    summary = run_lakehouse(**settings)

    assert summary["success"], summary["errors"]
    assert _holds(lakehouse) == []
    conserved = {c["asset"]: c["summary"] for c in summary["checks"] if c["name"] == "lines_conserved"}
    assert conserved == {
        "customer_landing": "5 non-blank lines read, 4 accepted + 0 rejected + 1 erased",
        "accelerometer_landing": "4 non-blank lines read, 2 accepted + 0 rejected + 2 erased",
        "step_trainer_landing": "4 non-blank lines read, 2 accepted + 0 rejected + 2 erased",
    }
    secret = pseudonym_key(str(lakehouse)).secret
    log = pl.read_delta(str(lakehouse / "privacy" / "erasure_log"))
    assert log.select("hashed_id", "kind", "requested_at").rows() == [
        (pseudonym("s-a", secret), "device", None),
        (pseudonym(ALICE, secret), "subject", 1_717_200_000_000),
    ]
    assert "customer_trusted" in log["found_in"][1].to_list()
    assert ALICE not in str(log.rows()).lower()

    # the request stays in force when its file is gone: re-reading the landing files never brings her back
    request.unlink()
    logged = pl.read_delta(str(lakehouse / "privacy" / "erasure_log"))
    summary = run_lakehouse(**settings)
    assert summary["success"]
    assert _holds(lakehouse) == []
    assert_frame_equal(pl.read_delta(str(lakehouse / "privacy" / "erasure_log")), logged)
    assert summary["tables"]["erasure_log"]["rows"] == 2

    request = _request(tiny_landing)
    code = main(["audit", "--landing", str(tiny_landing), "--lakehouse", str(lakehouse)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.endswith("nothing found\n")
    assert f"erased {pseudonym(ALICE, secret)[:16]} still has lines in " in out


def test_the_audit_finds_an_erased_person_when_the_vacuum_is_skipped(
    tiny_landing: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(Lakehouse, "forget_history", lambda self, uri: 0)
    lakehouse = tmp_path / "lakehouse"
    settings = {"landing_uri": str(tiny_landing), "lakehouse_uri": str(lakehouse)}
    assert run_lakehouse(**settings)["success"]
    _request(tiny_landing)
    assert run_lakehouse(**settings)["success"]

    code = main(["audit", "--landing", str(tiny_landing), "--lakehouse", str(lakehouse)])

    out = capsys.readouterr().out
    assert code == 1
    assert "customer_landing version 0: 1 identities without consent" in out
    assert "accelerometer_landing version 0: 1 identities without consent" in out
    assert "customer_trusted version 0: 1 identities without consent" in out
    # her device too: the landing files still say she claims it, but she is erased
    assert "step_trainer_trusted version 0: 1 identities without consent" in out
    assert ALICE not in out.lower()


@pytest.mark.s3
def test_withdrawal_and_erasure_on_the_s3_server(
    tiny_landing: Path, s3_env: str, capsys: pytest.CaptureFixture[str]
):
    """The same guarantees with the landing zone and the lakehouse in a bucket of a real S3 API server:
    no data object in the bucket holds the erased person, and the audit finds nothing."""
    bucket = f"erasure-{uuid.uuid4().hex[:12]}"
    make_bucket(bucket)
    upload_tree(tiny_landing, bucket, "landing")
    landing, lakehouse = f"s3://{bucket}/landing", f"s3://{bucket}/lakehouse"
    assert run_lakehouse(landing_uri=landing, lakehouse_uri=lakehouse)["success"]
    _request(tiny_landing)
    upload_tree(tiny_landing / "erasure_requests", bucket, "landing/erasure_requests")

    summary = run_lakehouse(landing_uri=landing, lakehouse_uri=lakehouse)

    assert summary["success"], summary["errors"]
    store = Lakehouse(lakehouse, S3Options.from_environment())
    client = boto3.client("s3")
    for zone, name, column in TABLES:
        uri = store.table_uri(zone, name)
        frame = store.scan(uri).collect()
        assert ALICE not in frame[column].str.to_lowercase().to_list(), name
        # no data object left in the bucket, referenced or not, holds her
        listed = client.list_objects_v2(Bucket=bucket, Prefix=f"lakehouse/{zone}/{name}/")["Contents"]
        objects = [o for o in listed if o["Key"].endswith(".parquet") and "/_delta_log/" not in o["Key"]]
        assert objects, name
        for obj in objects:
            data = pl.read_parquet(client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
            assert ALICE not in data[column].str.to_lowercase().to_list(), obj["Key"]
    code = main(["audit", "--landing", landing, "--lakehouse", lakehouse])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.endswith("nothing found\n")


@pytest.mark.s3
def test_an_s3_lakehouse_without_a_pseudonym_key_refuses_to_run(
    tiny_landing: Path, s3_env: str, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("STEDI_PSEUDONYM_KEY")
    bucket = f"nokey-{uuid.uuid4().hex[:12]}"
    make_bucket(bucket)
    upload_tree(tiny_landing, bucket, "landing")
    lakehouse = f"s3://{bucket}/lakehouse"

    summary = run_lakehouse(landing_uri=f"s3://{bucket}/landing", lakehouse_uri=lakehouse)

    assert not summary["success"]
    message = (
        f"The lakehouse {lakehouse} is on S3, so its pseudonyms need a shared key: set "
        "STEDI_PSEUDONYM_KEY (the same value on every machine that writes it)."
    )
    assert f"erasure_log: {message}" in summary["errors"]


def test_an_erasure_request_that_names_no_readable_email_stops_the_run(tiny_landing: Path, tmp_path: Path):
    """Someone asked to be forgotten and it cannot be told who: nothing is ingested until it is fixed."""
    requests = tiny_landing / "erasure_requests" / "bad.json"
    requests.parent.mkdir()
    requests.write_text('{"mail": "alice@test.com"}\n\n{"email": "bob@test.com"}\n')

    summary = run_lakehouse(landing_uri=str(tiny_landing), lakehouse_uri=str(tmp_path / "lakehouse"))

    assert not summary["success"]
    assert summary["errors"] == [
        f"erasure_log: 1 erasure request lines name no readable email ({requests} line 1): fix them as "
        '{"email": "...", "requestedAt": <epoch ms>} lines.'
    ]
    assert summary["tables"] == {}
    assert "alice" not in summary["errors"][0]


def test_a_lost_erasure_log_stops_the_ingest_instead_of_bringing_people_back(
    tiny_landing: Path, tmp_path: Path
):
    """The erasure log keeps requests in force after their files are gone. If the log itself is lost
    too, rebuilding the landing tables would bring the person back: the ingest refuses instead."""
    lakehouse = tmp_path / "lakehouse"
    settings = {"landing_uri": str(tiny_landing), "lakehouse_uri": str(lakehouse)}
    _request(tiny_landing).unlink()  # no request yet
    assert run_lakehouse(**settings)["success"]
    request = _request(tiny_landing)
    assert run_lakehouse(**settings)["success"]
    request.unlink()
    shutil.rmtree(lakehouse / "privacy" / "erasure_log")

    summary = run_lakehouse(**settings)

    assert not summary["success"]
    assert any(
        e.startswith("ingest_customer: The erasure log holds 0 entries, fewer than the 2 the customer tables")
        for e in summary["errors"]
    ), summary["errors"]
    assert _holds(lakehouse) == []


def test_a_request_delivered_before_the_first_run_erases_the_devices_too(tiny_landing: Path, tmp_path: Path):
    """On a new lakehouse no customer table holds the requester's serials yet, and after the first
    ingest it never will (their lines are dropped): the serials are read from the customer files."""
    lakehouse = tmp_path / "lakehouse"
    _request(tiny_landing)

    summary = run_lakehouse(landing_uri=str(tiny_landing), lakehouse_uri=str(lakehouse))

    assert summary["success"], summary["errors"]
    log = pl.read_delta(str(lakehouse / "privacy" / "erasure_log"))
    assert sorted(log["kind"]) == ["device", "subject"]
    assert _holds(lakehouse) == []
