"""The ``Ledger``: every write appends hash-chained rows under one lock; reads fold them into records.

Each write runs in one transaction that first locks the chain head (``SELECT ... FOR UPDATE`` on
PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so chain appends, control-number allocation and the
check-then-insert idempotency of ``start_run``/``record_delivery_intent`` are serialised across threads
and processes, and the chain can never fork. Unique constraints back that up.
"""

from __future__ import annotations

import heapq
import json
import logging
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from carrierfeeds.ledger import models as m
from carrierfeeds.ledger.chain import ChainRow, ChainVerdict, canonical_json, row_hash, walk_chain
from carrierfeeds.ledger.records import (
    DELIVERED_STATUSES,
    ISA13_MAX,
    OUTCOME_STATUSES,
    RUN_STATUSES,
    STAGE_STATUSES,
    DeliveryRecord,
    Interchange,
    LedgerError,
    RunEvent,
    RunRecord,
    UnknownRecord,
    check_choice,
    check_detail,
    check_sha256,
    check_text,
    check_token,
)

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Any constant works; it only has to be the same for every process upgrading the same database.
_UPGRADE_LOCK_KEY = 0x63666C6564676572  # "cfledger"


def _aware(name: str, value: datetime) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise LedgerError(f"{name} must be a timezone-aware datetime", details={"field": name})
    return value


def _day(name: str, value: date) -> date:
    if isinstance(value, datetime) or not isinstance(value, date):
        raise LedgerError(f"{name} must be a date (not a datetime)", details={"field": name})
    return value


