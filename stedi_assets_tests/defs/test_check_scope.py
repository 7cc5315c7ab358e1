"""Checks of the day-partitioned tables examine the days changed since they last passed, and the
whole table whenever that would not prove the contract for every row (check_scope)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
from deltalake import DeltaTable

from stedi_assets.cli import JOB, run_config, run_lakehouse
from stedi_assets.definitions import defs
from stedi_assets.defs.check_scope import release, vouch
from stedi_assets.defs.factories import guard_of
from stedi_assets.defs.partitions import range_tags
from stedi_assets.defs.trusted import USERS_ARE_TRUSTED_CUSTOMERS
from stedi_assets.rules import transforms
from stedi_assets.storage.lakehouse import Lakehouse
from stedi_assets.storage.pseudonym import pseudonym_key
from stedi_assets_tests.helpers import T1, T2, TINY_DAY, customer, write_jsonl

NEXT_DAY = "2022-06-19"
MEMBERSHIP = ("accelerometer_trusted", "users_are_trusted_customers")
CONTRACTS = ("accelerometer_trusted", "no_duplicate_rows")


@pytest.fixture
def instance() -> Any:
    """An instance kept across a test's runs, to read the check evaluations from."""
    with dg.instance_for_test() as instance:
        yield instance


def _settings(landing: Path, tmp_path: Path) -> dict[str, Any]:
    return {"landing_uri": str(landing), "lakehouse_uri": str(tmp_path / "lakehouse")}


def _latest(instance: dg.DagsterInstance, asset: str, check: str) -> tuple[bool, Any]:
    """Whether the newest evaluation of a check passed, and how many days it examined."""
    key = dg.AssetCheckKey(dg.AssetKey(asset), check)
    record = instance.event_log_storage.get_asset_check_execution_history(key, limit=1)[0]
    evaluation = record.event.dagster_event.event_specific_data
    return evaluation.passed, evaluation.metadata["days_checked"].value


def _add_next_day_reading(landing: Path) -> None:
    write_jsonl(
        landing / "accelerometer" / "accelerometer-2.json",
        [{"user": "Erin@test.com", "timestamp": T1 + 86_400_000, "x": 7.0, "y": 0.0, "z": 0.0}],
    )


def _run_check(instance: dg.DagsterInstance, settings: dict[str, Any], asset: str, check: str) -> None:
    """Runs one check alone, as the UI's "Execute" of a check does: of its table's step, only it."""
    key = dg.AssetCheckKey(dg.AssetKey(asset), check)
    job = defs.resolve_job_def(JOB).get_subset(asset_selection=set(), asset_check_selection={key})
    result = job.execute_in_process(
        run_config=run_config(**settings),
        instance=instance,
        raise_on_error=False,
        tags=range_tags(TINY_DAY, NEXT_DAY),
    )
    evaluated = [(e.asset_key.to_user_string(), e.check_name) for e in result.get_asset_check_evaluations()]
    assert evaluated == [(asset, check)]


def test_checks_examine_only_the_days_changed_since_they_last_passed(
    tiny_landing: Path, tmp_path: Path, instance: dg.DagsterInstance
):
    settings = _settings(tiny_landing, tmp_path)
    assert run_lakehouse(instance=instance, **settings)["success"]
    assert _latest(instance, *MEMBERSHIP) == (True, 0)  # its guard examined every row
    assert _latest(instance, *CONTRACTS) == (True, "all")

    _add_next_day_reading(tiny_landing)
    with dg.instance_for_test() as another:  # what a check saw is kept in the lakehouse, not the instance
        summary = run_lakehouse(instance=another, **settings)

        assert summary["success"], summary["errors"]
        assert _latest(another, *MEMBERSHIP) == (True, 0)  # the new day: by its guard
        assert _latest(another, *CONTRACTS) == (True, 1)
        assert _latest(another, "machine_learning_curated", "rows_have_both_sides") == (True, 0)


def test_a_parent_changed_without_a_rewrite_of_the_table_makes_the_check_examine_every_day(
    tiny_landing: Path, tmp_path: Path, instance: dg.DagsterInstance
):
    """Alice leaves customer_trusted behind the pipeline's back: her readings, on a day no write
    touched since the check passed, are now orphans, and only a check of every day sees them."""
    settings = _settings(tiny_landing, tmp_path)
    assert run_lakehouse(instance=instance, **settings)["success"]
    customers = str(tmp_path / "lakehouse" / "trusted" / "customer_trusted")
    without_alice = pl.read_delta(customers).filter(pl.col("email") != "Alice@test.com")
    without_alice.write_delta(customers, mode="overwrite")

    _run_check(instance, settings, *MEMBERSHIP)

    assert _latest(instance, *MEMBERSHIP) == (False, "all")


