"""The Delta IO manager inside real runs: where tables go, what each materialization records, re-runs."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
from deltalake import DeltaTable
from polars.testing import assert_frame_equal

from stedi_assets.cli import run_lakehouse
from stedi_assets.definitions import defs
from stedi_assets.rules import contracts
from stedi_assets.rules.contracts import Verdict
from stedi_assets.rules.identity import pseudonym
from stedi_assets.storage.io_manager import Publication, publish
from stedi_assets.storage.lakehouse import Lakehouse
from stedi_assets.storage.metadata import verdict_metadata


def _latest(instance: dg.DagsterInstance, name: str) -> dict:
    event = instance.get_latest_materialization_event(dg.AssetKey(name))
    assert event is not None, name
    return {key: value.value for key, value in event.asset_materialization.metadata.items()}


def test_materialization_metadata(tiny_landing: Path, tmp_path: Path):
    lakehouse = tmp_path / "lakehouse"
    instance = dg.DagsterInstance.ephemeral()
    summary = run_lakehouse(instance=instance, landing_uri=str(tiny_landing), lakehouse_uri=str(lakehouse))
    assert summary["success"], summary["errors"]

    trusted = _latest(instance, "customer_trusted")
    uri = str(lakehouse / "trusted" / "customer_trusted")
    assert trusted["dagster/row_count"] == 3
    assert trusted["table_uri"] == trusted["dagster/uri"] == uri
    assert trusted["delta_version"] == 0
    preview = trusted["preview"].splitlines()
    assert preview[0].startswith("| customerName | email |")
    assert len(preview) == 2 + 3
    assert _latest(instance, "machine_learning_curated")["ml_join"] == "seed"
    assert _latest(instance, "customer_landing")["lines_read"] == 5


def test_column_schema_is_declared_on_the_asset():
    """The UI shows each table's columns (PII tagged) before anything is materialized."""
    spec = defs.resolve_assets_def("customer_landing").specs_by_key[dg.AssetKey("customer_landing")]
    columns = spec.metadata["dagster/column_schema"].columns
    assert [c.name for c in columns][-3:] == ["_source_file", "_line_number", "_ingested_at"]
    assert {c.name for c in columns if "pii" in c.tags} == {"customerName", "email", "phone", "birthDay"}
    assert spec.metadata["stedi/zone"] == "landing"


def test_rerun_is_idempotent(generated_landing: Path, tmp_path: Path):
    settings = {"landing_uri": str(generated_landing), "lakehouse_uri": str(tmp_path / "lakehouse")}
    first = run_lakehouse(**settings)
    before = {name: pl.read_delta(info["uri"]) for name, info in first["tables"].items()}
    second = run_lakehouse(**settings)

    assert first["success"] and second["success"]
    assert first["tables"] == second["tables"]
    assert len(second["tables"]) == 12
    for name, info in second["tables"].items():
        # nothing new in the landing zone: no table gets a new version (the customer tables are
        # recomputed, and a rewrite holding the rows it read is not committed)
        assert DeltaTable(info["uri"]).version() == 0, name
        assert_frame_equal(pl.read_delta(info["uri"]), before[name], check_row_order=False)
    error_checks = [c for c in second["checks"] if c["severity"] == "ERROR"]
    assert len(error_checks) == 39
    assert all(c["passed"] for c in error_checks)


def test_no_personal_data_reaches_the_dagster_instance(tiny_landing: Path, tmp_path: Path):
    """Previews and check samples mask PII columns and raw lines: the event log holds none of them."""
    with (tiny_landing / "customer" / "customer-1.json").open("a") as customers:
        customers.write(
            '{"customerName": "Zed Zulu", "email": "zed@test.com", "phone": "5550100", "serialNum\n'
        )
    instance = dg.DagsterInstance.ephemeral()
    summary = run_lakehouse(
        instance=instance,
        landing_uri=str(tiny_landing),
        lakehouse_uri=str(tmp_path / "lh"),
        max_reject_rate=1,
    )
    assert summary["tables"]["customer_rejects"]["rows"] == 1

    logged = "\n".join(dg.serialize_value(entry) for entry in instance.all_logs(summary["run_id"]))
    for personal in ("Alice", "Erin", "Zed Zulu", "@test.com", "8015551212", "5550100", "1900-01-01"):
        assert personal not in logged, personal
    preview = _latest(instance, "customer_trusted")["preview"].splitlines()
    assert preview[2].startswith("| [redacted] | [redacted] | [redacted] | [redacted] | S-")
    assert _latest(instance, "customer_rejects")["preview"].splitlines()[2].split(" | ")[2:4] == [
        "not valid JSON",
        "[redacted]",
    ]


def test_a_contract_sample_names_people_by_keyed_hash_and_masks_the_rest():
    offending = pl.DataFrame(
        {"email": [" Alice@Test.com"], "customerName": ["Alice A"], "serialNumber": ["S-A"]}
    )
    verdict = Verdict(False, "1 trusted customers without current research consent", 1, 0, offending)

    sample = verdict_metadata(verdict, b"key")["offending_rows"].value

    alice = pseudonym("alice@test.com", b"key")[:16]
    assert sample == (
        f"| email (keyed hash) | customerName | serialNumber |\n|---|---|---|\n| {alice} | [redacted] | S-A |"
    )
    assert "[redacted] | [redacted]" in verdict_metadata(verdict)["offending_rows"].value  # no key: masked


def test_a_sample_of_identities_outside_consent_shows_none_of_them():
    """The consent sweep's predicate (also every reading table's write guard) samples canonical
    identities (`_key`): a broken contract's failure must not carry them out of the lakehouse."""
    outside = pl.LazyFrame({"_key": ["bob@test.com", "s-b"]})
    verdict = contracts.no_offending_rows(outside, "identities the consent decision does not allow")

    for secret in (None, b"key"):
        sample = verdict_metadata(verdict, secret)["offending_rows"].value
        assert sample == "| _key |\n|---|\n| [redacted] |\n| [redacted] |"


def test_a_rewrite_is_committed_only_when_its_rows_or_properties_differ(tmp_path: Path):
    lakehouse = Lakehouse(str(tmp_path / "lakehouse"))
    uri = lakehouse.table_uri("trusted", "numbers")
    rows = pl.LazyFrame({"n": [1, 2, 3], "s": ["a", None, "c"]})

    def version_after(frame: pl.LazyFrame, **properties: str) -> int:
        publish(lakehouse, uri, Publication(frame, properties=properties))
        return DeltaTable(uri).version()

    assert version_after(rows, rule="x") == 0
    assert version_after(rows.reverse(), rule="x") == 0  # same rows in another order: no new version
    assert version_after(rows, rule="y") == 1  # another rule recorded
    assert version_after(rows.with_columns(n=pl.Series([1, 2, 4])), rule="y") == 2  # same count, other rows
    assert version_after(rows.with_columns(n=pl.col("n").cast(pl.Int32)), rule="y") == 3  # other schema
    files = list((tmp_path / "lakehouse" / "trusted" / "numbers").glob("*.parquet"))
    assert len(files) == 4  # the rewrites not committed left no staged file behind