def _control(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= ISA13_MAX:
        raise LedgerError(f"{name} must be an integer in 1..{ISA13_MAX}", details={"field": name})
    return value


@dataclass
class _Tx:
    """A write transaction holding the chain head lock; appends extend the chain in memory first."""

    conn: Connection
    seq: int
    head: str
    appended: int = field(default=0)

    def append(self, table: sa.Table, values: Mapping[str, Any]) -> int:
        seq = self.seq + 1
        content = {c: values.get(c) for c in m.hashed_columns(table)}
        digest = row_hash(table.name, seq, content, self.head)
        self.conn.execute(sa.insert(table).values(**content, seq=seq, prev_hash=self.head, row_hash=digest))
        self.seq, self.head = seq, digest
        self.appended += 1
        return seq


class Ledger:
    """The delivery ledger on SQLite or PostgreSQL. Open it, ``upgrade()`` it, and share it across threads."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    # ------------------------------------------------------------------------------ lifecycle
    @classmethod
    def open(cls, url: str) -> Ledger:
        """``sqlite:///path`` or ``postgresql+psycopg://...``; nothing is created until ``upgrade()``."""
        parsed = sa.make_url(url)
        if parsed.get_backend_name() == "sqlite":
            # The driver's own transaction handling is switched off so every transaction can start
            # with BEGIN IMMEDIATE (writers) and wait on the lock rather than fail on upgrade.
            engine = sa.create_engine(parsed, connect_args={"timeout": 60})
            event.listen(engine, "connect", _sqlite_connect)
            event.listen(engine, "begin", _sqlite_begin)
        else:
            engine = sa.create_engine(parsed, pool_pre_ping=True)
        return cls(engine)

    @property
    def engine(self) -> Engine:
        return self._engine

    def upgrade(self) -> None:
        """Bring the schema to the newest migration; a no-op at head; safe when processes race."""
        from alembic import command
        from alembic.config import Config
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        head = ScriptDirectory.from_config(cfg).get_current_head()
        with self._engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _UPGRADE_LOCK_KEY})
            current = MigrationContext.configure(conn).get_current_revision()
            if current == head:
                return
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            log.info("ledger upgraded from %s to %s", current, head)

    def close(self) -> None:
        self._engine.dispose()

    # ---------------------------------------------------------------------------- transactions
    @contextmanager
    def _write(self) -> Iterator[_Tx]:
        with self._engine.begin() as conn:
            row = conn.execute(sa.select(m.chain_head.c.seq, m.chain_head.c.row_hash)
                               .where(m.chain_head.c.id == 1).with_for_update()).one_or_none()
            if row is None:
                raise LedgerError("the ledger has no chain head: run upgrade() first")
            tx = _Tx(conn, int(row.seq), str(row.row_hash))
            yield tx
            if tx.appended:
                conn.execute(sa.update(m.chain_head).where(m.chain_head.c.id == 1)
                             .values(seq=tx.seq, row_hash=tx.head))

    @contextmanager
    def _read(self, *, snapshot: bool = False) -> Iterator[Connection]:
        with self._engine.connect() as conn:
            opts: dict[str, Any] = {"sqlite_begin": "DEFERRED"}
            if snapshot and conn.dialect.name == "postgresql":
                opts["isolation_level"] = "REPEATABLE READ"
            conn = conn.execution_options(**opts)
            with conn.begin():
                yield conn

    # ------------------------------------------------------------------------------------ runs
    def start_run(self, *, feed_id: str, interval_start: date, interval_end: date, actor: str,
                  now: datetime) -> RunRecord:
        """Find or create the run of (feed, interval) and record one more attempt of it."""
        check_token("feed_id", feed_id, limit=128)
        check_token("actor", actor, limit=128)
        _day("interval_start", interval_start)
        _day("interval_end", interval_end)
        _aware("now", now)
        if interval_end < interval_start:
            raise LedgerError("interval_end is before interval_start", details={"feed_id": feed_id})
        with self._write() as tx:
            run_id = tx.conn.execute(sa.select(m.runs.c.run_id).where(
                m.runs.c.feed_id == feed_id, m.runs.c.interval_start == interval_start,
                m.runs.c.interval_end == interval_end)).scalar_one_or_none()
            if run_id is None:
                run_id = uuid.uuid4().hex
                tx.append(m.runs, {"run_id": run_id, "feed_id": feed_id, "interval_start": interval_start,
                                   "interval_end": interval_end, "actor": actor, "created_at": now})
            attempt = _attempts(tx.conn, run_id) + 1
            tx.append(m.run_events, {"run_id": run_id, "kind": "run_attempt", "stage": None,
                                     "status": "started", "attempt": attempt, "actor": actor,
                                     "detail": canonical_json({}), "error_code": None, "message": None,
                                     "at": now})
            record = _run_record(tx.conn, run_id)
        if record is None:  # cannot happen: written in this very transaction
            raise LedgerError("run vanished while being started", details={"run_id": run_id})
        log.info("run %s of feed %s for %s..%s: attempt %d", run_id, feed_id, interval_start, interval_end,
                 attempt)
        return record

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._read() as conn:
            return _run_record(conn, run_id)

    def record_stage(self, run_id: str, stage: str, status: str, *, now: datetime,
                     detail: Mapping[str, Any] | None = None, error_code: str | None = None,
                     message: str | None = None) -> None:
        """Append a stage event; ``detail`` must pass the PHI guard (numbers, booleans, short codes)."""
        check_token("stage", stage, limit=64)
        check_choice("stage status", status, STAGE_STATUSES)
        clean = check_detail("detail", detail)
        check_token("error_code", error_code, limit=64, required=False)
        check_text("message", message)
        _aware("now", now)
        with self._write() as tx:
            attempt = _require_run(tx.conn, run_id)
            tx.append(m.run_events, {"run_id": run_id, "kind": "stage", "stage": stage, "status": status,
                                     "attempt": attempt, "actor": None, "detail": canonical_json(clean),
                                     "error_code": error_code, "message": message, "at": now})

    def finish_run(self, run_id: str, status: str, *, now: datetime,
                   counts: Mapping[str, int] | None = None, error_code: str | None = None,
                   message: str | None = None) -> None:
        """Append the run's final status for its current attempt; ``counts`` are integers only."""
        check_choice("run status", status, RUN_STATUSES)
        clean = check_detail("counts", counts, ints_only=True)
        check_token("error_code", error_code, limit=64, required=False)
        check_text("message", message)
        _aware("now", now)
        with self._write() as tx:
            attempt = _require_run(tx.conn, run_id)
            tx.append(m.run_events, {"run_id": run_id, "kind": "run_finished", "stage": None,
                                     "status": status, "attempt": attempt, "actor": None,
                                     "detail": canonical_json(clean),
                                     "error_code": error_code, "message": message, "at": now})
        log.info("run %s finished: %s", run_id, status)

    def run_events(self, run_id: str) -> list[RunEvent]:
        """Every attempt, stage event and finish of one run, in the order they were written."""
        t = m.run_events
        with self._read() as conn:
            rows = conn.execute(sa.select(t).where(t.c.run_id == run_id).order_by(t.c.seq)).all()
        return [RunEvent(seq=r.seq, run_id=r.run_id, kind=r.kind, stage=r.stage, status=r.status,
                         attempt=r.attempt, actor=r.actor, detail=json.loads(r.detail),
                         error_code=r.error_code, message=r.message, at=r.at) for r in rows]

    # ------------------------------------------------------------------------- control numbers
    def allocate_control_numbers(self, *, run_id: str, sender_id: str, receiver_id: str,
                                 now: datetime) -> Interchange:
        """The run's ISA13/GS06/ST02: allocated on the first call, the same numbers on every later one.

        One counter per (sender, receiver) pair, 1..999999999 then back to 1; the three numbers of a
        file are equal (one interchange, one group, one transaction set), so any of them finds the file.
        """
        check_token("sender_id", sender_id, limit=64)
        check_token("receiver_id", receiver_id, limit=64)
        _aware("now", now)
        t, c = m.interchanges, m.control_counters
        with self._write() as tx:
            _require_run(tx.conn, run_id)
            found = tx.conn.execute(sa.select(t).where(t.c.run_id == run_id)).one_or_none()
            if found is not None:
                if (found.sender_id, found.receiver_id) != (sender_id, receiver_id):
                    raise LedgerError("run already has control numbers for another sender/receiver pair",
                                      details={"run_id": run_id, "isa13": found.isa13})
                return Interchange(found.isa13, found.gs06, found.st02, found.created_at)
            pair = (c.c.sender_id == sender_id, c.c.receiver_id == receiver_id)
            if tx.conn.execute(sa.select(c.c.last_control).where(*pair)).scalar_one_or_none() is None:
                tx.conn.execute(sa.insert(c).values(sender_id=sender_id, receiver_id=receiver_id,
                                                    last_control=0, updated_at=now))
            tx.conn.execute(sa.update(c).where(*pair).values(
                last_control=sa.case((c.c.last_control >= ISA13_MAX, 1), else_=c.c.last_control + 1),
                updated_at=now))
            number = int(tx.conn.execute(sa.select(c.c.last_control).where(*pair)).scalar_one())
            tx.append(t, {"run_id": run_id, "sender_id": sender_id, "receiver_id": receiver_id,
                          "isa13": number, "gs06": number, "st02": number, "created_at": now})
        log.info("run %s: control number %09d allocated", run_id, number)
        return Interchange(number, number, number, _utc(now))

    # ------------------------------------------------------------------------------ deliveries
    def record_delivery_intent(self, *, run_id: str, feed_id: str, interval_start: date,
                               payload_sha256: str, file_name: str, isa13: int, gs06: int, st02: int,
                               recipient_fingerprint: str, member_counts: Mapping[str, int],
                               transport: str, now: datetime) -> DeliveryRecord:
        """Record that a file is about to be sent; returns the existing record for the same
        (feed, interval, payload) instead of a second one."""
        check_token("feed_id", feed_id, limit=128)
        _day("interval_start", interval_start)
        check_sha256("payload_sha256", payload_sha256)
        check_token("file_name", file_name, limit=255)
        for name, value in (("isa13", isa13), ("gs06", gs06), ("st02", st02)):
            _control(name, value)
        check_token("recipient_fingerprint", recipient_fingerprint, limit=128)
        counts = check_detail("member_counts", member_counts, ints_only=True)
        check_token("transport", transport, limit=32)
        _aware("now", now)
        t = m.deliveries
        with self._write() as tx:
            existing = tx.conn.execute(sa.select(t.c.delivery_id).where(
                t.c.feed_id == feed_id, t.c.interval_start == interval_start,
                t.c.payload_sha256 == payload_sha256)).scalar_one_or_none()
            if existing is None:
                _require_run(tx.conn, run_id)
                ic = tx.conn.execute(sa.select(m.interchanges).where(m.interchanges.c.run_id == run_id)
                                     ).one_or_none()
                if ic is not None and (ic.isa13, ic.gs06, ic.st02) != (isa13, gs06, st02):
                    raise LedgerError("control numbers differ from those allocated to the run",
                                      details={"run_id": run_id, "isa13": ic.isa13})
                existing = uuid.uuid4().hex
                tx.append(t, {"delivery_id": existing, "run_id": run_id, "feed_id": feed_id,
                              "interval_start": interval_start, "payload_sha256": payload_sha256,
                              "file_name": file_name, "isa13": isa13, "gs06": gs06, "st02": st02,
                              "recipient_fingerprint": recipient_fingerprint,
                              "member_counts": canonical_json(counts), "transport": transport,
                              "created_at": now})
                log.info("delivery %s intent: feed %s interval %s isa13 %09d", existing, feed_id,
                         interval_start, isa13)
            records = _fold_deliveries(tx.conn, t.c.delivery_id == existing)
        return records[0]

    def record_delivery_outcome(self, delivery_id: str, *, status: str, now: datetime,
                                ciphertext_sha256: str | None = None, size: int | None = None,
                                remote_path: str | None = None, host_key_fingerprint: str | None = None,
                                error_code: str | None = None, message: str | None = None,
                                actor: str = "system", reason: str | None = None) -> None:
        """Append what happened to a delivery; the intent row is never changed."""
        check_choice("delivery status", status, OUTCOME_STATUSES)
        _aware("now", now)
        check_sha256("ciphertext_sha256", ciphertext_sha256, required=False)
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise LedgerError("size must be a non-negative integer", details={"field": "size"})
        check_token("remote_path", remote_path, limit=1024, required=False)
        check_token("host_key_fingerprint", host_key_fingerprint, limit=128, required=False)
        check_token("error_code", error_code, limit=64, required=False)
        check_text("message", message)
        check_token("actor", actor, limit=128)
        check_text("reason", reason)
        with self._write() as tx:
            if tx.conn.execute(sa.select(m.deliveries.c.delivery_id)
                               .where(m.deliveries.c.delivery_id == delivery_id)).first() is None:
                raise UnknownRecord("no such delivery", details={"delivery_id": delivery_id})
            tx.append(m.delivery_outcomes, {
                "delivery_id": delivery_id, "status": status, "ciphertext_sha256": ciphertext_sha256,
                "size": size, "remote_path": remote_path, "host_key_fingerprint": host_key_fingerprint,
                "error_code": error_code, "message": message, "actor": actor, "reason": reason, "at": now})
        log.info("delivery %s outcome: %s", delivery_id, status)

    def find_delivery(self, *, feed_id: str, interval_start: date,
                      payload_sha256: str | None = None) -> DeliveryRecord | None:
        """The delivery of this payload for (feed, interval); without a payload hash, the one that
        reached the recipient if any (the newest such), else the newest intent."""
        t = m.deliveries
        cond = [t.c.feed_id == feed_id, t.c.interval_start == interval_start]
        if payload_sha256 is not None:
            cond.append(t.c.payload_sha256 == payload_sha256)
        with self._read() as conn:
            found = _fold_deliveries(conn, sa.and_(*cond))
        if not found:
            return None
        delivered = [d for d in found if d.status in DELIVERED_STATUSES]
        return (delivered or found)[-1]

    def deliveries(self, *, feed_id: str | None = None, since: datetime | None = None,
                   until: datetime | None = None, status: str | None = None) -> list[DeliveryRecord]:
        """Deliveries in chain order, intent created in [since, until), optionally of one status."""
        t = m.deliveries
        cond: list[sa.ColumnElement[bool]] = []
        if feed_id is not None:
            cond.append(t.c.feed_id == feed_id)
        if since is not None:
            cond.append(t.c.created_at >= _aware("since", since))
        if until is not None:
            cond.append(t.c.created_at < _aware("until", until))
        with self._read() as conn:
            found = _fold_deliveries(conn, sa.and_(sa.true(), *cond))
        return [d for d in found if status is None or d.status == status]

    # ----------------------------------------------------------------------------------- audit
    def audit(self, *, actor: str, action: str, object_type: str, object_id: str, now: datetime,
              reason: str | None = None, detail: Mapping[str, Any] | None = None) -> None:
        """Record a human or operational decision (a forced resend, a purge, a legal hold)."""
        check_token("actor", actor, limit=128)
        check_token("action", action, limit=64)
        check_token("object_type", object_type, limit=64)
        check_token("object_id", object_id, limit=128)
        check_text("reason", reason)
        clean = check_detail("detail", detail)
        _aware("now", now)
        with self._write() as tx:
            tx.append(m.audit_events, {"actor": actor, "action": action, "object_type": object_type,
                                       "object_id": object_id, "reason": reason,
                                       "detail": canonical_json(clean), "at": now})
        log.info("audit: %s %s %s %s", actor, action, object_type, object_id)

    def verify_chain(self) -> ChainVerdict:
        """Walk every audit row in chain order from one consistent snapshot; name the first broken link."""
        with self._read(snapshot=True) as conn:
            head = conn.execute(sa.select(m.chain_head.c.seq, m.chain_head.c.row_hash)
                                .where(m.chain_head.c.id == 1)).one_or_none()
            if head is None:
                raise LedgerError("the ledger has no chain head: run upgrade() first")
            streams = [_chain_rows(conn, name, table, id_col)
                       for name, (table, id_col) in m.AUDIT_TABLES.items()]
            verdict = walk_chain(heapq.merge(*streams, key=lambda r: r.seq),
                                 head_seq=int(head.seq), head_hash=str(head.row_hash))
        if not verdict.ok:
            log.error("ledger chain broken at %s", verdict.first_broken)
        return verdict


