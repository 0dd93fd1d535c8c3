"""The reconciliation worklist: hash-chained rows for each comparison, each discrepancy and each change
of a discrepancy's status; statuses and last-seen times are folded from the events, never updated.

Three append-only audit tables on the one chain (see :mod:`carrierfeeds.ledger.chain`):

* ``reconciliations``: one row per comparison (feed, the return file's sha256 and name, counts);
* ``discrepancies``: one row per distinct discrepancy of a feed, unique on (feed, kind, member token,
  field, coverage line), with ``first_seen``;
* ``discrepancy_events``: ``opened``, ``seen``, ``acknowledged``, ``resolved``, ``auto_closed`` and
  ``reopened``, each with its actor, reason and comparison. ``last_seen`` is the newest opened/seen/
  reopened event, the status the newest status event.

Status flow: open -> acknowledged -> resolved (a person, with a reason), or open/acknowledged ->
auto_closed when a later comparison no longer finds it; seen again after an auto-close it is reopened.
A resolved discrepancy seen again stays resolved (a person decided), but its ``last_seen`` moves on, so
a list shows it recurring. Only tokens, codes and field names are stored: the ledger's PHI guard checks
every value, and reasons pass its free-text check.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from carrierfeeds.ledger import models as m
from carrierfeeds.ledger.chain import canonical_json, sha256_hex
from carrierfeeds.ledger.records import (
    LedgerError,
    UnknownRecord,
    UnsafeLedgerValue,
    check_choice,
    check_detail,
    check_sha256,
    check_text,
    check_token,
)

log = logging.getLogger(__name__)

#: Discrepancy statuses; ``open`` and ``acknowledged`` count as open work.
STATUSES: Final[frozenset[str]] = frozenset({"open", "acknowledged", "resolved", "auto_closed"})
OPEN_STATUSES: Final[frozenset[str]] = frozenset({"open", "acknowledged"})
ACTIONS: Final[frozenset[str]] = frozenset({"opened", "seen", "acknowledged", "resolved", "auto_closed",
                                            "reopened", "correction_approved", "corrected"})
#: Events about the corrective file: they leave the status as it is (the next comparison closes the item).
CORRECTION_ACTIONS: Final[frozenset[str]] = frozenset({"correction_approved", "corrected"})
_STATUS_AFTER: Final[dict[str, str]] = {"opened": "open", "reopened": "open", "acknowledged": "acknowledged",
                                        "resolved": "resolved", "auto_closed": "auto_closed"}
_SIGHTINGS: Final[frozenset[str]] = frozenset({"opened", "seen", "reopened"})
SYSTEM_ACTOR: Final[str] = "carrierfeeds"
_CODE = re.compile(r"[a-z][a-z_]{0,31}")
_FIELD = re.compile(r"(?:[a-z][a-z_]{0,63})?")
_LINE = re.compile(r"[A-Z0-9]{0,16}")
_MEMBER = re.compile(r"m_[0-9a-f]{16}")

reconciliations = sa.Table(
    "reconciliations", m.metadata,
    sa.Column("comparison_id", sa.String(32), primary_key=True),
    sa.Column("feed_id", sa.String(128), nullable=False, index=True),
    sa.Column("file_sha256", sa.String(64), nullable=False),
    sa.Column("file_name", sa.String(255), nullable=False),
    sa.Column("format", sa.String(16), nullable=False),
    sa.Column("counts", sa.Text(), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("at", m.UTCDateTime(), nullable=False),
    *m._chain_columns(),
)

discrepancies = sa.Table(
    "discrepancies", m.metadata,
    sa.Column("discrepancy_id", sa.String(32), primary_key=True),
    sa.Column("feed_id", sa.String(128), nullable=False),
    sa.Column("key_sha256", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("member_token", sa.String(64), nullable=False),
    sa.Column("field", sa.String(64), nullable=False),
    sa.Column("coverage_line", sa.String(16), nullable=False),
    sa.Column("first_seen", m.UTCDateTime(), nullable=False),
    sa.Column("comparison_id", sa.String(32), sa.ForeignKey("reconciliations.comparison_id"), nullable=False),
    *m._chain_columns(),
    sa.UniqueConstraint("feed_id", "key_sha256"),
)

discrepancy_events = sa.Table(
    "discrepancy_events", m.metadata,
    sa.Column("id", m.BigId, primary_key=True, autoincrement=True),
    sa.Column("discrepancy_id", sa.String(32), sa.ForeignKey("discrepancies.discrepancy_id"), nullable=False,
              index=True),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("reason", sa.Text(), nullable=True),
    sa.Column("comparison_id", sa.String(32), sa.ForeignKey("reconciliations.comparison_id"), nullable=True),
    sa.Column("at", m.UTCDateTime(), nullable=False),
    *m._chain_columns(),
)

m.AUDIT_TABLES.update({
    "reconciliations": (reconciliations, "comparison_id"),
    "discrepancies": (discrepancies, "discrepancy_id"),
    "discrepancy_events": (discrepancy_events, "id"),
})


class Finding(Protocol):
    """What the worklist needs of a discrepancy (``carrierfeeds.reconcile.compare.Discrepancy``)."""

    @property
    def kind(self) -> str: ...
    @property
    def member_token(self) -> str: ...
    @property
    def field(self) -> str: ...
    @property
    def coverage_line(self) -> str: ...


@dataclass(frozen=True)
class WorkItem:
    """One discrepancy as the worklist holds it now (its events folded)."""

    discrepancy_id: str
    feed_id: str
    kind: str
    member_token: str
    field: str
    coverage_line: str
    status: str
    first_seen: datetime
    last_seen: datetime
    acknowledged_by: str | None = None
    resolved_by: str | None = None
    reason: str | None = None
    events: tuple[WorkEvent, ...] = ()

    def as_dict(self, *, events: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.discrepancy_id, "feed_id": self.feed_id, "kind": self.kind,
            "member_token": self.member_token, "field": self.field, "coverage_line": self.coverage_line,
            "status": self.status, "first_seen": self.first_seen.isoformat(),
            "last_seen": self.last_seen.isoformat(), "acknowledged_by": self.acknowledged_by,
            "resolved_by": self.resolved_by, "reason": self.reason}
        if events:
            out["events"] = [e.as_dict() for e in self.events]
        return out


@dataclass(frozen=True)
class WorkEvent:
    action: str
    actor: str
    reason: str | None
    comparison_id: str | None
    at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action, "actor": self.actor, "reason": self.reason,
                "comparison_id": self.comparison_id, "at": self.at.isoformat()}


@dataclass(frozen=True)
class ComparisonRecord:
    """What one comparison did to the worklist: counts by what happened, and the open count after it."""

    comparison_id: str
    feed_id: str
    opened: int
    seen: int
    reopened: int
    auto_closed: int
    open_after: int
    by_kind: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"comparison_id": self.comparison_id, "feed_id": self.feed_id, "opened": self.opened,
                "seen": self.seen, "reopened": self.reopened, "auto_closed": self.auto_closed,
                "open_after": self.open_after, "by_kind": dict(sorted(self.by_kind.items()))}


def discrepancy_key(feed_id: str, finding: Finding) -> str:
    """The sha256 that makes a discrepancy the same one when seen again."""
    return sha256_hex(canonical_json([feed_id, finding.kind, finding.member_token, finding.field,
                                      finding.coverage_line]))


def _check_finding(finding: Finding) -> None:
    # Stricter than the general guard: these columns hold a token and codes, so anything else (a name
    # passed where a token belongs) is refused by shape, not only by the SSN pattern.
    for name, value, pattern in (("kind", finding.kind, _CODE), ("member_token", finding.member_token, _MEMBER),
                                 ("field", finding.field, _FIELD), ("coverage_line", finding.coverage_line, _LINE)):
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise UnsafeLedgerValue(f"ledger field {name!r} is not a {name.replace('_', ' ')}",
                                    details={"field": name})


def _aware(name: str, value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise LedgerError(f"{name} must be a timezone-aware datetime", details={"field": name})
    return value


def record_comparison(ledger: Any, *, feed_id: str, findings: Sequence[Finding], file_sha256: str,
                      file_name: str, fmt: str, now: datetime, actor: str = SYSTEM_ACTOR,
                      counts: dict[str, Any] | None = None) -> ComparisonRecord:
    """Record one comparison and fold its findings into the feed's worklist, all in one transaction.

    New discrepancies are opened, known ones seen again (an auto-closed one reopened), and every open or
    acknowledged one this comparison did not find is auto-closed. ``ledger`` is a
    :class:`carrierfeeds.ledger.Ledger`.
    """
    check_token("feed_id", feed_id, limit=128)
    check_sha256("file_sha256", file_sha256)
    check_token("file_name", file_name, limit=255)
    check_token("format", fmt, limit=16)
    check_token("actor", actor, limit=128)
    clean = check_detail("counts", counts)
    _aware("now", now)
    for finding in findings:
        _check_finding(finding)
    wanted = {discrepancy_key(feed_id, f): f for f in findings}
    comparison_id = uuid.uuid4().hex
    opened = seen = reopened = closed = 0
    by_kind: dict[str, int] = {}
    # The worklist shares the ledger's write transaction: one chain lock, one commit.
    with ledger._write() as tx:
        known = _fold(tx.conn, discrepancies.c.feed_id == feed_id)
        by_key = {item_key: item for item_key, item in known}
        tx.append(reconciliations, {"comparison_id": comparison_id, "feed_id": feed_id, "file_sha256": file_sha256,
                                    "file_name": file_name, "format": fmt,
                                    "counts": canonical_json({**clean, "discrepancies": len(wanted)}),
                                    "actor": actor, "at": now})
        for key in sorted(wanted):
            finding = wanted[key]
            by_kind[finding.kind] = by_kind.get(finding.kind, 0) + 1
            item = by_key.get(key)
            if item is None:
                discrepancy_id = uuid.uuid4().hex
                tx.append(discrepancies, {"discrepancy_id": discrepancy_id, "feed_id": feed_id, "key_sha256": key,
                                          "kind": finding.kind, "member_token": finding.member_token,
                                          "field": finding.field, "coverage_line": finding.coverage_line,
                                          "first_seen": now, "comparison_id": comparison_id})
                action = "opened"
                opened += 1
            else:
                discrepancy_id = item.discrepancy_id
                action = "reopened" if item.status == "auto_closed" else "seen"
                reopened += action == "reopened"
                seen += action == "seen"
            tx.append(discrepancy_events, {"discrepancy_id": discrepancy_id, "action": action, "actor": actor,
                                           "reason": None, "comparison_id": comparison_id, "at": now})
        for key, item in sorted(by_key.items()):
            if key not in wanted and item.status in OPEN_STATUSES:
                tx.append(discrepancy_events, {"discrepancy_id": item.discrepancy_id, "action": "auto_closed",
                                               "actor": actor, "reason": None, "comparison_id": comparison_id,
                                               "at": now})
                closed += 1
        still_open = sum(1 for key, item in by_key.items() if key in wanted and item.status in OPEN_STATUSES)
        open_after = opened + reopened + still_open
    log.info("feed %s comparison %s: %d opened, %d seen, %d reopened, %d auto-closed, %d open", feed_id,
             comparison_id, opened, seen, reopened, closed, open_after)
    return ComparisonRecord(comparison_id, feed_id, opened, seen, reopened, closed, open_after, by_kind)


def set_status(ledger: Any, discrepancy_id: str, *, action: str, actor: str, now: datetime,
               reason: str | None = None) -> WorkItem:
    """Acknowledge or resolve one discrepancy (a person's decision, recorded with actor and reason).

    Acknowledging needs it open; resolving needs it open or acknowledged and a reason. A repeat of
    the same decision is refused rather than recorded twice.
    """
    check_choice("action", action, frozenset({"acknowledged", "resolved"}))
    check_token("discrepancy_id", discrepancy_id, limit=32)
    check_token("actor", actor, limit=128)
    check_text("reason", reason)
    _aware("now", now)
    if action == "resolved" and not (reason or "").strip():
        raise LedgerError("resolving a discrepancy needs a reason", details={"field": "reason"})
    with ledger._write() as tx:
        found = _fold(tx.conn, discrepancies.c.discrepancy_id == discrepancy_id)
        if not found:
            raise UnknownRecord("no such discrepancy", details={"discrepancy_id": discrepancy_id})
        item = found[0][1]
        allowed = {"open"} if action == "acknowledged" else OPEN_STATUSES
        if item.status not in allowed:
            raise LedgerError(f"discrepancy is {item.status}; cannot mark it {action}",
                              details={"discrepancy_id": discrepancy_id, "status": item.status})
        tx.append(discrepancy_events, {"discrepancy_id": discrepancy_id, "action": action, "actor": actor,
                                       "reason": reason, "comparison_id": None, "at": now})
        updated = _fold(tx.conn, discrepancies.c.discrepancy_id == discrepancy_id)[0][1]
    log.info("discrepancy %s %s by %s", discrepancy_id, action, actor)
    return updated


def record_correction(ledger: Any, discrepancy_ids: Sequence[str], *, action: str, actor: str, reason: str,
                      now: datetime) -> None:
    """Mark open discrepancies as answered by an approved (``correction_approved``) or a sent
    (``corrected``) corrective file; their status stays open until a comparison no longer finds them."""
    check_choice("action", action, CORRECTION_ACTIONS)
    check_token("actor", actor, limit=128)
    check_text("reason", reason)
    _aware("now", now)
    with ledger._write() as tx:
        for discrepancy_id in discrepancy_ids:
            check_token("discrepancy_id", discrepancy_id, limit=32)
            tx.append(discrepancy_events, {"discrepancy_id": discrepancy_id, "action": action, "actor": actor,
                                           "reason": reason, "comparison_id": None, "at": now})
    log.info("%d discrepancies %s by %s", len(discrepancy_ids), action, actor)


def work_items(ledger: Any, *, feed_id: str | None = None, status: str | None = None,
               discrepancy_id: str | None = None) -> list[WorkItem]:
    """The worklist (of a feed, of a status, or one item) in first-seen order, events folded."""
    if status is not None:
        check_choice("status", status, STATUSES)
    where: sa.ColumnElement[bool] = sa.true()
    if feed_id is not None:
        where = where & (discrepancies.c.feed_id == feed_id)
    if discrepancy_id is not None:
        where = where & (discrepancies.c.discrepancy_id == discrepancy_id)
    with ledger._read() as conn:
        items = [item for _, item in _fold(conn, where)]
    return [i for i in items if status is None or i.status == status]


def _fold(conn: Connection, where: sa.ColumnElement[bool]) -> list[tuple[str, WorkItem]]:
    d, e = discrepancies, discrepancy_events
    rows = conn.execute(sa.select(d).where(where).order_by(d.c.seq)).all()
    if not rows:
        return []
    events: dict[str, list[WorkEvent]] = {}
    ids = [r.discrepancy_id for r in rows]
    for i in range(0, len(ids), 500):
        query = sa.select(e).where(e.c.discrepancy_id.in_(ids[i:i + 500])).order_by(e.c.seq)
        for ev in conn.execute(query):
            events.setdefault(ev.discrepancy_id, []).append(
                WorkEvent(ev.action, ev.actor, ev.reason, ev.comparison_id, ev.at))
    return [(r.key_sha256, _item(r, events.get(r.discrepancy_id, []))) for r in rows]


def _item(r: Any, events: Iterable[WorkEvent]) -> WorkItem:
    status, last_seen = "open", r.first_seen
    acknowledged_by = resolved_by = reason = None
    history = tuple(events)
    for ev in history:
        if ev.action in _SIGHTINGS:
            last_seen = max(last_seen, ev.at)
        if ev.action == "seen" or ev.action in CORRECTION_ACTIONS:
            continue
        status = _STATUS_AFTER[ev.action]
        if ev.action == "acknowledged":
            acknowledged_by = ev.actor
        elif ev.action == "resolved":
            resolved_by, reason = ev.actor, ev.reason
        elif ev.action == "reopened":
            resolved_by = reason = None
    return WorkItem(r.discrepancy_id, r.feed_id, r.kind, r.member_token, r.field, r.coverage_line, status,
                    r.first_seen, last_seen, acknowledged_by, resolved_by, reason, history)
