"""The daily partitions of the reading tables: one Dagster partition per UTC event day.

`accelerometer_trusted`, `step_trainer_trusted` and `machine_learning_curated` are partitioned by
the UTC day of their readings (`event_day`), as their Delta tables are. Every run of the lakehouse
job targets a range of days (`stedi run --partitions START..END`, a backfill from the UI, or every
day by default), and each reading table recomputes, of the days its range covers, those whose
input partitions changed since it was built. Backfills of a range run as one run
(`BackfillPolicy.single_run()`), so a range is one commit per table, not one per day.

The window starts at STEDI_FIRST_EVENT_DAY (default 2022-01-01) and ends today (UTC), so the day
that is filling up is a partition. Readings dated outside it (a device clock in 1970) belong to no
partition: every run recomputes those of their days that changed.
"""

from __future__ import annotations

import datetime as dt
import os
import warnings
from collections.abc import Iterable, Sequence

import dagster as dg

FIRST_EVENT_DAY_VARIABLE = "STEDI_FIRST_EVENT_DAY"
DEFAULT_FIRST_EVENT_DAY = "2022-01-01"
DAY_FORMAT = "%Y-%m-%d"
RANGE_START_TAG, RANGE_END_TAG = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
"""The run tags of a single-run backfill (Dagster sets them the same way for one from the UI)."""


def first_event_day(environ: dict[str, str] | None = None) -> str:
    """The first partition (STEDI_FIRST_EVENT_DAY, YYYY-MM-DD); a clear error for any other value."""
    value = (environ if environ is not None else os.environ).get(FIRST_EVENT_DAY_VARIABLE, "").strip()
    if not value:
        return DEFAULT_FIRST_EVENT_DAY
    try:
        return dt.datetime.strptime(value, DAY_FORMAT).date().isoformat()
    except ValueError:
        raise ValueError(f"{FIRST_EVENT_DAY_VARIABLE}={value!r} is not a day as YYYY-MM-DD") from None


EVENT_DAYS = dg.DailyPartitionsDefinition(
    start_date=first_event_day(), end_offset=1, timezone="UTC", fmt=DAY_FORMAT
)
"""The partitions of the reading tables: UTC days from STEDI_FIRST_EVENT_DAY through today."""

SINGLE_RUN = dg.BackfillPolicy.single_run()
"""A backfill of any range is one run, and each reading table one commit of its days. Every asset
has it, partitioned or not, so that `dg launch --partition-range` can run any selection as one run."""
# `backfill_policy` is a beta parameter of @asset; what it does here is tested, so say it once, not
# on every import of the code location
warnings.filterwarnings("ignore", message=".*`backfill_policy`.*", category=dg.BetaWarning)


class InvalidPartitions(ValueError):
    """A day range that is not `DAY`, `START..END` or `START..` within the partitions."""


def day_range(text: str) -> tuple[str, str]:
    """`START..END`, `START..` or `DAY` as the first and last partition key (checked against the
    partitions, with a message that says what is allowed)."""
    first, last = EVENT_DAYS.get_first_partition_key(), EVENT_DAYS.get_last_partition_key()
    assert first is not None and last is not None  # a daily window from a past day is never empty
    start, sep, end = text.strip().partition("..")
    start, end = start.strip() or first, (end.strip() or last) if sep else start.strip()
    for day in (start, end):
        try:
            dt.datetime.strptime(day, DAY_FORMAT)
        except ValueError:
            raise InvalidPartitions(f"{day!r} is not a day as YYYY-MM-DD (use START..END)") from None
        if not first <= day <= last:
            raise InvalidPartitions(
                f"{day} is outside the partitions {first}..{last} (the first is {FIRST_EVENT_DAY_VARIABLE})"
            )
    if start > end:
        raise InvalidPartitions(f"{start}..{end} ends before it starts")
    return start, end


def range_tags(start: str | None = None, end: str | None = None) -> dict[str, str]:
    """Run tags targeting the partitions START..END (default: every day), as a UI backfill sets."""
    first, last = EVENT_DAYS.get_first_partition_key(), EVENT_DAYS.get_last_partition_key()
    return {
        RANGE_START_TAG: start or str(first),
        RANGE_END_TAG: end or str(last),
    }


def in_window(days: Iterable[str | None]) -> set[str]:
    """The days (YYYY-MM-DD) that are partitions today; None (rows of no day) is none. The window's
    ends are worked out once for all the days (Dagster derives each from its cron schedule)."""
    first, last = EVENT_DAYS.get_first_partition_key(), EVENT_DAYS.get_last_partition_key()
    if first is None or last is None:
        return set()
    return {day for day in days if day is not None and first <= day <= last}


def targeted_days(context: dg.AssetExecutionContext) -> Sequence[str] | None:
    """The days a run of a reading table covers; None when it covers the whole window (then it also
    covers readings dated outside it). A window that ended yesterday at the run's start still counts
    as whole: a run launched before midnight UTC is not partial after it."""
    if not context.has_partition_key_range:
        return None
    keys = context.partition_key_range
    yesterday = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).date().isoformat()
    if keys.start <= str(EVENT_DAYS.get_first_partition_key()) and keys.end >= yesterday:
        return None
    return list(context.partition_keys)
