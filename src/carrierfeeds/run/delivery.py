"""Exactly-once delivery of a run's ciphertext: intent row, upload, outcome row.

Also reconciling a file an interrupted attempt left on the far side, forced resends, the rename marker
and the manual hand-off rows."""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from carrierfeeds.errors import CarrierFeedsError, PermanentError, Refused
from carrierfeeds.ledger import DeliveryRecord
from carrierfeeds.ledger.records import SENT_STATUSES
from carrierfeeds.run.context import RunContext
from carrierfeeds.run.disclosure import staged_disclosure
from carrierfeeds.run.state import DeliveryState, RunState
from carrierfeeds.transport.base import RemoteFile, Transport

log = logging.getLogger(__name__)



def make_transport(ctx: RunContext) -> Transport:
    """The feed's delivery target; credentials through ``ctx.connections``."""
    from carrierfeeds.transport.local import LocalTransport
    from carrierfeeds.transport.manual import ManualTransport
    from carrierfeeds.transport.sftp import SftpTransport

    target = ctx.bundle.feed.delivery
    if target.kind == "sftp":
        return SftpTransport(ctx.connections.sftp_endpoint(target.connection_id), target.remote_dir)
    if target.kind == "manual":
        return ManualTransport(ctx.settings.data_dir / target.outbox)
    return LocalTransport(ctx.settings.data_dir / target.path)


