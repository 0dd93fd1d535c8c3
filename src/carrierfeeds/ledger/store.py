"""The ``Ledger``: every write appends hash-chained rows under one lock; reads fold them into records.

Each write runs in one transaction that first locks the chain head (``SELECT ... FOR UPDATE`` on
PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so chain appends, control-number allocation and the
check-then-insert idempotency of ``start_run``/``record_delivery_intent`` are serialised across threads
and processes, and the chain can never fork. Unique constraints back that up. A run's delivery, which
spans an upload, is serialised by a lock of its own (``delivery_lock``) that never holds the chain lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import heapq
import itertools
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from carrierfeeds.errors import CarrierFeedsError, ConfigError, TransientError
from carrierfeeds.ledger import models as m
from carrierfeeds.ledger.chain import (
    ChainRow,
    ChainVerdict,
    canonical_json,
    row_hash,
    sha256_hex,
    walk_chain,
)
from carrierfeeds.ledger.records import (
    DELIVERED_STATUSES,
    ISA13_MAX,
    OUTCOME_STATUSES,
    RUN_STATUSES,
    SENT_STATUSES,
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
#: Byte-range locks taken in one SQLite ledger's delivery lock file: a run's key modulo this (two runs
#: sharing a byte only wait for each other).
_SQLITE_LOCK_RANGE = 1 << 40
#: In-process locks of the SQLite delivery lock (POSIX record locks do not exclude threads of one process),
#: striped so that their number stays bounded however many runs a process delivers.
_THREAD_LOCK_STRIPES = 256
_THREAD_LOCKS: dict[tuple[str, int], threading.RLock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


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
    def open(cls, url: str, *, setting: str = "ledger URL") -> Ledger:
        """``sqlite:///path`` or ``postgresql+psycopg://...``; nothing is created until ``upgrade()``.

        A URL of another scheme, or naming a driver that is not installed, is a ConfigError naming
        ``setting`` (never the URL: it may hold a password).
        """
        try:
            parsed = sa.make_url(url)
        except sa.exc.ArgumentError:
            raise ConfigError("not a database URL; expected sqlite:///path or "
                              "postgresql+psycopg://user@host:port/database", field=setting) from None
        backend = parsed.get_backend_name()
        if backend not in ("sqlite", "postgresql"):
            raise ConfigError(f"scheme {parsed.drivername.split('+')[0]!r} is not supported; expected sqlite:///path "
                              "or postgresql+psycopg://user@host:port/database", field=setting)
        try:
            if backend == "sqlite":
                # The driver's own transaction handling is switched off so every transaction can start
                # with BEGIN IMMEDIATE (writers) and wait on the lock rather than fail on upgrade.
                engine = sa.create_engine(parsed, connect_args={"timeout": 60})
                event.listen(engine, "connect", _sqlite_connect)
                event.listen(engine, "begin", _sqlite_begin)
            else:
                # Without a connect timeout a firewalled host hangs a run for the kernel's TCP timeout.
                args = {} if "connect_timeout" in parsed.query else {"connect_timeout": PG_CONNECT_TIMEOUT}
                engine = sa.create_engine(parsed, pool_pre_ping=True, connect_args=args)
        except (sa.exc.NoSuchModuleError, ImportError):
            raise ConfigError(f"driver {parsed.drivername!r} is not installed; use postgresql+psycopg://...",
                              field=setting) from None
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
        t = m.interchanges
        with self._write() as tx:
            _require_run(tx.conn, run_id)
            found = tx.conn.execute(sa.select(t).where(t.c.run_id == run_id)).one_or_none()
            if found is not None:
                if (found.sender_id, found.receiver_id) != (sender_id, receiver_id):
                    raise LedgerError("run already has control numbers for another sender/receiver pair",
                                      details={"run_id": run_id, "isa13": found.isa13})
                return Interchange(found.isa13, found.gs06, found.st02, found.created_at)
            number = _next_control(tx.conn, sender_id, receiver_id, now)
            tx.append(t, {"run_id": run_id, "sender_id": sender_id, "receiver_id": receiver_id,
                          "isa13": number, "gs06": number, "st02": number, "created_at": now})
        log.info("run %s: control number %09d allocated", run_id, number)
        return Interchange(number, number, number, _utc(now))

    def next_control_number(self, *, sender_id: str, receiver_id: str) -> int:
        """The number :meth:`allocate_control_numbers` would give the pair's next run, read without
        writing anything (the preview's placeholder; a run may take it first)."""
        c = m.control_counters
        with self._read() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SET TRANSACTION READ ONLY"))
            last = conn.execute(sa.select(c.c.last_control).where(
                c.c.sender_id == sender_id, c.c.receiver_id == receiver_id)).scalar_one_or_none()
        return 1 if last is None or int(last) >= ISA13_MAX else int(last) + 1

    def allocate_resend(self, *, run_id: str, sender_id: str, receiver_id: str, actor: str, reason: str,
                        now: datetime) -> Interchange | None:
        """The control numbers a forced resend of the run goes out under, decided by the run's newest
        file (its first, or its newest resend), in one transaction with the chain lock:

        - that file reached the recipient (a delivery of the run with its ISA13 whose latest outcome
          is delivered, reconciled, forced_resend, pending_handoff or handed_off): new numbers from
          the pair's counter, recorded with the delivery they replace, the actor and the reason;
        - it is a resend that has not: its own numbers again (a retry of that resend mints nothing);
        - it is the run's first file, not delivered yet: None (nothing to resend; deliver it).

        ``created_at`` is when the numbers were allocated: the resend's envelope date and time.
        """
        check_token("sender_id", sender_id, limit=64)
        check_token("receiver_id", receiver_id, limit=64)
        check_token("actor", actor, limit=128)
        if not reason or not reason.strip():
            raise LedgerError("a forced resend needs a reason", details={"run_id": run_id})
        check_text("reason", reason)
        _aware("now", now)
        r = m.resends
        with self._write() as tx:
            _require_run(tx.conn, run_id)
            sent = _transmissions(tx.conn, run_id)
            if not sent:
                raise LedgerError("the run has no control numbers to resend", details={"run_id": run_id})
            newest = sent[-1]
            if (newest.sender_id, newest.receiver_id) != (sender_id, receiver_id):
                raise LedgerError("run has control numbers for another sender/receiver pair",
                                  details={"run_id": run_id, "isa13": newest.interchange.isa13})
            d = m.deliveries
            found = _fold_deliveries(tx.conn, sa.and_(d.c.run_id == run_id, d.c.isa13 == newest.interchange.isa13))
            reached = [x for x in found if x.status in SENT_STATUSES]
            if not reached:
                return newest.interchange if newest.interchange.resend else None
            number = _next_control(tx.conn, sender_id, receiver_id, now)
            resend = newest.interchange.resend + 1
            tx.append(r, {"resend_id": uuid.uuid4().hex, "run_id": run_id, "number": resend,
                          "replaces_delivery_id": reached[-1].delivery_id, "sender_id": sender_id,
                          "receiver_id": receiver_id, "isa13": number, "gs06": number, "st02": number,
                          "actor": actor, "reason": reason, "created_at": now})
        log.info("run %s: forced resend %d gets control number %09d (replaces delivery %s)", run_id, resend,
                 number, reached[-1].delivery_id)
        return Interchange(number, number, number, _utc(now), resend=resend,
                           replaces_delivery_id=reached[-1].delivery_id)

    def transmissions(self, run_id: str) -> list[Interchange]:
        """The control numbers of every file of the run: its first, then each forced resend in order."""
        with self._read() as conn:
            return [x.interchange for x in _transmissions(conn, run_id)]

    @contextmanager
    def delivery_lock(self, feed_id: str, interval_start: date) -> Iterator[None]:
        """Hold the delivery lock of the run of (feed, interval): one delivery of it at a time, across
        threads and processes (and machines, on PostgreSQL). Blocks until it is free.

        PostgreSQL: a session advisory lock on a connection of its own, so the delivery's own ledger
        writes (other connections, short transactions) go on while it is held, and the server frees it
        if this process dies. SQLite: a POSIX record lock on a file beside the database (freed by the
        kernel if the process dies) plus an in-process lock; SQLite's own write lock cannot be held
        across an upload without stopping every other ledger writer.
        """
        check_token("feed_id", feed_id, limit=128)
        _day("interval_start", interval_start)
        digest = hashlib.sha256(f"carrierfeeds-delivery|{feed_id}|{interval_start.isoformat()}".encode()).digest()
        key = int.from_bytes(digest[:8], "big", signed=True)
        if self._engine.dialect.name == "postgresql":
            with self._engine.connect() as conn:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key})
                try:
                    yield
                finally:
                    try:
                        conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    except sa.exc.DBAPIError:
                        # The session is gone, and its lock with it; never reuse the connection.
                        conn.invalidate()
            return
        database = self._engine.url.database
        offset = key % _SQLITE_LOCK_RANGE
        with _THREAD_LOCKS_GUARD:
            local = _THREAD_LOCKS.setdefault((str(database), offset % _THREAD_LOCK_STRIPES), threading.RLock())
        with local:
            if not database or database == ":memory:":
                yield
                return
            fd = os.open(f"{database}.delivery-lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX, 1, offset)
                try:
                    yield
                finally:
                    fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)
            finally:
                os.close(fd)

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
                allocated = [(x.interchange.isa13, x.interchange.gs06, x.interchange.st02)
                             for x in _transmissions(tx.conn, run_id)]
                if allocated and (isa13, gs06, st02) not in allocated:
                    raise LedgerError("control numbers differ from those allocated to the run",
                                      details={"run_id": run_id, "isa13": allocated[0][0]})
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

    # ------------------------------------------------------------------------- manual hand-offs
    def pending_handoffs(self, *, feed_id: str | None = None) -> list[DeliveryRecord]:
        """Deliveries waiting for a person: latest outcome ``pending_handoff``, oldest first."""
        return self.deliveries(feed_id=feed_id, status="pending_handoff")

    def confirm_handoff(self, delivery_id: str, *, by: str, method: str, now: datetime) -> DeliveryRecord:
        """A person handed a pending file over: append outcome ``handed_off`` (actor ``by``, reason
        ``method``) and audit event ``handoff_confirmed``, in one transaction.

        UnknownRecord for an unknown id; LedgerError when the delivery is not pending a hand-off
        (already confirmed, or an electronic delivery).
        """
        check_token("delivery_id", delivery_id, limit=64)
        check_token("by", by, limit=128)
        check_token("method", method, limit=64)
        _aware("now", now)
        d = m.deliveries
        with self._write() as tx:
            found = _fold_deliveries(tx.conn, d.c.delivery_id == delivery_id)
            if not found:
                raise UnknownRecord("no such delivery", details={"delivery_id": delivery_id})
            record = found[0]
            if record.status != "pending_handoff":
                already = record.status == "handed_off"
                raise LedgerError("the hand-off was already confirmed" if already else
                                  f"delivery is {record.status!r}, not pending a hand-off",
                                  details={"delivery_id": delivery_id, "status": record.status})
            tx.append(m.delivery_outcomes, {
                "delivery_id": delivery_id, "status": "handed_off", "ciphertext_sha256": None, "size": None,
                "remote_path": None, "host_key_fingerprint": None, "error_code": None, "message": None,
                "actor": by, "reason": method, "at": now})
            tx.append(m.audit_events, {
                "actor": by, "action": "handoff_confirmed", "object_type": "delivery", "object_id": delivery_id,
                "reason": method, "detail": canonical_json({"feed_id": record.feed_id, "isa13": record.isa13}),
                "at": now})
            confirmed = _fold_deliveries(tx.conn, d.c.delivery_id == delivery_id)[0]
        log.info("delivery %s handed off (method %s)", delivery_id, method)
        return confirmed

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
            # Purged rows leave gaps that only their checkpoints explain (see carrierfeeds.retention).
            verdict = walk_chain(heapq.merge(*streams, key=lambda r: r.seq), gaps=_recorded_gaps(conn),
                                      head_seq=int(head.seq), head_hash=str(head.row_hash))
        if not verdict.ok:
            log.error("ledger chain broken at %s", verdict.first_broken)
        return verdict

    def chain_head(self) -> tuple[int, str]:
        """The chain head (seq of the newest row, its hash) as the database holds it now."""
        with self._read() as conn:
            head = conn.execute(sa.select(m.chain_head.c.seq, m.chain_head.c.row_hash)
                                .where(m.chain_head.c.id == 1)).one_or_none()
        if head is None:
            raise LedgerError("the ledger has no chain head: run upgrade() first")
        return int(head.seq), str(head.row_hash)

    def chain_hashes(self, seqs: Collection[int]) -> dict[int, str]:
        """``row_hash`` of the audit rows at these seqs, whichever table holds them; absent seqs are left out."""
        wanted = sorted({int(s) for s in seqs})
        found: dict[int, str] = {}
        with self._read(snapshot=True) as conn:
            for table, _ in m.AUDIT_TABLES.values():
                for i in range(0, len(wanted), 500):
                    for row in conn.execute(sa.select(table.c.seq, table.c.row_hash)
                                            .where(table.c.seq.in_(wanted[i:i + 500]))):
                        found[int(row.seq)] = str(row.row_hash)
        return found


    # -------------------------------------- authorisations, auditors' reads, retention (migration 0002)
    def record_authorisation(self, *, feed_id: str, employer_id: str, carrier_id: str, plans: Sequence[str],
                             effective_from: date, effective_to: date | None, recorded_by: str, now: datetime,
                             reason: str | None = None) -> AuthorisationRecord:
        """Record the employer's authorisation of a carrier for a feed; the feed's latest record is
        returned instead of a new one when its content (parties, plans, dates) is the same."""
        check_token("feed_id", feed_id, limit=128)
        check_token("employer_id", employer_id, limit=128)
        check_token("carrier_id", carrier_id, limit=128)
        plan_list = sorted({str(check_token("plan", p, limit=64)) for p in plans})
        if not plan_list:
            raise LedgerError("an authorisation names at least one plan", details={"feed_id": feed_id})
        _day("effective_from", effective_from)
        if effective_to is not None and _day("effective_to", effective_to) < effective_from:
            raise LedgerError("effective_to is before effective_from", details={"feed_id": feed_id})
        check_token("recorded_by", recorded_by, limit=128)
        check_text("reason", reason)
        _aware("now", now)
        content = {"feed_id": feed_id, "employer_id": employer_id, "carrier_id": carrier_id,
                   "plans": plan_list, "effective_from": effective_from.isoformat(),
                   "effective_to": effective_to.isoformat() if effective_to else None}
        digest = sha256_hex(canonical_json(content))
        t = m.authorisations
        with self._write() as tx:
            latest = tx.conn.execute(sa.select(t).where(t.c.feed_id == feed_id).order_by(t.c.seq.desc())
                                     .limit(1)).one_or_none()
            if latest is None or latest.content_sha256 != digest:
                tx.append(t, {"feed_id": feed_id, "employer_id": employer_id, "carrier_id": carrier_id,
                              "plans": canonical_json(plan_list), "effective_from": effective_from,
                              "effective_to": effective_to, "content_sha256": digest,
                              "recorded_by": recorded_by, "reason": reason, "at": now})
                log.info("authorisation of carrier %s by employer %s for feed %s recorded", carrier_id,
                         employer_id, feed_id)
                latest = tx.conn.execute(sa.select(t).where(t.c.seq == tx.seq)).one()
        return _authorisation(latest)

    def authorisations(self, *, feed_id: str | None = None) -> list[AuthorisationRecord]:
        """Every recorded authorisation (of one feed), oldest first."""
        t = m.authorisations
        query = sa.select(t).order_by(t.c.seq)
        if feed_id is not None:
            query = query.where(t.c.feed_id == feed_id)
        with self._read() as conn:
            return [_authorisation(r) for r in conn.execute(query)]

    def list_runs(self, *, feed_id: str | None = None, since: datetime | None = None,
                  until: datetime | None = None) -> list[RunRecord]:
        """Runs first started in [since, until), oldest first."""
        t = m.runs
        query = sa.select(t.c.run_id).order_by(t.c.seq)
        if feed_id is not None:
            query = query.where(t.c.feed_id == feed_id)
        if since is not None:
            query = query.where(t.c.created_at >= _aware("since", since))
        if until is not None:
            query = query.where(t.c.created_at < _aware("until", until))
        with self._read() as conn:
            found = [_run_record(conn, run_id) for run_id in conn.execute(query).scalars()]
        return [r for r in found if r is not None]

    def delivery_outcomes(self, *, delivery_ids: Collection[str] | None = None,
                          run_id: str | None = None) -> list[OutcomeEvent]:
        """Every outcome row (of these deliveries, or of one run's deliveries) in chain order."""
        o, d = m.delivery_outcomes, m.deliveries
        query = sa.select(o).order_by(o.c.seq)
        if delivery_ids is not None:
            query = query.where(o.c.delivery_id.in_(list(delivery_ids)))
        if run_id is not None:
            query = query.where(o.c.delivery_id.in_(sa.select(d.c.delivery_id).where(d.c.run_id == run_id)))
        with self._read() as conn:
            return [OutcomeEvent(seq=r.seq, delivery_id=r.delivery_id, status=r.status,
                                 ciphertext_sha256=r.ciphertext_sha256, size=r.size,
                                 remote_path=r.remote_path, host_key_fingerprint=r.host_key_fingerprint,
                                 error_code=r.error_code, message=r.message, actor=r.actor, reason=r.reason,
                                 at=r.at)
                    for r in conn.execute(query)]

    def audit_events(self, *, since: datetime | None = None, until: datetime | None = None,
                     action: str | None = None, object_type: str | None = None,
                     object_ids: Collection[str] | None = None) -> list[AuditEvent]:
        """Audit events at [since, until), optionally of one action or about some objects, in chain order."""
        t = m.audit_events
        query = sa.select(t).order_by(t.c.seq)
        if since is not None:
            query = query.where(t.c.at >= _aware("since", since))
        if until is not None:
            query = query.where(t.c.at < _aware("until", until))
        if action is not None:
            query = query.where(t.c.action == action)
        if object_type is not None:
            query = query.where(t.c.object_type == object_type)
        if object_ids is not None:
            query = query.where(t.c.object_id.in_(list(object_ids)))
        with self._read() as conn:
            return [_audit_event(r) for r in conn.execute(query)]

    def set_legal_hold(self, *, object_type: str, object_id: str, held: bool, actor: str, reason: str,
                       now: datetime) -> None:
        """Place (``held``) or lift a legal hold on an employer or a feed: an audit event with its reason."""
        check_choice("hold object_type", object_type, HOLD_OBJECT_TYPES)
        if not reason or not reason.strip():
            raise LedgerError("a legal hold needs a reason", details={"object_id": object_id})
        self.audit(actor=actor, action=HOLD_SET if held else HOLD_CLEAR, object_type=object_type,
                   object_id=object_id, reason=reason, now=now)

    def legal_holds(self) -> list[LegalHold]:
        """The holds in force: for each employer or feed, its latest hold event, when that one set it."""
        with self._read() as conn:
            return _active_holds(conn)

    def purge_checkpoints(self) -> list[PurgeCheckpoint]:
        """Every ledger purge, oldest first: cut-off, rows removed per table, the chain gaps left."""
        t = m.purge_checkpoints
        with self._read() as conn:
            rows = conn.execute(sa.select(t).order_by(t.c.seq)).all()
        return [PurgeCheckpoint(seq=r.seq, cutoff=r.cutoff, purged_rows=r.purged_rows,
                                gaps=tuple(tuple(g) for g in json.loads(r.gaps)),
                                counts=json.loads(r.counts), actor=r.actor, at=r.at) for r in rows]

    def purge_metadata(self, *, cutoff: datetime, held_feeds: Collection[str] = (),
                       held_employers: Collection[str] = (), actor: str, now: datetime,
                       dry_run: bool = False,
                       before_commit: Callable[[LedgerPurge], None] | None = None) -> LedgerPurge:
        """Delete audit rows older than ``cutoff`` that no hold protects, in one transaction that also
        appends a checkpoint (the gaps left in the chain) and an audit event with the counts.

        Rows go by whole run (a run, its events, control numbers, deliveries and outcomes, once the
        newest of them is older than the cut-off); audit events and superseded authorisations by their
        own time. Holds recorded in the ledger are added to ``held_*``. A table this code does not know
        how to attribute to a run is never purged. Needs DELETE rights: run it as the ledger's owner.
        ``before_commit`` sees the purge (gaps, checkpoint seq) while its transaction is still open (the
        anchor log signs the gaps there); if it raises, nothing is deleted.
        """
        _aware("cutoff", cutoff)
        _aware("now", now)
        check_token("actor", actor, limit=128)
        if dry_run:
            with self._read() as conn:
                plan = _purge_plan(conn, cutoff, set(held_feeds), set(held_employers))
            return LedgerPurge(counts=_plan_counts(plan), gaps=_plan_gaps(plan), checkpoint_seq=None,
                               dry_run=True)
        with self._write() as tx:
            plan = _purge_plan(tx.conn, cutoff, set(held_feeds), set(held_employers))
            counts, gaps = _plan_counts(plan), _plan_gaps(plan)
            if not gaps:
                return LedgerPurge(counts=counts, gaps=(), checkpoint_seq=None, dry_run=False)
            try:
                for table in reversed(m.metadata.sorted_tables):
                    seqs = [row.seq for row in plan.get(table.name, [])]
                    for i in range(0, len(seqs), 500):
                        tx.conn.execute(sa.delete(table).where(table.c.seq.in_(seqs[i:i + 500])))
            except sa.exc.ProgrammingError:
                # PostgreSQL's "permission denied": the least-privilege role may not delete, by design.
                raise LedgerError("this database role may not delete ledger rows; run the purge as the "
                                  "ledger's owner") from None
            total = sum(counts.values())
            seq = tx.append(m.purge_checkpoints, {
                "cutoff": cutoff, "purged_rows": total, "gaps": canonical_json([list(g) for g in gaps]),
                "counts": canonical_json(counts), "actor": actor, "at": now})
            tx.append(m.audit_events, {"actor": actor, "action": "purge_ledger_metadata",
                                       "object_type": "ledger", "object_id": f"checkpoint-{seq}",
                                       "reason": None, "detail": canonical_json({"rows": total, **counts}),
                                       "at": now})
            if before_commit is not None:
                before_commit(LedgerPurge(counts=counts, gaps=gaps, checkpoint_seq=seq, dry_run=False))
        log.info("ledger purge before %s: %d rows in %d gap(s), checkpoint seq %d", cutoff.isoformat(), total,
                 len(gaps), seq)
        return LedgerPurge(counts=counts, gaps=gaps, checkpoint_seq=seq, dry_run=False)

    # ------------------------------------------------------------ acknowledgments (migration 0003)
    def record_acknowledgments(self, *, file_sha256: str, source_id: str, file_name: str,
                               rows: Sequence[AckRow], now: datetime) -> bool:
        """Record every acknowledgment read from one carrier file, all or nothing, once per file.

        Returns False (and writes nothing) when a file with this sha256 was recorded before: the
        check and the insert share the chain lock, so two pollers never record one file twice.
        """
        check_sha256("file_sha256", file_sha256)
        check_token("source_id", source_id, limit=128)
        check_token("file_name", file_name, limit=255)
        _aware("now", now)
        if not rows:
            raise LedgerError("an acknowledgment file is recorded with at least one row",
                              details={"file_sha256": file_sha256})
        values = [_ack_values(row) for row in rows]
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
        query = sa.select(t).order_by(t.c.seq)
        if delivery_ids is not None:
            query = query.where(t.c.delivery_id.in_(list(delivery_ids)))
        if matched is not None:
            query = query.where(t.c.delivery_id.is_not(None) if matched else t.c.delivery_id.is_(None))
        if since is not None:
            query = query.where(t.c.received_at >= _aware("since", since))
        if until is not None:
            query = query.where(t.c.received_at < _aware("until", until))
        with self._read() as conn:
            return [_ack_record(r) for r in conn.execute(query)]

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
            found = _fold_deliveries(conn, sa.and_(*cond))
        if not found:
            return None
        delivered = [x for x in found if x.status in DELIVERED_STATUSES]
        return (delivered or found)[-1]


