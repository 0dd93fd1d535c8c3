"""Auditors' views of the ledger: delivery lines, one run's history, a period report (HTML or PDF), and
the evidence of each disclosure: which deliveries carried a member (by token), which fields each carrier
was sent under which config, and under which authorisation (with the employer's document it rests on).

Queries read the ledger and return frozen values; formatting and rendering take those values and
return text or bytes, with the clock passed in. Everything shown comes from the ledger, which holds
ids, counts, hashes, fingerprints, actors and times only, so reports are PHI-free by construction.

Acknowledgments (TA1/999) are passed in as :class:`AckInfo` by delivery id; with none passed, the
acknowledgment columns read ``n/a`` ("not tracked") rather than pretending nothing was late.
:func:`acks_from_ledger` folds the ledger's acknowledgments exactly as ``carrierfeeds acks status``
does (:func:`carrierfeeds.acknowledgments.ack_infos`: the latest 999, else the latest TA1). An acknowledgment is
late when it came (or, still missing, the report was made) more than the carrier mapping's
``ack_window_hours`` after the delivery, passed in per feed; a feed without one gets the mapping
default (24 h). A rejection counts rejected and partially accepted files alike: either way some of it
was not taken.

Why one module: every view here is a fold of the same ledger reads (delivery lines) rendered for one
reader, an auditor; the queries are short and the renderers (CSV, JSON, table, HTML, PDF) share the
value types, so a split would mostly add imports. reportlab is imported only inside the PDF renderer.
"""

from __future__ import annotations

import csv
import html
import io
import json
import logging
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from carrierfeeds.acknowledgments.status import BLOCKING_STATUSES, DEFAULT_WINDOW, AckInfo, ack_infos
from carrierfeeds.ledger import DeliveryRecord, Ledger, RunEvent, RunRecord
from carrierfeeds.ledger.anchor import AnchorLog, verify_ledger
from carrierfeeds.ledger.notices import NoticeSend, notice_sends_of
from carrierfeeds.ledger.records import (
    DELIVERED_STATUSES,
    AuditEvent,
    AuthorisationRecord,
    DeliveryStatus,
    OutcomeEvent,
)
from carrierfeeds.outcomes import UNSUCCESSFUL, RunStatus
from carrierfeeds.retention import FeedParty
from carrierfeeds.x12.codes import MaintenanceType

log = logging.getLogger(__name__)

#: Maintenance types (INS03) members are counted by: 001 change, 021 addition, 024 cancellation or
#: termination, 025 reinstatement, 030 audit or compare (a full file).
MAINTENANCE_TYPES: tuple[str, ...] = tuple(t.value for t in MaintenanceType)
LOG_COLUMNS: tuple[str, ...] = (
    "sent_at", "updated_at", "feed_id", "employer_id", "carrier_id", "interval_start", "status", "attempts",
    "ack_status", "ack_at", "members", *(f"ins03_{t}" for t in MAINTENANCE_TYPES), "isa13",
    "file_name", "transport", "payload_sha256",
    "ciphertext_sha256", "recipient_fingerprint", "host_key_fingerprint", "authorisation_seq",
    "authorisation_reference", "fields_disclosed", "actor", "received_by", "forced_reason", "delivery_id", "run_id")


@dataclass(frozen=True)
class DeliveryLine:
    """One delivery as the auditor reads it.

    ``sent_at`` is the intent's time, ``updated_at`` the latest outcome's; ``attempts`` counts outcome
    rows and ``failures`` the failed ones; ``authorisation_seq`` is the ledger row of the employer's
    authorisation in force for the interval when the file was sent (None: none was recorded);
    ``actor`` is who recorded the latest outcome; ``forced_reason`` the reason of a forced resend;
    ``maintenance`` counts the members by maintenance type (INS03 code -> members), as the delivery
    recorded them; empty for a delivery recorded without them.
    """

    delivery_id: str
    run_id: str
    feed_id: str
    employer_id: str | None
    carrier_id: str | None
    interval_start: date
    sent_at: datetime
    updated_at: datetime
    status: str
    attempts: int
    failures: int
    members: int | None
    maintenance: dict[str, int]
    isa13: int
    file_name: str
    transport: str
    payload_sha256: str
    ciphertext_sha256: str | None
    recipient_fingerprint: str
    host_key_fingerprint: str | None
    remote_path: str | None
    authorisation_seq: int | None
    actor: str | None
    forced_reason: str | None
    ack_status: str | None
    ack_at: datetime | None
    #: The employer's document the authorisation in force rests on (None: none recorded).
    authorisation_reference: str | None = None
    #: The census fields the file carried, and the sha256 of the feed, mapping, schema and suite files it
    #: was built under; None for a delivery recorded before disclosures were kept.
    fields_disclosed: tuple[str, ...] | None = None
    config_sha256: Mapping[str, str] | None = None
    #: A manual hand-off: who at the recipient took the file.
    received_by: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status in DELIVERED_STATUSES

    def maintenance_count(self, code: str) -> int | None:
        """Members of one maintenance type; None when the delivery recorded no breakdown."""
        return self.maintenance.get(code, 0) if self.maintenance else None

    def as_dict(self) -> dict[str, Any]:
        return {k: (v.isoformat() if isinstance(v, date) else v) for k, v in asdict(self).items()}


def _maintenance(member_counts: Mapping[str, Any]) -> dict[str, int]:
    return {k.removeprefix("ins03_"): int(v) for k, v in sorted(member_counts.items()) if k.startswith("ins03_")}


# ----------------------------------------------------------------------------------------- queries
def feed_parties(ledger: Ledger, parties: Iterable[FeedParty] = ()) -> dict[str, tuple[str, str]]:
    """feed id -> (employer id, carrier id): the ledger's latest authorisations, then the feed files."""
    out = {a.feed_id: (a.employer_id, a.carrier_id) for a in ledger.authorisations()}
    out.update({p.feed_id: (p.employer_id, p.carrier_id) for p in parties})
    return out


def acks_from_ledger(ledger: Ledger, delivery_ids: Collection[str] | None = None) -> dict[str, AckInfo]:
    """Each delivery's acknowledgment as ``carrierfeeds acks`` folds them: the latest 999, else the
    latest TA1, with that acknowledgment's time."""
    return ack_infos(ledger, delivery_ids)


