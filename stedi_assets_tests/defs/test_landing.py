"""Messy landing files end to end: quarantine, hygiene, identity, duplicates, customer updates."""

from __future__ import annotations

import json
import uuid
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from stedi_assets.cli import run_lakehouse
from stedi_assets.rules.identity import pseudonym
from stedi_assets.storage.environment import S3Options
from stedi_assets.storage.lakehouse import Lakehouse
from stedi_assets.storage.pseudonym import pseudonym_key
from stedi_assets_tests.helpers import make_bucket, upload_tree

T0 = 1_655_564_376_000


def customer(email: str, serial: str, consent: int | None, updated: int = T0, **extra) -> dict:
    return {
        "customerName": email.split("@")[0],
        "email": email,
        "phone": "8015551212",
        "birthDay": "1399-01-01",
        "serialNumber": serial,
        "registrationDate": T0,
        "lastUpdateDate": updated,
        "shareWithResearchAsOfDate": consent,
        **extra,
    }


def lines(*rows: dict | str) -> str:
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)


@pytest.fixture
def messy_landing(tmp_path: Path) -> Path:
    root = tmp_path / "landing"
    for source in ("customer", "accelerometer", "step_trainer"):
        (root / source).mkdir(parents=True)
    # Anna consents; Ben consented, then withdrew in a later update (in another file); Cy never consented.
    (root / "customer" / "customer-1.json").write_bytes(
        b"\xef\xbb\xbf"
        + lines(
            customer("Anna@Test.com", "SER-A", T0),
            customer("ben@test.com", "SER-B", T0),
            '{"email": "cy@test.com", "serialNumber": "SER-C"}',
            '{"email": "nobody@test.com"}',
            '{"customerName": "Half", "email": "half@test.com", "serialNumb',
        )
        .replace("\n", "\r\n")
        .encode()
    )
    (root / "customer" / "customer-2.json").write_text(
        "\n" + lines(customer(" BEN@test.com ", "SER-B", None, updated=T0 + 1000)) + "\n"
    )
    (root / "customer" / "empty.json").write_text("")
    for junk in ("_SUCCESS", ".DS_Store", "README.txt"):
        (root / "customer" / junk).write_text("not json at all\n")

    readings = lines(
        {"user": " anna@test.com", "timestamp": T0, "x": 1.0, "y": 0.0, "z": 0.0},
        {"USER": "Anna@Test.com", "Timestamp": str(T0 + 1), "x": "0.5", "y": 0, "z": -1},
        {"user": "ben@test.com", "timestamp": T0, "x": 9.0, "y": 9.0, "z": 9.0},
        {"user": "cy@test.com", "timestamp": T0, "x": 8.0, "y": 8.0, "z": 8.0},
        {"user": "anna@test.com", "timestamp": "soon", "x": 1.0, "y": 1.0, "z": 1.0},
    )
    (root / "accelerometer" / "accelerometer-1.json").write_text(readings)
    (root / "accelerometer" / "accelerometer-1-resent.json").write_text(readings)
    (root / "accelerometer" / "accelerometer-2.json").write_bytes(
        b'{"user": "anna@test.com", "timestamp": 1, "x": 1, "y": 1, "z": 1}\n\xff\xfe garbage\n'
    )
    (root / "step_trainer" / "step_trainer-1.json").write_text(
        lines(
            {"sensorReadingTime": T0, "serialNumber": "ser-a ", "distanceFromObject": 200},
            {"sensorReadingTime": T0 + 1, "serialNumber": "SER-A", "distanceFromObject": "201"},
            {"sensorReadingTime": T0, "serialNumber": "SER-B", "distanceFromObject": 300},
            {"sensorReadingTime": T0, "serialNumber": "SER-C", "distanceFromObject": 400},
            {"sensorReadingTime": T0, "distanceFromObject": 500},
        )
    )
    return root


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def messy_run(request: pytest.FixtureRequest, messy_landing: Path, tmp_path: Path) -> tuple[dict, str]:
    """The messy landing run on local folders, and from and to buckets of the S3 test server."""
    if request.param == "local":
        landing, lakehouse = str(messy_landing), str(tmp_path / "lakehouse")
    else:
        request.getfixturevalue("s3_env")
        bucket = f"messy-{uuid.uuid4().hex[:12]}"
        make_bucket(bucket)
        upload_tree(messy_landing, bucket, "landing")
        landing, lakehouse = f"s3://{bucket}/landing", f"s3://{bucket}/lakehouse"
    return run_lakehouse(landing_uri=landing, lakehouse_uri=lakehouse, max_reject_rate=0.5), lakehouse


