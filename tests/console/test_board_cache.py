"""The console's board cache: the first request builds, later ones get the newest board at once, a
stale board is rebuilt in the background (one rebuild at a time), zero max age builds every time."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from carrierfeeds.console.board_cache import BoardCache

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


class _Builds:
    def __init__(self) -> None:
        self.count = 0
        self.release = threading.Event()
        self.release.set()

    def __call__(self) -> Any:
        self.release.wait(10)
        self.count += 1
        return SimpleNamespace(rows=(), name=f"board {self.count}")


def test_stale_board_is_served_while_one_rebuild_runs() -> None:
    now = [T0]
    builds = _Builds()
    cache = BoardCache(builds, max_age=timedelta(seconds=30), clock=lambda: now[0])
    assert cache.get().name == "board 1" and cache.get().name == "board 1" and builds.count == 1
    now[0] += timedelta(seconds=31)
    builds.release.clear()
    assert cache.get().name == "board 1"  # stale, served at once; a rebuild started
    assert cache.get().name == "board 1" and builds.count == 1  # a second request starts no second rebuild
    builds.release.set()
    deadline = time.monotonic() + 10
    while cache.get().name != "board 2":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert builds.count == 2


def test_zero_max_age_builds_on_every_request() -> None:
    builds = _Builds()
    cache = BoardCache(builds, max_age=timedelta(0), clock=lambda: T0)
    assert [cache.get().name, cache.get().name] == ["board 1", "board 2"]
