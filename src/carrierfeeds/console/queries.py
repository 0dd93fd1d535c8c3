"""Read-only questions the console asks: a feed's history from the ledger's public reads, where a
member token appears in the PHI-free validation reports, and the board's per-feed counts (grouped,
indexed queries rather than a fold of every delivery). Nothing here writes."""

from __future__ import annotations

import csv
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from carrierfeeds.audit import DeliveryLine
    from carrierfeeds.ledger import RunEvent, RunRecord
    from carrierfeeds.ledger.records import AckRecord, AuditEvent, OutcomeEvent
    from carrierfeeds.ledger.store import Ledger
    from carrierfeeds.settings import Settings

TOKEN_PATTERN = re.compile(r"^m_[0-9a-f]{16}$")
#: A feed's page shows its newest runs; older ones are in `carrierfeeds audit log`.
HISTORY_RUNS = 50


@dataclass(frozen=True)
class RunWithEvents:
    run: RunRecord
    events: tuple[RunEvent, ...]


@dataclass(frozen=True)
class FeedHistory:
    """A feed's newest runs with their stage events, its deliveries (as the audit log reads them) with
    control numbers, outcomes, acknowledgments and forced resends, and audit events on its runs."""

    feed_id: str
    runs: tuple[RunWithEvents, ...]
    deliveries: tuple[DeliveryLine, ...]
    control_numbers: dict[str, tuple[int, int, int]]
    outcomes: dict[str, tuple[OutcomeEvent, ...]]
    acknowledgments: dict[str, tuple[AckRecord, ...]]
    forced_resends: tuple[OutcomeEvent, ...]
    audit: tuple[AuditEvent, ...]


def feed_history(ledger: Ledger, feed_id: str, *, runs: int = HISTORY_RUNS) -> FeedHistory:
    """Everything the ledger holds about ``feed_id``'s newest ``runs`` runs and all its deliveries."""
    from carrierfeeds.audit import acks_from_ledger, delivery_lines, feed_parties

    found = sorted(ledger.list_runs(feed_id=feed_id), key=lambda r: r.started_at, reverse=True)[:runs]
    with_events = tuple(RunWithEvents(run=r, events=tuple(ledger.run_events(r.run_id))) for r in found)
    records = ledger.deliveries(feed_id=feed_id)
    ids = [d.delivery_id for d in records]
    lines = delivery_lines(ledger, feed_id=feed_id, parties=feed_parties(ledger),
                           acks=acks_from_ledger(ledger, ids) if ids else {})
    outcomes: dict[str, list[OutcomeEvent]] = {}
    acks: dict[str, list[AckRecord]] = {}
    if ids:
        for o in ledger.delivery_outcomes(delivery_ids=ids):
            outcomes.setdefault(o.delivery_id, []).append(o)
        for a in ledger.acknowledgments(delivery_ids=ids):
            if a.delivery_id is not None:
                acks.setdefault(a.delivery_id, []).append(a)
    forced = tuple(o for seen in outcomes.values() for o in seen if o.status == "forced_resend")
    object_ids = [r.run_id for r in found] + ids
    audit = tuple(ledger.audit_events(object_ids=object_ids)) if object_ids else ()
    return FeedHistory(
        feed_id=feed_id, runs=with_events, deliveries=tuple(reversed(lines)),
        control_numbers={d.delivery_id: (d.isa13, d.gs06, d.st02) for d in records},
        outcomes={k: tuple(v) for k, v in outcomes.items()}, acknowledgments={k: tuple(v) for k, v in acks.items()},
        forced_resends=tuple(sorted(forced, key=lambda o: o.seq)), audit=audit)


@dataclass(frozen=True)
class TokenHit:
    """A member token's finding in one validation report: which feed and interval, which row and rule."""

    feed_id: str
    interval: str
    row: str
    column: str
    rule: str


def find_member_token(settings: Settings, token: str, *, limit: int = 500) -> list[TokenHit]:
    """Findings for ``token`` in every run's validation report (``reports/<feed>/<interval>/validation.csv``,
    which hold tokens, columns and rules, never values). ValueError for a string that is not a token."""
    if not TOKEN_PATTERN.match(token):
        raise ValueError("not a member token (m_ and 16 hex digits)")
    hits: list[TokenHit] = []
    root = settings.reports_dir
    if not root.is_dir():
        return hits
    for report in sorted(root.glob("*/*/validation.csv")):
        with report.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                if row.get("member_token") == token:
                    hits.append(TokenHit(feed_id=report.parent.parent.name, interval=report.parent.name,
                                         row=row.get("row", ""), column=row.get("column", ""),
                                         rule=row.get("rule", "")))
                    if len(hits) >= limit:
                        return hits
    return hits