# ---------------------------------------------------------------------------------- helpers
#: Seconds PostgreSQL gets to accept a connection (unless the URL sets ``connect_timeout``).
PG_CONNECT_TIMEOUT = 10

#: What a PostgreSQL driver says, lowercased, and whether a retry may fix it: (needle, reason, retry).
_PG_FAILURES = (
    ("connection refused", "connection refused", True),
    ("timeout expired", "timed out", True),
    ("timed out", "timed out", True),
    ("could not translate host name", "host name not found", True),
    ("name or service not known", "host name not found", True),
    ("no route to host", "no route to host", True),
    ("network is unreachable", "network unreachable", True),
    ("the database system is starting up", "server starting up", True),
    ("the database system is shutting down", "server shutting down", True),
    ("too many connections", "too many connections", True),
    ("server closed the connection", "server closed the connection", True),
    ("password authentication failed", "login refused: password authentication failed", False),
    ("no pg_hba.conf entry", "login refused by pg_hba.conf", False),
    ("does not exist", "the role or database does not exist", False),
)


def connect_failure(url: str, exc: BaseException, *, setting: str) -> CarrierFeedsError:
    """Our error for a ledger the driver could not reach or use: TransientError when a retry may fix it
    (server down, refused, timed out), ConfigError when only a settings change can (wrong login, no such
    database, an SQLite file that cannot be opened). One line naming ``setting``, host and port, never
    the password or the driver's own text (which may quote the URL)."""
    parsed = sa.make_url(url)
    text = str(getattr(exc, "orig", None) or exc).lower()
    if parsed.get_backend_name() == "sqlite":
        return ConfigError(f"SQLite ledger file cannot be opened ({type(getattr(exc, 'orig', exc)).__name__})",
                           field=setting, details={"setting": setting})
    where = f"PostgreSQL at {parsed.host or 'localhost'}:{parsed.port or 5432}"
    for needle, reason, retry in _PG_FAILURES:
        if needle in text:
            if retry:
                return TransientError(f"{setting}: {where} is unreachable ({reason}); retry later",
                                      details={"setting": setting, "reason": reason})
            return ConfigError(f"{where}: {reason}", field=setting, details={"setting": setting})
    return TransientError(f"{setting}: {where} is unreachable ({type(exc).__name__}); retry later",
                          details={"setting": setting})


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    # WAL is a property of the database file. Switching to it needs a moment of exclusive access,
    # which SQLite does not wait for (the busy timeout does not apply), so two processes opening a
    # brand-new ledger at once can see "database is locked" here: retry briefly.
    for attempt in range(50):
        try:
            if cur.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cur.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError:
            if attempt == 49:
                raise
            time.sleep(0.05 * (1 + attempt % 5))
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


