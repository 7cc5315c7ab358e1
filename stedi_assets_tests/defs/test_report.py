"""The report in real runs: drawn in the zones run after the tables, written into the lakehouse
(a folder or a bucket), its numbers the tables' own, and no one named anywhere in it."""

from __future__ import annotations

import base64
import json
import os
import re
import uuid
import warnings
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
import polars as pl
import pytest

from stedi_assets.cli import run_lakehouse
from stedi_assets.defs.report import REPORT_PATH, funnel_chart, histogram_chart, magnitude_chart
from stedi_assets.generate import generate_landing
from stedi_assets.rules import report
from stedi_assets.storage.environment import S3Options
from stedi_assets.storage.errors import StorageError
from stedi_assets.storage.lakehouse import Lakehouse
from stedi_assets_tests.helpers import T2, customer, make_bucket, upload_tree, write_jsonl

SVG_NAMESPACE = "{http://www.w3.org/2000/svg}"
IMAGE = re.compile(r"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)")


def _images(text: str) -> list[bytes]:
    return [base64.b64decode(encoded) for encoded in IMAGE.findall(text)]


def _words(svg: bytes) -> list[str]:
    """Every piece of text a chart shows (its title and its <text> elements), in order."""
    root = ElementTree.fromstring(svg)
    return [element.text or "" for element in root.iter() if element.tag.endswith(("}text", "}title"))]


def _people(landing: Path) -> set[str]:
    """Every email, phone, customer name and device serial the landing files hold (birthdays are
    left out: placeholders such as 1900-01-01 are shared by many and would match a date)."""
    found = set()
    for path in landing.rglob("*.json"):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            keys = ("email", "user", "customerName", "phone", "serialNumber")
            found |= {str(row[k]).strip() for k in keys if row.get(k)}
    return found


def _metadata(instance: dg.DagsterInstance, name: str) -> tuple[str, dict[str, Any]]:
    event = instance.get_latest_materialization_event(dg.AssetKey(name))
    assert event is not None and event.asset_materialization is not None, name
    return event.run_id, {k: v.value for k, v in event.asset_materialization.metadata.items()}


def _assert_names_no_one(html: str, metadata: dict[str, Any], people: set[str]) -> None:
    images = _images(html)
    assert "customer 1" in " ".join(word for svg in images for word in _words(svg))  # the charts are read
    drawn = " ".join(svg.decode() for svg in images).lower()  # every word and attribute of them
    shown = json.dumps(metadata, default=str).lower()
    for value in people:
        assert value.lower() not in html.lower(), value
        assert value.lower() not in drawn, value
        assert value.lower() not in shown, value


def _assert_report(html: str, metadata: dict[str, Any], lakehouse: Lakehouse) -> None:
    images = _images(html)
    assert len(images) == 3
    for svg in images:
        assert ElementTree.fromstring(svg).tag == f"{SVG_NAMESPACE}svg" and 0 < len(svg) < 60_000
    shown = [_images(metadata[name]) for name in ("funnel", "distance_histogram")]
    assert shown == [[svg] for svg in images[:2]]  # the UI shows the aggregate images of the file
    # people's own readings never reach the Dagster instance, which keeps metadata for good
    assert "accelerometer_magnitude" not in metadata
    for table in report.FUNNEL:
        uri = lakehouse.table_uri(table.zone, table.name)
        rows = lakehouse.reading(uri, lakehouse.scan(uri)).height
        assert metadata[f"rows/{table.name}"] == lakehouse.rows(uri) == rows, table.name


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, dict, dg.DagsterInstance]]:
    """30 generated customers through both runs of `stedi run`, with an instance to read back."""
    root = tmp_path_factory.mktemp("report")
    generate_landing(root / "landing", customers=30)
    instance = dg.DagsterInstance.ephemeral()
    # a module fixture is set up before the conftest's per-test environment: the same, said here
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("STEDI_") or n == "AWS_ENDPOINT_URL"]:
            patch.delenv(name)
        patch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.getbasetemp() / "config"))
        summary = run_lakehouse(
            instance=instance, landing_uri=str(root / "landing"), lakehouse_uri=str(root / "lakehouse")
        )
        yield root / "landing", root / "lakehouse", summary, instance


