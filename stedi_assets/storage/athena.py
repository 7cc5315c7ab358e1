"""Athena and the AWS Glue Data Catalog: every declared table as a Delta table at its S3 location.

Athena reads a Delta table's schema and partitions from its log, so its DDL names only the location
and `table_type` (Athena refuses any other property for a Delta table). The Glue table input also
carries the declared columns as Hive types, for catalog browsers and Lake Formation. Nothing here
imports Dagster, so `stedi ddl` starts fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)

from stedi_assets.rules.catalog import TABLES, Table
from stedi_assets.storage.environment import S3Options
from stedi_assets.storage.errors import DENIED, StorageError, error_code
from stedi_assets.storage.lakehouse import LAKEHOUSE_SETTING, Lakehouse, is_s3

DEFAULT_GLUE_DATABASE = "stedi"
DELTA = {"table_type": "DELTA"}
"""The one table property Athena reads a Delta table by."""
REGISTERED_BY = "stedi.lakehouse"
"""The Glue table parameter naming the lakehouse (its S3 root) that registered the table: a later
registration of that lakehouse drops the tables it registered that are no longer declared, and
leaves every other table of the database alone."""
_SCALAR_TYPES = {
    pl.String: "string",
    pl.Int8: "tinyint",
    pl.Int16: "smallint",
    pl.Int32: "int",
    pl.Int64: "bigint",
    pl.Float32: "float",
    pl.Float64: "double",
    pl.Boolean: "boolean",
    pl.Date: "date",
    pl.Datetime: "timestamp",
    pl.Binary: "binary",
}
_THROTTLED = frozenset({"ThrottlingException", "InternalServiceException", "OperationTimeoutException"})


class NotOnS3(StorageError):
    """The lakehouse is a local folder: Athena and Glue read tables on S3 only."""

    def __init__(self, root: str):
        super().__init__(
            f"The lakehouse {root} is a local folder; Athena and the Glue Data Catalog read tables on S3 "
            f"only: point {LAKEHOUSE_SETTING} at s3://bucket/prefix.",
            transient=False,
        )


def locations(lakehouse: Lakehouse) -> dict[str, str]:
    """The S3 location of every declared table, by name (s3a:// spelt s3://, as Athena wants it)."""
    if not is_s3(lakehouse.root):
        raise NotOnS3(lakehouse.root)
    return {name: _as_s3(lakehouse.table_uri(table.zone, name)) for name, table in TABLES.items()}


def _as_s3(uri: str) -> str:
    return "s3://" + uri.split("://", 1)[1].rstrip("/")


def identifier(name: str) -> str:
    """A name in Athena DDL: in backticks, a backtick inside doubled (Hive's quoted identifiers)."""
    if not name:
        raise ValueError("an Athena name cannot be empty")
    return "`" + name.replace("`", "``") + "`"


def literal(text: str) -> str:
    """A string in Athena DDL: in single quotes, backslash and quote escaped (Hive's string literal)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def create_table(database: str, name: str, location: str) -> str:
    """Athena's statement registering the Delta table at `location` (its columns come from the log)."""
    properties = ", ".join(f"{literal(key)} = {literal(value)}" for key, value in DELTA.items())
    return (
        f"CREATE EXTERNAL TABLE {identifier(database)}.{identifier(name)}\n"
        f"LOCATION {literal(location)}\n"
        f"TBLPROPERTIES ({properties});"
    )


def ddl(lakehouse: Lakehouse, database: str) -> str:
    """The Athena statements creating the database and every declared table, one per paragraph."""
    statements = [f"CREATE DATABASE IF NOT EXISTS {identifier(database)};"]
    statements += [create_table(database, name, uri) for name, uri in locations(lakehouse).items()]
    return "\n\n".join(statements)


def hive_type(dtype: pl.DataType) -> str:
    """A Polars type as the Glue Data Catalog spells it (Hive DDL types)."""
    if isinstance(dtype, pl.List):
        return f"array<{hive_type(dtype.inner)}>"
    if isinstance(dtype, pl.Struct):
        return f"struct<{','.join(f'{f.name.lower()}:{hive_type(f.dtype)}' for f in dtype.fields)}>"
    if isinstance(dtype, pl.Decimal):
        return f"decimal({dtype.precision},{dtype.scale})"
    for polars_type, name in _SCALAR_TYPES.items():
        if isinstance(dtype, polars_type):
            return name
    raise ValueError(f"no Glue type for {dtype}")


def table_input(table: Table, location: str, lakehouse: str | None = None) -> dict[str, Any]:
    """Glue's TableInput of a declared table: an external Delta table, columns as declared.

    Column names are lowercase, as Hive and Athena keep them (Athena matches them to the Delta log
    case-insensitively); the partition column is a partition key, as in the Delta log; a column
    present only under some settings is left out (Athena reads the columns a version has from its
    log). No SerDe or input format: an engine that ignores `table_type` must not read the folder as
    plain Parquet (it would see files that no version holds). `lakehouse` (its S3 root) is recorded
    as REGISTERED_BY.
    """
    columns = {
        c.name: {"Name": c.name.lower(), "Type": hive_type(c.dtype), "Comment": c.description}
        for c in table.columns
        if not c.optional
    }
    return {
        "Name": table.name,
        "Description": table.description,
        "TableType": "EXTERNAL_TABLE",
        "Parameters": {**DELTA, "EXTERNAL": "TRUE", **({REGISTERED_BY: lakehouse} if lakehouse else {})},
        "StorageDescriptor": {
            "Columns": [column for name, column in columns.items() if name not in table.partition_by],
            "Location": location,
        },
        "PartitionKeys": [columns[name] for name in table.partition_by],
    }


def table_inputs(lakehouse: Lakehouse) -> list[dict[str, Any]]:
    where = locations(lakehouse)
    return [table_input(TABLES[name], uri, _as_s3(lakehouse.root)) for name, uri in where.items()]


def glue_client(s3: S3Options) -> Any:
    """A Glue client in the lakehouse's region; boto3 takes its endpoint from the standard variables
    (AWS_ENDPOINT_URL_GLUE, else AWS_ENDPOINT_URL), so an S3-only endpoint can be set apart."""
    import boto3  # here, as environment.boto3_client does: every run would pay for it otherwise

    return boto3.client(
        "glue", region_name=s3.region, config=Config(retries={"mode": "standard"}, connect_timeout=5)
    )


@dataclass
class Registered:
    """What one registration did to each table of the database."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


def register(client: Any, database: str, inputs: list[Mapping[str, Any]]) -> Registered:
    """Creates the Glue database if missing, then creates each table or replaces its definition, and
    drops the tables the same lakehouse registered before that are no longer declared (a renamed or
    removed table: Athena would otherwise keep answering from a folder no writer maintains)."""
    registered = Registered()
    try:
        client.create_database(
            DatabaseInput={"Name": database, "Description": "The STEDI lakehouse's Delta tables."}
        )
    except client.exceptions.AlreadyExistsException:
        pass
    except (BotoCoreError, ClientError) as error:
        raise _glue_failure(client, f"database {database}", error) from error
    for table in inputs:
        try:
            try:
                client.update_table(DatabaseName=database, TableInput=table)
                registered.updated.append(table["Name"])
            except client.exceptions.EntityNotFoundException:
                client.create_table(DatabaseName=database, TableInput=table)
                registered.created.append(table["Name"])
        except (BotoCoreError, ClientError) as error:
            raise _glue_failure(client, f"table {database}.{table['Name']}", error) from error
    lakehouses = {t["Parameters"].get(REGISTERED_BY) for t in inputs} - {None}
    declared = {t["Name"] for t in inputs}
    try:
        for page in client.get_paginator("get_tables").paginate(DatabaseName=database):
            for table in page["TableList"]:
                if (
                    table.get("Parameters", {}).get(REGISTERED_BY) in lakehouses
                    and table["Name"] not in declared
                ):
                    client.delete_table(DatabaseName=database, Name=table["Name"])
                    registered.dropped.append(table["Name"])
    except (BotoCoreError, ClientError) as error:
        raise _glue_failure(client, f"the tables of database {database}", error) from error
    return registered


def _glue_failure(client: Any, what: str, error: BotoCoreError | ClientError) -> StorageError:
    """A Glue failure in one sentence naming the database or table and what to fix."""
    endpoint = client.meta.endpoint_url
    if isinstance(error, (NoCredentialsError, PartialCredentialsError)):
        return StorageError(
            f"No AWS credentials for the Glue Data Catalog ({what}): "
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE).",
            False,
        )
    if isinstance(error, EndpointConnectionError):
        return StorageError(f"Cannot reach the Glue Data Catalog at {endpoint} for {what}.", True)
    code = error_code(error)
    if code in DENIED or code == "AccessDeniedException":
        return StorageError(
            f"Access to Glue {what} was denied ({code}): the credentials need glue:CreateDatabase, "
            "glue:CreateTable, glue:UpdateTable, glue:GetTables and glue:DeleteTable.",
            False,
        )
    message = error.response.get("Error", {}).get("Message") if isinstance(error, ClientError) else None
    return StorageError(
        f"Glue error on {what} at {endpoint}: {message or error} ({code or type(error).__name__})",
        code in _THROTTLED,
    )
