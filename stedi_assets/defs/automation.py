"""Jobs, the schedule and the sensors: when the lakehouse refreshes without anyone pressing a button.

`stedi_new_landing_files` lists the landing zone every minute. New or changed reading files
(accelerometer, step trainer) are ingested alone, and declarative automation (defs/conditions.py,
`stedi_zones_automation`) carries them through the trusted and curated zones over the days they
changed. A change of the customers or the erasure requests, and the nightly schedule, run the whole
lakehouse in one run instead (ingest, consent, every table downstream, over the days that changed):
privacy first, a consent decision reaches every table at once, not day by day or asset by asset.
"""

from __future__ import annotations

import hashlib
import json
import warnings

import dagster as dg

from stedi_assets.defs.glue import CATALOG_GROUP
from stedi_assets.defs.incremental import refresh_range
from stedi_assets.defs.partitions import range_tags
from stedi_assets.defs.report import REPORT_GROUP
from stedi_assets.rules.catalog import CURATED, CUSTOMER, LANDING, PRIVACY, QUARANTINE, SOURCES, TRUSTED
from stedi_assets.rules.erasure import ERASURE_REQUESTS
from stedi_assets.storage.alerts import AlertNotSent, post_alert
from stedi_assets.storage.environment import alert_webhook
from stedi_assets.storage.errors import StorageError
from stedi_assets.storage.lakehouse import Lakehouse, LandingZone
from stedi_assets.storage.manifest import signature
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
    description="Ingests new and changed landing files (and erasure requests). The sensor runs it "
    "for new reading files alone; declarative automation then carries them downstream.",
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


CONSENT_SOURCES = frozenset({CUSTOMER.name, ERASURE_REQUESTS})
"""The landing folders the consent decision is made from: a change runs the whole lakehouse."""


def landing_signatures(landing: LandingZone) -> dict[str, str]:
    """Per landing folder that holds files, a digest of every file's path and its manifest signature
    (size, modification time, ETag): it changes exactly when a file is added, changed or removed, by
    the facts the ingest's manifest decides by. An S3 prefix is listed with dagster-aws (`get_objects`)."""
    from dagster_aws.s3.sensor import get_objects  # here, not at load: every run would import dagster-aws

    signatures = {}
    for source in (*(source.name for source in SOURCES), ERASURE_REQUESTS):
        digest, files = hashlib.sha256(), 0
        for file in landing.files(source, optional=True, list_objects=get_objects):
            digest.update(json.dumps([file.uri, signature(file)], sort_keys=True).encode() + b"\n")
            files += 1
        if files:
            signatures[source] = digest.hexdigest()
    return signatures


def _whole_lakehouse(lakehouse: Lakehouse) -> dg.RunRequest:
    """One run of every zone over the days that changed so far (refresh_range); days a file ingested
    in the same run adds are recorded as pending and then requested by automation."""
    return dg.RunRequest(job_name=lakehouse_job.name, tags=range_tags(*refresh_range(lakehouse)))


@dg.schedule(
    name="stedi_daily_refresh",
    job=lakehouse_job,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    description="Every night at 03:00 UTC, one run of every zone over the days that changed: whatever "
    "the sensor or automation missed is caught up, and consent is decided again.",
)
def daily_refresh(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    try:
        return _whole_lakehouse(StediStorage().lakehouse)
    except (StorageError, InvalidSettings) as error:
        return dg.SkipReason(f"cannot read the lakehouse: {error}")


def _signatures_seen(cursor: str | None) -> dict[str, str] | None:
    """The per-folder signatures a cursor holds; None for no cursor or one this sensor did not write
    (an earlier release kept one digest of everything): then every zone runs, as on a first tick."""
    try:
        seen = json.loads(cursor) if cursor else None
    except ValueError:
        return None
    return seen if isinstance(seen, dict) else None


def _selection(sources: set[str]) -> list[dg.AssetKey]:
    return [
        dg.AssetKey(table.name)
        for source in SOURCES
        if source.name in sources
        for table in (source.landing, source.rejects)
    ]


@dg.sensor(
    name="stedi_new_landing_files",
    jobs=[lakehouse_job, ingest_job],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every minute, lists the landing zone (STEDI_LANDING_URI, a folder or an S3 prefix; "
    "reads no file). New or changed reading files: ingests just their sources, and automation carries "
    "them downstream over the days they changed. Customer files or erasure requests (or the first "
    "tick): one run of every zone.",
)
def new_landing_files(context: dg.SensorEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    try:
        storage = StediStorage()
        signatures = landing_signatures(storage.landing)
        if not signatures:
            return dg.SkipReason("the landing zone holds no file")
        seen = _signatures_seen(context.cursor)
        changed = {
            source
            for source in {*signatures, *(seen or {})}
            if seen is None or signatures.get(source) != seen.get(source)
        }
        if not changed:
            return dg.SkipReason("no new, changed or removed landing file")
        # no run key: the cursor already asks once per change, and a landing zone that returns to an
        # earlier state (a file added, then removed) must be ingested again, which a reused key forbids
        if seen is None or changed & CONSENT_SOURCES:
            request = _whole_lakehouse(storage.lakehouse)
        else:
            request = dg.RunRequest(job_name=ingest_job.name, asset_selection=_selection(changed))
    except (StorageError, InvalidSettings) as error:
        return dg.SkipReason(f"cannot list the landing zone: {error}")
    context.update_cursor(json.dumps(signatures, sort_keys=True))
    return request


# custom conditions (defs/conditions.py) need the beta `use_user_code_server`; what it does is tested
warnings.filterwarnings("ignore", message=".*`use_user_code_server`.*", category=dg.BetaWarning)
# Dagster's own check of a backfill request calls its deprecated AssetSelection.keys: not ours to fix
warnings.filterwarnings(
    "ignore", message="Function `AssetSelection.keys` is deprecated", category=DeprecationWarning
)
zones_automation = dg.AutomationConditionSensorDefinition(
    "stedi_zones_automation",
    target=ZONES,
    use_user_code_server=True,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Declarative automation of the trusted and curated zones (defs/conditions.py): new "
    "readings flow downstream over the days they changed; several days of a table are one backfill, run "
    "as one run (BackfillPolicy.single_run).",
)


CONSENT_STEPS = frozenset({"ingest_customer", "erasure_log"})
"""The ingest steps the consent decision is made from. When they succeeded, the zones run even if
another source failed: a withdrawal must not wait for a broken accelerometer or step trainer file."""


def zones_follow(failed_steps: set[str]) -> bool:
    """Whether the zones run after an ingest whose `failed_steps` failed (privacy first: a consent
    decision made from what was ingested is carried out, whatever else failed)."""
    return failed_steps.isdisjoint(CONSENT_STEPS)


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
sensors = [new_landing_files, zones_automation, run_failures]
