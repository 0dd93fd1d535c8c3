"""Match an acknowledgment file's TA1s and 999 groups to our deliveries, as ledger rows and alerts.

A file split into several transaction sets (``max_members_per_transaction``) is matched by GS06 and
its sets' ST02s 0001..N (the deliver stage records how many). With one transaction set per
interchange a partial acceptance rejects the whole set; with several, the alert names the rejected
sets' ST02s so ops can tell the carrier which sets to expect again. Rows and alerts hold ids, control
numbers, positions and codes only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from carrierfeeds.acknowledgments.alerts import Alert
from carrierfeeds.acknowledgments.status import BLOCKING_STATUSES
from carrierfeeds.ledger.records import AckRow, AckStatus
from carrierfeeds.x12 import ack_reader as x
from carrierfeeds.x12.ack_reader import (
    Ack999,
    AckFile,
    GroupAckCode,
    InterchangeAckCode,
    Ta1,
    TransactionSetAck,
)

if TYPE_CHECKING:
    from carrierfeeds.ledger import DeliveryRecord, Ledger


_TA1_STATUS: dict[InterchangeAckCode, AckStatus] = {
    InterchangeAckCode.ACCEPTED: AckStatus.ACCEPTED,
    InterchangeAckCode.ACCEPTED_WITH_ERRORS: AckStatus.ACCEPTED_WITH_ERRORS,
    InterchangeAckCode.REJECTED: AckStatus.REJECTED,
}
_GROUP_STATUS: dict[GroupAckCode, AckStatus] = {
    GroupAckCode.ACCEPTED: AckStatus.ACCEPTED,
    GroupAckCode.ACCEPTED_WITH_ERRORS: AckStatus.ACCEPTED_WITH_ERRORS,
    GroupAckCode.PARTIALLY_ACCEPTED: AckStatus.PARTIAL,
}


def _code(value: object) -> str:
    """A carrier-supplied id or code as the ledger may hold it (short, plain), else ``?``."""
    text = str(value)
    return text if text and len(text) <= 12 and text.isalnum() and text.isascii() else "?"


def _set_codes(ts: TransactionSetAck) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"st02": ts.control_number, "ik501": ts.status.value,
                                  **{f"ik5{i + 2:02d}": _code(c.value) for i, c in enumerate(ts.errors)}}]
    for seg in ts.segment_errors:
        base = {"st02": ts.control_number, "segment": _code(seg.segment_id), "position": seg.position,
                "loop": _code(seg.loop) if seg.loop else None,
                "ik304": _code(seg.code.value) if seg.code is not None else None}
        if not seg.elements:
            out.append(base)
        for el in seg.elements:
            out.append({**base, "element": el.position, "component": el.component,
                        "repetition": el.repetition, "reference": _code(el.reference) if el.reference else None,
                        "ik403": _code(el.code.value)})
    return out


def describe_codes(codes: Iterable[Mapping[str, Any]]) -> tuple[dict[str, Any], ...]:
    """Ledger code entries with the meaning of each code added (``*_meaning`` keys), for people."""
    enums: dict[str, Any] = {"ta104": x.InterchangeAckCode, "ta105": x.InterchangeNoteCode,
                             "ak901": x.GroupAckCode, "ik501": x.TransactionSetAckCode,
                             "ik304": x.SegmentErrorCode, "ik403": x.ElementErrorCode}
    enums.update({f"ak9{i:02d}": x.GroupErrorCode for i in range(5, 10)})
    enums.update({f"ik5{i:02d}": x.TransactionSetErrorCode for i in range(2, 7)})
    out = []
    for entry in codes:
        described = dict(entry)
        for key, value in entry.items():
            if key in enums and isinstance(value, str):
                try:
                    described[f"{key}_meaning"] = enums[key](value).meaning
                except ValueError:
                    described[f"{key}_meaning"] = "unknown code"
        out.append(described)
    return tuple(out)


def _ta1_row(unit: int, ta1: Ta1, sender: str, receiver: str, found: DeliveryRecord | None) -> AckRow:
    return AckRow(unit=unit, kind="TA1", status=_TA1_STATUS[ta1.status], sender_id=sender,
                  receiver_id=receiver, control_number=ta1.control_number,
                  isa13=found.isa13 if found else None, delivery_id=found.delivery_id if found else None,
                  codes=({"position": ta1.segment_position, "ta101": ta1.control_number,
                          "ta104": ta1.status.value, "ta105": _code(ta1.note.value)},))


def _group_row(unit: int, ack: Ack999, sender: str, receiver: str, found: DeliveryRecord | None) -> AckRow:
    sets = ack.transaction_sets
    group = {"position": ack.segment_position, "ak101": _code(ack.functional_id),
             "ak102": ack.group_control_number, "ak901": ack.status.value, "ak902": ack.sets_included,
             "ak903": ack.sets_received, "ak904": ack.sets_accepted,
             **{f"ak9{i + 5:02d}": _code(c.value) for i, c in enumerate(ack.group_errors)}}
    codes = [group, *(entry for ts in sets for entry in _set_codes(ts))]
    rejected_sets = sum(not ts.accepted for ts in sets)
    status = _GROUP_STATUS.get(ack.status, AckStatus.REJECTED)
    return AckRow(unit=unit, kind="999", status=status, sender_id=sender, receiver_id=receiver,
                  control_number=ack.group_control_number, isa13=found.isa13 if found else None,
                  delivery_id=found.delivery_id if found else None,
                  sets_accepted=ack.sets_accepted, sets_rejected=rejected_sets,
                  segment_errors=sum(len(ts.segment_errors) for ts in sets),
                  element_errors=sum(len(s.elements) for ts in sets for s in ts.segment_errors),
                  codes=codes)


def delivery_set_numbers(delivery: DeliveryRecord) -> frozenset[int]:
    """The ST02 of every transaction set in the delivered file.

    The deliver stage records the file's ST count as ``member_counts["transaction_sets"]``; a file
    split into several sets numbers them as :func:`carrierfeeds.x12.render.set_numbers` does
    (0001..N), one set carries the ledger's ST02. A delivery recorded without the count (an older row, or
    not an 834) is taken as one set.
    """
    sets = int(delivery.member_counts.get("transaction_sets", 1))
    if sets <= 1:
        return frozenset({delivery.st02})
    from carrierfeeds.x12.envelope import ControlNumbers
    from carrierfeeds.x12.render import set_numbers  # numpy/pandas-heavy: only for split files

    control = ControlNumbers(isa13=delivery.isa13, gs06=delivery.gs06, st02=delivery.st02)
    return frozenset(int(n) for n in set_numbers(control, sets))


def match_acks(ledger: Ledger, acks: AckFile) -> list[tuple[AckRow, DeliveryRecord | None]]:
    """One ledger row per TA1 and per 999 group, each with the delivery it acknowledges (or None).

    The acknowledgment's ISA06 (the carrier) is our receiver id and its ISA08 our sender id. A TA1
    matches by TA101 = our ISA13; a 999 group by AK102 = our GS06, and every AK202 in it must be the
    ST02 of one of that file's transaction sets (:func:`delivery_set_numbers`).
    """
    out: list[tuple[AckRow, DeliveryRecord | None]] = []
    unit = 0
    for ic in acks.interchanges:
        ours, theirs = ic.receiver_id, ic.sender_id
        for ta1 in ic.ta1s:
            found = ledger.find_delivery_by_control(sender_id=ours, receiver_id=theirs,
                                                    isa13=ta1.control_number)
            out.append((_ta1_row(unit, ta1, theirs, ours, found), found))
            unit += 1
        for ack in ic.acks:
            numbers = {ts.control_number for ts in ack.transaction_sets}
            # By GS06 alone: a split file's sets are 0001..N, so no one AK202 names the delivery.
            found = ledger.find_delivery_by_control(sender_id=ours, receiver_id=theirs,
                                                    gs06=ack.group_control_number)
            if found is not None and not numbers <= delivery_set_numbers(found):
                found = None
            out.append((_group_row(unit, ack, theirs, ours, found), found))
            unit += 1
    return out


def alert_for(row: AckRow, found: DeliveryRecord | None, *, source_id: str, file_name: str,
               sha: str) -> Alert | None:
    where: dict[str, Any] = dict(source_id=source_id, file_name=file_name, file_sha256=sha,
                 delivery_id=row.delivery_id, feed_id=found.feed_id if found else None, isa13=row.isa13,
                 control_number=row.control_number, errors=describe_codes(row.codes))
    what = f"{row.kind} for control number {row.control_number}"
    if found is None:
        return Alert(kind="unmatched", severity="error",
                     message=f"{what} from {row.sender_id} to {row.receiver_id} matches no delivery", **where)
    if row.status in BLOCKING_STATUSES:
        rejected = sorted({int(c["st02"]) for c in row.codes if "ik501" in c and c["ik501"] not in ("A", "E")})
        return Alert(kind=row.status, severity="error",
                     message=f"{what} (feed {found.feed_id}, ISA13 {found.isa13}): {row.status}; "
                             f"{row.sets_rejected} set(s) rejected"
                             + (f" (ST02 {', '.join(f'{n:04d}' for n in rejected)})" if rejected else "")
                             + f", {row.segment_errors} segment error(s), {row.element_errors} element error(s)",
                     **where)
    if row.status == "accepted_with_errors":
        return Alert(kind=row.status, severity="warning",
                     message=f"{what} (feed {found.feed_id}, ISA13 {found.isa13}): accepted with "
                             f"{row.segment_errors} segment error(s)", **where)
    return None
