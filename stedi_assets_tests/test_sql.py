"""`stedi sql` over a real lakehouse: string filters, read-only, its formats, broken tables, no Dagster."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from deltalake import DeltaTable

from stedi_assets.cli import run_lakehouse
from stedi_assets.storage.lakehouse import Lakehouse
from stedi_assets.storage.sql import ONLY_QUERIES, connect, plain_types
from stedi_assets_tests.helpers import write_tiny_landing

STEDI = str(Path(sys.executable).parent / "stedi")
CURATED = "select customerName, serialNumber from customer_curated order by 1"


@pytest.fixture(scope="module")
def lakehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny landing data run through the lakehouse: Alice, Carol and Erin are trusted."""
    root = tmp_path_factory.mktemp("sql")
    summary = run_lakehouse(
        instance=dg.DagsterInstance.ephemeral(),
        landing_uri=str(write_tiny_landing(root / "landing")),
        lakehouse_uri=str(root / "lakehouse"),
    )
    assert summary["success"], summary["errors"]
    return root / "lakehouse"


def stedi_sql(lakehouse: Path, query: str, *args: str) -> subprocess.CompletedProcess:
    """The console script, with only the lakehouse the test gives it."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("STEDI_") and k != "DAGSTER_HOME"}
    return subprocess.run(
        [STEDI, "sql", query, "--lakehouse", str(lakehouse), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=inherited,
    )


def refused(keyword: str) -> str:
    return f"stedi sql: refused {keyword}: {ONLY_QUERIES}\n"


@pytest.mark.parametrize(
    ("where", "emails"),
    [
        ("email = 'Carol@test.com'", "Carol@test.com\n"),
        ("email like '%@test.com'", "Alice@test.com\nCarol@test.com\nErin@test.com\n"),
        ("email like 'E%' or email = 'Alice@test.com'", "Alice@test.com\nErin@test.com\n"),
        ("email = 'nobody@test.com'", ""),
    ],
)
def test_string_filters_return_the_exact_rows(lakehouse: Path, where: str, emails: str):
    done = stedi_sql(lakehouse, f"select email from customer_trusted where {where} order by 1", "--csv")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == "email\n" + emails


def test_string_view_columns_are_registered_as_plain_strings(lakehouse: Path):
    """A string_view column would turn off DuckDB's filter pushdown (older DuckDB: fail the filter)."""
    table = DeltaTable(str(lakehouse / "trusted" / "customer_trusted")).to_pyarrow_dataset()
    views = pa.schema([c.with_type(pa.string_view()) if c.type == pa.string() else c for c in table.schema])
    as_views = ds.FileSystemDataset(list(table.get_fragments()), views, table.format, table.filesystem)

    plain = plain_types(as_views)

    assert plain.schema == table.schema
    connection = duckdb.connect()
    connection.register("customer_trusted", plain)
    query = "select email from customer_trusted where email = 'Carol@test.com' or email like 'E%' order by 1"
    assert connection.sql(query).fetchall() == [("Carol@test.com",), ("Erin@test.com",)]
    equal = "select email from customer_trusted where email = 'Carol@test.com'"
    (_, plan), *_ = connection.sql(f"explain {equal}").fetchall()
    assert "Filters:" in plan  # evaluated in the Arrow scan


def test_copy_to_a_file_is_refused_and_writes_nothing(lakehouse: Path, tmp_path: Path):
    target = tmp_path / "out.csv"
    for query in (
        f"copy (select * from customer_trusted) to '{target}'",
        f"select 1; copy customer_trusted to '{target}' (format csv)",
        f"export database '{tmp_path / 'export'}'",
    ):
        done = stedi_sql(lakehouse, query)
        keyword = "EXPORT" if query.startswith("export") else "COPY"
        assert (done.returncode, done.stdout, done.stderr) == (2, "", refused(keyword))
    assert list(tmp_path.iterdir()) == []


def test_copy_over_a_delta_log_is_refused(lakehouse: Path):
    log = lakehouse / "trusted" / "customer_trusted" / "_delta_log"
    before = {path.name: path.read_bytes() for path in log.iterdir()}
    first = log / "00000000000000000000.json"

    done = stedi_sql(lakehouse, f"copy (select 1 as x) to '{first}' (format json)")

    assert (done.returncode, done.stdout, done.stderr) == (2, "", refused("COPY"))
    assert {path.name: path.read_bytes() for path in log.iterdir()} == before


