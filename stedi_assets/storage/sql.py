"""DuckDB over the lakehouse, read-only: every Delta table a view named after its asset.

This is the local stand-in for the Athena queries STEDI runs today. Tables are read through
delta-rs as Arrow datasets, so no DuckDB extension has to be downloaded. Once they are registered
the connection is closed to the outside: external access off (no file read or written but the
tables, no database attached, no extension installed or loaded) and the configuration locked, so
no statement can turn it back on; and only queries run. Nothing here imports Dagster, so
`stedi sql` starts fast.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
from deltalake.exceptions import DeltaError

from stedi_assets.rules.catalog import TABLES
from stedi_assets.storage.errors import StorageError, TableMissing, classify
from stedi_assets.storage.lakehouse import LAKEHOUSE_SETTING, Lakehouse

QUERIES = frozenset({duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN})
"""The statements that run: SELECT (also WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE) and EXPLAIN."""
ONLY_QUERIES = "the lakehouse is read-only, only queries run (SELECT, WITH, DESCRIBE, SHOW, EXPLAIN ...)"


class Refused(Exception):
    """A statement that is not a query: `stedi sql` only reads the lakehouse."""


@dataclass(frozen=True)
class Tables:
    """A read-only DuckDB connection with a view per readable table."""

    connection: duckdb.DuckDBPyConnection
    names: list[str]
    """The views, in catalog order."""
    unreadable: dict[str, str] = field(default_factory=dict)
    """Tables that exist but cannot be opened (a corrupt log), each with one sentence saying why."""

    def query(self, text: str) -> duckdb.DuckDBPyRelation | None:
        """The result of `text`, evaluated lazily; Refused unless every statement in it is a query.

        duckdb.Error when the SQL is wrong or touches what the locked connection forbids.
        """
        for statement in self.connection.extract_statements(text):
            try:
                runs = statement.type in QUERIES
            except ValueError:  # a statement type this duckdb's Python API has no name for
                runs = False
            if not runs:
                keyword = statement.query.split(maxsplit=1)[0].upper()
                raise Refused(f"refused {keyword}: {ONLY_QUERIES}")
        return self.connection.sql(text)

    def names_unreadable(self, error: duckdb.Error) -> bool:
        """Whether a query failed because it names a table that was left out as unreadable."""
        return isinstance(error, duckdb.CatalogException) and any(
            f"table with name {name} does not exist" in str(error).lower() for name in self.unreadable
        )


def connect(lakehouse: Lakehouse) -> Tables:
    """An in-memory DuckDB with a view per materialized table, closed to the outside once they are in."""
    connection = duckdb.connect()
    names, unreadable = [], {}
    for name, declared in TABLES.items():
        uri = lakehouse.table_uri(declared.zone, name)
        try:
            dataset = lakehouse.open(uri).to_pyarrow_dataset()
        except TableMissing:
            continue
        except StorageError as error:
            unreadable[name] = error.message
            continue
        except (OSError, DeltaError) as error:
            unreadable[name] = classify(uri, error, LAKEHOUSE_SETTING, lakehouse.s3.endpoint).message
            continue
        connection.register(name, plain_types(dataset))
        names.append(name)
    connection.execute("SET enable_external_access = false")
    connection.execute("SET lock_configuration = true")
    return Tables(connection, names, unreadable)


def _plain(kind: pa.DataType) -> pa.DataType:
    """`kind` with large and view strings and binaries (also inside lists and structs) as plain ones."""
    if pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return pa.string()
    if pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind):
        return pa.binary()
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return pa.list_(kind.value_field.with_type(_plain(kind.value_type)))
    if pa.types.is_struct(kind):
        return pa.struct([member.with_type(_plain(member.type)) for member in kind])
    return kind


def plain_types(dataset: ds.Dataset) -> ds.Dataset:
    """The dataset read as plain strings: DuckDB pushes its filters into a scan of plain strings, and
    pyarrow, which evaluates them, has no kernel comparing a string_view column with a string."""
    schema = pa.schema([column.with_type(_plain(column.type)) for column in dataset.schema])
    if schema == dataset.schema or not isinstance(dataset, ds.FileSystemDataset):
        return dataset
    return ds.FileSystemDataset(
        list(dataset.get_fragments()),
        schema.with_metadata(dataset.schema.metadata),
        dataset.format,
        dataset.filesystem,
    )


def as_csv(relation: duckdb.DuckDBPyRelation) -> str:
    """CSV with a header; a list or struct value is written as JSON."""
    frame = relation.pl()
    nested = [name for name, kind in frame.schema.items() if kind.is_nested()]
    return frame.with_columns(
        pl.Series(name, [_json_text(value) for value in frame[name].to_list()], pl.String) for name in nested
    ).write_csv()


def _json_text(value: object) -> str | None:
    return None if value is None else json.dumps(value, default=str, separators=(",", ":"))


def as_json(relation: duckdb.DuckDBPyRelation) -> str:
    """One JSON array of row objects."""
    return relation.pl().write_json() + "\n"