def test_a_write_to_an_old_day_outside_the_pipeline_is_examined(
    tiny_landing: Path, tmp_path: Path, instance: dg.DagsterInstance
):
    """The days to examine come from the table's log, not from what the pipeline meant to write."""
    settings = _settings(tiny_landing, tmp_path)
    assert run_lakehouse(instance=instance, **settings)["success"]
    readings = str(tmp_path / "lakehouse" / "trusted" / "accelerometer_trusted")
    stray = pl.read_delta(readings).head(1).with_columns(user=pl.lit("Bob@test.com"))
    stray.write_delta(readings, mode="append")

    _run_check(instance, settings, *MEMBERSHIP)

    assert _latest(instance, *MEMBERSHIP) == (False, 1)


def test_a_lakehouse_made_anew_at_the_same_place_is_examined_whole(
    tiny_landing: Path, tmp_path: Path, instance: dg.DagsterInstance
):
    """Same URI, same version numbers, other rows: the Delta table's id tells the two apart."""
    settings = _settings(tiny_landing, tmp_path)
    assert run_lakehouse(instance=instance, **settings)["success"]
    shutil.rmtree(tmp_path / "lakehouse")

    assert run_lakehouse(instance=instance, **settings)["success"]

    assert _latest(instance, *MEMBERSHIP) == (True, 0)  # the new table's own guard
    assert _latest(instance, *CONTRACTS) == (True, "all")


CURATED_MEMBERSHIP = ("customer_curated", "customers_have_accelerometer_data")


def test_a_table_without_days_examines_only_its_rows_added_while_its_parent_only_gained_days(
    tiny_landing: Path, tmp_path: Path, instance: dg.DagsterInstance
):
    """Every customer curated when the check passed had a reading then, on a day that is still as it
    was: only a customer added since needs one looked for, and a day that changed looks again for all."""
    settings = _settings(tiny_landing, tmp_path)
    assert run_lakehouse(instance=instance, **settings)["success"]
    assert _latest(instance, *CURATED_MEMBERSHIP) == (True, "all")
    _add_next_day_reading(tiny_landing)  # a day gained; the curated customers stay as they were
    assert run_lakehouse(instance=instance, **settings)["success"]
    assert _latest(instance, *CURATED_MEMBERSHIP) == (True, "added rows")

    # Mallory, curated behind the pipeline's back, has no reading on any day
    curated = str(tmp_path / "lakehouse" / "curated" / "customer_curated")
    mallory = pl.read_delta(curated).head(1).with_columns(email=pl.lit("Mallory@test.com"))
    mallory.write_delta(curated, mode="append")
    _run_check(instance, settings, *CURATED_MEMBERSHIP)
    assert _latest(instance, *CURATED_MEMBERSHIP) == (False, "added rows")

    # without her, passing again; then a reading slipped into a day the readings held: all are examined
    pl.read_delta(curated).filter(pl.col("email") != "Mallory@test.com").write_delta(
        curated, mode="overwrite"
    )
    _run_check(instance, settings, *CURATED_MEMBERSHIP)
    assert _latest(instance, *CURATED_MEMBERSHIP) == (True, "added rows")  # none: no reading read
    readings = str(tmp_path / "lakehouse" / "trusted" / "accelerometer_trusted")
    pl.read_delta(readings).head(1).with_columns(x=pl.lit(9.0)).write_delta(readings, mode="append")
    _run_check(instance, settings, *CURATED_MEMBERSHIP)
    assert _latest(instance, *CURATED_MEMBERSHIP) == (True, "all")


def test_added_rows_fall_back_to_every_row_when_the_version_they_compare_with_is_gone(
    tiny_landing: Path, tmp_path: Path, instance: dg.DagsterInstance
):
    """customer_curated rewritten and its earlier files vacuumed: the rows it held when the check
    passed can no longer be read, so every customer is examined (not a crash, not a pass unexamined)."""
    settings = _settings(tiny_landing, tmp_path)
    assert run_lakehouse(instance=instance, **settings)["success"]
    curated = str(tmp_path / "lakehouse" / "curated" / "customer_curated")
    pl.read_delta(curated).write_delta(curated, mode="overwrite")  # the same rows, in new files
    DeltaTable(curated).vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)

    _run_check(instance, settings, *CURATED_MEMBERSHIP)

    assert _latest(instance, *CURATED_MEMBERSHIP) == (True, "all")


