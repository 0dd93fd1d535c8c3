"""Small file primitives every stage shares: hashing a file, and writing one privately and atomically."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

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


def write_private(path: Path, chunks: Iterable[bytes]) -> tuple[str, int]:
    """Stream ``chunks`` to ``path``: created 0600 under a hidden temporary name, renamed into place when
    complete (a reader never sees part of it; a failure leaves no temporary behind). Its sha256 and size."""
    digest, size = hashlib.sha256(), 0
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return digest.hexdigest(), size


__all__ = ["sha256_and_size", "sha256_file", "write_private"]