# ------------------------------------------------------------------------------------------ board
@dataclass(frozen=True)
class BoardCounts:
    """Per feed id, the board's counts (feeds with none are absent): deliveries awaiting and overdue an
    acknowledgment, hand-offs pending, reconciliation items open (open or acknowledged)."""

    acks_pending: dict[str, int]
    acks_overdue: dict[str, int]
    handoffs_pending: dict[str, int]
    reconciliation_open: dict[str, int]


def board_counts(ledger: Ledger, *, now: datetime, windows: Mapping[str, timedelta], default_window: timedelta,
                 no_source: Collection[str] = ()) -> BoardCounts:
    """The board's counts asked of the ledger per feed, in one snapshot, without folding the deliveries.

    The same answers as :func:`carrierfeeds.acknowledgments.status.ack_status_of` over every delivery
    (awaiting or overdue: delivered, an acknowledgment expected, no 999 yet and no rejecting TA1 last;
    overdue once ``now`` is past the latest outcome plus the feed's window), as
    :meth:`Ledger.pending_handoffs` and as the worklist's folded statuses; indexed by migration 0009.
    """
    import sqlalchemy as sa

    from carrierfeeds.acknowledgments.status import HANDOFF_STATUSES
    from carrierfeeds.ledger import models as m
    from carrierfeeds.ledger.records import DELIVERED_STATUSES, AckKind, DeliveryStatus
    from carrierfeeds.ledger.worklist import ACTIONS, CORRECTION_ACTIONS, discrepancies, discrepancy_events

    d, o, a = m.deliveries, m.delivery_outcomes, m.acknowledgments
    later = o.alias("later_outcome")
    is_latest = ~sa.exists().where(later.c.delivery_id == o.c.delivery_id, later.c.seq > o.c.seq)
    a2 = a.alias("later_ta1")
    no_999 = ~sa.exists().where(a.c.delivery_id == d.c.delivery_id, a.c.kind == AckKind.ACK_999.value)
    ta1_rejected = sa.exists().where(
        a.c.delivery_id == d.c.delivery_id, a.c.kind == AckKind.TA1.value, a.c.status == "rejected",
        ~sa.exists().where(a2.c.delivery_id == a.c.delivery_id, a2.c.kind == AckKind.TA1.value, a2.c.seq > a.c.seq))
    cutoffs = sorted({now - w for w in windows.values()} | {now - default_window})
    # One column per distinct window: how many of the feed's awaited deliveries were delivered before
    # now - window (overdue: now > delivered + window).
    late = [sa.func.sum(sa.case((o.c.at < cut, 1), else_=0)).label(f"late{i}") for i, cut in enumerate(cutoffs)]
    awaited = (sa.select(d.c.feed_id, sa.func.count().label("n"), *late)
               .select_from(d.join(o, o.c.delivery_id == d.c.delivery_id))
               .where(is_latest, o.c.status.in_(sorted(DELIVERED_STATUSES - HANDOFF_STATUSES)),
                      d.c.transport != "manual", no_999, ~ta1_rejected)
               .group_by(d.c.feed_id))
    handoffs = (sa.select(d.c.feed_id, sa.func.count().label("n"))
                .select_from(d.join(o, o.c.delivery_id == d.c.delivery_id))
                .where(o.c.status == DeliveryStatus.PENDING_HANDOFF.value, is_latest).group_by(d.c.feed_id))
    x, e = discrepancies, discrepancy_events
    e2 = e.alias("later_status")
    status_actions = sorted(ACTIONS - CORRECTION_ACTIONS - {"seen"})
    closed = sa.exists().where(
        e.c.discrepancy_id == x.c.discrepancy_id, e.c.action.in_(("resolved", "auto_closed")),
        ~sa.exists().where(e2.c.discrepancy_id == e.c.discrepancy_id, e2.c.action.in_(status_actions),
                           e2.c.seq > e.c.seq))
    still_open = sa.select(x.c.feed_id, sa.func.count().label("n")).where(~closed).group_by(x.c.feed_id)

    pending: dict[str, int] = {}
    overdue: dict[str, int] = {}
    skip = set(no_source)
    with ledger._read(snapshot=True) as conn:
        for row in conn.execute(awaited):
            if row.feed_id in skip:
                continue  # no acknowledgment source: not expected, never awaited
            cut = now - windows.get(row.feed_id, default_window)
            n_late = int(row[2 + cutoffs.index(cut)] or 0)
            if row.n - n_late:
                pending[row.feed_id] = int(row.n) - n_late
            if n_late:
                overdue[row.feed_id] = n_late
        hand = {r.feed_id: int(r.n) for r in conn.execute(handoffs)}
        recon = {r.feed_id: int(r.n) for r in conn.execute(still_open)}
    return BoardCounts(acks_pending=pending, acks_overdue=overdue, handoffs_pending=hand, reconciliation_open=recon)
