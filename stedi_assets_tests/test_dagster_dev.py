"""`dagster dev` from the repo root serves the code location: every asset, check and run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from stedi_assets.definitions import defs
from stedi_assets_tests.helpers import free_port

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow

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


def graphql(url: str, query: str) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps({"query": query}).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["data"]


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A `stedi run` recorded in a fresh DAGSTER_HOME, as `make demo` does."""
    root = tmp_path_factory.mktemp("dev")
    home = root / "dagster_home"
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
    home, _ = recorded_run
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEDI_")} | {"DAGSTER_HOME": str(home)}
    server = subprocess.Popen(
        [BIN / "dagster", "dev", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/graphql"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if graphql(url, "{ assetNodes { id } }")["assetNodes"]:
                    break
            except (OSError, KeyError, TypeError):
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("dagster dev did not serve the code location within 120 s")
            time.sleep(1)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


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
