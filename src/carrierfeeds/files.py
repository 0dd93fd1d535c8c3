"""Local file primitives every stage shares: hashing, reading through a memory map, private atomic writes,
and owner-only key files.

Key files (the member-token key, the snapshot key, the staging key) all go through one reader and one
creator, so every key gets the same protections:

* read through ``O_NOFOLLOW`` (a symlink planted in the keys directory is refused, not followed), and
  checked on the open descriptor (``fstat``), so the file checked is the file read;
* refused unless it is a regular file that only its owner can read or write (mode 0600 or stricter);
* created with ``O_CREAT | O_EXCL`` at mode 0600 and fsynced, never overwriting: when two processes race
  to create one, the loser reads the winner's key instead of replacing it.

Callers decide the key's format (raw bytes, base64 text) and the error class their users expect; the
messages name the file and the mode, never the key.
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import os
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from carrierfeeds.errors import CarrierFeedsError

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def sha256_and_size(path: Path) -> tuple[str, int]:
    """The sha256 (hex) and size of the file at ``path``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def sha256_file(path: Path) -> str:
    """The sha256 (hex) of the file at ``path``."""
    return sha256_and_size(path)[0]


@contextmanager
def read_mapped(path: Path) -> Iterator[bytes | mmap.mmap]:
    """The bytes of ``path`` through a read-only memory map, closed when the block ends.

    For a large file a stage reads whole (the conformance gate's 834): its pages are mapped from the page
    cache instead of copied into fresh anonymous memory, which this VM pays for in kernel time. Slices of
    a map are bytes; numpy, hashlib and ``re`` read it as a buffer. An empty file, which cannot be mapped,
    is ``b""``. The file must not shrink while mapped (reading a page past its new end kills the process),
    so map only a run's own copy.

    A numpy array over the map keeps it exported and the map cannot close then: leaving the block
    normally with one still alive is a bug and raises BufferError; leaving it by an exception, whose
    traceback may still hold such arrays, leaves the map to be unmapped with the last of them instead of
    hiding that exception.
    """
    with path.open("rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            yield b""
            return
        view = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        yield view
    except BaseException:
        with suppress(BufferError):
            view.close()
        raise
    view.close()


@contextmanager
def open_private(path: Path) -> Iterator[BinaryIO]:
    """A file to write ``path`` through: created 0600 under a hidden temporary name, renamed into place
    when the block ends without an exception (a reader never sees part of it; a failure leaves no
    temporary behind)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_private(path: Path, chunks: Iterable[bytes]) -> tuple[str, int]:
    """Stream ``chunks`` to ``path`` privately and atomically (:func:`open_private`). Its sha256 and size."""
    digest, size = hashlib.sha256(), 0
    with open_private(path) as fh:
        for chunk in chunks:
            fh.write(chunk)
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


# ---------------------------------------------------------------------------------------- key files
def read_key_file(path: Path, *, what: str, error: type[CarrierFeedsError],
                  max_bytes: int = 1 << 16) -> bytes | None:
    """The bytes of the owner-only key file ``path``; None when it does not exist.

    ``what`` names the key in messages ("member-token key"); ``error`` is raised for a file that is not a
    regular file, is open to group or others, is larger than ``max_bytes`` or cannot be opened.
    """
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise error(f"cannot open the {what} file {path}: {exc.strerror}", details={"key_file": path.name}) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"the {what} file {path} is not a regular file", details={"key_file": path.name})
        if info.st_mode & 0o077:
            raise error(f"the {what} file {path} is readable or writable by group/others "
                        f"(mode {stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}",
                        details={"key_file": path.name, "mode": f"{stat.S_IMODE(info.st_mode):04o}"})
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise error(f"the {what} file {path} is larger than {max_bytes} bytes", details={"key_file": path.name})
    finally:
        os.close(fd)
    return b"".join(chunks)


def create_key_file(path: Path, content: bytes, *, what: str) -> bool:
    """Write ``content`` to a new owner-only file (0600, parent 0700); False when ``path`` already exists.

    Never overwrites: the caller reads the existing file when this returns False (another process won).
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
    except FileExistsError:
        return False
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    log.info("created %s file %s", what, path)
    return True


__all__ = ["create_key_file", "open_private", "read_key_file", "read_mapped", "sha256_and_size", "sha256_file",
           "write_private"]