def _next_control(conn: Connection, sender_id: str, receiver_id: str, now: datetime) -> int:
    """The pair's next control number (1..999999999, then 1 again); call under the chain lock."""
    c = m.control_counters
    pair = (c.c.sender_id == sender_id, c.c.receiver_id == receiver_id)
    if conn.execute(sa.select(c.c.last_control).where(*pair)).scalar_one_or_none() is None:
        conn.execute(sa.insert(c).values(sender_id=sender_id, receiver_id=receiver_id, last_control=0,
                                         updated_at=now))
    conn.execute(sa.update(c).where(*pair).values(
        last_control=sa.case((c.c.last_control >= ISA13_MAX, 1), else_=c.c.last_control + 1), updated_at=now))
    return int(conn.execute(sa.select(c.c.last_control).where(*pair)).scalar_one())


@dataclass(frozen=True)
class _Sent:
    interchange: Interchange
    sender_id: str
    receiver_id: str


def _transmissions(conn: Connection, run_id: str) -> list[_Sent]:
    """The run's first control numbers, then each resend's, oldest first."""
    t, r = m.interchanges, m.resends
    first = conn.execute(sa.select(t).where(t.c.run_id == run_id)).one_or_none()
    if first is None:
        return []
    out = [_Sent(Interchange(first.isa13, first.gs06, first.st02, first.created_at), first.sender_id,
                 first.receiver_id)]
    for x in conn.execute(sa.select(r).where(r.c.run_id == run_id).order_by(r.c.number)):
        out.append(_Sent(Interchange(x.isa13, x.gs06, x.st02, x.created_at, resend=x.number,
                                     replaces_delivery_id=x.replaces_delivery_id), x.sender_id, x.receiver_id))
    return out


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
    r = m.resends
    replaced = {(x.run_id, x.isa13): x.replaces_delivery_id for x in conn.execute(
        sa.select(r.c.run_id, r.c.isa13, r.c.replaces_delivery_id)
        .where(r.c.run_id.in_(sa.select(d.c.run_id).where(where))))}
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
            created_at=i.created_at, updated_at=seen[-1].at if seen else i.created_at,
            replaces_delivery_id=replaced.get((i.run_id, i.isa13))))
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