# ---------------------------------------------------------------------------------- helpers
def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
    conn.exec_driver_sql("BEGIN IMMEDIATE" if mode == "IMMEDIATE" else "BEGIN DEFERRED")


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _attempts(conn: Connection, run_id: str) -> int:
    t = m.run_events
    return int(conn.execute(sa.select(sa.func.count()).select_from(t).where(
        t.c.run_id == run_id, t.c.kind == "run_attempt")).scalar_one())


def _require_run(conn: Connection, run_id: str) -> int:
    """The run's current attempt number; refuses an unknown run."""
    attempt = _attempts(conn, run_id)
    if attempt == 0:
        raise UnknownRecord("no such run", details={"run_id": run_id})
    return attempt


def _run_record(conn: Connection, run_id: str) -> RunRecord | None:
    run = conn.execute(sa.select(m.runs).where(m.runs.c.run_id == run_id)).one_or_none()
    if run is None:
        return None
    t = m.run_events
    last = conn.execute(sa.select(t.c.kind, t.c.status).where(
        t.c.run_id == run_id, t.c.kind.in_(("run_attempt", "run_finished"))
    ).order_by(t.c.seq.desc()).limit(1)).one_or_none()
    status = last.status if last is not None and last.kind == "run_finished" else "running"
    return RunRecord(run_id=run.run_id, feed_id=run.feed_id, interval_start=run.interval_start,
                     interval_end=run.interval_end, status=status, attempt=_attempts(conn, run_id),
                     started_at=run.created_at)


