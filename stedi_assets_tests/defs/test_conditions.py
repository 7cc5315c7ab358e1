"""Declarative automation of the zones, driven as `dagster dev` drives it: the landing sensor's request
is run, then the automation sensor ticks (stedi_zones_automation, evaluated in this process as in the
code server) and each run it requests is executed, until a tick requests nothing. The tables that
result equal a build from scratch of the same landing zone."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from stedi_assets.cli import run_lakehouse
from stedi_assets.definitions import defs
from stedi_assets.defs.automation import new_landing_files, zones_automation
from stedi_assets.defs.partitions import EVENT_DAYS, RANGE_END_TAG, RANGE_START_TAG, range_tags
from stedi_assets.rules.catalog import PROVENANCE
from stedi_assets.storage.lakehouse import Lakehouse
from stedi_assets_tests.helpers import T2, TINY_DAY, customer, read_table, write_jsonl

NEXT_DAY_MS = T2 + 86_400_000
NEXT_DAY = dt.datetime.fromtimestamp(NEXT_DAY_MS / 1000, dt.UTC).date().isoformat()
TODAY = str(EVENT_DAYS.get_last_partition_key())
TABLES = {
    "trusted": ("customer_trusted", "accelerometer_trusted", "step_trainer_trusted"),
    "curated": ("customer_curated", "machine_learning_curated"),
}


class Deployment:
    """A lakehouse (a folder, or a bucket of the S3 test server) run by its sensors and automation,
    as a deployment's code location runs it."""

    def __init__(self, landing: Path, lakehouse: Lakehouse, monkeypatch: pytest.MonkeyPatch) -> None:
        self.landing, self.lakehouse = landing, lakehouse
        monkeypatch.setenv("STEDI_LANDING_URI", str(landing))
        monkeypatch.setenv("STEDI_LAKEHOUSE_URI", lakehouse.root)
        monkeypatch.setenv("STEDI_PSEUDONYM_KEY", "automation-test-key")  # a fresh build pseudonymizes alike
        self.instance = dg.DagsterInstance.ephemeral()
        self.landing_cursor: str | None = None
        self.automation_cursor: str | None = None

    def landing_tick(self) -> list[dg.RunRequest]:
        """One tick of stedi_new_landing_files; runs what it requests."""
        context = dg.build_sensor_context(instance=self.instance, cursor=self.landing_cursor)
        result = new_landing_files.evaluate_tick(context)
        self.landing_cursor = result.cursor
        requests = list(result.run_requests or [])
        for request in requests:
            self._execute(defs.resolve_job_def(request.job_name or ""), request)
        return requests

    def automation_tick(self, execute: bool = True) -> list[tuple[str, ...]]:
        """One tick of stedi_zones_automation, each request run: what each run targets, as (asset, ...,
        partition or START..END). A request for several days of a table is a backfill, which the
        daemon runs as one run per range of days (BackfillPolicy.single_run): so it is run here."""
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.automation_cursor, definitions=defs
        )
        result = zones_automation.evaluate_tick(context)
        self.automation_cursor = result.cursor
        runs: list[tuple[list[dg.AssetKey], dict[str, str], str]] = []
        for request in result.run_requests or []:
            if request.asset_graph_subset is None:
                keys, day = list(request.asset_selection or []), request.partition_key
                runs.append((keys, range_tags(day, day) if day else {}, day or ""))
                continue
            days_of: dict[frozenset[str], list[dg.AssetKey]] = {}
            for key, days in request.asset_graph_subset.partitions_subsets_by_asset_key.items():
                days_of.setdefault(frozenset(days.get_partition_keys()), []).append(key)
            for days, keys in days_of.items():
                subset = EVENT_DAYS.subset_with_partition_keys(days)
                for span in subset.get_partition_key_ranges(EVENT_DAYS):
                    runs.append((keys, range_tags(span.start, span.end), f"{span.start}..{span.end}"))
            keys = list(request.asset_graph_subset.non_partitioned_asset_keys)
            runs += [(keys, {}, "")] if keys else []
        if execute:
            for keys, tags, _ in runs:
                executed = defs.resolve_implicit_global_asset_job_def().execute_in_process(
                    instance=self.instance, tags=tags, asset_selection=keys
                )
                assert executed.success
        return sorted((*sorted(k.to_user_string() for k in keys), days) for keys, _, days in runs)

    def automate(self) -> list[list[tuple[str, ...]]]:
        """Automation ticks, each request run, until a tick requests nothing: the waves."""
        waves = []
        while wave := self.automation_tick():
            waves.append(wave)
            assert len(waves) < 10, waves
        return waves

    def _execute(self, job: dg.JobDefinition, request: dg.RunRequest) -> None:
        result = job.execute_in_process(
            instance=self.instance, tags=request.tags, asset_selection=request.asset_selection
        )
        assert result.success

    def table(self, zone: str, name: str) -> pl.DataFrame:
        return _comparable(read_table(self.lakehouse, zone, name))


