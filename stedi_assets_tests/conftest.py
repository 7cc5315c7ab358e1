"""Shared fixtures: generated and reference landing data, and a real S3 server on loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest

from stedi_assets.generate import generate_landing

REFERENCE_ENV = "STEDI_REFERENCE_DATA"
REFERENCE_COUNTS = {
    "customer_landing": 956,
    "accelerometer_landing": 81_273,
    "step_trainer_landing": 28_680,
    "customer_trusted": 482,
    "accelerometer_trusted": 40_981,
    "step_trainer_trusted": 14_460,
    "customer_curated": 482,
    "machine_learning_curated": 43_681,
}
REFERENCE_CROSS_CUSTOMER_PAIRS = 2_700
REFERENCE_SAME_CUSTOMER_ML_ROWS = 40_981


@pytest.fixture(autouse=True)
def _no_stedi_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests say what they configure; a developer's STEDI_* variables must not leak in."""
    for name in [n for n in os.environ if n.startswith("STEDI_") and n != REFERENCE_ENV]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)


@pytest.fixture(scope="session")
def reference_landing() -> Path:
    """The real STEDI landing data; skipped where not configured, an error where configured but absent."""
    configured = os.environ.get(REFERENCE_ENV)
    if not configured:
        pytest.skip(
            f"{REFERENCE_ENV} is not set: point it at shared/stedi-reference/landing to run this test"
        )
    path = Path(configured)
    if not all((path / source).is_dir() for source in ("customer", "accelerometer", "step_trainer")):
        pytest.fail(
            f"{REFERENCE_ENV}={configured} has no customer/, accelerometer/ and step_trainer/ folders"
        )
    return path


@pytest.fixture(scope="session")
def generated_landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("generated") / "landing"
    generate_landing(root, customers=120, seed=7)
    return root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def moto_server(extra_env: dict[str, str] | None = None) -> Iterator[str]:
    """A real S3 API (moto's server mode) on 127.0.0.1 in its own process.

    In-process (ThreadedMotoServer) it would share the GIL with delta-rs calls that block on HTTP.
    """
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(extra_env or {})},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto S3 server did not start on {endpoint}") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Standard AWS variables pointing every client (boto3, delta-rs, Polars) at the test server."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return s3_endpoint


def make_bucket(name: str) -> None:
    boto3.client("s3").create_bucket(Bucket=name)


def upload_tree(local_root: Path, bucket: str, prefix: str) -> int:
    client = boto3.client("s3")
    files = [p for p in sorted(local_root.rglob("*")) if p.is_file()]
    for path in files:
        client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(local_root).as_posix()}")
    return len(files)


T1, T2 = 1_655_564_376_361, 1_655_564_380_000


def _customer(name: str, serial: str, consent: int | None) -> dict:
    first = name.split()[0]
    return {
        "customerName": name,
        "email": f"{first}@test.com",
        "phone": "8015551212",
        "birthDay": "1900-01-01",
        "serialNumber": serial,
        "registrationDate": T1,
        "lastUpdateDate": T1,
        "shareWithResearchAsOfDate": consent,
        "shareWithPublicAsOfDate": None,
        "shareWithFriendsAsOfDate": None,
    }


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture
def tiny_landing(tmp_path: Path) -> Path:
    """Alice and Erin consent and share a timestamp; Bob does not consent; Carol has no phone data;
    Dave's consent is 0."""
    root = tmp_path / "landing"
    _write_jsonl(
        root / "customer" / "customer-1.json",
        [
            _customer("Alice A", "S-A", T1),
            _customer("Bob B", "S-B", None),
            _customer("Carol C", "S-C", T1),
            _customer("Dave D", "S-D", 0),
            _customer("Erin E", "S-E", T1),
        ],
    )
    accel = [
        ("Alice@test.com", T1, 1.0),
        ("Alice@test.com", T2, 2.0),
        ("Bob@test.com", T1, 3.0),
        ("Erin@test.com", T2, 4.0),
    ]
    _write_jsonl(
        root / "accelerometer" / "accelerometer-1.json",
        [{"user": u, "timestamp": t, "x": x, "y": 0.0, "z": -1.0} for u, t, x in accel],
    )
    steps = [(T1, "S-A", 200), (T2, "S-A", 210), (T1, "S-B", 220), (T2, "S-E", 230)]
    _write_jsonl(
        root / "step_trainer" / "step_trainer-1.json",
        [{"sensorReadingTime": t, "serialNumber": s, "distanceFromObject": d} for t, s, d in steps],
    )
    (root / "customer" / "_SUCCESS").write_text("")
    return root
