"""Carriers' TA1/999 acknowledgments in the ledger: recorded once per file, read back, matched by control number."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from datetime import datetime

import sqlalchemy as sa

from carrierfeeds.ledger import models as m
from carrierfeeds.ledger.base import LedgerBase
from carrierfeeds.ledger.folds import ack_record, ack_values, fold_deliveries
from carrierfeeds.ledger.records import (
    DELIVERED_STATUSES,
    AckRecord,
    AckRow,
    DeliveryRecord,
    LedgerError,
    UnknownRecord,
    check_aware,
    check_sha256,
    check_token,
)

log = logging.getLogger(__name__)


#: Ids per IN list when a caller asks for many deliveries' rows at once.
IN_LIST_CHUNK = 10_000

class Acknowledgments(LedgerBase):
    """The ``Ledger``'s acknowledgment rows (migration 0003)."""

    def record_acknowledgments(self, *, file_sha256: str, source_id: str, file_name: str,
                               rows: Sequence[AckRow], now: datetime) -> bool:
        """Record every acknowledgment read from one carrier file, all or nothing, once per file.

        Returns False (and writes nothing) when a file with this sha256 was recorded before: the
        check and the insert share the chain lock, so two pollers never record one file twice.
        """
        check_sha256("file_sha256", file_sha256)
        check_token("source_id", source_id, limit=128)
        check_token("file_name", file_name, limit=255)
        check_aware("now", now)
        if not rows:
            raise LedgerError("an acknowledgment file is recorded with at least one row",
                              details={"file_sha256": file_sha256})
        values = [ack_values(row) for row in rows]
        if len({v["unit"] for v in values}) != len(values):
            raise LedgerError("acknowledgment units of one file must be distinct",
                              details={"file_sha256": file_sha256})
        t = m.acknowledgments
        with self._write() as tx:
            if tx.conn.execute(sa.select(t.c.id).where(t.c.file_sha256 == file_sha256).limit(1)).first():
                return False
            for v in values:
                if v["delivery_id"] is not None and tx.conn.execute(sa.select(m.deliveries.c.delivery_id).where(
                        m.deliveries.c.delivery_id == v["delivery_id"])).first() is None:
                    raise UnknownRecord("no such delivery", details={"delivery_id": v["delivery_id"]})
                tx.append(t, {**v, "file_sha256": file_sha256, "source_id": source_id,
                              "file_name": file_name, "received_at": now})
        log.info("acknowledgment file %s from %s: %d row(s) recorded", file_sha256[:12], source_id, len(rows))
        return True

    def ack_file_seen(self, file_sha256: str) -> bool:
        """Whether a carrier file with this sha256 (as received) was recorded already."""
        t = m.acknowledgments
        with self._read() as conn:
            return conn.execute(sa.select(t.c.id).where(t.c.file_sha256 == file_sha256).limit(1)).first() \
                is not None

    def acknowledgments(self, *, delivery_ids: Collection[str] | None = None, matched: bool | None = None,
                        since: datetime | None = None, until: datetime | None = None) -> list[AckRecord]:
        """Acknowledgment rows in chain order: of some deliveries, only (un)matched ones, received in
        [since, until)."""
        t = m.acknowledgments
        if delivery_ids is not None:
            ids = list(dict.fromkeys(delivery_ids))
            if len(ids) > IN_LIST_CHUNK:  # a bound parameter each: PostgreSQL's driver takes at most 65,535
                rows = [r for start in range(0, len(ids), IN_LIST_CHUNK)
                        for r in self.acknowledgments(delivery_ids=ids[start:start + IN_LIST_CHUNK],
                                                      matched=matched, since=since, until=until)]
                return sorted(rows, key=lambda r: r.seq)
        query = sa.select(t).order_by(t.c.seq)
        if delivery_ids is not None:
            query = query.where(t.c.delivery_id.in_(ids))
        if matched is not None:
            query = query.where(t.c.delivery_id.is_not(None) if matched else t.c.delivery_id.is_(None))
        if since is not None:
            query = query.where(t.c.received_at >= check_aware("since", since))
        if until is not None:
            query = query.where(t.c.received_at < check_aware("until", until))
        with self._read() as conn:
            return [ack_record(r) for r in conn.execute(query)]

    def find_delivery_by_control(self, *, sender_id: str, receiver_id: str, isa13: int | None = None,
                                 gs06: int | None = None, st02: int | None = None) -> DeliveryRecord | None:
        """The delivery of the interchange our ``sender_id`` sent ``receiver_id`` with these control
        numbers (those given must all match); the newest one that reached the carrier, else the newest.

        Control numbers are per (sender, receiver) pair and wrap after 999999999, hence the newest.
        """
        if isa13 is None and gs06 is None and st02 is None:
            raise LedgerError("name at least one control number", details={"sender_id": sender_id})
        d, ic = m.deliveries, m.interchanges
        cond: list[sa.ColumnElement[bool]] = [
            d.c.run_id.in_(sa.select(ic.c.run_id).where(ic.c.sender_id == sender_id,
                                                        ic.c.receiver_id == receiver_id))]
        for column, value in ((d.c.isa13, isa13), (d.c.gs06, gs06), (d.c.st02, st02)):
            if value is not None:
                cond.append(column == value)
        with self._read() as conn:
            found = fold_deliveries(conn, sa.and_(*cond))
        if not found:
            return None
        delivered = [x for x in found if x.status in DELIVERED_STATUSES]
        return (delivered or found)[-1]