def _swept(instance: dg.DagsterInstance, table: str) -> Any:
    """How many days of `table` the latest consent sweep (customer_trusted) examined."""
    event = instance.get_latest_materialization_event(dg.AssetKey("customer_trusted"))
    return event.asset_materialization.metadata[f"days_swept/{table}"].value


READING_TABLES = ("accelerometer_trusted", "step_trainer_trusted", "machine_learning_curated")


def _users(tmp_path: Path) -> set[str]:
    readings = pl.read_delta(str(tmp_path / "lakehouse" / "trusted" / "accelerometer_trusted"))
    return set(readings["user"].str.to_lowercase())


def test_the_consent_sweep_examines_the_days_changed_since_it_last_found_no_one_else(
    tiny_landing: Path, tmp_path: Path, instance: dg.DagsterInstance
):
    settings = _settings(tiny_landing, tmp_path)
    assert run_lakehouse(instance=instance, **settings)["success"]  # nothing downstream to sweep yet
    assert run_lakehouse(instance=instance, **settings)["success"]
    # each reading table's write verified the sweep's predicate on what it staged: nothing to read again
    assert {table: _swept(instance, table) for table in READING_TABLES} == dict.fromkeys(READING_TABLES, 0)
    # Bob, who never consented, is slipped into the table behind the pipeline's back
    readings = str(tmp_path / "lakehouse" / "trusted" / "accelerometer_trusted")
    pl.read_delta(readings).head(1).with_columns(user=pl.lit("Bob@test.com")).write_delta(
        readings, mode="append"
    )
    assert "bob@test.com" in _users(tmp_path)

    summary = run_lakehouse(instance=instance, **settings)

    assert summary["success"], summary["errors"]
    assert _swept(instance, "accelerometer_trusted") == 1  # the one day that changed, where he is
    assert "bob@test.com" not in _users(tmp_path)
    event = instance.get_latest_materialization_event(dg.AssetKey("customer_trusted"))
    assert event.asset_materialization.metadata["withdrawn_from/accelerometer_trusted"].value == 1

    # another decision (Alice withdraws) examines every day again
    write_jsonl(
        tiny_landing / "customer" / "customer-2.json", [customer("Alice A", "S-A", None, lastUpdateDate=T2)]
    )
    assert run_lakehouse(instance=instance, **settings)["success"]
    assert _swept(instance, "accelerometer_trusted") == "all"
    assert _users(tmp_path) == {"erin@test.com"}


@pytest.mark.parametrize("policy", ["any_time", "from_consent_date"])
def test_a_reading_tables_write_leaves_the_record_a_sweep_of_the_whole_table_leaves(
    tiny_landing: Path, tmp_path: Path, instance: dg.DagsterInstance, policy: str
):
    """Each write verified what it staged against the very decision the sweep makes (the same
    digest, under either policy): what it recorded is what a sweep of every day records."""
    settings = {**_settings(tiny_landing, tmp_path), "consent_policy": policy}
    assert run_lakehouse(instance=instance, **settings)["success"]
    records = {
        table: tmp_path / "lakehouse" / "verified" / table / "consent_sweep.json" for table in READING_TABLES
    }
    written = {table: json.loads(record.read_text()) for table, record in records.items()}
    for record in records.values():
        record.unlink()

    assert run_lakehouse(instance=instance, **settings)["success"]

    assert {table: _swept(instance, table) for table in READING_TABLES} == dict.fromkeys(
        READING_TABLES, "all"
    )
    assert {table: json.loads(record.read_text()) for table, record in records.items()} == written


def _observed(instance: dg.DagsterInstance, asset: str, check: str) -> Any:
    key = dg.AssetCheckKey(dg.AssetKey(asset), check)
    record = instance.event_log_storage.get_asset_check_execution_history(key, limit=1)[0]
    return record.event.dagster_event.event_specific_data.metadata["observed"].value


CROSS = ("machine_learning_curated", "cross_customer_pairs")