def _authority(auths: Sequence[AuthorisationRecord], d: DeliveryRecord) -> AuthorisationRecord | None:
    """The newest authorisation recorded before the file was sent that covers its interval."""
    found = [a for a in auths if a.feed_id == d.feed_id and a.at <= d.created_at and a.covers(d.interval_start)]
    return found[-1] if found else None


def delivery_lines(ledger: Ledger, *, feed_id: str | None = None, carrier_id: str | None = None,
                   employer_id: str | None = None, since: datetime | None = None, until: datetime | None = None,
                   status: str | None = None, parties: Mapping[str, tuple[str, str]] | None = None,
                   acks: Mapping[str, AckInfo] | None = None) -> list[DeliveryLine]:
    """Deliveries whose intent was recorded in [since, until), filtered, oldest first."""
    parties = parties if parties is not None else feed_parties(ledger)
    records = ledger.deliveries(feed_id=feed_id, since=since, until=until, status=status)
    records = [d for d in records
               if (carrier_id is None or parties.get(d.feed_id, (None, None))[1] == carrier_id)
               and (employer_id is None or parties.get(d.feed_id, (None, None))[0] == employer_id)]
    outcomes: dict[str, list[OutcomeEvent]] = {}
    if records:
        for o in ledger.delivery_outcomes(delivery_ids=[d.delivery_id for d in records]):
            outcomes.setdefault(o.delivery_id, []).append(o)
    auths = ledger.authorisations()
    disclosed = ledger.disclosures(delivery_ids=[d.delivery_id for d in records]) if records else {}
    lines = []
    for d in records:
        seen = outcomes.get(d.delivery_id, [])
        employer, carrier = parties.get(d.feed_id, (None, None))
        authority = _authority(auths, d)
        forced = [o.reason for o in seen if o.status == DeliveryStatus.FORCED_RESEND]
        ack = (acks or {}).get(d.delivery_id)
        what = disclosed.get(d.delivery_id)
        received = [o.received_by for o in seen if o.received_by]
        lines.append(DeliveryLine(
            delivery_id=d.delivery_id, run_id=d.run_id, feed_id=d.feed_id, employer_id=employer,
            carrier_id=carrier, interval_start=d.interval_start, sent_at=d.created_at, updated_at=d.updated_at,
            # A rename_sent row marks the rename request inside an attempt; it is not an attempt itself.
            status=d.status, attempts=sum(o.status != DeliveryStatus.RENAME_SENT for o in seen),
            failures=sum(o.status == DeliveryStatus.FAILED for o in seen),
            members=d.member_counts.get("members"), maintenance=_maintenance(d.member_counts), isa13=d.isa13,
            file_name=d.file_name,
            transport=d.transport, payload_sha256=d.payload_sha256, ciphertext_sha256=d.ciphertext_sha256,
            recipient_fingerprint=d.recipient_fingerprint, host_key_fingerprint=d.host_key_fingerprint,
            remote_path=d.remote_path, authorisation_seq=authority.seq if authority else None,
            actor=seen[-1].actor if seen else None, forced_reason=forced[-1] if forced else None,
            ack_status=ack.status if ack else None, ack_at=ack.received_at if ack else None,
            authorisation_reference=authority.reference if authority else None,
            fields_disclosed=what.fields if what else None, config_sha256=what.hashes if what else None,
            received_by=received[-1] if received else None))
    return lines


@dataclass(frozen=True)
class RunHistory:
    """Everything the ledger holds about one run, each list in chain order."""

    run: RunRecord
    events: tuple[RunEvent, ...]
    deliveries: tuple[DeliveryRecord, ...]
    outcomes: tuple[OutcomeEvent, ...]
    audit: tuple[AuditEvent, ...]
    #: The per-file notice of each delivery, per channel: its latest state (``ledger.notices``).
    notices: tuple[NoticeSend, ...] = ()

    def timeline(self) -> list[tuple[int, datetime, str]]:
        """(seq, time, one line) for every row, in chain order."""
        rows: list[tuple[int, datetime, str]] = []
        for e in self.events:
            what = e.stage if e.kind == "stage" else e.kind
            extra = " ".join(f"{k}={v}" for k, v in sorted(e.detail.items()))
            err = f" error={e.error_code}" + (f" ({e.message})" if e.message else "") if e.error_code else ""
            who = f" by {e.actor}" if e.actor else ""
            rows.append((e.seq, e.at, f"attempt {e.attempt}  {what} {e.status}{who}{err}"
                                      + (f"  [{extra}]" if extra else "")))
        for d in self.deliveries:
            rows.append((0, d.created_at, f"delivery {d.delivery_id} intent: {d.file_name} ISA13 {d.isa13:09d} "
                                          f"payload {d.payload_sha256} to key {d.recipient_fingerprint} "
                                          f"via {d.transport}"))
        for o in self.outcomes:
            facts = " ".join(f"{k}={v}" for k, v in (("size", o.size), ("remote", o.remote_path),
                                                     ("cipher", o.ciphertext_sha256),
                                                     ("host_key", o.host_key_fingerprint),
                                                     ("error", o.error_code), ("reason", o.reason))
                             if v is not None)
            note = f" ({o.message})" if o.message else ""
            rows.append((o.seq, o.at, f"delivery {o.delivery_id} {o.status} by {o.actor}  {facts}".rstrip() + note))
        for a in self.audit:
            rows.append((a.seq, a.at, f"audit {a.action} on {a.object_type} {a.object_id} by {a.actor}"
                                      + (f": {a.reason}" if a.reason else "")))
        return sorted(rows, key=lambda r: (r[1], r[0]))

    @property
    def delivered(self) -> tuple[DeliveryRecord, ...]:
        """The run's deliveries that reached the recipient (whatever its latest attempt did since)."""
        return tuple(d for d in self.deliveries if d.status in DELIVERED_STATUSES)

    def latest_failure(self) -> str | None:
        """What made the run's latest attempt end unsuccessfully, in words: the last failed stage's error,
        a failed forced resend, or the finish's own error; None when the run did not end unsuccessfully."""
        if self.run.status not in UNSUCCESSFUL:
            return None
        return run_failure_reason(self.events, self.audit, self.outcomes)

    def status_lines(self) -> list[str]:
        """The run's status and, separately, whether its file reached the recipient: a run whose
        latest attempt failed may have delivered its file in an earlier one."""
        r = self.run
        lines = [f"status: {r.status} (latest of {r.attempt} attempt(s))  started {r.started_at.isoformat()}"]
        why = self.latest_failure()
        if why:
            lines.append(f"latest attempt: {why}")
        delivered = self.delivered
        if delivered:
            lines += [f"file delivered: yes, delivery {d.delivery_id} ({d.status}, ISA13 {d.isa13:09d}) at "
                      f"{d.updated_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}" for d in delivered]
        else:
            lines.append("file delivered: no")
        lines += [f"notice to the carrier by {n.channel}: {n.status}, delivery {n.delivery_id}"
                  + (f" (error {n.error_code}; `carrierfeeds notice resend {n.delivery_id}`)"
                     if n.status != "sent" else "") for n in self.notices]
        return lines

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(json.dumps({
            "run": asdict(self.run), "events": [asdict(e) for e in self.events],
            "deliveries": [asdict(d) for d in self.deliveries], "outcomes": [asdict(o) for o in self.outcomes],
            "audit": [asdict(a) for a in self.audit], "notices": [n.as_dict() for n in self.notices],
            "delivered": [d.delivery_id for d in self.delivered], "latest_failure": self.latest_failure()},
            default=_json_default))
        return data


