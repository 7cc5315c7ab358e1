"""`dagster dev` from the repo root serves the code location: every asset, check and run, the UI's
Materialize button (its GraphQL mutation) and, in headless Chromium, the asset graph and checks.

The browser tests skip where no Chromium can be driven (`make test` installs Debian's `chromium`
where it can); with STEDI_REQUIRE_BROWSER=1, as `.ci/run` sets, they fail instead. Their
screenshots are kept in `$TMPDIR/stedi-ui-screenshots/` (outside pytest's temporary folders, which
later runs delete); docs/images/asset-graph.png is a copy of `asset-graph.png`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import dagster as dg
import polars as pl
import pytest

from stedi_assets.definitions import defs
from stedi_assets.defs.automation import lakehouse_job
from stedi_assets.defs.partitions import RANGE_END_TAG, RANGE_START_TAG
from stedi_assets_tests.helpers import RUN_FINISHED, finished_run, graphql, materialize_from_ui, run_tags
from stedi_assets_tests.helpers import dagster_dev as serve_dagster_dev

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow

REQUIRE_BROWSER_ENV = "STEDI_REQUIRE_BROWSER"
REQUIRE_BROWSER = os.environ.get(REQUIRE_BROWSER_ENV) == "1"
"""Read when the module is collected: the autouse fixture of conftest removes STEDI_* from each test."""

QUERY = """
{
  assetNodes {
    assetKey { path }
    groupName
    assetChecksOrError { ... on AssetChecks { checks { name } } }
  }
  runsOrError { ... on Runs { results { runId status jobName } } }
}
"""


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A `stedi run` recorded in a fresh DAGSTER_HOME, as `make demo` does."""
    root = tmp_path_factory.mktemp("dev")
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "stedi_assets" / "dagster.yaml", home / "dagster.yaml")  # as `make demo`: no telemetry
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEDI_")} | {"DAGSTER_HOME": str(home)}
    subprocess.run(
        [BIN / "stedi", "generate", "--out", root / "landing", "--customers", "30"], check=True, env=env
    )
    done = subprocess.run(
        [BIN / "stedi", "run", "--landing", root / "landing", "--lakehouse", root / "lakehouse", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return home, json.loads(done.stdout)["run_id"]


@pytest.fixture(scope="module")
def dagster_dev(recorded_run: tuple[Path, str]) -> Iterator[str]:
    """The web UI over the instance `stedi run` recorded into; runs launched here say where their
    data is in run config."""
    home, _ = recorded_run
    with serve_dagster_dev(home, {k: v for k, v in os.environ.items() if not k.startswith("STEDI_")}) as url:
        yield url


def test_ui_serves_every_asset_and_check(dagster_dev: str):
    """The web server loads the same code location as the definitions module (pinned in test_definitions)."""
    graph = defs.resolve_asset_graph()
    nodes = graphql(dagster_dev, QUERY)["assetNodes"]
    assert {"/".join(n["assetKey"]["path"]): n["groupName"] for n in nodes} == {
        key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()
    }
    served_checks = {
        ("/".join(n["assetKey"]["path"]), check["name"])
        for n in nodes
        for check in n["assetChecksOrError"]["checks"]
    }
    assert len(served_checks) == 45
    assert served_checks == {(key.asset_key.to_user_string(), key.name) for key in graph.asset_check_keys}


def test_ui_shows_the_run_recorded_by_stedi_run(dagster_dev: str, recorded_run: tuple[Path, str]):
    _, run_id = recorded_run
    runs = graphql(dagster_dev, QUERY)["runsOrError"]["results"]
    assert {"runId": run_id, "status": "SUCCESS", "jobName": "stedi_lakehouse_job"} in runs


CHECK_RESULTS = """
query Checks($assetKeys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $assetKeys) {
    assetKey { path }
    assetChecksOrError {
      __typename
      ... on AssetChecks {
        checks { name executionForLatestMaterialization { runId status evaluation { severity success } } }
      }
    }
  }
}
"""
RUN_TIMEOUT = 300


@dataclass(frozen=True)
class UiRun:
    run_id: str
    status: str
    days: tuple[str, str]
    assets: list[dict[str, Any]]
    """The served asset nodes of the job: assetKey ({path}) and groupName."""
    lakehouse: Path


@pytest.fixture(scope="module")
def ui_run(dagster_dev: str, recorded_run: tuple[Path, str]) -> UiRun:
    """Every asset of stedi_lakehouse_job materialized as the UI's Materialize button launches it: the
    launchPipelineExecution mutation with the job, its assets, the storage in run config and the
    partition-range tags, here the days `stedi run` targeted, into a lakehouse of its own."""
    home, recorded_run_id = recorded_run
    recorded = run_tags(dagster_dev, recorded_run_id)
    days = recorded[RANGE_START_TAG], recorded[RANGE_END_TAG]
    lakehouse = home.parent / "ui_lakehouse"
    storage = {"landing_uri": str(home.parent / "landing"), "lakehouse_uri": str(lakehouse)}
    run_id, assets = materialize_from_ui(dagster_dev, lakehouse_job.name, storage, days)
    status = finished_run(dagster_dev, run_id, RUN_TIMEOUT)
    return UiRun(run_id, status, days, assets, lakehouse)


def check_results(url: str, run: UiRun) -> dict[tuple[str, str], dict[str, Any] | None]:
    """(asset, check) -> the check's execution for the asset's latest materialization, as the UI reads it."""
    nodes = graphql(url, CHECK_RESULTS, {"assetKeys": [node["assetKey"] for node in run.assets]})[
        "assetNodes"
    ]
    return {
        ("/".join(node["assetKey"]["path"]), check["name"]): check["executionForLatestMaterialization"]
        for node in nodes
        for check in node["assetChecksOrError"]["checks"]
    }


def test_materialize_from_the_ui_runs_every_asset_and_check(dagster_dev: str, ui_run: UiRun, recorded_run):
    """The Materialize button's mutation runs the job over the range of days; every check of every asset
    reports a result from that run, every ERROR check passed, and the training table it wrote has the
    rows `stedi run` wrote."""
    assert ui_run.status == "SUCCESS", f"run {ui_run.run_id} over {ui_run.days} ended {ui_run.status}"
    tags = run_tags(dagster_dev, ui_run.run_id)
    assert (tags[RANGE_START_TAG], tags[RANGE_END_TAG]) == ui_run.days
    graph = defs.resolve_asset_graph()
    keys = {dg.AssetKey(node["assetKey"]["path"]) for node in ui_run.assets}
    assert keys == set(lakehouse_job.selection.resolve(graph))
    results = check_results(dagster_dev, ui_run)
    assert set(results) == {
        (key.asset_key.to_user_string(), key.name) for key in graph.asset_check_keys if key.asset_key in keys
    }
    assert {check for asset, check in results if asset == "machine_learning_curated"} == {
        key.name for key in graph.asset_check_keys if key.asset_key == dg.AssetKey("machine_learning_curated")
    }
    without_result = sorted(
        key for key, execution in results.items() if not execution or execution["runId"] != ui_run.run_id
    )
    assert without_result == []
    evaluations = {key: execution["evaluation"] for key, execution in results.items() if execution}
    assert all(evaluations.values())
    errors = {
        key: evaluation["success"]
        for key, evaluation in evaluations.items()
        if evaluation["severity"] == "ERROR"
    }
    assert errors and sorted(key for key, passed in errors.items() if not passed) == []

    home, _ = recorded_run
    table = Path("curated", "machine_learning_curated")
    written = pl.read_delta(str(ui_run.lakehouse / table)).height
    assert written == pl.read_delta(str(home.parent / "lakehouse" / table)).height > 0


UI_PREFERENCES = {"communityNux": "1", "dagster-nav-collapsed": True, "asset-graph-direction": "vertical"}
"""What a user would have chosen once (kept in the browser's local storage): the newsletter prompt
dismissed, the navigation collapsed, the asset graph laid out top to bottom."""
VIEWPORT = {"width": 2000, "height": 1600}
SCALE = 0.7
"""A large page drawn at 0.7: the graph fits at a zoom where each node shows its name and checks,
in a screenshot of README size."""
UI_TIMEOUT_MS = 60_000


def no_browser(reason: str) -> NoReturn:
    if REQUIRE_BROWSER:
        pytest.fail(f"{reason}; {REQUIRE_BROWSER_ENV}=1 requires the browser tests to run")
    pytest.skip(f"{reason} (`make test` installs Debian's chromium when run as root)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium driven by Playwright: Debian's `chromium` where installed, else a browser
    Playwright downloaded itself."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        no_browser("the playwright package is not installed (it is in the dev extras)")
    with sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(executable_path=shutil.which("chromium"))
        except Error as error:
            no_browser(f"no Chromium to drive: {str(error).strip().splitlines()[0]}")
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def screenshots() -> Path:
    folder = Path(tempfile.gettempdir()) / "stedi-ui-screenshots"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=SCALE)
    context.add_init_script(
        "".join(
            f"localStorage.setItem({json.dumps(k)}, {json.dumps(json.dumps(v))});"
            for k, v in UI_PREFERENCES.items()
        )
    )
    context.set_default_timeout(UI_TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


def shown(name: str, lines: set[str]) -> bool:
    """Whether a graph node shows the asset: its name, or the UI's shortening of it when the graph is
    zoomed out too far for whole names (`accelerom…_trusted`)."""
    shortened = (line.partition("…") for line in lines if "…" in line)
    return name in lines or any(
        head and name.startswith(head) and name.endswith(tail) for head, _, tail in shortened
    )


def test_ui_draws_the_asset_graph(page: Page, dagster_dev: str, ui_run: UiRun, screenshots: Path):
    """The lineage of the job's groups, expanded: a node for every asset of the job, once the UI has
    loaded what each node shows (latest materialization, checks)."""
    groups = sorted({node["groupName"] for node in ui_run.assets})
    names = sorted("/".join(node["assetKey"]["path"]) for node in ui_run.assets)
    selection = " or ".join(f'group:"{group}"' for group in groups)
    expanded = ",".join(f"global@global:{group}" for group in groups)  # the UI's id of an open group
    path = f"/asset-groups~{urllib.parse.quote(selection)}/?{urllib.parse.urlencode({'expanded': expanded})}"
    page.goto(dagster_dev.removesuffix("/graphql") + path)

    deadline = time.monotonic() + UI_TIMEOUT_MS / 1000
    while True:
        text = page.inner_text("body")
        lines = {line.strip() for line in text.splitlines()}
        missing = [name for name in [*groups, *names] if not shown(name, lines)]
        if not missing and "Loading" not in text:
            break
        assert time.monotonic() < deadline, f"the asset graph does not show {missing}"
        page.wait_for_timeout(500)
    page.wait_for_timeout(1000)  # the zoom to fit is animated
    graph = page.locator("svg[class*=svgContainer]")  # the canvas beside the list of groups
    (graph if graph.count() == 1 else page).screenshot(path=screenshots / "asset-graph.png")


def test_ui_shows_the_checks_of_the_training_table(
    page: Page, dagster_dev: str, ui_run: UiRun, screenshots: Path
):
    """machine_learning_curated's Checks tab lists every check with the result the API reports."""
    from playwright.sync_api import expect

    asset = dg.AssetKey("machine_learning_curated")
    names = sorted(key.name for key in defs.resolve_asset_graph().asset_check_keys if key.asset_key == asset)
    succeeded = [
        check
        for (key, check), execution in check_results(dagster_dev, ui_run).items()
        if key == asset.to_user_string() and (execution or {}).get("status") == "SUCCEEDED"
    ]
    page.goto(dagster_dev.removesuffix("/graphql") + f"/assets/{asset.to_user_string()}?view=checks")
    expect(page.get_by_text(f"Checks ({len(names)})", exact=True)).to_be_visible()
    for name in names:
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    assert succeeded, "the run launched through the UI has no succeeded check to show"
    expect(page.get_by_text("Succeeded", exact=True)).to_have_count(len(succeeded))
    page.screenshot(path=screenshots / "machine-learning-curated-checks.png")


def test_ui_draws_the_reports_aggregate_charts(page: Page, dagster_dev: str, screenshots: Path):
    """curated_report's materialization shows its two aggregate charts: each Markdown value opens to
    an SVG image the browser decodes at the chart's size (the UI's sanitizer lets data: images
    through; a chart it refused or could not decode would be 0 pixels wide)."""
    from playwright.sync_api import expect

    from stedi_assets.defs.charts import WIDTH
    from stedi_assets.defs.report import AGGREGATE_CHARTS

    page.goto(dagster_dev.removesuffix("/graphql") + "/assets/curated_report")
    for name in AGGREGATE_CHARTS:
        row = page.locator("tr").filter(has=page.get_by_text(name, exact=True))
        row.get_by_text("[Show Markdown]").click()
        image = page.get_by_role("dialog").locator("img")
        expect(image).to_have_count(1)
        expect(image).to_have_attribute("src", re.compile(r"^data:image/svg\+xml;base64,"))
        image.evaluate("image => image.decode()")  # rejects when the browser cannot decode it
        assert image.evaluate("image => image.naturalWidth") == WIDTH, name
        page.screenshot(path=screenshots / f"report-{name}.png")
        page.get_by_role("dialog").get_by_role("button", name="Close").click()
        expect(page.get_by_role("dialog")).to_have_count(0)


BACKFILL = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}
"""
BACKFILL_STATUS = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status runs { runId status tags { key value } } }
  }
}
"""
BACKFILL_DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def test_a_backfill_from_the_ui_of_a_range_of_days_is_one_run_for_the_days(dagster_dev: str, ui_run: UiRun):
    """The UI's backfill dialog (launchPartitionBackfill, run by the daemon of `dagster dev`): the days
    of the partitioned tables are one run over the range (BackfillPolicy.single_run()), not one run
    per day. The daemon splits the graph into waves where partitioned and unpartitioned assets
    alternate."""
    first = ui_run.days[0]
    second = (date.fromisoformat(first) + timedelta(days=1)).isoformat()
    storage = {
        "landing_uri": str(ui_run.lakehouse.parent / "landing"),
        "lakehouse_uri": str(ui_run.lakehouse),
    }
    params = {
        "assetSelection": [node["assetKey"] for node in ui_run.assets],
        "partitionNames": [first, second],
        "runConfigData": {"resources": {"storage": {"config": storage}}},
    }
    launched = graphql(dagster_dev, BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        backfill = graphql(dagster_dev, BACKFILL_STATUS, {"id": launched["backfillId"]})[
            "partitionBackfillOrError"
        ]
        runs = backfill["runs"]
        if backfill["status"] in BACKFILL_DONE and all(run["status"] in RUN_FINISHED for run in runs):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"backfill {launched['backfillId']} is still {backfill['status']}")
        time.sleep(2)

    assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), backfill
    assert all(run["status"] == "SUCCESS" for run in runs)
    tags = [{tag["key"]: tag["value"] for tag in run["tags"]} for run in runs]
    # the daemon runs the assets in dependency order, one run per wave: the ingest, customer_trusted,
    # accelerometer_trusted over the range, customer_curated, then the step trainer and training
    # tables over the range; each partitioned wave is one run over both days, never a run per day
    ranges = [(t[RANGE_START_TAG], t[RANGE_END_TAG]) for t in tags if RANGE_START_TAG in t]
    assert ranges == [(first, second)] * 2
    assert len(runs) == 5
    assert not any("dagster/partition" in t for t in tags)
