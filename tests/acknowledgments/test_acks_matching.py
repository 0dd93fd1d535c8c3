"""Acknowledgments matched to their deliveries: pyx12's 999s and hand-written TA1s, split files, strangers."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from ack_helpers import FEED, RECEIVER, SENDER, T0, collect, config_root, deliver, pyx12_999, ta1

from carrierfeeds.acknowledgments import ack_infos, ack_status, snapshot_blocked
from carrierfeeds.ledger import Ledger
from carrierfeeds.x12.check import check_834


def test_pyx12_999_for_our_834_is_matched_recorded_once_and_chained(ledger_url: str, tmp_path: Path,
                                                                     inbox: Path) -> None:
    led = Ledger.open(ledger_url)
    led.upgrade()
    try:
        sent = deliver(led, 1)
        (inbox / "999_0001.x12").write_bytes(pyx12_999(tmp_path, sent.x12))
        report = collect(led, inbox, tmp_path / "archive")
        assert (report.count("recorded"), report.alerts) == (1, ())
        (row,) = led.acknowledgments()
        assert (row.kind, row.status, row.delivery_id, row.isa13) == ("999", "accepted", sent.delivery.delivery_id,
                                                                      sent.delivery.isa13)
        assert (row.sender_id, row.receiver_id, row.control_number) == (RECEIVER, SENDER, sent.delivery.gs06)
        # The same bytes again, under another name too: processed once.
        (inbox / "999_0001_again.x12").write_bytes((inbox / "999_0001.x12").read_bytes())
        again = collect(led, inbox, tmp_path / "archive")
        assert again.count("duplicate") == 2 and again.count("recorded") == 0
        assert len(led.acknowledgments()) == 1
        (status,) = ack_status(led, now=T0 + timedelta(days=5))
        assert (status.status, status.delivery_id) == ("accepted", sent.delivery.delivery_id)
        assert not snapshot_blocked(led, sent.delivery.delivery_id)
        assert ack_infos(led)[sent.delivery.delivery_id].status == "accepted"
        assert led.verify_chain().ok
    finally:
        led.close()


def test_hand_written_ta1_accept_and_reject(ledger: Ledger, tmp_path: Path, inbox: Path) -> None:
    accepted, rejected = deliver(ledger, 1), deliver(ledger, 2)
    (inbox / "ta1_a.x12").write_bytes(ta1(accepted.delivery.isa13, "A", "000"))
    (inbox / "ta1_r.x12").write_bytes(ta1(rejected.delivery.isa13, "R", "006"))
    report = collect(ledger, inbox, tmp_path / "archive")
    rows = {r.delivery_id: r for r in ledger.acknowledgments()}
    assert rows[accepted.delivery.delivery_id].status == "accepted"
    assert rows[rejected.delivery.delivery_id].status == "rejected"
    assert rows[rejected.delivery.delivery_id].codes[0]["ta105"] == "006"
    (alert,) = report.alerts
    assert alert.kind == "rejected" and alert.errors[0]["ta105_meaning"] == "invalid sender id"
    later = T0 + timedelta(hours=1)
    states = {s.delivery_id: (s.status, s.interchange) for s in ack_status(ledger, now=later)}
    # An accepting TA1 is not the 999: that one is still awaited.
    assert states == {accepted.delivery.delivery_id: ("awaiting", "accepted"),
                      rejected.delivery.delivery_id: ("rejected", "rejected")}
    assert snapshot_blocked(ledger, rejected.delivery.delivery_id)


def test_acknowledgments_for_unknown_interchanges_are_kept_and_reported(ledger: Ledger, tmp_path: Path,
                                                                        inbox: Path) -> None:
    sent = deliver(ledger, 1)
    (inbox / "ta1_unknown.x12").write_bytes(ta1(777_777, "A", "000"))
    # The right control number from another carrier (ISA06) is not ours either.
    (inbox / "ta1_other_carrier.x12").write_bytes(ta1(sent.delivery.isa13, "A", "000", sender="OTHERHP"))
    ack = pyx12_999(tmp_path, sent.x12).replace(f"AK1*BE*{sent.delivery.gs06}*".encode(), b"AK1*BE*31337*")
    (inbox / "999_unknown.x12").write_bytes(ack)
    report = collect(ledger, inbox, tmp_path / "archive")
    assert report.count("recorded") == 3
    unmatched = ledger.acknowledgments(matched=False)
    assert {(r.kind, r.control_number) for r in unmatched} == {("TA1", 777_777), ("TA1", sent.delivery.isa13),
                                                                ("999", 31337)}
    assert all(r.delivery_id is None and r.isa13 is None for r in unmatched)
    assert ledger.acknowledgments(matched=True) == []
    assert sorted(a.kind for a in report.alerts) == ["unmatched"] * 3
    assert len(list((tmp_path / "archive" / "sunrise-health").iterdir())) == 3


def test_999_for_an_834_split_into_several_sets_matches_its_delivery(ledger: Ledger, tmp_path: Path,
                                                                      inbox: Path) -> None:
    earlier = [deliver(ledger, day) for day in (1, 2)]  # so the split file's own ST02 is neither 1 nor 2
    sent = deliver(ledger, 3, cap=4)
    assert sent.delivery.member_counts["transaction_sets"] == 2
    assert [e.delivery.member_counts["transaction_sets"] for e in earlier] == [1, 1]
    raw = pyx12_999(tmp_path, sent.x12)
    # pyx12 acknowledges each set by its own ST02, 0001 and 0002, none of them the ledger's ST02.
    assert b"AK2*834*0001*" in raw and b"AK2*834*0002*" in raw and sent.delivery.st02 not in (1, 2)
    (inbox / "999_split.x12").write_bytes(raw)
    report = collect(ledger, inbox, tmp_path / "archive")
    assert report.alerts == ()
    (row,) = ledger.acknowledgments()
    assert (row.kind, row.status, row.delivery_id, row.sets_accepted) == ("999", "accepted",
                                                                        sent.delivery.delivery_id, 2)
    statuses = {s.delivery_id: s.status for s in ack_status(ledger, now=T0 + timedelta(days=5))}
    assert statuses == {sent.delivery.delivery_id: "accepted", **{e.delivery.delivery_id: "overdue" for e in earlier}}
    # A set number the file never held is not this delivery's acknowledgment.
    (inbox / "999_three.x12").write_bytes(raw.replace(b"AK2*834*0002*", b"AK2*834*0003*"))
    assert [a.kind for a in collect(ledger, inbox, tmp_path / "archive").alerts] == ["unmatched"]


@pytest.mark.slow
def test_pipeline_split_834_is_acknowledged_by_pyx12_and_matched_accepted(tmp_path: Path, demo_keys: Any,
                                                                         ledger_url: str) -> None:
    """The whole path: the pipeline renders a split 834 (max_members_per_transaction), the deliver
    stage records its set count, the carrier's 999 (pyx12's own) for the file it received matches."""
    from carrierfeeds.census.generate import generate_census, write_census_csv
    from carrierfeeds.config import LocalDelivery
    from carrierfeeds.demo import prepare_workspace
    from carrierfeeds.run import RunRef, run_feed

    day = date(2026, 11, 20)
    root = config_root(tmp_path, "max_members_per_transaction: 10\n")
    ws = prepare_workspace(tmp_path / "ws", keys=demo_keys, keys_dir=tmp_path / "keys", config_root=root,
                           ledger_url=ledger_url, delivery=LocalDelivery(path="carrier-inbox"))
    write_census_csv(generate_census(60, 23, as_of=day), ws.inbound / "census_20261120.csv")
    summary = run_feed(ws.settings, RunRef.for_day(FEED, day), clock=lambda: T0, actor="test")
    assert summary.status == "delivered", summary.error
    (arrived,) = (ws.settings.data_dir / "carrier-inbox").iterdir()
    plain = tmp_path / "carrier-plain.834"
    assert demo_keys.carrier.decrypt_file(arrived, plain).valid_signature
    data = plain.read_bytes()
    sets = check_834(data).transaction_sets
    assert sets > 2  # 60 members at most 10 a set

    led = Ledger.open(ledger_url)
    try:
        delivery = led.find_delivery(feed_id=FEED, interval_start=day)
        assert delivery is not None and delivery.member_counts["transaction_sets"] == sets
        raw = pyx12_999(tmp_path, data)
        assert raw.count(b"AK2*834*") == sets
        inbox = tmp_path / "carrier-outbox"
        inbox.mkdir()
        (inbox / "999.x12").write_bytes(raw)
        report = collect(led, inbox, tmp_path / "archive")
        assert report.alerts == ()
        (row,) = led.acknowledgments()
        assert (row.status, row.delivery_id, row.sets_accepted) == ("accepted", delivery.delivery_id, sets)
        assert ack_status(led, now=T0 + timedelta(days=3))[0].status == "accepted"
    finally:
        led.close()


def test_acknowledgments_of_more_deliveries_than_one_statement_can_bind(ledger: Ledger, tmp_path: Path,
                                                                        inbox: Path) -> None:
    """PostgreSQL's driver binds at most 65,535 parameters: a board over 70,000 delivered files asks for
    their rows in pieces and gets every row once, in chain order."""
    first, second = deliver(ledger, 1), deliver(ledger, 2)
    (inbox / "ta1_1.x12").write_bytes(ta1(first.delivery.isa13, "A", "000"))
    (inbox / "ta1_2.x12").write_bytes(ta1(second.delivery.isa13, "R", "006"))
    collect(ledger, inbox, tmp_path / "archive")
    ids = [f"no-such-delivery-{i}" for i in range(70_000)]
    ids[123] = second.delivery.delivery_id
    ids[69_999] = first.delivery.delivery_id
    rows = ledger.acknowledgments(delivery_ids=ids)
    assert [r.delivery_id for r in rows] == [first.delivery.delivery_id, second.delivery.delivery_id]
    assert rows == ledger.acknowledgments()
