"""Authorisations, the audit trail and its reads, legal holds and the retention purge of the ledger."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa

from carrierfeeds.ledger import models as m
from carrierfeeds.ledger.base import LedgerBase
from carrierfeeds.ledger.chain import canonical_json, sha256_hex
from carrierfeeds.ledger.folds import audit_event_record, authorisation_record, read_run
from carrierfeeds.ledger.purge import active_holds, plan_counts, plan_gaps, plan_purge
from carrierfeeds.ledger.records import (
    HOLD_OBJECT_TYPES,
    AuditEvent,
    AuthorisationRecord,
    HoldAction,
    LedgerError,
    LedgerPurge,
    LegalHold,
    OutcomeEvent,
    PurgeCheckpoint,
    RunRecord,
    check_aware,
    check_choice,
    check_day,
    check_detail,
    check_text,
    check_token,
)

log = logging.getLogger(__name__)


class Governance(LedgerBase):
    """The ``Ledger``'s audit side: decisions people record, what auditors read, what retention removes."""

    def audit(self, *, actor: str, action: str, object_type: str, object_id: str, now: datetime,
              reason: str | None = None, detail: Mapping[str, Any] | None = None) -> None:
        """Record a human or operational decision (a forced resend, a purge, a legal hold)."""
        check_token("actor", actor, limit=128)
        check_token("action", action, limit=64)
        check_token("object_type", object_type, limit=64)
        check_token("object_id", object_id, limit=128)
        check_text("reason", reason)
        clean = check_detail("detail", detail)
        check_aware("now", now)
        with self._write() as tx:
            tx.append(m.audit_events, {"actor": actor, "action": action, "object_type": object_type,
                                       "object_id": object_id, "reason": reason,
                                       "detail": canonical_json(clean), "at": now})
        log.info("audit: %s %s %s %s", actor, action, object_type, object_id)

    def record_authorisation(self, *, feed_id: str, employer_id: str, carrier_id: str, plans: Sequence[str],
                             effective_from: date, effective_to: date | None, recorded_by: str, now: datetime,
                             reason: str | None = None, reference: str | None = None) -> AuthorisationRecord:
        """Record the employer's authorisation of a carrier for a feed; the feed's latest record is
        returned instead of a new one when its content (parties, plans, dates, and the employer's
        document ``reference`` when there is one) is the same."""
        check_token("feed_id", feed_id, limit=128)
        check_token("employer_id", employer_id, limit=128)
        check_token("carrier_id", carrier_id, limit=128)
        plan_list = sorted({str(check_token("plan", p, limit=64)) for p in plans})
        if not plan_list:
            raise LedgerError("an authorisation names at least one plan", details={"feed_id": feed_id})
        check_day("effective_from", effective_from)
        if effective_to is not None and check_day("effective_to", effective_to) < effective_from:
            raise LedgerError("effective_to is before effective_from", details={"feed_id": feed_id})
        check_token("recorded_by", recorded_by, limit=128)
        check_text("reason", reason)
        check_text("reference", reference, limit=200)
        check_aware("now", now)
        content = {"feed_id": feed_id, "employer_id": employer_id, "carrier_id": carrier_id,
                   "plans": plan_list, "effective_from": effective_from.isoformat(),
                   "effective_to": effective_to.isoformat() if effective_to else None,
                   # Only when given: an authorisation without one keeps the digest it always had.
                   **({"reference": reference} if reference is not None else {})}
        digest = sha256_hex(canonical_json(content))
        t = m.authorisations
        with self._write() as tx:
            latest = tx.conn.execute(sa.select(t).where(t.c.feed_id == feed_id).order_by(t.c.seq.desc())
                                     .limit(1)).one_or_none()
            if latest is None or latest.content_sha256 != digest:
                tx.append(t, {"feed_id": feed_id, "employer_id": employer_id, "carrier_id": carrier_id,
                              "plans": canonical_json(plan_list), "effective_from": effective_from,
                              "effective_to": effective_to, "content_sha256": digest,
                              "recorded_by": recorded_by, "reason": reason, "at": now, "reference": reference})
                log.info("authorisation of carrier %s by employer %s for feed %s recorded", carrier_id,
                         employer_id, feed_id)
                latest = tx.conn.execute(sa.select(t).where(t.c.seq == tx.seq)).one()
        return authorisation_record(latest)

    def authorisations(self, *, feed_id: str | None = None) -> list[AuthorisationRecord]:
        """Every recorded authorisation (of one feed), oldest first."""
        t = m.authorisations
        query = sa.select(t).order_by(t.c.seq)
        if feed_id is not None:
            query = query.where(t.c.feed_id == feed_id)
        with self._read() as conn:
            return [authorisation_record(r) for r in conn.execute(query)]

    def list_runs(self, *, feed_id: str | None = None, since: datetime | None = None,
                  until: datetime | None = None) -> list[RunRecord]:
        """Runs first started in [since, until), oldest first."""
        t = m.runs
        query = sa.select(t.c.run_id).order_by(t.c.seq)
        if feed_id is not None:
            query = query.where(t.c.feed_id == feed_id)
        if since is not None:
            query = query.where(t.c.created_at >= check_aware("since", since))
        if until is not None:
            query = query.where(t.c.created_at < check_aware("until", until))
        with self._read() as conn:
            found = [read_run(conn, run_id) for run_id in conn.execute(query).scalars()]
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
                                 at=r.at, received_by=r.received_by)
                    for r in conn.execute(query)]

    def audit_events(self, *, since: datetime | None = None, until: datetime | None = None,
                     action: str | None = None, object_type: str | None = None,
                     object_ids: Collection[str] | None = None) -> list[AuditEvent]:
        """Audit events at [since, until), optionally of one action or about some objects, in chain order."""
        t = m.audit_events
        query = sa.select(t).order_by(t.c.seq)
        if since is not None:
            query = query.where(t.c.at >= check_aware("since", since))
        if until is not None:
            query = query.where(t.c.at < check_aware("until", until))
        if action is not None:
            query = query.where(t.c.action == action)
        if object_type is not None:
            query = query.where(t.c.object_type == object_type)
        if object_ids is not None:
            query = query.where(t.c.object_id.in_(list(object_ids)))
        with self._read() as conn:
            return [audit_event_record(r) for r in conn.execute(query)]

    def set_legal_hold(self, *, object_type: str, object_id: str, held: bool, actor: str, reason: str,
                       now: datetime) -> None:
        """Place (``held``) or lift a legal hold on an employer or a feed: an audit event with its reason."""
        check_choice("hold object_type", object_type, HOLD_OBJECT_TYPES)
        if not reason or not reason.strip():
            raise LedgerError("a legal hold needs a reason", details={"object_id": object_id})
        self.audit(actor=actor, action=HoldAction.SET if held else HoldAction.CLEAR, object_type=object_type,
                   object_id=object_id, reason=reason, now=now)

    def legal_holds(self) -> list[LegalHold]:
        """The holds in force: for each employer or feed, its latest hold event, when that one set it."""
        with self._read() as conn:
            return active_holds(conn)

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
        check_aware("cutoff", cutoff)
        check_aware("now", now)
        check_token("actor", actor, limit=128)
        if dry_run:
            with self._read() as conn:
                plan = plan_purge(conn, cutoff, set(held_feeds), set(held_employers))
            return LedgerPurge(counts=plan_counts(plan), gaps=plan_gaps(plan), checkpoint_seq=None,
                               dry_run=True)
        with self._write() as tx:
            plan = plan_purge(tx.conn, cutoff, set(held_feeds), set(held_employers))
            counts, gaps = plan_counts(plan), plan_gaps(plan)
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
