"""Send a delivered file's per-file notice to the carrier, once per delivery and channel, after delivery.

:func:`send_file_notices` is the one hook: given a delivery the ledger records as with the carrier, the
notice files the build wrote for it and the mapping's ``notice.send``, it sends the notice on each
channel (webhook, e-mail) that has not had it yet. Per channel: the ledger's ``sending`` row (with the
idempotency key) is written before the send and ``sent`` or ``failed`` after (``ledger.notices``), all
under the run's delivery lock, so two processes never send one notice at once. A channel already
``sent`` is left alone; one left ``sending`` (the process stopped mid-send) or ``failed`` is sent again
under the same key. That is at-least-once with a key, not exactly-once: HTTP and SMTP cannot tell us
whether a reply we never got meant the carrier had the notice.

A notice that cannot be sent after its retries never undoes the delivery: it is recorded ``failed``
(our error code, a PHI-free message), alerted through the feed's failure webhook (``notify``), shown by
``carrierfeeds status`` and ``audit show``, and sent again by ``carrierfeeds notice resend``.

Callers: a feed's confirm stage and an aggregated carrier file's ``confirm_aggregate`` (both through
:func:`send_run_notices`, on their own run), and ``notice resend`` (:func:`resend_notices`); any other
delivery path calls :func:`send_file_notices` with its delivery record and the notice files its build
wrote. Call it outside the delivery lock (it takes the lock itself).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from carrierfeeds.errors import CarrierFeedsError, PermanentError, Refused
from carrierfeeds.ledger.notices import (
    idempotency_key,
    notice_sends_of,
    record_notice_intent,
    record_notice_outcome,
)
from carrierfeeds.ledger.records import DELIVERED_STATUSES

if TYPE_CHECKING:
    from carrierfeeds.config import CarrierMapping, Feed
    from carrierfeeds.config.feed import NotifySpec
    from carrierfeeds.config.mapping import FileNotice, NoticeSend
    from carrierfeeds.credentials import Connections
    from carrierfeeds.ledger import DeliveryRecord, Ledger
    from carrierfeeds.run.context import RunContext
    from carrierfeeds.settings import Settings

log = logging.getLogger(__name__)

#: What a channel's send came to: sent now, sent before (nothing done), failed (recorded and alerted).
SENT, ALREADY_SENT, FAILED = "sent", "already_sent", "failed"


class NoticeMismatch(Refused):
    """The notice files found do not describe the delivery (another file's sha256 or control numbers)."""

    code = "notice_mismatch"


class NoticeMissing(PermanentError):
    """The delivery's notice files are not in the staging store (built before the mapping asked for a
    notice, or removed by a later forced resend of the run or by the retention purge)."""

    code = "notice_missing"


def send_file_notices(ledger: Ledger, connections: Connections, *, delivery: DeliveryRecord, notice: FileNotice,
                      files: Sequence[tuple[str, bytes]], actor: str, clock: Callable[[], datetime],
                      alert: NotifySpec | None = None, sleep: Callable[[float], None] = time.sleep) -> dict[str, str]:
    """Send ``delivery``'s notice (``files``: the (name, bytes) the build wrote, one per format) on every
    channel of ``notice.send`` not yet sent; channel -> :data:`SENT`, :data:`ALREADY_SENT` or :data:`FAILED`.

    Nothing is sent for a delivery not (yet) with the carrier (a manual hand-off still pending, a failed
    upload), nor for a test file unless ``send.test_files``. Raises only what the ledger raises."""
    from carrierfeeds.lifecycle import TEST_SUFFIX

    spec = notice.send
    if spec is None or delivery.status not in DELIVERED_STATUSES:
        return {}
    if delivery.transport.endswith(TEST_SUFFIX) and not spec.test_files:
        return {}
    channels = [c for c, on in (("webhook", spec.webhook), ("email", spec.email)) if on is not None]
    by_format = {_format(name): (name, data) for name, data in files}
    main = by_format.get("json") or by_format.get("text")
    notice_sha256 = hashlib.sha256(main[1]).hexdigest() if main is not None else None
    out: dict[str, str] = {}
    with ledger.delivery_lock(delivery.feed_id, delivery.interval_start):
        for channel in channels:
            if record_notice_intent(ledger, delivery_id=delivery.delivery_id, channel=channel,
                                    notice_sha256=notice_sha256, actor=actor, now=clock()) is None:
                out[channel] = ALREADY_SENT
                continue
            attempts = 0
            try:
                if main is None:
                    raise NoticeMissing("the delivery's notice files are not in the staging store",
                                        details={"delivery_id": delivery.delivery_id})
                _require_describes(delivery, by_format)
                for attempts in range(1, spec.retries + 2):
                    try:
                        _send(channel, spec, connections, delivery, by_format)
                        break
                    except CarrierFeedsError as exc:
                        if not exc.retriable or attempts > spec.retries:
                            raise
                        log.warning("delivery %s: notice by %s not sent (%s), attempt %d; retrying",
                                    delivery.delivery_id, channel, exc.code, attempts)
                        sleep(spec.backoff_seconds * 2 ** (attempts - 1))
            except CarrierFeedsError as exc:
                # The delivery stands: the notice is recorded failed, alerted, and waits for a resend.
                record_notice_outcome(ledger, delivery_id=delivery.delivery_id, channel=channel, status=FAILED,
                                      attempts=attempts, actor=actor, now=clock(), error_code=exc.code,
                                      message=_recordable(exc.message[:500]))
                log.error("delivery %s: notice by %s failed after %d attempt(s): %s", delivery.delivery_id,
                          channel, attempts, exc.message)
                _alert(connections, alert, delivery, channel, exc)
                out[channel] = FAILED
                continue
            record_notice_outcome(ledger, delivery_id=delivery.delivery_id, channel=channel, status=SENT,
                                  attempts=attempts, actor=actor, now=clock())
            out[channel] = SENT
    return out


def _recordable(message: str) -> str | None:
    """The message if the ledger's PHI guard takes it, else none: the failure is recorded by its code."""
    from carrierfeeds.ledger.records import UnsafeLedgerValue, check_text

    try:
        return check_text("message", message)
    except UnsafeLedgerValue:
        return None


def _format(name: str) -> str:
    from carrierfeeds.outputs.notice import SUFFIXES

    return next((fmt for fmt, suffix in SUFFIXES.items() if name.endswith(suffix)), "")


def _require_describes(delivery: DeliveryRecord, by_format: dict[str, tuple[str, bytes]]) -> None:
    """Fail closed: a notice goes out only about the very file the delivery sent (payload sha256, ISA13)."""
    isa13 = f"{delivery.isa13:09d}"
    ok = True
    if "json" in by_format:
        try:
            data = json.loads(by_format["json"][1])
        except ValueError:
            data = {}
        ok = isinstance(data, dict) and data.get("file", {}).get("sha256") == delivery.payload_sha256 and \
            data.get("control_numbers", {}).get("isa13") == isa13
    if "text" in by_format:
        text = by_format["text"][1].decode("utf-8")
        ok = ok and f"SHA-256: {delivery.payload_sha256}\n" in text and f"ISA13 {isa13} " in text
    if not ok:
        raise NoticeMismatch("the notice files found describe another file than the delivery (sha256 or ISA13)",
                             details={"delivery_id": delivery.delivery_id, "isa13": delivery.isa13})


def _send(channel: str, spec: NoticeSend, connections: Connections, delivery: DeliveryRecord,
          by_format: dict[str, tuple[str, bytes]]) -> None:
    from carrierfeeds.transport.notice import mail_notice, notice_message, post_notice

    key = idempotency_key(delivery.delivery_id, channel)
    if channel == "webhook":
        assert spec.webhook is not None  # noqa: S101 - only configured channels are sent
        target = connections.webhook(spec.webhook.connection_id)
        if "json" in by_format:
            post_notice(target, by_format["json"][1], content_type="application/json", idempotency_key=key)
        else:
            post_notice(target, by_format["text"][1], content_type="text/plain; charset=utf-8", idempotency_key=key)
        return
    assert spec.email is not None  # noqa: S101 - only configured channels are sent
    email = spec.email
    smtp = connections.smtp(email.connection_id)
    body = by_format["text"][1] if "text" in by_format else by_format["json"][1]
    attachments = [(by_format["json"][0], by_format["json"][1], "application/json")] if "json" in by_format else []
    domain = email.from_address.rpartition("@")[2]
    message = notice_message(sender=email.from_address, to=email.to, message_id=f"<{key}@{domain}>",
                             subject=f"Eligibility file notice: {delivery.file_name} (ISA13 {delivery.isa13:09d})",
                             text=body.decode("utf-8"), attachments=attachments)
    mail_notice(smtp, message)


def _alert(connections: Connections, alert: NotifySpec | None, delivery: DeliveryRecord, channel: str,
           exc: CarrierFeedsError) -> None:
    """Tell ops through the feed's failure webhook; a webhook that fails too is logged (the ledger row and
    ``carrierfeeds status`` still show the failed notice)."""
    from carrierfeeds.notify import send_webhook, webhook_target

    if alert is None:
        return
    payload: dict[str, Any] = {"event": "notice_failed", "feed_id": delivery.feed_id,
                               "delivery_id": delivery.delivery_id, "isa13": f"{delivery.isa13:09d}",
                               "channel": channel, "error_code": exc.code, "message": exc.message[:500]}
    try:
        send_webhook(webhook_target(connections, url=alert.webhook_url, connection_id=alert.webhook_connection_id),
                     payload, sender=delivery.feed_id, event="notice_failed")
    except CarrierFeedsError as failed:
        log.error("feed %s: alert for the failed notice of delivery %s not sent: %s", delivery.feed_id,
                  delivery.delivery_id, failed.message)


def notice_file_names(feed: Feed, mapping: CarrierMapping, delivery: DeliveryRecord) -> list[str]:
    """The names the build gave ``delivery``'s notice files (the delivered name without the encryption
    suffix, under the mapping's ``notice.file_name``)."""
    from carrierfeeds.outputs.notice import notice_names

    assert mapping.notice is not None  # noqa: S101 - callers check
    suffix = feed.encryption.suffix
    name = delivery.file_name[:-len(suffix)] if suffix and delivery.file_name.endswith(suffix) else delivery.file_name
    return notice_names(mapping.notice, name)


def send_run_notices(ctx: RunContext) -> dict[str, str]:
    """The confirm stage's step: the run's delivered file's notice, sent on each channel not yet sent."""
    feed, mapping = ctx.bundle.feed, ctx.bundle.mapping
    built = ctx.state().built
    if mapping.notice is None or mapping.notice.send is None or built is None:
        return {}
    delivery = ctx.ledger.find_delivery(feed_id=ctx.feed_id, interval_start=ctx.ref.interval_start,
                                        payload_sha256=built.payload_sha256)
    if delivery is None:
        return {}
    files = [(name, ctx.fetch(name).read_bytes()) for name in notice_file_names(feed, mapping, delivery)
             if ctx.store.exists(ctx.feed_id, ctx.ref.interval_start, name)]
    return send_file_notices(ctx.ledger, ctx.connections, delivery=delivery, notice=mapping.notice, files=files,
                             actor=ctx.actor, clock=ctx.clock, alert=feed.notify)


def resend_notices(settings: Settings, ledger: Ledger, connections: Connections, delivery: DeliveryRecord, *,
                   actor: str, clock: Callable[[], datetime],
                   sleep: Callable[[float], None] = time.sleep) -> dict[str, str]:
    """``carrierfeeds notice resend``: the delivery's notice on every channel not yet sent, from the notice
    files the run kept in the staging store and the mapping's current ``notice.send``."""
    from carrierfeeds.settings import load_bundle, open_store

    bundle = load_bundle(settings, delivery.feed_id)
    notice = bundle.mapping.notice
    if notice is None or notice.send is None:
        raise PermanentError(f"mapping {bundle.mapping.mapping_id!r} sends no notice (notice.send)",
                             details={"delivery_id": delivery.delivery_id})
    store = open_store(settings)
    files = [(name, store.get_bytes(delivery.feed_id, delivery.interval_start, name))
             for name in notice_file_names(bundle.feed, bundle.mapping, delivery)
             if store.exists(delivery.feed_id, delivery.interval_start, name)]
    return send_file_notices(ledger, connections, delivery=delivery, notice=notice, files=files, actor=actor,
                             clock=clock, alert=bundle.feed.notify, sleep=sleep)


def notice_states(ledger: Ledger, delivery_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Each (delivery, channel)'s latest notice state, for status and audit views."""
    return [s.as_dict() for s in notice_sends_of(ledger, delivery_ids)]
