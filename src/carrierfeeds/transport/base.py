"""The delivery interface: ``deliver`` a file under a plain remote name, atomically, never over another;
given ``expect_sha256``, only if the bytes sent hash to it (checked while they stream, before the rename)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from carrierfeeds.errors import PermanentError, Refused

_BAD_CHARS = re.compile(r"[/\\\x00-\x1f\x7f]")
TEMP_PREFIX = "."
TEMP_SUFFIX = ".part"


class RemoteFileExists(PermanentError):
    """The final name is already taken on the far side; we never overwrite a delivered file."""

    code = "remote_file_exists"


class CiphertextMismatch(Refused):
    """The bytes read for upload are not the ciphertext the ledger recorded: refused before the rename,
    the temporary upload removed (fail closed; a retry would read the same bytes)."""

    code = "ciphertext_mismatch"


@dataclass(frozen=True)
class Receipt:
    """A completed hand-off: the final path on the far side, its size as the far side reports it, the host
    key we verified (``SHA256:...``; None for a local folder) and how many attempts it took.

    ``verified`` is False when the file was renamed into place but gone again before we could look at
    it (a carrier collecting at once after a lost reply): delivered, not re-verified."""

    remote_path: str
    size: int
    host_key_fingerprint: str | None
    attempts: int
    verified: bool = True


@dataclass(frozen=True)
class RemoteFile:
    """A file found on the far side, by name and size (enough to reconcile an interrupted run)."""

    name: str
    size: int


@runtime_checkable
class Transport(Protocol):
    """Every transport: ``deliver`` appears complete under ``remote_name`` or not at all."""

    name: str

    def deliver(self, local: Path, remote_name: str, *, expect_sha256: str | None = None) -> Receipt: ...

    def stat(self, remote_name: str) -> RemoteFile | None: ...


def check_remote_name(remote_name: str) -> str:
    """A plain file name (no path, no leading dot, no control characters) or Refused."""
    if (not remote_name or len(remote_name) > 255 or remote_name in (".", "..")
            or remote_name.startswith(TEMP_PREFIX) or _BAD_CHARS.search(remote_name)):
        raise Refused("remote name must be a plain file name: no '/', no '..', no leading '.', "
                      "no control characters, at most 255 characters", details={"length": len(remote_name)})
    return remote_name


def mismatch(remote_name: str, expect_sha256: str, sent_sha256: str) -> CiphertextMismatch:
    """The refusal for bytes that are not the expected ciphertext (hashes only: never content)."""
    return CiphertextMismatch(f"{remote_name}: the bytes read for upload are not the recorded ciphertext "
                              "(sha256 differs); not renamed into place, temporary upload removed",
                              details={"remote_name": remote_name, "expected_sha256": expect_sha256,
                                       "sent_sha256": sent_sha256})


def temp_name(remote_name: str) -> str:
    """The name a file is written under before it is renamed into place (hidden from carrier pickup)."""
    return f"{TEMP_PREFIX}{remote_name}{TEMP_SUFFIX}"