# ------------------------------------------------- authorisations, auditors' reads, retention (0002)
HOLD_SET, HOLD_CLEAR = "legal_hold_set", "legal_hold_clear"
HOLD_OBJECT_TYPES = frozenset({"employer", "feed"})
#: Audit tables purged by their own rule rather than with the run they belong to.
_STANDALONE = frozenset({"runs", "audit_events", "authorisations", "purge_checkpoints"})


@dataclass(frozen=True)
class AuthorisationRecord:
    """An employer's authorisation of a carrier for a feed's plans, effective over [from, to]."""

    seq: int
    feed_id: str
    employer_id: str
    carrier_id: str
    plans: tuple[str, ...]
    effective_from: date
    effective_to: date | None
    recorded_by: str
    reason: str | None
    at: datetime

    def covers(self, day: date) -> bool:
        return self.effective_from <= day and (self.effective_to is None or day <= self.effective_to)


@dataclass(frozen=True)
class OutcomeEvent:
    """One outcome row of a delivery, as written (a delivery's history is its list of these)."""

    seq: int
    delivery_id: str
    status: str
    ciphertext_sha256: str | None
    size: int | None
    remote_path: str | None
    host_key_fingerprint: str | None
    error_code: str | None
    message: str | None
    actor: str
    reason: str | None
    at: datetime


