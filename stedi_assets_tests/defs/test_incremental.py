"""Incremental ingestion: each landing table's manifest, committed with its rows, says which files it
holds; a run reads only the files some table lacks."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from deltalake import DeltaTable
from polars.testing import assert_frame_equal

from stedi_assets.cli import run_lakehouse
from stedi_assets.definitions import defs
from stedi_assets.defs.partitions import RANGE_END_TAG, RANGE_START_TAG, range_tags
from stedi_assets.storage.lakehouse import Lakehouse, LandingZone
from stedi_assets_tests.helpers import T2, TINY_DAY, customer, write_jsonl

ACCEL = "accelerometer"
NEW_READINGS = [{"user": "Erin@test.com", "timestamp": T2 + 1, "x": 9.0, "y": 0.0, "z": 0.0}]


def _settings(landing: Path, tmp_path: Path) -> dict[str, object]:
    return {"landing_uri": str(landing), "lakehouse_uri": str(tmp_path / "lakehouse")}


def _table(tmp_path: Path, zone: str, name: str) -> Path:
    return tmp_path / "lakehouse" / zone / name


def _files_of(table: Path, version: int | None = None) -> set[str]:
    return set(DeltaTable(str(table), version=version).file_uris())


def _files_read(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every landing file an ingest reads (the real reader still reads them)."""
    read: list[str] = []
    collect = LandingZone.collect

    def recording(self, files, plan):
        read.extend(f.uri for f in files)
        return collect(self, files, plan)

    monkeypatch.setattr(LandingZone, "collect", recording)
    return read


