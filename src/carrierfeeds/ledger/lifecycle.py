"""A feed's lifecycle in the ledger: one hash-chained row per change of state (``feed_lifecycle``).

Rows are events, never updated: ``declared`` (a person states where a feed stands, e.g. an existing
live feed declared ``production``), ``approved`` (the carrier signed off: testing -> certified, with
the go-live date), ``went_live`` (the first run on or after the go-live date: certified ->
production), ``suspended`` and ``resumed`` (back to the state it was suspended from). Each row holds
the state after it, the actor, the carrier's reference (contact, ticket, sign-off document) and the
reason: ids and short text only, checked by the ledger's PHI guard. The rules of which transition is
allowed live in :mod:`carrierfeeds.lifecycle`; this module only records and reads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final

import sqlalchemy as sa

from carrierfeeds.ledger import models as m
from carrierfeeds.ledger.records import check_aware, check_choice, check_day, check_text, check_token

log = logging.getLogger(__name__)

#: The states a feed can be in, and the events that move it.
#: ``unmanaged`` only as the state a ``resumed`` row puts back (a feed without a lifecycle block).
STATES: Final[frozenset[str]] = frozenset({"testing", "certified", "production", "suspended", "unmanaged"})
ACTIONS: Final[frozenset[str]] = frozenset({"declared", "approved", "went_live", "suspended", "resumed"})

feed_lifecycle = sa.Table(
    "feed_lifecycle", m.metadata,
    sa.Column("id", m.BigId, primary_key=True, autoincrement=True),
    sa.Column("feed_id", sa.String(128), nullable=False, index=True),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("reference", sa.Text(), nullable=True),
    sa.Column("reason", sa.Text(), nullable=True),
    sa.Column("go_live", sa.Date(), nullable=True),
    sa.Column("at", m.UTCDateTime(), nullable=False),
    *m._chain_columns(),
)

m.AUDIT_TABLES.update({"feed_lifecycle": (feed_lifecycle, "id")})


@dataclass(frozen=True)
class LifecycleEvent:
    """One row of a feed's lifecycle history."""

    feed_id: str
    action: str
    state: str
    actor: str
    at: datetime
    reference: str | None = None
    reason: str | None = None
    go_live: date | None = None
    seq: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"feed_id": self.feed_id, "action": self.action, "state": self.state, "actor": self.actor,
                "at": self.at.isoformat(), "reference": self.reference, "reason": self.reason,
                "go_live": self.go_live.isoformat() if self.go_live else None}


def append_event(tx: Any, *, feed_id: str, action: str, state: str, actor: str, now: datetime,
                 reference: str | None = None, reason: str | None = None, go_live: date | None = None) -> None:
    """Append one lifecycle row inside an open ledger write transaction (``Ledger._write()``'s ``tx``)."""
    check_token("feed_id", feed_id, limit=128)
    check_choice("action", action, ACTIONS)
    check_choice("state", state, STATES)
    check_token("actor", actor, limit=128)
    check_text("reference", reference, limit=500)
    check_text("reason", reason)
    check_aware("now", now)
    if go_live is not None:
        check_day("go_live", go_live)
    tx.append(feed_lifecycle, {"feed_id": feed_id, "action": action, "state": state, "actor": actor,
                               "reference": reference, "reason": reason, "go_live": go_live, "at": now})
    log.info("feed %s lifecycle: %s -> %s by %s", feed_id, action, state, actor)


def read_history(conn: sa.Connection, feed_id: str) -> list[LifecycleEvent]:
    """The feed's lifecycle rows in chain order (oldest first)."""
    t = feed_lifecycle
    rows = conn.execute(sa.select(t).where(t.c.feed_id == feed_id).order_by(t.c.seq)).all()
    return [LifecycleEvent(r.feed_id, r.action, r.state, r.actor, r.at, r.reference, r.reason, r.go_live, r.seq)
            for r in rows]


def history(ledger: Any, feed_id: str) -> list[LifecycleEvent]:
    """The feed's lifecycle history, oldest first (``ledger`` is a :class:`carrierfeeds.ledger.Ledger`)."""
    check_token("feed_id", feed_id, limit=128)
    with ledger._read() as conn:
        return read_history(conn, feed_id)


def histories(ledger: Any) -> dict[str, list[LifecycleEvent]]:
    """Every feed's lifecycle history (for the board and status), oldest first."""
    t = feed_lifecycle
    out: dict[str, list[LifecycleEvent]] = {}
    with ledger._read() as conn:
        for r in conn.execute(sa.select(t).order_by(t.c.seq)):
            out.setdefault(r.feed_id, []).append(
                LifecycleEvent(r.feed_id, r.action, r.state, r.actor, r.at, r.reference, r.reason, r.go_live,
                               r.seq))
    return out