def test_the_report_is_drawn_in_the_zones_run_from_the_tables(built):
    _, lakehouse, summary, instance = built
    assert summary["success"], summary["errors"]
    run_id, metadata = _metadata(instance, "curated_report")

    assert run_id == summary["run_ids"][-1]  # the trusted and curated zones' run, after the tables
    assert "curated_report" not in summary["tables"]
    path = lakehouse / REPORT_PATH
    assert metadata["report_uri"] == metadata["dagster/uri"] == str(path.absolute())
    assert path.is_file() and not list(path.parent.glob(".*partial"))
    html = path.read_text()
    assert html.startswith("<!doctype html>") and "http" not in html  # standalone: nothing fetched
    _assert_report(html, metadata, Lakehouse(str(lakehouse)))
    funnel = [t.name for t in report.FUNNEL]
    assert {n: metadata[f"rows/{n}"] for n in funnel} == {n: summary["tables"][n]["rows"] for n in funnel}
    assert metadata["customers_sampled"] == report.SAMPLE
    assert metadata["step_trainer_readings"] == metadata["rows/step_trainer_trusted"]


def test_the_report_names_no_one(built):
    landing, lakehouse, _, instance = built
    people = _people(landing)
    assert any("@" in p for p in people) and any(" " in p for p in people)

    _assert_names_no_one(
        (lakehouse / REPORT_PATH).read_text(), _metadata(instance, "curated_report")[1], people
    )


def test_every_materialization_records_its_counts_as_numbers(built):
    """The UI plots numeric metadata across runs: every count is a number, not text."""
    _, lakehouse, summary, instance = built
    expected = {
        "dagster/row_count",
        "rows_written",
        "delta_version",
    }
    for name in summary["tables"]:
        _, metadata = _metadata(instance, name)
        numbers = {k for k, v in metadata.items() if isinstance(v, int) and not isinstance(v, bool)}
        wanted = expected | ({"lines_read", "lines_erased"} if name.endswith("_landing") else set())
        wanted |= {"files_added"} if name.endswith(("_landing", "_rejects")) else set()
        wanted |= {"days_computed", "days_pending"} if "days_recomputed" in metadata else set()
        assert wanted <= numbers, name
        assert metadata["rows_written"] == metadata["dagster/row_count"], name  # every table written whole
    _, accelerometer = _metadata(instance, "accelerometer_trusted")
    _, readings = _metadata(instance, "accelerometer_landing")
    days = Lakehouse(str(lakehouse)).partition_values(readings["table_uri"])
    assert (accelerometer["days_recomputed"], accelerometer["days_computed"]) == ("all", len(days))
    _, landing = _metadata(instance, "accelerometer_landing")
    assert landing["files_added"] == 3


def test_the_charts_draw_empty_tables():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        images = [
            funnel_chart({t.name: 0 for t in report.FUNNEL}),
            histogram_chart(
                pl.DataFrame(schema={"start": pl.Float64, "end": pl.Float64, "count": pl.Int64}), 0
            ),
            magnitude_chart(
                pl.DataFrame(schema={"customer": pl.Int64, "elapsed_ms": pl.Int64, "magnitude": pl.Float64})
            ),
        ]
    assert [_words(svg)[-1] for svg in images[1:]] == ["no readings yet"] * 2
    funnel = _words(images[0])
    assert [name for name in funnel if name in {t.name for t in report.FUNNEL}] == [
        t.name for t in report.FUNNEL
    ]  # every table has its bar, landing first, each labelled 0
    assert funnel.count("0") == len(report.FUNNEL)


