"""The employer's SFTP drop: list regular files by pattern, fetch one under the size cap, move it when accepted.

Same pinned host key, retries and error classes as delivery (it is a :class:`SftpTransport`). Remote
names are never trusted as paths: a name with a slash, a leading dot, ``..`` or a control character is
skipped when listing and refused when asked for, and the local copy's name never comes from the server.
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
import stat as stat_mod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carrierfeeds.credentials import SftpEndpoint
from carrierfeeds.errors import DataError, PermanentError, Refused, TransientError
from carrierfeeds.transport.base import RemoteFileExists, check_remote_name
from carrierfeeds.transport.sftp import READ_CHUNK, SftpTransport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteCensus:
    """A candidate file in the drop: plain name, size and modification time (seconds) as the server says."""

    name: str
    size: int
    mtime: int


def _plain(name: str) -> bool:
    try:
        check_remote_name(name)
    except Refused:
        return False
    return not name.endswith(".part")


def _exists(sftp: Any, path: str) -> bool:
    try:
        sftp.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
        return False
    return True


class SftpCensusDrop(SftpTransport):
    """``remote_dir`` on the employer's server; files matching ``pattern`` are census candidates."""

    def __init__(self, endpoint: SftpEndpoint, remote_dir: str, pattern: str = "*.csv", **kwargs: Any) -> None:
        super().__init__(endpoint, remote_dir, **kwargs)
        self.pattern = pattern

    def list_files(self) -> list[RemoteCensus]:
        """Regular files matching the pattern, newest first (symlinks, folders and odd names skipped)."""

        def op(session: Any) -> list[RemoteCensus]:
            found: list[RemoteCensus] = []
            skipped = 0
            # READDIR attributes are lstat()'s on OpenSSH: a symlink shows as a link, never as its target.
            for attrs in session.sftp.listdir_attr(self.remote_dir):
                name = attrs.filename
                if not fnmatch.fnmatchcase(name, self.pattern):
                    continue
                if attrs.st_mode is None or not stat_mod.S_ISREG(attrs.st_mode) or not _plain(name):
                    skipped += 1
                    continue
                found.append(RemoteCensus(name=name, size=int(attrs.st_size or 0), mtime=int(attrs.st_mtime or 0)))
            if skipped:
                log.warning("SFTP drop %s: skipped %d matching entr(ies) that are not plain regular files",
                            self.remote_dir, skipped)
            return sorted(found, key=lambda f: (f.mtime, f.name), reverse=True)

        files, _ = self._with_retries(f"list {self.remote_dir}", op)
        return files

    def fetch(self, remote: RemoteCensus, dst: Path, *, max_bytes: int) -> int:
        """Download ``remote`` to ``dst`` (0600), counting bytes against the cap; returns the size.

        The file must still be the regular file that was listed (same size and time) after the
        download, else it was being written: TransientError, try again later.
        """
        check_remote_name(remote.name)
        path = self._path(remote.name)

        def op(session: Any) -> int:
            sftp = session.sftp
            before = sftp.lstat(path)
            if before.st_mode is None or not stat_mod.S_ISREG(before.st_mode):
                raise Refused(f"{remote.name} in the SFTP drop is not a regular file; refusing it",
                              details={"remote_name": remote.name})
            if int(before.st_size or 0) > max_bytes:
                raise DataError(f"file is {before.st_size} bytes, over the census size cap of {max_bytes} bytes",
                                file=remote.name, rule="too_large",
                                details={"bytes": int(before.st_size or 0), "max_bytes": max_bytes})
            dst.unlink(missing_ok=True)
            fd = os.open(dst, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            total = 0
            with os.fdopen(fd, "wb") as out, sftp.open(path, "rb") as src:
                src.prefetch(int(before.st_size or 0))
                while chunk := src.read(READ_CHUNK):
                    total += len(chunk)
                    if total > max_bytes:
                        raise DataError(f"file grew past the census size cap of {max_bytes} bytes while "
                                        "downloading", file=remote.name, rule="too_large")
                    out.write(chunk)
            after = sftp.lstat(path)
            if (after.st_size, after.st_mtime) != (before.st_size, before.st_mtime) or total != after.st_size:
                raise TransientError(f"{remote.name} changed while it was downloaded (still being uploaded?)",
                                     details={"remote_name": remote.name})
            return total

        try:
            size, _ = self._with_retries(f"fetch {remote.name}", op)
        except BaseException:
            dst.unlink(missing_ok=True)
            raise
        log.info("fetched %s from the SFTP drop (%d bytes)", remote.name, size)
        return size

    def move(self, name: str, folder: str, *, sha256: str) -> str:
        """Move ``name`` into ``folder`` (absolute, or relative to the drop; created if missing), never over
        another file: a name already taken there gets the sha256 prefix appended. Returns the new path.
        Idempotent: when ``name`` has left the drop and is found in ``folder``, that path is returned."""
        check_remote_name(name)
        target_dir = folder.rstrip("/") if folder.startswith("/") else f"{self.remote_dir}/{folder.strip('/')}"

        def op(session: Any) -> str:
            sftp = session.sftp
            try:
                attrs = sftp.stat(target_dir)
                if attrs.st_mode is not None and not stat_mod.S_ISDIR(attrs.st_mode):
                    raise PermanentError("the processed folder on the server is not a folder")
            except FileNotFoundError:
                sftp.mkdir(target_dir, mode=0o700)
            candidates = (name, f"{name}.{sha256[:12]}")
            if not _exists(sftp, self._path(name)):
                # A retry after a move whose reply was lost: the file is already in the processed folder.
                for candidate in reversed(candidates):
                    if _exists(sftp, f"{target_dir}/{candidate}"):
                        log.info("accepted census %s was already moved to the processed folder", name)
                        return f"{target_dir}/{candidate}"
                raise PermanentError(f"{name} is no longer in the SFTP drop; it cannot be moved",
                                     details={"remote_name": name})
            for candidate in candidates:
                final = f"{target_dir}/{candidate}"
                try:
                    sftp.lstat(final)
                    continue
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    if exc.errno != errno.ENOENT:
                        raise
                # Plain SFTP rename refuses an existing target, so nothing is ever overwritten.
                sftp.rename(self._path(name), final)
                return final
            raise RemoteFileExists(f"{name} is already in the processed folder (twice); left in the drop",
                                   details={"remote_name": name})

        moved, _ = self._with_retries(f"move {name}", op)
        log.info("moved accepted census %s to the processed folder", name)
        return moved
