"""The pseudonym key: what makes subject_id stable across runs and unlinkable without it.

The key comes from STEDI_PSEUDONYM_KEY. Without it, a local lakehouse uses a key generated once and
kept outside the lakehouse, in the user's config folder (one fixed path, so resetting the Dagster
instance or the lakehouse does not change every subject_id), and says so; an S3 lakehouse is shared
by many machines, so it refuses to run rather than let each machine invent its own pseudonyms.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from stedi_assets.storage.environment import (
    PSEUDONYM_KEY_VARIABLE,
    pseudonym_key_variable,
    user_config_folder,
)
from stedi_assets.storage.errors import StorageError
from stedi_assets.storage.lakehouse import is_s3

KEY_FILE = "pseudonym.key"


@dataclass(frozen=True)
class PseudonymKey:
    secret: bytes = field(repr=False)
    origin: str
    """Where the key came from, for the run's log (never the key)."""

    @property
    def key_id(self) -> str:
        """A short public fingerprint of the key, recorded in commits: which key made a subject_id."""
        return hashlib.sha256(b"stedi-pseudonym-key-id:" + self.secret).hexdigest()[:12]


def pseudonym_key(lakehouse_uri: str) -> PseudonymKey:
    """The key for a lakehouse: STEDI_PSEUDONYM_KEY, else (local lakehouse only) the generated one."""
    given = pseudonym_key_variable()
    if given:
        return PseudonymKey(given.encode(), PSEUDONYM_KEY_VARIABLE)
    if is_s3(lakehouse_uri):
        raise StorageError(
            f"The lakehouse {lakehouse_uri} is on S3, so its pseudonyms need a shared key: set "
            f"{PSEUDONYM_KEY_VARIABLE} (the same value on every machine that writes it).",
            False,
        )
    path = user_config_folder() / KEY_FILE
    return PseudonymKey(
        _generated(path), f"generated key in {path} (set {PSEUDONYM_KEY_VARIABLE} to choose one)"
    )


def _generated(path: Path) -> bytes:
    """The key file's key, created once (readable by its owner only) if there is none."""
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return path.read_bytes().strip()
    with os.fdopen(descriptor, "w") as file:
        file.write(secrets.token_hex(32) + "\n")
    return path.read_bytes().strip()
