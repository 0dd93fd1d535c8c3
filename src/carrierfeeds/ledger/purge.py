"""The retention purge plan: which audit rows a purge before a cut-off removes, and the chain gaps left."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from carrierfeeds.ledger import models as m
from carrierfeeds.ledger.records import HoldAction, HoldObject, LegalHold

#: Audit tables purged by their own rule rather than with the run they belong to.
_STANDALONE = frozenset({"runs", "audit_events", "authorisations", "purge_checkpoints"})


@dataclass(frozen=True)
class _Doomed:
    seq: int
    prev_hash: str
    row_hash: str


def active_holds(conn: Connection) -> list[LegalHold]:
    t = m.audit_events
    latest: dict[tuple[str, str], Any] = {}
    for r in conn.execute(sa.select(t).where(t.c.action.in_((HoldAction.SET, HoldAction.CLEAR))).order_by(t.c.seq)):
        latest[(r.object_type, r.object_id)] = r
    return [LegalHold(object_type=r.object_type, object_id=r.object_id, actor=r.actor, reason=r.reason,
                      since=r.at) for r in latest.values() if r.action == HoldAction.SET]


def _time_column(table: sa.Table) -> sa.Column[Any] | None:
    return next((c for c in table.columns if isinstance(c.type, m.UTCDateTime)), None)


def plan_purge(conn: Connection, cutoff: datetime, held_feeds: set[str],
                held_employers: set[str]) -> dict[str, list[_Doomed]]:
    """The audit rows a purge before ``cutoff`` removes, by table; see ``Ledger.purge_metadata``."""
    for hold in active_holds(conn):
        (held_feeds if hold.object_type == HoldObject.FEED else held_employers).add(hold.object_id)
    au = m.authorisations
    held_feeds |= set(conn.execute(sa.select(au.c.feed_id)
                                   .where(au.c.employer_id.in_(held_employers))).scalars())
    runs, d = m.runs, m.deliveries
    # A run goes only as a whole, once the newest row of any table attributed to it is old enough.
    newest: dict[str, datetime] = {}
    run_feed = {r.run_id: r.feed_id for r in conn.execute(sa.select(runs.c.run_id, runs.c.feed_id))}
    by_run: dict[str, sa.Table] = {}
    by_delivery: dict[str, sa.Table] = {}
    for name, (table, _) in m.AUDIT_TABLES.items():
        if name in _STANDALONE - {"runs"}:
            continue
        if "run_id" in table.c:
            by_run[name] = table
        elif "delivery_id" in table.c:
            by_delivery[name] = table
    never = datetime.max.replace(tzinfo=UTC)
    for table in [*by_run.values(), *by_delivery.values()]:
        when = _time_column(table)
        if when is None:
            owner = table.c.run_id if "run_id" in table.c else d.c.run_id
            query = sa.select(owner, sa.literal(1)).distinct()
        elif "run_id" in table.c:
            query = sa.select(table.c.run_id, sa.func.max(when)).group_by(table.c.run_id)
        else:
            query = (sa.select(d.c.run_id, sa.func.max(when))
                     .join(d, d.c.delivery_id == table.c.delivery_id).group_by(d.c.run_id))
        for run_id, latest in conn.execute(query):
            latest = latest if isinstance(latest, datetime) else never
            latest = latest.replace(tzinfo=UTC) if latest.tzinfo is None else latest
            newest[run_id] = max(newest.get(run_id, latest), latest)
    gone_runs = {r for r, t in newest.items() if t < cutoff and run_feed.get(r) not in held_feeds}
    gone_deliveries = {x for x in conn.execute(sa.select(d.c.delivery_id, d.c.run_id)).all()
                       if x.run_id in gone_runs}
    gone_delivery_ids = {x.delivery_id for x in gone_deliveries}

    plan: dict[str, list[_Doomed]] = {}

    def take(name: str, rows: Iterable[Any]) -> None:
        doomed = [_Doomed(int(r.seq), str(r.prev_hash), str(r.row_hash)) for r in rows]
        if doomed:
            plan[name] = doomed

    for name, table in by_run.items():
        take(name, (r for r in conn.execute(sa.select(table.c.run_id, *_chain_cols(table)))
                    if r.run_id in gone_runs))
    for name, table in by_delivery.items():
        # Rows tied to no delivery (an acknowledgment that matched nothing) go by their own time.
        when = _time_column(table)
        loose = (table.c.delivery_id.is_(None) & (when < cutoff)) if when is not None else sa.false()
        take(name, (r for r in conn.execute(sa.select(table.c.delivery_id, loose.label("loose"),
                                                      *_chain_cols(table)))
                    if r.delivery_id in gone_delivery_ids or (r.delivery_id is None and r.loose)))

    a = m.audit_events
    kept_runs = set(run_feed) - gone_runs
    kept_deliveries = {r.delivery_id for r in conn.execute(sa.select(d.c.delivery_id))} - gone_delivery_ids

    def audit_kept(r: Any) -> bool:
        return ((r.object_type == HoldObject.FEED and r.object_id in held_feeds)
                or (r.object_type == HoldObject.EMPLOYER and r.object_id in held_employers)
                or (r.object_type == "run" and r.object_id in kept_runs)
                or (r.object_type == "delivery" and r.object_id in kept_deliveries))

    take("audit_events", (r for r in conn.execute(sa.select(a).where(a.c.at < cutoff)) if not audit_kept(r)))

    # An authorisation goes once a newer one for its feed had replaced it before the cut-off: until
    # then it is the authority some retained delivery was sent under.
    per_feed: dict[str, list[Any]] = {}
    for r in conn.execute(sa.select(au).order_by(au.c.seq)):
        per_feed.setdefault(r.feed_id, []).append(r)
    take("authorisations", (
        r for rows in per_feed.values() for r, nxt in itertools.pairwise(rows)
        if nxt.at < cutoff and r.feed_id not in held_feeds and r.employer_id not in held_employers))
    return plan


def _chain_cols(table: sa.Table) -> list[sa.Column[Any]]:
    return [table.c.seq, table.c.prev_hash, table.c.row_hash]


def plan_counts(plan: Mapping[str, list[_Doomed]]) -> dict[str, int]:
    return {name: len(rows) for name, rows in sorted(plan.items())}


def plan_gaps(plan: Mapping[str, list[_Doomed]]) -> tuple[tuple[int, int, str, str], ...]:
    """Maximal runs of consecutive seqs among the doomed rows: (first, last, prev_hash in, last row_hash)."""
    rows = sorted((r for doomed in plan.values() for r in doomed), key=lambda r: r.seq)
    gaps: list[tuple[int, int, str, str]] = []
    for r in rows:
        if gaps and gaps[-1][1] + 1 == r.seq:
            first, _, prev_in, _ = gaps[-1]
            gaps[-1] = (first, r.seq, prev_in, r.row_hash)
        else:
            gaps.append((r.seq, r.seq, r.prev_hash, r.row_hash))
    return tuple(gaps)


def recorded_gaps(conn: Connection) -> dict[int, list[tuple[int, str, str]]]:
    """Every gap any checkpoint recorded, by first seq: (last seq, prev_hash into it, its last row_hash)."""
    gaps: dict[int, list[tuple[int, str, str]]] = {}
    for text in conn.execute(sa.select(m.purge_checkpoints.c.gaps)).scalars():
        for first, last, prev_in, last_hash in json.loads(text):
            gaps.setdefault(int(first), []).append((int(last), str(prev_in), str(last_hash)))
    return gaps
