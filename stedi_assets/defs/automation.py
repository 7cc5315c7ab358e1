"""Jobs, the schedule and the sensor: when the lakehouse refreshes without anyone pressing a button.

A refresh is two runs, started by the schedule every night or by `stedi_new_landing_files` when
the landing zone changes. The ingest (erasure log, landing and quarantine tables) is unpartitioned and
incremental by manifest. When it succeeds, `stedi_zones_after_ingest` launches the trusted and
curated zones over the range of event days the ingest changed (refresh_range): consent first, then
the day-partitioned reading tables, in one run, so a change of consent reaches every table at once.
"""

from __future__ import annotations

import hashlib
from typing import Any

import dagster as dg

from stedi_assets.defs.glue import CATALOG_GROUP
from stedi_assets.defs.incremental import refresh_range
from stedi_assets.defs.partitions import range_tags
from stedi_assets.defs.report import REPORT_GROUP
from stedi_assets.rules.catalog import CURATED, LANDING, PRIVACY, QUARANTINE, SOURCES, TRUSTED
from stedi_assets.rules.erasure import ERASURE_REQUESTS
from stedi_assets.storage.alerts import AlertNotSent, post_alert
from stedi_assets.storage.environment import alert_webhook
from stedi_assets.storage.errors import StorageError
from stedi_assets.storage.lakehouse import LandingZone
from stedi_assets.storage.resources import InvalidSettings, StediStorage

INGEST = dg.AssetSelection.groups(PRIVACY, LANDING, QUARANTINE)
"""The ingest: erasure log, landing and quarantine tables (unpartitioned, incremental by manifest)."""
ZONES = dg.AssetSelection.groups(TRUSTED, CURATED, REPORT_GROUP)
"""The trusted and curated zones: consent first, then the day-partitioned reading tables; then the
report that draws them."""

CATALOG = dg.AssetSelection.groups(CATALOG_GROUP)
"""The optional Glue Data Catalog registration: run only when asked (stedi_glue_catalog_job)."""
LAKEHOUSE = dg.AssetSelection.all() - CATALOG
"""Every table of every zone."""

lakehouse_job = dg.define_asset_job(
    "stedi_lakehouse_job",
    selection=LAKEHOUSE,
    description="Materializes every zone (landing, quarantine, trusted, curated) with its checks. The "
    "reading tables are partitioned by event day: a run targets a range of days and recomputes those "
    "whose landing readings changed.",
)
ingest_job = dg.define_asset_job(
    "stedi_ingest_job",
    selection=INGEST,
    description="Ingests new and changed landing files (and erasure requests); its success launches "
    "stedi_zones_job over the days it changed.",
)
zones_job = dg.define_asset_job(
    "stedi_zones_job",
    selection=ZONES,
    description="The trusted and curated zones with their checks, over a range of event days, then "
    "the report (curated_report).",
)
glue_catalog_job = dg.define_asset_job(
    "stedi_glue_catalog_job",
    selection=CATALOG,
    description="Registers every lakehouse table in the Glue Data Catalog (STEDI_GLUE_DATABASE) for "
    "Athena; only when asked, never on a schedule (a local lakehouse skips).",
)


