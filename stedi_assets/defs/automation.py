"""Jobs and schedules: when the lakehouse refreshes without anyone pressing a button."""

from __future__ import annotations

import dagster as dg

lakehouse_job = dg.define_asset_job(
    "stedi_lakehouse_job",
    selection=dg.AssetSelection.all(),
    description="Materializes every zone (landing, quarantine, trusted, curated) with its checks.",
)

daily_refresh = dg.ScheduleDefinition(
    name="stedi_daily_refresh",
    job=lakehouse_job,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    description="Rebuilds the lakehouse from the landing zone every night at 03:00 UTC.",
)

jobs = [lakehouse_job]
schedules = [daily_refresh]
