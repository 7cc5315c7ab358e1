"""The Glue Data Catalog registration: every lakehouse table, so Athena can query it.

Optional: it runs only when asked (`stedi_glue_catalog_job`, or selected in the UI), never in
`stedi_lakehouse_job`, and on a local lakehouse it skips with one warning line.
"""

# No `from __future__ import annotations` here: Dagster resolves resources from real annotations.
from collections.abc import Iterator

import dagster as dg
from pydantic import Field

from stedi_assets.defs.factories import STORAGE_RETRY
from stedi_assets.rules.catalog import TABLES
from stedi_assets.storage.athena import DEFAULT_GLUE_DATABASE, NotOnS3, glue_client, register, table_inputs
from stedi_assets.storage.errors import StorageError
from stedi_assets.storage.resources import EnvironmentDefaults, StediStorage, as_failure

CATALOG_GROUP = "catalog"


class GlueCatalog(EnvironmentDefaults):
    """Where the tables are registered: a database of the Glue Data Catalog in the lakehouse's region
    (AWS_REGION), reached through the standard AWS variables."""

    glue_database: str = Field(
        DEFAULT_GLUE_DATABASE,
        min_length=1,
        description="Glue database the lakehouse tables are registered in, created if missing "
        "(env STEDI_GLUE_DATABASE).",
    )


@dg.asset(
    group_name=CATALOG_GROUP,
    kinds={"glue", "athena"},
    deps=list(TABLES),
    output_required=False,
    retry_policy=STORAGE_RETRY,
    pool="glue_catalog",
)
def glue_catalog(
    context: dg.AssetExecutionContext, storage: StediStorage, glue: GlueCatalog
) -> Iterator[dg.MaterializeResult]:
    """Every lakehouse table registered in the Glue Data Catalog as a Delta table at its S3 location,
    so Athena queries it; skipped when the lakehouse is a local folder."""
    try:
        inputs = table_inputs(storage.lakehouse)
    except NotOnS3 as error:
        context.log.warning(f"glue_catalog skipped: {error.message}")
        return
    try:
        registered = register(glue_client(storage.s3), glue.glue_database, inputs)
    except StorageError as error:
        raise as_failure(error) from error
    yield dg.MaterializeResult(
        metadata={
            "database": glue.glue_database,
            "created": sorted(registered.created),
            "updated": sorted(registered.updated),
            "dropped": sorted(registered.dropped),
        }
    )