def _comparable(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows without provenance (which file and line, when ingested), in one order."""
    frame = frame.drop(c.name for c in PROVENANCE if c.name in frame.columns)
    return frame.sort(frame.columns)


def _assert_as_built_from_scratch(deployment: Deployment, tmp_path: Path) -> None:
    scratch = Lakehouse(str(tmp_path / "scratch"))
    summary = run_lakehouse(
        instance=dg.DagsterInstance.ephemeral(),
        landing_uri=str(deployment.landing),
        lakehouse_uri=scratch.root,
    )
    assert summary["success"], summary["errors"]
    for zone, names in TABLES.items():
        for name in names:
            assert_frame_equal(deployment.table(zone, name), _comparable(read_table(scratch, zone, name)))


@pytest.fixture
def running(tiny_landing: Path, lakehouse: Lakehouse, monkeypatch: pytest.MonkeyPatch) -> Deployment:
    """The tiny lakehouse (local or on S3) as its first landing tick builds it, automation caught up."""
    lakehouse = Deployment(tiny_landing, lakehouse, monkeypatch)
    # the first tick knows no day of the landing files: its run targets today's partition and
    # builds the tables whole, marking the days they hold as well
    assert [r.job_name for r in lakehouse.landing_tick()] == ["stedi_lakehouse_job"]
    for name in ("accelerometer_trusted", "step_trainer_trusted", "machine_learning_curated"):
        assert lakehouse.instance.get_materialized_partitions(dg.AssetKey(name)) == {TINY_DAY, TODAY}
    assert lakehouse.automate() == []
    return lakehouse


def _readings(landing: Path, name: str, user: str, serial: str, at: int) -> None:
    write_jsonl(
        landing / "accelerometer" / f"{name}.json",
        [{"user": user, "timestamp": at, "x": 7.0, "y": 0.0, "z": 0.0}],
    )
    write_jsonl(
        landing / "step_trainer" / f"{name}.json",
        [{"sensorReadingTime": at, "serialNumber": serial, "distanceFromObject": 70}],
    )


def test_new_readings_flow_downstream_over_just_their_day(running: Deployment, tmp_path: Path):
    _readings(running.landing, "next-day", "Erin@test.com", "S-E", NEXT_DAY_MS)

    requests = running.landing_tick()

    assert [(r.job_name, sorted(k.to_user_string() for k in r.asset_selection or [])) for r in requests] == [
        (
            "stedi_ingest_job",
            [
                "accelerometer_landing",
                "accelerometer_rejects",
                "step_trainer_landing",
                "step_trainer_rejects",
            ],
        )
    ]
    # one run per wave, each for the new day only; the population did not change, so the tables
    # decided from it are not run again
    assert running.automate() == [
        [("accelerometer_trusted", "step_trainer_trusted", NEXT_DAY)],
        [("customer_curated", "")],
        [("machine_learning_curated", NEXT_DAY)],
        [("curated_report", "")],
    ]
    assert running.instance.get_materialized_partitions(dg.AssetKey("machine_learning_curated")) >= {NEXT_DAY}
    assert running.table("curated", "machine_learning_curated").height == 6
    _assert_as_built_from_scratch(running, tmp_path)
    assert running.landing_tick() == [] and running.automation_tick() == []


def test_a_customer_who_gains_phone_data_brings_their_device_readings_of_every_day(
    tiny_landing: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Carol consents but has no phone data: her Step Trainer readings stay out until she has. A new
    phone reading makes her curated; the tables decided from the curated customers then rebuild
    whole (their newest partition is run), so her device's earlier readings come in too."""
    write_jsonl(
        tiny_landing / "step_trainer" / "carol.json",
        [{"sensorReadingTime": T2, "serialNumber": "S-C", "distanceFromObject": 90}],
    )
    lakehouse = Deployment(tiny_landing, Lakehouse(str(tmp_path / "lakehouse")), monkeypatch)
    lakehouse.landing_tick()
    assert lakehouse.automate() == []
    assert "S-C" not in lakehouse.table("trusted", "step_trainer_trusted")["serialNumber"].to_list()
    write_jsonl(
        tiny_landing / "accelerometer" / "carol.json",
        [{"user": "Carol@test.com", "timestamp": T2, "x": 5.0, "y": 0.0, "z": 0.0}],
    )

    lakehouse.landing_tick()

    assert lakehouse.automate() == [
        [("accelerometer_trusted", TINY_DAY)],
        [("customer_curated", "")],
        [("step_trainer_trusted", TODAY)],
        # two days apart: one backfill, run as one run per range of days
        [
            ("machine_learning_curated", f"{TINY_DAY}..{TINY_DAY}"),
            ("machine_learning_curated", f"{TODAY}..{TODAY}"),
        ],
        [("curated_report", "")],
    ]
    assert "S-C" in lakehouse.table("trusted", "step_trainer_trusted")["serialNumber"].to_list()
    _assert_as_built_from_scratch(lakehouse, tmp_path)


@pytest.mark.parametrize("withdrawn", [True, False])
def test_new_customer_records_run_every_zone_at_once_and_automation_then_does_the_days_left(
    running: Deployment, tmp_path: Path, withdrawn: bool
):
    """New customer records and new readings together: one run of every zone, over the days known
    before its ingest. When the consent decision changed, the reading tables are rebuilt whole, the
    new day with them; when it did not (a customer who does not consent), the new day is left
    pending by that run and automation does it."""
    _readings(running.landing, "next-day", "Erin@test.com", "S-E", NEXT_DAY_MS)
    record = customer("Alice A", "S-A", None) if withdrawn else customer("Zed Z", "S-Z", None)
    write_jsonl(running.landing / "customer" / "customer-2.json", [record])

    requests = running.landing_tick()

    assert [(r.job_name, r.asset_selection) for r in requests] == [("stedi_lakehouse_job", None)]
    assert requests[0].tags[RANGE_START_TAG] == requests[0].tags[RANGE_END_TAG] == TINY_DAY
    consenting = running.table("trusted", "customer_trusted")["email"].to_list()
    assert ("Alice@test.com" in consenting) is not withdrawn
    if withdrawn:
        assert running.automate() == []
        # the rebuild wrote the new day: it is marked though the run did not target it
        for name in ("accelerometer_trusted", "step_trainer_trusted", "machine_learning_curated"):
            assert NEXT_DAY in running.instance.get_materialized_partitions(dg.AssetKey(name))
    else:
        waves = running.automate()
        assert waves[0] == [("accelerometer_trusted", "step_trainer_trusted", NEXT_DAY)]
        assert waves[-1] == [("curated_report", "")]
    assert NEXT_DAY in running.table("curated", "machine_learning_curated")["event_day"].cast(pl.String)
    _assert_as_built_from_scratch(running, tmp_path)


def test_automation_asks_once_per_change_and_catches_up_with_the_next(running: Deployment, tmp_path: Path):
    """A request not yet run (or a run that failed) is not asked again on every tick; the next
    change of the table's inputs asks for its days and the days still due."""
    _readings(running.landing, "next-day", "Erin@test.com", "S-E", NEXT_DAY_MS)
    running.landing_tick()

    assert running.automation_tick(execute=False) == [
        ("accelerometer_trusted", "step_trainer_trusted", NEXT_DAY)
    ]
    # the report follows the landing table, which the pending request does not hold back here: in a
    # deployment that run is in progress, and the report waits for it
    assert running.automation_tick(execute=False) == [("curated_report", "")]

    day_after = NEXT_DAY_MS + 86_400_000
    _readings(running.landing, "day-after", "Erin@test.com", "S-E", day_after)
    running.landing_tick()
    after = dt.datetime.fromtimestamp(day_after / 1000, dt.UTC).date().isoformat()
    # the two days are one backfill, run as one run of both tables over them
    waves = running.automate()
    assert waves[0] == [("accelerometer_trusted", "step_trainer_trusted", f"{NEXT_DAY}..{after}")]
    for name in ("accelerometer_trusted", "step_trainer_trusted", "machine_learning_curated"):
        assert {NEXT_DAY, after} <= running.instance.get_materialized_partitions(dg.AssetKey(name))
    _assert_as_built_from_scratch(running, tmp_path)


def test_automation_requests_no_day_when_the_lakehouse_cannot_be_read(
    running: Deployment, monkeypatch: pytest.MonkeyPatch
):
    _readings(running.landing, "next-day", "Erin@test.com", "S-E", NEXT_DAY_MS)
    running.landing_tick()
    monkeypatch.setenv("STEDI_LAKEHOUSE_URI", "ftp://nowhere/lakehouse")

    # no reading table: which days changed cannot be known (the report only follows the ingest)
    assert running.automation_tick(execute=False) == [("curated_report", "")]
