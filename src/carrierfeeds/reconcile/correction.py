"""The corrective change 834: from a feed's open discrepancies and its confirmed snapshot, the 834 view
that brings the carrier in line, and the approvals that let the next run send it.

    correction_view(snapshot, items, ...)   pure: which snapshot rows go out, under which INS03/HD01
    draft_correction(...)                   render + gate it preview-style (nothing sent or recorded)
    approve_correction(...)                 a person's approval: an audit event, an event per discrepancy
    approved_items(items)                   what the next run sends (run.stages' correction hook)

Kinds drafted (:data:`DRAFTED`): ``missing_at_carrier`` is an add (021; a missing coverage line of a
member the carrier holds is a 001 with HD01 021), ``termed_here_active_there`` a term (HD01 024, the
snapshot's end date), ``plan`` / ``coverage_dates`` / ``coverage_level`` a change (001) carrying the
snapshot's line, ``dependents`` (relationship or subscriber) a change (001) of the member carrying every
snapshot line with its INS02 and subscriber. ``extra_at_carrier`` and ``identity`` are left to people
(listed, not drafted): a term (024) for someone the carrier holds and we do not needs that member's ids
and dates, and a 2100B correction the identity the carrier holds; the roster keeps only tokens and
keyed hashes of both, never the values a file would have to carry.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import pandas as pd

from carrierfeeds.census.tokens import MemberTokenizer
from carrierfeeds.enrollment import Enrollment, RenderOptions
from carrierfeeds.ledger.worklist import OPEN_STATUSES, WorkItem
from carrierfeeds.settings import FeedBundle, Settings
from carrierfeeds.x12.codes import MaintenanceReason

log = logging.getLogger(__name__)

ADD, CHANGE, TERM = "021", "001", "024"
#: discrepancy kind -> HD01 of the line it sends ("" for a whole member).
DRAFTED: Final[dict[str, str]] = {"missing_at_carrier": ADD, "termed_here_active_there": TERM,
                                  "plan": CHANGE, "coverage_dates": CHANGE, "coverage_level": CHANGE,
                                  "dependents": CHANGE}
APPROVED = "correction_approved"
OBJECT_TYPE = "correction"


@dataclass(frozen=True)
class CorrectionView:
    """The rows to send (an 834 view with ``ins03``/``ins04``/``hd01``), the discrepancy ids they
    answer, and the open ones left to people (``manual``: id -> kind)."""

    table: pd.DataFrame
    discrepancy_ids: tuple[str, ...]
    manual: dict[str, str]

    def enrollment(self, *, allowlist: Sequence[str], options: RenderOptions) -> Enrollment:
        members = self.table.drop_duplicates(["subscriber_id", "member_id"])
        return Enrollment(table=self.table, member_count=len(members),
                          subscriber_count=int((members["ins01"] == "Y").sum()),
                          coverage_count=int((self.table["hd03"] != "").sum()), allowlist=tuple(allowlist),
                          options=options)


def correction_view(snapshot: pd.DataFrame, items: Sequence[WorkItem], tokenizer: MemberTokenizer) -> CorrectionView:
    """The snapshot's rows that answer ``items``' open discrepancies, in the snapshot's order. Pure."""
    open_items = [i for i in items if i.status in OPEN_STATUSES]
    manual = {i.discrepancy_id: i.kind for i in open_items if i.kind not in DRAFTED}
    frame = snapshot.reset_index(drop=True)
    tokens = tokenizer.tokens(frame["member_id"].fillna("").astype(str)).to_numpy()
    lines = frame["hd03"].fillna("").astype(str).to_numpy()
    hd01: dict[int, str] = {}
    whole: set[str] = set()
    answered: list[str] = []
    for item in open_items:
        code = DRAFTED.get(item.kind)
        if code is None:
            continue
        rows = [r for r in range(len(frame)) if tokens[r] == item.member_token
                and (item.coverage_line == "" or lines[r] == item.coverage_line)]
        if not rows:
            manual[item.discrepancy_id] = item.kind  # no longer in the snapshot: a person decides
            continue
        answered.append(item.discrepancy_id)
        if item.kind == "missing_at_carrier" and item.coverage_line == "":
            whole.add(item.member_token)
        for r in rows:
            # An add or a term outranks a change of the same line.
            if hd01.get(r) in (None, CHANGE):
                hd01[r] = code
    picked = sorted(hd01)
    table = frame.iloc[picked].copy()
    table["hd01"] = [hd01[r] for r in picked]
    member_tokens = pd.Series(tokens[picked], index=table.index)
    ins03, ins04 = [], []
    for token, group in table.groupby(member_tokens, sort=False)["hd01"]:
        codes = set(group)
        if token in whole:
            kind = (ADD, MaintenanceReason.INITIAL_ENROLLMENT.value)
        elif codes == {TERM}:
            kind = (TERM, MaintenanceReason.TERMINATION_OF_BENEFITS.value)
        else:
            kind = (CHANGE, MaintenanceReason.NO_REASON_GIVEN.value)
        for _ in group:
            ins03.append(kind[0])
            ins04.append(kind[1])
    # groupby(sort=False) visits members in first-seen order; put the codes back on the rows in that order.
    order = [ix for _, group in table.groupby(member_tokens, sort=False) for ix in group.index]
    table.loc[order, "ins03"] = ins03
    table.loc[order, "ins04"] = ins04
    table = table.reset_index(drop=True)
    for col in table.columns:
        table[col] = table[col].astype(object).where(table[col].notna(), "")
    log.info("correction: %d rows for %d discrepancies; %d left to people", len(table), len(answered), len(manual))
    return CorrectionView(table, tuple(sorted(answered)), manual)


