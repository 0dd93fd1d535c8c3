"""Read-only questions the console asks: a feed's history from the ledger's public reads, where a
member token appears in the PHI-free validation reports, and the board's per-feed counts (the
deliveries it counts kept between boards and updated from the rows appended since, rather than a fold
of every delivery on each board). Nothing here writes."""

from __future__ import annotations

import csv
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from carrierfeeds.audit import DeliveryLine
    from carrierfeeds.ledger import RunEvent, RunRecord
    from carrierfeeds.ledger.lifecycle import LifecycleEvent
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
    #: The feed's lifecycle rows (testing, certified, production, suspended), oldest first.
    lifecycle: tuple[LifecycleEvent, ...] = ()


def feed_history(ledger: Ledger, feed_id: str, *, runs: int = HISTORY_RUNS) -> FeedHistory:
    """Everything the ledger holds about ``feed_id``'s newest ``runs`` runs and all its deliveries."""
    from carrierfeeds.audit import acks_from_ledger, delivery_lines, feed_parties
    from carrierfeeds.ledger.lifecycle import history

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
        forced_resends=tuple(sorted(forced, key=lambda o: o.seq)), audit=audit,
        lifecycle=tuple(history(ledger, feed_id)))


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
class _Open:
    """A delivery the board counts: awaiting an acknowledgment since ``at`` (its latest outcome), or
    waiting for a person's hand-off."""

    feed_id: str
    at: datetime
    handoff: bool


class BoardDeliveries:
    """The deliveries the board counts (awaiting an acknowledgment, or a hand-off), kept between boards
    and brought up to date from the rows appended since the last one.

    Every ledger row carries the chain's ``seq``; :meth:`refresh` reads the chain head and, in the same
    snapshot, only the deliveries that an intent, outcome or acknowledgment appended after the previous
    head names, so a board costs what changed, not the ledger's size. The first refresh, a purge
    (a ``purge_checkpoints`` row since) or a head that went back reads every delivery. A delivery is
    awaited as :func:`carrierfeeds.acknowledgments.status.ack_status_of` says (delivered, an
    acknowledgment expected, no 999 and no rejecting TA1 last), overdue once ``now`` is past its latest
    outcome plus the feed's window; tests compare the counts with ``load_board``'s. Indexed by
    migration 0009.
    """

    def __init__(self) -> None:
        self._head: int | None = None
        self._open: dict[str, _Open] = {}

    def refresh(self, ledger: Ledger) -> None:
        import sqlalchemy as sa

        from carrierfeeds.ledger import models as m

        d, o, a = m.deliveries, m.delivery_outcomes, m.acknowledgments
        with ledger._read(snapshot=True) as conn:
            head = int(conn.execute(sa.select(m.chain_head.c.seq).where(m.chain_head.c.id == 1)).scalar_one())
            if self._head is not None and head == self._head:
                return
            since = self._head
            if since is not None and (head < since or conn.execute(
                    sa.select(m.purge_checkpoints.c.id).where(m.purge_checkpoints.c.seq > since).limit(1)).first()):
                since = None
            if since is None:
                self._open = self._read(conn, None)
            else:
                touched: set[str] = set()
                for table in (d, o, a):
                    touched.update(x for x in conn.execute(sa.select(table.c.delivery_id).where(table.c.seq > since))
                                   .scalars() if x is not None)
                ids = sorted(touched)
                for start in range(0, len(ids), 500):
                    chunk = ids[start:start + 500]
                    for delivery_id in chunk:
                        self._open.pop(delivery_id, None)
                    self._open.update(self._read(conn, chunk))
            self._head = head

    @staticmethod
    def _read(conn: Any, ids: list[str] | None) -> dict[str, _Open]:
        import sqlalchemy as sa

        from carrierfeeds.acknowledgments.status import HANDOFF_STATUSES
        from carrierfeeds.ledger import models as m
        from carrierfeeds.ledger.records import DELIVERED_STATUSES, AckKind, DeliveryStatus

        d, o, a = m.deliveries, m.delivery_outcomes, m.acknowledgments
        later, a2 = o.alias("later_outcome"), a.alias("later_ta1")
        is_latest = ~sa.exists().where(later.c.delivery_id == o.c.delivery_id, later.c.seq > o.c.seq)
        no_999 = ~sa.exists().where(a.c.delivery_id == d.c.delivery_id, a.c.kind == AckKind.ACK_999.value)
        ta1_rejected = sa.exists().where(
            a.c.delivery_id == d.c.delivery_id, a.c.kind == AckKind.TA1.value, a.c.status == "rejected",
            ~sa.exists().where(a2.c.delivery_id == a.c.delivery_id, a2.c.kind == AckKind.TA1.value,
                               a2.c.seq > a.c.seq))
        awaited = sa.and_(o.c.status.in_(sorted(DELIVERED_STATUSES - HANDOFF_STATUSES)), d.c.transport != "manual",
                          no_999, ~ta1_rejected)
        pending = o.c.status == DeliveryStatus.PENDING_HANDOFF.value
        query = (sa.select(d.c.delivery_id, d.c.feed_id, o.c.at, pending.label("handoff"))
                 .select_from(d.join(o, o.c.delivery_id == d.c.delivery_id))
                 .where(is_latest, sa.or_(pending, awaited)))
        if ids is not None:
            query = query.where(d.c.delivery_id.in_(ids))
        return {r.delivery_id: _Open(r.feed_id, r.at, bool(r.handoff)) for r in conn.execute(query)}

    def counts(self, *, now: datetime, windows: Mapping[str, timedelta], default_window: timedelta,
               no_source: Collection[str] = ()) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        """(acks pending, acks overdue, hand-offs pending) per feed at ``now``, as of the last refresh."""
        pending: dict[str, int] = {}
        overdue: dict[str, int] = {}
        handoffs: dict[str, int] = {}
        skip = set(no_source)
        for item in self._open.values():
            fid = item.feed_id
            if item.handoff:
                handoffs[fid] = handoffs.get(fid, 0) + 1
            elif fid not in skip:
                late = now > item.at + windows.get(fid, default_window)
                bucket = overdue if late else pending
                bucket[fid] = bucket.get(fid, 0) + 1
        return pending, overdue, handoffs


