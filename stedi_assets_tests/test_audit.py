"""`stedi audit` finds what must not be there, and finds nothing once erasure went through."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from stedi_assets.cli import main, run_lakehouse
from stedi_assets.rules.identity import pseudonym
from stedi_assets.storage.lakehouse import Lakehouse
from stedi_assets.storage.pseudonym import pseudonym_key
from stedi_assets_tests.helpers import T2, customer, write_jsonl

ALICE = "alice@test.com"


def _withdrawn_lakehouse(landing: Path, lakehouse: Path | Lakehouse) -> None:
    """A lakehouse built while Alice consented, then rebuilt after she withdrew."""
    root = lakehouse.root if isinstance(lakehouse, Lakehouse) else str(lakehouse)
    settings = {"landing_uri": str(landing), "lakehouse_uri": root}
    assert run_lakehouse(**settings)["success"]
    write_jsonl(
        landing / "customer" / "customer-2.json", [customer("Alice A", "S-A", None, lastUpdateDate=T2)]
    )
    assert run_lakehouse(**settings)["success"]


def _audit(
    capsys: pytest.CaptureFixture[str], landing: Path, lakehouse: Path | Lakehouse, *extra: str
) -> tuple[int, str]:
    root = lakehouse.root if isinstance(lakehouse, Lakehouse) else str(lakehouse)
    code = main(["audit", "--landing", str(landing), "--lakehouse", root, *extra])
    return code, capsys.readouterr().out


def test_after_a_withdrawal_the_audit_finds_nothing(tiny_landing: Path, lakehouse: Lakehouse, capsys):
    _withdrawn_lakehouse(tiny_landing, lakehouse)

    code, out = _audit(capsys, tiny_landing, lakehouse)

    assert (code, out) == (0, f"audited 3 customers without consent in {lakehouse.root}\nnothing found\n")


def test_the_audit_finds_a_withdrawn_customer_in_versions_the_vacuum_skipped(
    tiny_landing: Path, lakehouse: Lakehouse, capsys, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(Lakehouse, "forget_history", lambda self, uri: 0)
    _withdrawn_lakehouse(tiny_landing, lakehouse)

    code, out = _audit(capsys, tiny_landing, lakehouse)

    alice = pseudonym(ALICE, pseudonym_key(lakehouse.root).secret)[:16]
    assert code == 1
    assert ALICE not in out.lower()  # the audit names people by keyed hash only
    found = out.splitlines()[1:]
    assert f"customer_trusted version 0: 1 identities without consent (keyed hashes {alice})" in found
    assert any(line.startswith("accelerometer_trusted version 0: 1 identities") for line in found)
    assert any(line.startswith("step_trainer_trusted version 0: 1 identities") for line in found)
    assert any(line.startswith("machine_learning_curated version 0: 2 identities") for line in found)
    assert not any(" version 1:" in line or " version 2:" in line for line in found), found


def test_the_audit_finds_and_purges_personal_data_in_the_dagster_instance(
    tiny_landing: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
):
    """An upgraded installation: an earlier version stored a preview with Alice's email and name."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    lakehouse = tmp_path / "lakehouse"
    _withdrawn_lakehouse(tiny_landing, lakehouse)

    @dg.asset
    def old_preview() -> dg.MaterializeResult:
        table = f"| customerName | email |\n|---|---|\n| Alice A | {ALICE} |"
        return dg.MaterializeResult(metadata={"preview": dg.MetadataValue.md(table), "rows": 5})

    with dg.DagsterInstance.get() as instance:
        assert dg.materialize([old_preview], instance=instance).success

    code, out = _audit(capsys, tiny_landing, lakehouse)
    assert code == 1
    assert "Dagster instance: run " in out and "ASSET_MATERIALIZATION holds a value of" in out
    assert ALICE not in out.lower()

    code, out = _audit(capsys, tiny_landing, lakehouse, "--purge-instance")
    assert code == 0, out
    assert out.splitlines()[0].startswith("redacted ") and out.endswith("nothing found\n")
    with dg.DagsterInstance.get() as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("old_preview"))
        assert event.asset_materialization.metadata["rows"].value == 5
        preview = str(event.asset_materialization.metadata["preview"].value)
        assert ALICE not in preview.lower() and "Alice A" not in preview


def test_a_version_that_cannot_be_read_is_no_proof_of_absence(tiny_landing: Path, tmp_path: Path, capsys):
    """A corrupt data file (or a refused read) stops the audit with status 2; only a version whose log
    entry or data files are gone counts as not retained."""
    lakehouse = tmp_path / "lakehouse"
    _withdrawn_lakehouse(tiny_landing, lakehouse)
    table = lakehouse / "trusted" / "accelerometer_trusted"
    for data_file in table.rglob("*.parquet"):
        data_file.write_bytes(b"not parquet at all")

    code = main(["audit", "--landing", str(tiny_landing), "--lakehouse", str(lakehouse)])

    captured = capsys.readouterr()
    assert code == 2, captured.out
    assert str(table) in captured.err and "Corrupt footer" in captured.err
    assert "nothing found" not in captured.out


def test_a_training_table_version_from_before_subject_id_is_audited_by_email(
    tiny_landing: Path, tmp_path: Path, capsys
):
    """Earlier versions of machine_learning_curated named people by email, with no subject_id: the
    audit checks them on the columns they have."""
    lakehouse = tmp_path / "lakehouse"
    _withdrawn_lakehouse(tiny_landing, lakehouse)
    store = Lakehouse(str(lakehouse))
    uri = store.table_uri("curated", "machine_learning_curated")
    shutil.rmtree(uri)  # as an older version of the lakehouse wrote it
    old = pl.LazyFrame({"sensorReadingTime": [T2], "serialNumber": ["S-E"], "user": ["Bob@test.com"]})
    store.write(uri, old)

    code, out = _audit(capsys, tiny_landing, lakehouse)

    assert code == 1
    assert any(
        line.startswith("machine_learning_curated version 0: 1 identities") for line in out.splitlines()
    )
