"""Fixtures: a clean environment, generated and reference landing data, and a real S3 server."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis.configuration import set_hypothesis_home_dir

from stedi_assets.generate import generate_landing
from stedi_assets.storage.environment import S3Options
from stedi_assets.storage.lakehouse import Lakehouse
from stedi_assets_tests.helpers import REFERENCE_ENV, make_bucket, moto_server, write_tiny_landing

# Nothing is written into the working tree: even with database=None, hypothesis caches constants
# in its home folder (./.hypothesis by default), so that folder lives in the temporary directory.
set_hypothesis_home_dir(str(Path(tempfile.gettempdir()) / "stedi-hypothesis"))
# The generated pseudonym key of a local lakehouse lives in the user's config folder: for the whole
# session (module-scoped fixtures and subprocesses included) that is a temporary one.
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="stedi-config-")


@pytest.fixture(autouse=True)
def _no_stedi_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests say what they configure; a developer's STEDI_* or AWS endpoint must not leak in, and the
    generated pseudonym key lives in a test config folder, not the developer's."""
    for name in [n for n in os.environ if n.startswith("STEDI_") and n != REFERENCE_ENV]:
        monkeypatch.delenv(name)
    for name in ("DAGSTER_HOME", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.getbasetemp() / "config"))


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


@pytest.fixture
def tiny_landing(tmp_path: Path) -> Path:
    return write_tiny_landing(tmp_path / "landing")


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
    # an S3 lakehouse is shared, so its pseudonyms need a key every writer has
    monkeypatch.setenv("STEDI_PSEUDONYM_KEY", "s3-test-pseudonym-key")
    return s3_endpoint


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def lakehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Lakehouse:
    """Where tables are written: a folder, or a fresh bucket of the S3 test server."""
    if request.param == "local":
        return Lakehouse(str(tmp_path / "lakehouse"))
    request.getfixturevalue("s3_env")
    bucket = f"lakehouse-{uuid.uuid4().hex[:12]}"
    make_bucket(bucket)
    return Lakehouse(f"s3://{bucket}/lakehouse", S3Options.from_environment())
