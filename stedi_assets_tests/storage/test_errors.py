"""The storage error classifier on real failures: boto3 (the landing zone) and delta-rs (the lakehouse)
against a real S3 API, a closed port, a server that answers with an S3 error, and real commit races;
plus S3 error responses built by hand for the codes no test server produces on demand.

Where both clients can hit the same fault, both must come out as the same sentence.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pytest
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError

from stedi_assets.storage.environment import S3Options
from stedi_assets.storage.errors import StorageError, TableMissing, classify, error_code
from stedi_assets_tests.helpers import free_port, make_bucket, moto_server

LANDING = "--landing / STEDI_LANDING_URI"
LAKEHOUSE = "--lakehouse / STEDI_LAKEHOUSE_URI"
LANDING_URI = "s3://stedi-landing/landing/customer/"
TABLE_URI = "s3://stedi-lake/lh/landing/customer_landing"
SCHEMA = pa.schema([("id", pa.int64())])


def _raised(call: Callable[[], object]) -> BaseException:
    try:
        call()
    except Exception as error:
        return error
    pytest.fail("the call did not fail")


def _boto3(endpoint: str) -> BaseClient:
    """A client that tries once, so a failure comes back at once and exactly as the server gave it.

    A new session each time: the default one keeps the credentials it found first.
    """
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", config=Config(retries={"max_attempts": 0})
    )


def _delta_options(endpoint: str) -> dict[str, str]:
    """What the lakehouse passes delta-rs, without object_store's own retries (they only add time)."""
    return {**S3Options(endpoint).delta_options(), "max_retries": "0"}


def _rows(*ids: int) -> pa.Table:
    return pa.table({"id": list(ids)}, schema=SCHEMA)


def _assert_classified(
    error: BaseException, uri: str, setting: str, endpoint: str, message: str, transient: bool
) -> StorageError:
    classified = classify(uri, error, setting, endpoint)
    assert (classified.message, classified.transient) == (message, transient), repr(error)
    assert str(classified) == message
    return classified


def _three_ways(endpoint: str, landing_call: Callable[[Any], Any]) -> list[tuple[str, str, BaseException]]:
    """One S3 fault met by boto3 (the landing reader) and by delta-rs opening and writing a table."""
    from_boto3 = _raised(lambda: landing_call(_boto3(endpoint)))
    on_open = _raised(lambda: DeltaTable(TABLE_URI, storage_options=_delta_options(endpoint)))
    on_write = _raised(
        lambda: write_deltalake(
            TABLE_URI, _rows(1), mode="overwrite", storage_options=_delta_options(endpoint)
        )
    )
    assert type(on_open) is OSError and type(on_write) is OSError
    return [
        (LANDING_URI, LANDING, from_boto3),
        (TABLE_URI, LAKEHOUSE, on_open),
        (TABLE_URI, LAKEHOUSE, on_write),
    ]


def _assert_one_sentence(
    ways: list[tuple[str, str, BaseException]],
    endpoint: str,
    sentence: Callable[[str, str], str],
    transient: bool,
) -> None:
    """Each way of meeting the fault gives the same sentence (for its own URI and setting)."""
    for uri, setting, error in ways:
        _assert_classified(error, uri, setting, endpoint, sentence(uri, setting), transient)


# 1. The S3 faults both clients meet: each comes out as one sentence, identical for both.


