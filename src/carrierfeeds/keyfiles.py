"""Owner-only secret files on local disk: the member-token key, the snapshot key, the staging key.

One way to read and create them, so every key file gets the same protections:

* read through ``O_NOFOLLOW`` (a symlink planted in the keys directory is refused, not followed), and
  checked on the open descriptor (``fstat``), so the file checked is the file read;
* refused unless it is a regular file that only its owner can read or write (mode 0600 or stricter);
* created with ``O_CREAT | O_EXCL`` at mode 0600 and fsynced, never overwriting: when two processes race
  to create one, the loser reads the winner's key instead of replacing it.

Callers decide the key's format (raw bytes, base64 text) and the error class their users expect; the
messages name the file and the mode, never the key.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from carrierfeeds.errors import CarrierFeedsError

log = logging.getLogger(__name__)

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


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


__all__ = ["create_key_file", "read_key_file"]