def test_cross_customer_pairs_are_counted_over_the_whole_table_from_the_days_that_changed(
    tiny_landing: Path, tmp_path: Path, instance: dg.DagsterInstance
):
    settings = _settings(tiny_landing, tmp_path)
    assert run_lakehouse(instance=instance, **settings)["success"]
    first = _observed(instance, *CROSS)
    # at T2 Alice's and Erin's trainers and phones all read: each phone pairs with the other's trainer
    assert first == 2 and _latest(instance, *CROSS) == (False, "all")
    # a new day: Alice's trainer, and both phones at that very time (one more cross pair)
    day = T1 + 86_400_000
    write_jsonl(
        tiny_landing / "step_trainer" / "step_trainer-2.json",
        [{"sensorReadingTime": day, "serialNumber": "S-A", "distanceFromObject": 250}],
    )
    write_jsonl(
        tiny_landing / "accelerometer" / "accelerometer-2.json",
        [
            {"user": user, "timestamp": day, "x": 1.0, "y": 0.0, "z": 0.0}
            for user in ("Alice@test.com", "Erin@test.com")
        ],
    )

    assert run_lakehouse(instance=instance, **settings)["success"]

    assert _latest(instance, *CROSS) == (False, 1)
    assert _observed(instance, *CROSS) == first + 1
    # the same count as examining every day
    shutil.rmtree(tmp_path / "lakehouse" / "verified")
    _run_check(instance, settings, *CROSS)
    assert _latest(instance, *CROSS) == (False, "all")
    assert _observed(instance, *CROSS) == first + 1
    # a day that had pairs changes: its old count (2) leaves the total, its new one (3) comes in
    write_jsonl(
        tiny_landing / "step_trainer" / "step_trainer-3.json",
        [{"sensorReadingTime": T1, "serialNumber": "S-E", "distanceFromObject": 240}],
    )
    assert run_lakehouse(instance=instance, **settings)["success"]
    assert _latest(instance, *CROSS) == (False, 1)
    assert _observed(instance, *CROSS) == first + 2


def test_another_pseudonym_key_makes_a_keyed_hash_check_examine_every_day(
    tiny_landing: Path, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
):
    """subject_ids made under the old key match no curated customer under the new one: a check run
    before the table is rebuilt must say so, although no day of the table changed."""
    settings = _settings(tiny_landing, tmp_path)
    monkeypatch.setenv("STEDI_PSEUDONYM_KEY", "first key")
    assert run_lakehouse(instance=instance, **settings)["success"]
    users = ("machine_learning_curated", "users_are_curated_customers")
    assert _latest(instance, *users) == (True, 0)  # the write's guard examined every row

    monkeypatch.setenv("STEDI_PSEUDONYM_KEY", "second key")
    _run_check(instance, settings, *users)

    assert _latest(instance, *users) == (False, "all")


def test_a_record_made_under_other_rules_code_is_not_trusted(
    tiny_landing: Path, tmp_path: Path, instance: dg.DagsterInstance
):
    """A record names the release and a digest of the rules' code it was reached under: one made
    under other code (a changed contract, released or not) makes the check examine every day."""
    settings = _settings(tiny_landing, tmp_path)
    assert run_lakehouse(instance=instance, **settings)["success"]
    record = tmp_path / "lakehouse" / "verified" / MEMBERSHIP[0] / f"{MEMBERSHIP[1]}.json"
    seen = json.loads(record.read_text())
    assert seen["release"] == release() and "+" in seen["release"]
    record.write_text(json.dumps({**seen, "release": seen["release"].split("+")[0] + "+other"}))

    _run_check(instance, settings, *MEMBERSHIP)

    assert _latest(instance, *MEMBERSHIP) == (True, "all")
    _run_check(instance, settings, *MEMBERSHIP)  # and its own record serves the next evaluation
    assert _latest(instance, *MEMBERSHIP) == (True, 0)


def _materialized(instance: dg.DagsterInstance, asset: str, key: str) -> Any:
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    return event.asset_materialization.metadata[key].value


CUSTOMER_CHECKS = [
    ("customer_trusted", "consent_given"),
    ("customer_trusted", "customers_on_hold"),
    ("customer_trusted", "no_duplicate_rows"),
    ("customer_trusted", "unique_by_email"),
    ("step_trainer_trusted", "shared_serials_excluded"),  # a verdict on the customer tables alone
]


