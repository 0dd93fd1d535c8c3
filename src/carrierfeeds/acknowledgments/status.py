"""Each delivered file's acknowledgment state (accepted, rejected, awaiting, overdue, not expected).

Only files a carrier can acknowledge are awaited: a manual hand-off (delivery kind ``manual``) and a
feed whose mapping names no ``acks`` source are ``not_expected``, never ``overdue`` (ops cannot
collect what is never configured). An acknowledgment that does arrive for them still counts.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from carrierfeeds.acknowledgments.alerts import Alert
from carrierfeeds.ledger.records import DELIVERED_STATUSES

if TYPE_CHECKING:
    from carrierfeeds.ledger import DeliveryRecord, Ledger
    from carrierfeeds.ledger.records import AckRecord

#: How long after delivery an acknowledgment may take for a feed no window is passed for (the carrier
#: mapping's ``ack_window_hours`` default); the audit report uses it too.
DEFAULT_WINDOW = timedelta(hours=24)
#: Acknowledgment statuses after which the delivered file's content must not become the baseline; the
#: audit report counts the same ones as rejections (either way some of the file was not taken).
BLOCKING_STATUSES = frozenset({"rejected", "partial"})


@dataclass(frozen=True)
class AckInfo:
    """A carrier's acknowledgment of one delivery: ``accepted``, ``partial`` or ``rejected``."""

    delivery_id: str
    status: str
    received_at: datetime


@dataclass(frozen=True)
class DeliveryAckStatus:
    """A delivered file and what its carrier said about it.

    ``status``: the latest 999's status (accepted, accepted_with_errors, partial, rejected), else
    ``rejected`` after a rejecting TA1, else ``not_expected`` when no acknowledgment will come (a
    manual hand-off, a carrier with no acknowledgment source), else ``overdue`` once ``due_at`` has
    passed, else ``awaiting``.
    ``interchange`` is the latest TA1's status (None: no TA1). ``delivered_at`` is the latest outcome's
    time; ``due_at`` = delivered_at + the carrier's window.
    """

    delivery_id: str
    feed_id: str
    interval_start: date
    isa13: int
    file_name: str
    delivered_at: datetime
    due_at: datetime
    status: str
    interchange: str | None
    received_at: datetime | None
    sets_rejected: int
    segment_errors: int
    element_errors: int

    def as_dict(self) -> dict[str, Any]:
        return {k: (v.isoformat() if isinstance(v, date) else v) for k, v in asdict(self).items()}


#: Delivery statuses of a file a person hands over: no carrier system acknowledges it.
HANDOFF_STATUSES = frozenset({"pending_handoff", "handed_off"})


def ack_expected(delivery: DeliveryRecord, no_source: Collection[str] = ()) -> bool:
    """Whether a TA1/999 can come for this delivery: not a manual hand-off, and its feed's carrier
    has an acknowledgment source (``no_source``: feed ids whose mapping has ``acks`` None)."""
    return (delivery.transport != "manual" and delivery.status not in HANDOFF_STATUSES
            and delivery.feed_id not in no_source)


def fold_ack_status(delivery: DeliveryRecord, records: Sequence[AckRecord], *, now: datetime,
                    window: timedelta = DEFAULT_WINDOW, expected: bool = True) -> DeliveryAckStatus:
    """The acknowledgment state of one delivery from its ack rows (in chain order) at ``now``;
    ``expected`` False: none will come, so it is ``not_expected`` rather than awaiting or overdue."""
    ta1 = [r for r in records if r.kind == "TA1"]
    group = [r for r in records if r.kind == "999"]
    due = delivery.updated_at + window
    latest = group[-1] if group else None
    if latest is not None:
        status = latest.status
    elif ta1 and ta1[-1].status == "rejected":
        status = "rejected"
    elif not expected:
        status = "not_expected"
    else:
        status = "overdue" if now > due else "awaiting"
    basis = latest or (ta1[-1] if ta1 else None)
    return DeliveryAckStatus(
        delivery_id=delivery.delivery_id, feed_id=delivery.feed_id, interval_start=delivery.interval_start,
        isa13=delivery.isa13, file_name=delivery.file_name, delivered_at=delivery.updated_at, due_at=due,
        status=status, interchange=ta1[-1].status if ta1 else None,
        received_at=basis.received_at if basis else None,
        sets_rejected=basis.sets_rejected if basis else 0,
        segment_errors=basis.segment_errors if basis else 0,
        element_errors=basis.element_errors if basis else 0)