def run_failure_reason(events: Sequence[RunEvent], audit: Sequence[AuditEvent] = (),
                       outcomes: Sequence[OutcomeEvent] = ()) -> str:
    """Why a run's latest attempt ended unsuccessfully, from its own rows (error codes and messages,
    which the ledger keeps PHI-free): the last failed stage, else a failed forced resend, else the finish."""
    latest = max((e.attempt for e in events), default=0)
    mine = [e for e in events if e.attempt == latest]
    failed = [e for e in mine if e.kind == "stage" and e.status == "failed"]
    start = min((e.at for e in mine), default=None)
    resend_failed = [a for a in audit if a.action == "forced_resend_failed" and (start is None or a.at >= start)]
    finished = [e for e in mine if e.kind == "run_finished"]
    for e in (failed[-1:] + finished[-1:]):
        if e.error_code or e.message:
            where = f"stage {e.stage} " if e.kind == "stage" else ""
            text = f"{where}{e.status}: " + ": ".join(x for x in (e.error_code, e.message) if x)
            if resend_failed:
                text = f"forced resend failed ({resend_failed[-1].reason or 'no reason given'}); {text}"
            return text
    if resend_failed:
        a = resend_failed[-1]
        return f"forced resend failed ({a.reason or 'no reason given'}) error={a.detail.get('error_code', '?')}"
    transfers = [o for o in outcomes if o.status == DeliveryStatus.FAILED and (start is None or o.at >= start)]
    if transfers:
        o = transfers[-1]
        return "delivery failed: " + (": ".join(x for x in (o.error_code, o.message) if x) or "no error recorded")
    if failed:
        return f"stage {failed[-1].stage} failed"
    return "no error recorded"


def run_history(ledger: Ledger, run_id: str) -> RunHistory | None:
    """Every stage, outcome and audit event of one run; None for an unknown run."""
    run = ledger.get_run(run_id)
    if run is None:
        return None
    deliveries = tuple(d for d in ledger.deliveries(feed_id=run.feed_id) if d.run_id == run_id)
    ids = [run_id, *(d.delivery_id for d in deliveries)]
    audit = tuple(a for a in ledger.audit_events(object_ids=ids) if a.object_type in ("run", "delivery"))
    return RunHistory(run=run, events=tuple(ledger.run_events(run_id)), deliveries=deliveries,
                      outcomes=tuple(ledger.delivery_outcomes(run_id=run_id)), audit=audit,
                      notices=tuple(notice_sends_of(ledger, [d.delivery_id for d in deliveries])))


# --------------------------------------------------------------------------------- log formatting
def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


#: A spreadsheet runs a cell starting with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _inert(value: Any) -> str:
    """A CSV cell a spreadsheet shows as text: free text (an actor, a reason) starting like a formula gets
    a leading ``'``, the usual neutraliser. Numbers and times are written as they are."""
    text = _cell(value)
    if isinstance(value, str) and text.startswith(_FORMULA_START):
        return "'" + text
    return text


def lines_to_csv(lines: Sequence[DeliveryLine]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(LOG_COLUMNS)
    for line in lines:
        row = line.as_dict()
        row.update({f"ins03_{t}": line.maintenance_count(t) for t in MAINTENANCE_TYPES})
        row["fields_disclosed"] = None if line.fields_disclosed is None else " ".join(line.fields_disclosed)
        writer.writerow([_cell(getattr(line, c)) if c in ("sent_at", "updated_at", "ack_at") else _inert(row[c])
                         for c in LOG_COLUMNS])
    return out.getvalue()


def lines_to_json(lines: Sequence[DeliveryLine]) -> str:
    return json.dumps([line.as_dict() for line in lines], indent=2, sort_keys=True)


def lines_to_table(lines: Sequence[DeliveryLine]) -> str:
    """A fixed-width table a person can read in a terminal; hashes shortened to 12 characters; ``by_type``
    lists members by maintenance type (``021:3,024:1``: three additions, one termination)."""
    cols = ("sent", "feed", "employer", "carrier", "interval", "status", "try", "ack", "members", "by_type",
            "isa13", "payload", "cipher", "recipient", "actor")
    rows = [(_cell(ln.sent_at)[:16].replace("T", " "), ln.feed_id, ln.employer_id or "?", ln.carrier_id or "?",
             ln.interval_start.isoformat(), ln.status, str(ln.attempts), ln.ack_status or "n/a",
             "" if ln.members is None else str(ln.members),
             ",".join(f"{t}:{n}" for t, n in ln.maintenance.items() if n) or "-", f"{ln.isa13:09d}",
             ln.payload_sha256[:12],
             (ln.ciphertext_sha256 or "")[:12], ln.recipient_fingerprint[-16:], ln.actor or "")
            for ln in lines]
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(cols)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*cols), *(fmt.format(*r) for r in rows),
                      f"{len(lines)} deliveries"]) + "\n"


