"""DuckDB over the lakehouse: every Delta table a view named after its asset.

This is the local stand-in for the Athena queries STEDI runs today. Tables are read through
delta-rs as Arrow datasets, so no DuckDB extension has to be downloaded.
"""

from __future__ import annotations

import duckdb
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from stedi_assets.resources import storage_options, table_uri
from stedi_assets.schemas import TABLES


def connect(lakehouse_uri: str) -> tuple[duckdb.DuckDBPyConnection, list[str]]:
    """An in-memory DuckDB with a view per materialized table, and the names of those views."""
    connection = duckdb.connect()
    registered = []
    for name, declared in TABLES.items():
        uri = table_uri(lakehouse_uri, declared.zone, name)
        try:
            dataset = DeltaTable(uri, storage_options=storage_options(uri)).to_pyarrow_dataset()
        except TableNotFoundError:
            continue
        connection.register(name, dataset)
        registered.append(name)
    return connection, registered
