"""Storage failures (boto3 and delta-rs) as one readable sentence, and whether retrying can help.

boto3 errors are classified by their exception class and S3 error code. delta-rs errors by their
exception type first; only its object-store failures, which reach Python as a plain OSError with
nothing structured in them, are read for the S3 error code or HTTP status the server sent.
"""

from __future__ import annotations

import re

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from deltalake.exceptions import CommitFailedError, TableNotFoundError

DENIED = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "403"}
)
MISSING_BUCKET = frozenset({"NoSuchBucket"})
THROTTLED = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "500", "502", "503", "504"}
)

# A lost commit race in delta-rs 1.6, whether two writers overwrite an existing table or both
# create a new one, is a CommitFailedError reading "Failed to commit transaction: 0": with
# max_commit_retries=0 the loser gets TransactionError::MaxCommitAttempts(0). (A writer that finds
# version 0 already written reloads the table and takes the same path; delta-rs before 1.0 raised
# an OSError "... _delta_log/00000000000000000000.json already exists" there instead, which is why
# the old classifier matched that text; 1.6 never does.) With retries left, a race that cannot be
# rebased is TransactionError::CommitConflict, printed with the same prefix.
# The type alone is too broad: CommitFailedError carries every TransactionError, also the
# permanent ones (an append-only table, unsupported protocol features). delta-rs exposes the
# variant only through its message, so the narrowest structured signal is the type together with
# the prefix that exactly those two race variants print.
_COMMIT_RACE = "Failed to commit transaction: "

# object_store puts the S3 error document in the message when the server sent one...
_S3_CODE = re.compile(r"<Code>(\w+)</Code>")
# ...and the status line always: "Server returned non-2xx status code" ↳ "503 Service Unavailable".
_HTTP_STATUS = re.compile(r"non-2xx status code\W+(\d{3})\b")
# A request that got no response at all: reqwest's "error sending request" and what caused it.
_UNREACHABLE = re.compile(r"error sending request|Connection refused|dns error|operation timed out", re.I)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class StorageError(Exception):
    """A storage failure explained in one sentence; `transient` when a retry may succeed."""

    def __init__(self, message: str, transient: bool):
        super().__init__(message)
        self.message = message
        self.transient = transient


class TableMissing(StorageError):
    """No Delta table at the URI: it was never materialized (or the root is wrong)."""

    def __init__(self, message: str):
        super().__init__(message, transient=False)


def _text(error: BaseException) -> str:
    return _ANSI.sub("", str(error))


def error_code(error: BaseException) -> str | None:
    """The S3 error code (or, failing that, the HTTP status) an error carries, if any.

    boto3 gives both structured; delta-rs only inside the message of an object-store error.
    """
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return details.get("Code") or (str(status) if status else None)
    if isinstance(error, BotoCoreError):
        return None
    text = _text(error)
    found = _S3_CODE.search(text) or _HTTP_STATUS.search(text)
    return found.group(1) if found else None


def lost_commit_race(error: BaseException) -> bool:
    """Another writer committed the table between this write's read and its commit (see above)."""
    return isinstance(error, CommitFailedError) and str(error).startswith(_COMMIT_RACE)


def _unreachable(error: BaseException, code: str | None) -> bool:
    if isinstance(error, (ConnectionError, HTTPClientError)):
        return True
    if isinstance(error, (BotoCoreError, ClientError)):
        return False
    # delta-rs: an object-store error that carries no status, because no response ever came.
    return code is None and _UNREACHABLE.search(_text(error)) is not None


def classify(uri: str, error: BaseException, setting: str, endpoint: str) -> StorageError:
    """What went wrong with `uri` and what to fix (`setting` names the option that points there)."""
    if lost_commit_race(error):
        return StorageError(
            f"Another writer committed {uri} at the same time; this write was not applied.", True
        )
    if isinstance(error, TableNotFoundError):
        return TableMissing(f"No Delta table at {uri}: materialize that asset first (or check {setting}).")
    if isinstance(error, (NoCredentialsError, PartialCredentialsError)):
        return StorageError(
            f"No AWS credentials for {uri}: "
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE).",
            False,
        )
    code = error_code(error)
    if code in MISSING_BUCKET:
        return StorageError(
            f"Bucket of {uri} does not exist at {endpoint}: create it or fix {setting}.", False
        )
    if code in DENIED:
        return StorageError(
            f"Access to {uri} was denied ({code}): check the AWS credentials and the bucket policy.", False
        )
    if _unreachable(error, code):
        return StorageError(
            f"Cannot reach {endpoint} for {uri}: check AWS_ENDPOINT_URL and that the S3 server is running.",
            True,
        )
    lines = (line.strip(" ↳") for line in _text(error).splitlines())
    first = next((line for line in lines if line), type(error).__name__)
    if code is not None and code not in first:
        first = f"{first} ({code})"
    return StorageError(f"Storage error on {uri}: {first}", code in THROTTLED)
