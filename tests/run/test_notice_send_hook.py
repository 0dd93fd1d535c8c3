"""``send_file_notices``, the one hook every delivery path calls (a run's confirm, ``notice resend``, an
aggregated file's run), against a real ledger (SQLite, PostgreSQL) and a real HTTP receiver: it sends
only about the very file delivered, only once the file is with the carrier, and records what it refused."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

from carrierfeeds.config.mapping import FileNotice
from carrierfeeds.credentials import StaticConnections, WebhookTarget
from carrierfeeds.ledger import Ledger, sha256_hex
from carrierfeeds.ledger.notices import idempotency_key, notice_sends_of
from carrierfeeds.run.notices import send_file_notices
from carrierfeeds.testing.webhook import WebhookReceiver

FPR = "0123456789ABCDEF0123456789ABCDEF01234567"
PAYLOAD = sha256_hex("synthetic 834")
T0 = datetime(2026, 11, 20, 7, 30, tzinfo=UTC)


class _Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> datetime:
        self.t += timedelta(seconds=1)
        return self.t


def _ledger_with_delivery(url: str, clock: _Clock, *, status: str, transport: str = "sftp") -> tuple[Ledger, Any]:
    ledger = Ledger.open(url)
    ledger.upgrade()
    run = ledger.start_run(feed_id="acme-medical", interval_start=date(2026, 11, 20),
                           interval_end=date(2026, 11, 21), actor="t", now=clock())
    d = ledger.record_delivery_intent(
        run_id=run.run_id, feed_id="acme-medical", interval_start=date(2026, 11, 20), payload_sha256=PAYLOAD,
        file_name="ACME_CARRIER_000000007_20261120.834.pgp", isa13=7, gs06=7, st02=7, recipient_fingerprint=FPR,
        member_counts={"members": 3}, transport=transport, now=clock())
    ledger.record_delivery_outcome(d.delivery_id, status=status, now=clock())
    return ledger, ledger.find_delivery(feed_id="acme-medical", interval_start=date(2026, 11, 20))


def _files(sha256: str = PAYLOAD, isa13: str = "000000007") -> list[tuple[str, bytes]]:
    notice = {"file": {"sha256": sha256, "name": "ACME_CARRIER_000000007_20261120.834"},
              "control_numbers": {"isa13": isa13}, "members": 3}
    return [("ACME_CARRIER_000000007_20261120.834.notice.json", json.dumps(notice).encode())]


NOTICE = FileNotice.model_validate({"send": {"webhook": {"connection_id": "hook"}, "retries": 0}})


def _send(ledger: Ledger, delivery: Any, webhook: WebhookReceiver, clock: _Clock, files: list[tuple[str, bytes]],
          notice: FileNotice = NOTICE) -> dict[str, str]:
    return send_file_notices(ledger, StaticConnections(webhooks={"hook": WebhookTarget(webhook.url)}),
                             delivery=delivery, notice=notice, files=files, actor="t", clock=clock)


def test_the_hook_sends_a_delivered_files_notice_once(ledger_url: str, webhook: WebhookReceiver) -> None:
    clock = _Clock()
    ledger, delivery = _ledger_with_delivery(ledger_url, clock, status="delivered")
    try:
        assert _send(ledger, delivery, webhook, clock, _files()) == {"webhook": "sent"}
        assert _send(ledger, delivery, webhook, clock, _files()) == {"webhook": "already_sent"}
        [post] = webhook.posts
        assert post.headers["Idempotency-Key"] == idempotency_key(delivery.delivery_id, "webhook")
        assert post.body["file"]["sha256"] == PAYLOAD
    finally:
        ledger.close()


def test_the_hook_never_sends_about_another_file_or_without_one(ledger_url: str, webhook: WebhookReceiver) -> None:
    clock = _Clock()
    ledger, delivery = _ledger_with_delivery(ledger_url, clock, status="delivered")
    try:
        assert _send(ledger, delivery, webhook, clock, _files(sha256=sha256_hex("another file"))) == {
            "webhook": "failed"}
        assert notice_sends_of(ledger)[0].error_code == "notice_mismatch"
        assert _send(ledger, delivery, webhook, clock, _files(isa13="000000008")) == {"webhook": "failed"}
        assert _send(ledger, delivery, webhook, clock, []) == {"webhook": "failed"}
        [state] = notice_sends_of(ledger)
        assert (state.status, state.error_code, state.tries) == ("failed", "notice_missing", 3)
        assert webhook.posts == []
        assert ledger.verify_chain().ok
    finally:
        ledger.close()


def test_the_hook_waits_for_the_carrier_to_have_the_file(ledger_url: str, webhook: WebhookReceiver) -> None:
    clock = _Clock()
    ledger, failed = _ledger_with_delivery(ledger_url, clock, status="failed")
    try:
        assert _send(ledger, failed, webhook, clock, _files()) == {}
        ledger.record_delivery_outcome(failed.delivery_id, status="pending_handoff", now=clock())
        pending = ledger.find_delivery(feed_id="acme-medical", interval_start=date(2026, 11, 20))
        assert _send(ledger, pending, webhook, clock, _files()) == {}
        assert webhook.posts == [] and notice_sends_of(ledger) == []
    finally:
        ledger.close()


def test_test_files_get_a_notice_only_when_asked(ledger_url: str, webhook: WebhookReceiver) -> None:
    clock = _Clock()
    ledger, delivery = _ledger_with_delivery(ledger_url, clock, status="delivered", transport="sftp:test")
    try:
        assert _send(ledger, delivery, webhook, clock, _files()) == {}
        asked = FileNotice.model_validate({"send": {"webhook": {"connection_id": "hook"}, "test_files": True}})
        assert _send(ledger, delivery, webhook, clock, _files(), notice=asked) == {"webhook": "sent"}
        assert len(webhook.posts) == 1
    finally:
        ledger.close()
