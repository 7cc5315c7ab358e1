"""The trusted zone through the code location's job: exact tables, the privacy guard, blocking checks."""

from __future__ import annotations

import shutil
import unicodedata
import uuid
from pathlib import Path

import boto3
import dagster as dg
import polars as pl
import pytest
from deltalake import DeltaTable

from stedi_assets.cli import run_lakehouse
from stedi_assets.rules import transforms
from stedi_assets.rules.identity import SUBJECT_ID, pseudonym
from stedi_assets.storage.environment import S3Options
from stedi_assets.storage.lakehouse import Lakehouse
from stedi_assets.storage.pseudonym import pseudonym_key
from stedi_assets_tests.helpers import T2, customer, make_bucket, upload_tree, write_jsonl


def _read(lakehouse: Path, zone: str, name: str) -> pl.DataFrame:
    return pl.read_delta(str(lakehouse / zone / name))


def test_tiny_landing_gives_exact_trusted_tables(tiny_landing: Path, tmp_path: Path):
    lakehouse = tmp_path / "lakehouse"
    summary = run_lakehouse(landing_uri=str(tiny_landing), lakehouse_uri=str(lakehouse))

    assert summary["success"], summary["errors"]
    rows = {name: info["rows"] for name, info in summary["tables"].items()}
    assert rows == {
        "erasure_log": 0,
        "customer_landing": 5,
        "accelerometer_landing": 4,
        "step_trainer_landing": 4,
        "customer_rejects": 0,
        "accelerometer_rejects": 0,
        "step_trainer_rejects": 0,
        "customer_trusted": 3,
        "accelerometer_trusted": 3,
        "customer_curated": 2,
        "step_trainer_trusted": 3,
        "machine_learning_curated": 5,
    }
    assert sorted(_read(lakehouse, "trusted", "customer_trusted")["email"]) == [
        "Alice@test.com",
        "Carol@test.com",
        "Erin@test.com",
    ]
    assert sorted(_read(lakehouse, "trusted", "accelerometer_trusted")["user"]) == [
        "Alice@test.com",
        "Alice@test.com",
        "Erin@test.com",
    ]
    assert sorted(_read(lakehouse, "trusted", "step_trainer_trusted")["serialNumber"]) == [
        "S-A",
        "S-A",
        "S-E",
    ]


def test_failing_blocking_check_stops_downstream(tiny_landing: Path, tmp_path: Path):
    lakehouse = tmp_path / "lakehouse"
    settings = {"landing_uri": str(tiny_landing), "lakehouse_uri": str(lakehouse)}
    assert run_lakehouse(**settings)["success"]
    trusted_uri = str(lakehouse / "trusted" / "customer_trusted")
    tampered = pl.read_delta(trusted_uri).with_columns(
        pl.when(pl.col("email") == "Carol@test.com")
        .then(None)
        .otherwise(pl.col("shareWithResearchAsOfDate"))
        .alias("shareWithResearchAsOfDate")
    )
    tampered.write_delta(trusted_uri, mode="overwrite")
    accel_version = DeltaTable(str(lakehouse / "trusted" / "accelerometer_trusted")).version()

    trusted = dg.AssetSelection.assets("customer_trusted")
    downstream_and_checks = (trusted.downstream() - trusted) | dg.AssetSelection.checks_for_assets(
        "customer_trusted"
    )
    summary = run_lakehouse(downstream_and_checks, **settings)

    consent = next(c for c in summary["checks"] if c["name"] == "consent_given")
    assert consent["passed"] is False
    assert consent["summary"] == (
        "1 trusted customers without current research consent; 3 trusted of 3 consenting customers in landing"
    )
    assert not summary["success"]
    assert "accelerometer_trusted" not in summary["tables"]
    assert DeltaTable(str(lakehouse / "trusted" / "accelerometer_trusted")).version() == accel_version


