"""The sensor that notices landing files: a run request for each change, nothing for a tick without one;
the run-failure alert."""

from __future__ import annotations

import http.server
import json
import threading
import uuid
from pathlib import Path
from typing import ClassVar

import dagster as dg
import pytest

from stedi_assets.cli import run_config
from stedi_assets.definitions import defs
from stedi_assets.defs.automation import new_landing_files, run_failures
from stedi_assets.defs.partitions import range_tags
from stedi_assets_tests.helpers import T2, TINY_DAY, customer, make_bucket, upload_tree, write_jsonl


def _tick(
    instance: dg.DagsterInstance, cursor: str | None
) -> tuple[list[dg.RunRequest], str | None, str | None]:
    context = dg.build_sensor_context(instance=instance, cursor=cursor)
    result = new_landing_files.evaluate_tick(context)
    return list(result.run_requests or []), result.skip_message, result.cursor


def _ingests(requests: list[dg.RunRequest], *sources: str) -> bool:
    """Whether `requests` is one run of the ingest job for just `sources`."""
    keys = [dg.AssetKey(f"{source}_{table}") for source in sources for table in ("landing", "rejects")]
    return (
        len(requests) == 1
        and requests[0].job_name == "stedi_ingest_job"
        and sorted(requests[0].asset_selection or []) == sorted(keys)
        and requests[0].run_key is None
    )


def _ticks_follow_the_landing_zone(source: str, add_file, change_file) -> None:
    instance = dg.DagsterInstance.ephemeral()
    requests, skipped, cursor = _tick(instance, None)
    # the first tick runs every zone at once: nothing is known of what was ingested before
    assert len(requests) == 1 and skipped is None
    assert requests[0].job_name == "stedi_lakehouse_job" and requests[0].asset_selection is None
    assert _tick(instance, cursor) == ([], "no new, changed or removed landing file", cursor)

    add_file()
    requests, _, after_add = _tick(instance, cursor)
    assert _ingests(requests, source) and after_add != cursor
    assert _tick(instance, after_add)[0] == []

    change_file()
    requests, _, after_change = _tick(instance, after_add)
    assert _ingests(requests, source) and after_change not in (cursor, after_add)


