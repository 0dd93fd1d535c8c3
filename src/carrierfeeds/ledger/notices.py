"""The per-file notice's sends to the carrier: hash-chained rows per (delivery, channel), intent then outcome.

One append-only audit table on the one chain (``notice_sends``). Before a notice goes out on a channel
(``webhook``, ``email``) a ``sending`` row is written with the idempotency key the carrier sees (HTTP
``Idempotency-Key``, e-mail ``Message-ID``); after it, ``sent`` or ``failed`` (our error code and a
PHI-free message). The latest row of a (delivery, channel) is its status: ``sending`` alone means the
process stopped between the two (the notice may or may not have arrived: it is sent again under the same
key), ``sent`` is never followed by another send. Rows hold ids, codes, hashes and counts only, checked
by the ledger's PHI guard; they belong to their delivery, so the retention purge removes them with it
(``ledger.purge`` takes every audit table with a ``delivery_id``) and ``audit verify`` walks them.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa

from carrierfeeds.ledger import models as m
from carrierfeeds.ledger.records import (
    LedgerError,
    UnknownRecord,
    check_aware,
    check_choice,
    check_count,
    check_sha256,
    check_text,
    check_token,
)

log = logging.getLogger(__name__)

CHANNELS: Final[frozenset[str]] = frozenset({"webhook", "email"})
#: ``sending``: intent written, outcome not (yet); ``sent`` and ``failed`` are outcomes.
STATUSES: Final[frozenset[str]] = frozenset({"sending", "sent", "failed"})

notice_sends = sa.Table(
    "notice_sends", m.metadata,
    sa.Column("id", m.BigId, primary_key=True, autoincrement=True),
    sa.Column("delivery_id", sa.String(32), sa.ForeignKey("deliveries.delivery_id"), nullable=False, index=True),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("idempotency_key", sa.String(64), nullable=False),
    sa.Column("notice_sha256", sa.String(64), nullable=True),
    sa.Column("attempts", sa.Integer(), nullable=True),
    sa.Column("error_code", sa.String(64), nullable=True),
    sa.Column("message", sa.Text(), nullable=True),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("at", m.UTCDateTime(), nullable=False),
    *m._chain_columns(),
)

m.AUDIT_TABLES.update({"notice_sends": (notice_sends, "id")})


def idempotency_key(delivery_id: str, channel: str) -> str:
    """The stable key of one delivery's notice on one channel: every attempt, in every process, sends it.

    A forced resend is a delivery of its own, so its notice has a key of its own."""
    return "cfn-" + hashlib.sha256(f"carrierfeeds-notice|{delivery_id}|{channel}".encode()).hexdigest()[:40]


@dataclass(frozen=True)
class NoticeSend:
    """The latest state of one delivery's notice on one channel, folded from its rows."""

    delivery_id: str
    channel: str
    status: str
    idempotency_key: str
    attempts: int
    at: datetime
    notice_sha256: str | None = None
    error_code: str | None = None
    message: str | None = None
    #: How many ``sending`` rows (tries of the send, each with its retries) the channel has had.
    tries: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"delivery_id": self.delivery_id, "channel": self.channel, "status": self.status,
                "idempotency_key": self.idempotency_key, "attempts": self.attempts, "tries": self.tries,
                "at": self.at.isoformat(), "notice_sha256": self.notice_sha256, "error_code": self.error_code,
                "message": self.message}


def _fold(rows: Collection[Any]) -> list[NoticeSend]:
    out: dict[tuple[str, str], NoticeSend] = {}
    for r in sorted(rows, key=lambda r: r.seq):
        key = (r.delivery_id, r.channel)
        before = out.get(key)
        tries = (before.tries if before else 0) + (r.status == "sending")
        out[key] = NoticeSend(r.delivery_id, r.channel, r.status, r.idempotency_key, int(r.attempts or 0), r.at,
                              r.notice_sha256 or (before.notice_sha256 if before else None), r.error_code,
                              r.message, tries)
    return list(out.values())


def _read(conn: sa.Connection, delivery_ids: Collection[str] | None) -> list[NoticeSend]:
    t = notice_sends
    query = sa.select(t).order_by(t.c.seq)
    if delivery_ids is not None:
        ids = sorted(set(delivery_ids))
        if not ids:
            return []
        rows: list[Any] = []
        for start in range(0, len(ids), 500):
            rows += conn.execute(query.where(t.c.delivery_id.in_(ids[start:start + 500]))).all()
        return _fold(rows)
    return _fold(conn.execute(query).all())


