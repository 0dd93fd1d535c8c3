"""Put back the snapshot from before a run whose delivery the carrier rejected, so its changes go again.

A rejecting TA1 or a rejected / partially accepted 999 for a changes-mode delivery whose run advanced
the feed's snapshot puts back the snapshot from before that run (audit event ``snapshot_reverted``), so
the next run diffs against what the carrier holds and sends those changes again. The snapshot is one
per feed run, not per transaction set, so a partial acceptance (some sets rejected) reverts the whole
run: the next run resends the changes of the accepted sets as well as the rejected ones.

A carrier aggregator's file (``run.aggregate_run``) holds one set per employer, each employer with its
own run and snapshot: the sets the 999 rejects (AK2/IK5 by ST02; every set after a rejecting TA1 or a
999 naming none) revert those employers' snapshots only.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from carrierfeeds.acknowledgments.alerts import Alert, emit_alert
from carrierfeeds.acknowledgments.status import BLOCKING_STATUSES, snapshot_blocked
from carrierfeeds.errors import CarrierFeedsError

if TYPE_CHECKING:
    from carrierfeeds.changes import SnapshotStore
    from carrierfeeds.ledger import DeliveryRecord, Ledger

#: How far back a poll looks for rejections whose snapshot revert is still to do (a crash mid-revert,
#: a store that could not be read): beyond it a later run has long advanced past the rejected one.
REVERT_LOOKBACK = timedelta(days=30)
#: Audit actions recording that a rejection's snapshot was dealt with (each delivery once).
SNAPSHOT_REVERTED, SNAPSHOT_REVERT_REFUSED = "snapshot_reverted", "snapshot_revert_refused"
#: The ledger actor of everything the acknowledgment workflow records.
ACK_ACTOR = "carrierfeeds-acks"


def revert_rejected_snapshots(ledger: Ledger, snapshots: SnapshotStore, *, now: datetime,
                              since: datetime | None = None, actor: str = ACK_ACTOR) -> list[Alert]:
    """For every delivery whose acknowledgments (received since ``since``) leave it rejected and whose
    run advanced its feed's snapshot: put back the snapshot from before that run.

    Each delivery is dealt with once, recorded as an audit event on the delivery: ``snapshot_reverted``
    (detail: feed, run, ISA13, the run now current) with a warning alert, or ``snapshot_revert_refused``
    with an error alert when a later run already advanced past it (:class:`SnapshotSuperseded`). A
    store that cannot be read raises an error alert and no event, so the next poll tries again; a
    crash between the revert and its event is finished by the next poll too (revert is idempotent).
    Returns the alerts, already emitted.
    """
    rows = [r for r in ledger.acknowledgments(matched=True, since=since) if r.status in BLOCKING_STATUSES]
    candidates = list(dict.fromkeys(str(r.delivery_id) for r in rows))
    if not candidates:
        return []
    done = {e.object_id for action in (SNAPSHOT_REVERTED, SNAPSHOT_REVERT_REFUSED)
            for e in ledger.audit_events(action=action, object_type="delivery", object_ids=candidates)}
    alerts: list[Alert] = []
    for delivery_id in candidates:
        if delivery_id in done or not snapshot_blocked(ledger, delivery_id):
            continue  # handled already, or a later acknowledgment accepted it after all
        row = next(r for r in rows if r.delivery_id == delivery_id)
        found = ledger.find_delivery_by_control(sender_id=str(row.receiver_id), receiver_id=str(row.sender_id),
                                                isa13=row.isa13) if row.isa13 is not None else None
        if found is None or found.delivery_id != delivery_id:
            continue  # matched before; this only happens once control numbers wrapped: nothing to revert
        by_set = aggregate_sets(ledger, found)
        if by_set:
            alerts.extend(emit_alert(a) for a in _revert_employers(ledger, snapshots, found, by_set, now=now,
                                                                   actor=actor))
            continue
        alert = _revert_one(ledger, snapshots, found, now=now, actor=actor)
        if alert is not None:
            alerts.append(emit_alert(alert))
    return alerts


def aggregate_sets(ledger: Ledger, delivery: DeliveryRecord) -> dict[int, str]:
    """ST02 -> the employer's run, for a carrier aggregator's file (its build stage records
    ``st02_<NNNN>`` = the run id of the employer whose set that is: ``run.aggregate_run``); {} for a
    feed's own file."""
    built = [e.detail for e in ledger.run_events(delivery.run_id)
             if e.kind == "stage" and e.stage == "build" and e.status == "succeeded"]
    if not built:
        return {}
    return {int(k[5:]): str(v) for k, v in built[-1].items() if k.startswith("st02_") and k[5:].isdigit()}


def rejected_sets(ledger: Ledger, delivery: DeliveryRecord, sets: set[int]) -> set[int]:
    """Which of ``sets`` (ST02s) the carrier did not take: those its latest 999 answers with IK501 other
    than A or E; every set when that 999 names none of them, or a TA1 rejected the interchange."""
    rows = ledger.acknowledgments(delivery_ids=[delivery.delivery_id])
    group = [r for r in rows if r.kind == "999"]
    if not group:
        return set(sets)
    answered = {int(c["st02"]): c["ik501"] for c in group[-1].codes if "ik501" in c and "st02" in c}
    if not answered:
        return set(sets)
    return {n for n in sets if answered.get(n, "R") not in ("A", "E")}


