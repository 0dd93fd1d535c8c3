"""A delivery awaits its 999 for the carrier's window, then is overdue; hand-offs and carriers with no
acknowledgment source are never overdue."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from ack_helpers import FEED, T0, collect, deliver, pyx12_999, ta1

from carrierfeeds.acknowledgments import ack_status, overdue_alerts
from carrierfeeds.ledger import Ledger


def test_overdue_when_no_999_within_the_carrier_window(ledger: Ledger, tmp_path: Path, inbox: Path) -> None:
    sent = deliver(ledger, 1)
    delivered_at = sent.delivery.updated_at
    (status,) = ack_status(ledger, now=delivered_at + timedelta(hours=23))
    assert status.status == "awaiting"
    (status,) = ack_status(ledger, now=delivered_at + timedelta(hours=25))
    assert (status.status, status.due_at) == ("overdue", delivered_at + timedelta(hours=24))
    windows = {FEED: timedelta(hours=48)}
    assert ack_status(ledger, now=delivered_at + timedelta(hours=25), windows=windows)[0].status == "awaiting"
    (alert,) = overdue_alerts([status], now=delivered_at + timedelta(hours=25))
    assert (alert.kind, alert.delivery_id, alert.isa13) == ("overdue", sent.delivery.delivery_id,
                                                            sent.delivery.isa13)
    # A TA1 acceptance does not stop the clock; the 999 does.
    (inbox / "ta1.x12").write_bytes(ta1(sent.delivery.isa13, "A", "000"))
    collect(ledger, inbox, tmp_path / "archive")
    assert ack_status(ledger, now=delivered_at + timedelta(hours=25))[0].status == "overdue"
    (inbox / "999.x12").write_bytes(pyx12_999(tmp_path, sent.x12))
    collect(ledger, inbox, tmp_path / "archive")
    assert ack_status(ledger, now=delivered_at + timedelta(hours=25))[0].status == "accepted"


def test_manual_handoffs_are_never_overdue(ledger: Ledger) -> None:
    pending, handed, sent = (deliver(ledger, 1, transport="manual"), deliver(ledger, 2, transport="manual"),
                             deliver(ledger, 3))
    ledger.confirm_handoff(handed.delivery.delivery_id, by="ops", method="courier",
                           received_by="carrier.desk", now=T0 + timedelta(hours=1))
    late = T0 + timedelta(days=3)
    states = {s.delivery_id: s.status for s in ack_status(ledger, now=late)}
    # pending_handoff has not reached the carrier at all; handed_off reached a person, not a system.
    assert states == {handed.delivery.delivery_id: "not_expected", sent.delivery.delivery_id: "overdue"}
    assert pending.delivery.delivery_id not in states
    assert [a.delivery_id for a in overdue_alerts(ack_status(ledger, now=late), now=late)] == [
        sent.delivery.delivery_id]


def test_no_source_feeds_are_not_expected_unless_an_ack_arrives(ledger: Ledger, tmp_path: Path,
                                                                inbox: Path) -> None:
    quiet, answered = deliver(ledger, 1), deliver(ledger, 2)
    (inbox / "ta1_r.x12").write_bytes(ta1(answered.delivery.isa13, "R", "006"))
    collect(ledger, inbox, tmp_path / "archive")
    late = T0 + timedelta(days=3)
    states = {s.delivery_id: s.status for s in ack_status(ledger, now=late, no_source={FEED})}
    # An acknowledgment someone collected by hand still counts; silence is not a failure.
    assert states == {quiet.delivery.delivery_id: "not_expected", answered.delivery.delivery_id: "rejected"}
    assert {s.delivery_id: s.status for s in ack_status(ledger, now=late)}[quiet.delivery.delivery_id] == "overdue"
