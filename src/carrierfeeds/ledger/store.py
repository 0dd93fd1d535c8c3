"""The ``Ledger``: every write appends hash-chained rows under one lock; reads fold them into records.

Each write runs in one transaction that first locks the chain head (``SELECT ... FOR UPDATE`` on
PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so chain appends, control-number allocation and the
check-then-insert idempotency of ``start_run``/``record_delivery_intent`` are serialised across threads
and processes, and the chain can never fork. Unique constraints back that up. A run's delivery, which
spans an upload, is serialised by a lock of its own (``delivery_lock``) that never holds the chain lock.

The class is assembled from parts that share ``ledger.base.LedgerBase`` (engine, ``_write``, ``_read``):
this module holds runs, control numbers, deliveries, hand-offs and the chain's own reads;
``ledger.governance`` the audit side (authorisations, audit events, holds, purge) and
``ledger.acknowledgments`` the carriers' TA1/999 rows. Rows are read back into records by
``ledger.folds``; engines are made by ``ledger.connect``.
"""

from __future__ import annotations

import fcntl
import hashlib
import heapq
import json
import logging
import os
import threading
import uuid
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from carrierfeeds import __version__
from carrierfeeds.ledger import models as m
from carrierfeeds.ledger.acknowledgments import Acknowledgments
from carrierfeeds.ledger.chain import ChainVerdict, canonical_json, walk_chain
from carrierfeeds.ledger.connect import engine_for
from carrierfeeds.ledger.disclosures import Disclosure, Disclosures, write_disclosure
from carrierfeeds.ledger.folds import (
    chain_rows,
    count_attempts,
    fold_deliveries,
    next_control,
    read_run,
    read_transmissions,
    require_run,
    utc,
)
from carrierfeeds.ledger.governance import Governance
from carrierfeeds.ledger.purge import recorded_gaps
from carrierfeeds.ledger.records import (
    DELIVERED_STATUSES,
    ISA13_MAX,
    OUTCOME_STATUSES,
    RUN_STATUSES,
    SENT_STATUSES,
    STAGE_STATUSES,
    DeliveryRecord,
    DeliveryStatus,
    Interchange,
    LedgerError,
    RunEvent,
    RunEventKind,
    RunRecord,
    RunStatus,
    StageStatus,
    UnknownRecord,
    check_aware,
    check_choice,
    check_control,
    check_day,
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
#: Ids per ``IN`` list when reading rows of many runs: well under SQLite's bound-parameter limit.
_IN_BATCH = 500


class Ledger(Governance, Acknowledgments, Disclosures):
    """The delivery ledger on SQLite or PostgreSQL. Open it, ``upgrade()`` it, and share it across threads.

    Runs, control numbers, deliveries and hand-offs and the chain itself are here; the audit side
    (authorisations, audit events, holds, purge) is :class:`~carrierfeeds.ledger.governance.Governance`,
    acknowledgments :class:`~carrierfeeds.ledger.acknowledgments.Acknowledgments`.
    """

    # ------------------------------------------------------------------------------ lifecycle
    @classmethod
    def open(cls, url: str, *, setting: str = "ledger URL") -> Ledger:
        """``sqlite:///path`` or ``postgresql+psycopg://...``; nothing is created until ``upgrade()``.

        A URL of another scheme, or naming a driver that is not installed, is a ConfigError naming
        ``setting`` (never the URL: it may hold a password).
        """
        return cls(engine_for(url, setting=setting))

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

    # ------------------------------------------------------------------------------------ runs
    def start_run(self, *, feed_id: str, interval_start: date, interval_end: date, actor: str,
                  now: datetime) -> RunRecord:
        """Find or create the run of (feed, interval) and record one more attempt of it."""
        check_token("feed_id", feed_id, limit=128)
        check_token("actor", actor, limit=128)
        check_day("interval_start", interval_start)
        check_day("interval_end", interval_end)
        check_aware("now", now)
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
            attempt = count_attempts(tx.conn, run_id) + 1
            tx.append(m.run_events, {"run_id": run_id, "kind": RunEventKind.RUN_ATTEMPT, "stage": None,
                                     "status": StageStatus.STARTED, "attempt": attempt, "actor": actor,
                                     # which carrierfeeds ran this attempt, for an auditor reading it later
                                     "detail": canonical_json({"version": __version__}), "error_code": None,
                                     "message": None,
                                     "at": now})
            record = read_run(tx.conn, run_id)
        if record is None:  # cannot happen: written in this very transaction
            raise LedgerError("run vanished while being started", details={"run_id": run_id})
        log.info("run %s of feed %s for %s..%s: attempt %d", run_id, feed_id, interval_start, interval_end,
                 attempt)
        return record

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._read() as conn:
            return read_run(conn, run_id)

    def record_stage(self, run_id: str, stage: str, status: str, *, now: datetime,
                     detail: Mapping[str, Any] | None = None, error_code: str | None = None,
                     message: str | None = None) -> None:
        """Append a stage event; ``detail`` must pass the PHI guard (numbers, booleans, short codes)."""
        check_token("stage", stage, limit=64)
        status = check_choice("stage status", status, STAGE_STATUSES)
        clean = check_detail("detail", detail)
        check_token("error_code", error_code, limit=64, required=False)
        check_text("message", message)
        check_aware("now", now)
        with self._write() as tx:
            attempt = require_run(tx.conn, run_id)
            tx.append(m.run_events, {"run_id": run_id, "kind": RunEventKind.STAGE, "stage": stage, "status": status,
                                     "attempt": attempt, "actor": None, "detail": canonical_json(clean),
                                     "error_code": error_code, "message": message, "at": now})

    def finish_run(self, run_id: str, status: str, *, now: datetime,
                   counts: Mapping[str, int] | None = None, error_code: str | None = None,
                   message: str | None = None) -> None:
        """Append the run's final status for its current attempt; ``counts`` are integers only."""
        status = check_choice("run status", status, RUN_STATUSES)
        clean = check_detail("counts", counts, ints_only=True)
        check_token("error_code", error_code, limit=64, required=False)
        check_text("message", message)
        check_aware("now", now)
        with self._write() as tx:
            attempt = require_run(tx.conn, run_id)
            tx.append(m.run_events, {"run_id": run_id, "kind": RunEventKind.RUN_FINISHED, "stage": None,
                                     "status": status, "attempt": attempt, "actor": None,
                                     "detail": canonical_json(clean),
                                     "error_code": error_code, "message": message, "at": now})
        log.info("run %s finished: %s", run_id, status)

    def run_events(self, run_id: str) -> list[RunEvent]:
        """Every attempt, stage event and finish of one run, in the order they were written."""
        t = m.run_events
        with self._read() as conn:
            rows = conn.execute(sa.select(t).where(t.c.run_id == run_id).order_by(t.c.seq)).all()
        return [_run_event(r) for r in rows]

    def latest_runs(self) -> dict[str, tuple[RunRecord, list[RunEvent]]]:
        """feed id -> its most recently started run (the first written among equals) and that run's
        events in written order; the run as :meth:`get_run` gives it. A few queries for the whole
        ledger, not a few per run: the board reads every feed's last run at once."""
        r, e = m.runs, m.run_events
        newest = sa.select(r.c.feed_id, sa.func.max(r.c.created_at).label("at")).group_by(r.c.feed_id).subquery()
        query = sa.select(r).join(newest, sa.and_(r.c.feed_id == newest.c.feed_id, r.c.created_at == newest.c.at))
        runs: dict[str, Any] = {}
        events: dict[str, list[RunEvent]] = {}
        with self._read() as conn:
            for row in conn.execute(query.order_by(r.c.seq)):
                runs.setdefault(row.feed_id, row)
            ids = [row.run_id for row in runs.values()]
            for start in range(0, len(ids), _IN_BATCH):
                for ev in conn.execute(sa.select(e).where(e.c.run_id.in_(ids[start:start + _IN_BATCH]))
                                       .order_by(e.c.seq)):
                    events.setdefault(ev.run_id, []).append(_run_event(ev))
        out = {}
        for feed_id, row in runs.items():
            seen = events.get(row.run_id, [])
            # read_run's fold: the latest attempt or finish says whether the run is still going.
            last = next((x for x in reversed(seen)
                         if x.kind in (RunEventKind.RUN_ATTEMPT, RunEventKind.RUN_FINISHED)), None)
            status = last.status if last is not None and last.kind == RunEventKind.RUN_FINISHED \
                else RunStatus.RUNNING
            out[feed_id] = (RunRecord(run_id=row.run_id, feed_id=row.feed_id, interval_start=row.interval_start,
                                      interval_end=row.interval_end, status=status,
                                      attempt=sum(x.kind == RunEventKind.RUN_ATTEMPT for x in seen),
                                      started_at=row.created_at), seen)
        return out

    # ------------------------------------------------------------------------- control numbers
    def allocate_control_numbers(self, *, run_id: str, sender_id: str, receiver_id: str,
                                 now: datetime) -> Interchange:
        """The run's ISA13/GS06/ST02: allocated on the first call, the same numbers on every later one.

        One counter per (sender, receiver) pair, 1..999999999 then back to 1; the three numbers of a
        file are equal (one interchange, one group, one transaction set), so any of them finds the file.
        """
        check_token("sender_id", sender_id, limit=64)
        check_token("receiver_id", receiver_id, limit=64)
        check_aware("now", now)
        t = m.interchanges
        with self._write() as tx:
            require_run(tx.conn, run_id)
            found = tx.conn.execute(sa.select(t).where(t.c.run_id == run_id)).one_or_none()
            if found is not None:
                if (found.sender_id, found.receiver_id) != (sender_id, receiver_id):
                    raise LedgerError("run already has control numbers for another sender/receiver pair",
                                      details={"run_id": run_id, "isa13": found.isa13})
                return Interchange(found.isa13, found.gs06, found.st02, found.created_at)
            number = next_control(tx.conn, sender_id, receiver_id, now)
            tx.append(t, {"run_id": run_id, "sender_id": sender_id, "receiver_id": receiver_id,
                          "isa13": number, "gs06": number, "st02": number, "created_at": now})
        log.info("run %s: control number %09d allocated", run_id, number)
        return Interchange(number, number, number, utc(now))

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
        check_aware("now", now)
        r = m.resends
        with self._write() as tx:
            require_run(tx.conn, run_id)
            sent = read_transmissions(tx.conn, run_id)
            if not sent:
                raise LedgerError("the run has no control numbers to resend", details={"run_id": run_id})
            newest = sent[-1]
            if (newest.sender_id, newest.receiver_id) != (sender_id, receiver_id):
                raise LedgerError("run has control numbers for another sender/receiver pair",
                                  details={"run_id": run_id, "isa13": newest.interchange.isa13})
            d = m.deliveries
            found = fold_deliveries(tx.conn, sa.and_(d.c.run_id == run_id, d.c.isa13 == newest.interchange.isa13))
            reached = [x for x in found if x.status in SENT_STATUSES]
            if not reached:
                return newest.interchange if newest.interchange.resend else None
            number = next_control(tx.conn, sender_id, receiver_id, now)
            resend = newest.interchange.resend + 1
            tx.append(r, {"resend_id": uuid.uuid4().hex, "run_id": run_id, "number": resend,
                          "replaces_delivery_id": reached[-1].delivery_id, "sender_id": sender_id,
                          "receiver_id": receiver_id, "isa13": number, "gs06": number, "st02": number,
                          "actor": actor, "reason": reason, "created_at": now})
        log.info("run %s: forced resend %d gets control number %09d (replaces delivery %s)", run_id, resend,
                 number, reached[-1].delivery_id)
        return Interchange(number, number, number, utc(now), resend=resend,
                           replaces_delivery_id=reached[-1].delivery_id)

    def transmissions(self, run_id: str) -> list[Interchange]:
        """The control numbers of every file of the run: its first, then each forced resend in order."""
        with self._read() as conn:
            return [x.interchange for x in read_transmissions(conn, run_id)]

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
        check_day("interval_start", interval_start)
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
                               transport: str, now: datetime,
                               disclosure: Disclosure | None = None) -> DeliveryRecord:
        """Record that a file is about to be sent; returns the existing record for the same
        (feed, interval, payload) instead of a second one. ``disclosure`` (what the file disclosed, see
        ``ledger.disclosures``) is recorded with a new intent, in its transaction."""
        check_token("feed_id", feed_id, limit=128)
        check_day("interval_start", interval_start)
        check_sha256("payload_sha256", payload_sha256)
        check_token("file_name", file_name, limit=255)
        for name, value in (("isa13", isa13), ("gs06", gs06), ("st02", st02)):
            check_control(name, value)
        check_token("recipient_fingerprint", recipient_fingerprint, limit=128)
        counts = check_detail("member_counts", member_counts, ints_only=True)
        check_token("transport", transport, limit=32)
        check_aware("now", now)
        t = m.deliveries
        with self._write() as tx:
            existing = tx.conn.execute(sa.select(t.c.delivery_id).where(
                t.c.feed_id == feed_id, t.c.interval_start == interval_start,
                t.c.payload_sha256 == payload_sha256)).scalar_one_or_none()
            if existing is None:
                require_run(tx.conn, run_id)
                allocated = [(x.interchange.isa13, x.interchange.gs06, x.interchange.st02)
                             for x in read_transmissions(tx.conn, run_id)]
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
                if disclosure is not None:
                    write_disclosure(tx, existing, disclosure, now)
                log.info("delivery %s intent: feed %s interval %s isa13 %09d", existing, feed_id,
                         interval_start, isa13)
            records = fold_deliveries(tx.conn, t.c.delivery_id == existing)
        return records[0]

    def record_delivery_outcome(self, delivery_id: str, *, status: str, now: datetime,
                                ciphertext_sha256: str | None = None, size: int | None = None,
                                remote_path: str | None = None, host_key_fingerprint: str | None = None,
                                error_code: str | None = None, message: str | None = None,
                                actor: str = "system", reason: str | None = None) -> None:
        """Append what happened to a delivery; the intent row is never changed."""
        status = check_choice("delivery status", status, OUTCOME_STATUSES)
        check_aware("now", now)
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
            found = fold_deliveries(conn, sa.and_(*cond))
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
            cond.append(t.c.created_at >= check_aware("since", since))
        if until is not None:
            cond.append(t.c.created_at < check_aware("until", until))
        with self._read() as conn:
            found = fold_deliveries(conn, sa.and_(sa.true(), *cond))
        return [d for d in found if status is None or d.status == status]

    # ------------------------------------------------------------------------- manual hand-offs
    def pending_handoffs(self, *, feed_id: str | None = None) -> list[DeliveryRecord]:
        """Deliveries waiting for a person: latest outcome ``pending_handoff``, oldest first."""
        return self.deliveries(feed_id=feed_id, status=DeliveryStatus.PENDING_HANDOFF)

    def confirm_handoff(self, delivery_id: str, *, by: str, method: str, received_by: str,
                        now: datetime) -> DeliveryRecord:
        """A person handed a pending file over: append outcome ``handed_off`` (actor ``by``, reason
        ``method``, ``received_by`` the person at the recipient who took it) and audit event
        ``handoff_confirmed``, in one transaction.

        UnknownRecord for an unknown id; LedgerError when the delivery is not pending a hand-off
        (already confirmed, or an electronic delivery).
        """
        check_token("delivery_id", delivery_id, limit=64)
        check_token("by", by, limit=128)
        check_token("method", method, limit=64)
        check_token("received_by", received_by, limit=128)
        check_aware("now", now)
        d = m.deliveries
        with self._write() as tx:
            found = fold_deliveries(tx.conn, d.c.delivery_id == delivery_id)
            if not found:
                raise UnknownRecord("no such delivery", details={"delivery_id": delivery_id})
            record = found[0]
            if record.status != DeliveryStatus.PENDING_HANDOFF:
                already = record.status == DeliveryStatus.HANDED_OFF
                raise LedgerError("the hand-off was already confirmed" if already else
                                  f"delivery is {record.status!r}, not pending a hand-off",
                                  details={"delivery_id": delivery_id, "status": record.status})
            tx.append(m.delivery_outcomes, {
                "delivery_id": delivery_id, "status": DeliveryStatus.HANDED_OFF, "ciphertext_sha256": None,
                "size": None, "remote_path": None, "host_key_fingerprint": None, "error_code": None, "message": None,
                "actor": by, "reason": method, "at": now, "received_by": received_by})
            tx.append(m.audit_events, {
                "actor": by, "action": "handoff_confirmed", "object_type": "delivery", "object_id": delivery_id,
                "reason": method, "detail": canonical_json({"feed_id": record.feed_id, "isa13": record.isa13}),
                "at": now})
            confirmed = fold_deliveries(tx.conn, d.c.delivery_id == delivery_id)[0]
        log.info("delivery %s handed off (method %s)", delivery_id, method)
        return confirmed

    def verify_chain(self) -> ChainVerdict:
        """Walk every audit row in chain order from one consistent snapshot; name the first broken link."""
        with self._read(snapshot=True) as conn:
            head = conn.execute(sa.select(m.chain_head.c.seq, m.chain_head.c.row_hash)
                                .where(m.chain_head.c.id == 1)).one_or_none()
            if head is None:
                raise LedgerError("the ledger has no chain head: run upgrade() first")
            streams = [chain_rows(conn, name, table, id_col)
                       for name, (table, id_col) in m.AUDIT_TABLES.items()]
            # Purged rows leave gaps that only their checkpoints explain (see carrierfeeds.retention).
            verdict = walk_chain(heapq.merge(*streams, key=lambda r: r.seq), gaps=recorded_gaps(conn),
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


def _run_event(r: Any) -> RunEvent:
    return RunEvent(seq=r.seq, run_id=r.run_id, kind=r.kind, stage=r.stage, status=r.status, attempt=r.attempt,
                    actor=r.actor, detail=json.loads(r.detail), error_code=r.error_code, message=r.message, at=r.at)


__all__ = ["MIGRATIONS", "Ledger"]
