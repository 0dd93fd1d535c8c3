"""Small file primitives every stage shares: hashing a file, reading one through a memory map, and writing
one privately and atomically."""

from __future__ import annotations

import hashlib
import mmap
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

_CHUNK = 1 << 20


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


__all__ = ["open_private", "read_mapped", "sha256_and_size", "sha256_file", "write_private"]