def deliver_once(ctx: RunContext, detail: dict[str, Any], *, transport: Transport | None = None,
                 force_reason: str | None = None) -> dict[str, Any]:
    """The deliver stage's work, inside its ledger record and the run's delivery lock (see
    ``stages.deliver``): intent row, upload (atomic on the far side), outcome row; ``detail`` is the
    stage's PHI-free detail."""
    feed = ctx.bundle.feed
    state = ctx.state()
    built = state.build
    resend = built.resend or 0
    existing = ctx.ledger.find_delivery(feed_id=ctx.feed_id, interval_start=ctx.ref.interval_start,
                                        payload_sha256=built.payload_sha256)
    if existing is not None and existing.status == "forced_resend" and feed.delivery.kind == "manual":
        # A manual resend always ends pending a person; this one was cut off between its two rows.
        _record_pending_handoff(ctx, existing.delivery_id, existing.size, existing.remote_path,
                                "forced resend placed in the outbox; the hand-off row was interrupted")
    same_bytes_again = bool(force_reason) and not resend and existing is not None and \
        existing.status in SENT_STATUSES
    if existing is not None and same_bytes_again and feed.output.format != "flatfile":
        # Fail closed: new control numbers come from the build stage, never from here.
        raise PermanentError("a forced resend goes out under new control numbers: build it with the "
                             "resend reason first", details={"delivery_id": existing.delivery_id})
    if existing is not None and existing.status in SENT_STATUSES and not same_bytes_again:
        # A retry, a rerun, a second worker or an Airflow clear of a delivered file: nothing is sent twice.
        detail.update(already_delivered=True, delivery_id=existing.delivery_id)
        ctx.save_state(delivery=DeliveryState(delivered=True, already_delivered=True, remote_path=existing.remote_path))
        log.info("feed %s interval %s: interchange %s already delivered; not sending again",
                 ctx.feed_id, ctx.ref.interval_start, existing.isa13)
        return {"run_id": ctx.run_id, "already_delivered": True}
    other = ctx.ledger.find_delivery(feed_id=ctx.feed_id, interval_start=ctx.ref.interval_start)
    # A resend's payload differs from the file it replaces by its envelope only (checked by build).
    if not resend and other is not None and other.payload_sha256 != built.payload_sha256 and \
            other.status in SENT_STATUSES:
        raise Refused(
            f"a different file (interchange {other.isa13}) was already delivered for "
            f"{ctx.ref.interval_start}; a changed census belongs to the next interval",
            details={"delivery_id": other.delivery_id, "isa13": other.isa13})
    expected = recorded_ciphertext(ctx, state)
    made = state.encryption
    cipher = ctx.fetch(made.cipher_name)  # its name checked before any row is written
    counts = built.counts
    transaction_sets = state.gate.transaction_sets if state.gate is not None else None
    disclosure = None if existing is not None else staged_disclosure(ctx)
    intent = existing or ctx.ledger.record_delivery_intent(
        run_id=ctx.run_id, feed_id=ctx.feed_id, interval_start=ctx.ref.interval_start,
        payload_sha256=built.payload_sha256, file_name=built.file_name + feed.encryption.suffix,
        isa13=built.isa13, gs06=built.gs06, st02=built.st02,
        recipient_fingerprint=feed.encryption.recipient_fingerprint,
        member_counts={"members": counts["members"],
                       **({k: v for k, v in counts.items() if k.startswith("ins03_")}
                          or {"ins03_030": counts["members"]}),
                       **({"transaction_sets": transaction_sets} if transaction_sets is not None else {})},
        transport=feed.delivery.kind, now=ctx.now(), disclosure=disclosure)
    transport = transport or make_transport(ctx)
    if same_bytes_again:
        return _force_resend(ctx, intent, transport, cipher, str(force_reason), detail)
    remote_name = intent.file_name
    reason = built.resend_reason or force_reason
    audit = {"isa13": intent.isa13, "remote_name": remote_name,
             "replaces_delivery_id": built.replaces_delivery_id}
    if resend:
        ctx.ledger.audit(actor=ctx.actor, action="forced_resend", object_type="delivery",
                         object_id=intent.delivery_id, reason=reason, now=ctx.now(), detail=audit)
    try:
        # One connection for the look and the upload where the transport can keep one open.
        with getattr(transport, "connected", nullcontext)():
            # A crash between the rename on the far side and our outcome row leaves the file there.
            found = transport.stat(remote_name)
            if found is not None:
                return _reconcile(ctx, intent, existing, found, detail, transport)
            collected = _renamed_and_collected(ctx, transport, intent) if existing is not None else None
            if collected is not None:
                return _record_collected(ctx, intent, detail, reason if resend else None, collected)
            receipt = transport.deliver(cipher, remote_name, expect_sha256=expected,
                                         **_rename_marker(ctx, transport, intent))
    except CarrierFeedsError as exc:
        # The ciphertext this attempt sent (or meant to): a later attempt that finds it renamed into
        # place recognises it by this hash (see _require_ours).
        ctx.ledger.record_delivery_outcome(intent.delivery_id, status="failed", now=ctx.now(),
                                           ciphertext_sha256=made.ciphertext_sha256,
                                           error_code=exc.code, message=exc.message[:500])
        if resend:
            ctx.ledger.audit(actor=ctx.actor, action="forced_resend_failed", object_type="delivery",
                             object_id=intent.delivery_id, reason=reason, now=ctx.now(),
                             detail={**audit, "error_code": exc.code})
        raise
    outcome = "forced_resend" if resend else "pending_handoff" if feed.delivery.kind == "manual" else "delivered"
    # Renamed into place, then gone before a lost connection let us look again: the carrier's now.
    unverified = None if getattr(receipt, "verified", True) else \
        "renamed into place and collected by the carrier at once; delivered, not re-verified"
    ctx.ledger.record_delivery_outcome(
        intent.delivery_id, status=outcome, now=ctx.now(),
        ciphertext_sha256=expected, size=receipt.size, remote_path=receipt.remote_path,
        host_key_fingerprint=receipt.host_key_fingerprint, actor=ctx.actor,
        reason=reason if resend else None, message=unverified)
    if resend and feed.delivery.kind == "manual":
        # In the outbox is not with the recipient: the resend waits for a person, like the first copy.
        _record_pending_handoff(ctx, intent.delivery_id, receipt.size, receipt.remote_path,
                                "forced resend placed in the outbox; waiting for a person")
    detail.update(bytes=receipt.size, attempts=receipt.attempts, remote_path=receipt.remote_path,
                  host_key_fingerprint=receipt.host_key_fingerprint,
                  **({"forced": True, "resend": resend} if resend else {}),
                  **({"verified": False} if unverified else {}))
    ctx.save_state(delivery=DeliveryState(delivered=True, remote_path=receipt.remote_path))
    return {"run_id": ctx.run_id, "bytes": receipt.size, **({"forced": True} if resend else {})}


def recorded_ciphertext(ctx: RunContext, state: RunState) -> str:
    """The sha256 of the ciphertext the encrypt stage last recorded in the ledger for this run: what the
    bytes uploaded must hash to (the staging store can be written by others; the ledger is the record).
    Refused when there is none, or when the state names another one."""
    from carrierfeeds.transport.base import CiphertextMismatch

    made = [e for e in ctx.ledger.run_events(ctx.run_id)
            if e.kind == "stage" and e.stage == "encrypt" and e.status == "succeeded"]
    recorded = made[-1].detail.get("ciphertext_sha256") if made else None
    if not isinstance(recorded, str):
        raise CiphertextMismatch("the ledger records no ciphertext for this run; run the encrypt stage",
                                 details={"run_id": ctx.run_id})
    if (state.encrypted.ciphertext_sha256 if state.encrypted else None) != recorded:
        raise CiphertextMismatch("the staged state names a ciphertext the ledger does not record; run the "
                                 "encrypt stage again", details={"run_id": ctx.run_id, "expected_sha256": recorded})
    return recorded


def resend_name(file_name: str, number: int) -> str:
    """The name of the ``number``-th forced resend: ``_resend<n>`` before the extensions, so the ISA13 in
    the name and the carrier's pickup pattern (``*.834.pgp``) still hold."""
    stem, dot, extensions = file_name.partition(".")
    return f"{stem}_resend{number}{dot}{extensions}"


