"""Reading ledger rows back as records (deliveries with their outcomes folded in, runs, transmissions)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from carrierfeeds.ledger import models as m
from carrierfeeds.ledger.chain import ChainRow, canonical_json
from carrierfeeds.ledger.records import (
    ACK_CODES_MAX,
    ACK_KINDS,
    ACK_STATUSES,
    ISA13_MAX,
    AckRecord,
    AckRow,
    AuditEvent,
    AuthorisationRecord,
    DeliveryRecord,
    DeliveryStatus,
    Interchange,
    RunEventKind,
    RunRecord,
    RunStatus,
    UnknownRecord,
    check_choice,
    check_control,
    check_count,
    check_detail,
    check_token,
)


def utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def count_attempts(conn: Connection, run_id: str) -> int:
    t = m.run_events
    return int(conn.execute(sa.select(sa.func.count()).select_from(t).where(
        t.c.run_id == run_id, t.c.kind == RunEventKind.RUN_ATTEMPT)).scalar_one())


def require_run(conn: Connection, run_id: str) -> int:
    """The run's current attempt number; refuses an unknown run."""
    attempt = count_attempts(conn, run_id)
    if attempt == 0:
        raise UnknownRecord("no such run", details={"run_id": run_id})
    return attempt


def next_control(conn: Connection, sender_id: str, receiver_id: str, now: datetime) -> int:
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
class Sent:
    interchange: Interchange
    sender_id: str
    receiver_id: str


def read_transmissions(conn: Connection, run_id: str) -> list[Sent]:
    """The run's first control numbers, then each resend's, oldest first."""
    t, r = m.interchanges, m.resends
    first = conn.execute(sa.select(t).where(t.c.run_id == run_id)).one_or_none()
    if first is None:
        return []
    out = [Sent(Interchange(first.isa13, first.gs06, first.st02, first.created_at), first.sender_id,
                 first.receiver_id)]
    for x in conn.execute(sa.select(r).where(r.c.run_id == run_id).order_by(r.c.number)):
        out.append(Sent(Interchange(x.isa13, x.gs06, x.st02, x.created_at, resend=x.number,
                                     replaces_delivery_id=x.replaces_delivery_id), x.sender_id, x.receiver_id))
    return out


def read_run(conn: Connection, run_id: str) -> RunRecord | None:
    run = conn.execute(sa.select(m.runs).where(m.runs.c.run_id == run_id)).one_or_none()
    if run is None:
        return None
    t = m.run_events
    last = conn.execute(sa.select(t.c.kind, t.c.status).where(
        t.c.run_id == run_id, t.c.kind.in_((RunEventKind.RUN_ATTEMPT, RunEventKind.RUN_FINISHED))
    ).order_by(t.c.seq.desc()).limit(1)).one_or_none()
    status = last.status if last is not None and last.kind == RunEventKind.RUN_FINISHED else RunStatus.RUNNING
    return RunRecord(run_id=run.run_id, feed_id=run.feed_id, interval_start=run.interval_start,
                     interval_end=run.interval_end, status=status, attempt=count_attempts(conn, run_id),
                     started_at=run.created_at)


def fold_deliveries(conn: Connection, where: sa.ColumnElement[bool]) -> list[DeliveryRecord]:
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
            transport=i.transport, status=seen[-1].status if seen else DeliveryStatus.PENDING,
            ciphertext_sha256=latest.get("ciphertext_sha256"), size=latest.get("size"),
            remote_path=latest.get("remote_path"), host_key_fingerprint=latest.get("host_key_fingerprint"),
            created_at=i.created_at, updated_at=seen[-1].at if seen else i.created_at,
            replaces_delivery_id=replaced.get((i.run_id, i.isa13))))
    return out


def chain_rows(conn: Connection, name: str, table: sa.Table, id_col: str) -> Iterator[ChainRow]:
    cols = m.hashed_columns(table)
    wanted = {*cols, id_col, *m.CHAIN_FIELDS}
    query = sa.select(*[c for c in table.columns if c.name in wanted]).order_by(table.c.seq)
    for row in conn.execution_options(yield_per=1000).execute(query):
        data = row._mapping
        yield ChainRow(table=name, row_id=str(data[id_col]), seq=int(data["seq"]),
                       prev_hash=str(data["prev_hash"]), row_hash=str(data["row_hash"]),
                       content=m.row_content(table, data))




def authorisation_record(r: Any) -> AuthorisationRecord:
    return AuthorisationRecord(seq=r.seq, feed_id=r.feed_id, employer_id=r.employer_id,
                               carrier_id=r.carrier_id, plans=tuple(json.loads(r.plans)),
                               effective_from=r.effective_from, effective_to=r.effective_to,
                               recorded_by=r.recorded_by, reason=r.reason, at=r.at, reference=r.reference)


def audit_event_record(r: Any) -> AuditEvent:
    return AuditEvent(seq=r.seq, actor=r.actor, action=r.action, object_type=r.object_type,
                      object_id=r.object_id, reason=r.reason, detail=json.loads(r.detail), at=r.at)


def ack_values(row: AckRow) -> dict[str, Any]:
    kind = check_choice("acknowledgment kind", row.kind, ACK_KINDS)
    status = check_choice("acknowledgment status", row.status, ACK_STATUSES)
    check_token("sender_id", row.sender_id, limit=64, required=False)
    check_token("receiver_id", row.receiver_id, limit=64, required=False)
    check_token("delivery_id", row.delivery_id, limit=32, required=False)
    for name, number in (("control_number", row.control_number), ("isa13", row.isa13)):
        if number is not None:
            check_control(name, number)
    codes = [check_detail("codes", entry) for entry in row.codes[:ACK_CODES_MAX]]
    if len(row.codes) > ACK_CODES_MAX:
        codes.append({"truncated": len(row.codes) - ACK_CODES_MAX})
    return {"unit": check_count("unit", row.unit), "kind": kind, "status": status,
            "sender_id": row.sender_id, "receiver_id": row.receiver_id,
            "control_number": row.control_number, "isa13": row.isa13, "delivery_id": row.delivery_id,
            "sets_accepted": check_count("sets_accepted", row.sets_accepted),
            "sets_rejected": check_count("sets_rejected", row.sets_rejected),
            "segment_errors": check_count("segment_errors", row.segment_errors),
            "element_errors": check_count("element_errors", row.element_errors),
            "codes": canonical_json(codes)}


def ack_record(r: Any) -> AckRecord:
    return AckRecord(seq=r.seq, file_sha256=r.file_sha256, unit=r.unit, source_id=r.source_id,
                     file_name=r.file_name, kind=r.kind, sender_id=r.sender_id, receiver_id=r.receiver_id,
                     control_number=r.control_number, isa13=r.isa13, delivery_id=r.delivery_id,
                     status=r.status, sets_accepted=r.sets_accepted, sets_rejected=r.sets_rejected,
                     segment_errors=r.segment_errors, element_errors=r.element_errors,
                     codes=tuple(json.loads(r.codes)), received_at=r.received_at)