def read(lakehouse: str, zone: str, name: str) -> pl.DataFrame:
    store = Lakehouse(lakehouse, S3Options.from_environment())
    return store.scan(store.table_uri(zone, name)).collect()


def test_quarantine_holds_exactly_the_bad_lines(messy_run, messy_landing: Path):
    _, lakehouse = messy_run
    rejects = {
        source: read(lakehouse, "quarantine", f"{source}_rejects")
        .with_columns(pl.col("_source_file").str.split("/").list.last())
        .select("_source_file", "_line_number", "reason")
        .sort("_source_file", "_line_number")
        .rows()
        for source in ("customer", "accelerometer", "step_trainer")
    }
    assert rejects == {
        "customer": [
            ("customer-1.json", 4, "missing required field serialNumber"),
            ("customer-1.json", 5, "not valid JSON"),
        ],
        "accelerometer": [
            ("accelerometer-1-resent.json", 5, "timestamp: 'soon' is not an integer"),
            ("accelerometer-1.json", 5, "timestamp: 'soon' is not an integer"),
            ("accelerometer-2.json", 2, "invalid UTF-8"),
        ],
        "step_trainer": [("step_trainer-1.json", 5, "missing required field serialNumber")],
    }
    raw = read(lakehouse, "quarantine", "customer_rejects").sort("_line_number")["raw_line"].to_list()
    assert raw == [
        '{"email": "nobody@test.com"}',
        '{"customerName": "Half", "email": "half@test.com", "serialNumb',
    ]


def test_every_line_accounted_for_and_rejects_warn(messy_run):
    summary, _ = messy_run
    assert summary["success"], summary["errors"]
    assert {
        n: summary["tables"][n]["rows"]
        for n in ("customer_landing", "accelerometer_landing", "step_trainer_landing")
    } == {
        "customer_landing": 4,
        "accelerometer_landing": 9,
        "step_trainer_landing": 4,
    }
    checks = {(c["asset"], c["name"]): c for c in summary["checks"]}
    conserved = checks[("customer_landing", "lines_conserved")]
    assert conserved["passed"] and conserved["summary"] == "6 non-blank lines read, 4 accepted + 2 rejected"
    rate = checks[("accelerometer_landing", "reject_rate")]
    assert (rate["passed"], rate["severity"]) == (False, "WARN")
    assert rate["summary"] == "3 of 12 lines rejected (25.00%; limit 50.00%)"


def test_reject_rate_above_limit_is_an_error(messy_landing: Path, tmp_path: Path):
    summary = run_lakehouse(
        landing_uri=str(messy_landing), lakehouse_uri=str(tmp_path / "lh"), max_reject_rate=0.1
    )
    rate = next(
        c for c in summary["checks"] if (c["asset"], c["name"]) == ("accelerometer_landing", "reject_rate")
    )
    assert (rate["passed"], rate["severity"]) == (False, "ERROR")
    assert rate["summary"] == "3 of 12 lines rejected (25.00%; limit 10.00%)"
    assert summary["success"] is False


def test_landing_rows_trace_back_to_their_line(messy_run):
    _, lakehouse = messy_run
    landing = read(lakehouse, "landing", "customer_landing").sort("_source_file", "_line_number")
    assert landing.select(
        pl.col("_source_file").str.split("/").list.last(), "_line_number", "email"
    ).rows() == [
        ("customer-1.json", 1, "Anna@Test.com"),
        ("customer-1.json", 2, "ben@test.com"),
        ("customer-1.json", 3, "cy@test.com"),
        ("customer-2.json", 2, "BEN@test.com"),
    ]
    assert landing["_ingested_at"].null_count() == 0