def test_the_sensor_requests_an_ingest_for_each_new_or_changed_local_file(
    tiny_landing: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("STEDI_LANDING_URI", str(tiny_landing))
    new = tiny_landing / "accelerometer" / "accelerometer-2.json"
    reading = {"user": "Erin@test.com", "timestamp": T2 + 1, "x": 1.0, "y": 0.0, "z": 0.0}
    _ticks_follow_the_landing_zone(
        "accelerometer", lambda: write_jsonl(new, [reading]), lambda: write_jsonl(new, [reading, reading])
    )


@pytest.mark.s3
def test_the_sensor_follows_an_s3_landing_prefix(
    tiny_landing: Path, s3_env: str, monkeypatch: pytest.MonkeyPatch
):
    bucket = f"sensor-{uuid.uuid4().hex[:12]}"
    make_bucket(bucket)
    upload_tree(tiny_landing, bucket, "landing")
    monkeypatch.setenv("STEDI_LANDING_URI", f"s3://{bucket}/landing")
    new = tiny_landing / "step_trainer" / "step_trainer-2.json"
    reading = {"sensorReadingTime": T2 + 1, "serialNumber": "S-E", "distanceFromObject": 200}

    def add() -> None:  # uploads just the step trainer folder: every upload is a new object
        write_jsonl(new, [reading])
        upload_tree(new.parent, bucket, "landing/step_trainer")

    def change() -> None:
        write_jsonl(new, [reading, reading])
        upload_tree(new.parent, bucket, "landing/step_trainer")

    _ticks_follow_the_landing_zone("step_trainer", add, change)


@pytest.mark.parametrize("cursor", ["3f9a0c2e7d", "12345", "[1, 2]", "not json"])
def test_a_cursor_this_sensor_did_not_write_runs_every_zone(
    tiny_landing: Path, monkeypatch: pytest.MonkeyPatch, cursor: str
):
    """An earlier release kept one digest of the whole landing zone: the first tick after an upgrade
    runs every zone, as a first tick does, and the next compares folder by folder."""
    monkeypatch.setenv("STEDI_LANDING_URI", str(tiny_landing))
    instance = dg.DagsterInstance.ephemeral()

    requests, skipped, after = _tick(instance, cursor)

    assert [r.job_name for r in requests] == ["stedi_lakehouse_job"] and skipped is None
    assert _tick(instance, after) == ([], "no new, changed or removed landing file", after)


def test_a_landing_zone_without_files_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("STEDI_LANDING_URI", str(tmp_path / "empty"))
    assert _tick(dg.DagsterInstance.ephemeral(), None) == ([], "the landing zone holds no file", None)


class _Webhook(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        _Webhook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_failed_run_is_posted_to_the_webhook_without_personal_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    landing = tmp_path / "landing"
    write_jsonl(landing / "customer" / "customer-1.json", [customer("Zed Z", "S-Z", T2)])
    # a landing folder the ingest cannot read: the failure names the folder, the alert only the steps
    monkeypatch.setenv("STEDI_LANDING_URI", str(landing))
    server = http.server.HTTPServer(("127.0.0.1", 0), _Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("STEDI_ALERT_WEBHOOK", f"http://127.0.0.1:{server.server_port}/hook")
    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def("stedi_ingest_job").execute_in_process(
        run_config=run_config(lakehouse_uri=str(tmp_path / "lh")), instance=instance, raise_on_error=False
    )
    assert not result.success
    context = dg.build_run_status_sensor_context(
        sensor_name="stedi_run_failures",
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
    ).for_run_failure()

    _Webhook.received.clear()
    run_failures(context)
    server.shutdown()

    assert _Webhook.received == [
        {
            "text": f"STEDI lakehouse: run {result.run_id} of stedi_ingest_job failed "
            "(ingest_accelerometer, ingest_step_trainer)."
        }
    ]


@pytest.mark.parametrize("folder", ["customer", "erasure_requests"])
def test_a_change_of_what_consent_is_decided_from_runs_every_zone_in_one_run(
    tiny_landing: Path, monkeypatch: pytest.MonkeyPatch, folder: str
):
    """Privacy first: new customer records or erasure requests are not left to automation's waves."""
    monkeypatch.setenv("STEDI_LANDING_URI", str(tiny_landing))
    instance = dg.DagsterInstance.ephemeral()
    cursor = _tick(instance, None)[2]
    write_jsonl(tiny_landing / "accelerometer" / "accelerometer-2.json", [_READING])
    line = customer("Zed Z", "S-Z", T2) if folder == "customer" else {"email": "Erin@test.com"}
    write_jsonl(tiny_landing / folder / f"{folder}-2.json", [line])

    requests, _, _ = _tick(instance, cursor)

    assert len(requests) == 1 and requests[0].job_name == "stedi_lakehouse_job"
    assert requests[0].asset_selection is None  # every zone, the new readings included


_READING = {"user": "Erin@test.com", "timestamp": T2 + 1, "x": 1.0, "y": 0.0, "z": 0.0}


@pytest.mark.parametrize(("broken", "decided"), [("step_trainer", True), ("customer", False)])
def test_consent_is_decided_in_the_run_of_every_zone_even_when_a_reading_source_fails(
    tiny_landing: Path, tmp_path: Path, broken: str, decided: bool
):
    """A withdrawal never waits for a broken reading file: in the one run of every zone, the consent
    decision depends only on the customers and the erasure requests."""
    for path in (tiny_landing / broken).iterdir():
        path.unlink()
    (tiny_landing / broken).rmdir()
    config = run_config(landing_uri=str(tiny_landing), lakehouse_uri=str(tmp_path / "lh"))
    result = defs.resolve_job_def("stedi_lakehouse_job").execute_in_process(
        run_config=config,
        instance=dg.DagsterInstance.ephemeral(),
        tags=range_tags(TINY_DAY, TINY_DAY),
        raise_on_error=False,
    )

    assert not result.success
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert ("customer_trusted" in materialized) is decided
    assert ("accelerometer_trusted" in materialized) is decided
    assert f"{broken}_landing" not in materialized
