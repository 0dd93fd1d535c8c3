"""Rejected, partially accepted and accepted-with-errors 999s: recorded, alerted with positions and codes
(never the carrier's copy of a value), and blocking the snapshot only when something was not taken."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path

import pytest
from ack_helpers import PLANTED, T0, collect, deliver, pyx12_999

from carrierfeeds.acknowledgments import ack_status, snapshot_blocked
from carrierfeeds.ledger import Ledger


def test_rejected_999_marks_the_delivery_and_alerts_positions_and_codes_never_values(
        ledger: Ledger, tmp_path: Path, inbox: Path, caplog: pytest.LogCaptureFixture) -> None:
    good, bad = deliver(ledger, 1), deliver(ledger, 2, broken=True)
    raw = pyx12_999(tmp_path, bad.x12)
    assert PLANTED.encode() in raw
    (inbox / "999_bad.x12").write_bytes(raw)
    (inbox / "999_good.x12").write_bytes(pyx12_999(tmp_path, good.x12))
    with caplog.at_level(logging.DEBUG):
        report = collect(ledger, inbox, tmp_path / "archive")
    assert report.count("recorded") == 2
    rows = {r.delivery_id: r for r in ledger.acknowledgments()}
    rejected = rows[bad.delivery.delivery_id]
    assert (rejected.status, rejected.sets_rejected, rejected.segment_errors, rejected.element_errors) == (
        "rejected", 1, 1, 1)
    assert rows[good.delivery.delivery_id].status == "accepted"
    (alert,) = report.alerts
    assert (alert.kind, alert.severity, alert.delivery_id, alert.isa13) == (
        "rejected", "error", bad.delivery.delivery_id, bad.delivery.isa13)
    element = next(e for e in alert.errors if "ik403" in e)
    assert (element["segment"], element["element"], element["reference"], element["ik403"]) == ("INS", 3, "875", "7")
    assert element["ik403_meaning"] == "invalid code value"
    assert element["ik304_meaning"] == "segment has data element errors"
    statuses = {s.delivery_id: s.status for s in ack_status(ledger, now=T0 + timedelta(hours=3))}
    assert statuses == {good.delivery.delivery_id: "accepted", bad.delivery.delivery_id: "rejected"}
    assert snapshot_blocked(ledger, bad.delivery.delivery_id)
    assert not snapshot_blocked(ledger, good.delivery.delivery_id)
    # The bad value is nowhere: not in alerts, logs, ledger rows or the kept copy.
    archived = b"".join(p.read_bytes() for p in (tmp_path / "archive").rglob("*") if p.is_file())
    assert archived and PLANTED.encode() not in archived
    assert PLANTED not in json.dumps([a.as_dict() for a in report.alerts], default=str)
    assert PLANTED not in caplog.text and "ack alert rejected" in caplog.text
    assert PLANTED not in repr(ledger.acknowledgments())


def test_partially_accepted_999_for_a_split_834_marks_alerts_and_blocks_the_snapshot(
        ledger: Ledger, tmp_path: Path, inbox: Path, caplog: pytest.LogCaptureFixture) -> None:
    sent = deliver(ledger, 1, cap=4, broken=True)
    raw = pyx12_999(tmp_path, sent.x12)
    # pyx12 reports one of two sets rejected as AK901 R; carriers following X231A1 send P for that.
    assert b"AK9*R*2*2*1~" in raw and PLANTED.encode() in raw
    (inbox / "999_partial.x12").write_bytes(raw.replace(b"AK9*R*2*2*1~", b"AK9*P*2*2*1~"))
    with caplog.at_level(logging.DEBUG):
        report = collect(ledger, inbox, tmp_path / "archive")
    (row,) = ledger.acknowledgments()
    assert (row.status, row.delivery_id) == ("partial", sent.delivery.delivery_id)
    assert (row.sets_accepted, row.sets_rejected, row.segment_errors, row.element_errors) == (1, 1, 1, 1)
    assert {(c["st02"], c["ik501"]) for c in row.codes if "ik501" in c} == {(1, "A"), (2, "R")}
    (alert,) = report.alerts
    assert (alert.kind, alert.severity, alert.delivery_id) == ("partial", "error", sent.delivery.delivery_id)
    assert "1 set(s) rejected (ST02 0002)" in alert.message
    group = next(e for e in alert.errors if "ak901" in e)
    assert (group["ak901"], group["ak901_meaning"]) == ("P", "partially accepted")
    element = next(e for e in alert.errors if "ik403" in e)
    assert (element["st02"], element["segment"], element["element"], element["ik403"]) == (2, "INS", 3, "7")
    (status,) = ack_status(ledger, now=T0 + timedelta(days=5))
    assert (status.status, status.sets_rejected) == ("partial", 1)
    assert snapshot_blocked(ledger, sent.delivery.delivery_id)
    assert PLANTED not in caplog.text and PLANTED not in json.dumps(alert.as_dict(), default=str)
    assert PLANTED not in repr(ledger.acknowledgments())


def test_accepted_with_errors_999_is_recorded_and_warned_not_blocking(ledger: Ledger, tmp_path: Path,
                                                                      inbox: Path) -> None:
    sent = deliver(ledger, 1)
    raw = pyx12_999(tmp_path, sent.x12)
    assert raw.count(b"IK5*A~") == 1 and b"AK9*A*1*1*1~" in raw
    # A carrier's own implementation note on the subscriber's DMG (position 12, loop 2100A).
    (inbox / "999_e.x12").write_bytes(raw.replace(b"IK5*A~", b"IK3*DMG*12*2100*I9~IK4*3*1068*I6~IK5*E*I5~")
                                      .replace(b"AK9*A*1*1*1~", b"AK9*E*1*1*1~"))
    report = collect(ledger, inbox, tmp_path / "archive")
    (row,) = ledger.acknowledgments()
    assert (row.status, row.delivery_id, row.sets_rejected, row.segment_errors) == (
        "accepted_with_errors", sent.delivery.delivery_id, 0, 1)
    (alert,) = report.alerts
    assert (alert.kind, alert.severity, alert.delivery_id) == ("accepted_with_errors", "warning",
                                                               sent.delivery.delivery_id)
    element = next(e for e in alert.errors if "ik403" in e)
    assert (element["segment"], element["position"], element["loop"], element["ik304"], element["ik403"]) == (
        "DMG", 12, "2100", "I9", "I6")
    assert element["ik403_meaning"] == "implementation code value not used"
    (status,) = ack_status(ledger, now=T0 + timedelta(days=5))
    assert status.status == "accepted_with_errors"
    assert not snapshot_blocked(ledger, sent.delivery.delivery_id)
