"""`stedi`: generate sample data, run the lakehouse through Dagster, query it with SQL."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stedi_assets.rules.transforms import ConsentPolicy, MlIdentity, MlJoin
from stedi_assets.storage.lakehouse import DEFAULT_LAKEHOUSE_URI, DEFAULT_LANDING_URI

if TYPE_CHECKING:
    import dagster as dg

JOB = "stedi_lakehouse_job"
STORAGE_FIELDS = ("landing_uri", "lakehouse_uri", "retention_hours")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stedi", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="write deterministic synthetic landing data")
    generate.add_argument("--out", default=DEFAULT_LANDING_URI, help="landing folder to write")
    generate.add_argument("--customers", type=int, default=200)
    generate.add_argument("--seed", type=int, default=42)

    run = commands.add_parser("run", help="materialize assets and their checks through Dagster")
    run.add_argument("--landing", help=f"landing root, folder or s3:// (default {DEFAULT_LANDING_URI})")
    run.add_argument("--lakehouse", help=f"lakehouse root, folder or s3:// (default {DEFAULT_LAKEHOUSE_URI})")
    run.add_argument("--select", default="*", help="Dagster asset selection, e.g. 'key:customer_trusted+'")
    run.add_argument(
        "--partitions",
        metavar="START..END",
        help="UTC event days of the reading tables to recompute, e.g. 2022-06-18..2022-06-30, "
        "2022-06-18.. or one day (default: every day; only days whose readings changed are rewritten)",
    )
    run.add_argument("--ml-join", choices=[m.value for m in MlJoin])
    run.add_argument(
        "--ml-identity",
        choices=[m.value for m in MlIdentity],
        help="subject_id (default: a keyed hash of the email) or email (also keep the email)",
    )
    run.add_argument(
        "--consent-policy",
        choices=[p.value for p in ConsentPolicy],
        help="which readings of a consenting customer are trusted (default any_time)",
    )
    run.add_argument(
        "--retention-hours",
        type=int,
        help="hours replaced table versions stay readable when a write removed no one (default 168)",
    )
    run.add_argument("--expectations", help="JSON file of exact row counts to check")
    run.add_argument("--max-reject-rate", type=float, help="share of rejected lines that fails a run")
    run.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    run.add_argument("--verbose", action="store_true", help="stream Dagster's event log to stderr")

    audit = commands.add_parser(
        "audit", help="prove no one without consent is in any retained table version or the Dagster instance"
    )
    audit.add_argument("--landing", help=f"landing root, folder or s3:// (default {DEFAULT_LANDING_URI})")
    audit.add_argument(
        "--lakehouse", help=f"lakehouse root, folder or s3:// (default {DEFAULT_LAKEHOUSE_URI})"
    )
    audit.add_argument(
        "--purge-instance",
        action="store_true",
        help="first redact such values from the Dagster instance at DAGSTER_HOME (stop dagster dev first)",
    )

    ddl = commands.add_parser("ddl", help="print Athena CREATE EXTERNAL TABLE statements for every table")
    ddl.add_argument("--lakehouse", help=f"lakehouse root on s3:// (default {DEFAULT_LAKEHOUSE_URI})")
    ddl.add_argument("--database", help="Athena (Glue) database (default STEDI_GLUE_DATABASE, else stedi)")

    sql = commands.add_parser("sql", help="query the lakehouse tables with DuckDB, read-only")
    sql.add_argument("query")
    sql.add_argument(
        "--format",
        choices=("table", "csv", "json"),
        default="table",
        help="table (default), CSV with a header, or one JSON array of row objects",
    )
    sql.add_argument("--csv", dest="format", action="store_const", const="csv", help="same as --format csv")
    sql.add_argument("--lakehouse", help=f"lakehouse root (default {DEFAULT_LAKEHOUSE_URI})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "generate":
        return _generate(args)
    if args.command == "run":
        return _run(args)
    if args.command == "audit":
        return _audit(args)
    if args.command == "ddl":
        return _ddl(args)
    return _sql(args)


def _generate(args: argparse.Namespace) -> int:
    from stedi_assets.generate import generate_landing

    with _terminal_status("stedi generate", f"writing {args.customers} customers' landing files"):
        counts = generate_landing(args.out, customers=args.customers, seed=args.seed)
    print(f"wrote {', '.join(f'{n} {source}' for source, n in counts.items())} lines under {args.out}")
    return 0


def run_config(log_level: str = "CRITICAL", **settings: Any) -> dict[str, Any]:
    """Run config of the lakehouse job: each setting given (not None) goes to the resource that owns it.

    Settings left out are filled from the STEDI_* environment when the run starts.
    """
    given = {name: getattr(value, "value", value) for name, value in settings.items() if value is not None}
    storage = {name: value for name, value in given.items() if name in STORAGE_FIELDS}
    behaviour = {name: value for name, value in given.items() if name not in STORAGE_FIELDS}
    return {
        "resources": {"storage": {"config": storage}, "settings": {"config": behaviour}},
        "loggers": {"console": {"config": {"log_level": log_level}}},
    }


def run_lakehouse(
    select: str | dg.AssetSelection = "*",
    instance: dg.DagsterInstance | None = None,
    log_level: str = "CRITICAL",
    partitions: str | None = None,
    on_phase: Callable[[str], None] = lambda _: None,
    **settings: Any,
) -> dict[str, Any]:
    """Runs the code location's own job in process (the selection with its checks); returns the summary.

    Two runs: the ingest (landing, quarantine and privacy zones), then the trusted and curated zones
    over the event days `partitions` (START..END; default: the days the ingest changed, known
    exactly once it ran: refresh_range), as one single-run backfill of that range.
    Both are recorded under the job's name in the instance, as runs launched from the UI are.
    """
    import dagster as dg

    from stedi_assets.definitions import defs
    from stedi_assets.defs.automation import INGEST, zones_follow
    from stedi_assets.defs.incremental import refresh_range
    from stedi_assets.defs.instance import process_tags, release_dead_runs
    from stedi_assets.defs.partitions import RANGE_END_TAG, RANGE_START_TAG, day_range, range_tags
    from stedi_assets.defs.settings import StediSettings
    from stedi_assets.storage.errors import StorageError
    from stedi_assets.storage.resources import StediStorage

    days = day_range(partitions) if partitions else None
    given = {name: getattr(value, "value", value) for name, value in settings.items() if value is not None}
    storage = StediStorage(**_given(STORAGE_FIELDS, given))  # InvalidSettings before any run
    StediSettings(**{name: value for name, value in given.items() if name not in STORAGE_FIELDS})
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    keys, checks = _selected(select, defs)
    ingest = INGEST.resolve(defs.resolve_asset_graph())
    instance = instance or _instance()
    release_dead_runs(instance)
    job, results = defs.resolve_job_def(JOB), []
    with _one_planned_event_per_asset(instance):
        for phase in ("ingest", "zones"):
            in_phase = {key for key in keys if (key in ingest) == (phase == "ingest")}
            phase_checks = {check for check in checks if (check.asset_key in ingest) == (phase == "ingest")}
            if not in_phase and not phase_checks:
                continue
            tags = {"stedi/launched_by": "stedi run", **process_tags()}
            if phase == "zones":
                try:
                    tags |= range_tags(*(days or refresh_range(storage.lakehouse)))
                except StorageError as error:
                    return summarize(*results, planning_error=f"planning the days to run: {error.message}")
            on_phase(
                "ingesting new landing files"
                if phase == "ingest"
                else f"trusted and curated zones, days {tags[RANGE_START_TAG]}..{tags[RANGE_END_TAG]}"
            )
            result = job.get_subset(
                asset_selection=in_phase, asset_check_selection=phase_checks
            ).execute_in_process(
                run_config=run_config(log_level, **settings),
                instance=instance,
                raise_on_error=False,
                tags=tags,
            )
            results.append(result)
            failed = {event.step_key for event in result.all_events if event.is_step_failure}
            if not result.success and not (phase == "ingest" and failed and zones_follow(failed)):
                break
    return summarize(*results)


PLANNED_EVENTS_AS_SUBSETS = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"


@contextmanager
def _one_planned_event_per_asset(instance: dg.DagsterInstance) -> Iterator[None]:
    """In an ephemeral instance, a run over a range of days records one planned event per asset
    instead of one per day (about half a second less for a whole build of 100 days). Dagster then does not
    mark the days of a failed run as failed: that instance is gone when `stedi run` ends, and the
    run's own summary names the failure. A persistent instance keeps Dagster's default."""
    if not instance.is_ephemeral or PLANNED_EVENTS_AS_SUBSETS in os.environ:
        yield
        return
    os.environ[PLANNED_EVENTS_AS_SUBSETS] = "1"
    try:
        yield
    finally:
        del os.environ[PLANNED_EVENTS_AS_SUBSETS]


def _given(names: Sequence[str], settings: dict[str, Any]) -> dict[str, Any]:
    return {name: settings[name] for name in names if settings.get(name) is not None}


class InvalidSelection(ValueError):
    pass


def _selected(select: str | dg.AssetSelection, defs: dg.Definitions) -> tuple[set[dg.AssetKey], set[Any]]:
    """The assets of the lakehouse job (with the multi-assets they need whole) and checks a selection
    names; the optional catalog assets are not in the job."""
    import dagster as dg

    from stedi_assets.defs.automation import LAKEHOUSE

    graph = defs.resolve_asset_graph()
    if isinstance(select, str) and select.strip() in ("", "*"):
        select = dg.AssetSelection.all()
    try:
        selection = select if isinstance(select, dg.AssetSelection) else dg.AssetSelection.from_string(select)
        keys = (selection & LAKEHOUSE).required_multi_asset_neighbors().resolve(graph)
        checks = selection.resolve_checks(graph)
    except (dg.DagsterError, ValueError) as error:
        raise InvalidSelection(str(error)) from None
    if not keys and not checks:
        raise InvalidSelection("it matches no asset")
    return set(keys), set(checks)


def _instance() -> dg.DagsterInstance:
    """The instance at DAGSTER_HOME so runs show in `dagster dev`; else ephemeral. A new one (no
    dagster.yaml) gets the project's instance settings: pool limits, run monitoring, no telemetry
    (and no first-use banner on the terminal)."""
    import dagster as dg

    home = os.environ.get("DAGSTER_HOME")
    if not home:
        return dg.DagsterInstance.ephemeral()
    os.makedirs(home, exist_ok=True)
    settings = Path(home) / "dagster.yaml"
    if not settings.exists():
        settings.write_bytes((files("stedi_assets") / "dagster.yaml").read_bytes())
    return dg.DagsterInstance.get()


def summarize(*results: dg.ExecuteInProcessResult, planning_error: str | None = None) -> dict[str, Any]:
    """What the runs did, in order: tables, check results, warnings for whoever runs them, one line
    per failure, retries."""
    from stedi_assets.storage.metadata import WARNING

    tables = {
        event.asset_key.to_user_string(): {
            "rows": event.materialization.metadata["dagster/row_count"].value,
            "uri": event.materialization.metadata["table_uri"].value,
        }
        for result in results
        for event in result.get_asset_materialization_events()
        if "table_uri" in event.materialization.metadata  # a table, not the report
    }
    checks = [
        {
            "asset": evaluation.asset_key.to_user_string(),
            "name": evaluation.check_name,
            "passed": evaluation.passed,
            "severity": evaluation.severity.value,
            "summary": evaluation.description,
        }
        for result in results
        for evaluation in result.get_asset_check_evaluations()
    ]
    warnings = [
        f"{event.asset_key.to_user_string()}: {event.materialization.metadata[WARNING].value}"
        for result in results
        for event in result.get_asset_materialization_events()
        if WARNING in event.materialization.metadata
    ]
    events = [event for result in results for event in result.all_events]
    errors = _step_errors(events) + ([planning_error] if planning_error else [])
    error_checks_passed = all(c["passed"] for c in checks if c["severity"] == "ERROR")
    return {
        "success": all(result.success for result in results) and error_checks_passed and not planning_error,
        "run_id": results[-1].run_id if results else None,
        "run_ids": [result.run_id for result in results],
        "tables": tables,
        "checks": checks,
        "warnings": warnings,
        "errors": errors,
        "retries": _retries(events),
    }


def _step_errors(events: Sequence[dg.DagsterEvent]) -> list[str]:
    """One readable line per failed step: the user's Failure text or the root exception, not a traceback.

    A step that exhausted its RetryPolicy reports the error of its last attempt.
    """
    last_error: dict[str, str] = {}
    failed = []
    for event in events:
        if event.is_step_up_for_retry:
            last_error[event.step_key] = _error_line(event.event_specific_data.error)
        elif event.is_step_failure:
            failure = event.step_failure_data
            if failure.user_failure_data and failure.user_failure_data.description:
                last_error[event.step_key] = failure.user_failure_data.description
            elif not failure.error.message.startswith("Exceeded max_retries"):
                last_error[event.step_key] = _error_line(failure.error)
            failed.append(event.step_key)
    lines = [f"{step}: {last_error.get(step, 'failed')}" for step in failed]
    for event in events:  # a run that failed before or outside its steps (resources, the plan)
        error = getattr(event.event_specific_data, "error", None)
        if error is not None and (event.is_resource_init_failure or (event.is_run_failure and not failed)):
            lines.append(f"run: {_error_line(error)}")
    return list(dict.fromkeys(lines))


def _retries(events: Sequence[dg.DagsterEvent]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in events:
        if event.is_step_up_for_retry:
            counts[event.step_key] = counts.get(event.step_key, 0) + 1
    return counts


def _error_line(error: Any) -> str:
    """The root error's first line: past Dagster's wrappers and the retry exception."""
    while error.cause is not None and (
        error.cls_name.startswith("Dagster") or error.cls_name.startswith("RetryRequested")
    ):
        error = error.cause
    line = error.message.strip().splitlines()[0]
    return re.sub(rf"^[\w.]+\.{re.escape(error.cls_name)}: ", f"{error.cls_name}: ", line)


def _run(args: argparse.Namespace) -> int:
    from stedi_assets.defs.partitions import InvalidPartitions
    from stedi_assets.storage.resources import InvalidSettings

    try:
        with _terminal_status("stedi run", "starting") as progress:
            summary = run_lakehouse(
                args.select,
                log_level="DEBUG" if args.verbose else "CRITICAL",
                partitions=args.partitions,
                on_phase=progress,
                landing_uri=args.landing,
                lakehouse_uri=args.lakehouse,
                ml_join=args.ml_join,
                ml_identity=args.ml_identity,
                consent_policy=args.consent_policy,
                retention_hours=args.retention_hours,
                expectations_file=args.expectations,
                max_reject_rate=args.max_reject_rate,
            )
    except InvalidSelection as error:
        print(f"stedi run: invalid --select {args.select!r}: {error}", file=sys.stderr)
        return 2
    except InvalidPartitions as error:
        print(f"stedi run: invalid --partitions {args.partitions!r}: {error}", file=sys.stderr)
        return 2
    except InvalidSettings as error:
        print(f"stedi run: invalid settings: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary, default=str))
    else:
        print(format_summary(summary))
    return 0 if summary["success"] else 1


ZONE_ORDER = ("privacy", "landing", "quarantine", "trusted", "curated")


@contextmanager
def _terminal_status(command: str, text: str) -> Iterator[Callable[[str], None]]:
    """A spinner saying what is being done, on stderr when it is a terminal; otherwise nothing (so
    that piped or captured output holds only the summary)."""
    if not sys.stderr.isatty():
        yield lambda _: None
        return
    from rich.console import Console

    with Console(stderr=True).status(f"{command}: {text}") as status:
        yield lambda phase: status.update(f"{command}: {phase}")


def format_summary(summary: dict[str, Any]) -> str:
    """Tables grouped by zone (landing -> trusted -> curated), then each check's result, then one
    line per failure."""
    from stedi_assets.rules.catalog import TABLES

    def zone(name: str) -> str:
        return TABLES[name].zone if name in TABLES else "other"

    def order(name: str) -> tuple[int, str]:
        return (ZONE_ORDER.index(zone(name)) if zone(name) in ZONE_ORDER else len(ZONE_ORDER), name)

    lines = [f"{'zone':<12}{'table':<26}{'rows':>9}  uri"]
    lines += [
        f"{zone(name):<12}{name:<26}{summary['tables'][name]['rows']:>9}  {summary['tables'][name]['uri']}"
        for name in sorted(summary["tables"], key=order)
    ]
    lines += ["", f"{'check':<58}severity  result"]
    for check in summary["checks"]:
        outcome = "pass" if check["passed"] else ("warn" if check["severity"] == "WARN" else "FAIL")
        label = f"{check['asset']}.{check['name']}"
        lines.append(f"{label:<58}{check['severity']:<10}{outcome}  {check['summary'] or ''}")
    lines += [f"warning: {warning}" for warning in summary.get("warnings", [])]
    for error in summary["errors"]:
        lines.append(f"error: {error}")
    lines.append("" if summary["success"] else "run FAILED")
    return "\n".join(lines).rstrip()


def _ddl(args: argparse.Namespace) -> int:
    """Refuses a local lakehouse (exit 2): Athena reads only S3, so its statements would be useless."""
    from stedi_assets.storage.athena import DEFAULT_GLUE_DATABASE, ddl
    from stedi_assets.storage.environment import settings_from_environment
    from stedi_assets.storage.errors import StorageError
    from stedi_assets.storage.lakehouse import Lakehouse

    given = {"lakehouse_uri": args.lakehouse, "glue_database": args.database}
    settings = settings_from_environment({name: value for name, value in given.items() if value}, given)
    try:
        statements = ddl(
            Lakehouse(settings.get("lakehouse_uri", DEFAULT_LAKEHOUSE_URI)),
            settings.get("glue_database", DEFAULT_GLUE_DATABASE),
        )
    except StorageError as error:
        print(f"stedi ddl: {error.message}", file=sys.stderr)
        return 2
    print(statements)
    return 0


def _audit(args: argparse.Namespace) -> int:
    """Exit 0 when nothing is found, 1 when anything is; people are named by keyed hash only."""
    from stedi_assets.defs.audit import excluded, instance_findings, purge_instance, table_findings
    from stedi_assets.storage.errors import StorageError
    from stedi_assets.storage.resources import StediStorage

    given = {"landing_uri": args.landing, "lakehouse_uri": args.lakehouse}
    storage = StediStorage(**{name: value for name, value in given.items() if value})
    try:
        key = storage.pseudonym
        who = excluded(storage.landing, key)
        tables = table_findings(storage.lakehouse, who, key)
    except StorageError as error:
        print(f"stedi audit: {error.message}", file=sys.stderr)
        return 2
    lines = [
        f"{f.table} version {f.version}: {f.identities} identities without consent "
        f"(keyed hashes {', '.join(h[:16] for h in f.sample)})"
        for f in tables
    ]
    home = os.environ.get("DAGSTER_HOME")
    if home:
        instance = _instance()
        if args.purge_instance:
            print(f"redacted {purge_instance(instance, who)} events in the Dagster instance at {home}")
        lines += [
            f"Dagster instance: run {f.run_id} {f.event_type} holds a value of {f.subject_id[:16]}"
            for f in instance_findings(instance, who)
        ]
    for subject, raw_files in sorted(who.raw_files.items()):
        print(
            f"erased {subject[:16]} still has lines in {', '.join(raw_files)}: erasing raw landing files is "
            "their owner's step"
        )
    where = f"{storage.lakehouse_uri}" + (f" and the Dagster instance at {home}" if home else "")
    print(f"audited {len(who.values)} customers without consent in {where}")
    print("\n".join(lines) if lines else "nothing found")
    return 1 if lines else 0


def _sql(args: argparse.Namespace) -> int:
    """Exit 2, with one line on stderr, for a refused statement, a failing query or no tables.

    A table that cannot be opened is left out with one line naming it; the others stay queryable.
    """
    import duckdb

    from stedi_assets.storage.environment import S3Options, settings_from_environment
    from stedi_assets.storage.lakehouse import Lakehouse
    from stedi_assets.storage.sql import Refused, as_csv, as_json, connect

    given = {"lakehouse_uri": args.lakehouse} if args.lakehouse else {}
    root = settings_from_environment(given, ["lakehouse_uri"]).get("lakehouse_uri", DEFAULT_LAKEHOUSE_URI)
    tables = connect(Lakehouse(root, S3Options.from_environment()))
    for name, reason in tables.unreadable.items():
        print(f"stedi sql: {name} is unreadable and left out: {reason}", file=sys.stderr)
    if not tables.names:
        if not tables.unreadable:
            print(f"stedi sql: no tables under {root}; run `stedi run` first", file=sys.stderr)
        return 2
    try:
        relation = tables.query(args.query)
        if relation is None:
            return 0
        if args.format == "csv":
            sys.stdout.write(as_csv(relation))
        elif args.format == "json":
            sys.stdout.write(as_json(relation))
        else:
            relation.show(max_rows=10_000, max_width=10_000)
    except Refused as error:
        print(f"stedi sql: {error}", file=sys.stderr)
        return 2
    except duckdb.Error as error:
        if tables.names_unreadable(error):
            return 2
        line = str(error).strip().splitlines()[0]
        hint = f" (tables: {', '.join(tables.names)})" if isinstance(error, duckdb.CatalogException) else ""
        print(f"stedi sql: {line}{hint}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