LEAKING_TABLES = [
    ("customer_trusted", "trusted", "email", "1 trusted customers without current research consent"),
    ("accelerometer_trusted", "trusted", "user", "1 rows whose user is not a trusted customer"),
    (
        "step_trainer_trusted",
        "trusted",
        "serialNumber",
        "1 rows whose serialNumber is not a curated customer's device",
    ),
    ("customer_curated", "curated", "email", "1 rows whose email is not a trusted customer"),
    (
        "machine_learning_curated",
        "curated",
        SUBJECT_ID,
        "1 rows whose subject_id is not a curated customer (by keyed hash)",
    ),
]
INTRUDER = "intruder@elsewhere.example"
NEXT_DAY = T2 + 86_400_000


def _erin_the_next_day(landing: Path) -> None:
    """New readings of a consenting customer on a new day: the next run recomputes that day, so the
    zone rules run again (a run with nothing new recomputes nothing)."""
    write_jsonl(
        landing / "accelerometer" / "accelerometer-2.json",
        [{"user": "Erin@test.com", "timestamp": NEXT_DAY, "x": 5.0, "y": 0.0, "z": -1.0}],
    )
    write_jsonl(
        landing / "step_trainer" / "step_trainer-2.json",
        [{"sensorReadingTime": NEXT_DAY, "serialNumber": "S-E", "distanceFromObject": 240}],
    )


RULE = {"step_trainer_trusted": "readings_of_devices"}
"""The zone rule an asset applies, where it is not named after the table (the Step Trainer readings
are selected part by part from devices decided once)."""


@pytest.mark.parametrize(("table", "zone", "column", "summary"), LEAKING_TABLES)
def test_a_transform_that_leaks_a_row_leaves_the_published_table_unchanged(
    tiny_landing: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, table, zone, column, summary
):
    """End to end: a bug in a zone rule adds a stranger's row; the IO manager verifies the staged
    table, refuses to commit it, and the table's Delta version and files stay as they were."""
    lakehouse = tmp_path / "lakehouse"
    settings = {"landing_uri": str(tiny_landing), "lakehouse_uri": str(lakehouse)}
    assert run_lakehouse(**settings)["success"]
    uri = lakehouse / zone / table
    before = DeltaTable(str(uri))
    version, files = before.version(), sorted(str(p.relative_to(uri)) for p in uri.rglob("*.parquet"))

    rule = getattr(transforms, RULE.get(table, table))
    # the training table names people by keyed hash: the stranger's, under the key the run uses
    leaked = pseudonym(INTRUDER, pseudonym_key(str(lakehouse)).secret) if column == SUBJECT_ID else INTRUDER

    def leaking(*args, **kwargs) -> pl.LazyFrame:
        frame = rule(*args, **kwargs)
        stranger = frame.head(1).with_columns(pl.lit(leaked).alias(column))
        return pl.concat([frame, stranger])

    monkeypatch.setattr(transforms, RULE.get(table, table), leaking)
    _erin_the_next_day(tiny_landing)
    if table == "customer_trusted":  # the decision is made again only when a customer record changed
        write_jsonl(tiny_landing / "customer" / "customer-2.json", [customer("Dan D", "S-D", None)])
    result = run_lakehouse(dg.AssetSelection.assets(table).upstream(), **settings)

    assert not result["success"]
    assert result["errors"] == [
        f"{table}: The consent contract is broken, so the table was not published: {summary}"
    ]
    assert DeltaTable(str(uri)).version() == version
    assert sorted(str(p.relative_to(uri)) for p in uri.rglob("*.parquet")) == files
    assert leaked not in pl.read_delta(str(uri))[column].to_list()


def canonical(value: str) -> str:
    """The documented canonical identity, in plain Python."""
    value = unicodedata.normalize("NFKC", value)
    return "".join(c for c in value if unicodedata.category(c) != "Cf").casefold().strip()


def spelled_otherwise(identity: str) -> str:
    """The same identity as a person might type it: fullwidth capitals and a zero-width space."""
    fullwidth = identity.upper().translate({code: code + 0xFEE0 for code in range(0x21, 0x7F)})
    return "\u200b" + fullwidth[:3] + "\u200b" + fullwidth[3:]


