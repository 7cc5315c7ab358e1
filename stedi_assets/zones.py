"""What every zone asset shares: kinds, storage retries and a write pool of its own."""

import dagster as dg

from stedi_assets.schemas import table

KINDS = {"polars", "delta"}
STORAGE_RETRY = dg.RetryPolicy(max_retries=3, delay=1.0, backoff=dg.Backoff.EXPONENTIAL)


def table_asset(name: str):
    """@dg.asset for the declared table `name`: its zone is the group, its description the table's.

    The pool `delta_<table>` lets an instance limit writers of one table to one step at a time.
    """
    declared = table(name)
    return dg.asset(
        name=name,
        group_name=declared.zone,
        kinds=KINDS,
        description=declared.description,
        retry_policy=STORAGE_RETRY,
        pool=f"delta_{name}",
    )
