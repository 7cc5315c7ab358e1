"""Personal data that old versions left in a real Dagster instance is found, then redacted in place."""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEventType
from dagster._core.storage.compute_log_manager import ComputeIOType
from dagster._core.utils import make_new_run_id

from stedi_assets.defs.instance_audit import (
    COMPUTE_LOG,
    LOG_MESSAGE,
    PAGE_ROWS,
    Finding,
    find_values,
    purge_values,
)
from stedi_assets.storage.metadata import MASK

EMAIL = "Anna.Secret@Example.com"
NAME = "Élodie Brontë"
PHONE = "801-555-0199"
NEEDLES = [EMAIL.lower(), NAME.upper(), PHONE, "nobody.here@example.com", "anna.secret"]
BY_EMAIL, BY_NAME, BY_PHONE, ABSENT, EMAIL_PREFIX = range(len(NEEDLES))
CHECK = dg.AssetCheckKey(dg.AssetKey("customer"), "unique_emails")

MATERIALIZATION = DagsterEventType.ASSET_MATERIALIZATION.value
CHECK_EVALUATION = DagsterEventType.ASSET_CHECK_EVALUATION.value
STEP_FAILURE = DagsterEventType.STEP_FAILURE.value
RUN_FAILURE = DagsterEventType.RUN_FAILURE.value