@dataclass(frozen=True)
class AuditEvent:
    """A recorded human or operational decision: who did what to which object, when and why."""

    seq: int
    actor: str
    action: str
    object_type: str
    object_id: str
    reason: str | None
    detail: Mapping[str, Any]
    at: datetime


@dataclass(frozen=True)
class LegalHold:
    """A hold in force on an employer or a feed, as set by its latest hold event."""

    object_type: str
    object_id: str
    actor: str
    reason: str | None
    since: datetime


@dataclass(frozen=True)
class PurgeCheckpoint:
    """A ledger purge; ``gaps`` are (first seq, last seq, prev_hash into it, row_hash of its last row)."""

    seq: int
    cutoff: datetime
    purged_rows: int
    gaps: tuple[tuple[Any, ...], ...]
    counts: Mapping[str, int]
    actor: str
    at: datetime


@dataclass(frozen=True)
class LedgerPurge:
    """What a purge removed (or, dry, would remove): rows per table, the chain gaps, the checkpoint's seq."""

    counts: Mapping[str, int]
    gaps: tuple[tuple[int, int, str, str], ...]
    checkpoint_seq: int | None
    dry_run: bool

    @property
    def rows(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class _Doomed:
    seq: int
    prev_hash: str
    row_hash: str


def _authorisation(r: Any) -> AuthorisationRecord:
    return AuthorisationRecord(seq=r.seq, feed_id=r.feed_id, employer_id=r.employer_id,
                               carrier_id=r.carrier_id, plans=tuple(json.loads(r.plans)),
                               effective_from=r.effective_from, effective_to=r.effective_to,
                               recorded_by=r.recorded_by, reason=r.reason, at=r.at)


def _audit_event(r: Any) -> AuditEvent:
    return AuditEvent(seq=r.seq, actor=r.actor, action=r.action, object_type=r.object_type,
                      object_id=r.object_id, reason=r.reason, detail=json.loads(r.detail), at=r.at)


def _active_holds(conn: Connection) -> list[LegalHold]:
    t = m.audit_events
    latest: dict[tuple[str, str], Any] = {}
    for r in conn.execute(sa.select(t).where(t.c.action.in_((HOLD_SET, HOLD_CLEAR))).order_by(t.c.seq)):
        latest[(r.object_type, r.object_id)] = r
    return [LegalHold(object_type=r.object_type, object_id=r.object_id, actor=r.actor, reason=r.reason,
                      since=r.at) for r in latest.values() if r.action == HOLD_SET]


def _time_column(table: sa.Table) -> sa.Column[Any] | None:
    return next((c for c in table.columns if isinstance(c.type, m.UTCDateTime)), None)


def _purge_plan(conn: Connection, cutoff: datetime, held_feeds: set[str],
                held_employers: set[str]) -> dict[str, list[_Doomed]]:
    """The audit rows a purge before ``cutoff`` removes, by table; see ``Ledger.purge_metadata``."""
    for hold in _active_holds(conn):
        (held_feeds if hold.object_type == "feed" else held_employers).add(hold.object_id)
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
        return ((r.object_type == "feed" and r.object_id in held_feeds)
                or (r.object_type == "employer" and r.object_id in held_employers)
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


def _plan_counts(plan: Mapping[str, list[_Doomed]]) -> dict[str, int]:
    return {name: len(rows) for name, rows in sorted(plan.items())}


def _plan_gaps(plan: Mapping[str, list[_Doomed]]) -> tuple[tuple[int, int, str, str], ...]:
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


def _recorded_gaps(conn: Connection) -> dict[int, list[tuple[int, str, str]]]:
    """Every gap any checkpoint recorded, by first seq: (last seq, prev_hash into it, its last row_hash)."""
    gaps: dict[int, list[tuple[int, str, str]]] = {}
    for text in conn.execute(sa.select(m.purge_checkpoints.c.gaps)).scalars():
        for first, last, prev_in, last_hash in json.loads(text):
            gaps.setdefault(int(first), []).append((int(last), str(prev_in), str(last_hash)))
    return gaps


# ---------------------------------------------------------------- acknowledgments (migration 0003)
ACK_KINDS = frozenset({"TA1", "999", "unreadable"})
#: ``partial``: a 999 group partly accepted (AK901 P); ``unreadable``: the file held no usable TA1/999.
ACK_STATUSES = frozenset({"accepted", "accepted_with_errors", "rejected", "partial", "unreadable"})
#: At most this many position/code entries are kept per row; the rest are counted in ``truncated``.
ACK_CODES_MAX = 200


@dataclass(frozen=True)
class AckRow:
    """One acknowledgment unit to record: a TA1, one 999 group (AK1..AK9), or an unreadable file.

    ``control_number`` is what the acknowledgment refers to (TA101 or AK102); ``isa13`` and
    ``delivery_id`` are the matched delivery's (None when nothing matched). ``sender_id`` and
    ``receiver_id`` are the acknowledgment's own ISA06/ISA08. ``codes`` are flat mappings of positions
    and codes only (the ledger's PHI guard checks each one).
    """

    unit: int
    kind: str
    status: str
    sender_id: str | None = None
    receiver_id: str | None = None
    control_number: int | None = None
    isa13: int | None = None
    delivery_id: str | None = None
    sets_accepted: int = 0
    sets_rejected: int = 0
    segment_errors: int = 0
    element_errors: int = 0
    codes: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True)
class AckRecord:
    """An acknowledgment row as recorded (see :class:`AckRow`), with its file, source and time."""

    seq: int
    file_sha256: str
    unit: int
    source_id: str
    file_name: str
    kind: str
    sender_id: str | None
    receiver_id: str | None
    control_number: int | None
    isa13: int | None
    delivery_id: str | None
    status: str
    sets_accepted: int
    sets_rejected: int
    segment_errors: int
    element_errors: int
    codes: tuple[Mapping[str, Any], ...]
    received_at: datetime


def _count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        raise LedgerError(f"{name} must be a non-negative integer", details={"field": name})
    return value


def _ack_values(row: AckRow) -> dict[str, Any]:
    check_choice("acknowledgment kind", row.kind, ACK_KINDS)
    check_choice("acknowledgment status", row.status, ACK_STATUSES)
    check_token("sender_id", row.sender_id, limit=64, required=False)
    check_token("receiver_id", row.receiver_id, limit=64, required=False)
    check_token("delivery_id", row.delivery_id, limit=32, required=False)
    for name, number in (("control_number", row.control_number), ("isa13", row.isa13)):
        if number is not None:
            _control(name, number)
    codes = [check_detail("codes", entry) for entry in row.codes[:ACK_CODES_MAX]]
    if len(row.codes) > ACK_CODES_MAX:
        codes.append({"truncated": len(row.codes) - ACK_CODES_MAX})
    return {"unit": _count("unit", row.unit), "kind": row.kind, "status": row.status,
            "sender_id": row.sender_id, "receiver_id": row.receiver_id,
            "control_number": row.control_number, "isa13": row.isa13, "delivery_id": row.delivery_id,
            "sets_accepted": _count("sets_accepted", row.sets_accepted),
            "sets_rejected": _count("sets_rejected", row.sets_rejected),
            "segment_errors": _count("segment_errors", row.segment_errors),
            "element_errors": _count("element_errors", row.element_errors),
            "codes": canonical_json(codes)}


def _ack_record(r: Any) -> AckRecord:
    return AckRecord(seq=r.seq, file_sha256=r.file_sha256, unit=r.unit, source_id=r.source_id,
                     file_name=r.file_name, kind=r.kind, sender_id=r.sender_id, receiver_id=r.receiver_id,
                     control_number=r.control_number, isa13=r.isa13, delivery_id=r.delivery_id,
                     status=r.status, sets_accepted=r.sets_accepted, sets_rejected=r.sets_rejected,
                     segment_errors=r.segment_errors, element_errors=r.element_errors,
                     codes=tuple(json.loads(r.codes)), received_at=r.received_at)
