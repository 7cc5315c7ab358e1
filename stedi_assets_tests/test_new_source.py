"""Adding a source is one declaration plus its rules: shown with a throwaway fourth source.

The heart-rate source below is declared once; its landing and quarantine tables, ingest asset and
table-level checks are generated, and a trusted table over it needs a Table, a rule and an asset.
These are the places the README's "Adding a source" section lists, and no others.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl

from stedi_assets.cli import run_config
from stedi_assets.definitions import defs
from stedi_assets.defs.factories import membership_part, table_asset, table_check_step
from stedi_assets.defs.landing import source_definitions
from stedi_assets.defs.partitions import range_tags
from stedi_assets.rules.catalog import TRUSTED, Column, Source, Table
from stedi_assets.rules.contracts import Membership
from stedi_assets.rules.identity import KEY, keys, with_key
from stedi_assets_tests.helpers import T1, TINY_DAY, write_jsonl, write_tiny_landing

HEART_RATE = Source(
    "heart_rate",
    "Every heart-rate reading from a chest strap, as delivered, with its source line.",
    (
        Column("user", pl.String(), "Email of the strap's owner.", pii=True),
        Column("timestamp", pl.Int64(), "Reading time (epoch milliseconds)."),
        Column("bpm", pl.Int64(), "Beats per minute."),
    ),
    required=("user", "timestamp"),
    identities=("user",),
    event_time="timestamp",
)
HEART_RATE_TRUSTED = Table(
    "heart_rate_trusted",
    TRUSTED,
    "Heart-rate readings of research-consenting customers only.",
    HEART_RATE.columns,
    subset_of=HEART_RATE.landing.name,
)
USERS_CONSENT = Membership(
    "users_are_trusted_customers",
    "heart_rate_trusted",
    "user",
    "customer_trusted",
    "email",
    "a trusted customer",
)


@table_asset(HEART_RATE_TRUSTED)
def heart_rate_trusted(heart_rate_landing: pl.LazyFrame, customer_trusted: pl.LazyFrame) -> pl.LazyFrame:
    readings = with_key(heart_rate_landing, "user").join(keys(customer_trusted, "email"), on=KEY, how="semi")
    return readings.select(list(HEART_RATE_TRUSTED.dtypes))


def extended_definitions() -> dg.Definitions:
    ingest, checks = source_definitions(HEART_RATE)
    return dg.Definitions.merge(
        defs,
        dg.Definitions(
            assets=[ingest, heart_rate_trusted],
            asset_checks=[*checks, table_check_step(HEART_RATE_TRUSTED, [membership_part(USERS_CONSENT)])],
        ),
    )


def test_a_declared_source_gets_its_tables_assets_and_checks():
    graph = extended_definitions().resolve_asset_graph()
    new = {"heart_rate_landing", "heart_rate_rejects", "heart_rate_trusted"}
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == new | {
        k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()
    }
    assert {graph.get(dg.AssetKey(name)).group_name for name in sorted(new)} == {
        "landing",
        "quarantine",
        "trusted",
    }
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert {c for c in checks if c[0].startswith("heart_rate")} == {
        ("heart_rate_landing", "lines_conserved"),
        ("heart_rate_landing", "reject_rate"),
        ("heart_rate_landing", "schema_as_declared"),
        ("heart_rate_landing", "row_count"),
        ("heart_rate_rejects", "schema_as_declared"),
        ("heart_rate_trusted", "schema_as_declared"),
        ("heart_rate_trusted", "row_count"),
        ("heart_rate_trusted", "no_duplicate_rows"),
        ("heart_rate_trusted", "no_profile_columns"),
        ("heart_rate_trusted", "users_are_trusted_customers"),
    }
    assert len(checks) == 45 + 10


def test_the_fourth_source_runs_through_the_lakehouse_job(tmp_path: Path):
    landing = write_tiny_landing(tmp_path / "landing")
    write_jsonl(
        landing / "heart_rate" / "heart_rate-1.json",
        [
            {"user": "alice@test.com", "timestamp": T1, "bpm": 61},
            {"user": "Bob@test.com", "timestamp": T1, "bpm": 70},
            {"user": "carol@test.com", "timestamp": "later", "bpm": 80},
        ],
    )
    lakehouse = tmp_path / "lakehouse"
    result = (
        extended_definitions()
        .resolve_job_def("stedi_lakehouse_job")
        .execute_in_process(
            run_config=run_config(landing_uri=str(landing), lakehouse_uri=str(lakehouse)),
            raise_on_error=False,
            tags=range_tags(TINY_DAY, TINY_DAY),
        )
    )

    assert result.success
    assert pl.read_delta(str(lakehouse / "trusted" / "heart_rate_trusted")).rows() == [
        ("alice@test.com", T1, 61)
    ]
    rejects = pl.read_delta(str(lakehouse / "quarantine" / "heart_rate_rejects"))
    assert rejects["reason"].to_list() == ["timestamp: 'later' is not an integer"]
    evaluations = {
        (e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()
    }
    assert evaluations[("heart_rate_landing", "lines_conserved")] is True
    assert evaluations[("heart_rate_trusted", "users_are_trusted_customers")] is True
    assert evaluations[("heart_rate_landing", "reject_rate")] is False