def _force_resend(ctx: RunContext, intent: DeliveryRecord, transport: Transport, cipher: Path, reason: str,
                  detail: dict[str, Any]) -> dict[str, Any]:
    """Send a delivered flat file again because a person said why: the same ciphertext under the next
    ``_resend<n>`` name (a flat file carries no control number in its content, so new numbers would not
    make it a new file; an 834 or PDF resend is built under new control numbers instead, see ``build``).
    The carrier may have moved, renamed or deleted the first copy, and a final name is never overwritten,
    so the resend never depends on what is left under the first name.

    Only this code writes ``_resend<n>`` names, so one already there is this resend, interrupted after
    its rename: recorded, not sent twice. A failure leaves the delivery's recorded status alone (the
    first copy is still with the carrier) and is audited as ``forced_resend_failed``.
    """
    state = ctx.state()
    done = sum(o.status == "forced_resend" for o in ctx.ledger.delivery_outcomes(delivery_ids=[intent.delivery_id]))
    remote_name = resend_name(intent.file_name, done + 1)
    audit = {"isa13": intent.isa13, "remote_name": remote_name}
    try:
        found = transport.stat(remote_name)
        if found is not None:
            _require_ours(ctx, transport, intent, found)
            ctx.ledger.record_delivery_outcome(
                intent.delivery_id, status="forced_resend", now=ctx.now(), size=found.size,
                remote_path=found.name, actor=ctx.actor, reason=reason,
                message="found on the carrier's side after an interrupted forced resend")
            if ctx.bundle.feed.delivery.kind == "manual":
                _record_pending_handoff(ctx, intent.delivery_id, found.size, found.name,
                                        "forced resend found in the outbox; waiting for a person")
            detail.update(reconciled=True, forced=True, bytes=found.size)
            ctx.save_state(delivery=DeliveryState(delivered=True, remote_path=found.name))
            return {"run_id": ctx.run_id, "bytes": found.size, "reconciled": True}
        ctx.ledger.audit(actor=ctx.actor, action="forced_resend", object_type="delivery",
                         object_id=intent.delivery_id, reason=reason, now=ctx.now(), detail=audit)
        receipt = transport.deliver(cipher, remote_name, expect_sha256=recorded_ciphertext(ctx, state))
    except CarrierFeedsError as exc:
        ctx.ledger.audit(actor=ctx.actor, action="forced_resend_failed", object_type="delivery",
                         object_id=intent.delivery_id, reason=reason, now=ctx.now(),
                         detail={**audit, "error_code": exc.code})
        raise
    ctx.ledger.record_delivery_outcome(
        intent.delivery_id, status="forced_resend", now=ctx.now(), ciphertext_sha256=state.encryption.ciphertext_sha256,
        size=receipt.size, remote_path=receipt.remote_path, host_key_fingerprint=receipt.host_key_fingerprint,
        actor=ctx.actor, reason=reason)
    if ctx.bundle.feed.delivery.kind == "manual":
        # In the outbox is not with the recipient: the resend waits for a person, like the first copy.
        _record_pending_handoff(ctx, intent.delivery_id, receipt.size, receipt.remote_path,
                                "forced resend placed in the outbox; waiting for a person")
    detail.update(forced=True, bytes=receipt.size, attempts=receipt.attempts, remote_path=receipt.remote_path,
                  host_key_fingerprint=receipt.host_key_fingerprint)
    ctx.save_state(delivery=DeliveryState(delivered=True, remote_path=receipt.remote_path))
    return {"run_id": ctx.run_id, "bytes": receipt.size, "forced": True}


def _rename_marker(ctx: RunContext, transport: Transport, intent: DeliveryRecord) -> dict[str, Any]:
    """``before_rename`` for a transport that can tell whether its temp file is still there (``temp_exists``,
    see :func:`_renamed_and_collected`): the ledger row ``rename_sent``, written just before each rename
    request, so that a later attempt finding neither name knows where the file went."""
    if not hasattr(transport, "temp_exists"):
        return {}
    cipher_sha256 = ctx.state().encryption.ciphertext_sha256

    def marker() -> None:
        ctx.ledger.record_delivery_outcome(intent.delivery_id, status="rename_sent", now=ctx.now(),
                                           ciphertext_sha256=cipher_sha256, actor=ctx.actor)

    return {"before_rename": marker}


def _renamed_and_collected(ctx: RunContext, transport: Transport, intent: DeliveryRecord) -> str | None:
    """An earlier attempt asked for the rename (``rename_sent``) and neither the final nor the temp name is
    on the server: the rename happened and the carrier took the file; the ciphertext hash that attempt
    recorded. None otherwise: a temp file still there means the rename did not happen, and the upload is
    simply done again."""
    temp_exists = getattr(transport, "temp_exists", None)
    if temp_exists is None:
        return None
    asked = [o for o in ctx.ledger.delivery_outcomes(delivery_ids=[intent.delivery_id]) if o.status == "rename_sent"]
    if not asked or temp_exists(intent.file_name):
        return None
    return str(asked[-1].ciphertext_sha256)