def _garble_keeping_signature(path: Path) -> None:
    """Overwrites a file with other bytes of the same size and modification time: if a run read it,
    its lines would be rejects; a run that trusts the manifest does not read it."""
    stat = path.stat()
    path.write_bytes(b"x" * stat.st_size)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_run_with_nothing_new_reads_no_landing_file_and_writes_no_version(
    tiny_landing: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    settings = _settings(tiny_landing, tmp_path)
    first = run_lakehouse(**settings)
    assert first["success"], first["errors"]
    for path in tiny_landing.rglob("*.json"):
        _garble_keeping_signature(path)
    read = _files_read(monkeypatch)

    second = run_lakehouse(**settings)

    assert read == []  # the erasure requests aside (none here), no landing file was opened
    assert second["success"], second["errors"]
    assert {n: t["rows"] for n, t in second["tables"].items()} == {
        n: t["rows"] for n, t in first["tables"].items()
    }
    for zone, name in (("landing", "accelerometer_landing"), ("quarantine", "customer_rejects")):
        assert DeltaTable(str(_table(tmp_path, zone, name))).version() == 0, name
    lines = next(
        c for c in second["checks"] if c["name"] == "lines_conserved" and c["asset"].startswith(ACCEL)
    )
    assert lines["passed"], lines


def test_a_new_file_is_read_alone_and_appended(
    tiny_landing: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    settings = _settings(tiny_landing, tmp_path)
    assert run_lakehouse(**settings)["success"]
    landing_table = _table(tmp_path, "landing", "accelerometer_landing")
    before = _files_of(landing_table)
    for path in tiny_landing.rglob("*.json"):
        _garble_keeping_signature(path)  # read again, these would become rejects
    new_file = tiny_landing / ACCEL / "accelerometer-2.json"
    write_jsonl(new_file, NEW_READINGS)
    read = _files_read(monkeypatch)

    summary = run_lakehouse(**settings)

    assert summary["success"], summary["errors"]
    assert read == [str(new_file)]
    assert summary["tables"]["accelerometer_landing"]["rows"] == 5
    assert summary["tables"]["accelerometer_rejects"]["rows"] == 0
    # one append: the earlier data files stay, one file of the new day is added
    assert DeltaTable(str(landing_table)).version() == 1
    added = _files_of(landing_table) - before
    assert before <= _files_of(landing_table) and len(added) == 1
    assert pl.read_parquet(next(iter(added)))["x"].to_list() == [9.0]
    # the new reading went downstream: Erin consents
    erin = pl.read_delta(str(_table(tmp_path, "trusted", "accelerometer_trusted"))).filter(pl.col("x") == 9.0)
    assert erin.height == 1


def test_a_changed_file_replaces_its_own_rows(tiny_landing: Path, tmp_path: Path):
    settings = _settings(tiny_landing, tmp_path)
    assert run_lakehouse(**settings)["success"]
    changed = tiny_landing / ACCEL / "accelerometer-1.json"
    # the delivery was corrected: Bob's reading (x 3.0) is gone, Erin has one more
    kept = [line for line in changed.read_text().splitlines(keepends=True) if "Bob" not in line]
    changed.write_text("".join(kept))
    with changed.open("a") as lines:
        lines.write(json.dumps(NEW_READINGS[0]) + "\n")
    # the corrected file has the old one's size: its later modification time is what tells them apart
    # (set explicitly, so coarse file system timestamps cannot hide it)
    landed = changed.stat().st_mtime_ns + 2_000_000_000
    os.utime(changed, ns=(landed, landed))

    summary = run_lakehouse(**settings)

    assert summary["success"], summary["errors"]
    landing = pl.read_delta(str(_table(tmp_path, "landing", "accelerometer_landing")))
    assert sorted(landing["x"]) == [1.0, 2.0, 4.0, 9.0]
    assert landing["_line_number"].sort().to_list() == [1, 2, 3, 4]


SECOND_DAY = dt.date.fromisoformat(TINY_DAY) + dt.timedelta(days=1)
SECOND_DAY_MS = T2 + 86_400_000


def _two_days_of_readings(tiny_landing: Path) -> Path:
    """A second accelerometer file, of the next day: Erin's reading (x 7.0)."""
    second = tiny_landing / ACCEL / "accelerometer-2.json"
    write_jsonl(second, [{"user": "Erin@test.com", "timestamp": SECOND_DAY_MS, "x": 7.0, "y": 0.0, "z": 0.0}])
    return second


def _built_over_two_days(tiny_landing: Path, tmp_path: Path) -> tuple[dict[str, object], Path, Path]:
    """The lakehouse built from the tiny landing and a second day's file: (settings, that file, the
    accelerometer landing table)."""
    settings = _settings(tiny_landing, tmp_path)
    second = _two_days_of_readings(tiny_landing)
    assert run_lakehouse(**settings)["success"]
    return settings, second, _table(tmp_path, "landing", "accelerometer_landing")


def _day_files(table: Path, day: dt.date) -> set[str]:
    return {uri for uri in _files_of(table) if f"event_day={day}" in uri}


def test_a_changed_file_is_read_alone_and_replaces_only_the_days_of_its_rows(
    tiny_landing: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    settings, second, landing_table = _built_over_two_days(tiny_landing, tmp_path)
    next_day_files = _day_files(landing_table, SECOND_DAY)
    assert next_day_files
    for path in [p for p in tiny_landing.rglob("*.json") if p.name != "accelerometer-1.json"]:
        _garble_keeping_signature(path)  # read again, these would become rejects
    changed = tiny_landing / ACCEL / "accelerometer-1.json"
    kept = [line for line in changed.read_text().splitlines(keepends=True) if "Bob" not in line]
    changed.write_text("".join(kept) + json.dumps(NEW_READINGS[0]) + "\n")
    landed = changed.stat().st_mtime_ns + 2_000_000_000
    os.utime(changed, ns=(landed, landed))
    read = _files_read(monkeypatch)

    summary = run_lakehouse(**settings)

    assert summary["success"], summary["errors"]
    assert read == [str(changed)]
    landing = pl.read_delta(str(landing_table)).sort("_source_file", "_line_number")
    assert landing.select("_source_file", "_line_number", "x").rows() == [
        (str(changed), 1, 1.0),
        (str(changed), 2, 2.0),
        (str(changed), 3, 4.0),
        (str(changed), 4, 9.0),
        (str(second), 1, 7.0),
    ]
    assert _day_files(landing_table, SECOND_DAY) == next_day_files  # the other day was not rewritten
    assert summary["tables"]["accelerometer_rejects"]["rows"] == 0
    trusted = pl.read_delta(str(_table(tmp_path, "trusted", "accelerometer_trusted")))
    assert sorted(trusted["x"]) == [1.0, 2.0, 4.0, 7.0, 9.0]  # Bob (no consent) was never there
    ingest = next(
        e
        for e in summary["checks"]
        if e["asset"] == "accelerometer_landing" and e["name"] == "lines_conserved"
    )
    assert ingest["passed"], ingest


def test_a_vanished_file_takes_its_rows_and_its_days_along_without_reading_the_others(
    tiny_landing: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    settings, second, landing_table = _built_over_two_days(tiny_landing, tmp_path)
    tiny_day_files = _day_files(landing_table, dt.date.fromisoformat(TINY_DAY))
    for path in tiny_landing.rglob("*.json"):
        _garble_keeping_signature(path)
    second.unlink()
    read = _files_read(monkeypatch)

    summary = run_lakehouse(**settings)

    assert summary["success"], summary["errors"]
    assert read == []
    assert summary["tables"]["accelerometer_landing"]["rows"] == 4
    assert _day_files(landing_table, SECOND_DAY) == set()
    assert _day_files(landing_table, dt.date.fromisoformat(TINY_DAY)) == tiny_day_files
    trusted = pl.read_delta(str(_table(tmp_path, "trusted", "accelerometer_trusted")))
    assert sorted(trusted["x"]) == [1.0, 2.0, 4.0]


def _crash_on_second_commit(monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    """The ingest of `source` commits one of its two tables, then dies before the other."""
    commit, committed = Lakehouse.commit, []

    def crash(self, staged, *args, **kwargs):
        if staged.uri.endswith((f"{source}_landing", f"{source}_rejects")):
            committed.append(staged.uri)
            if len(committed) == 2:
                raise dg.Failure("the process died", allow_retries=False)
        return commit(self, staged, *args, **kwargs)

    monkeypatch.setattr(Lakehouse, "commit", crash)


def test_a_crash_between_the_two_tables_duplicates_nothing(
    tiny_landing: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """One table of an ingest commits its rows and manifest, then the other's commit fails (a
    crash, a full disk): the next run adds what is missing to that table and nothing else."""
    with (tiny_landing / ACCEL / "accelerometer-1.json").open("a") as lines:
        lines.write("not json\n")
    settings = {**_settings(tiny_landing, tmp_path), "max_reject_rate": 1}
    with monkeypatch.context() as patch:
        _crash_on_second_commit(patch, ACCEL)
        crashed = run_lakehouse(dg.AssetSelection.assets("accelerometer_landing"), **settings)
    assert not crashed["success"]
    rejects_table = _table(tmp_path, "quarantine", "accelerometer_rejects")
    landing_table = _table(tmp_path, "landing", "accelerometer_landing")
    # the quarantine commits first: it is the landing table that is behind
    assert pl.read_delta(str(rejects_table)).height == 1
    assert not (landing_table / "_delta_log").exists()

    summary = run_lakehouse(**settings)

    assert summary["success"], summary["errors"]
    assert pl.read_delta(str(landing_table)).height == 4
    rejects = pl.read_delta(str(rejects_table))
    assert rejects.select("_line_number", "reason").rows() == [(5, "not valid JSON")]  # not added again
    assert DeltaTable(str(rejects_table)).version() == 0


def _trusted_after_a_crashed_customer_ingest(
    monkeypatch: pytest.MonkeyPatch, settings: dict[str, object], tmp_path: Path
) -> list[str]:
    """The customer ingest dies after its first commit; the emails a consent decision made from
    what was committed trusts."""
    with monkeypatch.context() as patch:
        _crash_on_second_commit(patch, "customer")
        crashed = run_lakehouse(dg.AssetSelection.assets("customer_landing"), **settings)
    assert not crashed["success"]
    decided = run_lakehouse(dg.AssetSelection.assets("customer_trusted"), **settings)
    assert decided["success"], decided["errors"]
    return pl.read_delta(str(_table(tmp_path, "trusted", "customer_trusted")))["email"].to_list()


def test_a_crash_between_the_two_tables_lets_no_one_in(
    tiny_landing: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Fail closed: a new customer file holds a valid record and a withdrawal that cannot be parsed.
    Whichever ingest commit the crash stops, the consent decision made from what was committed does
    not trust the person who withdrew."""
    settings = _settings(tiny_landing, tmp_path)
    assert run_lakehouse(**settings)["success"]
    late = json.dumps(customer("Alice A", "S-A", "no", lastUpdateDate=T2))  # quarantined: not a date
    fay = json.dumps(customer("Fay F", "S-F", T2, lastUpdateDate=T2))
    (tiny_landing / "customer" / "customer-2.json").write_text(f"{fay}\n{late}\n")

    trusted = _trusted_after_a_crashed_customer_ingest(monkeypatch, settings, tmp_path)

    assert "Alice@test.com" not in trusted
    assert "Erin@test.com" in trusted


@pytest.mark.parametrize("erin_withdraws", [False, True], ids=["fixed", "fixed-and-a-new-hold"])
def test_a_crash_while_a_corrected_file_replaces_its_rows_lets_no_one_in(
    tiny_landing: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, erin_withdraws: bool
):
    """Fail closed when rows leave: Alice's withdrawal was delivered unparseable (it holds her back),
    then corrected into a valid withdrawal. The corrected line leaves the quarantine, the valid one
    enters the landing table; a crash after either commit must not trust her (the quarantine's
    lines leaving first would, with her old consenting record still the newest in landing). A new
    unparseable withdrawal in the corrected file holds Erin back from the first commit on."""
    settings = {**_settings(tiny_landing, tmp_path), "max_reject_rate": 1}
    delivered = tiny_landing / "customer" / "customer-2.json"
    delivered.write_text('{"email": "Alice@test.com", "shareWithResearchAsOfDate": "withdrawn"}\n')
    assert run_lakehouse(**settings)["success"]
    corrected = json.dumps(customer("Alice A", "S-A", None, lastUpdateDate=T2)) + "\n"
    if erin_withdraws:
        corrected += '{"email": "Erin@test.com", "shareWithResearchAsOfDate": "withdrawn"}\n'
    delivered.write_text(corrected)
    landed = delivered.stat().st_mtime_ns + 2_000_000_000
    os.utime(delivered, ns=(landed, landed))

    trusted = _trusted_after_a_crashed_customer_ingest(monkeypatch, settings, tmp_path)

    assert "Alice@test.com" not in trusted
    assert ("Erin@test.com" in trusted) is not erin_withdraws
    # the next run finishes the replacement: only a new unparseable line stays quarantined
    repaired = run_lakehouse(**settings)
    assert repaired["errors"] == []  # (with Erin held too, the training table is empty: its count fails)
    assert repaired["tables"]["customer_rejects"]["rows"] == int(erin_withdraws)
    trusted = pl.read_delta(str(_table(tmp_path, "trusted", "customer_trusted")))["email"].to_list()
    assert "Alice@test.com" not in trusted
    assert ("Erin@test.com" in trusted) is not erin_withdraws


READING_TABLES = [
    ("trusted", "accelerometer_trusted"),
    ("trusted", "step_trainer_trusted"),
    ("curated", "machine_learning_curated"),
]
NEXT_DAY = T2 + 86_400_000


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(frame.columns, nulls_last=True)


def test_new_readings_recompute_only_their_day_and_match_a_full_run(tiny_landing: Path, tmp_path: Path):
    settings = _settings(tiny_landing, tmp_path)
    assert run_lakehouse(**settings)["success"]
    before = {name: _files_of(_table(tmp_path, zone, name)) for zone, name in READING_TABLES}
    write_jsonl(
        tiny_landing / ACCEL / "accelerometer-2.json",
        [{"user": "Erin@test.com", "timestamp": NEXT_DAY, "x": 5.0, "y": 0.0, "z": -1.0}],
    )
    write_jsonl(
        tiny_landing / "step_trainer" / "step_trainer-2.json",
        [{"sensorReadingTime": NEXT_DAY, "serialNumber": "S-E", "distanceFromObject": 240}],
    )
    instance = dg.DagsterInstance.ephemeral()

    summary = run_lakehouse(instance=instance, **settings)

    assert summary["success"], summary["errors"]
    for zone, name in READING_TABLES:
        table = _table(tmp_path, zone, name)
        # one partition replaced: the earlier day's files are untouched, the new day's added
        assert DeltaTable(str(table)).version() == 1, name
        assert before[name] < _files_of(table), name
        assert len(_files_of(table) - before[name]) == 1, name
        event = instance.get_latest_materialization_event(dg.AssetKey(name))
        assert event.asset_materialization.metadata["days_recomputed"].value == 1, name
    # the same tables as a lakehouse built from scratch on the same landing files
    fresh = tmp_path / "fresh"
    assert run_lakehouse(landing_uri=str(tiny_landing), lakehouse_uri=str(fresh))["success"]
    for zone, name in READING_TABLES:
        incremental = pl.read_delta(str(_table(tmp_path, zone, name)))
        assert_frame_equal(_sorted(incremental), _sorted(pl.read_delta(str(fresh / zone / name))))
    assert pl.read_delta(str(_table(tmp_path, "curated", "machine_learning_curated"))).height == 6


def test_a_consent_change_recomputes_every_day(tiny_landing: Path, tmp_path: Path):
    """Privacy first: a changed consent decision rebuilds the reading tables whole, not day by day."""
    settings = _settings(tiny_landing, tmp_path)
    assert run_lakehouse(**settings)["success"]
    write_jsonl(
        tiny_landing / "customer" / "customer-2.json", [customer("Alice A", "S-A", None, lastUpdateDate=T2)]
    )
    instance = dg.DagsterInstance.ephemeral()

    assert run_lakehouse(instance=instance, **settings)["success"]

    for _, name in READING_TABLES:
        event = instance.get_latest_materialization_event(dg.AssetKey(name))
        assert event.asset_materialization.metadata["days_recomputed"].value == "all", name
    users = pl.read_delta(str(_table(tmp_path, "trusted", "accelerometer_trusted")))["user"]
    assert "alice@test.com" not in users.str.to_lowercase().to_list()


DAY_AFTER = NEXT_DAY + 86_400_000


def _day(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).date().isoformat()


def _days_of(table: Path) -> set[str]:
    return set(pl.read_delta(str(table))["event_day"].cast(pl.String).to_list())


def test_a_run_over_some_days_recomputes_those_and_leaves_the_rest_for_the_next(
    tiny_landing: Path, tmp_path: Path
):
    """`stedi run --partitions`: a single run over a range of days writes only those partitions; the
    other changed days are recorded as pending and the next run (over the days it needs) does them."""
    settings, instance = _settings(tiny_landing, tmp_path), dg.DagsterInstance.ephemeral()
    assert run_lakehouse(instance=instance, **settings)["success"]
    for ms in (NEXT_DAY, DAY_AFTER):
        write_jsonl(
            tiny_landing / ACCEL / f"accelerometer-{ms}.json",
            [{"user": "Erin@test.com", "timestamp": ms, "x": 5.0, "y": 0.0, "z": -1.0}],
        )
        write_jsonl(
            tiny_landing / "step_trainer" / f"step_trainer-{ms}.json",
            [{"sensorReadingTime": ms, "serialNumber": "S-E", "distanceFromObject": 240}],
        )

    summary = run_lakehouse(instance=instance, partitions=f"{_day(NEXT_DAY)}..{_day(NEXT_DAY)}", **settings)

    assert summary["success"], summary["errors"]
    for zone, name in READING_TABLES:
        assert _days_of(_table(tmp_path, zone, name)) == {TINY_DAY, _day(NEXT_DAY)}, name
        event = instance.get_latest_materialization_event(dg.AssetKey(name))
        assert event.asset_materialization.partition == _day(NEXT_DAY), name
        metadata = event.asset_materialization.metadata
        # the trusted tables leave the other new day pending; the training table's inputs changed
        # only on the day the run recomputed
        pending = 0 if zone == "curated" else 1
        assert (metadata["days_recomputed"].value, metadata["days_pending"].value) == (1, pending), name
        assert instance.get_materialized_partitions(dg.AssetKey(name)) == {TINY_DAY, _day(NEXT_DAY)}

    summary = run_lakehouse(instance=instance, **settings)  # the days it needs: the pending one

    assert summary["success"], summary["errors"]
    everything = {TINY_DAY, _day(NEXT_DAY), _day(DAY_AFTER)}
    fresh = tmp_path / "fresh"
    assert run_lakehouse(landing_uri=str(tiny_landing), lakehouse_uri=str(fresh))["success"]
    for zone, name in READING_TABLES:
        event = instance.get_latest_materialization_event(dg.AssetKey(name))
        assert event.asset_materialization.partition == _day(DAY_AFTER), name
        assert event.asset_materialization.metadata["days_pending"].value == 0, name
        assert instance.get_materialized_partitions(dg.AssetKey(name)) == everything
        incremental = pl.read_delta(str(_table(tmp_path, zone, name)))
        assert_frame_equal(_sorted(incremental), _sorted(pl.read_delta(str(fresh / zone / name))))


def test_a_consent_change_in_a_run_over_one_day_rebuilds_every_day(tiny_landing: Path, tmp_path: Path):
    """Privacy first: the range a run targets does not narrow a consent change."""
    settings = _settings(tiny_landing, tmp_path)
    write_jsonl(
        tiny_landing / ACCEL / "accelerometer-2.json",
        [{"user": "Alice@test.com", "timestamp": NEXT_DAY, "x": 5.0, "y": 0.0, "z": -1.0}],
    )
    assert run_lakehouse(**settings)["success"]
    assert "alice@test.com" in _users(tmp_path)
    write_jsonl(
        tiny_landing / "customer" / "customer-2.json", [customer("Alice A", "S-A", None, lastUpdateDate=T2)]
    )
    instance = dg.DagsterInstance.ephemeral()

    assert run_lakehouse(instance=instance, partitions=_day(NEXT_DAY), **settings)["success"]

    event = instance.get_latest_materialization_event(dg.AssetKey("accelerometer_trusted"))
    assert event.asset_materialization.metadata["days_recomputed"].value == "all"
    assert "alice@test.com" not in _users(tmp_path)  # on both days


def _users(tmp_path: Path) -> list[str]:
    users = pl.read_delta(str(_table(tmp_path, "trusted", "accelerometer_trusted")))["user"]
    return users.str.to_lowercase().to_list()


def test_the_schedule_runs_every_zone_in_one_run_over_the_days_that_changed(
    tiny_landing: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    settings, instance = _settings(tiny_landing, tmp_path), dg.DagsterInstance.ephemeral()
    assert run_lakehouse(instance=instance, **settings)["success"]
    write_jsonl(tiny_landing / ACCEL / "accelerometer-2.json", NEW_READINGS)  # on the same day
    write_jsonl(tiny_landing / "customer" / "customer-2.json", [customer("Zed Z", "S-Z", None)])
    monkeypatch.setenv("STEDI_LANDING_URI", settings["landing_uri"])
    monkeypatch.setenv("STEDI_LAKEHOUSE_URI", settings["lakehouse_uri"])
    schedule = defs.resolve_schedule_def("stedi_daily_refresh")

    request = schedule.evaluate_tick(dg.build_schedule_context(instance=instance)).run_requests[0]

    assert schedule.job_name == "stedi_lakehouse_job" and request.asset_selection is None
    assert range_tags(TINY_DAY, TINY_DAY).items() <= request.tags.items()  # the newest day with readings
    run = defs.resolve_job_def("stedi_lakehouse_job").execute_in_process(instance=instance, tags=request.tags)
    assert run.success
    materialized = {e.asset_key.to_user_string() for e in run.get_asset_materialization_events()}
    assert {"customer_landing", "customer_trusted", "machine_learning_curated"} <= materialized
    assert pl.read_delta(str(_table(tmp_path, "trusted", "accelerometer_trusted"))).height == 4


def test_a_reading_dated_outside_the_partitions_is_done_by_any_run_and_never_widens_its_range(
    tiny_landing: Path, tmp_path: Path
):
    """A device clock at 1970 belongs to no partition: the run over the days that changed does it,
    and the range stays those days (each day in a range costs Dagster bookkeeping)."""
    settings, instance = _settings(tiny_landing, tmp_path), dg.DagsterInstance.ephemeral()
    assert run_lakehouse(instance=instance, **settings)["success"]
    write_jsonl(
        tiny_landing / ACCEL / "accelerometer-1970.json",
        [
            {"user": "Erin@test.com", "timestamp": 1_000, "x": 1.0, "y": 0.0, "z": 0.0},
            {"user": "Erin@test.com", "timestamp": NEXT_DAY, "x": 2.0, "y": 0.0, "z": 0.0},
        ],
    )

    summary = run_lakehouse(instance=instance, **settings)

    assert summary["success"], summary["errors"]
    run = instance.get_run_by_id(summary["run_id"])
    assert (run.tags[RANGE_START_TAG], run.tags[RANGE_END_TAG]) == (_day(NEXT_DAY), _day(NEXT_DAY))
    assert _days_of(_table(tmp_path, "trusted", "accelerometer_trusted")) == {
        "1970-01-01",
        TINY_DAY,
        _day(NEXT_DAY),
    }
    event = instance.get_latest_materialization_event(dg.AssetKey("accelerometer_trusted"))
    assert event.asset_materialization.metadata["days_recomputed"].value == 2


def test_a_withdrawal_is_carried_out_when_another_source_fails_to_ingest(tiny_landing: Path, tmp_path: Path):
    """Privacy first: the zones run after an ingest that failed in a reading source, as long as the
    customers and the erasure requests were ingested; a withdrawal never waits for a broken file."""
    settings = _settings(tiny_landing, tmp_path)
    assert run_lakehouse(**settings)["success"]
    assert "alice@test.com" in _users(tmp_path)
    write_jsonl(
        tiny_landing / "customer" / "customer-2.json", [customer("Alice A", "S-A", None, lastUpdateDate=T2)]
    )
    for path in (tiny_landing / "step_trainer").iterdir():  # the step trainer source is gone
        path.unlink()
    (tiny_landing / "step_trainer").rmdir()

    summary = run_lakehouse(**settings)

    assert not summary["success"]
    assert [error.split(":")[0] for error in summary["errors"]] == ["ingest_step_trainer"]
    assert len(summary["run_ids"]) == 2  # the zones ran
    assert "alice@test.com" not in _users(tmp_path)
    training = pl.read_delta(str(_table(tmp_path, "curated", "machine_learning_curated")))
    assert training.height > 0 and "S-A" not in training["serialNumber"].to_list()


def _planned_days(instance: dg.DagsterInstance, run_id: str, asset: str) -> list[str | None]:
    """The partitions each planned-materialization event of `asset` in a run names (None: a subset)."""
    return sorted(
        (event.dagster_event.event_specific_data.partition or None)
        for event in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED)
        if event.dagster_event.event_specific_data.asset_key == dg.AssetKey(asset)
    )


def test_an_ephemeral_instance_records_one_planned_event_per_asset_and_a_kept_one_one_per_day(
    tiny_landing: Path, tmp_path: Path
):
    """`stedi run` without DAGSTER_HOME plans each reading table once over its range of days (the
    instance is gone when the run ends); an instance that is kept records every day, so Dagster can
    mark the days of a failed run as failed. Neither leaves the setting behind."""
    _two_days_of_readings(tiny_landing)
    ephemeral = dg.DagsterInstance.ephemeral()
    summary = run_lakehouse(instance=ephemeral, **_settings(tiny_landing, tmp_path / "ephemeral"))
    assert summary["success"]
    assert _planned_days(ephemeral, summary["run_ids"][-1], "accelerometer_trusted") == [None]
    assert "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS" not in os.environ
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as kept:
        summary = run_lakehouse(instance=kept, **_settings(tiny_landing, tmp_path / "kept"))
        assert summary["success"]
        assert _planned_days(kept, summary["run_ids"][-1], "accelerometer_trusted") == [
            TINY_DAY,
            SECOND_DAY.isoformat(),
        ]
