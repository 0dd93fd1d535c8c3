"""The console's board, rebuilt at most every ``max_age`` and never while a request waits once it exists.

Building the board reads every feed file and asks the ledger per feed (:mod:`carrierfeeds.console.board`),
which takes a noticeable time over a thousand feeds and a large ledger (benchmarks/README.md). The first
request builds the board; later requests get the newest board at once, and one that finds it older than
``max_age`` starts a rebuild in a background thread. A page shows the board's ``generated_at``, so its age
is never hidden.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Generic, TypeVar

Board = TypeVar("Board")
log = logging.getLogger(__name__)


class BoardCache(Generic[Board]):
    """The newest board, rebuilt by ``build`` in the background once older than ``max_age`` (zero: every
    request builds its own)."""

    def __init__(self, build: Callable[[], Board], *, max_age: timedelta, clock: Callable[[], datetime]) -> None:
        self._build, self._max_age, self._clock = build, max_age, clock
        self._lock = threading.Lock()
        self._board: Board | None = None
        self._built_at: datetime | None = None
        self._rebuilding = False

    def get(self) -> Board:
        if self._max_age <= timedelta(0):
            return self._build()
        with self._lock:
            board, built_at = self._board, self._built_at
            stale = built_at is None or self._clock() - built_at >= self._max_age
            start = board is not None and stale and not self._rebuilding
            if start:
                self._rebuilding = True
        if board is None:
            return self._rebuild()
        if start:
            threading.Thread(target=self._rebuild_quietly, name="carrierfeeds-board", daemon=True).start()
        return board

    def _rebuild(self) -> Board:
        started = self._clock()
        try:
            board = self._build()
        finally:
            with self._lock:
                self._rebuilding = False
        with self._lock:
            self._board, self._built_at = board, started
        log.info("board rebuilt")
        return board

    def _rebuild_quietly(self) -> None:
        from carrierfeeds.errors import CarrierFeedsError

        try:
            self._rebuild()
        except CarrierFeedsError as exc:  # the ledger went away: the next request tries again
            log.warning("board rebuild failed: %s", exc.message)
