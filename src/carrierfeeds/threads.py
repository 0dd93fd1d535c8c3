"""How many threads or processes a stage may use, and running independent calls on threads in order: the
one implementation every stage uses.

The CPU-heavy steps (encoding census columns, making the 834 view's columns, rendering chunks, pyx12's
pieces) run on the CPUs this process may use: its affinity mask where the OS has one, so a worker pinned
to one CPU (a pool that fills the machine) runs them one at a time.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

_T = TypeVar("_T")

#: Threads a step uses at most by default: past 4 the measured steps gained nothing (benchmarks/README.md).
MAX_THREADS = 4


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def thread_count(workers: int | None, *, most: int = MAX_THREADS) -> int:
    """``workers`` (at least 1), or the CPUs this process may use, at most ``most``."""
    if workers is not None:
        return max(1, workers)
    return max(1, min(most, usable_cpus()))


def in_order(calls: Sequence[Callable[[], _T]], workers: int, *, name: str) -> list[_T]:
    """Each of ``calls``' results, in the order of ``calls``, made on up to ``workers`` threads (named
    ``name``); an error is the one the first failing call (in order) raised, as when they run one after
    another."""
    if workers <= 1 or len(calls) <= 1:
        return [call() for call in calls]
    with ThreadPoolExecutor(max_workers=min(workers, len(calls)), thread_name_prefix=name) as pool:
        futures = [pool.submit(call) for call in calls]
        return [future.result() for future in futures]


def in_order_outcomes(calls: Sequence[Callable[[], _T]], workers: int, *, name: str) -> list[_T | Exception]:
    """Like :func:`in_order`, but each call's exception is kept in its place instead of raised, for callers
    that raise it later, where its result would have been used."""
    return in_order([partial(_outcome, call) for call in calls], workers, name=name)


def _outcome(call: Callable[[], _T]) -> _T | Exception:
    try:
        return call()
    except Exception as exc:  # kept, not handled: the caller raises it where the result is used
        return exc


def iter_in_order(fn: Callable[..., _T], calls: Iterable[tuple[Any, ...]], workers: int, *,
                  name: str) -> Iterator[_T]:
    """``fn(*args)`` for each of ``calls``, on ``workers`` threads (named ``name``), yielded in call order.

    ``calls`` is read lazily and at most ``workers + 1`` calls are in flight, so memory stays a few
    results whatever the input's length (the 834 renderer streams its chunks through this).
    """
    if workers <= 1:
        for args in calls:
            yield fn(*args)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name) as pool:
        window: deque[Future[_T]] = deque()
        for args in calls:
            window.append(pool.submit(fn, *args))
            if len(window) > workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


__all__ = ["MAX_THREADS", "in_order", "in_order_outcomes", "iter_in_order", "thread_count", "usable_cpus"]