def ack_status(ledger: Ledger, *, now: datetime, windows: Mapping[str, timedelta] | None = None,
               default_window: timedelta = DEFAULT_WINDOW, feed_id: str | None = None,
               since: datetime | None = None, no_source: Collection[str] = ()) -> list[DeliveryAckStatus]:
    """Every delivered file (of one feed, sent since ``since``) with its acknowledgment state;
    ``windows`` maps feed id to its carrier's window (``default_window`` for the rest). Manual
    hand-offs and the feeds in ``no_source`` (see
    :func:`~carrierfeeds.acknowledgments.inbox.feeds_without_source`) are never overdue."""
    return ack_status_of(ledger, ledger.deliveries(feed_id=feed_id, since=since), now=now, windows=windows,
                         default_window=default_window, no_source=no_source)


def ack_status_of(ledger: Ledger, deliveries: Iterable[DeliveryRecord], *, now: datetime,
                  windows: Mapping[str, timedelta] | None = None, default_window: timedelta = DEFAULT_WINDOW,
                  no_source: Collection[str] = ()) -> list[DeliveryAckStatus]:
    """:func:`ack_status` of deliveries the caller already read (folded once for several uses)."""
    deliveries = [d for d in deliveries if d.status in DELIVERED_STATUSES]
    by_delivery: dict[str, list[AckRecord]] = {}
    if deliveries:
        for r in ledger.acknowledgments(delivery_ids=[d.delivery_id for d in deliveries]):
            by_delivery.setdefault(str(r.delivery_id), []).append(r)
    return [fold_ack_status(d, by_delivery.get(d.delivery_id, []), now=now,
                            window=(windows or {}).get(d.feed_id, default_window),
                            expected=ack_expected(d, no_source)) for d in deliveries]


def overdue_alerts(statuses: Iterable[DeliveryAckStatus], *, now: datetime) -> list[Alert]:
    """One alert per delivery whose acknowledgment is overdue at ``now``."""
    return [Alert(kind="overdue", severity="error", delivery_id=s.delivery_id, feed_id=s.feed_id, isa13=s.isa13,
                  file_name=s.file_name,
                  message=f"no 999 for feed {s.feed_id} ISA13 {s.isa13} delivered {s.delivered_at.isoformat()}; "
                          f"due {s.due_at.isoformat()}, {int((now - s.due_at).total_seconds() // 3600)}h late")
            for s in statuses if s.status == "overdue"]


def snapshot_blocked(ledger: Ledger, delivery_id: str) -> bool:
    """True when the carrier rejected (or only partly accepted) this delivery: its content must not
    become the baseline the next change file is diffed against."""
    rows = ledger.acknowledgments(delivery_ids=[delivery_id])
    group = [r for r in rows if r.kind == "999"]
    if group:
        return group[-1].status in BLOCKING_STATUSES
    ta1 = [r for r in rows if r.kind == "TA1"]
    return bool(ta1) and ta1[-1].status == "rejected"


def ack_infos(ledger: Ledger, delivery_ids: Collection[str] | None = None) -> dict[str, AckInfo]:
    """delivery id -> :class:`AckInfo` (latest 999, else latest TA1) for auditors."""
    latest: dict[str, AckRecord] = {}
    for r in ledger.acknowledgments(delivery_ids=delivery_ids, matched=True):
        current = latest.get(str(r.delivery_id))
        if current is None or r.kind == "999" or current.kind != "999":
            latest[str(r.delivery_id)] = r
    return {k: AckInfo(delivery_id=k, status=r.status, received_at=r.received_at) for k, r in latest.items()}
