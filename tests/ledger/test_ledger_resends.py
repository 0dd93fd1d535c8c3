"""Forced resends in the ledger: new control numbers only once the newest file reached the recipient, the
same numbers for a retry, the replaced delivery named; and the run's delivery lock."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from ledger_helpers import JAN, Clock, payload, start

from carrierfeeds.ledger import Ledger, LedgerError


def _deliver(ledger: Ledger, clock: Clock, run_id: str, ic: object, n: int, status: str | None) -> str:
    d = ledger.record_delivery_intent(
        run_id=run_id, feed_id="acme-medical", interval_start=JAN[0], payload_sha256=payload(n),
        file_name=f"f{n}.x12.pgp", isa13=ic.isa13, gs06=ic.gs06, st02=ic.st02,  # type: ignore[attr-defined]
        recipient_fingerprint="ABCDEF", member_counts={"members": 3}, transport="sftp", now=clock())
    if status is not None:
        ledger.record_delivery_outcome(d.delivery_id, status=status, now=clock(), size=10)
    return d.delivery_id


def _resend(ledger: Ledger, clock: Clock, run_id: str, reason: str = "carrier lost it") -> object:
    return ledger.allocate_resend(run_id=run_id, sender_id="S", receiver_id="R", actor="ops.jane", reason=reason,
                                  now=clock())


def test_resend_numbers_are_minted_once_the_newest_file_arrived_and_reused_until_it_does(
        ledger: Ledger, clock: Clock) -> None:
    run = start(ledger, clock)
    first = ledger.allocate_control_numbers(run_id=run.run_id, sender_id="S", receiver_id="R", now=clock())
    first_id = _deliver(ledger, clock, run.run_id, first, 1, "failed")
    assert _resend(ledger, clock, run.run_id) is None  # not delivered yet: nothing to resend

    ledger.record_delivery_outcome(first_id, status="delivered", now=clock(), size=10)
    one = _resend(ledger, clock, run.run_id)
    assert one is not None and (one.isa13, one.gs06, one.st02) == (first.isa13 + 1,) * 3  # type: ignore[attr-defined]
    assert (one.resend, one.replaces_delivery_id) == (1, first_id)  # type: ignore[attr-defined]
    # Not delivered yet (no intent, then a failed attempt): the same numbers, nothing minted.
    assert _resend(ledger, clock, run.run_id, reason="retrying") == one
    one_id = _deliver(ledger, clock, run.run_id, one, 2, "failed")
    assert _resend(ledger, clock, run.run_id) == one

    ledger.record_delivery_outcome(one_id, status="forced_resend", now=clock(), size=10)
    two = _resend(ledger, clock, run.run_id, reason="again")
    assert two is not None and two.isa13 == first.isa13 + 2  # type: ignore[attr-defined]
    assert (two.resend, two.replaces_delivery_id) == (2, one_id)  # type: ignore[attr-defined]
    assert [x.isa13 for x in ledger.transmissions(run.run_id)] == [first.isa13, one.isa13, two.isa13]  # type: ignore[attr-defined]

    # The delivery of a resend names the one it replaces; control numbers of no transmission are refused.
    two_id = _deliver(ledger, clock, run.run_id, two, 3, None)
    found = {d.delivery_id: d.replaces_delivery_id for d in ledger.deliveries(feed_id="acme-medical")}
    assert found == {first_id: None, one_id: first_id, two_id: one_id}
    with pytest.raises(LedgerError):
        _deliver(ledger, clock, run.run_id, type("Ic", (), {"isa13": 77, "gs06": 77, "st02": 77})(), 4, None)
    with pytest.raises(LedgerError):
        _resend(ledger, clock, run.run_id, reason=" ")
    assert ledger.verify_chain().ok


def test_a_resend_is_hash_chained(ledger: Ledger, clock: Clock, raw: sa.Engine) -> None:
    run = start(ledger, clock)
    first = ledger.allocate_control_numbers(run_id=run.run_id, sender_id="S", receiver_id="R", now=clock())
    _deliver(ledger, clock, run.run_id, first, 1, "delivered")
    assert _resend(ledger, clock, run.run_id) is not None
    assert ledger.verify_chain().ok
    with raw.begin() as conn:
        conn.execute(sa.text("UPDATE resends SET reason = 'edited'"))
    verdict = ledger.verify_chain()
    assert not verdict.ok and verdict.first_broken is not None and verdict.first_broken.table == "resends"


def test_the_delivery_lock_serialises_one_run_and_not_two(ledger: Ledger) -> None:
    other_day = JAN[1]
    order: list[str] = []

    def second() -> None:
        with ledger.delivery_lock("acme-medical", JAN[0]):
            order.append("second")

    with ledger.delivery_lock("acme-medical", JAN[0]):
        order.append("first")
        # Another run's lock is free meanwhile (completes while this one is held).
        with ledger.delivery_lock("acme-medical", other_day):
            order.append("other run")
        waiter = threading.Thread(target=second)
        waiter.start()
        if ledger.engine.dialect.name == "postgresql":
            # Wait until the server shows the second session queued on the advisory lock.
            with ledger.engine.connect() as conn:
                while not conn.execute(sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                               "AND NOT granted")).scalar_one():
                    conn.rollback()
        order.append("first done")
    waiter.join()
    assert order == ["first", "other run", "first done", "second"]
