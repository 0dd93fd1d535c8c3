"""Deliveries: one intent per (feed, interval, payload), outcomes appended and folded into the record."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from ledger_helpers import JAN, Clock, payload, start

from carrierfeeds.ledger import DeliveryRecord, Ledger, LedgerError, UnknownRecord
from carrierfeeds.ledger.records import UnsafeLedgerValue

FPR = "0123456789ABCDEF0123456789ABCDEF01234567"


def intent(ledger: Ledger, clock: Clock, run_id: str, n: int = 1, **over: Any) -> DeliveryRecord:
    args: dict[str, Any] = dict(
        run_id=run_id, feed_id="acme-medical", interval_start=JAN[0], payload_sha256=payload(n),
        file_name=f"ACME_CARRIER_{n:09d}_20260101.x12.pgp", isa13=n, gs06=n, st02=n,
        recipient_fingerprint=FPR, member_counts={"members": 12, "audit_030": 12}, transport="sftp",
        now=clock())
    args.update(over)
    return ledger.record_delivery_intent(**args)


def test_intent_is_unique_on_feed_interval_payload(ledger: Ledger, raw: sa.Engine, clock: Clock) -> None:
    run = start(ledger, clock)
    first = intent(ledger, clock, run.run_id)
    again = intent(ledger, clock, run.run_id)
    assert again == first
    assert first.status == "pending" and first.updated_at == first.created_at
    assert first.member_counts == {"members": 12, "audit_030": 12}
    with raw.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM deliveries")).scalar_one() == 1
    # The database itself refuses a second row, whatever a buggy writer does.
    with pytest.raises(sa.exc.IntegrityError), raw.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO deliveries (delivery_id, run_id, feed_id, interval_start, payload_sha256, file_name,"
            " isa13, gs06, st02, recipient_fingerprint, member_counts, transport, created_at, seq, prev_hash,"
            " row_hash) SELECT 'dup', run_id, feed_id, interval_start, payload_sha256, file_name, isa13,"
            " gs06, st02, recipient_fingerprint, member_counts, transport, created_at, 999, prev_hash,"
            " row_hash FROM deliveries"))


def test_outcomes_are_appended_and_folded(ledger: Ledger, raw: sa.Engine, clock: Clock) -> None:
    run = start(ledger, clock)
    d = intent(ledger, clock, run.run_id)
    with raw.connect() as conn:
        intent_row = conn.execute(sa.text("SELECT * FROM deliveries")).all()
    ledger.record_delivery_outcome(d.delivery_id, status="failed", now=clock(), error_code="transient",
                                   message="timed out")
    failed = ledger.find_delivery(feed_id="acme-medical", interval_start=JAN[0], payload_sha256=payload(1))
    assert failed is not None and failed.status == "failed" and failed.size is None
    done_at = clock()
    ledger.record_delivery_outcome(d.delivery_id, status="delivered", now=done_at,
                                   ciphertext_sha256=payload(99), size=4096, remote_path="/inbound/x.pgp",
                                   host_key_fingerprint="SHA256:abc+/=", actor="airflow")
    got = ledger.find_delivery(feed_id="acme-medical", interval_start=JAN[0], payload_sha256=payload(1))
    assert got is not None
    assert (got.status, got.ciphertext_sha256, got.size, got.remote_path, got.host_key_fingerprint) == (
        "delivered", payload(99), 4096, "/inbound/x.pgp", "SHA256:abc+/=")
    assert got.updated_at == done_at and got.created_at == d.created_at
    with raw.connect() as conn:
        # The intent row is untouched; each outcome is its own row.
        assert conn.execute(sa.text("SELECT count(*) FROM delivery_outcomes")).scalar_one() == 2
        assert conn.execute(sa.text("SELECT * FROM deliveries")).all() == intent_row
    assert ledger.verify_chain().ok


def test_find_delivery_without_payload_prefers_the_delivered_one(ledger: Ledger, clock: Clock) -> None:
    run = start(ledger, clock)
    assert ledger.find_delivery(feed_id="acme-medical", interval_start=JAN[0]) is None
    sent = intent(ledger, clock, run.run_id, 1)
    ledger.record_delivery_outcome(sent.delivery_id, status="delivered", now=clock(), size=1)
    newer = intent(ledger, clock, run.run_id, 2, isa13=1, gs06=1, st02=1)
    assert newer.delivery_id != sent.delivery_id
    found = ledger.find_delivery(feed_id="acme-medical", interval_start=JAN[0])
    assert found is not None and found.delivery_id == sent.delivery_id
    assert ledger.find_delivery(feed_id="acme-medical", interval_start=JAN[0] + timedelta(days=1)) is None


def test_deliveries_filters(ledger: Ledger, clock: Clock) -> None:
    made = []
    for month in (1, 2, 3):
        run = start(ledger, clock, interval=(date(2026, month, 1), date(2026, month, 28)))
        made.append(intent(ledger, clock, run.run_id, month, interval_start=date(2026, month, 1)))
    ledger.record_delivery_outcome(made[1].delivery_id, status="delivered", now=clock())
    other = start(ledger, clock, feed_id="globex-dental")
    intent(ledger, clock, other.run_id, 7, feed_id="globex-dental")

    assert [d.delivery_id for d in ledger.deliveries(feed_id="acme-medical")] == [d.delivery_id for d in made]
    assert [d.delivery_id for d in ledger.deliveries(status="delivered")] == [made[1].delivery_id]
    assert [d.delivery_id for d in ledger.deliveries(since=made[1].created_at, until=made[2].created_at)] == \
        [made[1].delivery_id]
    assert len(ledger.deliveries()) == 4
    assert ledger.deliveries(status="pending", feed_id="globex-dental")[0].feed_id == "globex-dental"


def test_refusals(ledger: Ledger, clock: Clock) -> None:
    run = start(ledger, clock)
    ledger.allocate_control_numbers(run_id=run.run_id, sender_id="S", receiver_id="R", now=clock())
    with pytest.raises(LedgerError):  # numbers other than the run's allocation
        intent(ledger, clock, run.run_id, 5)
    with pytest.raises(UnknownRecord):
        intent(ledger, clock, "no-such-run", 1)
    with pytest.raises(UnsafeLedgerValue):
        intent(ledger, clock, run.run_id, 1, payload_sha256="ABC")
    with pytest.raises(UnsafeLedgerValue):
        intent(ledger, clock, run.run_id, 1, member_counts={"members": "twelve"})
    with pytest.raises(LedgerError):
        intent(ledger, clock, run.run_id, 1, isa13=0)
    d = intent(ledger, clock, run.run_id, 1)
    with pytest.raises(LedgerError):
        ledger.record_delivery_outcome(d.delivery_id, status="sent", now=clock())
    with pytest.raises(UnknownRecord):
        ledger.record_delivery_outcome("nope", status="delivered", now=clock())
    with pytest.raises(LedgerError):
        ledger.record_delivery_outcome(d.delivery_id, status="delivered", now=clock(), size=-1)
    assert ledger.find_delivery(feed_id="acme-medical", interval_start=JAN[0]).status == "pending"  # type: ignore[union-attr]
