"""The sensor that notices landing files: a run request for each change, nothing for a tick without one."""

from __future__ import annotations

import uuid
from pathlib import Path

import dagster as dg
import pytest

from stedi_assets.defs.automation import new_landing_files
from stedi_assets_tests.helpers import T2, make_bucket, upload_tree, write_jsonl


def _tick(
    instance: dg.DagsterInstance, cursor: str | None
) -> tuple[list[dg.RunRequest], str | None, str | None]:
    context = dg.build_sensor_context(instance=instance, cursor=cursor)
    result = new_landing_files.evaluate_tick(context)
    return list(result.run_requests or []), result.skip_message, result.cursor


def _ticks_follow_the_landing_zone(add_file, change_file) -> None:
    instance = dg.DagsterInstance.ephemeral()
    requests, skipped, cursor = _tick(instance, None)
    assert len(requests) == 1 and skipped is None
    assert requests[0].job_name in (None, "stedi_ingest_job")
    assert _tick(instance, cursor) == ([], "no new, changed or removed landing file", cursor)

    add_file()
    requests, _, after_add = _tick(instance, cursor)
    assert len(requests) == 1 and after_add != cursor and requests[0].run_key == after_add
    assert _tick(instance, after_add)[0] == []

    change_file()
    requests, _, after_change = _tick(instance, after_add)
    assert len(requests) == 1 and after_change not in (cursor, after_add)


def test_the_sensor_requests_an_ingest_for_each_new_or_changed_local_file(
    tiny_landing: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("STEDI_LANDING_URI", str(tiny_landing))
    new = tiny_landing / "accelerometer" / "accelerometer-2.json"
    reading = {"user": "Erin@test.com", "timestamp": T2 + 1, "x": 1.0, "y": 0.0, "z": 0.0}
    _ticks_follow_the_landing_zone(
        lambda: write_jsonl(new, [reading]), lambda: write_jsonl(new, [reading, reading])
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

    def add() -> None:
        write_jsonl(new, [reading])
        upload_tree(tiny_landing, bucket, "landing")

    def change() -> None:
        write_jsonl(new, [reading, reading])
        upload_tree(tiny_landing, bucket, "landing")

    _ticks_follow_the_landing_zone(add, change)


def test_a_landing_zone_without_files_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("STEDI_LANDING_URI", str(tmp_path / "empty"))
    assert _tick(dg.DagsterInstance.ephemeral(), None) == ([], "the landing zone holds no file", None)
