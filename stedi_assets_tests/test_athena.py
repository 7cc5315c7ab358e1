"""Athena and Glue: `stedi ddl` and the glue_catalog asset, against the Glue API of the moto server.

The moto server on 127.0.0.1 serves Glue on the same endpoint as S3 (AWS_ENDPOINT_URL).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import dagster as dg
import pytest

from stedi_assets.cli import main, run_config, run_lakehouse
from stedi_assets.definitions import defs
from stedi_assets.rules.catalog import ACCELEROMETER_TRUSTED, ERASURE_LOG, MACHINE_LEARNING_CURATED, TABLES
from stedi_assets.storage.athena import create_table, glue_client, register, table_input
from stedi_assets.storage.environment import S3Options
from stedi_assets.storage.errors import StorageError
from stedi_assets_tests.helpers import free_port, make_bucket, upload_tree

GLUE_JOB = "stedi_glue_catalog_job"


def _register(lakehouse: str, instance: dg.DagsterInstance | None = None) -> dg.ExecuteInProcessResult:
    """Materializes glue_catalog the way it is asked for: its own job."""
    return defs.resolve_job_def(GLUE_JOB).execute_in_process(
        run_config=run_config(lakehouse_uri=lakehouse), instance=instance, raise_on_error=False
    )


def _metadata(result: dg.ExecuteInProcessResult) -> dict:
    [event] = result.get_asset_materialization_events()
    return {name: value.value for name, value in event.materialization.metadata.items()}


def _glue_tables(database: str) -> dict[str, dict]:
    pages = boto3.client("glue").get_paginator("get_tables").paginate(DatabaseName=database)
    return {table["Name"]: table for page in pages for table in page["TableList"]}


def _columns(entries: list[dict]) -> list[tuple[str, str]]:
    return [(entry["Name"], entry["Type"]) for entry in entries]


def test_a_statement_quotes_its_names_and_escapes_its_location():
    assert create_table("odd`db", "customer_trusted", "s3://b/it's\\here") == (
        "CREATE EXTERNAL TABLE `odd``db`.`customer_trusted`\n"
        "LOCATION 's3://b/it\\'s\\\\here'\n"
        "TBLPROPERTIES ('table_type' = 'DELTA');"
    )


def test_ddl_spells_s3a_as_s3_and_takes_the_database_flag(capsys: pytest.CaptureFixture[str]):
    assert main(["ddl", "--lakehouse", "s3a://bucket/lh/", "--database", "analytics"]) == 0

    statements = capsys.readouterr().out.strip().split("\n\n")
    assert statements[0] == "CREATE DATABASE IF NOT EXISTS `analytics`;"
    assert statements[1] == (
        "CREATE EXTERNAL TABLE `analytics`.`customer_landing`\n"
        "LOCATION 's3://bucket/lh/landing/customer_landing'\n"
        "TBLPROPERTIES ('table_type' = 'DELTA');"
    )


def test_ddl_refuses_a_local_lakehouse_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["ddl", "--lakehouse", str(tmp_path)]) == 2

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"stedi ddl: The lakehouse {tmp_path} is a local folder; Athena and the Glue Data Catalog read "
        "tables on S3 only: point --lakehouse / STEDI_LAKEHOUSE_URI at s3://bucket/prefix.\n"
    )


def test_ddl_loads_no_dagster():
    probe = (
        "import sys; from stedi_assets.cli import main; main(['ddl', '--lakehouse', 's3://b/lh']); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'dagster'), file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.count("CREATE EXTERNAL TABLE") == len(TABLES)
    assert done.stderr.strip() == "[]"


def test_glue_columns_are_the_declared_ones_as_hive_types():
    readings = table_input(ACCELEROMETER_TRUSTED, "s3://b/lh/trusted/accelerometer_trusted")
    assert _columns(readings["StorageDescriptor"]["Columns"]) == [
        ("user", "string"),
        ("timestamp", "bigint"),
        ("x", "double"),
        ("y", "double"),
        ("z", "double"),
    ]
    assert _columns(readings["PartitionKeys"]) == [("event_day", "date")]
    assert readings["StorageDescriptor"]["Location"] == "s3://b/lh/trusted/accelerometer_trusted"
    assert (readings["TableType"], readings["Parameters"]) == (
        "EXTERNAL_TABLE",
        {"table_type": "DELTA", "EXTERNAL": "TRUE"},
    )
    assert _columns(table_input(ERASURE_LOG, "s3://x")["StorageDescriptor"]["Columns"]) == [
        ("hashed_id", "string"),
        ("kind", "string"),
        ("requested_at", "bigint"),
        ("found_in", "array<string>"),
    ]
    training = table_input(MACHINE_LEARNING_CURATED, "s3://x")["StorageDescriptor"]["Columns"]
    assert [name for name, _ in _columns(training)] == [
        "sensorreadingtime",
        "serialnumber",
        "distancefromobject",
        "subject_id",
        "timestamp",
        "x",
        "y",
        "z",
    ]  # the email column exists only with ml_identity=email


def test_glue_catalog_skips_a_local_lakehouse(tmp_path: Path):
    instance = dg.DagsterInstance.ephemeral()

    result = _register(str(tmp_path / "lakehouse"), instance)

    assert result.success
    assert result.get_asset_materialization_events() == []
    warnings = [e.user_message for e in instance.all_logs(result.run_id) if e.level == logging.WARNING]
    assert warnings == [
        f"glue_catalog skipped: The lakehouse {tmp_path / 'lakehouse'} is a local folder; Athena and the "
        "Glue Data Catalog read tables on S3 only: point --lakehouse / STEDI_LAKEHOUSE_URI at "
        "s3://bucket/prefix."
    ]


def test_an_unreachable_glue_endpoint_is_one_transient_line(monkeypatch: pytest.MonkeyPatch):
    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")

    with pytest.raises(StorageError) as raised:
        register(glue_client(S3Options()), "stedi", [])

    assert raised.value.message == f"Cannot reach the Glue Data Catalog at {endpoint} for database stedi."
    assert raised.value.transient


@pytest.mark.s3
def test_glue_catalog_registers_every_table_where_the_run_wrote_it(
    tiny_landing: Path, s3_env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    bucket = f"glue-{uuid.uuid4().hex[:12]}"
    make_bucket(bucket)
    upload_tree(tiny_landing, bucket, "landing")
    lakehouse = f"s3://{bucket}/lakehouse"
    summary = run_lakehouse(landing_uri=f"s3://{bucket}/landing", lakehouse_uri=lakehouse)
    assert summary["success"], summary["errors"]
    written = {name: info["uri"] for name, info in summary["tables"].items()}
    assert set(written) == set(TABLES)  # the lakehouse job leaves the catalog alone
    database = f"stedi_{uuid.uuid4().hex[:8]}"  # the server lives for the session
    monkeypatch.setenv("STEDI_GLUE_DATABASE", database)

    first = _register(lakehouse)

    assert first.success
    assert _metadata(first) == {
        "database": database,
        "created": sorted(TABLES),
        "updated": [],
        "dropped": [],
    }
    assert boto3.client("glue").get_database(Name=database)["Database"]["Name"] == database
    tables = _glue_tables(database)
    assert {name: table["StorageDescriptor"]["Location"] for name, table in tables.items()} == written
    assert {(t["TableType"], t["Parameters"]["table_type"]) for t in tables.values()} == {
        ("EXTERNAL_TABLE", "DELTA")
    }
    assert _columns(tables["machine_learning_curated"]["PartitionKeys"]) == [("event_day", "date")]

    # someone points a table elsewhere; the next registration puts every definition back
    moved = table_input(TABLES["customer_trusted"], f"s3://{bucket}/elsewhere")
    boto3.client("glue").update_table(DatabaseName=database, TableInput=moved)
    # a table this lakehouse registered under a name it no longer declares goes; an analyst's own
    # table and another lakehouse's stay
    glue = boto3.client("glue")
    for name, root in (("customer_trusted_v0", lakehouse), ("analyst_view", None), ("theirs", "s3://x/y")):
        old = table_input(TABLES["customer_trusted"], written["customer_trusted"], root)
        glue.create_table(DatabaseName=database, TableInput={**old, "Name": name})
    second = _register(lakehouse)

    assert second.success
    assert _metadata(second) == {
        "database": database,
        "created": [],
        "updated": sorted(TABLES),
        "dropped": ["customer_trusted_v0"],
    }
    assert set(_glue_tables(database)) == set(TABLES) | {"analyst_view", "theirs"}
    assert {t["Parameters"].get("stedi.lakehouse") for t in _glue_tables(database).values()} == {
        lakehouse,
        None,
        "s3://x/y",
    }
    again = {n: t for n, t in _glue_tables(database).items() if n in TABLES}
    assert again["customer_trusted"]["StorageDescriptor"]["Location"] == written["customer_trusted"]
    assert {name: table["StorageDescriptor"]["Location"] for name, table in again.items()} == written

    # Athena's own statements name the same locations, in the same database setting
    capsys.readouterr()
    assert main(["ddl", "--lakehouse", lakehouse]) == 0
    statements = capsys.readouterr().out.strip().split("\n\n")
    assert statements[0] == f"CREATE DATABASE IF NOT EXISTS `{database}`;"
    assert statements[1:] == [create_table(database, name, written[name]) for name in TABLES]
    assert sum(s.startswith("CREATE EXTERNAL TABLE") for s in statements) == len(TABLES) == 12
    assert (
        f"CREATE EXTERNAL TABLE `{database}`.`customer_trusted`\n"
        f"LOCATION 's3://{bucket}/lakehouse/trusted/customer_trusted'\n"
        "TBLPROPERTIES ('table_type' = 'DELTA');"
    ) in statements
