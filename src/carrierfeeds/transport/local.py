"""Delivery into a carrier inbox folder on this machine: temp name, fsync, link into place, no overwrite."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
from pathlib import Path

from carrierfeeds.errors import PermanentError, TransientError
from carrierfeeds.files import sha256_file
from carrierfeeds.transport.base import (
    Receipt,
    RemoteFile,
    RemoteFileExists,
    check_remote_name,
    mismatch,
    temp_name,
)

log = logging.getLogger(__name__)

_CHUNK = 4 * 1024 * 1024


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalTransport:
    """A folder the carrier (or its pickup agent) reads; created 0700 if missing."""

    name = "local"

    def __init__(self, inbox: Path) -> None:
        self.inbox = Path(inbox)

    def stat(self, remote_name: str) -> RemoteFile | None:
        check_remote_name(remote_name)
        try:
            st = (self.inbox / remote_name).stat()
        except FileNotFoundError:
            return None
        return RemoteFile(name=remote_name, size=st.st_size)

    def sha256(self, remote_name: str) -> str | None:
        """The SHA-256 of the file under its final name, or None when there is none (reconciliation)."""
        check_remote_name(remote_name)
        try:
            return sha256_file(self.inbox / remote_name)
        except FileNotFoundError:
            return None

    def deliver(self, local: Path, remote_name: str, *, expect_sha256: str | None = None) -> Receipt:
        """Copy under a temp name, fsync, link into place; with ``expect_sha256`` only bytes that hash to
        it (hashed as they are copied; else the temp file goes and CiphertextMismatch is raised)."""
        check_remote_name(remote_name)
        self.inbox.mkdir(parents=True, exist_ok=True, mode=0o700)
        final = self.inbox / remote_name
        tmp = self.inbox / temp_name(remote_name)
        if final.exists():
            raise RemoteFileExists(f"{remote_name} already exists in the inbox; not overwriting",
                                   details={"remote_name": remote_name})
        size = local.stat().st_size
        # A temp file left by an interrupted earlier attempt is ours: start over.
        tmp.unlink(missing_ok=True)
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, local.open("rb") as src:
                while block := src.read(_CHUNK):
                    out.write(block)
                    digest.update(block)
                out.flush()
                os.fsync(out.fileno())
            if expect_sha256 is not None and digest.hexdigest() != expect_sha256:
                raise mismatch(remote_name, expect_sha256, digest.hexdigest())
            written = tmp.stat().st_size
            if written != size:
                raise TransientError(f"short write: {written} of {size} bytes",
                                     details={"remote_name": remote_name})
            try:
                # link() fails if the final name exists, so a racing writer is never overwritten.
                os.link(tmp, final)
            except FileExistsError:
                raise RemoteFileExists(f"{remote_name} appeared in the inbox while writing; not overwriting",
                                       details={"remote_name": remote_name}) from None
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV):
                    raise
                # Filesystems without hard links: rename after a fresh check (a small race, logged).
                if final.exists():
                    raise RemoteFileExists(f"{remote_name} already exists in the inbox; not overwriting",
                                           details={"remote_name": remote_name}) from None
                log.info("inbox filesystem has no hard links; renaming %s into place", remote_name)
                os.rename(tmp, final)
            tmp.unlink(missing_ok=True)
            _fsync_dir(self.inbox)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EIO, errno.EAGAIN):
                raise TransientError(f"writing {remote_name} to the inbox failed: {exc.strerror}",
                                     details={"errno": exc.errno}) from exc
            raise PermanentError(f"writing {remote_name} to the inbox failed: {exc.strerror}",
                                 details={"errno": exc.errno}) from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        log.info("delivered %s to local inbox (%d bytes)", remote_name, size)
        return Receipt(remote_path=str(final), size=size, host_key_fingerprint=None, attempts=1)
