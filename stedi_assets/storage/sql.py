"""DuckDB over the lakehouse: every Delta table a view named after its asset.

This is the local stand-in for the Athena queries STEDI runs today. Tables are read through
delta-rs as Arrow datasets, so no DuckDB extension has to be downloaded. Nothing here imports
Dagster, so `stedi sql` starts fast.
"""

from __future__ import annotations

import duckdb

from stedi_assets.rules.catalog import TABLES
from stedi_assets.storage.errors import TableMissing
from stedi_assets.storage.lakehouse import Lakehouse


def connect(lakehouse: Lakehouse) -> tuple[duckdb.DuckDBPyConnection, list[str]]:
    """An in-memory DuckDB with a view per materialized table, and the names of those views."""
    connection = duckdb.connect()
    registered = []
    for name, declared in TABLES.items():
        try:
            dataset = lakehouse.open(lakehouse.table_uri(declared.zone, name)).to_pyarrow_dataset()
        except TableMissing:
            continue
        connection.register(name, dataset)
        registered.append(name)
    return connection, registered
