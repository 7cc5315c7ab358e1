"""Shared test builders: landing files, the reference expectations, and a real S3 server on loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path
from typing import Any

import boto3
import polars as pl

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