def _fold_deliveries(conn: Connection, where: sa.ColumnElement[bool]) -> list[DeliveryRecord]:
    """Deliveries matching ``where`` in chain order, each with its outcomes folded in."""
    d, o = m.deliveries, m.delivery_outcomes
    intents = conn.execute(sa.select(d).where(where).order_by(d.c.seq)).all()
    if not intents:
        return []
    outcomes: dict[str, list[Any]] = {}
    for row in conn.execute(sa.select(o).where(o.c.delivery_id.in_(sa.select(d.c.delivery_id).where(where)))
                            .order_by(o.c.seq)):
        outcomes.setdefault(row.delivery_id, []).append(row)
    out = []
    for i in intents:
        seen = outcomes.get(i.delivery_id, [])
        latest: dict[str, Any] = {}
        for row in seen:
            for name in ("ciphertext_sha256", "size", "remote_path", "host_key_fingerprint"):
                if getattr(row, name) is not None:
                    latest[name] = getattr(row, name)
        out.append(DeliveryRecord(
            delivery_id=i.delivery_id, run_id=i.run_id, feed_id=i.feed_id, interval_start=i.interval_start,
            payload_sha256=i.payload_sha256, file_name=i.file_name, isa13=i.isa13, gs06=i.gs06, st02=i.st02,
            recipient_fingerprint=i.recipient_fingerprint, member_counts=json.loads(i.member_counts),
            transport=i.transport, status=seen[-1].status if seen else "pending",
            ciphertext_sha256=latest.get("ciphertext_sha256"), size=latest.get("size"),
            remote_path=latest.get("remote_path"), host_key_fingerprint=latest.get("host_key_fingerprint"),
            created_at=i.created_at, updated_at=seen[-1].at if seen else i.created_at))
    return out


def _chain_rows(conn: Connection, name: str, table: sa.Table, id_col: str) -> Iterator[ChainRow]:
    cols = m.hashed_columns(table)
    wanted = {*cols, id_col, *m.CHAIN_FIELDS}
    query = sa.select(*[c for c in table.columns if c.name in wanted]).order_by(table.c.seq)
    for row in conn.execution_options(yield_per=1000).execute(query):
        data = row._mapping
        yield ChainRow(table=name, row_id=str(data[id_col]), seq=int(data["seq"]),
                       prev_hash=str(data["prev_hash"]), row_hash=str(data["row_hash"]),
                       content={c: data[c] for c in cols})
