"""Where the data lives: the landing zone's files and the lakehouse's Delta tables, local or on S3.

Plain classes with no Dagster in them: the storage resource builds them for the assets and the IO
manager, and `stedi sql` builds one directly. Every failure is a StorageError naming the URI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import polars as pl
from botocore.exceptions import BotoCoreError, ClientError
from deltalake import CommitProperties, DeltaTable
from deltalake.exceptions import DeltaError

from stedi_assets.rules.parsing import empty_raw_lines, raw_lines
from stedi_assets.storage.environment import S3Options
from stedi_assets.storage.errors import StorageError, classify

DEFAULT_LANDING_URI = "data/landing"
DEFAULT_LAKEHOUSE_URI = "lakehouse"
LANDING_SETTING = "--landing / STEDI_LANDING_URI"
LAKEHOUSE_SETTING = "--lakehouse / STEDI_LAKEHOUSE_URI"


def is_s3(uri: str) -> bool:
    return uri.startswith(("s3://", "s3a://"))


def _root(uri: str) -> str:
    uri = uri.rstrip("/")
    return uri if is_s3(uri) else str(Path(uri).absolute())


@dataclass(frozen=True)
class Lakehouse:
    """Delta tables at `<root>/<zone>/<table>/`; each write is one atomic overwrite commit."""

    root: str
    s3: S3Options = field(default_factory=S3Options)

    def table_uri(self, zone: str, name: str) -> str:
        return f"{_root(self.root)}/{zone}/{name}"

    def _options(self, uri: str) -> dict[str, str] | None:
        return self.s3.delta_options() if is_s3(uri) else None

    def _failure(self, uri: str, error: BaseException) -> StorageError:
        return classify(uri, error, LAKEHOUSE_SETTING, self.s3.endpoint)

    def write(self, uri: str, frame: pl.LazyFrame) -> None:
        """Streams the plan into one overwrite commit: the table changes whole or not at all.

        Commits are never rebased (max_commit_retries=0): delta-rs would otherwise rebase an
        overwrite that raced another writer's first commit onto it, keeping both frames. A lost
        race fails the write instead, as a transient error, and the caller recomputes.
        """
        try:
            frame.sink_delta(
                uri,
                mode="overwrite",
                storage_options=self._options(uri),
                credential_provider=None,
                delta_write_options={
                    "schema_mode": "overwrite",
                    "commit_properties": CommitProperties(max_commit_retries=0),
                },
            )
        except (OSError, DeltaError) as error:
            raise self._failure(uri, error) from error

    def open(self, uri: str, version: int | None = None) -> DeltaTable:
        """The table at one version (default: the latest); TableMissing when it was never written."""
        try:
            return DeltaTable(uri, storage_options=self._options(uri), version=version)
        except (OSError, DeltaError) as error:
            raise self._failure(uri, error) from error

    def scan(self, uri: str, version: int | None = None) -> pl.LazyFrame:
        """A lazy scan of one version (default: the latest) of a table."""
        return self.scan_opened(uri, self.open(uri, version))

    def scan_opened(self, uri: str, table: DeltaTable) -> pl.LazyFrame:
        """A lazy scan of a table already opened (at the version it was opened at)."""
        return pl.scan_delta(table, storage_options=self._options(uri), credential_provider=None)


@dataclass(frozen=True)
class LandingZone:
    """The raw JSON-lines files under `<root>/<source>/`, from a folder or an S3 prefix."""

    root: str
    s3: S3Options = field(default_factory=S3Options)

    def read_lines(self, source: str) -> pl.DataFrame:
        """All lines of every `*.json` file under <root>/<source>/, numbered per file, in path order."""
        root = self.root.rstrip("/")
        files = self._read_s3(root, source) if is_s3(root) else self._read_local(root, source)
        frames = [raw_lines(blob, name, landed_at) for name, blob, landed_at in files]
        return pl.concat(frames) if frames else empty_raw_lines()

    @staticmethod
    def _read_local(root: str, source: str) -> list[tuple[str, bytes, datetime]]:
        folder = Path(root) / source
        if not folder.is_dir():
            raise StorageError(
                f"Landing folder {folder.absolute()} does not exist. Put the {source} JSON-lines files "
                f"there, point {LANDING_SETTING} at the landing root, or run "
                f"`stedi generate --out {root}` for sample data.",
                False,
            )
        return [
            (str(p), p.read_bytes(), datetime.fromtimestamp(p.stat().st_mtime, UTC))
            for p in sorted(folder.rglob("*.json"))
            if p.is_file()
        ]

    def _read_s3(self, root: str, source: str) -> list[tuple[str, bytes, datetime]]:
        parsed = urlparse(root)
        bucket, prefix = parsed.netloc, f"{parsed.path.strip('/')}/{source}/".lstrip("/")
        uri = f"s3://{bucket}/{prefix}"
        client = self.s3.boto3_client()
        try:
            listed = [
                (obj["Key"], obj["LastModified"])
                for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                for obj in page.get("Contents", [])
            ]
            if not listed:
                raise StorageError(
                    f"Nothing under {uri}: put the {source} JSON-lines files there or point "
                    f"{LANDING_SETTING} at the landing root.",
                    False,
                )
            objects = sorted((key, modified) for key, modified in listed if key.endswith(".json"))
            return [
                (f"s3://{bucket}/{key}", client.get_object(Bucket=bucket, Key=key)["Body"].read(), modified)
                for key, modified in objects
            ]
        except (ClientError, BotoCoreError) as error:
            raise classify(uri, error, LANDING_SETTING, self.s3.endpoint) from error
