"""Collect each acknowledgment file once (fetch, decrypt, read, match, record, alert); poll every carrier.

A file is processed once, by the sha256 of its bytes as received: the ledger records all its rows in
one transaction or none. A file that cannot be decrypted is not recorded (an alert is raised and the
next poll tries again, after ops fix the key); a file that decrypts but holds no readable TA1/999 is
recorded as ``unreadable`` (its bytes will not change). An acknowledgment that matches no delivery is
recorded with no delivery id and alerted, never dropped. Kept copies of plaintext acknowledgments have
IK404/CTX01 emptied.

A file over a byte cap (:class:`~carrierfeeds.acknowledgments.inbox.AckLimits`) is set aside: never
parsed, so nothing of it is applied; recorded once as an audit event (``ack_file_set_aside``) and
alerted on every poll until ops remove it or raise the cap. Files past the per-poll cap wait for the
next poll (``deferred``, one warning). The rest of the poll goes on either way.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from carrierfeeds.acknowledgments.alerts import Alert, emit_alert
from carrierfeeds.acknowledgments.inbox import (
    AckInbox,
    AckLimits,
    CarrierAcks,
    carrier_ack_settings,
    create_private,
    feeds_without_source,
    open_inbox,
)
from carrierfeeds.acknowledgments.match import alert_for, match_acks
from carrierfeeds.acknowledgments.snapshots import ACK_ACTOR, REVERT_LOOKBACK, revert_rejected_snapshots
from carrierfeeds.acknowledgments.status import DeliveryAckStatus, ack_status, overdue_alerts
from carrierfeeds.errors import (
    CarrierFeedsError,
    ConfigError,
    DataError,
    KeyRefused,
    PermanentError,
    TransientError,
)
from carrierfeeds.hardening import loggable
from carrierfeeds.ledger.records import AckRow, scrub_detail
from carrierfeeds.x12.ack_reader import read_acks, redact_acks

if TYPE_CHECKING:
    from carrierfeeds.changes import SnapshotStore
    from carrierfeeds.credentials import Connections
    from carrierfeeds.crypto import Keyring
    from carrierfeeds.ledger import DeliveryRecord, Ledger
    from carrierfeeds.settings import Settings

log = logging.getLogger(__name__)

SET_ASIDE = "ack_file_set_aside"
#: DataError rules that set a file aside (over a byte cap) rather than record it as unreadable.
_OVER_CAP = {"too_large": "max_file_bytes", "decompressed_too_large": "max_decompressed_bytes"}
#: The default caps (frozen, so one instance serves every call).
_DEFAULT_LIMITS = AckLimits()


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
    with os.fdopen(create_private(tmp), "wb") as fh:
        fh.write(data)
    tmp.replace(target)


def collect_acks(ledger: Ledger, inbox: AckInbox, *, source_id: str, now: datetime,
                 encrypted: bool = False, keyring: Keyring | None = None, require_signer: str | None = None,
                 archive_dir: Path | None = None, snapshots: SnapshotStore | None = None,
                 limits: AckLimits = _DEFAULT_LIMITS) -> CollectReport:
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
        alert = alert_for(row, found, source_id=source_id, file_name=name, sha=sha)
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


def poll_acks(settings: Settings, *, now: datetime, ledger: Ledger | None = None,
              carriers: Sequence[CarrierAcks] | None = None, feed_ids: Collection[str] | None = None,
              connections: Connections | None = None) -> PollResult:
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
            report = collect_acks(ledger, open_inbox(settings, carrier.spec, connections),
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
             connections: Connections | None = None) -> dict[str, Any]:
    """The housekeeping DAG's task: :func:`poll_acks`, returning counts only (XCom carries no more).

    Raises TransientError when every problem was a source that could not be read (Airflow retries),
    AcksNeedAttention when any other error alert was raised.
    """
    result = poll_acks(settings, now=now, ledger=ledger, connections=connections)
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