def test_unchanged_customers_keep_their_consent_decision_and_its_verdicts(
    tiny_landing: Path, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
):
    """New readings alone: the published decision stands (not made, not written again) and the checks
    of the customer tables examine nothing; a changed customer record, or a lost record of what the
    decision was made from, makes it again, and the checks examine the whole table."""
    settings = _settings(tiny_landing, tmp_path)
    assert run_lakehouse(instance=instance, **settings)["success"]
    trusted = tmp_path / "lakehouse" / "trusted" / "customer_trusted"
    version = DeltaTable(str(trusted)).version()
    assert [_latest(instance, *check) for check in CUSTOMER_CHECKS] == [(True, "all")] * 5
    said = [_said(instance, *check) for check in CUSTOMER_CHECKS]

    _add_next_day_reading(tiny_landing)
    with monkeypatch.context() as patch:
        patch.setattr(transforms, "customer_trusted", _never)
        summary = run_lakehouse(instance=instance, **settings)

    assert summary["success"], summary["errors"]
    assert _materialized(instance, "customer_trusted", "decision_recomputed") is False
    assert DeltaTable(str(trusted)).version() == version
    assert [_latest(instance, *check) for check in CUSTOMER_CHECKS] == [(True, 0)] * 5
    assert [_said(instance, *check) for check in CUSTOMER_CHECKS] == said  # what each said, at its severity
    assert _latest(instance, *MEMBERSHIP) == (True, 0)
    assert _swept(instance, "accelerometer_trusted") == 0  # its write verified it under this decision

    # the record of what the decision was made from is lost: it is made again (the same: not written)
    (tmp_path / "lakehouse" / "verified" / "customer_trusted" / "consent_decision.json").unlink()
    assert run_lakehouse(instance=instance, **settings)["success"]
    assert _materialized(instance, "customer_trusted", "decision_recomputed") is True
    assert DeltaTable(str(trusted)).version() == version

    # Alice withdraws: the decision is made again, published without her, and checked whole
    write_jsonl(
        tiny_landing / "customer" / "customer-2.json", [customer("Alice A", "S-A", None, lastUpdateDate=T2)]
    )
    assert run_lakehouse(instance=instance, **settings)["success"]
    assert _materialized(instance, "customer_trusted", "decision_recomputed") is True
    assert "Alice@test.com" not in pl.read_delta(str(trusted))["email"].to_list()
    assert [_latest(instance, *check) for check in CUSTOMER_CHECKS] == [(True, "all")] * 5


def _said(instance: dg.DagsterInstance, asset: str, check: str) -> tuple[str, str]:
    """The newest evaluation's severity and description."""
    key = dg.AssetCheckKey(dg.AssetKey(asset), check)
    record = instance.event_log_storage.get_asset_check_execution_history(key, limit=1)[0]
    evaluation = record.event.dagster_event.event_specific_data
    return evaluation.severity.value, evaluation.description


def _never(*args: Any, **kwargs: Any) -> pl.LazyFrame:
    raise AssertionError("the consent decision was made again")


def test_a_guard_vouches_for_its_check_only_over_what_the_check_already_passed_on(
    tiny_landing: Path, tmp_path: Path, instance: dg.DagsterInstance
):
    """A write's privacy guard is its membership check's own predicate on the staged files: a whole
    build, or a new day on top of a version the check's record vouches for, is not examined again;
    a new day on top of a version nothing vouches for (the record lost) makes the check examine the
    whole table, and that evaluation's record then serves the next."""
    settings = _settings(tiny_landing, tmp_path)
    assert run_lakehouse(instance=instance, **settings)["success"]
    assert _latest(instance, *MEMBERSHIP) == (True, 0)
    record = tmp_path / "lakehouse" / "verified" / MEMBERSHIP[0] / f"{MEMBERSHIP[1]}.json"
    record.unlink()

    _add_next_day_reading(tiny_landing)
    assert run_lakehouse(instance=instance, **settings)["success"]

    assert _latest(instance, *MEMBERSHIP) == (True, "all")
    assert run_lakehouse(instance=instance, **settings)["success"]
    assert _latest(instance, *MEMBERSHIP) == (True, 0)


def test_a_guard_never_vouches_for_another_writers_rows(tiny_landing: Path, tmp_path: Path):
    """A commit by someone else after the write the guard examined (here, a stray row appended to
    the day the write replaced): the check's record is left as it was."""
    settings = _settings(tiny_landing, tmp_path)
    assert run_lakehouse(**settings)["success"]
    lakehouse = Lakehouse(str(tmp_path / "lakehouse"))
    uri = lakehouse.table_uri("trusted", "accelerometer_trusted")
    read_version = DeltaTable(uri).version()
    record = tmp_path / "lakehouse" / "verified" / MEMBERSHIP[0] / f"{MEMBERSHIP[1]}.json"
    before = record.read_bytes()
    made = {key: str(value) for key, value in lakehouse.latest_write(uri).items() if key.startswith("stedi.")}
    stray = pl.read_delta(uri).head(1).with_columns(user=pl.lit("Bob@test.com"))
    stray.write_delta(uri, mode="append")
    guard = guard_of(lakehouse, USERS_ARE_TRUSTED_CUSTOMERS, pseudonym_key(str(tmp_path / "lakehouse")))

    vouch(lakehouse, MEMBERSHIP[0], uri, guard, read_version, [TINY_DAY], made)
    vouch(lakehouse, MEMBERSHIP[0], uri, guard, None, None, made)

    assert record.read_bytes() == before