@pytest.fixture(scope="module")
def s3_with_auth() -> Iterator[str]:
    """An S3 server that checks credentials (moto with IAM auth on from the first request)."""
    with moto_server({"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as endpoint:
        yield endpoint


@pytest.mark.s3
def test_missing_bucket(s3_env: str):
    ways = _three_ways(
        s3_env, lambda client: client.list_objects_v2(Bucket="stedi-landing", Prefix="landing/")
    )

    assert type(ways[0][2]).__name__ == "NoSuchBucket"
    assert [error_code(error) for *_, error in ways] == ["NoSuchBucket"] * 3
    _assert_one_sentence(
        ways,
        s3_env,
        lambda uri, setting: f"Bucket of {uri} does not exist at {s3_env}: create it or fix {setting}.",
        False,
    )


@pytest.mark.s3
def test_unknown_access_key(s3_with_auth: str, s3_env: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "not-a-key")
    ways = _three_ways(s3_with_auth, lambda client: client.list_objects_v2(Bucket="stedi-landing"))

    assert type(ways[0][2]) is ClientError
    assert [error_code(error) for *_, error in ways] == ["InvalidAccessKeyId"] * 3
    _assert_one_sentence(
        ways,
        s3_with_auth,
        lambda uri, _: (
            f"Access to {uri} was denied (InvalidAccessKeyId): "
            "check the AWS credentials and the bucket policy."
        ),
        False,
    )


@pytest.mark.s3
def test_unreachable_endpoint(s3_env: str):
    closed = f"http://127.0.0.1:{free_port()}"
    ways = _three_ways(closed, lambda client: client.list_objects_v2(Bucket="stedi-landing"))

    assert type(ways[0][2]) is EndpointConnectionError
    assert [error_code(error) for *_, error in ways] == [None] * 3
    _assert_one_sentence(
        ways,
        closed,
        lambda uri, _: (
            f"Cannot reach {closed} for {uri}: check AWS_ENDPOINT_URL and that the S3 server is running."
        ),
        True,
    )


@pytest.mark.s3
def test_no_credentials_anywhere(s3_env: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    error = _raised(lambda: _boto3(s3_env).list_objects_v2(Bucket="stedi-landing"))

    assert type(error) is NoCredentialsError
    _assert_classified(
        error,
        LANDING_URI,
        LANDING,
        s3_env,
        f"No AWS credentials for {LANDING_URI}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
        "(or AWS_PROFILE).",
        False,
    )


@contextmanager
def _answering(status: int, body: bytes) -> Iterator[str]:
    """An HTTP server that answers every request with `status` and `body`, as an overloaded S3 might."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


SLOW_DOWN = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"


def test_slow_down_is_transient(s3_env: str):
    with _answering(503, SLOW_DOWN) as endpoint:
        from_boto3 = _raised(lambda: _boto3(endpoint).list_objects_v2(Bucket="stedi-landing"))
        from_delta = _raised(lambda: DeltaTable(TABLE_URI, storage_options=_delta_options(endpoint)))

    assert error_code(from_boto3) == error_code(from_delta) == "SlowDown"
    _assert_classified(
        from_boto3,
        LANDING_URI,
        LANDING,
        endpoint,
        f"Storage error on {LANDING_URI}: An error occurred (SlowDown) when calling the ListObjectsV2 "
        "operation (reached max retries: 0): Please reduce your request rate.",
        True,
    )
    _assert_classified(
        from_delta,
        TABLE_URI,
        LAKEHOUSE,
        endpoint,
        f"Storage error on {TABLE_URI}: Kernel error -> Generic S3 error (SlowDown)",
        True,
    )


@pytest.mark.parametrize(
    ("status", "transient"), [(503, True), (500, True), (501, False)], ids=["503", "500", "501"]
)
def test_status_without_an_error_document(s3_env: str, status: int, transient: bool):
    """No S3 error code in the answer (as for HEAD requests): the HTTP status decides."""
    with _answering(status, b"") as endpoint:
        from_boto3 = _raised(lambda: _boto3(endpoint).head_object(Bucket="stedi-landing", Key="k.json"))
        from_delta = _raised(lambda: DeltaTable(TABLE_URI, storage_options=_delta_options(endpoint)))

    reason = {503: "Service Unavailable", 500: "Internal Server Error", 501: "Not Implemented"}[status]
    assert error_code(from_boto3) == error_code(from_delta) == str(status)
    _assert_classified(
        from_boto3,
        LANDING_URI,
        LANDING,
        endpoint,
        f"Storage error on {LANDING_URI}: An error occurred ({status}) when calling the HeadObject "
        f"operation (reached max retries: 0): {reason}",
        transient,
    )
    _assert_classified(
        from_delta,
        TABLE_URI,
        LAKEHOUSE,
        endpoint,
        f"Storage error on {TABLE_URI}: Kernel error -> Generic S3 error ({status})",
        transient,
    )


def test_forbidden_without_an_error_document(s3_env: str):
    with _answering(403, b"") as endpoint:
        from_boto3 = _raised(lambda: _boto3(endpoint).head_object(Bucket="stedi-landing", Key="k.json"))
        from_delta = _raised(lambda: DeltaTable(TABLE_URI, storage_options=_delta_options(endpoint)))

    assert error_code(from_boto3) == error_code(from_delta) == "403"
    for uri, setting, error in [(LANDING_URI, LANDING, from_boto3), (TABLE_URI, LAKEHOUSE, from_delta)]:
        _assert_classified(
            error,
            uri,
            setting,
            endpoint,
            f"Access to {uri} was denied (403): check the AWS credentials and the bucket policy.",
            False,
        )


# 2. S3 error responses built by hand: the codes decide, whatever the message says.


def _client_error(code: str | None, status: int, message: str, operation: str = "GetObject") -> ClientError:
    error = {"Message": message} if code is None else {"Code": code, "Message": message}
    return ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


@pytest.mark.parametrize(
    ("code", "status", "transient"),
    [
        ("SlowDown", 503, True),
        ("ServiceUnavailable", 503, True),
        ("InternalError", 500, True),
        ("RequestTimeout", 400, True),
        ("503", 503, True),
        ("504", 504, True),
        (None, 502, True),
        ("NoSuchKey", 404, False),
        ("InvalidObjectState", 403, False),
        ("BadDigest", 400, False),
    ],
)
def test_built_client_errors_are_transient_by_code(code: str | None, status: int, transient: bool):
    uri = "s3://bucket/landing/customer/"
    # The message mentions "503" and "already exists": only the code may count.
    error = _client_error(code, status, "object already exists, try again after 503 seconds")

    assert error_code(error) == (code or str(status))
    # Without a code boto3 says "Unknown"; the status it fell back on is added to the sentence.
    shown, status_note = (code, "") if code else ("Unknown", f" ({status})")
    _assert_classified(
        error,
        uri,
        LANDING,
        "http://s3.test",
        f"Storage error on {uri}: An error occurred ({shown}) when calling the GetObject "
        f"operation: object already exists, try again after 503 seconds{status_note}",
        transient,
    )


@pytest.mark.parametrize(
    "code", ["AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"]
)
def test_built_client_errors_denied(code: str):
    uri = "s3://bucket/landing/customer/"
    error = _client_error(code, 403, "Service Unavailable (503)")
    _assert_classified(
        error,
        uri,
        LANDING,
        "http://s3.test",
        f"Access to {uri} was denied ({code}): check the AWS credentials and the bucket policy.",
        False,
    )


def test_built_client_error_missing_bucket():
    uri = "s3://bucket/landing/customer/"
    error = _client_error("NoSuchBucket", 404, "The specified bucket does not exist", "ListObjectsV2")
    _assert_classified(
        error,
        uri,
        LANDING,
        "http://s3.test",
        f"Bucket of {uri} does not exist at http://s3.test: create it or fix {LANDING}.",
        False,
    )


def test_read_timeout_is_transient():
    uri = "s3://bucket/landing/customer/"
    error = ReadTimeoutError(endpoint_url="http://s3.test/bucket?list-type=2")
    _assert_classified(
        error,
        uri,
        LANDING,
        "http://s3.test",
        f"Cannot reach http://s3.test for {uri}: check AWS_ENDPOINT_URL and that the S3 server is running.",
        True,
    )


def test_other_errors_keep_their_first_line_and_are_not_retried():
    uri = "/lake/trusted/customer_trusted"
    for error, first in [
        (
            ValueError("\n\x1b[31m↳\x1b[0m schema of column x changed\nsecond line"),
            "schema of column x changed",
        ),
        (RuntimeError(), "RuntimeError"),
        (OSError("upload rejected: HTTP 503 in the text is not a status"), None),
    ]:
        expected = first or str(error)
        _assert_classified(
            error, uri, LAKEHOUSE, "the default AWS endpoint", f"Storage error on {uri}: {expected}", False
        )


# 3. delta-rs: a missing table and lost commit races, as the lakehouse meets them.


def test_missing_local_table(tmp_path: Path):
    uri = str(tmp_path / "landing" / "customer_landing")
    error = _raised(lambda: DeltaTable(uri))

    assert type(error) is TableNotFoundError
    classified = _assert_classified(
        error,
        uri,
        LAKEHOUSE,
        "the default AWS endpoint",
        f"No Delta table at {uri}: materialize that asset first (or check {LAKEHOUSE}).",
        False,
    )
    assert isinstance(classified, TableMissing)


@pytest.mark.s3
def test_missing_table_in_an_existing_bucket(s3_env: str):
    make_bucket("stedi-errors-lake")
    uri = "s3://stedi-errors-lake/lh/landing/customer_landing"
    error = _raised(lambda: DeltaTable(uri, storage_options=_delta_options(s3_env)))

    assert type(error) is TableNotFoundError
    classified = _assert_classified(
        error,
        uri,
        LAKEHOUSE,
        s3_env,
        f"No Delta table at {uri}: materialize that asset first (or check {LAKEHOUSE}).",
        False,
    )
    assert isinstance(classified, TableMissing)


NO_REBASE = CommitProperties(max_commit_retries=0)
RIVAL = (
    "import sys, pyarrow as pa\n"
    "from deltalake import write_deltalake\n"
    "write_deltalake(sys.argv[1], pa.table({'id': [99]}), mode='overwrite')\n"
)


def _rival_commits_first(uri: str) -> pa.RecordBatchReader:
    """Data whose first batch is produced only after another process has committed `uri`.

    delta-rs has read the table (or found none) before it pulls the data, so the write is
    guaranteed to lose the race when it commits.
    """

    def batches() -> Iterator[pa.RecordBatch]:
        subprocess.run([sys.executable, "-c", RIVAL, uri], check=True, timeout=60)
        yield pa.record_batch([pa.array([1, 2, 3])], schema=SCHEMA)

    return pa.RecordBatchReader.from_batches(SCHEMA, batches())


RACE = "Another writer committed {uri} at the same time; this write was not applied."


def test_lost_race_on_an_existing_table(tmp_path: Path):
    uri = str(tmp_path / "table")
    write_deltalake(uri, _rows(0))
    error = _raised(
        lambda: write_deltalake(uri, _rival_commits_first(uri), mode="overwrite", commit_properties=NO_REBASE)
    )

    assert type(error) is CommitFailedError
    assert str(error) == "Failed to commit transaction: 0"  # TransactionError::MaxCommitAttempts(0)
    _assert_classified(error, uri, LAKEHOUSE, "the default AWS endpoint", RACE.format(uri=uri), True)
    assert DeltaTable(uri).version() == 1
    assert DeltaTable(uri).to_pyarrow_table()["id"].to_pylist() == [99]


def test_lost_race_on_the_first_commit_of_a_new_table(tmp_path: Path):
    uri = str(tmp_path / "table")
    error = _raised(
        lambda: write_deltalake(uri, _rival_commits_first(uri), mode="overwrite", commit_properties=NO_REBASE)
    )

    # Not the OSError "..._delta_log/00000000000000000000.json already exists" of old delta-rs:
    # 1.6 finds version 0 taken, reloads the table and fails like any other lost race.
    assert type(error) is CommitFailedError
    assert str(error) == "Failed to commit transaction: 0"
    _assert_classified(error, uri, LAKEHOUSE, "the default AWS endpoint", RACE.format(uri=uri), True)
    assert DeltaTable(uri).version() == 0
    assert DeltaTable(uri).to_pyarrow_table()["id"].to_pylist() == [99]


def test_stale_overwrite_with_retries_is_a_commit_conflict(tmp_path: Path):
    """With retries left delta-rs checks the race for conflicts; an overwrite of read data conflicts."""
    uri = str(tmp_path / "table")
    write_deltalake(uri, _rows(0))
    stale = DeltaTable(uri)
    write_deltalake(uri, _rows(1), mode="overwrite")
    error = _raised(
        lambda: write_deltalake(
            stale, _rows(2), mode="overwrite", commit_properties=CommitProperties(max_commit_retries=3)
        )
    )

    assert type(error) is CommitFailedError
    assert str(error).startswith(
        "Failed to commit transaction: "
        "Commit failed: a concurrent transaction deleted data this operation read."
    )
    _assert_classified(error, uri, LAKEHOUSE, "the default AWS endpoint", RACE.format(uri=uri), True)


def test_commit_refused_by_the_table_is_not_a_race(tmp_path: Path):
    """CommitFailedError also carries permanent refusals; only the race variants are transient."""
    uri = str(tmp_path / "table")
    write_deltalake(uri, _rows(0), configuration={"delta.appendOnly": "true"})
    error = _raised(lambda: write_deltalake(uri, _rows(1), mode="overwrite", commit_properties=NO_REBASE))

    assert type(error) is CommitFailedError
    _assert_classified(
        error,
        uri,
        LAKEHOUSE,
        "the default AWS endpoint",
        f"Storage error on {uri}: "
        "The transaction includes Remove action with data change but Delta table is append-only",
        False,
    )