def test_attach_is_refused(lakehouse: Path, tmp_path: Path):
    done = stedi_sql(lakehouse, f"attach '{tmp_path / 'other.duckdb'}' as other")
    assert (done.returncode, done.stdout, done.stderr) == (2, "", refused("ATTACH"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "statement",
    ["install httpfs", "load httpfs", "force install httpfs", "install httpfs from 'http://127.0.0.1:9'"],
)
def test_install_and_load_are_refused(lakehouse: Path, statement: str):
    done = stedi_sql(lakehouse, statement)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", refused(statement.split()[0].upper()))


@pytest.mark.parametrize(
    ("statement", "keyword"),
    [("set enable_external_access = true", "SET"), ("create table t as select 1", "CREATE")],
)
def test_settings_and_writes_are_refused(lakehouse: Path, statement: str, keyword: str):
    done = stedi_sql(lakehouse, statement)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", refused(keyword))


def test_a_query_reads_no_file_but_the_tables(lakehouse: Path):
    log = lakehouse / "trusted" / "customer_trusted" / "_delta_log" / "00000000000000000000.json"
    done = stedi_sql(lakehouse, f"select * from read_text('{log}')")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f'stedi sql: Permission Error: Cannot access file "{log}" - file system operations are '
        "disabled by configuration\n"
    )


def test_the_connection_itself_is_closed_to_the_outside(lakehouse: Path, tmp_path: Path):
    """Below the statement check, DuckDB refuses files, extensions and changes to its settings."""
    connection = connect(Lakehouse(str(lakehouse))).connection
    for statement in (
        f"copy (select 1) to '{tmp_path / 'out.csv'}'",
        f"attach '{tmp_path / 'other.duckdb'}'",
        "load httpfs",
    ):
        with pytest.raises(duckdb.PermissionException):
            connection.execute(statement)
    for statement in ("set enable_external_access = true", "set lock_configuration = false"):
        with pytest.raises(duckdb.InvalidInputException, match="the configuration has been locked"):
            connection.execute(statement)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("query", "line"),
    [
        ("selec 1", 'stedi sql: Parser Error: syntax error at or near "selec"'),
        (
            "select nope from customer_trusted",
            'stedi sql: Binder Error: Referenced column "nope" not found in FROM clause!',
        ),
        ("select * from nope", "stedi sql: Catalog Error: Table with name nope does not exist! (tables: "),
    ],
)
def test_a_query_error_is_one_line(lakehouse: Path, query: str, line: str):
    done = stedi_sql(lakehouse, query)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith(line)
    assert done.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            (),
            "┌──────────────┬──────────────┐\n"
            "│ customerName │ serialNumber │\n"
            "│   varchar    │   varchar    │\n"
            "├──────────────┼──────────────┤\n"
            "│ Alice A      │ S-A          │\n"
            "│ Erin E       │ S-E          │\n"
            "└──────────────┴──────────────┘\n"
            "\n",
        ),
        (("--format", "csv"), "customerName,serialNumber\nAlice A,S-A\nErin E,S-E\n"),
        (("--csv",), "customerName,serialNumber\nAlice A,S-A\nErin E,S-E\n"),
        (
            ("--format", "json"),
            '[{"customerName":"Alice A","serialNumber":"S-A"},'
            '{"customerName":"Erin E","serialNumber":"S-E"}]\n',
        ),
    ],
)
def test_each_format_exactly(lakehouse: Path, args: tuple[str, ...], expected: str):
    done = stedi_sql(lakehouse, CURATED, *args)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == expected


def test_json_is_one_array_of_row_objects(lakehouse: Path):
    done = stedi_sql(
        lakehouse, "select email, 1 as n, null as none from customer_trusted order by 1", "--format", "json"
    )
    assert json.loads(done.stdout) == [
        {"email": f"{name}@test.com", "n": 1, "none": None} for name in ("Alice", "Carol", "Erin")
    ]
    assert stedi_sql(lakehouse, "select 1 as n where false", "--format", "json").stdout == "[]\n"


def test_csv_writes_lists_and_structs_as_json(lakehouse: Path):
    done = stedi_sql(lakehouse, "select [1, 2] as l, {'k': 'v'} as s, null as n", "--format", "csv")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == 'l,s,n\n"[1,2]","{""k"":""v""}",\n'


def test_a_broken_table_is_left_out_with_one_line(lakehouse: Path, tmp_path: Path):
    broken = tmp_path / "lakehouse"
    shutil.copytree(lakehouse, broken)
    table = broken / "trusted" / "customer_trusted"
    (table / "_delta_log" / "00000000000000000000.json").write_text("not json{\n")
    line = f"stedi sql: customer_trusted is unreadable and left out: Storage error on {table}: "

    others = stedi_sql(broken, CURATED, "--csv")
    assert (others.returncode, others.stdout) == (0, "customerName,serialNumber\nAlice A,S-A\nErin E,S-E\n")
    assert others.stderr.startswith(line)
    assert others.stderr.count("\n") == 1

    named = stedi_sql(broken, "select * from customer_trusted", "--csv")
    assert (named.returncode, named.stdout, named.stderr) == (2, "", others.stderr)


def test_sql_loads_no_dagster(lakehouse: Path):
    probe = (
        "import sys\n"
        "from stedi_assets.cli import main\n"
        "code = main(['sql', 'select count(*) as n from customer_trusted', "
        f"'--lakehouse', {str(lakehouse)!r}, '--format', 'json'])\n"
        "print(code, sorted(m for m in sys.modules if m.split('.')[0] == 'dagster'))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert (done.stdout, done.stderr) == ('[{"n":3}]\n0 []\n', "")