@dg.schedule(
    name="stedi_daily_refresh",
    job=ingest_job,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    description="Ingests the landing zone every night at 03:00 UTC; the zones follow "
    "(stedi_zones_after_ingest).",
)
def daily_refresh(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest()


def landing_signature(landing: LandingZone) -> str | None:
    """A digest of every landing file's path, size, modification time and ETag: it changes exactly
    when a file is added, changed or removed (the ingest's manifest decides by the same facts);
    None when there is no file at all."""
    digest, files = hashlib.sha256(), 0
    for source in (*(source.name for source in SOURCES), ERASURE_REQUESTS):
        for file in landing.files(source, optional=True):
            digest.update(f"{file.uri}\0{file.size}\0{file.modified.isoformat()}\0{file.etag}\n".encode())
            files += 1
    return digest.hexdigest() if files else None


@dg.sensor(
    name="stedi_new_landing_files",
    job=ingest_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every minute, lists the landing zone (STEDI_LANDING_URI, a folder or an S3 prefix) and "
    "runs the ingest when a file was added, changed or removed since the last run it requested; the "
    "zones follow over the days that changed (stedi_zones_after_ingest). Lists only: reads no file.",
)
def new_landing_files(context: dg.SensorEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    try:
        signature = landing_signature(StediStorage().landing)
    except (StorageError, InvalidSettings) as error:
        return dg.SkipReason(f"cannot list the landing zone: {error}")
    if signature is None:
        return dg.SkipReason("the landing zone holds no file")
    if signature == context.cursor:
        return dg.SkipReason("no new, changed or removed landing file")
    context.update_cursor(signature)
    # no run key: the cursor already asks once per change, and a landing zone that returns to an
    # earlier state (a file added, then removed) must be ingested again, which a reused key forbids
    return dg.RunRequest()


def _storage_config(run_config: dict[str, Any]) -> dict[str, Any]:
    return dict(run_config.get("resources", {}).get("storage", {}).get("config", {}) or {})


CONSENT_STEPS = frozenset({"ingest_customer", "erasure_log"})
"""The ingest steps the consent decision is made from. When they succeeded, the zones run even if
another source failed: a withdrawal must not wait for a broken accelerometer or step trainer file."""


def zones_follow(failed_steps: set[str]) -> bool:
    """Whether the zones run after an ingest whose `failed_steps` failed (privacy first: a consent
    decision made from what was ingested is carried out, whatever else failed)."""
    return failed_steps.isdisjoint(CONSENT_STEPS)


def _zones_request(context: dg.RunStatusSensorContext) -> dg.RunRequest:
    run_config = dict(context.dagster_run.run_config)
    start, end = refresh_range(StediStorage(**_storage_config(run_config)).lakehouse)
    return dg.RunRequest(
        run_key=context.dagster_run.run_id, run_config=run_config, tags=range_tags(start, end)
    )


@dg.run_status_sensor(
    name="stedi_zones_after_ingest",
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[ingest_job],
    request_job=zones_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After each successful ingest, runs the trusted and curated zones over the days it "
    "changed (the newest day when it changed none, so a consent change still runs), with the "
    "ingest's storage and settings.",
)
def zones_after_ingest(context: dg.RunStatusSensorContext) -> dg.RunRequest:
    return _zones_request(context)


@dg.run_status_sensor(
    name="stedi_zones_after_failed_ingest",
    run_status=dg.DagsterRunStatus.FAILURE,
    monitored_jobs=[ingest_job],
    request_job=zones_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After an ingest that failed in a sensor source but ingested the customers and the "
    "erasure requests, runs the zones anyway: a withdrawal never waits for a broken reading file.",
)
def zones_after_failed_ingest(context: dg.RunStatusSensorContext) -> dg.RunRequest | dg.SkipReason:
    if not zones_follow(failed_steps(context.instance, context.dagster_run.run_id)):
        return dg.SkipReason("the customers or the erasure requests were not ingested")
    return _zones_request(context)


def failed_steps(instance: dg.DagsterInstance, run_id: str) -> set[str]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    return {record.event_log_entry.step_key or "" for record in records} - {""}


def failure_message(run: dg.DagsterRun, failed_steps: list[str]) -> str:
    """What an alert says of a failed run: the job, the run id and the steps that failed (names
    of code only: an error's text may quote data, so it stays in the run's own log)."""
    steps = ", ".join(failed_steps) if failed_steps else "before any step ran"
    return f"STEDI lakehouse: run {run.run_id} of {run.job_name} failed ({steps})."


@dg.run_failure_sensor(
    name="stedi_run_failures",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Logs every failed run of this code location and, when STEDI_ALERT_WEBHOOK is set, "
    "posts a short message to it (job, run id, failed steps; no data, no error text).",
)
def run_failures(context: dg.RunFailureSensorContext) -> None:
    failed = sorted(failed_steps(context.instance, context.dagster_run.run_id))
    message = failure_message(context.dagster_run, failed)
    context.log.error(message)
    url = alert_webhook()
    if url:
        try:
            post_alert(url, message)
        except AlertNotSent as error:
            context.log.warning(str(error))


jobs = [lakehouse_job, ingest_job, zones_job, glue_catalog_job]
schedules = [daily_refresh]
sensors = [new_landing_files, zones_after_ingest, zones_after_failed_ingest, run_failures]