def notice_sends_of(ledger: Any, delivery_ids: Collection[str] | None = None) -> list[NoticeSend]:
    """The latest state per (delivery, channel), of these deliveries or of all (``ledger`` a ``Ledger``)."""
    with ledger._read() as conn:
        return _read(conn, delivery_ids)


def record_notice_intent(ledger: Any, *, delivery_id: str, channel: str, notice_sha256: str | None, actor: str,
                         now: datetime) -> NoticeSend | None:
    """Write ``sending`` for the channel unless its notice was already sent; returns the new state, or None
    when it was sent (nothing to do). Checked and written in one chain-locked transaction."""
    check_token("delivery_id", delivery_id, limit=32)
    channel = check_choice("notice channel", channel, CHANNELS)
    check_sha256("notice_sha256", notice_sha256, required=False)  # None: no notice file to send
    check_token("actor", actor, limit=128)
    check_aware("now", now)
    key = idempotency_key(delivery_id, channel)
    with ledger._write() as tx:
        if tx.conn.execute(sa.select(m.deliveries.c.delivery_id)
                           .where(m.deliveries.c.delivery_id == delivery_id)).first() is None:
            raise UnknownRecord("no such delivery", details={"delivery_id": delivery_id})
        t = notice_sends
        before = _fold(tx.conn.execute(sa.select(t).where(t.c.delivery_id == delivery_id,
                                                          t.c.channel == channel)).all())
        if before and before[0].status == "sent":
            return None
        tx.append(t, {"delivery_id": delivery_id, "channel": channel, "status": "sending", "idempotency_key": key,
                      "notice_sha256": notice_sha256, "attempts": None, "error_code": None, "message": None,
                      "actor": actor, "at": now})
        state = _fold(tx.conn.execute(sa.select(t).where(t.c.delivery_id == delivery_id,
                                                         t.c.channel == channel)).all())[0]
    log.info("delivery %s: notice by %s sending (key %s)", delivery_id, channel, key)
    return state


def record_notice_outcome(ledger: Any, *, delivery_id: str, channel: str, status: str, attempts: int, actor: str,
                          now: datetime, error_code: str | None = None, message: str | None = None) -> NoticeSend:
    """Write ``sent`` or ``failed`` after a ``sending`` row of the channel (the intent is never changed)."""
    check_token("delivery_id", delivery_id, limit=32)
    channel = check_choice("notice channel", channel, CHANNELS)
    status = check_choice("notice status", status, STATUSES - {"sending"})
    check_count("attempts", attempts)
    check_token("actor", actor, limit=128)
    check_token("error_code", error_code, limit=64, required=False)
    check_text("message", message)
    check_aware("now", now)
    t = notice_sends
    with ledger._write() as tx:
        before = _fold(tx.conn.execute(sa.select(t).where(t.c.delivery_id == delivery_id,
                                                          t.c.channel == channel)).all())
        if not before or before[0].status != "sending":
            raise LedgerError("a notice outcome needs its sending row first",
                              details={"delivery_id": delivery_id, "channel": channel})
        tx.append(t, {"delivery_id": delivery_id, "channel": channel, "status": status,
                      "idempotency_key": before[0].idempotency_key, "notice_sha256": None, "attempts": attempts,
                      "error_code": error_code, "message": message, "actor": actor, "at": now})
        state = _fold(tx.conn.execute(sa.select(t).where(t.c.delivery_id == delivery_id,
                                                         t.c.channel == channel)).all())[0]
    log.info("delivery %s: notice by %s %s after %d attempt(s)", delivery_id, channel, status, attempts)
    return state


def unsent_by_feed(ledger: Any) -> dict[str, int]:
    """feed id -> how many (delivery, channel) notices have a latest row other than ``sent`` (failed, or
    cut off while sending): one grouped query, for the morning board and the console's."""
    t, d = notice_sends, m.deliveries
    latest = (sa.select(t.c.delivery_id, t.c.channel, sa.func.max(t.c.seq).label("seq"))
              .group_by(t.c.delivery_id, t.c.channel).subquery())
    query = (sa.select(d.c.feed_id, sa.func.count())
             .select_from(latest.join(t, t.c.seq == latest.c.seq).join(d, d.c.delivery_id == t.c.delivery_id))
             .where(t.c.status != "sent").group_by(d.c.feed_id))
    with ledger._read() as conn:
        return {str(feed_id): int(n) for feed_id, n in conn.execute(query)}
