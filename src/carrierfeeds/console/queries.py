"""Read-only questions the console asks: a feed's history from the ledger's public reads, and where a
member token appears in the PHI-free validation reports. Nothing here writes."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from carrierfeeds.audit import DeliveryLine
    from carrierfeeds.ledger import RunEvent, RunRecord
    from carrierfeeds.ledger.lifecycle import LifecycleEvent
    from carrierfeeds.ledger.records import AckRecord, AuditEvent, OutcomeEvent
    from carrierfeeds.ledger.store import Ledger
    from carrierfeeds.settings import Settings

TOKEN_PATTERN = re.compile(r"^m_[0-9a-f]{16}$")
#: A feed's page shows its newest runs; older ones are in `carrierfeeds audit log`.
HISTORY_RUNS = 50


@dataclass(frozen=True)
class RunWithEvents:
    run: RunRecord
    events: tuple[RunEvent, ...]


@dataclass(frozen=True)
class FeedHistory:
    """A feed's newest runs with their stage events, its deliveries (as the audit log reads them) with
    control numbers, outcomes, acknowledgments and forced resends, and audit events on its runs."""

    feed_id: str
    runs: tuple[RunWithEvents, ...]
    deliveries: tuple[DeliveryLine, ...]
    control_numbers: dict[str, tuple[int, int, int]]
    outcomes: dict[str, tuple[OutcomeEvent, ...]]
    acknowledgments: dict[str, tuple[AckRecord, ...]]
    forced_resends: tuple[OutcomeEvent, ...]
    audit: tuple[AuditEvent, ...]
    #: The feed's lifecycle rows (testing, certified, production, suspended), oldest first.
    lifecycle: tuple[LifecycleEvent, ...] = ()


def feed_history(ledger: Ledger, feed_id: str, *, runs: int = HISTORY_RUNS) -> FeedHistory:
    """Everything the ledger holds about ``feed_id``'s newest ``runs`` runs and all its deliveries."""
    from carrierfeeds.audit import acks_from_ledger, delivery_lines, feed_parties
    from carrierfeeds.ledger.lifecycle import history

    found = sorted(ledger.list_runs(feed_id=feed_id), key=lambda r: r.started_at, reverse=True)[:runs]
    with_events = tuple(RunWithEvents(run=r, events=tuple(ledger.run_events(r.run_id))) for r in found)
    records = ledger.deliveries(feed_id=feed_id)
    ids = [d.delivery_id for d in records]
    lines = delivery_lines(ledger, feed_id=feed_id, parties=feed_parties(ledger),
                           acks=acks_from_ledger(ledger, ids) if ids else {})
    outcomes: dict[str, list[OutcomeEvent]] = {}
    acks: dict[str, list[AckRecord]] = {}
    if ids:
        for o in ledger.delivery_outcomes(delivery_ids=ids):
            outcomes.setdefault(o.delivery_id, []).append(o)
        for a in ledger.acknowledgments(delivery_ids=ids):
            if a.delivery_id is not None:
                acks.setdefault(a.delivery_id, []).append(a)
    forced = tuple(o for seen in outcomes.values() for o in seen if o.status == "forced_resend")
    object_ids = [r.run_id for r in found] + ids
    audit = tuple(ledger.audit_events(object_ids=object_ids)) if object_ids else ()
    return FeedHistory(
        feed_id=feed_id, runs=with_events, deliveries=tuple(reversed(lines)),
        control_numbers={d.delivery_id: (d.isa13, d.gs06, d.st02) for d in records},
        outcomes={k: tuple(v) for k, v in outcomes.items()}, acknowledgments={k: tuple(v) for k, v in acks.items()},
        forced_resends=tuple(sorted(forced, key=lambda o: o.seq)), audit=audit,
        lifecycle=tuple(history(ledger, feed_id)))


@dataclass(frozen=True)
class TokenHit:
    """A member token's finding in one validation report: which feed and interval, which row and rule."""

    feed_id: str
    interval: str
    row: str
    column: str
    rule: str


def find_member_token(settings: Settings, token: str, *, limit: int = 500) -> list[TokenHit]:
    """Findings for ``token`` in every run's validation report (``reports/<feed>/<interval>/validation.csv``,
    which hold tokens, columns and rules, never values). ValueError for a string that is not a token."""
    if not TOKEN_PATTERN.match(token):
        raise ValueError("not a member token (m_ and 16 hex digits)")
    hits: list[TokenHit] = []
    root = settings.reports_dir
    if not root.is_dir():
        return hits
    for report in sorted(root.glob("*/*/validation.csv")):
        with report.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                if row.get("member_token") == token:
                    hits.append(TokenHit(feed_id=report.parent.parent.name, interval=report.parent.name,
                                         row=row.get("row", ""), column=row.get("column", ""),
                                         rule=row.get("rule", "")))
                    if len(hits) >= limit:
                        return hits
    return hits