def test_the_funnel_marks_only_the_powers_of_ten_on_its_axis():
    """A logarithmic axis from 0 to eight times the largest table, marked at 1, 10, 100, ... up to
    its end: no mark drawn past the plot (at 100 rows the axis ends at 800, before 1k)."""
    svg = ElementTree.fromstring(
        funnel_chart({t.name: 100 if n == 0 else n for n, t in enumerate(report.FUNNEL)})
    )
    frame = next(e for e in svg.iter(f"{SVG_NAMESPACE}rect") if e.get("fill") == "none")
    right = float(frame.get("x")) + float(frame.get("width"))
    bottom = float(frame.get("y")) + float(frame.get("height"))
    marks = [e for e in svg.iter(f"{SVG_NAMESPACE}text") if float(e.get("y")) == bottom + 16]
    assert [e.text for e in marks] == ["1", "10", "100"]
    assert all(float(frame.get("x")) <= float(e.get("x")) <= right for e in marks)


def test_put_bytes_replaces_a_file_whole(lakehouse: Lakehouse):
    assert not lakehouse.has_file("report/x.html") and not lakehouse.remove_file("report/x.html")
    first = lakehouse.put_bytes("report/x.html", b"<p>one</p>", "text/html")
    second = lakehouse.put_bytes("report/x.html", b"<p>two</p>", "text/html")

    assert first == second == f"{lakehouse.table_uri('report', 'x.html')}"
    if second.startswith("s3://"):
        bucket, key = second.removeprefix("s3://").split("/", 1)
        got = boto3.client("s3").get_object(Bucket=bucket, Key=key)
        assert (got["Body"].read(), got["ContentType"]) == (b"<p>two</p>", "text/html")
    else:
        assert Path(second).read_bytes() == b"<p>two</p>"
        assert [p.name for p in Path(second).parent.iterdir()] == ["x.html"]
    assert lakehouse.has_file("report/x.html") and not lakehouse.has_file("report")  # a folder is no file
    assert lakehouse.remove_file("report/x.html")
    assert not lakehouse.has_file("report/x.html") and lakehouse.get_bytes("report/x.html") is None


@pytest.mark.s3
def test_the_report_lands_in_an_s3_lakehouse(s3_env: str, tiny_landing: Path):
    bucket = f"report-{uuid.uuid4().hex[:12]}"
    make_bucket(bucket)
    upload_tree(tiny_landing, bucket, "landing")
    instance = dg.DagsterInstance.ephemeral()

    summary = run_lakehouse(
        instance=instance, landing_uri=f"s3://{bucket}/landing", lakehouse_uri=f"s3://{bucket}/lh"
    )

    assert summary["success"], summary["errors"]
    _, metadata = _metadata(instance, "curated_report")
    assert metadata["report_uri"] == f"s3://{bucket}/lh/{REPORT_PATH}"
    got = boto3.client("s3").get_object(Bucket=bucket, Key=f"lh/{REPORT_PATH}")
    assert got["ContentType"] == "text/html; charset=utf-8"
    html = got["Body"].read().decode()
    _assert_report(html, metadata, Lakehouse(f"s3://{bucket}/lh", S3Options.from_environment()))
    _assert_names_no_one(html, metadata, _people(tiny_landing))
    assert metadata["customers_sampled"] == 2  # Alice and Erin: the consenting customers with readings