# ------------------------------------------------------------------------------------------ report
@dataclass(frozen=True)
class PartyStats:
    """One carrier and employer over the period. ``late_acks``/``rejected_acks`` are None when
    acknowledgments were not tracked; ``rejected_acks`` counts rejected and partially accepted files;
    ``retries`` counts run attempts beyond each run's first.

    The categories, each counted once and each listed in the report's table of notable events:
    ``failures`` failed transfers of a file (an outcome row ``failed`` of a delivery that is not a
    forced resend); ``failed_resends`` forced resends that did not go out (audit ``forced_resend_failed``);
    ``unsuccessful_runs`` runs started in the period whose latest attempt ended failed, rejected or
    refused (a run may also have delivered its file in an earlier attempt: the table says so).
    """

    carrier_id: str
    employer_id: str
    feeds: tuple[str, ...]
    deliveries: int
    delivered: int
    failures: int
    retries: int
    late_acks: int | None
    rejected_acks: int | None
    manual_handoffs: int
    forced_resends: int
    failed_resends: int = 0
    unsuccessful_runs: int = 0

    @property
    def failed_attempts(self) -> int:
        """Every attempt to get a file to the recipient that failed: first sends and forced resends."""
        return self.failures + self.failed_resends


@dataclass(frozen=True)
class Notable:
    """A line the auditor should read: a failure, a forced resend (with its reason), a hold, a purge."""

    at: datetime
    kind: str
    feed_id: str
    object_id: str
    actor: str
    reason: str


@dataclass(frozen=True)
class AuditReport:
    """A period's deliveries, per party and per day, what went wrong, and the chain's verdict."""

    since: date
    until: date  # inclusive
    generated_at: datetime
    parties: tuple[PartyStats, ...]
    per_day: tuple[tuple[date, int, int], ...]  # (day, delivered, not delivered)
    notable: tuple[Notable, ...]
    chain_ok: bool
    chain_rows: int
    chain_head_seq: int
    chain_head_hash: str
    chain_broken: str | None
    acks_tracked: bool
    #: The anchors' verdict in words (``ledger.anchor``), None when the report was built without them.
    anchor_status: str | None = None
    anchors_ok: bool = True

    @property
    def totals(self) -> dict[str, int]:
        keys = ("deliveries", "delivered", "failures", "failed_resends", "failed_attempts", "unsuccessful_runs",
                "retries", "manual_handoffs", "forced_resends")
        return {k: sum(getattr(p, k) for p in self.parties) for k in keys}

    def summary(self) -> str:
        """The report's headline in words; each figure is a count of rows in its tables."""
        t = self.totals
        return (f"{t['deliveries']} deliveries, {t['delivered']} delivered; {t['failed_attempts']} failed delivery "
                f"attempts ({t['failures']} transfers, {t['failed_resends']} forced resends); "
                f"{t['unsuccessful_runs']} runs ended failed, rejected or refused; {t['retries']} run retries, "
                f"{t['forced_resends']} forced resends, {t['manual_handoffs']} manual hand-offs.")


def day_bounds(since: date, until: date) -> tuple[datetime, datetime]:
    """[midnight UTC of since, midnight UTC after until): an inclusive day range as instants."""
    return (datetime.combine(since, time(0), tzinfo=UTC),
            datetime.combine(until + timedelta(days=1), time(0), tzinfo=UTC))