@dg.asset(check_specs=[dg.AssetCheckSpec("unique_emails", asset="customer")])
def customer(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """What the old versions wrote: a log line, a preview table and check samples with personal data."""
    context.log.info(f"Read the customer line of {NAME}.")
    preview = f"| customerName | email |\n|---|---|\n| {NAME} | {EMAIL} |\n| Ben | ben@test.com |"
    return dg.MaterializeResult(
        metadata={"preview": dg.MetadataValue.md(preview), "dagster/row_count": 2},
        check_results=[
            dg.AssetCheckResult(
                check_name="unique_emails",
                passed=False,
                metadata={
                    "offending_rows": dg.MetadataValue.md(f"| email |\n|---|\n| {EMAIL} |"),
                    "duplicates": 1,
                },
                description="1 duplicate email",
            )
        ],
    )


@dg.asset
def phone_book() -> None:
    raise dg.Failure(description=f"No consent on file for {PHONE}.", metadata={"phone": PHONE, "attempts": 3})


@pytest.fixture(params=["sharded", "consolidated"])
def instance(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """The default SQLite storage (a shard per run and an index DB), and the one-table layout Postgres has."""
    overrides = {
        "consolidated": {
            "event_log_storage": {
                "module": "dagster._core.storage.event_log",
                "class": "ConsolidatedSqliteEventLogStorage",
                "config": {"base_dir": str(tmp_path / "history")},
            }
        }
    }.get(request.param)
    with dg.instance_for_test(temp_dir=str(tmp_path), overrides=overrides) as instance:
        assert instance.event_log_storage.is_run_sharded == (request.param == "sharded")
        yield instance


@pytest.fixture
def runs(instance: dg.DagsterInstance) -> tuple[str, str]:
    succeeded = dg.materialize([customer], instance=instance)
    failed = dg.materialize([phone_book], instance=instance, raise_on_error=False)
    assert succeeded.success and not failed.success
    return succeeded.run_id, failed.run_id


def stored_files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file() and ".db" in path.name]


def test_finds_each_value_where_the_old_versions_wrote_it(
    instance: dg.DagsterInstance, runs: tuple[str, str]
) -> None:
    loaded, failed = runs
    findings = set(find_values(instance, NEEDLES))

    def at(
        run_id: str, event_type: str, needle: int, asset: str | None, table: str = "event_logs"
    ) -> Finding:
        step = "customer" if run_id == loaded else ("phone_book" if event_type == STEP_FAILURE else None)
        return Finding(run_id, event_type, step, asset, needle, table)

    expected = {
        at(loaded, LOG_MESSAGE, BY_NAME, None),
        at(loaded, MATERIALIZATION, BY_EMAIL, "customer"),
        at(loaded, MATERIALIZATION, BY_NAME, "customer"),  # non-ASCII, stored \u-escaped, other case
        at(loaded, MATERIALIZATION, EMAIL_PREFIX, "customer"),  # a needle that starts another needle
        at(loaded, MATERIALIZATION, BY_EMAIL, "customer", "asset_keys"),  # the latest-materialization cache
        at(loaded, CHECK_EVALUATION, BY_EMAIL, "customer"),
        at(loaded, CHECK_EVALUATION, BY_EMAIL, "customer", "asset_check_executions"),
        at(failed, STEP_FAILURE, BY_PHONE, None),
        at(failed, RUN_FAILURE, BY_PHONE, None),  # the run failure repeats its first step failure
    }
    assert expected <= findings
    # Dagster's own log lines, context.log ones included, are also captured on disk for each step
    assert {(f.run_id, f.needle) for f in findings if f.event_type == COMPUTE_LOG} == {
        (loaded, BY_NAME),
        (failed, BY_PHONE),
    }
    assert all(f.needle != ABSENT for f in findings)
    assert {f.run_id for f in findings} == {loaded, failed}
    assert find_values(instance, ["", NEEDLES[ABSENT]]) == find_values(instance, []) == []


def test_purge_masks_the_values_and_keeps_the_history(
    instance: dg.DagsterInstance, runs: tuple[str, str], tmp_path: Path
) -> None:
    loaded, failed = runs
    changed = {  # each event once, however many copies; each captured log file once
        (f.run_id, f.event_type, f.step_key)
        for f in find_values(instance, NEEDLES)
        if f.table in ("event_logs", "compute_logs")
    }
    assert any(b"anna.secret" in path.read_bytes().lower() for path in stored_files(tmp_path))

    assert purge_values(instance, NEEDLES) == len(changed)
    assert find_values(instance, NEEDLES) == []
    assert purge_values(instance, NEEDLES) == 0
    for path in stored_files(tmp_path):  # not even in the databases' free pages or write-ahead logs
        content = path.read_bytes().lower()
        assert b"anna.secret" not in content and PHONE.encode() not in content, path

    assert {r.run_id: r.status for r in instance.get_runs()} == {
        loaded: dg.DagsterRunStatus.SUCCESS,
        failed: dg.DagsterRunStatus.FAILURE,
    }
    [logged] = [e for e in instance.all_logs(loaded) if not e.is_dagster_event]  # the context.log line
    assert logged.user_message == MASK

    latest = instance.get_latest_materialization_event(dg.AssetKey("customer"))
    [materialized] = instance.all_logs(loaded, of_type=DagsterEventType.ASSET_MATERIALIZATION)
    for event in (latest, materialized):
        assert event and event.asset_materialization
        assert event.asset_materialization.metadata["preview"] == dg.MetadataValue.text(MASK)
        assert event.asset_materialization.metadata["dagster/row_count"] == dg.MetadataValue.int(2)

    execution = instance.event_log_storage.get_latest_asset_check_execution_by_key([CHECK])[CHECK]
    assert execution.event and execution.event.dagster_event
    evaluation = execution.event.dagster_event.asset_check_evaluation_data
    assert evaluation.metadata["offending_rows"] == dg.MetadataValue.text(MASK)
    assert evaluation.metadata["duplicates"] == dg.MetadataValue.int(1)
    assert evaluation.description == "1 duplicate email" and not evaluation.passed

    [failure] = instance.all_logs(failed, of_type=DagsterEventType.STEP_FAILURE)
    assert failure.dagster_event
    data = failure.dagster_event.step_failure_data
    assert data.error and data.error.message == MASK
    assert data.user_failure_data and data.user_failure_data.description == MASK
    assert data.user_failure_data.metadata["phone"] == dg.MetadataValue.text(MASK)
    assert data.user_failure_data.metadata["attempts"] == dg.MetadataValue.int(3)


def test_every_row_of_every_shard_is_read(instance: dg.DagsterInstance) -> None:
    """More events than one page, in a run the run storage no longer lists: nothing relies on a limit."""

    @dg.asset
    def chatty(context: dg.AssetExecutionContext) -> None:
        for line in range(PAGE_ROWS + 10):
            context.log.info(f"line {line}")
        context.log.info(f"last line: {EMAIL}")

    run_id = dg.materialize([chatty], instance=instance).run_id
    assert len(instance.all_logs(run_id)) > PAGE_ROWS + 10
    instance.run_storage.delete_run(run_id)  # its events stay behind in the event log storage
    assert not instance.get_runs()

    assert [f for f in find_values(instance, [EMAIL]) if f.table == "event_logs"] == [
        Finding(run_id, LOG_MESSAGE, "chatty", None, 0, "event_logs")
    ]
    assert purge_values(instance, [EMAIL]) == 2  # the event, and the step's captured log
    assert find_values(instance, [EMAIL]) == []


def test_captured_step_output_is_found_and_masked_line_by_line(instance: dg.DagsterInstance) -> None:
    """What a step printed, kept on disk by the local compute log manager, is instance storage too.

    The step's output is written with the manager's own log streams, into the files its capture
    fills. (Its capture itself mirrors the files back with a `tail -F` subprocess, which once did not
    stop within 30 s of SIGTERM under CI: the audit of the files is what is tested here.)"""
    run_id = make_new_run_id()
    manager = instance.compute_log_manager
    log_key = manager.build_log_key_for_run(run_id, "customer")
    with manager.open_log_stream(log_key, ComputeIOType.STDOUT) as out:
        out.write(f"parsed the line of {EMAIL}\n42 rows accepted\n")
    with manager.open_log_stream(log_key, ComputeIOType.STDERR) as err:
        err.write(f"could not reach {PHONE}\n")
    captured = sorted(
        p for p in Path(instance.root_directory).rglob(f"{run_id}/**/*.*") if p.suffix != ".complete"
    )
    assert [p.suffix for p in captured] == [".err", ".out"]

    found = {f for f in find_values(instance, NEEDLES) if f.event_type == COMPUTE_LOG}
    assert {(f.run_id, f.needle, f.table) for f in found} == {
        (run_id, BY_EMAIL, "compute_logs"),
        (run_id, EMAIL_PREFIX, "compute_logs"),
        (run_id, BY_PHONE, "compute_logs"),
    }

    assert purge_values(instance, NEEDLES) >= 2
    assert [f for f in find_values(instance, NEEDLES) if f.event_type == COMPUTE_LOG] == []
    out, err = (p.read_text() for p in sorted(captured, key=lambda p: p.suffix != ".out"))
    assert out == f"{MASK}\n42 rows accepted\n"
    assert err == f"{MASK}\n"