def draft_correction(settings: Settings, bundle: FeedBundle, items: Sequence[WorkItem], *, folder: Path,
                     now: datetime, tokenizer: MemberTokenizer) -> dict[str, Any]:
    """Render the corrective change 834 into ``folder`` (private) the preview's way and gate it.

    Nothing is sent, staged or written to the ledger; the control numbers are the ledger's next one,
    read without writing (a placeholder: the run that sends it allocates its own). PHI-free account."""
    from carrierfeeds.changes import SnapshotStore
    from carrierfeeds.files import write_private
    from carrierfeeds.run.gate import check_file
    from carrierfeeds.run.preview import _account, peek_control_number
    from carrierfeeds.run.render import render_file

    feed, mapping = bundle.feed, bundle.mapping
    snapshot = SnapshotStore.for_settings(settings).load(feed.feed_id)
    view = correction_view(snapshot if snapshot is not None else pd.DataFrame(columns=["member_id", "hd03"]),
                           items, tokenizer)
    result: dict[str, Any] = {"feed_id": feed.feed_id, "preview": True, "sent": False, "ledger_written": False,
                              "discrepancy_ids": list(view.discrepancy_ids), "manual": view.manual,
                              "out": str(folder), "files": []}
    if not view.discrepancy_ids:
        result["status"] = "nothing_to_correct"
        return result
    enrollment = view.enrollment(allowlist=mapping.allowlist, options=RenderOptions.for_mapping(mapping))
    number, source = peek_control_number(settings, mapping.envelope.sender_id, mapping.envelope.receiver_id)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    rendered = render_file(bundle, enrollment, action="2", isa13=number, gs06=number, st02=number, created=now,
                           day=now.date(), folder=folder, write=write_private)
    verdict = check_file(rendered.path, bundle, payload_sha256=rendered.sha256, members=enrollment.member_count,
                         records=rendered.records, pyx12_max_members=settings.pyx12_max_members, scratch=folder,
                         detail={})
    entry = _account(rendered, verdict)
    members_by_type = view.table.drop_duplicates(["subscriber_id", "member_id"])["ins03"].value_counts()
    entry.update(members=enrollment.member_count,
                 members_by_type={str(k): int(v) for k, v in sorted(members_by_type.items())},
                 control_numbers={"isa13": number, "placeholder": True,
                                  "note": f"preview placeholder ({source}); the run that sends it allocates its own"})
    result["files"] = [entry]
    result["status"] = "ok" if verdict.passed else "conformance_failed"
    return result


