"""Shared fixtures: generated and reference landing data, and a real S3 server on loopback."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
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
        pytest.skip(f"{REFERENCE_ENV} is not set: point it at shared/stedi-reference/landing to run this test")
    path = Path(configured)
    if not all((path / source).is_dir() for source in ("customer", "accelerometer", "step_trainer")):
        pytest.fail(f"{REFERENCE_ENV}={configured} has no customer/, accelerometer/ and step_trainer/ folders")
    return path


@pytest.fixture(scope="session")
def generated_landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("generated") / "landing"
    generate_landing(root, customers=120, seed=7)
    return root


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 API (moto's server mode) on 127.0.0.1, for the whole session."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


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
