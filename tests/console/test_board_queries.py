"""The console's board asks the ledger per feed (grouped queries on migration 0009's indexes) and gives
the board ``load_board`` gives by folding every delivery, on SQLite and on PostgreSQL, in every state a
count depends on: acknowledged, rejected by TA1, TA1 rejected then accepted, awaiting, overdue, not
expected, hand-offs pending and confirmed, and reconciliation items open, acknowledged, resolved and
auto-closed."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from console_helpers import NORTHWIND, SUNRISE, Workspace, make_workspace

from carrierfeeds.console.board import BoardLoader
from carrierfeeds.ledger import Ledger
from carrierfeeds.ledger.records import AckRow
from carrierfeeds.ledger.worklist import OPEN_STATUSES, record_comparison, set_status, work_items
from carrierfeeds.ops.status import load_board

NOW = datetime(2026, 12, 10, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class _Finding:
    kind: str
    member_token: str
    field: str = ""
    coverage_line: str = "HLT"


def _delivery(ledger: Ledger, feed_id: str, day: date, at: datetime, status: str = "delivered",
              transport: str = "sftp") -> str:
    run = ledger.start_run(feed_id=feed_id, interval_start=day, interval_end=day + timedelta(days=1),
                           actor="scheduler", now=at)
    numbers = ledger.allocate_control_numbers(run_id=run.run_id, sender_id="ACME", receiver_id="CARRIER", now=at)
    intent = ledger.record_delivery_intent(
        run_id=run.run_id, feed_id=feed_id, interval_start=day,
        payload_sha256=hashlib.sha256(f"{feed_id}{day}".encode()).hexdigest(),
        file_name=f"{feed_id}-{day}.834.pgp", isa13=numbers.isa13, gs06=numbers.gs06, st02=numbers.st02,
        recipient_fingerprint="B" * 40, member_counts={"members": 3}, transport=transport, now=at)
    ledger.record_delivery_outcome(intent.delivery_id, status=status, now=at + timedelta(minutes=5))
    ledger.finish_run(run.run_id, status if status != "failed" else "failed", now=at + timedelta(minutes=6))
    return intent.delivery_id


def _ack(ledger: Ledger, delivery_id: str, kind: str, status: str, n: int) -> None:
    assert ledger.record_acknowledgments(file_sha256=f"{n:064x}", source_id="carrier", file_name=f"ack{n}.x12",
                                         rows=[AckRow(unit=1, kind=kind, status=status, delivery_id=delivery_id)],
                                         now=NOW - timedelta(hours=1))


def _fill(workspace: Workspace) -> Ledger:
    """Sunrise expects acknowledgments (24 h window); Northwind's hand-offs, one then confirmed;
    worklist items in every status; and a feed file that does not load."""
    settings = workspace.settings
    mapping = settings.mappings_dir / "sunrise-health.yaml"
    mapping.write_text(mapping.read_text()
                       + "acks: {source: {kind: local, path: acks/sunrise}}\nack_window_hours: 24\n")
    (settings.feeds_dir / "acme-typo.yaml").write_text("feed_id: acme-typo\nemployr: {}\n")
    ledger = Ledger.open(str(settings.ledger_url))
    old = NOW - timedelta(days=5)
    accepted = _delivery(ledger, SUNRISE, date(2026, 12, 1), old)
    _ack(ledger, accepted, "999", "accepted", 1)
    refused = _delivery(ledger, SUNRISE, date(2026, 12, 2), old)
    _ack(ledger, refused, "TA1", "rejected", 2)
    retried = _delivery(ledger, SUNRISE, date(2026, 12, 3), old)
    _ack(ledger, retried, "TA1", "rejected", 3)
    _ack(ledger, retried, "TA1", "accepted", 4)  # the latest TA1 accepts: still awaiting its 999 (overdue)
    _delivery(ledger, SUNRISE, date(2026, 12, 4), old)  # overdue
    _delivery(ledger, SUNRISE, date(2026, 12, 9), NOW - timedelta(hours=3))  # awaiting
    _delivery(ledger, SUNRISE, date(2026, 12, 8), NOW - timedelta(hours=24, minutes=5))  # exactly at the window
    _delivery(ledger, SUNRISE, date(2026, 12, 7), old, status="failed")  # never delivered: not awaited
    _delivery(ledger, NORTHWIND, date(2026, 12, 4), old, transport="manual", status="pending_handoff")
    ledger.confirm_handoff(workspace.handoffs[0], by="olivia", method="courier", received_by="clerk",
                          now=NOW - timedelta(days=1))
    tokens = [f"m_{n:016x}" for n in range(5)]
    first = record_comparison(ledger, feed_id=SUNRISE, findings=[_Finding("missing_at_carrier", t) for t in tokens],
                              file_sha256="e" * 64, file_name="roster1.834", fmt="834", now=old)
    assert first.opened == 5
    items = {i.member_token: i for i in work_items(ledger, feed_id=SUNRISE)}
    set_status(ledger, items[tokens[0]].discrepancy_id, action="acknowledged", actor="olivia", now=old)
    set_status(ledger, items[tokens[1]].discrepancy_id, action="resolved", actor="olivia", now=old,
               reason="carrier fixed it")
    # The second return file no longer shows tokens[2]: auto-closed; tokens[1] stays resolved.
    record_comparison(ledger, feed_id=SUNRISE, findings=[_Finding("missing_at_carrier", t) for t in tokens
                                                         if t != tokens[2]],
                      file_sha256="f" * 64, file_name="roster2.834", fmt="834", now=old + timedelta(days=1))
    record_comparison(ledger, feed_id=NORTHWIND, findings=[_Finding("extra_at_carrier", tokens[4])],
                      file_sha256="a" * 64, file_name="roster3.834", fmt="834", now=old)
    return ledger


def test_board_queries_give_load_boards_board(tmp_path: Path, ledger_url: str) -> None:
    workspace = make_workspace(tmp_path, ledger_url)
    ledger = _fill(workspace)
    try:
        folded = load_board(workspace.settings, ledger, now=NOW)
        built = BoardLoader(workspace.settings).load(ledger, now=NOW)
        assert built.board == folded
        rows = {r.feed_id: r for r in built.board.rows}
        # Stated outright (the same on both databases), so an empty board cannot pass.
        # Awaiting: the 3-hour-old one and the one due exactly now. Overdue: the TA1 rejected then
        # accepted one, the unacknowledged one of 12-04 and the workspace's own delivery of 11-30.
        assert (rows[SUNRISE].acks_pending, rows[SUNRISE].acks_overdue) == (2, 3)
        assert rows[NORTHWIND].handoffs_pending == 2  # three made, one confirmed
        assert [b.file for b in built.board.broken] == ["acme-typo.yaml"]
        assert dict(built.reconciliation_open) == {SUNRISE: 3, NORTHWIND: 1}
        still_open = {}
        for item in work_items(ledger):
            if item.status in OPEN_STATUSES:
                still_open[item.feed_id] = still_open.get(item.feed_id, 0) + 1
        assert dict(built.reconciliation_open) == still_open
    finally:
        ledger.close()


def test_feed_files_are_parsed_once_until_they_change(tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path, f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    settings = workspace.settings
    loader = BoardLoader(settings)
    ledger = Ledger.open(str(settings.ledger_url))
    try:
        first = loader.load(ledger, now=NOW).board
        path = settings.feeds_dir / f"{SUNRISE}.yaml"
        assert loader._feed(path) is loader._feed(path)  # kept between boards
        path.write_text(path.read_text().replace("name: Sunrise Health Plan\n", "name: Sunrise Renamed\n"))
        renamed = {r.feed_id: r for r in loader.load(ledger, now=NOW).board.rows}
        assert renamed[SUNRISE].carrier_name == "Sunrise Renamed"
        assert {r.feed_id: r.carrier_name for r in first.rows}[SUNRISE] == "Sunrise Health Plan"
        path.write_text("feed_id: acme-sunrise-medical\nemployr: {}\n")
        broken = loader.load(ledger, now=NOW).board
        assert SUNRISE not in {r.feed_id for r in broken.rows}
        assert [b.file for b in broken.broken] == [path.name]
        assert broken == load_board(settings, ledger, now=NOW)
    finally:
        ledger.close()


def test_a_kept_board_follows_what_is_appended_since(tmp_path: Path, ledger_url: str) -> None:
    """One loader over several boards: each later board reads only the rows appended since, and is still
    the board load_board folds from scratch."""
    workspace = make_workspace(tmp_path, ledger_url)
    ledger = _fill(workspace)
    loader = BoardLoader(workspace.settings)
    try:
        assert loader.load(ledger, now=NOW).board == load_board(workspace.settings, ledger, now=NOW)
        fresh = _delivery(ledger, SUNRISE, date(2026, 12, 10), NOW - timedelta(hours=1))  # awaiting
        overdue = next(d.delivery_id for d in ledger.deliveries(feed_id=SUNRISE)
                   if d.interval_start == date(2026, 12, 4))
        _ack(ledger, overdue, "999", "accepted", 10)  # no longer overdue
        _ack(ledger, fresh, "TA1", "rejected", 11)  # rejected: no longer awaited
        ledger.confirm_handoff(workspace.handoffs[1], by="olivia", method="courier", received_by="clerk",
                          now=NOW)
        _delivery(ledger, NORTHWIND, date(2026, 12, 9), NOW - timedelta(hours=2), transport="manual",
                  status="pending_handoff")
        later = NOW + timedelta(hours=2)  # and the one due exactly at NOW is overdue by now
        board = loader.load(ledger, now=later).board
        assert board == load_board(workspace.settings, ledger, now=later)
        rows = {r.feed_id: r for r in board.rows}
        # Awaiting: the 12-09 delivery (due in 19 h). Overdue: the TA1 rejected then accepted one, the
        # workspace's 11-30 one and the one due at NOW; 12-04 has its 999, the fresh one a rejecting TA1.
        assert (rows[SUNRISE].acks_pending, rows[SUNRISE].acks_overdue) == (1, 3)
        assert rows[NORTHWIND].handoffs_pending == 2
        assert loader.load(ledger, now=later).board == board  # nothing appended: the same board
    finally:
        ledger.close()
