"""The ledger's values, vocabulary and PHI guard: frozen records, status StrEnums, what rows may hold.

Every status word a ledger row holds is a member of a StrEnum here (run statuses come from
:mod:`carrierfeeds.outcomes`, shared with the CLI and Airflow); the members compare and serialise as
their plain strings, so rows and JSON output read the same words.

The ledger cannot know what a caller means, but it can refuse shapes that are never ids or codes.
``detail`` is a flat mapping of identifier-like keys to numbers, booleans, ``None`` or short tokens
(at most 200 characters from ``A-Z a-z 0-9 _ . : / + = @ , # ~ -``, so no spaces: a person's name or
an address cannot pass). Every string the ledger stores (tokens, messages, reasons) is refused when it
holds control characters or something shaped like a social security number. Refusals name the field,
never the value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from carrierfeeds.errors import PermanentError, Refused
from carrierfeeds.outcomes import FINAL_STATUSES, RunStatus


class StageStatus(StrEnum):
    """A stage event's status (``run_events.status`` where ``kind`` is ``stage``)."""

    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


class RunEventKind(StrEnum):
    """What a ``run_events`` row records: an attempt starting, a stage event, or the run's finish."""

    RUN_ATTEMPT = "run_attempt"
    STAGE = "stage"
    RUN_FINISHED = "run_finished"


class DeliveryStatus(StrEnum):
    """A delivery outcome's status; a delivery's status is its latest outcome's (``pending`` if none)."""

    #: Only the intent exists: never written as an outcome.
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    #: A retry found the file already on the carrier's side (the earlier attempt's upload went through).
    RECONCILED = "reconciled"
    FORCED_RESEND = "forced_resend"
    #: Placed in the manual outbox; ``handed_off`` once a person confirms handing it over.
    PENDING_HANDOFF = "pending_handoff"
    HANDED_OFF = "handed_off"
    #: The upload is complete under its temp name and the rename into place is being asked for (written
    #: just before it): a later attempt that finds neither name knows the carrier took the file.
    RENAME_SENT = "rename_sent"


class AckKind(StrEnum):
    """What an acknowledgment row records: a TA1, one 999 group, or a file with no usable TA1/999."""

    TA1 = "TA1"
    ACK_999 = "999"
    UNREADABLE = "unreadable"


class AckStatus(StrEnum):
    """An acknowledgment row's verdict."""

    ACCEPTED = "accepted"
    ACCEPTED_WITH_ERRORS = "accepted_with_errors"
    REJECTED = "rejected"
    #: A 999 group partly accepted (AK901 P).
    PARTIAL = "partial"
    #: The file held no usable TA1/999.
    UNREADABLE = "unreadable"


class HoldAction(StrEnum):
    """The audit actions that place and lift a legal hold."""

    SET = "legal_hold_set"
    CLEAR = "legal_hold_clear"


class HoldObject(StrEnum):
    """What a legal hold can be placed on."""

    EMPLOYER = "employer"
    FEED = "feed"


def _values(kind: Iterable[StrEnum]) -> frozenset[str]:
    return frozenset(str(member) for member in kind)


#: The statuses ``finish_run`` accepts (``running`` is what a run is until then).
RUN_STATUSES = frozenset(str(s) for s in FINAL_STATUSES)
STAGE_STATUSES = _values(StageStatus)
#: The statuses ``record_delivery_outcome`` accepts.
OUTCOME_STATUSES = _values(DeliveryStatus) - {DeliveryStatus.PENDING}
#: Outcome statuses meaning the file is on the recipient's side.
DELIVERED_STATUSES = _values((DeliveryStatus.DELIVERED, DeliveryStatus.RECONCILED, DeliveryStatus.FORCED_RESEND,
                              DeliveryStatus.HANDED_OFF))
#: Outcome statuses after which the file is with the recipient or in the hand-off outbox: never sent again
#: unless a person forces a resend.
SENT_STATUSES = DELIVERED_STATUSES | {DeliveryStatus.PENDING_HANDOFF.value}
ACK_KINDS = _values(AckKind)
ACK_STATUSES = _values(AckStatus)
HOLD_OBJECT_TYPES = _values(HoldObject)
#: At most this many position/code entries are kept per acknowledgment row; the rest are counted in
#: ``truncated``.
ACK_CODES_MAX = 200
ISA13_MAX = 999_999_999

