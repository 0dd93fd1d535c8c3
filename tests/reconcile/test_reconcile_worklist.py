"""The worklist in the ledger: chained rows, no duplicates on rerun, statuses as events, auto-close."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from carrierfeeds.ledger import Ledger, LedgerError
from carrierfeeds.ledger.records import UnsafeLedgerValue
from carrierfeeds.ledger.worklist import record_comparison, set_status, work_items
from carrierfeeds.reconcile.compare import Discrepancy

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
A = Discrepancy("m_00000000000000aa", "plan", "HLT", "plan")
B = Discrepancy("m_00000000000000bb", "missing_at_carrier", "", "")
SHA = "a" * 64


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    opened = Ledger.open(ledger_url)
    opened.upgrade()
    yield opened
    opened.close()


def _compare(ledger: Ledger, findings: list[Discrepancy], at: datetime) -> dict[str, int]:
    rec = record_comparison(ledger, feed_id="feed-1", findings=findings, file_sha256=SHA, file_name="back.834",
                            fmt="834", now=at)
    return {"opened": rec.opened, "seen": rec.seen, "reopened": rec.reopened, "auto_closed": rec.auto_closed,
            "open": rec.open_after}


def test_lifecycle_without_duplicates_and_chain_intact(ledger: Ledger) -> None:
    assert _compare(ledger, [A, B], T0) == {"opened": 2, "seen": 0, "reopened": 0, "auto_closed": 0, "open": 2}
    assert _compare(ledger, [A, B], T0 + timedelta(days=1)) == {
        "opened": 0, "seen": 2, "reopened": 0, "auto_closed": 0, "open": 2}
    items = {i.member_token: i for i in work_items(ledger, feed_id="feed-1")}
    assert len(items) == 2 and items[A.member_token].last_seen == T0 + timedelta(days=1)
    assert items[A.member_token].first_seen == T0
    a_id = items[A.member_token].discrepancy_id
    set_status(ledger, a_id, action="acknowledged", actor="ops.anna", now=T0 + timedelta(days=2))
    done = set_status(ledger, a_id, action="resolved", actor="ops.anna", reason="carrier fixed the plan",
                      now=T0 + timedelta(days=2))
    assert done.status == "resolved" and done.resolved_by == "ops.anna"
    with pytest.raises(LedgerError):
        set_status(ledger, a_id, action="resolved", actor="ops.anna", reason="again", now=T0 + timedelta(days=2))
    # B no longer found: auto-closed; A still found: stays resolved, no new row.
    assert _compare(ledger, [A], T0 + timedelta(days=3)) == {
        "opened": 0, "seen": 1, "reopened": 0, "auto_closed": 1, "open": 0}
    # B back again: reopened, not a second row.
    assert _compare(ledger, [A, B], T0 + timedelta(days=4))["reopened"] == 1
    statuses = {i.member_token: i.status for i in work_items(ledger, feed_id="feed-1")}
    assert statuses == {A.member_token: "resolved", B.member_token: "open"}
    with ledger.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM discrepancies")).scalar_one() == 2
    assert ledger.verify_chain().ok


def test_a_tampered_status_event_breaks_the_chain(ledger: Ledger) -> None:
    _compare(ledger, [A], T0)
    item = work_items(ledger)[0]
    set_status(ledger, item.discrepancy_id, action="resolved", actor="ops", reason="ok", now=T0)
    with ledger.engine.begin() as conn:
        conn.execute(sa.text("UPDATE discrepancy_events SET actor = 'someone' WHERE action = 'resolved'"))
    verdict = ledger.verify_chain()
    assert not verdict.ok and verdict.first_broken is not None
    assert verdict.first_broken.table == "discrepancy_events"


def test_phi_is_refused_by_the_guard(ledger: Ledger) -> None:
    with pytest.raises(UnsafeLedgerValue):
        record_comparison(ledger, feed_id="feed-1", findings=[Discrepancy("JANE DOE", "identity", "", "name")],
                          file_sha256=SHA, file_name="back.834", fmt="834", now=T0)
    with pytest.raises(UnsafeLedgerValue):
        _compare(ledger, [A], T0)
        set_status(ledger, work_items(ledger)[0].discrepancy_id, action="resolved", actor="ops",
                   reason="ssn 123-45-6789 was wrong", now=T0)
