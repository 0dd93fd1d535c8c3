"""Control numbers: once per run, reused on retry, unique and increasing per pair, even when racing."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from ledger_helpers import Clock, start

from carrierfeeds.ledger import Interchange, Ledger, LedgerError, UnknownRecord


def _race(n: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` in n threads released together; re-raise the first failure."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except BaseException as exc:  # collected and re-raised in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def test_allocated_once_and_reused_by_every_retry(ledger: Ledger, clock: Clock) -> None:
    run = start(ledger, clock)
    first = ledger.allocate_control_numbers(run_id=run.run_id, sender_id="ACME", receiver_id="CARRIER",
                                            now=clock())
    again = ledger.allocate_control_numbers(run_id=run.run_id, sender_id="ACME", receiver_id="CARRIER",
                                            now=clock())
    assert again == first == Interchange(1, 1, 1, first.created_at)
    with pytest.raises(LedgerError):
        ledger.allocate_control_numbers(run_id=run.run_id, sender_id="ACME", receiver_id="OTHER", now=clock())
    with pytest.raises(UnknownRecord):
        ledger.allocate_control_numbers(run_id="nope", sender_id="ACME", receiver_id="CARRIER", now=clock())


def test_numbers_increase_per_pair_independently(ledger: Ledger, clock: Clock) -> None:
    got: dict[str, list[int]] = {"CARRIER": [], "OTHER": []}
    for month in range(1, 7):
        run = start(ledger, clock, interval=(date(2026, month, 1), date(2026, month, 1) + timedelta(days=27)))
        for receiver in got:
            got[receiver].append(ledger.allocate_control_numbers(
                run_id=run.run_id if receiver == "CARRIER" else start(
                    ledger, clock, feed_id=f"other-{month}").run_id,
                sender_id="ACME", receiver_id=receiver, now=clock()).isa13)
    assert got == {"CARRIER": [1, 2, 3, 4, 5, 6], "OTHER": [1, 2, 3, 4, 5, 6]}


def test_isa13_wraps_from_999999999_to_1(ledger: Ledger, raw: sa.Engine, clock: Clock) -> None:
    a = start(ledger, clock, feed_id="a")
    ledger.allocate_control_numbers(run_id=a.run_id, sender_id="S", receiver_id="R", now=clock())
    with raw.begin() as conn:
        conn.execute(sa.text("UPDATE control_counters SET last_control = 999999998"))
    b, c = start(ledger, clock, feed_id="b"), start(ledger, clock, feed_id="c")
    assert ledger.allocate_control_numbers(run_id=b.run_id, sender_id="S", receiver_id="R",
                                           now=clock()).isa13 == 999_999_999
    assert ledger.allocate_control_numbers(run_id=c.run_id, sender_id="S", receiver_id="R",
                                           now=clock()).isa13 == 1


def test_concurrent_allocation_gives_unique_contiguous_numbers(ledger: Ledger, clock: Clock) -> None:
    """Eight workers, each with its own connection pool (as separate processes would), one pair."""
    runs = [start(ledger, clock, feed_id=f"feed-{i}").run_id for i in range(8)]
    url = ledger.engine.url.render_as_string(hide_password=False)
    now = clock()

    def allocate(i: int) -> int:
        own = Ledger.open(url)
        try:
            return own.allocate_control_numbers(run_id=runs[i], sender_id="S", receiver_id="R", now=now).isa13
        finally:
            own.close()

    numbers = _race(8, allocate)
    assert sorted(numbers) == list(range(1, 9))
    assert ledger.verify_chain().ok


def test_concurrent_allocation_for_one_run_agrees(ledger: Ledger, clock: Clock) -> None:
    """Retries racing each other for the same run all get the one interchange; no number is burnt."""
    run = start(ledger, clock)
    now = clock()
    got = _race(6, lambda _i: ledger.allocate_control_numbers(run_id=run.run_id, sender_id="S",
                                                             receiver_id="R", now=now))
    assert len(set(got)) == 1
    other = start(ledger, clock, feed_id="next")
    assert ledger.allocate_control_numbers(run_id=other.run_id, sender_id="S", receiver_id="R",
                                           now=clock()).isa13 == got[0].isa13 + 1