def test_a_withdrawal_removes_the_report_even_when_it_is_not_redrawn(tiny_landing: Path, tmp_path: Path):
    """The report's magnitude chart is drawn from people's readings: when customer_trusted removes
    anyone, the file goes with them (in the same step, before the decision is committed), even if
    the report is not redrawn in that run."""
    settings = {"landing_uri": str(tiny_landing), "lakehouse_uri": str(tmp_path / "lakehouse")}
    assert run_lakehouse(**settings)["success"]
    page = tmp_path / "lakehouse" / REPORT_PATH
    assert page.exists()
    instance = dg.DagsterInstance.ephemeral()
    assert run_lakehouse("key:customer_trusted", instance=instance, **settings)["success"]
    assert page.exists()  # no one left: the report stays

    write_jsonl(
        tiny_landing / "customer" / "customer-2.json", [customer("Alice A", "S-A", None, lastUpdateDate=T2)]
    )
    consent = "key:customer_landing or key:customer_trusted"  # the ingest and the decision, no report
    assert run_lakehouse(consent, instance=instance, **settings)["success"]

    assert not page.exists()
    event = instance.get_latest_materialization_event(dg.AssetKey("customer_trusted"))
    assert event.asset_materialization.metadata["report_removed"].value == REPORT_PATH


def test_a_failed_report_removal_is_retried_until_the_report_is_gone(
    tiny_landing: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The report goes before any table loses the person, so the step's retry after a transient
    failure to delete it still has someone to remove, and removes it."""
    settings = {"landing_uri": str(tiny_landing), "lakehouse_uri": str(tmp_path / "lakehouse")}
    assert run_lakehouse(**settings)["success"]
    page = tmp_path / "lakehouse" / REPORT_PATH
    write_jsonl(
        tiny_landing / "customer" / "customer-2.json", [customer("Alice A", "S-A", None, lastUpdateDate=T2)]
    )
    remove_file, calls = Lakehouse.remove_file, []

    def flaky(self: Lakehouse, path: str) -> bool:
        calls.append(path)
        if len(calls) == 1:
            raise StorageError("Storage error on the report: throttled", transient=True)
        return remove_file(self, path)

    monkeypatch.setattr(Lakehouse, "remove_file", flaky)

    summary = run_lakehouse("key:customer_landing or key:customer_trusted", **settings)

    assert summary["success"], summary["errors"]
    assert summary["retries"] == {"customer_trusted": 1}
    assert not page.exists()


def test_the_report_is_drawn_again_only_when_what_it_draws_changed(tiny_landing: Path, tmp_path: Path):
    """Nothing new: the same charts are shown again from the files beside the HTML (not drawn); a new
    reading, or a lost file, draws them again."""
    settings = {"landing_uri": str(tiny_landing), "lakehouse_uri": str(tmp_path / "lakehouse")}
    instance = dg.DagsterInstance.ephemeral()
    assert run_lakehouse(instance=instance, **settings)["success"]
    page = tmp_path / "lakehouse" / REPORT_PATH
    first_html, (_, first) = page.read_bytes(), _metadata(instance, "curated_report")
    assert first["redrawn"] is True

    with pytest.MonkeyPatch.context() as patch:  # drawing now would fail the run
        patch.setattr(report, "histogram", _never_drawn)
        assert run_lakehouse(instance=instance, **settings)["success"]
    _, again = _metadata(instance, "curated_report")
    assert again == {**first, "redrawn": False}
    assert page.read_bytes() == first_html  # the file is not written again either

    write_jsonl(
        tiny_landing / "step_trainer" / "step_trainer-2.json",
        [{"sensorReadingTime": T2 + 1, "serialNumber": "S-A", "distanceFromObject": 999}],
    )
    assert run_lakehouse(instance=instance, **settings)["success"]
    _, drawn = _metadata(instance, "curated_report")
    assert (
        drawn["redrawn"] is True
        and drawn["rows/step_trainer_landing"] == first["rows/step_trainer_landing"] + 1
    )

    (page.parent / "funnel.svg").unlink()
    assert run_lakehouse(instance=instance, **settings)["success"]
    _, redrawn = _metadata(instance, "curated_report")
    assert redrawn == {**drawn, "redrawn": True} and (page.parent / "funnel.svg").exists()


def _never_drawn(*args: Any, **kwargs: Any) -> pl.LazyFrame:
    raise AssertionError("the report was drawn again")
