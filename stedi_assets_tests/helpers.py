"""Shared test builders: landing files, the reference expectations, and a real S3 server on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path
from typing import Any

import boto3
import polars as pl

from stedi_assets.defs.partitions import RANGE_END_TAG, RANGE_START_TAG
from stedi_assets.storage.lakehouse import Lakehouse

REFERENCE_ENV = "STEDI_REFERENCE_DATA"
REFERENCE_EXPECTATIONS = str(files("stedi_assets") / "expectations" / "reference.json")
REFERENCE_CROSS_CUSTOMER_PAIRS = 2_700
T1, T2 = 1_655_564_376_361, 1_655_564_380_000
TINY_DAY = "2022-06-18"
"""The UTC day of T1 and T2: the one event-day partition of the tiny landing data."""


def reference_counts(ml_join: str = "seed") -> dict[str, int]:
    """Exact row counts on the reference data, read from the one expectations file the checks use."""
    counts = json.loads(Path(REFERENCE_EXPECTATIONS).read_text())["row_counts"]
    return {name: n[ml_join] if isinstance(n, dict) else n for name, n in counts.items()}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def customer(name: str, serial: str, consent: int | None, **fields: Any) -> dict[str, Any]:
    """A customer record; the email is the first name at test.com."""
    return {
        "customerName": name,
        "email": f"{name.split()[0]}@test.com",
        "phone": "8015551212",
        "birthDay": "1900-01-01",
        "serialNumber": serial,
        "registrationDate": T1,
        "lastUpdateDate": T1,
        "shareWithResearchAsOfDate": consent,
        "shareWithPublicAsOfDate": None,
        "shareWithFriendsAsOfDate": None,
        **fields,
    }


def write_tiny_landing(root: Path) -> Path:
    """Alice and Erin consent and share a timestamp; Bob does not consent; Carol has no phone data;
    Dave's consent is 0."""
    write_jsonl(
        root / "customer" / "customer-1.json",
        [
            customer("Alice A", "S-A", T1),
            customer("Bob B", "S-B", None),
            customer("Carol C", "S-C", T1),
            customer("Dave D", "S-D", 0),
            customer("Erin E", "S-E", T1),
        ],
    )
    accel = [
        ("Alice@test.com", T1, 1.0),
        ("Alice@test.com", T2, 2.0),
        ("Bob@test.com", T1, 3.0),
        ("Erin@test.com", T2, 4.0),
    ]
    write_jsonl(
        root / "accelerometer" / "accelerometer-1.json",
        [{"user": u, "timestamp": t, "x": x, "y": 0.0, "z": -1.0} for u, t, x in accel],
    )
    steps = [(T1, "S-A", 200), (T2, "S-A", 210), (T1, "S-B", 220), (T2, "S-E", 230)]
    write_jsonl(
        root / "step_trainer" / "step_trainer-1.json",
        [{"sensorReadingTime": t, "serialNumber": s, "distanceFromObject": d} for t, s, d in steps],
    )
    (root / "customer" / "_SUCCESS").write_text("")
    return root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GraphQLError(RuntimeError):
    """The web server answered with GraphQL errors."""


def graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> dict:
    request = urllib.request.Request(
        url,
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.loads(response.read())
    if body.get("errors"):
        raise GraphQLError("; ".join(error["message"] for error in body["errors"]))
    return body["data"]


@contextmanager
def dagster_dev(home: Path, env: dict[str, str], timeout: float = 120) -> Iterator[str]:
    """`dagster dev` on 127.0.0.1 from the repository root with DAGSTER_HOME=`home` and `env`; its
    GraphQL URL once it serves the code location. Its sensors watch an empty landing folder (next
    to `home`), so it starts no run of its own; its output goes to dagster_dev.log beside `home`."""
    empty = home.parent / "empty"
    empty.mkdir(exist_ok=True)
    env = env | {
        "DAGSTER_HOME": str(home),
        "STEDI_LANDING_URI": str(empty),
        "STEDI_LAKEHOUSE_URI": str(empty / "lakehouse"),
    }
    port, log = free_port(), home.parent / "dagster_dev.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [Path(sys.executable).parent / "dagster", "dev", "--host", "127.0.0.1", "--port", str(port)],
            cwd=Path(__file__).resolve().parents[1],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/graphql"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if graphql(url, "{ assetNodes { id } }")["assetNodes"]:
                    break
            except (OSError, KeyError, TypeError, GraphQLError):
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"dagster dev did not serve the code location within {timeout} s:\n{tail}")
            time.sleep(1)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)


