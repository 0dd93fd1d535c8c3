"""Carriers' TA1/999 acknowledgments: collect each file once, match it to its delivery, record, alert.

    collect_acks(ledger, inbox, ...)   one source: list, fetch, decrypt, read, match, record, alert
    match_acks(ledger, ack_file)       AckFile -> ledger rows (delivery matched by control numbers)
    ack_status(ledger, now=...)        every delivered file: accepted / rejected / awaiting / overdue
    poll_acks(settings, now=...)       every configured carrier, then the overdue check (CLI, Airflow)
    revert_rejected_snapshots(...)     a rejected change file's snapshot goes back to the one before it

A file is processed once, by the sha256 of its bytes as received: the ledger records all its rows in
one transaction or none. A file that cannot be decrypted is not recorded (an alert is raised and the
next poll tries again, after ops fix the key); a file that decrypts but holds no readable TA1/999 is
recorded as ``unreadable`` (its bytes will not change). An acknowledgment that matches no delivery is
recorded with no delivery id and alerted, never dropped. Alerts and log lines hold ids, control
numbers, positions and codes only; kept copies of plaintext acknowledgments have IK404/CTX01 emptied.

A rejecting TA1 or a rejected / partially accepted 999 for a changes-mode delivery whose run advanced
the feed's snapshot puts back the snapshot from before that run (audit event ``snapshot_reverted``), so
the next run diffs against what the carrier holds and sends those changes again. With one transaction
set per interchange a partial acceptance rejects the whole set, so it reverts the whole run too.

A file split into several transaction sets (``max_members_per_transaction``) is matched by GS06 and
its sets' ST02s 0001..N (the deliver stage records how many). The snapshot is one per feed run, not
per set, so a partial acceptance (some sets rejected) still reverts the whole run: the next run resends
the changes of the accepted sets as well as the rejected ones. The alert names the rejected sets'
ST02s so ops can tell the carrier which sets to expect again.

Intake is capped per source (the mapping's ``acks`` spec, :class:`AckLimits`): bytes per file as
received, bytes of an encrypted file's plaintext (OpenPGP compresses), and new files per poll. A file over
a byte cap is set aside: never parsed, so nothing of it is applied; recorded once as an audit event
(``ack_file_set_aside``) and alerted on every poll until ops remove it or raise the cap. Files past the
per-poll cap wait for the next poll (``deferred``, one warning). The rest of the poll goes on either way.

Only files a carrier can acknowledge are awaited: a manual hand-off (delivery kind ``manual``) and a
feed whose mapping names no ``acks`` source are ``not_expected``, never ``overdue`` (ops cannot
collect what is never configured). An acknowledgment that does arrive for them still counts.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import re
import stat as stat_mod
import tempfile
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from carrierfeeds.config import AckSpec, LocalAckSource
from carrierfeeds.errors import (
    CarrierFeedsError,
    ConfigError,
    DataError,
    KeyRefused,
    PermanentError,
    TransientError,
)
from carrierfeeds.hardening import loggable
from carrierfeeds.ledger.records import DELIVERED_STATUSES, scrub_detail
from carrierfeeds.ledger.store import AckRecord, AckRow
from carrierfeeds.transport.base import check_remote_name
from carrierfeeds.transport.sftp import SftpTransport
from carrierfeeds.x12.acks import (
    Ack999,
    AckFile,
    GroupAckCode,
    InterchangeAckCode,
    Ta1,
    TransactionSetAck,
    read_acks,
    redact_acks,
)

if TYPE_CHECKING:
    from carrierfeeds.changes import SnapshotStore
    from carrierfeeds.credentials import SftpEndpoint
    from carrierfeeds.crypto import Keyring
    from carrierfeeds.ledger import DeliveryRecord, Ledger
    from carrierfeeds.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_WINDOW = timedelta(hours=24)
#: Bigger than any real acknowledgment; a file past it is not read into memory.
MAX_ACK_BYTES = 64 * 1024 * 1024
#: New files read from one source in one poll, by default; the rest wait for the next poll.
MAX_ACK_FILES = 500
SET_ASIDE = "ack_file_set_aside"
#: DataError rules that set a file aside (over a byte cap) rather than record it as unreadable.
_OVER_CAP = {"too_large": "max_file_bytes", "decompressed_too_large": "max_decompressed_bytes"}
_CHUNK = 1 << 20


@dataclass(frozen=True)
class AckLimits:
    """Caps on one poll of one source (from the mapping's ``acks`` spec; see the module docstring)."""

    max_file_bytes: int = MAX_ACK_BYTES
    max_decompressed_bytes: int = MAX_ACK_BYTES
    max_files_per_poll: int = MAX_ACK_FILES

    @classmethod
    def of(cls, spec: AckSpec) -> AckLimits:
        return cls(max_file_bytes=spec.max_file_bytes, max_decompressed_bytes=spec.max_decompressed_bytes,
                   max_files_per_poll=spec.max_files_per_poll)

AckStatus = Literal["accepted", "accepted_with_errors", "rejected", "partial", "unreadable"]
_TA1_STATUS: dict[InterchangeAckCode, AckStatus] = {
    InterchangeAckCode.ACCEPTED: "accepted",
    InterchangeAckCode.ACCEPTED_WITH_ERRORS: "accepted_with_errors",
    InterchangeAckCode.REJECTED: "rejected",
}
_GROUP_STATUS: dict[GroupAckCode, AckStatus] = {
    GroupAckCode.ACCEPTED: "accepted",
    GroupAckCode.ACCEPTED_WITH_ERRORS: "accepted_with_errors",
    GroupAckCode.PARTIALLY_ACCEPTED: "partial",
}
#: Acknowledgment statuses after which the delivered file's content must not become the baseline.
BLOCKING_STATUSES = frozenset({"rejected", "partial"})
#: How far back a poll looks for rejections whose snapshot revert is still to do (a crash mid-revert,
#: a store that could not be read): beyond it a later run has long advanced past the rejected one.
REVERT_LOOKBACK = timedelta(days=30)
#: Audit actions recording that a rejection's snapshot was dealt with (each delivery once).
SNAPSHOT_REVERTED, SNAPSHOT_REVERT_REFUSED = "snapshot_reverted", "snapshot_revert_refused"
ACK_ACTOR = "carrierfeeds-acks"


# ------------------------------------------------------------------------------------------- inboxes
class AckInbox(Protocol):
    """Where acknowledgment files are picked up: list plain file names, fetch one into a local path."""

    def list_names(self) -> list[str]: ...

    def fetch(self, name: str, dst: Path, *, max_bytes: int = MAX_ACK_BYTES) -> None:
        """Copy ``name`` to ``dst``; DataError (rule ``too_large``) past ``max_bytes``, counted as read."""
        ...


def _too_large(name: str, max_bytes: int, size: int | None = None) -> DataError:
    return DataError(f"acknowledgment file is larger than the {max_bytes}-byte cap", file=name, rule="too_large",
                     details={"max_bytes": max_bytes, "bytes": size})


def _copy_capped(read: Callable[[int], bytes], out: Any, *, name: str, max_bytes: int) -> None:
    """Copy through ``read`` until it returns b""; a size or length header can lie, so bytes are counted."""
    total = 0
    while chunk := read(_CHUNK):
        total += len(chunk)
        if total > max_bytes:
            raise _too_large(name, max_bytes)
        out.write(chunk)


def _wanted(name: str, pattern: str) -> bool:
    # Leading dots are temp files (ours and most carriers' upload conventions): never half a file.
    return not name.startswith(".") and not name.endswith(".part") and fnmatch.fnmatchcase(name, pattern)


def _private_file(dst: Path) -> int:
    dst.unlink(missing_ok=True)
    return os.open(dst, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)


class LocalAckInbox:
    """A local folder; files are read, never moved or deleted (the ledger remembers what was read)."""

    def __init__(self, folder: Path, pattern: str = "*") -> None:
        self.folder = Path(folder)
        self.pattern = pattern

    def list_names(self) -> list[str]:
        if not self.folder.is_dir():
            raise ConfigError("acknowledgment folder does not exist", file=str(self.folder))
        return sorted(p.name for p in self.folder.iterdir() if p.is_file() and _wanted(p.name, self.pattern))

    def fetch(self, name: str, dst: Path, *, max_bytes: int = MAX_ACK_BYTES) -> None:
        check_remote_name(name)
        try:
            # Opened once, never through a link, and checked on the descriptor that is read.
            fd = os.open(self.folder / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as fh:
                st = os.fstat(fh.fileno())
                if not stat_mod.S_ISREG(st.st_mode):
                    raise PermanentError(f"cannot read {name}: not a regular file")
                if st.st_size > max_bytes:
                    raise _too_large(name, max_bytes, st.st_size)
                os.set_blocking(fh.fileno(), True)
                with os.fdopen(_private_file(dst), "wb") as out:
                    _copy_capped(fh.read, out, name=name, max_bytes=max_bytes)
        except OSError as exc:
            dst.unlink(missing_ok=True)
            raise PermanentError(f"cannot read {name}: {exc.strerror}", details={"errno": exc.errno}) from None
        except CarrierFeedsError:
            dst.unlink(missing_ok=True)
            raise


class SftpAckInbox(SftpTransport):
    """The carrier's SFTP response folder: same pinned host key check and retries as delivery."""

    def __init__(self, endpoint: SftpEndpoint, remote_dir: str, pattern: str = "*", **kwargs: Any) -> None:
        super().__init__(endpoint, remote_dir, **kwargs)
        self.pattern = pattern

    def list_names(self) -> list[str]:
        def op(session: Any) -> list[str]:
            return sorted(a.filename for a in session.sftp.listdir_attr(self.remote_dir)
                          if a.st_mode is not None and stat_mod.S_ISREG(a.st_mode)
                          and _wanted(a.filename, self.pattern))

        names, _ = self._with_retries(f"list {self.remote_dir}", op)
        return names

    def fetch(self, name: str, dst: Path, *, max_bytes: int = MAX_ACK_BYTES) -> None:
        check_remote_name(name)

        def op(session: Any) -> None:
            path = self._path(name)
            size = int(session.sftp.stat(path).st_size or 0)
            if size > max_bytes:
                raise _too_large(name, max_bytes, size)
            try:
                with os.fdopen(_private_file(dst), "wb") as out, session.sftp.open(path, "rb") as fh:
                    if size:
                        fh.prefetch(size)  # pipelined reads up to the listed size; anything past it is counted too
                    _copy_capped(fh.read, out, name=name, max_bytes=max_bytes)
            except DataError:
                dst.unlink(missing_ok=True)
                raise

        self._with_retries(f"fetch {name}", op)


# -------------------------------------------------------------------------------------------- alerts
@dataclass(frozen=True)
class Alert:
    """Something ops must look at, PHI-free: ``kind`` is rejected, partial, accepted_with_errors,
    unmatched, unreadable, undecryptable, fetch_failed, record_failed, overdue, set_aside (a file over a
    byte cap, not read), deferred (warning: files past the per-poll cap wait), snapshot_reverted
    (warning: the next run resends the rejected changes), snapshot_superseded (error: a later run
    already advanced past the rejected one; send a full file) or snapshot_revert_failed (error: the
    store could not be read; retried next poll); ``errors`` are positions and codes (each with its
    meaning in words)."""

    kind: str
    severity: Literal["error", "warning"]
    message: str
    source_id: str | None = None
    file_name: str | None = None
    file_sha256: str | None = None
    delivery_id: str | None = None
    feed_id: str | None = None
    isa13: int | None = None
    control_number: int | None = None
    errors: tuple[Mapping[str, Any], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["errors"] = [dict(e) for e in self.errors]
        return data


def emit_alert(alert: Alert) -> Alert:
    """Log the alert as one structured line (JSON of ids, positions and codes) and return it."""
    level = logging.ERROR if alert.severity == "error" else logging.WARNING
    log.log(level, "ack alert %s: %s", alert.kind, json.dumps(alert.as_dict(), sort_keys=True, default=str),
            extra={"carrierfeeds_alert": alert.as_dict()})
    return alert


# ------------------------------------------------------------------------------------------ matching
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
    from carrierfeeds.x12 import acks as x

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
    status = _GROUP_STATUS.get(ack.status, "rejected")
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
    (0001..N), one set carries the ledger's ST02. A delivery recorded without the count (before it was
    kept, or not an 834) is taken as one set.
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


def _alert_for(row: AckRow, found: DeliveryRecord | None, *, source_id: str, file_name: str,
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


# ------------------------------------------------------------------------------------------ collecting
@dataclass(frozen=True)
class FileOutcome:
    """What became of one file: ``recorded`` (rows written), ``duplicate`` (seen before), ``failed``
    (not recorded; retried next time), ``set_aside`` (over a byte cap: not read; alerted until removed)
    or ``deferred`` (past the per-poll cap: read next poll); the ledger rows written and why it failed
    or was set aside (an error code or rule)."""

    file_name: str
    file_sha256: str | None
    outcome: Literal["recorded", "duplicate", "failed", "set_aside", "deferred"]
    rows: tuple[AckRow, ...] = ()
    error_code: str | None = None


@dataclass(frozen=True)
class CollectReport:
    """One source's poll: each file's outcome and every alert raised."""

    source_id: str
    files: tuple[FileOutcome, ...]
    alerts: tuple[Alert, ...]

    def count(self, outcome: str) -> int:
        return sum(f.outcome == outcome for f in self.files)

    def as_dict(self) -> dict[str, Any]:
        return {"source_id": self.source_id, "recorded": self.count("recorded"),
                "duplicate": self.count("duplicate"), "failed": self.count("failed"),
                "set_aside": self.count("set_aside"), "deferred": self.count("deferred"),
                "files": [{"file_name": f.file_name, "file_sha256": f.file_sha256, "outcome": f.outcome,
                           "error_code": f.error_code,
                           "acknowledgments": [{"kind": r.kind, "status": r.status,
                                                "control_number": r.control_number,
                                                "delivery_id": r.delivery_id} for r in f.rows]}
                          for f in self.files],
                "alerts": [a.as_dict() for a in self.alerts]}


def _archive(archive_dir: Path | None, source_id: str, sha: str, data: bytes, suffix: str) -> None:
    if archive_dir is None:
        return
    folder = archive_dir / source_id
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = folder / f"{sha}{suffix}"
    if target.exists():
        return
    tmp = folder / f".{sha}.tmp"
    with os.fdopen(_private_file(tmp), "wb") as fh:
        fh.write(data)
    tmp.replace(target)


def collect_acks(ledger: Ledger, inbox: AckInbox, *, source_id: str, now: datetime,
                 encrypted: bool = False, keyring: Keyring | None = None, require_signer: str | None = None,
                 archive_dir: Path | None = None, snapshots: SnapshotStore | None = None,
                 limits: AckLimits = AckLimits()) -> CollectReport:
    """Read every new acknowledgment file in ``inbox`` once: record its rows, raise its alerts.

    ``encrypted``: every file must decrypt with ``keyring`` (and carry ``require_signer``'s valid
    signature when given); a plaintext file is then refused like any undecryptable one. Kept copies go
    to ``archive_dir/<source_id>/<sha256>``: ciphertext as received, or plaintext with IK404/CTX01
    emptied. ``snapshots``: the feeds' snapshot store; when given, rejections received in the last
    :data:`REVERT_LOOKBACK` are passed to :func:`revert_rejected_snapshots` and its alerts added.
    ``limits``: the intake caps (module docstring). Raises only when the inbox itself cannot be listed.
    """
    if encrypted and keyring is None:
        raise ConfigError("acknowledgments are encrypted but no keyring was given", field="acks.encrypted")
    files: list[FileOutcome] = []
    alerts: list[Alert] = []
    names = inbox.list_names()
    read = 0
    with tempfile.TemporaryDirectory(prefix="cf-acks-") as tmp:
        work = Path(tmp)
        for name in names:
            if loggable(name) != name:
                # A name with control characters is never fetched, and only ever shown escaped.
                shown = loggable(name)
                files.append(FileOutcome(shown, None, "failed", error_code="unsafe_name"))
                alerts.append(emit_alert(Alert(kind="fetch_failed", severity="error", source_id=source_id,
                                               file_name=shown, message=f"{shown}: a file name with control "
                                               "characters is not read; rename it")))
                continue
            if read >= limits.max_files_per_poll:
                files.append(FileOutcome(name, None, "deferred"))
                continue
            try:
                outcome, new_alerts = _collect_one(ledger, inbox, name, work, source_id=source_id, now=now,
                                                   encrypted=encrypted, keyring=keyring,
                                                   require_signer=require_signer, archive_dir=archive_dir,
                                                   limits=limits)
            except CarrierFeedsError as exc:
                # One bad file (a ledger refusal, a vanished file) must not hide the others.
                outcome = FileOutcome(name, None, "failed", error_code=exc.code)
                new_alerts = [Alert(kind="record_failed", severity="error", source_id=source_id, file_name=name,
                                    message=f"{name} could not be recorded ({exc.code}); it will be retried")]
            files.append(outcome)
            alerts.extend(emit_alert(a) for a in new_alerts)
            # Files seen before do not count: a folder that keeps old files must not starve new ones.
            read += outcome.outcome != "duplicate"
    deferred = sum(f.outcome == "deferred" for f in files)
    if deferred:
        alerts.append(emit_alert(Alert(
            kind="deferred", severity="warning", source_id=source_id,
            message=f"{deferred} file(s) left for the next poll: {limits.max_files_per_poll} new file(s) "
                    "is this source's per-poll cap (acks.max_files_per_poll)")))
    if snapshots is not None:
        alerts.extend(revert_rejected_snapshots(ledger, snapshots, now=now, since=now - REVERT_LOOKBACK))
    report = CollectReport(source_id=source_id, files=tuple(files), alerts=tuple(alerts))
    log.info("acks from %s: %d file(s): %d recorded, %d duplicate, %d failed; %d alert(s)", source_id,
             len(files), report.count("recorded"), report.count("duplicate"), report.count("failed"),
             len(alerts))
    return report


def _collect_one(ledger: Ledger, inbox: AckInbox, name: str, work: Path, *, source_id: str, now: datetime,
                 encrypted: bool, keyring: Keyring | None, require_signer: str | None,
                 archive_dir: Path | None, limits: AckLimits) -> tuple[FileOutcome, list[Alert]]:
    raw_path = work / "received"
    plain_path = work / "plain"
    try:
        try:
            inbox.fetch(name, raw_path, max_bytes=limits.max_file_bytes)
        except DataError as exc:
            if exc.rule not in _OVER_CAP:
                raise
            return _set_aside(ledger, source_id, name, None, exc, now=now)
        except CarrierFeedsError as exc:
            return (FileOutcome(name, None, "failed", error_code=exc.code),
                    [Alert(kind="fetch_failed", severity="error", source_id=source_id, file_name=name,
                           message=f"could not fetch {name}: {exc.code}")])
        raw = raw_path.read_bytes()
        sha = hashlib.sha256(raw).hexdigest()
        if ledger.ack_file_seen(sha):
            return FileOutcome(name, sha, "duplicate"), []
        if encrypted:
            if keyring is None:  # collect_acks checks this; kept for the type checker
                raise ConfigError("acknowledgments are encrypted but no keyring was given")
            try:
                keyring.decrypt_file(raw_path, plain_path, require_signer=require_signer,
                                     max_output=limits.max_decompressed_bytes)
            except DataError as exc:
                if exc.rule not in _OVER_CAP:
                    raise
                return _set_aside(ledger, source_id, name, sha, exc, now=now)
            except KeyRefused as exc:
                return (FileOutcome(name, sha, "failed", error_code=exc.code),
                        [Alert(kind="undecryptable", severity="error", source_id=source_id, file_name=name,
                               file_sha256=sha, message=f"{name} could not be decrypted or its signature "
                               f"is not the carrier's ({exc.code}); it will be retried")])
            plain = plain_path.read_bytes()
        else:
            plain = raw
        rows: list[AckRow]
        found_for: list[DeliveryRecord | None]
        try:
            matched = match_acks(ledger, read_acks(plain))
            rows, found_for = [r for r, _ in matched], [f for _, f in matched]
        except DataError as exc:
            where = {k: v for k, v in exc.details.items() if k in ("segment_position", "element")}
            rule = exc.rule if exc.rule and re.fullmatch(r"[a-z_]{1,40}", exc.rule) else "unreadable"
            rows = [AckRow(unit=0, kind="unreadable", status="unreadable", codes=({"rule": rule, **where},))]
            found_for = [None]
        _archive(archive_dir, source_id, sha, raw if encrypted else (redact_acks(plain) or b""),
                 ".pgp" if encrypted else ".x12")
        if not ledger.record_acknowledgments(file_sha256=sha, source_id=source_id, file_name=name, rows=rows,
                                             now=now):
            return FileOutcome(name, sha, "duplicate"), []
    finally:
        raw_path.unlink(missing_ok=True)
        plain_path.unlink(missing_ok=True)
    alerts = []
    for row, found in zip(rows, found_for, strict=True):
        log.info("ack %s from %s: %s %s control %s -> delivery %s", sha[:12], source_id, row.kind, row.status,
                 row.control_number, row.delivery_id or "none")
        if row.kind == "unreadable":
            alerts.append(Alert(kind="unreadable", severity="error", source_id=source_id, file_name=name,
                                file_sha256=sha, errors=tuple(row.codes),
                                message=f"{name} holds no readable TA1 or 999; kept and recorded"))
            continue
        alert = _alert_for(row, found, source_id=source_id, file_name=name, sha=sha)
        if alert is not None:
            alerts.append(alert)
    return FileOutcome(name, sha, "recorded", rows=tuple(rows)), alerts


def _set_aside(ledger: Ledger, source_id: str, name: str, sha: str | None, exc: DataError, *,
               now: datetime) -> tuple[FileOutcome, list[Alert]]:
    """A file over a byte cap: not parsed, recorded once (an audit event), alerted on every poll."""
    rule = str(exc.rule)
    limit = exc.details.get("max_bytes")
    object_id = sha or hashlib.sha256(f"{source_id}/{name}".encode()).hexdigest()
    if not ledger.audit_events(action=SET_ASIDE, object_type="ack_file", object_ids=[object_id]):
        ledger.audit(actor=ACK_ACTOR, action=SET_ASIDE, object_type="ack_file", object_id=object_id, now=now,
                     reason=f"over the acknowledgment cap ({rule}); not read",
                     # a carrier's file name may not be a ledger token (spaces): then it is left out
                     detail=scrub_detail({"source_id": source_id, "file_name": name, "rule": rule,
                                          "max_bytes": limit, "bytes": exc.details.get("bytes")}))
    return (FileOutcome(name, sha, "set_aside", error_code=rule),
            [Alert(kind="set_aside", severity="error", source_id=source_id, file_name=name, file_sha256=sha,
                   errors=({"rule": rule, "max_bytes": limit},),
                   message=f"{name} is over this source's cap of {limit} bytes (acks.{_OVER_CAP[rule]}); set "
                           "aside unread: remove it or raise the cap")])


# ------------------------------------------------------------------------------------ status, overdue
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


def feeds_without_source(carriers: Iterable[CarrierAcks]) -> frozenset[str]:
    """Feed ids whose carrier mapping names no acknowledgment source."""
    return frozenset(f for c in carriers if c.spec is None for f in c.feed_ids)


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
    hand-offs and the feeds in ``no_source`` (see :func:`feeds_without_source`) are never overdue."""
    deliveries = [d for d in ledger.deliveries(feed_id=feed_id, since=since) if d.status in DELIVERED_STATUSES]
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
        alert = _revert_one(ledger, snapshots, found, now=now, actor=actor)
        if alert is not None:
            alerts.append(emit_alert(alert))
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


def ack_infos(ledger: Ledger, delivery_ids: Collection[str] | None = None) -> dict[str, Any]:
    """delivery id -> :class:`carrierfeeds.audit.AckInfo` (latest 999, else latest TA1) for auditors."""
    from carrierfeeds.audit import AckInfo

    latest: dict[str, AckRecord] = {}
    for r in ledger.acknowledgments(delivery_ids=delivery_ids, matched=True):
        current = latest.get(str(r.delivery_id))
        if current is None or r.kind == "999" or current.kind != "999":
            latest[str(r.delivery_id)] = r
    return {k: AckInfo(delivery_id=k, status=r.status, received_at=r.received_at) for k, r in latest.items()}


# ---------------------------------------------------------------------------------------- polling
@dataclass(frozen=True)
class PollResult:
    """Every source polled, the overdue deliveries and all alerts (collect's and overdue ones)."""

    reports: tuple[CollectReport, ...]
    overdue: tuple[DeliveryAckStatus, ...]
    alerts: tuple[Alert, ...]
    skipped: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return {"sources": [r.as_dict() for r in self.reports], "overdue": [s.as_dict() for s in self.overdue],
                "alerts": [a.as_dict() for a in self.alerts], "skipped": list(self.skipped)}


@dataclass(frozen=True)
class CarrierAcks:
    """One carrier's acknowledgment settings, gathered from its mapping and the feeds that use it."""

    source_id: str
    spec: AckSpec | None
    window: timedelta
    feed_ids: tuple[str, ...]


def carrier_ack_settings(settings: Settings, feed_ids: Collection[str] | None = None) -> list[CarrierAcks]:
    """Per carrier mapping: its ``acks`` spec and window (read from the mapping when it has the
    proposed ``acks`` / ``ack_window_hours`` fields; None and 24 h otherwise) and its feeds."""
    from carrierfeeds.config import load_feed
    from carrierfeeds.settings import bundle_from_feed, feed_paths

    grouped: dict[str, tuple[Any, list[str]]] = {}
    for path in feed_paths(settings):
        feed = load_feed(path)
        if feed_ids is not None and feed.feed_id not in feed_ids:
            continue
        bundle = bundle_from_feed(settings, feed, path)
        grouped.setdefault(bundle.mapping.mapping_id, (bundle.mapping, []))[1].append(feed.feed_id)
    out = []
    for mapping_id, (mapping, feeds) in sorted(grouped.items()):
        spec = mapping.acks
        hours = mapping.ack_window_hours
        out.append(CarrierAcks(source_id=mapping_id, spec=spec, window=timedelta(hours=hours),
                               feed_ids=tuple(feeds)))
    return out


def open_inbox(settings: Settings, spec: AckSpec,
               endpoint_for: Callable[[str], SftpEndpoint] | None = None) -> AckInbox:
    """The inbox a spec names; SFTP credentials from ``endpoint_for`` (Airflow) or the keys directory."""
    source = spec.source
    if isinstance(source, LocalAckSource):
        return LocalAckInbox(settings.data_dir / source.path, source.pattern)
    from carrierfeeds.credentials import load_sftp_endpoint

    endpoint = (endpoint_for(source.connection_id) if endpoint_for is not None
                else load_sftp_endpoint(settings.resolved_keys_dir, source.connection_id))
    return SftpAckInbox(endpoint, source.remote_dir, source.pattern)


def poll_acks(settings: Settings, *, now: datetime, ledger: Ledger | None = None,
              carriers: Sequence[CarrierAcks] | None = None, feed_ids: Collection[str] | None = None,
              endpoint_for: Callable[[str], SftpEndpoint] | None = None) -> PollResult:
    """Collect from every carrier with an ``acks`` source, then raise an alert per overdue delivery
    (of those carriers only: a carrier with no source, or a manual hand-off, is never overdue).

    A source that cannot be listed (network, host key, config) is reported as an alert and the others
    still run; the housekeeping DAG calls this and fails its task when any alert is an error.
    """
    from carrierfeeds.settings import open_ledger

    ledger = ledger or open_ledger(settings)
    carriers = list(carriers) if carriers is not None else carrier_ack_settings(settings, feed_ids)
    reports: list[CollectReport] = []
    alerts: list[Alert] = []
    skipped: list[str] = []
    keyring: Keyring | None = None
    from carrierfeeds.changes import SnapshotStore

    snapshots = SnapshotStore.for_settings(settings)
    for carrier in carriers:
        if carrier.spec is None:
            skipped.append(carrier.source_id)
            continue
        try:
            if carrier.spec.encrypted and keyring is None:
                from carrierfeeds.crypto import Keyring

                keyring = Keyring(settings.resolved_gnupg_home)
            report = collect_acks(ledger, open_inbox(settings, carrier.spec, endpoint_for),
                                  source_id=carrier.source_id, now=now, encrypted=carrier.spec.encrypted,
                                  keyring=keyring, require_signer=carrier.spec.signer_fingerprint,
                                  archive_dir=settings.data_dir / "acks", snapshots=snapshots,
                                  limits=AckLimits.of(carrier.spec))
        except CarrierFeedsError as exc:
            alerts.append(emit_alert(Alert(kind="fetch_failed", severity="error", source_id=carrier.source_id,
                                           message=f"acknowledgment source {carrier.source_id} could not be "
                                                   f"read: {exc.message[:300]}")))
            continue
        reports.append(report)
        alerts.extend(report.alerts)
    windows = {f: c.window for c in carriers for f in c.feed_ids}
    scope = {f for c in carriers for f in c.feed_ids}
    statuses = [s for s in ack_status(ledger, now=now, windows=windows, no_source=feeds_without_source(carriers))
                if not scope or s.feed_id in scope]
    overdue = [s for s in statuses if s.status == "overdue"]
    alerts.extend(emit_alert(a) for a in overdue_alerts(overdue, now=now))
    return PollResult(reports=tuple(reports), overdue=tuple(overdue), alerts=tuple(alerts),
                      skipped=tuple(skipped))


class AcksNeedAttention(PermanentError):
    """A poll found something ops must act on (a rejection, an unmatched or unreadable file, an overdue
    acknowledgment); ``details`` counts the alerts by kind. Fails the housekeeping task so its
    notifiers fire."""

    code = "acks_need_attention"


def poll_all(settings: Settings, ledger: Ledger, *, now: datetime,
             endpoint_for: Callable[[str], SftpEndpoint] | None = None) -> dict[str, Any]:
    """The housekeeping DAG's task: :func:`poll_acks`, returning counts only (XCom carries no more).

    Raises TransientError when every problem was a source that could not be read (Airflow retries),
    AcksNeedAttention when any other error alert was raised.
    """
    result = poll_acks(settings, now=now, ledger=ledger, endpoint_for=endpoint_for)
    counts: dict[str, Any] = {
        "sources": len(result.reports), "skipped": len(result.skipped),
        "files_recorded": sum(r.count("recorded") for r in result.reports),
        "files_duplicate": sum(r.count("duplicate") for r in result.reports),
        "files_failed": sum(r.count("failed") for r in result.reports),
        "files_set_aside": sum(r.count("set_aside") for r in result.reports),
        "files_deferred": sum(r.count("deferred") for r in result.reports), "overdue": len(result.overdue)}
    errors = [a for a in result.alerts if a.severity == "error"]
    by_kind: dict[str, int] = {}
    for a in errors:
        by_kind[a.kind] = by_kind.get(a.kind, 0) + 1
    if errors and set(by_kind) == {"fetch_failed"}:
        raise TransientError(f"{len(errors)} acknowledgment source(s) could not be read",
                             details={**counts, **{f"alerts_{k}": v for k, v in by_kind.items()}})
    if errors:
        summary = ", ".join(f"{v} {k}" for k, v in sorted(by_kind.items()))
        raise AcksNeedAttention(f"acknowledgments need attention: {summary}",
                                details={**counts, **{f"alerts_{k}": v for k, v in by_kind.items()}})
    return counts