_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_.]{0,63}")
_TOKEN = re.compile(r"[A-Za-z0-9_.:/+=@,#~-]{0,200}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# Standalone only: hex digests and fingerprints hold digit runs inside longer words and must pass.
_SSN = re.compile(r"(?<![\w-])(?:\d{3}-\d{2}-\d{4}|\d{3} \d{2} \d{4}|\d{9})(?![\w-])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
MESSAGE_MAX = 1000


class LedgerError(PermanentError):
    """The ledger refused a call for good: an unknown id, a status outside its vocabulary."""

    code = "ledger"


class UnknownRecord(LedgerError):
    code = "ledger_unknown_record"


class UnsafeLedgerValue(Refused):
    """A value headed for the ledger looks like member data or is not an id, count or code."""

    code = "ledger_unsafe_value"


def check_text(field: str, value: str | None, *, limit: int = MESSAGE_MAX) -> str | None:
    """A free-text field (message, reason): bounded, printable, no SSN-shaped numbers."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise UnsafeLedgerValue(f"ledger field {field!r} must be text", details={"field": field})
    if len(value) > limit or _CONTROL.search(value) or _SSN.search(value):
        raise UnsafeLedgerValue(f"ledger field {field!r} is too long, holds control characters or an "
                                "SSN-shaped number", details={"field": field})
    return value


def check_token(field: str, value: str | None, *, limit: int = 200, required: bool = True) -> str | None:
    """An id, code, file name, path or fingerprint: printable, bounded, no SSN-shaped numbers."""
    if value is None:
        if required:
            raise UnsafeLedgerValue(f"ledger field {field!r} is required", details={"field": field})
        return None
    if not isinstance(value, str) or not value or len(value) > limit or _CONTROL.search(value) \
            or _SSN.search(value):
        raise UnsafeLedgerValue(f"ledger field {field!r} is not a usable id or code",
                                details={"field": field})
    return value


def check_sha256(field: str, value: str | None, *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise UnsafeLedgerValue(f"ledger field {field!r} must be 64 lowercase hex digits",
                                details={"field": field})
    return value


def check_detail(field: str, detail: Mapping[str, Any] | None, *, ints_only: bool = False) -> dict[str, Any]:
    """A PHI-free detail mapping: flat, identifier keys, scalar values, short tokens for strings."""
    out: dict[str, Any] = {}
    for key, value in (detail or {}).items():
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise UnsafeLedgerValue(f"ledger {field} has a key that is not an identifier",
                                    details={"field": field})
        where = {"field": field, "key": key}
        if ints_only and (isinstance(value, bool) or not isinstance(value, int)):
            raise UnsafeLedgerValue(f"ledger {field}[{key!r}] must be an integer count", details=where)
        if value is None or isinstance(value, bool):
            out[key] = value
        elif isinstance(value, int):
            if abs(value) >= 2**63:
                raise UnsafeLedgerValue(f"ledger {field}[{key!r}] is out of range", details=where)
            out[key] = value
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise UnsafeLedgerValue(f"ledger {field}[{key!r}] is not a finite number", details=where)
            out[key] = value
        elif isinstance(value, str):
            if not _TOKEN.fullmatch(value) or _SSN.search(value):
                raise UnsafeLedgerValue(
                    f"ledger {field}[{key!r}] is not a short id or code (numbers, booleans and tokens of "
                    "at most 200 characters without spaces only)", details=where)
            out[key] = value
        else:
            raise UnsafeLedgerValue(f"ledger {field}[{key!r}] must be a number, boolean, null or short code",
                                    details=where)
    return out


def check_aware(name: str, value: datetime) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise LedgerError(f"{name} must be a timezone-aware datetime", details={"field": name})
    return value


def check_day(name: str, value: date) -> date:
    if isinstance(value, datetime) or not isinstance(value, date):
        raise LedgerError(f"{name} must be a date (not a datetime)", details={"field": name})
    return value


def check_control(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= ISA13_MAX:
        raise LedgerError(f"{name} must be an integer in 1..{ISA13_MAX}", details={"field": name})
    return value


def check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        raise LedgerError(f"{name} must be a non-negative integer", details={"field": name})
    return value


def scrub_detail(detail: Mapping[str, Any] | None) -> dict[str, Any]:
    """The entries of ``detail`` the guard accepts, plus ``redacted`` (how many were dropped) if any.

    For callers recording an error's details on the way out of a failure, where refusing would hide
    the original error: unsafe entries are dropped (by count, never by value) instead of raising.
    """
    kept: dict[str, Any] = {}
    dropped = 0
    for key, value in (detail or {}).items():
        try:
            kept.update(check_detail("detail", {key: value}))
        except UnsafeLedgerValue:
            dropped += 1
    if dropped:
        kept["redacted"] = dropped
    return kept


def check_choice(field: str, value: str, allowed: frozenset[str]) -> str:
    """``value`` as a plain string if it is in the vocabulary ``allowed`` (a StrEnum member passes)."""
    if value not in allowed:
        raise LedgerError(f"{field} {str(value)!r} is not one of {sorted(allowed)}", details={"field": field})
    return str(value)


@dataclass(frozen=True)
class RunRecord:
    """A run of one feed over one data interval; ``status`` is ``running`` until a finish is recorded
    after the latest attempt; ``attempt`` counts ``start_run`` calls; ``started_at`` is the first."""

    run_id: str
    feed_id: str
    interval_start: date
    interval_end: date
    status: str
    attempt: int
    started_at: datetime


@dataclass(frozen=True)
class Interchange:
    """The control numbers of one file of a run: ISA13, GS06 and ST02, and when they were allocated.

    ``resend`` is 0 for the run's first file, n for its n-th forced resend, which names the delivery it
    replaces (``replaces_delivery_id``).
    """

    isa13: int
    gs06: int
    st02: int
    created_at: datetime
    resend: int = 0
    replaces_delivery_id: str | None = None


@dataclass(frozen=True)
class DeliveryRecord:
    """A delivery intent with its latest outcome folded in.

    ``status`` is the latest outcome's status, ``pending`` when only the intent exists. The transfer
    facts (``ciphertext_sha256``, ``size``, ``remote_path``, ``host_key_fingerprint``) come from the
    latest outcome that recorded each; ``updated_at`` is the latest outcome's time (else ``created_at``).
    """

    delivery_id: str
    run_id: str
    feed_id: str
    interval_start: date
    payload_sha256: str
    file_name: str
    isa13: int
    gs06: int
    st02: int
    recipient_fingerprint: str
    member_counts: Mapping[str, int]
    transport: str
    status: str
    ciphertext_sha256: str | None
    size: int | None
    remote_path: str | None
    host_key_fingerprint: str | None
    created_at: datetime
    updated_at: datetime
    #: A forced resend's delivery names the delivery it replaces (ledger table ``resends``).
    replaces_delivery_id: str | None = None


@dataclass(frozen=True)
class RunEvent:
    """One entry in a run's history, in chain order.

    ``kind`` is ``run_attempt`` (``status`` ``started``), ``stage`` (``stage`` named, ``status`` one of
    started/succeeded/failed/skipped) or ``run_finished`` (``status`` the run's final status and
    ``detail`` its counts). ``attempt`` is the run attempt the event belongs to.
    """

    seq: int
    run_id: str
    kind: str
    stage: str | None
    status: str
    attempt: int
    actor: str | None
    detail: Mapping[str, Any]
    error_code: str | None
    message: str | None
    at: datetime


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
    #: The employer's document it rests on (e.g. "MSA-2024-017 §4"); None when the feed names none.
    reference: str | None = None

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
    #: A manual hand-off's ``handed_off`` row: the person at the recipient who took the file.
    received_by: str | None = None


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


__all__ = [
    "ACK_CODES_MAX",
    "ACK_KINDS",
    "ACK_STATUSES",
    "DELIVERED_STATUSES",
    "HOLD_OBJECT_TYPES",
    "ISA13_MAX",
    "OUTCOME_STATUSES",
    "RUN_STATUSES",
    "SENT_STATUSES",
    "STAGE_STATUSES",
    "AckKind",
    "AckRecord",
    "AckRow",
    "AckStatus",
    "AuditEvent",
    "AuthorisationRecord",
    "DeliveryRecord",
    "DeliveryStatus",
    "HoldAction",
    "HoldObject",
    "Interchange",
    "LedgerError",
    "LedgerPurge",
    "LegalHold",
    "OutcomeEvent",
    "PurgeCheckpoint",
    "RunEvent",
    "RunEventKind",
    "RunRecord",
    "RunStatus",
    "StageStatus",
    "UnknownRecord",
    "UnsafeLedgerValue",
    "check_aware",
    "check_choice",
    "check_control",
    "check_count",
    "check_day",
    "check_detail",
    "check_sha256",
    "check_text",
    "check_token",
    "scrub_detail",
]