def _revert_employers(ledger: Ledger, snapshots: SnapshotStore, delivery: DeliveryRecord, by_set: dict[int, str],
                      *, now: datetime, actor: str) -> list[Alert]:
    """A carrier aggregator's file: put back the snapshot of each employer whose set the carrier rejected,
    and of no other; one audit event on the delivery, naming each set's employer feed and what happened."""
    from carrierfeeds.changes import SnapshotSuperseded

    where: dict[str, Any] = dict(delivery_id=delivery.delivery_id, feed_id=delivery.feed_id, isa13=delivery.isa13,
                                 file_name=delivery.file_name)
    detail: dict[str, Any] = {"feed_id": delivery.feed_id, "run_id": delivery.run_id, "isa13": delivery.isa13}
    alerts: list[Alert] = []
    reverted = refused = 0
    for st02 in sorted(rejected_sets(ledger, delivery, set(by_set))):
        record = ledger.get_run(by_set[st02])
        if record is None:
            continue
        employer = replace(delivery, feed_id=record.feed_id, run_id=record.run_id)
        try:
            if not _run_advanced(ledger, snapshots, employer):
                detail[f"st02_{st02:04d}"] = "no_snapshot"
                continue
            snapshots.revert(record.feed_id, record.run_id)
        except SnapshotSuperseded:
            refused += 1
            detail[f"st02_{st02:04d}"] = "superseded"
            alerts.append(Alert(kind="snapshot_superseded", severity="error",
                                message=f"feed {record.feed_id} (set {st02:04d} of carrier file {delivery.feed_id} "
                                        f"ISA13 {delivery.isa13}) was rejected but a later run already advanced its "
                                        "snapshot; send that employer a full file", **where))
            continue
        except CarrierFeedsError as exc:
            return [*alerts, Alert(kind="snapshot_revert_failed", severity="error",
                                   message=f"feed {record.feed_id} (set {st02:04d} of carrier file "
                                           f"{delivery.feed_id} ISA13 {delivery.isa13}) was rejected but its "
                                           f"snapshot could not be reverted ({exc.code}); the next poll tries again",
                                   **where)]
        reverted += 1
        detail[f"st02_{st02:04d}"] = record.feed_id
        alerts.append(Alert(kind="snapshot_reverted", severity="warning",
                            message=f"feed {record.feed_id} (set {st02:04d} of carrier file {delivery.feed_id} ISA13 "
                                    f"{delivery.isa13}) was rejected: its snapshot was put back; its next run "
                                    "resends those changes", **where))
    action = SNAPSHOT_REVERT_REFUSED if refused and not reverted else SNAPSHOT_REVERTED
    ledger.audit(actor=actor, action=action, object_type="delivery", object_id=delivery.delivery_id, now=now,
                 reason="carrier rejected sets of the file", detail={**detail, "employers_reverted": reverted})
    return alerts


def _run_advanced(ledger: Ledger, snapshots: SnapshotStore, delivery: DeliveryRecord) -> bool:
    """Whether the delivery's run made its snapshot current (its confirm stage said so, or it still is)."""
    if any(e.kind == "stage" and e.stage == "confirm" and e.status == "succeeded"
           and e.detail.get("snapshot_advanced") for e in ledger.run_events(delivery.run_id)):
        return True
    info = snapshots.info(delivery.feed_id)
    return info is not None and info.run_id == delivery.run_id


def _revert_one(ledger: Ledger, snapshots: SnapshotStore, delivery: DeliveryRecord, *, now: datetime,
                actor: str) -> Alert | None:
    from carrierfeeds.changes import SnapshotSuperseded  # pandas-heavy; only needed after a rejection

    where: dict[str, Any] = dict(delivery_id=delivery.delivery_id, feed_id=delivery.feed_id, isa13=delivery.isa13,
                                 file_name=delivery.file_name)
    detail: dict[str, Any] = {"feed_id": delivery.feed_id, "run_id": delivery.run_id, "isa13": delivery.isa13}
    try:
        if not _run_advanced(ledger, snapshots, delivery):
            return None  # a full-file feed, or a run that sent nothing new: no snapshot to take back
        snapshots.revert(delivery.feed_id, delivery.run_id)
        info = snapshots.info(delivery.feed_id)
    except SnapshotSuperseded as exc:
        current = exc.details.get("current_run_id")
        ledger.audit(actor=actor, action=SNAPSHOT_REVERT_REFUSED, object_type="delivery",
                     object_id=delivery.delivery_id, now=now, reason="a later run already advanced the snapshot",
                     detail={**detail, "current_run_id": current})
        return Alert(kind="snapshot_superseded", severity="error",
                     message=f"feed {delivery.feed_id} ISA13 {delivery.isa13} was rejected but a later run "
                             f"({current}) already advanced the snapshot past it; the rejected changes will "
                             "not be resent on their own: send a full file", **where)
    except CarrierFeedsError as exc:
        return Alert(kind="snapshot_revert_failed", severity="error",
                     message=f"feed {delivery.feed_id} ISA13 {delivery.isa13} was rejected but its snapshot "
                             f"could not be reverted ({exc.code}); the next poll tries again", **where)
    restored = info.run_id if info is not None else None
    ledger.audit(actor=actor, action=SNAPSHOT_REVERTED, object_type="delivery", object_id=delivery.delivery_id,
                 now=now, reason="carrier rejected the file", detail={**detail, "restored_run_id": restored})
    return Alert(kind="snapshot_reverted", severity="warning",
                 message=f"feed {delivery.feed_id} ISA13 {delivery.isa13} was rejected: snapshot put back to "
                         f"{'run ' + restored if restored else 'none (the next run sends a full file)'}; "
                         "the next run resends those changes", **where)