def build_report(ledger: Ledger, *, since: date, until: date, generated_at: datetime,
                 parties: Mapping[str, tuple[str, str]] | None = None,
                 acks: Mapping[str, AckInfo] | None = None, ack_windows: Mapping[str, timedelta] | None = None,
                 default_ack_window: timedelta = DEFAULT_WINDOW,
                 anchors: AnchorLog | None = None) -> AuditReport:
    """Everything the period report shows, from the ledger alone (plus acknowledgments, if tracked).

    ``ack_windows``: feed id -> the carrier mapping's acknowledgment window; other feeds get
    ``default_ack_window``. With ``anchors`` the chain is also checked against its signed anchors and
    the head is anchored as of ``generated_at``."""
    if until < since:
        raise ValueError("until is before since")
    start, end = day_bounds(since, until)
    parties = parties if parties is not None else feed_parties(ledger)
    lines = delivery_lines(ledger, since=start, until=end, parties=parties, acks=acks)
    runs = ledger.list_runs(since=start, until=end)
    outcomes = ledger.delivery_outcomes(delivery_ids=[ln.delivery_id for ln in lines]) if lines else []
    by_delivery = {ln.delivery_id: ln for ln in lines}
    every_delivery = {d.delivery_id: d for d in ledger.deliveries()}
    audit_events = ledger.audit_events(since=start, until=end)

    def party(feed_id: str) -> tuple[str, str]:
        return parties.get(feed_id, ("unknown", "unknown"))

    groups: dict[tuple[str, str], dict[str, Any]] = {}

    def group(feed_id: str) -> dict[str, Any]:
        employer, carrier = party(feed_id)
        g = groups.setdefault((carrier, employer), {"feeds": set(), "deliveries": 0, "delivered": 0,
                                                    "failures": 0, "retries": 0, "late": 0, "rejected": 0,
                                                    "manual": 0, "forced": 0, "failed_resends": 0,
                                                    "unsuccessful": 0})
        g["feeds"].add(feed_id)
        return g

    for ln in lines:
        g = group(ln.feed_id)
        g["deliveries"] += 1
        g["delivered"] += ln.delivered
        g["manual"] += ln.transport == "manual"
        # A manual hand-off goes to a recipient without electronic intake: no TA1/999 will come.
        if ln.delivered and acks is not None and ln.transport != "manual":
            if ln.ack_status in BLOCKING_STATUSES:
                g["rejected"] += 1
            arrived = ln.ack_at if ln.ack_at is not None else generated_at
            if arrived - ln.updated_at > (ack_windows or {}).get(ln.feed_id, default_ack_window):
                g["late"] += 1
    def is_resend(delivery_id: str) -> bool:
        d = every_delivery.get(delivery_id)
        return d is not None and d.replaces_delivery_id is not None

    for o in outcomes:
        g = group(by_delivery[o.delivery_id].feed_id)
        # A resend's failed transfer is counted (and listed) once, as its forced_resend_failed event.
        g["failures"] += o.status == DeliveryStatus.FAILED and not is_resend(o.delivery_id)
        g["forced"] += o.status == DeliveryStatus.FORCED_RESEND
    resend_failures = [a for a in audit_events if a.action == "forced_resend_failed"]
    for a in resend_failures:
        failed_delivery = every_delivery.get(a.object_id)
        if failed_delivery is not None:
            group(failed_delivery.feed_id)["failed_resends"] += 1
    for r in runs:
        g = group(r.feed_id)
        g["unsuccessful"] += r.status in UNSUCCESSFUL
        g["retries"] += r.attempt - 1
        g["manual"] += r.status == RunStatus.HANDED_OFF and not any(
            ln.run_id == r.run_id and ln.transport == "manual" for ln in lines)
    stats = tuple(PartyStats(
        carrier_id=c, employer_id=e, feeds=tuple(sorted(g["feeds"])), deliveries=g["deliveries"],
        delivered=g["delivered"], failures=g["failures"], retries=g["retries"],
        late_acks=g["late"] if acks is not None else None, rejected_acks=g["rejected"] if acks is not None else None,
        manual_handoffs=g["manual"], forced_resends=g["forced"], failed_resends=g["failed_resends"],
        unsuccessful_runs=g["unsuccessful"]) for (c, e), g in sorted(groups.items()))

    counts: dict[date, list[int]] = {}
    day = since
    while day <= until:
        counts[day] = [0, 0]
        day += timedelta(days=1)
    for ln in lines:
        counts[ln.sent_at.astimezone(UTC).date()][0 if ln.delivered else 1] += 1

    notable: list[Notable] = []
    for o in outcomes:
        if o.status == DeliveryStatus.FAILED and is_resend(o.delivery_id):
            continue  # listed once, as its forced_resend_failed event
        if o.status in (DeliveryStatus.FAILED, DeliveryStatus.FORCED_RESEND):
            ln = by_delivery[o.delivery_id]
            why = o.reason or ": ".join(x for x in (o.error_code, o.message) if x)
            notable.append(Notable(o.at, o.status, ln.feed_id, o.delivery_id, o.actor, why))
    handed = [a.object_id for a in audit_events if a.action == "handoff_confirmed"]
    receivers = {o.delivery_id: o.received_by for o in ledger.delivery_outcomes(delivery_ids=handed)
                 if o.status == DeliveryStatus.HANDED_OFF and o.received_by} if handed else {}
    for a in audit_events:
        if a.action == "forced_resend":
            continue  # shown through its outcome, with the same reason
        about = every_delivery.get(a.object_id) if a.object_type == "delivery" else None
        feed = a.object_id if a.object_type == "feed" else about.feed_id if about is not None else ""
        why = a.reason or ""
        if a.action == "forced_resend_failed":
            why = f"{why or 'no reason given'}; error={a.detail.get('error_code', '?')}"
        if a.action == "handoff_confirmed" and a.object_id in receivers:
            why = f"{why}; received by {receivers[a.object_id]}"
        notable.append(Notable(a.at, a.action, feed, f"{a.object_type}:{a.object_id}", a.actor,
                               why or " ".join(f"{k}={v}" for k, v in sorted(a.detail.items()))))
    for r in runs:
        if r.status in UNSUCCESSFUL:
            history = run_history(ledger, r.run_id)
            failure = (history.latest_failure() if history is not None else None) or ""
            delivered = history.delivered if history is not None else ()
            if delivered:
                failure += f"; its file was delivered earlier (delivery {delivered[-1].delivery_id})"
            notable.append(Notable(r.started_at, f"run_{r.status}", r.feed_id, r.run_id, "", failure))
    anchor_status, anchors_ok = None, True
    if anchors is None:
        verdict = ledger.verify_chain()
    else:
        checked = verify_ledger(ledger, anchors, now=generated_at, reason="audit-report")
        verdict, anchors_ok = checked.chain, checked.anchors.ok
        anchor_status = str(checked.anchors) + (
            f"; head anchored now at seq {checked.anchored.seq}" if checked.anchored else "")
    return AuditReport(
        since=since, until=until, generated_at=generated_at, parties=stats,
        per_day=tuple((d, v[0], v[1]) for d, v in counts.items()),
        notable=tuple(sorted(notable, key=lambda n: n.at)), chain_ok=verdict.ok, chain_rows=verdict.rows_checked,
        chain_head_seq=verdict.head_seq, chain_head_hash=verdict.head_hash,
        chain_broken=str(verdict.first_broken) if verdict.first_broken else None, acks_tracked=acks is not None,
        anchor_status=anchor_status, anchors_ok=anchors_ok)


# ------------------------------------------------------------------------------------ HTML output
_HTML_STYLE = """
body{font-family:Helvetica,Arial,sans-serif;margin:2em;color:#222;max-width:1100px}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:.9em} th,td{border:1px solid #bbb;padding:4px 8px;text-align:left}
th{background:#eee} td.n{text-align:right} .ok{color:#1a7f37;font-weight:bold} .bad{color:#b42318;font-weight:bold}
.meta{color:#555;font-size:.9em} code{font-size:.85em}
"""
_GREEN, _RED = "#2e7d32", "#c62828"


