"""Helpers shared by the ledger tests: a hand-moved clock, run starters and synthetic payload hashes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from carrierfeeds.ledger import Ledger, RunRecord, sha256_hex

T0 = datetime(2026, 3, 1, 6, 30, tzinfo=UTC)
JAN = (date(2026, 1, 1), date(2026, 1, 31))


class Clock:
    """A clock the test moves by hand: every call is one second later."""

    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> datetime:
        self.t += timedelta(seconds=1)
        return self.t


def start(ledger: Ledger, clock: Clock, feed_id: str = "acme-medical", interval: tuple[date, date] = JAN,
          actor: str = "test") -> RunRecord:
    return ledger.start_run(feed_id=feed_id, interval_start=interval[0], interval_end=interval[1],
                            actor=actor, now=clock())


def payload(n: int) -> str:
    return sha256_hex(f"synthetic payload {n}")