def open_reconciliation(ledger: Ledger) -> dict[str, int]:
    """Open (or acknowledged) reconciliation items per feed, as the worklist folds them."""
    import sqlalchemy as sa

    from carrierfeeds.ledger.worklist import ACTIONS, CORRECTION_ACTIONS, discrepancies, discrepancy_events

    x, e = discrepancies, discrepancy_events
    e2 = e.alias("later_status")
    status_actions = sorted(ACTIONS - CORRECTION_ACTIONS - {"seen"})
    closed = sa.exists().where(
        e.c.discrepancy_id == x.c.discrepancy_id, e.c.action.in_(("resolved", "auto_closed")),
        ~sa.exists().where(e2.c.discrepancy_id == e.c.discrepancy_id, e2.c.action.in_(status_actions),
                           e2.c.seq > e.c.seq))
    with ledger._read() as conn:
        return {r.feed_id: int(r.n) for r in conn.execute(
            sa.select(x.c.feed_id, sa.func.count().label("n")).where(~closed).group_by(x.c.feed_id))}


class BoardRuns:
    """Each feed's newest run with its events (:meth:`Ledger.latest_runs`), kept between boards: a
    refresh re-reads only the feeds whose runs or run events were appended since the previous chain
    head (the first refresh, a purge since, or a head that went back reads them all)."""

    def __init__(self) -> None:
        self._head: int | None = None
        self._latest: dict[str, tuple[RunRecord, list[RunEvent]]] = {}

    def latest(self) -> dict[str, tuple[RunRecord, list[RunEvent]]]:
        return dict(self._latest)

    def refresh(self, ledger: Ledger) -> None:
        import sqlalchemy as sa

        from carrierfeeds.ledger import models as m

        r, e = m.runs, m.run_events
        with ledger._read(snapshot=True) as conn:
            head = int(conn.execute(sa.select(m.chain_head.c.seq).where(m.chain_head.c.id == 1)).scalar_one())
            if self._head is not None and head == self._head:
                return
            since = self._head
            if since is not None and (head < since or conn.execute(
                    sa.select(m.purge_checkpoints.c.id).where(m.purge_checkpoints.c.seq > since).limit(1)).first()):
                since = None
            touched: list[tuple[str, str]] = []
            if since is not None:
                feeds = set(conn.execute(sa.select(r.c.feed_id).where(r.c.seq > since)).scalars())
                feeds.update(conn.execute(sa.select(r.c.feed_id).select_from(r.join(e, e.c.run_id == r.c.run_id))
                                          .where(e.c.seq > since)).scalars())
                for feed_id in sorted(feeds):
                    newest = conn.execute(sa.select(r.c.run_id).where(r.c.feed_id == feed_id)
                                          .order_by(r.c.created_at.desc(), r.c.seq).limit(1)).scalar_one()
                    touched.append((feed_id, newest))
        if since is None:
            self._latest = ledger.latest_runs()
        else:
            # The run as get_run gives it (latest_runs' own contract) with its events in written order.
            for feed_id, run_id in touched:
                run = ledger.get_run(run_id)
                if run is not None:
                    self._latest[feed_id] = (run, ledger.run_events(run_id))
        self._head = head
