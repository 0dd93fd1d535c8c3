"""Which step long work is on, for a person watching: the command line's progress display listens.

Code that takes long says ``step("validate")`` as it starts a step; nothing happens unless a listener
is set (``listening``), as the CLI does when its stderr is a terminal. A step name is a fixed word the
code chooses (a stage name), never data read from a file, so nothing here can carry member data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_listener: ContextVar[Callable[[str], None] | None] = ContextVar("carrierfeeds_progress", default=None)


def step(name: str) -> None:
    """Say that the step ``name`` starts (the previous one, if any, is done)."""
    listener = _listener.get()
    if listener is not None:
        listener(name)


@contextmanager
def listening(listener: Callable[[str], None]) -> Iterator[None]:
    """Within the block, ``listener`` hears every step this thread's work starts."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)