def test_withdrawn_and_non_consenting_customers_reach_nothing_downstream(messy_run):
    _, lakehouse = messy_run
    assert read(lakehouse, "trusted", "customer_trusted")["email"].to_list() == ["Anna@Test.com"]
    assert read(lakehouse, "curated", "customer_curated")["email"].to_list() == ["Anna@Test.com"]
    accel = read(lakehouse, "trusted", "accelerometer_trusted").sort("timestamp").drop("event_day")
    assert accel.rows() == [
        ("anna@test.com", 1, 1.0, 1.0, 1.0),
        ("anna@test.com", T0, 1.0, 0.0, 0.0),
        ("Anna@Test.com", T0 + 1, 0.5, 0.0, -1.0),
    ]
    steps = read(lakehouse, "trusted", "step_trainer_trusted").sort("sensorReadingTime")
    assert steps.drop("event_day").rows() == [(T0, "ser-a", 200), (T0 + 1, "SER-A", 201)]
    # each reading is stored in the partition of its UTC day
    assert steps["event_day"].to_list() == [date(2022, 6, 18)] * 2
    ml = read(lakehouse, "curated", "machine_learning_curated")
    assert ml.height == 2
    assert "user" not in ml.columns  # pseudonymous by default
    for table in (accel, steps, ml):
        serials = (
            table["serialNumber"].str.to_lowercase().to_list() if "serialNumber" in table.columns else []
        )
        assert not {"ser-b", "ser-c"} & set(serials)
    secret = pseudonym_key(lakehouse).secret  # the key the run used
    subject_ids = {
        email: pseudonym(email, secret) for email in ("anna@test.com", "ben@test.com", "cy@test.com")
    }
    assert set(ml["subject_id"]) == {subject_ids["anna@test.com"]}
    assert not {subject_ids["ben@test.com"], subject_ids["cy@test.com"]} & set(ml["subject_id"])


def test_resent_file_counts_once_downstream(messy_run):
    summary, _ = messy_run
    assert summary["tables"]["accelerometer_landing"]["rows"] == 9
    assert summary["tables"]["accelerometer_trusted"]["rows"] == 3
    duplicates = [c for c in summary["checks"] if c["name"] == "no_duplicate_rows"]
    assert duplicates and all(c["passed"] for c in duplicates)


def test_a_row_lost_after_ingest_fails_conservation(messy_landing: Path, tmp_path: Path):
    import dagster as dg

    instance = dg.DagsterInstance.ephemeral()
    lakehouse = tmp_path / "lakehouse"
    settings = {"landing_uri": str(messy_landing), "lakehouse_uri": str(lakehouse), "max_reject_rate": 0.5}
    assert run_lakehouse("key:customer_landing", instance=instance, **settings)["success"]
    uri = str(lakehouse / "landing" / "customer_landing")
    pl.read_delta(uri).head(3).write_delta(uri, mode="overwrite")

    summary = run_lakehouse(
        dg.AssetSelection.checks_for_assets("customer_landing"), instance=instance, **settings
    )

    conserved = next(c for c in summary["checks"] if c["name"] == "lines_conserved")
    assert (conserved["passed"], conserved["summary"]) == (
        False,
        "6 non-blank lines read, 3 accepted + 2 rejected",
    )


def test_missing_landing_folder_is_one_clear_error(tmp_path: Path):
    summary = run_lakehouse(landing_uri=str(tmp_path / "nowhere"), lakehouse_uri=str(tmp_path / "lh"))

    assert not summary["success"]
    assert list(summary["tables"]) == ["erasure_log"]  # no erasure requests is normal: an empty log
    assert summary["retries"] == {}
    assert f"ingest_customer: Landing folder {tmp_path / 'nowhere' / 'customer'} does not exist." in " ".join(
        summary["errors"]
    )
