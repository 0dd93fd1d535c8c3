"""Process hardening for the processes that hold member data or keys: no core dumps, and names from outside
(employers' and carriers' file names) made safe to log.

    disable_core_dumps()   core size limit 0 (hard, inherited by gpg and every child) and, on Linux, the
                           process marked not dumpable (no core, no ptrace by other processes of the user)
    loggable(name)         a name with control characters and backslashes escaped: one log line per event
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import resource
import sys

log = logging.getLogger(__name__)

_PR_SET_DUMPABLE = 4
_PR_GET_DUMPABLE = 3


def disable_core_dumps() -> None:
    """No core file from this process or its children (a core holds the census and the keys in memory).

    Best effort for the "not dumpable" mark: a platform without ``prctl`` keeps only the rlimit."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            log.warning("could not mark the process not dumpable (errno %d); core size is 0", ctypes.get_errno())


def dumpable() -> bool | None:
    """Whether the process may dump core or be traced (None where ``prctl`` is not available)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return bool(libc.prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0))


def loggable(name: str) -> str:
    """``name`` with backslashes and control characters (newline, CR, tab, escape, DEL, C1, line and
    paragraph separators) escaped as ``\\n``, ``\\x1b``, ``\\u2028``..., so a file name can never start a
    forged log line or move the terminal's cursor."""
    if name.isprintable() and "\\" not in name:
        return name
    return "".join(c if c.isprintable() and c != "\\" else c.encode("unicode_escape").decode("ascii")
                   for c in name)


__all__ = ["disable_core_dumps", "dumpable", "loggable"]