def _record_collected(ctx: RunContext, intent: DeliveryRecord, detail: dict[str, Any], reason: str | None,
                      ciphertext_sha256: str) -> dict[str, Any]:
    """The file an earlier attempt renamed into place is with the carrier: delivered, not re-verified."""
    outcome = "forced_resend" if reason else "delivered"
    ctx.ledger.record_delivery_outcome(
        intent.delivery_id, status=outcome, now=ctx.now(), ciphertext_sha256=ciphertext_sha256,
        actor=ctx.actor, reason=reason,
        message="renamed into place by an earlier attempt and collected by the carrier before it could be "
                "looked at again; delivered, not re-verified")
    log.warning("feed %s interval %s: %s was renamed into place by an earlier attempt and is gone (collected); "
                "recorded as delivered, not re-verified, not sent again", ctx.feed_id, ctx.ref.interval_start,
                intent.file_name)
    detail.update(verified=False, collected=True)
    ctx.save_state(delivery=DeliveryState(delivered=True, remote_path=intent.file_name))
    return {"run_id": ctx.run_id, "collected": True}


def _reconcile(ctx: RunContext, intent: DeliveryRecord, existing: DeliveryRecord | None, found: RemoteFile,
               detail: dict[str, Any],
               transport: Transport) -> dict[str, Any]:
    """The final name is already on the carrier's side: ours from an interrupted run, or a conflict."""
    if existing is None or existing.status not in ("pending", "failed", "rename_sent"):
        raise PermanentError(f"{intent.file_name} already exists on the carrier's side and the ledger has no "
                             "unfinished delivery for it", details={"delivery_id": intent.delivery_id})
    remote_sha256 = _require_ours(ctx, transport, intent, found)
    if ctx.bundle.feed.delivery.kind == "manual":
        # Found in our own outbox means placed, not handed over: it stays on the hand-off list.
        _record_pending_handoff(ctx, intent.delivery_id, found.size, found.name,
                                "found in the outbox after an interrupted run; waiting for a person")
    else:
        ctx.ledger.record_delivery_outcome(intent.delivery_id, status="reconciled", now=ctx.now(),
                                           size=found.size, remote_path=found.name,
                                           ciphertext_sha256=remote_sha256,
                                           message="found on the carrier's side after an interrupted run "
                                                   "(size and sha256 checked)")
    detail.update(reconciled=True, bytes=found.size)
    ctx.save_state(delivery=DeliveryState(delivered=True, remote_path=found.name))
    return {"run_id": ctx.run_id, "bytes": found.size, "reconciled": True}


def _require_ours(ctx: RunContext, transport: Transport, intent: DeliveryRecord, found: RemoteFile) -> str:
    """A file found under our name is taken as ours only when its size and its SHA-256 are those of the
    ciphertext this run sent (or an earlier attempt recorded for this delivery); a foreign file of the same
    size is refused (RemoteFileExists: recorded as a failed attempt, alerted, never overwritten)."""
    state = ctx.state()
    sent = state.encrypted.ciphertext_sha256 if state.encrypted else None
    ours = {sent} | {o.ciphertext_sha256 for o in ctx.ledger.delivery_outcomes(
        delivery_ids=[intent.delivery_id])}
    ours.discard(None)
    hashing = getattr(transport, "sha256", None)
    remote: str | None = hashing(found.name) if hashing is not None else None
    if remote is not None and remote in ours:
        return remote
    if state.encrypted is not None and state.encrypted.cipher_bytes != found.size:
        raise PermanentError(f"{found.name} exists on the carrier's side with a different size",
                             details={"delivery_id": intent.delivery_id, "bytes": found.size})
    from carrierfeeds.transport.base import RemoteFileExists

    raise RemoteFileExists(
        f"{found.name} exists on the carrier's side but is not the file this run sent "
        f"({'its sha256 differs' if remote is not None else 'its content could not be checked'}); "
        "not taken as delivered, not overwritten",
        details={"delivery_id": intent.delivery_id, "bytes": found.size, "remote_sha256": remote})


def _record_pending_handoff(ctx: RunContext, delivery_id: str, size: int | None, remote_path: str | None,
                            message: str) -> None:
    """A manual delivery's file is in the outbox: outcome ``pending_handoff`` puts it on the hand-off list."""
    ctx.ledger.record_delivery_outcome(delivery_id, status="pending_handoff", now=ctx.now(), size=size,
                                       remote_path=remote_path, actor=ctx.actor, message=message)


