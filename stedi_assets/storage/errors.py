"""Storage failures (boto3 and delta-rs) as one readable sentence, and whether retrying can help.

boto3 errors are classified by their exception class and S3 error code; delta-rs errors by their
exception type and, for object-store failures, the S3 error code or HTTP status they carry.
"""

from __future__ import annotations

import re

from botocore.exceptions import (
    ClientError,
    ConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from deltalake.exceptions import CommitFailedError

DENIED = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "403"}
)
MISSING_BUCKET = frozenset({"NoSuchBucket"})
THROTTLED = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "500", "502", "503", "504"}
)
# object_store names a failed request by its cause; these are the connection-level ones.
_UNREACHABLE = re.compile(r"Connection refused|dns error|operation timed out|error sending request", re.I)
_S3_CODE = re.compile(r"<Code>(\w+)</Code>")
_HTTP_STATUS = re.compile(r"status (\d{3})")
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


def error_code(error: BaseException) -> str | None:
    """The S3 error code (or, failing that, the HTTP status) an error carries, if any."""
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return details.get("Code") or (str(status) if status else None)
    text = str(error)
    found = _S3_CODE.search(text) or _HTTP_STATUS.search(text)
    return found.group(1) if found else None


def classify(uri: str, error: BaseException, setting: str, endpoint: str) -> StorageError:
    """What went wrong with `uri` and what to fix (`setting` names the option that points there)."""
    code = error_code(error)
    if isinstance(error, CommitFailedError):
        return StorageError(
            f"Another writer committed {uri} at the same time; this write was not applied.", True
        )
    if code in MISSING_BUCKET:
        return StorageError(
            f"Bucket of {uri} does not exist at {endpoint}: create it or fix {setting}.", False
        )
    if code in DENIED:
        return StorageError(
            f"Access to {uri} was denied ({code}): check the AWS credentials and the bucket policy.", False
        )
    if isinstance(error, (NoCredentialsError, PartialCredentialsError)):
        return StorageError(
            f"No AWS credentials for {uri}: "
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE).",
            False,
        )
    if isinstance(error, (ConnectionError, ReadTimeoutError)) or (
        not isinstance(error, ClientError) and code is None and _UNREACHABLE.search(str(error))
    ):
        return StorageError(
            f"Cannot reach {endpoint} for {uri}: check AWS_ENDPOINT_URL and that the S3 server is running.",
            True,
        )
    text = _ANSI.sub("", str(error))
    first = next((line.strip(" ↳") for line in text.splitlines() if line.strip()), type(error).__name__)
    return StorageError(f"Storage error on {uri}: {first}", code in THROTTLED)
