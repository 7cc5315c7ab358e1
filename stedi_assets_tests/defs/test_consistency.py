"""Consistent zones after a failure: a consent decision reaches every table before it is published."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from stedi_assets.cli import format_summary, run_lakehouse
from stedi_assets.rules import transforms
from stedi_assets.rules.identity import pseudonym
from stedi_assets.storage.lakehouse import Lakehouse
from stedi_assets.storage.pseudonym import pseudonym_key
from stedi_assets_tests.helpers import T1, T2, customer, read_table, retained_versions, write_jsonl

PEOPLE = [
    ("trusted", "customer_trusted", "email"),
    ("trusted", "accelerometer_trusted", "user"),
    ("curated", "customer_curated", "email"),
    ("curated", "machine_learning_curated", "user"),
]
DEVICES = [("trusted", "step_trainer_trusted"), ("curated", "machine_learning_curated")]
SUBJECTS = ("curated", "machine_learning_curated", "subject_id")
"""The training table is pseudonymous: its people are keyed hashes of their canonical emails."""


def _people(lakehouse: Lakehouse, zone: str, name: str, column: str) -> set[str]:
    return set(read_table(lakehouse, zone, name)[column].str.to_lowercase())


def _devices(lakehouse: Lakehouse, zone: str, name: str) -> set[str]:
    return set(read_table(lakehouse, zone, name)["serialNumber"])


def _subject_id(lakehouse: Lakehouse, email: str) -> str:
    """The subject_id of a canonical email under the key the runs on `lakehouse` use."""
    return pseudonym(email, pseudonym_key(lakehouse.root).secret)


def _subjects(lakehouse: Lakehouse) -> set[str]:
    return set(read_table(lakehouse, *SUBJECTS[:2])[SUBJECTS[2]])


def _settings(landing: Path, lakehouse: Lakehouse, **settings: str) -> dict[str, str]:
    return {"landing_uri": str(landing), "lakehouse_uri": lakehouse.root, **settings}


def _alice_withdraws(landing: Path) -> None:
    write_jsonl(
        landing / "customer" / "customer-2.json", [customer("Alice A", "S-A", None, lastUpdateDate=T2)]
    )


def _alice_everywhere(lakehouse: Lakehouse) -> bool:
    return (
        all("alice@test.com" in _people(lakehouse, *table) for table in PEOPLE)
        and all("S-A" in _devices(lakehouse, *table) for table in DEVICES)
        and _subject_id(lakehouse, "alice@test.com") in _subjects(lakehouse)
    )


def _objects(lakehouse: Lakehouse, zone: str, name: str) -> list[str]:
    """URIs of every file of a table in its storage, referenced by the log or not."""
    uri = lakehouse.table_uri(zone, name)
    if not uri.startswith("s3://"):
        return sorted(str(p) for p in Path(uri).rglob("*") if p.is_file())
    bucket, prefix = uri.removeprefix("s3://").split("/", 1)
    pages = (
        lakehouse.s3.boto3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    )
    return sorted(f"s3://{bucket}/{o['Key']}" for page in pages for o in page.get("Contents", []))


def _data_files(lakehouse: Lakehouse, zone: str, name: str) -> list[str]:
    return [f for f in _objects(lakehouse, zone, name) if f.endswith(".parquet") and "/_delta_log/" not in f]


def _log_entries(lakehouse: Lakehouse, zone: str, name: str) -> set[str]:
    """The committed versions' log entries (NNNN.json), not delta-rs' temporary commit files."""
    entries = (f.rsplit("/", 1)[-1] for f in _objects(lakehouse, zone, name) if "/_delta_log/" in f)
    return {e for e in entries if e.endswith(".json") and e.removesuffix(".json").isdigit()}


def _read_file(lakehouse: Lakehouse, uri: str) -> pl.DataFrame:
    options = lakehouse.s3.delta_options() if uri.startswith("s3://") else None
    return pl.read_parquet(uri, storage_options=options)


def _delete(lakehouse: Lakehouse, uri: str) -> None:
    if not uri.startswith("s3://"):
        Path(uri).unlink()
        return
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    lakehouse.s3.boto3_client().delete_object(Bucket=bucket, Key=key)


def _disk_full(*args, **kwargs):
    raise dg.Failure("No space left on device (os error 28)", allow_retries=False)


def test_a_run_failing_after_the_consent_decision_leaves_no_withdrawn_row_anywhere(
    tiny_landing: Path, lakehouse: Lakehouse, monkeypatch: pytest.MonkeyPatch
):
    # ml_identity=email: the training table keeps the email beside the subject_id, so both are checked
    settings = _settings(tiny_landing, lakehouse, ml_identity="email")
    assert run_lakehouse(**settings)["success"]
    assert _alice_everywhere(lakehouse)
    alice, erin = _subject_id(lakehouse, "alice@test.com"), _subject_id(lakehouse, "erin@test.com")
    _alice_withdraws(tiny_landing)

    # a context, not monkeypatch.undo(): that would also undo the conftest's environment (the test
    # config folder of the generated pseudonym key) and the next run would use another key
    with monkeypatch.context() as patch:
        patch.setattr(transforms, "accelerometer_trusted", _disk_full)
        summary = run_lakehouse(**settings)

    assert not summary["success"]
    assert summary["errors"] == ["accelerometer_trusted: No space left on device (os error 28)"]
    # accelerometer_trusted, customer_curated, step_trainer_trusted and the training table were not
    # recomputed, yet none of them holds Alice or her device any more
    assert not {"accelerometer_trusted", "customer_curated", "machine_learning_curated"} & set(
        summary["tables"]
    )
    for table in PEOPLE:
        people = _people(lakehouse, *table)
        assert "alice@test.com" not in people and "erin@test.com" in people, table
    for table in DEVICES:
        devices = _devices(lakehouse, *table)
        assert "S-A" not in devices and "S-E" in devices, table
    assert alice not in _subjects(lakehouse) and erin in _subjects(lakehouse)
    assert summary["tables"]["customer_trusted"]["rows"] == 2
    # the withdrawal's rewrites keep each table's layout: every file of a reading table in its day
    for zone, name in (("trusted", "accelerometer_trusted"), *DEVICES):
        days = pl.DataFrame(lakehouse.open(lakehouse.table_uri(zone, name)).get_add_actions(flatten=True))
        assert days["partition.event_day"].cast(pl.String).to_list() == ["2022-06-18"], name

    # the next run that succeeds leaves the same tables as a run that never failed (same key, so
    # Erin keeps her subject_id)
    assert run_lakehouse(**settings)["success"]
    assert not any("alice@test.com" in _people(lakehouse, *table) for table in PEOPLE)
    assert _subjects(lakehouse) == {erin}


def _times(lakehouse: Lakehouse, zone: str, name: str, column: str, time: str, value: str) -> list[int]:
    frame = read_table(lakehouse, zone, name)
    return sorted(set(frame.filter(frame[column].str.to_lowercase() == value)[time].to_list()))


def test_a_later_consent_date_reaches_every_table_before_it_is_published(
    tiny_landing: Path, lakehouse: Lakehouse, monkeypatch: pytest.MonkeyPatch
):
    """Under from_consent_date a consent date that moves later withdraws the readings taken before
    it: the decide-first withdrawal removes them from every table even when the run fails after."""
    settings = _settings(tiny_landing, lakehouse, ml_identity="email", consent_policy="from_consent_date")
    assert run_lakehouse(**settings)["success"]
    readings = [
        ("trusted", "accelerometer_trusted", "user", "timestamp", "alice@test.com"),
        ("trusted", "step_trainer_trusted", "serialNumber", "sensorReadingTime", "s-a"),
        ("curated", "machine_learning_curated", "user", "timestamp", "alice@test.com"),
        ("curated", "machine_learning_curated", "serialNumber", "sensorReadingTime", "s-a"),
    ]
    assert [_times(lakehouse, *r) for r in readings] == [[T1, T2], [T1, T2], [T1, T2], [T1, T2]]
    # Alice consents again, later: her readings from before T2 are no longer covered
    write_jsonl(
        tiny_landing / "customer" / "customer-2.json",
        [customer("Alice A", "S-A", T2, lastUpdateDate=T2)],
    )

    with monkeypatch.context() as patch:
        patch.setattr(transforms, "accelerometer_trusted", _disk_full)
        summary = run_lakehouse(**settings)

    assert summary["errors"] == ["accelerometer_trusted: No space left on device (os error 28)"]
    assert [_times(lakehouse, *r) for r in readings] == [[T2], [T2], [T2], [T2]]
    erin = ("trusted", "accelerometer_trusted", "user", "timestamp", "erin@test.com")
    assert _times(lakehouse, *erin) == [T2]
    assert run_lakehouse(**settings)["success"]
    assert [_times(lakehouse, *r) for r in readings] == [[T2], [T2], [T2], [T2]]


def test_when_the_withdrawal_cannot_reach_a_table_the_decision_is_not_published(
    tiny_landing: Path, lakehouse: Lakehouse
):
    """Fail closed: if a downstream table cannot be cleaned, customer_trusted keeps its old version
    (and the run says which table), rather than publish a decision the zones do not follow."""
    settings = _settings(tiny_landing, lakehouse)
    assert run_lakehouse(**settings)["success"]
    customer_trusted = lakehouse.table_uri("trusted", "customer_trusted")
    trusted_version = lakehouse.open(customer_trusted).version()
    _alice_withdraws(tiny_landing)
    assert run_lakehouse(dg.AssetSelection.assets("customer_landing", "customer_rejects"), **settings)[
        "success"
    ]
    # the step_trainer_trusted table's data file is lost (a broken disk, a bad manual clean-up)
    for data_file in _data_files(lakehouse, "trusted", "step_trainer_trusted"):
        _delete(lakehouse, data_file)

    summary = run_lakehouse(dg.AssetSelection.assets("customer_trusted"), **settings)

    assert not summary["success"]
    assert len(summary["errors"]) == 1 and summary["errors"][0].startswith("customer_trusted: ")
    assert "step_trainer_trusted" in summary["errors"][0]
    assert lakehouse.open(customer_trusted).version() == trusted_version


def _versions_holding(lakehouse: Lakehouse, zone: str, name: str, column: str, value: str) -> list[int]:
    """Every version of a table still readable that holds `value` in `column`."""
    retained = retained_versions(lakehouse, zone, name)
    return [v for v, frame in retained.items() if value in frame[column].str.to_lowercase().to_list()]


def test_a_withdrawal_leaves_no_retained_version_holding_the_person(tiny_landing: Path, lakehouse: Lakehouse):
    settings = _settings(tiny_landing, lakehouse, ml_identity="email")
    assert run_lakehouse(**settings)["success"]
    write_jsonl(tiny_landing / "customer" / "customer-2.json", [customer("Frank F", "S-F", T1)])
    assert run_lakehouse(**settings)["success"]  # nothing removed: the earlier version stays readable
    customer_trusted = ("trusted", "customer_trusted")
    assert _versions_holding(lakehouse, *customer_trusted, "email", "alice@test.com") == [0, 1]

    _alice_withdraws(tiny_landing)
    assert run_lakehouse(**settings)["success"]

    for zone, name, column in PEOPLE:
        assert _versions_holding(lakehouse, zone, name, column, "alice@test.com") == [], name
    for zone, name in DEVICES:
        assert _versions_holding(lakehouse, zone, name, "serialNumber", "s-a") == [], name
    # her files are gone from storage, not just from the log
    files = _data_files(lakehouse, *customer_trusted)
    assert files
    assert all(
        "alice@test.com" not in _read_file(lakehouse, f)["email"].str.to_lowercase().to_list() for f in files
    )
    # and a table nobody left keeps its history
    assert read_table(lakehouse, "landing", "step_trainer_landing", version=0).height == 4


def test_a_changed_pseudonym_key_leaves_no_unverifiable_training_row(
    tiny_landing: Path, lakehouse: Lakehouse, monkeypatch: pytest.MonkeyPatch
):
    """subject_ids made under another key cannot be matched to anyone's consent, so none may stay;
    the next full run rebuilds the table under the new key."""
    settings = _settings(tiny_landing, lakehouse)
    monkeypatch.setenv("STEDI_PSEUDONYM_KEY", "first key")
    assert run_lakehouse(**settings)["success"]
    ml = ("curated", "machine_learning_curated")
    assert read_table(lakehouse, *ml).height == 5

    monkeypatch.setenv("STEDI_PSEUDONYM_KEY", "second key")
    instance = dg.DagsterInstance.ephemeral()
    changed_run = run_lakehouse(dg.AssetSelection.assets("customer_trusted"), instance=instance, **settings)
    assert changed_run["success"]
    # said where `stedi run` says things (its Dagster log is silent by default), naming no key
    assert len(changed_run["warnings"]) == 1
    assert changed_run["warnings"][0].startswith("customer_trusted: The pseudonym key changed: emptied ")
    assert "STEDI_PSEUDONYM_KEY" in changed_run["warnings"][0]
    assert "warning: customer_trusted: The pseudonym key changed" in format_summary(changed_run)
    assert "first key" not in changed_run["warnings"][0] and "second key" not in changed_run["warnings"][0]

    assert read_table(lakehouse, *ml).height == 0
    event = instance.get_latest_materialization_event(dg.AssetKey("customer_trusted"))
    changed = event.asset_materialization.metadata["pseudonym_key_changed"].value
    assert changed.startswith("machine_learning_curated (made with key ")
    assert "first key" not in changed and "second key" not in changed
    assert run_lakehouse(**settings)["success"]
    assert read_table(lakehouse, *ml).height == 5


@pytest.mark.slow
def test_a_run_killed_right_after_the_consent_decision_leaves_no_withdrawn_row(
    tiny_landing: Path, lakehouse: Lakehouse
):
    """kill -9 the moment customer_trusted's new version appears: the downstream tables were already
    cleaned (before that commit), and the next run completes."""
    settings = _settings(tiny_landing, lakehouse, ml_identity="email")
    assert run_lakehouse(**settings)["success"]
    versions_before = _log_entries(lakehouse, "trusted", "customer_trusted")
    _alice_withdraws(tiny_landing)

    command = [sys.executable, "-m", "stedi_assets.cli", "run", "--landing", str(tiny_landing)]
    run = subprocess.Popen([*command, "--lakehouse", lakehouse.root, "--ml-identity", "email"])
    deadline = time.monotonic() + 120
    while _log_entries(lakehouse, "trusted", "customer_trusted") == versions_before and run.poll() is None:
        assert time.monotonic() < deadline, "customer_trusted was never committed"
        time.sleep(0.002)
    run.send_signal(signal.SIGKILL)
    # killed mid-run, not after a run that had already finished
    assert run.wait(timeout=30) == -signal.SIGKILL

    assert "alice@test.com" not in _people(lakehouse, "trusted", "customer_trusted", "email")
    for table in PEOPLE:
        assert "alice@test.com" not in _people(lakehouse, *table), table
    for table in DEVICES:
        assert "S-A" not in _devices(lakehouse, *table), table
    assert run_lakehouse(**settings)["success"]
