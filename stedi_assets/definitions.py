"""The STEDI code location: assets of every zone, their checks, storage and schedules."""

from __future__ import annotations

import dagster as dg
from dagster_aws.s3 import S3Resource

from stedi_assets.automation import jobs, schedules
from stedi_assets.checks import all_checks
from stedi_assets.curated import curated_assets
from stedi_assets.io_manager import DeltaLakehouseIOManager
from stedi_assets.landing import landing_assets
from stedi_assets.resources import LandingZone, StediSettings
from stedi_assets.trusted import trusted_assets


def build_resources(settings: StediSettings | None = None) -> dict[str, object]:
    """The resources of a run; the CLI and the tests pass explicit settings.

    Without them the settings are configured at launch, so run config (the launchpad's
    `resources.settings.config`) reaches the IO manager and the landing reader too.
    """
    settings = settings or StediSettings.configure_at_launch()
    s3 = S3Resource(max_attempts=5)
    return {
        "settings": settings,
        "s3": s3,
        "landing": LandingZone(settings=settings, s3=s3),
        "io_manager": DeltaLakehouseIOManager(settings=settings),
    }


all_assets = [*landing_assets, *trusted_assets, *curated_assets]

defs = dg.Definitions(
    assets=all_assets,
    asset_checks=all_checks,
    jobs=jobs,
    schedules=schedules,
    resources=build_resources(),
)