LAUNCH = """
mutation Launch($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on Error { message }
  }
}
"""
RUN = """
query Run($runId: ID!) {
  runOrError(runId: $runId) { __typename ... on Run { status tags { key value } } }
}
"""
JOB_ASSETS = """
{
  repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } }
  assetNodes { assetKey { path } groupName jobNames }
}
"""
RUN_FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


def run_tags(url: str, run_id: str) -> dict[str, str]:
    run = graphql(url, RUN, {"runId": run_id})["runOrError"]
    return {tag["key"]: tag["value"] for tag in run["tags"]}


def materialize_from_ui(
    url: str, job: str, storage: dict[str, str], days: tuple[str, str]
) -> tuple[str, list[dict[str, Any]]]:
    """Every asset of `job` materialized as the UI's Materialize button launches it: the
    launchPipelineExecution mutation with the job, its assets, `storage` in run config and the
    partition-range tags of `days`. The run's id, and the served asset nodes of the job (assetKey
    {path}, groupName)."""
    served = graphql(url, JOB_ASSETS)
    (repository,) = served["repositoriesOrError"]["nodes"]
    assets = [node for node in served["assetNodes"] if job in node["jobNames"]]
    params = {
        "selector": {
            "repositoryLocationName": repository["location"]["name"],
            "repositoryName": repository["name"],
            "pipelineName": job,
            "assetSelection": [node["assetKey"] for node in assets],
        },
        "runConfigData": {"resources": {"storage": {"config": storage}}},
        "executionMetadata": {
            "tags": [
                {"key": tag, "value": day}
                for tag, day in zip((RANGE_START_TAG, RANGE_END_TAG), days, strict=True)
            ]
        },
    }
    launched = graphql(url, LAUNCH, {"executionParams": params})["launchPipelineExecution"]
    if launched["__typename"] != "LaunchRunSuccess":
        raise GraphQLError(f"the UI did not launch the run: {launched}")
    return launched["run"]["runId"], assets


def finished_run(url: str, run_id: str, timeout: float = 300, poll: float = 1.0) -> str:
    """The status a run ends with (SUCCESS, FAILURE or CANCELED), polled every `poll` seconds."""
    deadline = time.monotonic() + timeout
    while (status := graphql(url, RUN, {"runId": run_id})["runOrError"]["status"]) not in RUN_FINISHED:
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} is still {status} after {timeout} s")
        time.sleep(poll)
    return status


def wait_for_port(port: int, process: subprocess.Popen, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start on 127.0.0.1:{port}") from None
            time.sleep(0.1)


@contextmanager
def moto_server(extra_env: dict[str, str] | None = None) -> Iterator[str]:
    """A real S3 API (moto's server mode) on 127.0.0.1 in its own process.

    In-process (ThreadedMotoServer) it would share the GIL with delta-rs calls that block on HTTP.
    """
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(extra_env or {})},
    )
    try:
        wait_for_port(port, server, "moto S3 server")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def make_bucket(name: str) -> None:
    boto3.client("s3").create_bucket(Bucket=name)


def upload_tree(local_root: Path, bucket: str, prefix: str) -> int:
    client = boto3.client("s3")
    paths = [p for p in sorted(local_root.rglob("*")) if p.is_file()]
    for path in paths:
        client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(local_root).as_posix()}")
    return len(paths)


def read_table(lakehouse: Lakehouse, zone: str, name: str, version: int | None = None) -> pl.DataFrame:
    """One version (default: the latest) of a table, local or on S3."""
    uri = lakehouse.table_uri(zone, name)
    return lakehouse.reading(uri, lakehouse.scan(uri, version))


def retained_versions(lakehouse: Lakehouse, zone: str, name: str) -> dict[int, pl.DataFrame]:
    """Every version of a table that can still be read; one whose log entry or files are gone is not
    retained."""
    frames = {}
    for version in range(lakehouse.open(lakehouse.table_uri(zone, name)).version() + 1):
        try:
            frames[version] = read_table(lakehouse, zone, name, version)
        except Exception:
            continue
    return frames
