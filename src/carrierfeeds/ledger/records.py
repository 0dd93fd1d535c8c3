"""The ledger's values and its PHI guard: frozen records returned to callers, and what rows may hold.

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
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from carrierfeeds.errors import CarrierFeedsError, PermanentError, Refused

RUN_STATUSES = frozenset({"delivered", "handed_off", "rejected", "refused", "failed", "already_delivered",
                          "pending_handoff", "nothing_to_send", "no_new_census"})
STAGE_STATUSES = frozenset({"started", "succeeded", "failed", "skipped"})
#: ``pending_handoff``: placed in the manual outbox; ``handed_off``: a person confirmed handing it over.
#: ``rename_sent``: the upload is complete under its temp name and the rename into place is being asked
#: for (written just before it): a later attempt that finds neither name knows the carrier took the file.
OUTCOME_STATUSES = frozenset({"delivered", "failed", "reconciled", "forced_resend", "pending_handoff",
                              "handed_off", "rename_sent"})
#: Outcome statuses meaning the file is on the recipient's side.
DELIVERED_STATUSES = frozenset({"delivered", "reconciled", "forced_resend", "handed_off"})
#: Outcome statuses after which the file is with the recipient or in the hand-off outbox: never sent again
#: unless a person forces a resend.
SENT_STATUSES = DELIVERED_STATUSES | {"pending_handoff"}
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
    if value not in allowed:
        raise LedgerError(f"{field} {value!r} is not one of {sorted(allowed)}", details={"field": field})
    return value


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


__all__ = [
    "DELIVERED_STATUSES",
    "CarrierFeedsError",
    "DeliveryRecord",
    "Interchange",
    "LedgerError",
    "RunEvent",
    "RunRecord",
    "UnknownRecord",
    "UnsafeLedgerValue",
]