def approve_correction(ledger: Any, *, feed_id: str, discrepancy_ids: Sequence[str], by: str, reason: str | None,
                       now: datetime) -> str:
    """Record a person's approval to send the correction answering ``discrepancy_ids``: one audit event
    (the approval, with counts) and a ``correction_approved`` event on each discrepancy. Its id."""
    from carrierfeeds.ledger.worklist import record_correction

    approval_id = uuid.uuid4().hex
    ledger.audit(actor=by, action=APPROVED, object_type=OBJECT_TYPE, object_id=approval_id, now=now,
                 reason=reason, detail={"feed_id": feed_id, "discrepancies": len(discrepancy_ids)})
    record_correction(ledger, discrepancy_ids, action="correction_approved", actor=by,
                      reason=f"approval {approval_id}", now=now)
    log.info("feed %s: correction %s approved by %s for %d discrepancies", feed_id, approval_id, by,
             len(discrepancy_ids))
    return approval_id


def approved_items(items: Sequence[WorkItem]) -> list[WorkItem]:
    """Open items whose newest correction event is an approval: the next run of the feed sends them."""
    out = []
    for item in items:
        last = next((e.action for e in reversed(item.events) if e.action in ("correction_approved", "corrected")),
                    None)
        if item.status in OPEN_STATUSES and last == "correction_approved":
            out.append(item)
    return out




@dataclass(frozen=True)
class RunCorrection:
    """An approved correction a run sends: the rows, the approval and the discrepancy ids it answers."""

    table: pd.DataFrame
    approval_id: str
    discrepancy_ids: tuple[str, ...]


def correction_for_run(ledger: Any, feed_id: str, base: pd.DataFrame | None,
                       tokenizer_for: Callable[[], MemberTokenizer]) -> RunCorrection | None:
    """The approved, unsent correction of ``feed_id`` drawn against ``base`` (the snapshot the run diffs
    from), or None. Only items approved and still open are sent; the newest approval names the batch."""
    from carrierfeeds.ledger.worklist import work_items

    approved = approved_items(work_items(ledger, feed_id=feed_id))
    if not approved or base is None:
        return None
    view = correction_view(base, approved, tokenizer_for())
    if not view.discrepancy_ids:
        return None
    approval_id = "unknown"
    newest = max((e for i in approved for e in i.events if e.action == "correction_approved"),
                 key=lambda e: e.at, default=None)
    if newest is not None and newest.reason:
        approval_id = newest.reason.removeprefix("approval ")
    return RunCorrection(view.table, approval_id, view.discrepancy_ids)


def with_correction(enrollment: Enrollment, correction: RunCorrection) -> Enrollment:
    """``enrollment`` (the run's change file) plus the correction's rows for members it does not send
    already: for a member in both, the run's own change (newer than the snapshot) is what goes out."""
    from carrierfeeds.census.columns import ROW_NUMBER

    table = enrollment.table
    sent = set(table["member_id"].astype(str)) if len(table) else set()
    extra = correction.table[~correction.table["member_id"].astype(str).isin(sent)]
    extra = extra.reindex(columns=list(table.columns) if len(table.columns) else list(extra.columns), fill_value="")
    if ROW_NUMBER in extra.columns:
        extra[ROW_NUMBER] = 0  # not a census row: findings never point at it
    merged = pd.concat([table, extra], ignore_index=True) if len(table) else extra.reset_index(drop=True)
    members = merged.drop_duplicates(["subscriber_id", "member_id"])
    return Enrollment(table=merged, member_count=len(members), subscriber_count=int((members["ins01"] == "Y").sum()),
                      coverage_count=int((merged["hd03"] != "").sum()), excluded=dict(enrollment.excluded),
                      sanitized=dict(enrollment.sanitized), allowlist=enrollment.allowlist,
                      normalised=dict(enrollment.normalised), options=enrollment.options)


def mark_corrected(ledger: Any, *, approval_id: str, discrepancy_ids: Sequence[str], run_id: str, now: datetime,
                   actor: str = "carrierfeeds") -> None:
    """The run that carried ``approval_id``'s correction delivered it: a ``corrected`` event on each item."""
    from carrierfeeds.ledger.worklist import record_correction

    record_correction(ledger, discrepancy_ids, action="corrected", actor=actor,
                      reason=f"sent by run {run_id} (approval {approval_id})", now=now)


__all__ = ["APPROVED", "DRAFTED", "CorrectionView", "RunCorrection", "approve_correction", "approved_items",
           "correction_for_run", "correction_view", "draft_correction", "mark_corrected", "with_correction"]