def _svg_chart(per_day: Sequence[tuple[date, int, int]], *, width: int = 900, height: int = 260) -> str:
    """A stacked bar chart of deliveries per day (delivered, not delivered) as inline SVG."""
    left, right, top, bottom = 44, 12, 24, 48
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max([d + f for _, d, f in per_day] + [1])
    step = max(1, -(-peak // 5))
    ticks = list(range(0, peak + step, step))
    top_value = ticks[-1]
    n = max(1, len(per_day))
    slot = plot_w / n
    bar = max(1.0, slot * 0.7)
    label_every = max(1, -(-n // 15))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="deliveries per day">',
             f'<text x="{left}" y="14" font-size="12">Deliveries per day (UTC)</text>']
    for t in ticks:
        y = top + plot_h - plot_h * t / top_value
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#ddd"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{t}</text>')
    for i, (day, ok, bad) in enumerate(per_day):
        x = left + i * slot + (slot - bar) / 2
        h_ok, h_bad = plot_h * ok / top_value, plot_h * bad / top_value
        base = top + plot_h
        title = f"{day.isoformat()}: {ok} delivered, {bad} not delivered"
        if ok:
            parts.append(f'<rect x="{x:.1f}" y="{base - h_ok:.1f}" width="{bar:.1f}" height="{h_ok:.1f}" '
                         f'fill="{_GREEN}"><title>{title}</title></rect>')
        if bad:
            parts.append(f'<rect x="{x:.1f}" y="{base - h_ok - h_bad:.1f}" width="{bar:.1f}" '
                         f'height="{h_bad:.1f}" fill="{_RED}"><title>{title}</title></rect>')
        if i % label_every == 0:
            cx = x + bar / 2
            parts.append(f'<text x="{cx:.1f}" y="{base + 14}" font-size="10" text-anchor="middle">'
                         f'{day.strftime("%m-%d")}</text>')
    parts.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" y2="{top + plot_h}" stroke="#333"/>'
                 f'<rect x="{left}" y="{height - 18}" width="10" height="10" fill="{_GREEN}"/>'
                 f'<text x="{left + 14}" y="{height - 9}" font-size="11">delivered</text>'
                 f'<rect x="{left + 90}" y="{height - 18}" width="10" height="10" fill="{_RED}"/>'
                 f'<text x="{left + 104}" y="{height - 9}" font-size="11">failed or pending</text></svg>')
    return "".join(parts)


def _opt(value: int | None) -> str:
    return "n/a" if value is None else str(value)


def _party_rows(report: AuditReport) -> list[list[str]]:
    return [[p.carrier_id, p.employer_id, ", ".join(p.feeds), str(p.deliveries), str(p.delivered),
             str(p.failures), str(p.failed_resends), str(p.unsuccessful_runs), str(p.retries), _opt(p.late_acks),
             _opt(p.rejected_acks), str(p.manual_handoffs), str(p.forced_resends)] for p in report.parties]


_PARTY_HEAD = ["carrier", "employer", "feeds", "deliveries", "delivered", "failed transfers", "failed resends",
               "runs ended unsuccessfully", "retries", "late acks", "rejected acks", "manual hand-offs",
               "forced resends"]
#: What each count means, printed under the headline so that a reader can tie it to the tables.
CATEGORIES = ("Failed transfers: a file's upload that failed (listed as 'failed'). Failed resends: a forced "
              "resend that did not go out (listed as 'forced_resend_failed'). Runs ended unsuccessfully: runs "
              "started in the period whose latest attempt ended failed, rejected or refused (listed as "
              "'run_failed', 'run_rejected', 'run_refused', with the reason; such a run may have delivered its "
              "file in an earlier attempt, which the reason says).")


def render_report_html(report: AuditReport) -> str:
    """The report as one self-contained HTML page: inline CSS and SVG, no scripts, no external assets."""
    esc = html.escape
    verdict = (f'<span class="ok">intact</span>: {report.chain_rows} rows verified' if report.chain_ok
               else f'<span class="bad">BROKEN</span>: {esc(report.chain_broken or "")}')
    party_rows = "".join("<tr>" + "".join(f'<td{" class=n" if i > 2 else ""}>{esc(c)}</td>'
                                          for i, c in enumerate(row)) + "</tr>" for row in _party_rows(report))
    notable_rows = "".join(
        f"<tr><td>{esc(_cell(n.at))}</td><td>{esc(n.kind)}</td><td>{esc(n.feed_id)}</td>"
        f"<td><code>{esc(n.object_id)}</code></td><td>{esc(n.actor)}</td><td>{esc(n.reason)}</td></tr>"
        for n in report.notable) or '<tr><td colspan="6">nothing to report</td></tr>'
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>carrierfeeds audit report {report.since} to {report.until}</title>
<style>{_HTML_STYLE}</style></head><body>
<h1>Delivery audit report</h1>
<p class="meta">Period {report.since.isoformat()} to {report.until.isoformat()} (UTC, inclusive).
Generated {esc(_cell(report.generated_at))}.</p>
<p>Ledger chain {verdict}; head seq {report.chain_head_seq}, hash <code>{esc(report.chain_head_hash)}</code>.</p>
{"" if report.anchor_status is None else
 f'<p>Anchors outside the database: <span class="{"ok" if report.anchors_ok else "bad"}">'
 f'{esc(report.anchor_status)}</span>.</p>'}
<p>{esc(report.summary())}{"" if report.acks_tracked else
 " Acknowledgments were not tracked for this report."}</p>
<p class="meta">{esc(CATEGORIES)}</p>
{_svg_chart(report.per_day)}
<h2>Per carrier and employer</h2>
<table><tr>{"".join(f"<th>{h}</th>" for h in _PARTY_HEAD)}</tr>{party_rows or
 f'<tr><td colspan="{len(_PARTY_HEAD)}">no deliveries in this period</td></tr>'}</table>
<h2>Failures, unsuccessful runs, forced resends, holds and purges</h2>
<table><tr><th>time (UTC)</th><th>what</th><th>feed</th><th>object</th><th>actor</th><th>reason</th></tr>
{notable_rows}</table>
</body></html>
"""


# ------------------------------------------------------------------------------------- PDF output
def render_report_pdf(report: AuditReport) -> bytes:
    """The report as a PDF (reportlab): summary, a bar chart per day, the party table, notable events."""
    from reportlab.graphics.charts.barcharts import VerticalBarChart
    from reportlab.graphics.charts.legends import Legend
    from reportlab.graphics.shapes import Drawing, String
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    styles = getSampleStyleSheet()
    esc = html.escape
    buf = io.BytesIO()
    doc = SimpleDocTemplate(buf, pagesize=landscape(A4), leftMargin=15 * mm, rightMargin=15 * mm,
                            topMargin=15 * mm, bottomMargin=15 * mm,
                            title=f"carrierfeeds audit report {report.since} to {report.until}",
                            author="carrierfeeds", invariant=True)
    chain = (f"<font color='#1a7f37'><b>intact</b></font>: {report.chain_rows} rows verified" if report.chain_ok
             else f"<font color='#b42318'><b>BROKEN</b></font>: {esc(report.chain_broken or '')}")
    story: list[Any] = [
        Paragraph("Delivery audit report", styles["Title"]),
        Paragraph(f"Period {report.since.isoformat()} to {report.until.isoformat()} (UTC, inclusive). "
                  f"Generated {esc(_cell(report.generated_at))}.", styles["Normal"]),
        Paragraph(f"Ledger chain {chain}; head seq {report.chain_head_seq}, hash "
                  f"<font face='Courier' size='8'>{report.chain_head_hash}</font>.", styles["Normal"]),
        *([] if report.anchor_status is None else
          [Paragraph(f"Anchors outside the database: {esc(report.anchor_status)}.", styles["Normal"])]),
        Paragraph(esc(report.summary())
                  + ("" if report.acks_tracked else " Acknowledgments were not tracked for this report."),
                  styles["Normal"]),
        Paragraph(esc(CATEGORIES), styles["Italic"]),
        Spacer(1, 4 * mm),
    ]
    width, height = 250 * mm, 70 * mm
    drawing = Drawing(width, height)
    chart = VerticalBarChart()
    chart.x, chart.y, chart.width, chart.height = 12 * mm, 14 * mm, width - 20 * mm, height - 24 * mm
    chart.data = [[d for _, d, _ in report.per_day] or [0], [f for _, _, f in report.per_day] or [0]]
    chart.categoryAxis.style = "stacked"
    n = max(1, len(report.per_day))
    every = max(1, -(-n // 15))
    chart.categoryAxis.categoryNames = [day.strftime("%m-%d") if i % every == 0 else ""
                                        for i, (day, _, _) in enumerate(report.per_day)] or [""]
    chart.categoryAxis.labels.fontSize = 7
    chart.valueAxis.valueMin = 0
    chart.valueAxis.labels.fontSize = 7
    peak = max([d + f for _, d, f in report.per_day] + [1])
    chart.valueAxis.valueMax = peak + max(1, peak // 5)
    chart.valueAxis.valueStep = max(1, -(-chart.valueAxis.valueMax // 5))
    chart.bars[0].fillColor = colors.HexColor(_GREEN)
    chart.bars[1].fillColor = colors.HexColor(_RED)
    chart.bars.strokeWidth = 0
    drawing.add(chart)
    drawing.add(String(12 * mm, height - 6 * mm, "Deliveries per day (UTC)", fontSize=10))
    legend = Legend()
    legend.x, legend.y = width - 60 * mm, height - 4 * mm
    legend.fontSize = 8
    legend.colorNamePairs = [(colors.HexColor(_GREEN), "delivered"),
                             (colors.HexColor(_RED), "failed or pending")]
    drawing.add(legend)
    story += [drawing, Spacer(1, 4 * mm), Paragraph("Per carrier and employer", styles["Heading2"])]
    grid = TableStyle([("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
                       ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eeeeee")),
                       ("FONTSIZE", (0, 0), (-1, -1), 8), ("VALIGN", (0, 0), (-1, -1), "TOP")])
    cell = styles["BodyText"].clone("cell", fontSize=8, leading=10)
    party_rows = _party_rows(report) or [["no deliveries in this period"] + [""] * (len(_PARTY_HEAD) - 1)]
    party_table = Table([_PARTY_HEAD, *party_rows], repeatRows=1, hAlign="LEFT")
    party_table.setStyle(grid)
    story += [party_table, Spacer(1, 4 * mm), Paragraph("Failures, unsuccessful runs, forced resends, holds and purges",
                                                         styles["Heading2"])]
    notable = [[_cell(n.at), n.kind, n.feed_id, Paragraph(esc(n.object_id), cell), n.actor,
                Paragraph(esc(n.reason), cell)] for n in report.notable] or [["nothing to report", "", "", "",
                                                                              "", ""]]
    notable_table = Table([["time (UTC)", "what", "feed", "object", "actor", "reason"], *notable],
                          colWidths=[34 * mm, 32 * mm, 38 * mm, 62 * mm, 24 * mm, 77 * mm], repeatRows=1,
                          hAlign="LEFT")
    notable_table.setStyle(grid)
    story.append(notable_table)
    doc.build(story)
    return buf.getvalue()


def write_report(report: AuditReport, out: Path) -> Path:
    """Write the report as HTML or PDF, chosen by ``out``'s suffix."""
    suffix = out.suffix.lower()
    if suffix in (".html", ".htm"):
        out.write_text(render_report_html(report), encoding="utf-8")
    elif suffix == ".pdf":
        out.write_bytes(render_report_pdf(report))
    else:
        raise ValueError(f"report must end in .html or .pdf, not {suffix or 'nothing'}")
    log.info("audit report %s..%s written to %s", report.since, report.until, out.name)
    return out


def _json_default(value: Any) -> Any:
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(type(value).__name__)


# ------------------------------------------------------------- evidence: which member, which fields, which authority
@dataclass(frozen=True)
class MemberDelivery:
    """One delivery that carried a member (named by token only): to whom, when, which file, which INS03."""

    delivery_id: str
    run_id: str
    feed_id: str
    employer_id: str | None
    carrier_id: str | None
    interval_start: date
    sent_at: datetime
    status: str
    file_name: str
    isa13: int
    gs06: int
    st02: int
    maintenance_types: tuple[str, ...]
    transport: str

    def as_dict(self) -> dict[str, Any]:
        return {k: (v.isoformat() if isinstance(v, date) else list(v) if isinstance(v, tuple) else v)
                for k, v in asdict(self).items()}


def member_deliveries(ledger: Ledger, token: str, *,
                      parties: Mapping[str, tuple[str, str]] | None = None) -> list[MemberDelivery]:
    """Every delivery that carried the member with ``token`` (``m_`` + 16 hex), oldest first: the ledger's
    member index, written with each delivery's intent, holds tokens only. LedgerError for a malformed token."""
    hits = ledger.deliveries_of_member(token)
    if not hits:
        return []
    parties = parties if parties is not None else feed_parties(ledger)
    out = []
    for d in ledger.deliveries():
        if d.delivery_id not in hits:
            continue
        employer, carrier = parties.get(d.feed_id, (None, None))
        out.append(MemberDelivery(
            delivery_id=d.delivery_id, run_id=d.run_id, feed_id=d.feed_id, employer_id=employer, carrier_id=carrier,
            interval_start=d.interval_start, sent_at=d.created_at, status=d.status, file_name=d.file_name,
            isa13=d.isa13, gs06=d.gs06, st02=d.st02, maintenance_types=hits[d.delivery_id], transport=d.transport))
    return out


@dataclass(frozen=True)
class DisclosureLine:
    """Minimum necessary, per carrier and feed over a period: the fields its delivered files carried
    (and how many files carried each), the allowlist in force, and how many members they carried."""

    carrier_id: str
    employer_id: str
    feed_id: str
    files: int
    files_without_record: int
    member_disclosures: int
    largest_file_members: int
    fields: dict[str, int]
    allowlist: tuple[str, ...]
    config_sha256: tuple[dict[str, str], ...]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["allowlist"] = list(self.allowlist)
        data["config_sha256"] = [dict(h) for h in self.config_sha256]
        return data


def disclosure_lines(ledger: Ledger, *, carrier_id: str | None = None, since: datetime | None = None,
                     until: datetime | None = None,
                     parties: Mapping[str, tuple[str, str]] | None = None) -> list[DisclosureLine]:
    """What each carrier was sent, field by field, from the delivered files whose intent falls in
    [since, until). ``member_disclosures`` adds each file's members (a member in two files counts twice);
    ``files_without_record`` counts files delivered before disclosures were recorded."""
    parties = parties if parties is not None else feed_parties(ledger)
    records = [d for d in ledger.deliveries(since=since, until=until) if d.status in DELIVERED_STATUSES
               and (carrier_id is None or parties.get(d.feed_id, ("", ""))[1] == carrier_id)]
    disclosed = ledger.disclosures(delivery_ids=[d.delivery_id for d in records]) if records else {}
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for d in records:
        employer, carrier = parties.get(d.feed_id, ("unknown", "unknown"))
        g = groups.setdefault((carrier, employer, d.feed_id), {"files": 0, "missing": 0, "members": 0, "largest": 0,
                                                               "fields": Counter(), "allow": set(), "hashes": []})
        g["files"] += 1
        what = disclosed.get(d.delivery_id)
        if what is None:
            g["missing"] += 1
            continue
        g["members"] += what.members
        g["largest"] = max(g["largest"], what.members)
        g["fields"].update(what.fields)
        g["allow"].update(what.allowlist)
        if what.hashes not in g["hashes"]:
            g["hashes"].append(what.hashes)
    return [DisclosureLine(carrier_id=c, employer_id=e, feed_id=f, files=g["files"], files_without_record=g["missing"],
                           member_disclosures=g["members"], largest_file_members=g["largest"],
                           fields=dict(sorted(g["fields"].items())), allowlist=tuple(sorted(g["allow"])),
                           config_sha256=tuple(g["hashes"]))
            for (c, e, f), g in sorted(groups.items())]


def render_disclosures_html(lines: Sequence[DisclosureLine], *, since: date | None, until: date | None,
                            generated_at: datetime) -> str:
    """The minimum-necessary report as one self-contained HTML page (field names and counts only)."""
    esc = html.escape
    period = f"{since or 'the start'} to {until or 'now'}"
    rows = "".join(
        f"<tr><td>{esc(ln.carrier_id)}</td><td>{esc(ln.employer_id)}</td><td>{esc(ln.feed_id)}</td>"
        f"<td class=n>{ln.files}</td><td class=n>{ln.member_disclosures}</td><td class=n>{ln.largest_file_members}</td>"
        f"<td>{esc(', '.join(f'{k} ({n})' for k, n in ln.fields.items()))}</td>"
        f"<td>{esc(', '.join(x for x in ln.allowlist if x not in ln.fields)) or '-'}</td>"
        f"<td class=n>{ln.files_without_record}</td></tr>" for ln in lines) or \
        '<tr><td colspan="9">no delivered files in this period</td></tr>'
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>carrierfeeds disclosures {esc(period)}</title>
<style>{_HTML_STYLE}</style></head><body>
<h1>Minimum necessary: fields disclosed per carrier</h1>
<p class="meta">Delivered files sent {esc(period)} (UTC). Generated {esc(_cell(generated_at))}.</p>
<table><tr><th>carrier</th><th>employer</th><th>feed</th><th>files</th><th>member disclosures</th>
<th>largest file (members)</th><th>fields disclosed (files)</th><th>allowed, never sent</th>
<th>files without a disclosure record</th></tr>{rows}</table>
</body></html>
"""


def render_disclosures_pdf(lines: Sequence[DisclosureLine], *, since: date | None, until: date | None,
                           generated_at: datetime) -> bytes:
    """The minimum-necessary report as a PDF (reportlab), the same table as the HTML page."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    styles = getSampleStyleSheet()
    cell = styles["BodyText"].clone("cell", fontSize=8, leading=10)
    esc = html.escape
    period = f"{since or 'the start'} to {until or 'now'}"
    buf = io.BytesIO()
    doc = SimpleDocTemplate(buf, pagesize=landscape(A4), leftMargin=15 * mm, rightMargin=15 * mm,
                            topMargin=15 * mm, bottomMargin=15 * mm, title=f"carrierfeeds disclosures {period}",
                            author="carrierfeeds", invariant=True)
    head = ["carrier", "employer", "feed", "files", "member disclosures", "largest file", "fields disclosed (files)",
            "allowed, never sent", "without record"]
    rows = [[ln.carrier_id, ln.employer_id, Paragraph(esc(ln.feed_id), cell), str(ln.files),
             str(ln.member_disclosures), str(ln.largest_file_members),
             Paragraph(esc(", ".join(f"{k} ({n})" for k, n in ln.fields.items())), cell),
             Paragraph(esc(", ".join(x for x in ln.allowlist if x not in ln.fields)) or "-", cell),
             str(ln.files_without_record)] for ln in lines] or [["no delivered files in this period"] + [""] * 8]
    table = Table([head, *rows], repeatRows=1, hAlign="LEFT",
                  colWidths=[24 * mm, 22 * mm, 40 * mm, 12 * mm, 22 * mm, 18 * mm, 70 * mm, 36 * mm, 18 * mm])
    table.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
                               ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eeeeee")),
                               ("FONTSIZE", (0, 0), (-1, -1), 8), ("VALIGN", (0, 0), (-1, -1), "TOP")]))
    doc.build([Paragraph("Minimum necessary: fields disclosed per carrier", styles["Title"]),
               Paragraph(f"Delivered files sent {esc(period)} (UTC). Generated {esc(_cell(generated_at))}.",
                         styles["Normal"]), Spacer(1, 4 * mm), table])
    return buf.getvalue()


def authorisation_rows(ledger: Ledger, *, feed_id: str | None = None) -> list[dict[str, Any]]:
    """Every authorisation the ledger holds, oldest first, with the employer's document it rests on."""
    return [{"seq": a.seq, "feed_id": a.feed_id, "employer_id": a.employer_id, "carrier_id": a.carrier_id,
             "plans": list(a.plans), "effective_from": a.effective_from.isoformat(),
             "effective_to": a.effective_to.isoformat() if a.effective_to else None, "reference": a.reference,
             "recorded_by": a.recorded_by, "recorded_at": _cell(a.at)}
            for a in ledger.authorisations(feed_id=feed_id)]
