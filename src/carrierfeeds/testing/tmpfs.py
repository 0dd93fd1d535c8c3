"""A small real filesystem for tests that need a full disk: a tmpfs of a given size (root only)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def tmpfs_unavailable() -> str | None:
    """Why a tmpfs cannot be mounted here (None when it can be tried)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    if not Path("/bin/mount").exists() and not Path("/usr/bin/mount").exists():
        return "no mount(8) on this machine"
    return None


@contextmanager
def mounted_tmpfs(where: Path, *, size: int) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes (mode 0700) mounted on ``where`` for the block; unmounted after.

    Raises OSError with mount's own message when the kernel refuses (no CAP_SYS_ADMIN in a container).
    """
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
                          capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise OSError(f"mount -t tmpfs failed: {done.stderr.strip()[:200]}")
    try:
        yield where
    finally:
        # Lazy: a gpg-agent or a leaked handle must not keep the test's mount alive after it.
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30, check=False)


def free_bytes(where: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem under ``where``."""
    st = os.statvfs(where)
    return st.f_bavail * st.f_frsize


def fill(where: Path, *, leave: int) -> Path:
    """A filler file under ``where`` taking all free space but ``leave`` bytes (page-rounded down)."""
    filler = where / "filler"
    take = free_bytes(where) - leave
    if take <= 0:
        raise ValueError(f"only {free_bytes(where)} bytes free; cannot leave {leave}")
    with filler.open("wb") as out:
        os.posix_fallocate(out.fileno(), 0, take)
    return filler
