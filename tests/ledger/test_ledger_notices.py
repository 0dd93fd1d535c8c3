"""Notice sends in the ledger (SQLite and PostgreSQL): intent before outcome, never a send after ``sent``,
the rows on the hash chain (an edit is found), purged with their delivery, and the PHI guard."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from ledger_helpers import JAN, Clock, payload, start

from carrierfeeds.ledger import Ledger, LedgerError, UnknownRecord
from carrierfeeds.ledger.notices import (
    idempotency_key,
    notice_sends_of,
    record_notice_intent,
    record_notice_outcome,
    unsent_by_feed,
)
from carrierfeeds.ledger.records import UnsafeLedgerValue

FPR = "0123456789ABCDEF0123456789ABCDEF01234567"
NOTICE = payload(99)


def _delivery(ledger: Ledger, clock: Clock, n: int = 1) -> str:
    run = start(ledger, clock)
    record = ledger.record_delivery_intent(
        run_id=run.run_id, feed_id="acme-medical", interval_start=JAN[0], payload_sha256=payload(n),
        file_name=f"ACME_CARRIER_{n:09d}_20260101.834.pgp", isa13=n, gs06=n, st02=n, recipient_fingerprint=FPR,
        member_counts={"members": 3}, transport="sftp", now=clock())
    ledger.record_delivery_outcome(record.delivery_id, status="delivered", now=clock())
    return record.delivery_id


def test_intent_then_outcome_and_nothing_after_sent(ledger: Ledger, clock: Clock) -> None:
    d = _delivery(ledger, clock)
    sending = record_notice_intent(ledger, delivery_id=d, channel="webhook", notice_sha256=NOTICE, actor="t",
                                   now=clock())
    assert sending is not None and (sending.status, sending.tries) == ("sending", 1)
    assert sending.idempotency_key == idempotency_key(d, "webhook") != idempotency_key(d, "email")
    failed = record_notice_outcome(ledger, delivery_id=d, channel="webhook", status="failed", attempts=3,
                                   actor="t", now=clock(), error_code="notice_not_accepted",
                                   message="notice webhook at carrier.example answered HTTP 503")
    assert (failed.status, failed.attempts, failed.error_code, failed.notice_sha256) == (
        "failed", 3, "notice_not_accepted", NOTICE)
    assert unsent_by_feed(ledger) == {"acme-medical": 1}  # the board's count
    again = record_notice_intent(ledger, delivery_id=d, channel="webhook", notice_sha256=NOTICE, actor="t",
                                 now=clock())
    assert again is not None and again.tries == 2 and again.idempotency_key == sending.idempotency_key
    record_notice_outcome(ledger, delivery_id=d, channel="webhook", status="sent", attempts=1, actor="t",
                          now=clock())
    # Sent: a later intent is refused by returning None, in the same chain-locked transaction.
    assert record_notice_intent(ledger, delivery_id=d, channel="webhook", notice_sha256=NOTICE, actor="t",
                                now=clock()) is None
    [state] = notice_sends_of(ledger, [d])
    assert (state.status, state.tries) == ("sent", 2)
    assert unsent_by_feed(ledger) == {}
    # The other channel is its own.
    assert record_notice_intent(ledger, delivery_id=d, channel="email", notice_sha256=NOTICE, actor="t",
                                now=clock()) is not None
    assert unsent_by_feed(ledger) == {"acme-medical": 1}  # cut off while sending counts too
    assert ledger.verify_chain().ok


def test_refusals(ledger: Ledger, clock: Clock) -> None:
    d = _delivery(ledger, clock)
    with pytest.raises(LedgerError):  # no outcome without its intent
        record_notice_outcome(ledger, delivery_id=d, channel="email", status="sent", attempts=1, actor="t",
                              now=clock())
    with pytest.raises(UnknownRecord):
        record_notice_intent(ledger, delivery_id="0" * 32, channel="email", notice_sha256=NOTICE, actor="t",
                             now=clock())
    with pytest.raises(LedgerError):
        record_notice_intent(ledger, delivery_id=d, channel="fax", notice_sha256=NOTICE, actor="t", now=clock())
    record_notice_intent(ledger, delivery_id=d, channel="email", notice_sha256=NOTICE, actor="t", now=clock())
    with pytest.raises(UnsafeLedgerValue):  # the PHI guard: an SSN-shaped number never reaches the row
        record_notice_outcome(ledger, delivery_id=d, channel="email", status="failed", attempts=1, actor="t",
                              now=clock(), error_code="notice_refused", message="rejected member 123-45-6789")
    assert notice_sends_of(ledger, [d])[0].status == "sending"


def test_an_edited_notice_row_breaks_the_chain(ledger: Ledger, raw: sa.Engine, clock: Clock) -> None:
    d = _delivery(ledger, clock)
    record_notice_intent(ledger, delivery_id=d, channel="webhook", notice_sha256=NOTICE, actor="t", now=clock())
    record_notice_outcome(ledger, delivery_id=d, channel="webhook", status="failed", attempts=1, actor="t",
                          now=clock(), error_code="notice_refused")
    assert ledger.verify_chain().ok
    with raw.begin() as conn:  # someone turns the failure into a success
        conn.execute(sa.text("UPDATE notice_sends SET status = 'sent' WHERE status = 'failed'"))
    verdict = ledger.verify_chain()
    assert not verdict.ok and verdict.first_broken is not None and verdict.first_broken.table == "notice_sends"


def test_notice_rows_are_purged_with_their_delivery(ledger: Ledger, raw: sa.Engine, clock: Clock) -> None:
    d = _delivery(ledger, clock)
    record_notice_intent(ledger, delivery_id=d, channel="email", notice_sha256=NOTICE, actor="t", now=clock())
    record_notice_outcome(ledger, delivery_id=d, channel="email", status="sent", attempts=1, actor="t",
                          now=clock())
    held = ledger.purge_metadata(cutoff=clock() + timedelta(days=1), held_feeds={"acme-medical"}, actor="t",
                                 now=clock(), dry_run=True)
    assert "notice_sends" not in held.counts  # a hold keeps them with the delivery
    purge = ledger.purge_metadata(cutoff=clock() + timedelta(days=1), actor="t", now=clock())
    assert purge.counts["notice_sends"] == 2 and purge.counts["deliveries"] == 1
    with raw.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM notice_sends")).scalar_one() == 0
    assert ledger.verify_chain().ok