@pytest.mark.reference
def test_undated_tied_quarantined_and_respelled_withdrawals_reach_no_table(
    reference_landing: Path, tmp_path: Path
):
    """The adversary's repro on the reference data: consenting customers withdraw in ways that cannot
    be ordered or read, or under another spelling of their email; a stranger claims a device under
    another spelling of its serial. None of them may stay in any trusted or curated table."""
    landing = tmp_path / "landing"
    shutil.copytree(reference_landing, landing)
    for path in landing.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    customers = pl.concat(pl.read_ndjson(p) for p in sorted((landing / "customer").glob("*.json")))
    undated, tied, quarantined, respelled, escaped, shared = (
        customers.filter(pl.col("shareWithResearchAsOfDate") > 0)
        .unique("email", keep="first", maintain_order=True)
        .head(6)
        .rows(named=True)
    )
    withdrawals = [
        {
            "email": undated["email"],
            "serialNumber": undated["serialNumber"],
            "shareWithResearchAsOfDate": None,
        },
        tied | {"shareWithResearchAsOfDate": None},
        {"email": quarantined["email"], "shareWithResearchAsOfDate": False},
        respelled
        | {
            "email": spelled_otherwise(respelled["email"]),
            "lastUpdateDate": respelled["lastUpdateDate"] + 1,
            "shareWithResearchAsOfDate": None,
        },
        shared
        | {
            "email": "not.a.customer.yet@example.com",
            "serialNumber": spelled_otherwise(shared["serialNumber"]),
            "shareWithResearchAsOfDate": None,
        },
    ]
    write_jsonl(landing / "customer" / "zz-withdrawals.json", withdrawals)
    # a quarantined withdrawal whose email is written with a JSON escape for "@"
    escaped_email = escaped["email"].replace("@", "\\u0040")
    with (landing / "customer" / "zz-withdrawals.json").open("a") as file:
        file.write(f'{{"email": "{escaped_email}", "shareWithResearchAsOfDate": "withdrawn"}}\n')
    lakehouse = tmp_path / "lakehouse"

    summary = run_lakehouse(landing_uri=str(landing), lakehouse_uri=str(lakehouse))

    assert summary["errors"] == []
    assert summary["tables"]["customer_trusted"]["rows"] == 482 - 5
    assert summary["tables"]["customer_rejects"]["rows"] == 2
    gone = {canonical(c["email"]) for c in (undated, tied, quarantined, respelled, escaped)}
    serials = {canonical(c["serialNumber"]) for c in (undated, tied, quarantined, respelled, escaped, shared)}
    for zone, name, column in [
        ("trusted", "customer_trusted", "email"),
        ("curated", "customer_curated", "email"),
        ("trusted", "accelerometer_trusted", "user"),
    ]:
        present = {canonical(v) for v in _read(lakehouse, zone, name)[column]}
        assert len(present) > 400 and not gone & present, name
    # the training table names people by keyed hash only (under the key the run used)
    secret = pseudonym_key(str(lakehouse)).secret
    subjects = set(_read(lakehouse, "curated", "machine_learning_curated")[SUBJECT_ID])
    assert len(subjects) > 400 and not {pseudonym(g, secret) for g in gone} & subjects
    for zone, name in [("trusted", "step_trainer_trusted"), ("curated", "machine_learning_curated")]:
        present = {canonical(v) for v in _read(lakehouse, zone, name)["serialNumber"]}
        assert len(present) > 400 and not serials & present, name
    checks = {c["name"]: c for c in summary["checks"]}
    assert checks["consent_given"]["passed"]
    assert checks["customers_on_hold"]["summary"] == (
        "2 customers on hold: a quarantined customer line names them and no later valid record supersedes it"
    )
    assert checks["shared_serials_excluded"]["summary"].startswith("1 curated customers' serial numbers")


@pytest.mark.reference
@pytest.mark.parametrize(
    ("policy", "ml_join", "expected"),
    [
        ("any_time", "seed", (40_981, 482, 14_460, 43_681)),
        ("from_consent_date", "seed", (32_025, 464, 11_297, 34_253)),
        ("from_consent_date", "same_customer", (32_025, 464, 11_297, 32_025)),
    ],
)
def test_consent_policies_give_the_exact_reference_counts(
    reference_landing: Path, tmp_path: Path, policy: str, ml_join: str, expected: tuple[int, ...]
):
    lakehouse = tmp_path / "lakehouse"
    summary = run_lakehouse(
        landing_uri=str(reference_landing),
        lakehouse_uri=str(lakehouse),
        consent_policy=policy,
        ml_join=ml_join,
        expectations_file=str(Path(__file__).parents[2] / "stedi_assets/expectations/reference.json"),
    )

    assert summary["success"], summary["errors"]
    tables = ("accelerometer_trusted", "customer_curated", "step_trainer_trusted", "machine_learning_curated")
    assert tuple(summary["tables"][t]["rows"] for t in tables) == expected
    assert summary["tables"]["customer_trusted"]["rows"] == 482
    # each table's commit records the rules it was made under
    for zone, name in [("trusted", "customer_trusted"), ("curated", "machine_learning_curated")]:
        commit = DeltaTable(str(lakehouse / zone / name)).history(1)[0]
        assert (commit["stedi.consent_policy"], commit["stedi.ml_join"]) == (policy, ml_join)
    if policy == "from_consent_date":
        readings = pl.read_delta(str(lakehouse / "trusted" / "accelerometer_trusted"))
        since = pl.read_delta(str(lakehouse / "trusted" / "customer_trusted")).select(
            user="email", since="shareWithResearchAsOfDate"
        )
        assert readings.join(since, on="user").filter(pl.col("timestamp") < pl.col("since")).height == 0


@pytest.mark.s3
@pytest.mark.parametrize(("table", "zone", "column", "summary"), LEAKING_TABLES)
def test_a_leaking_transform_leaves_the_table_unchanged_on_s3(
    tiny_landing: Path, s3_env: str, monkeypatch: pytest.MonkeyPatch, table, zone, column, summary
):
    """The same on a bucket of the S3 test server: no commit, and no staged object left behind."""
    bucket = f"leak-{uuid.uuid4().hex[:12]}"
    make_bucket(bucket)
    upload_tree(tiny_landing, bucket, "landing")
    lakehouse = f"s3://{bucket}/lakehouse"
    settings = {"landing_uri": f"s3://{bucket}/landing", "lakehouse_uri": lakehouse}
    assert run_lakehouse(**settings)["success"]
    store = Lakehouse(lakehouse, S3Options.from_environment())
    uri = store.table_uri(zone, table)
    client = boto3.client("s3")

    def objects() -> list[str]:
        listed = client.list_objects_v2(Bucket=bucket, Prefix=f"lakehouse/{zone}/{table}/")
        keys = (o["Key"] for o in listed.get("Contents", []))
        return sorted(k for k in keys if k.endswith(".parquet") and "/_delta_log/" not in k)

    version, before = store.open(uri).version(), objects()
    rule = getattr(transforms, RULE.get(table, table))
    leaked = pseudonym(INTRUDER, pseudonym_key(lakehouse).secret) if column == SUBJECT_ID else INTRUDER

    def leaking(*args, **kwargs) -> pl.LazyFrame:
        frame = rule(*args, **kwargs)
        return pl.concat([frame, frame.head(1).with_columns(pl.lit(leaked).alias(column))])

    monkeypatch.setattr(transforms, RULE.get(table, table), leaking)
    _erin_the_next_day(tiny_landing)
    upload_tree(tiny_landing, bucket, "landing")
    result = run_lakehouse(dg.AssetSelection.assets(table).upstream(), **settings)

    assert objects(), "the table has data files"
    assert result["errors"] == [
        f"{table}: The consent contract is broken, so the table was not published: {summary}"
    ]
    assert store.open(uri).version() == version
    assert objects() == before
    assert leaked not in store.scan(uri).collect()[column].to_list()
