"""The per-file notice sent to the carrier after delivery, with real parts: the run over a real sshd and
gpg, the ledger on SQLite and PostgreSQL, an HTTP receiver and an SMTP server (aiosmtpd) on 127.0.0.1.

Sent once after the 834 is delivered, never again by a rerun; a forced resend's own delivery gets its
own notice; a receiver that fails leaves the 834 delivered and the notice failed and alerted, and
`carrierfeeds notice resend` sends it once; a process killed between the intent and the outcome leaves
the notice ``sending``, and the resend goes out under the same idempotency key. Nothing from the census
crosses the wire."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from carrierfeeds.ledger.notices import idempotency_key, notice_sends_of
from carrierfeeds.run.context import RunRef
from carrierfeeds.run.stages import run_feed
from carrierfeeds.settings import open_ledger, open_store
from carrierfeeds.testing.smtp import SmtpReceiver, smtp_receiver
from carrierfeeds.testing.webhook import WebhookReceiver, webhook_receiver

pytestmark = pytest.mark.slow

DAY = date(2026, 11, 20)
ROOT = Path(__file__).resolve().parents[2]
HOOK, SMTP = "carrier_notice_hook", "carrier_notice_smtp"


def _clock() -> datetime:
    return datetime(2026, 11, 20, 7, 30, tzinfo=UTC)


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    with smtp_receiver() as server:
        yield server


@pytest.fixture
def alerts() -> Iterator[WebhookReceiver]:
    """The feed's failure webhook (``notify``): where ops hear of a notice that could not be sent."""
    with webhook_receiver() as server:
        yield server


def _setup(ws: Any, tmp_path: Path, webhook: WebhookReceiver, smtp: SmtpReceiver, alerts: WebhookReceiver,
           monkeypatch: pytest.MonkeyPatch, *, retries: int = 0) -> Any:
    """The demo feed with a notice sent by webhook and e-mail, and a failure webhook; the settings."""
    mappings = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", mappings)
    m = mappings / "sunrise-health.yaml"
    m.write_text(m.read_text() + f"""notice:
  formats: [json, text]
  send:
    webhook: {{connection_id: {HOOK}}}
    email: {{connection_id: {SMTP}, to: [eligibility@carrier.example], from_address: feeds@tpa.example}}
    retries: {retries}
    backoff_seconds: 0
""")
    feed_file = ws.settings.feeds_dir / f"{ws.feed.feed_id}.yaml"
    data = yaml.safe_load(feed_file.read_text())
    data["notify"] = {"webhook_url": f"{alerts.url}/alerts"}
    feed_file.write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setenv(f"AIRFLOW_CONN_{HOOK.upper()}", json.dumps(
        {"host": webhook.url, "login": "tpa", "password": "s3cret", "extra": {"endpoint": "/notices"}}))
    conn = ws.keys_dir / f"{SMTP}.json"
    conn.write_text(json.dumps({"host": "127.0.0.1", "port": smtp.port, "security": "none"}))
    conn.chmod(0o600)
    return ws.settings.model_copy(update={"mappings_dir": mappings})


def _env(settings: Any) -> dict[str, str]:
    """The settings as the environment a CLI process reads them from."""
    return {f"CARRIERFEEDS_{name.upper()}": str(value) for name, value in settings.model_dump().items()
            if value is not None}


def _notices(settings: Any) -> dict[tuple[str, str], Any]:
    ledger = open_ledger(settings)
    try:
        return {(n.delivery_id, n.channel): n for n in notice_sends_of(ledger)}
    finally:
        ledger.close()


def _delivery_ids(settings: Any, run_id: str) -> list[str]:
    ledger = open_ledger(settings)
    try:
        return [d.delivery_id for d in ledger.deliveries() if d.run_id == run_id]
    finally:
        ledger.close()


def test_the_notice_goes_once_after_delivery_and_a_forced_resend_gets_its_own(
        sftp_workspace: Any, tmp_path: Path, webhook: WebhookReceiver, smtp: SmtpReceiver, alerts: WebhookReceiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    ws = sftp_workspace
    settings = _setup(ws, tmp_path, webhook, smtp, alerts, monkeypatch)
    census = ws.write_census(members=30, seed=8, as_of=DAY)
    ref = RunRef.for_day(ws.feed.feed_id, DAY)
    first = run_feed(settings, ref, clock=_clock, actor="test")
    assert first.status == "delivered", first.error
    [delivery_id] = _delivery_ids(settings, first.run_id)
    plain = str(first.file_name).removesuffix(ws.feed.encryption.suffix)
    store = open_store(settings)
    notice_json = store.get_bytes(ws.feed.feed_id, DAY, f"{plain}.notice.json")
    notice_text = store.get_bytes(ws.feed.feed_id, DAY, f"{plain}.notice.txt")

    # The webhook: the JSON notice, the connection's auth, the delivery's key.
    [post] = webhook.posts
    assert post.path == "/notices" and post.headers["Authorization"].startswith("Basic ")
    assert post.headers["Idempotency-Key"] == idempotency_key(delivery_id, "webhook")
    assert post.body == json.loads(notice_json)
    assert post.body["file"]["sha256"] == first.payload_sha256
    assert post.body["control_numbers"]["isa13"] == f"{first.isa13:09d}"
    # The e-mail: the text notice as the body, the JSON attached, the key in its Message-ID.
    [mail] = smtp.messages
    assert smtp.envelopes == [("feeds@tpa.example", ["eligibility@carrier.example"])]
    assert mail["Message-ID"] == f"<{idempotency_key(delivery_id, 'email')}@tpa.example>"
    body = mail.get_body(("plain",))
    assert body is not None and body.get_content().replace("\r\n", "\n") == notice_text.decode()  # SMTP: CRLF
    [attached] = list(mail.iter_attachments())
    assert attached.get_filename() == f"{plain}.notice.json" and attached.get_content() == notice_json
    states = _notices(settings)
    assert {k: (n.status, n.attempts, n.tries) for k, n in states.items()} == {
        (delivery_id, "webhook"): ("sent", 1, 1), (delivery_id, "email"): ("sent", 1, 1)}
    assert alerts.posts == []

    # Nothing from the census crosses the wire (headers, bodies, subject, attachment).
    wire = json.dumps([[p.headers, p.body] for p in webhook.posts]) + "".join(m.as_string() for m in smtp.messages)
    frame = pd.read_csv(census, dtype=str, keep_default_na=False)
    for column in ("last_name", "first_name", "ssn", "member_id", "address1", "dob"):
        for value in set(frame[column]) - {""}:
            assert value not in wire, column

    # A rerun of the delivered day sends neither the file nor its notice again.
    again = run_feed(settings, ref, clock=_clock, actor="test")
    assert again.status == "already_delivered", again.error
    assert len(webhook.posts) == 1 and len(smtp.messages) == 1

    # A forced resend is a delivery of its own: its own notice, under its own key and control numbers.
    forced = run_feed(settings, ref, clock=_clock, actor="ops.jane", force_reason="carrier lost the file")
    assert forced.status == "delivered", forced.error
    second = next(d for d in _delivery_ids(settings, first.run_id) if d != delivery_id)
    assert len(webhook.posts) == 2 and len(smtp.messages) == 2
    assert webhook.posts[1].headers["Idempotency-Key"] == idempotency_key(second, "webhook")
    assert webhook.posts[1].body["control_numbers"]["isa13"] == f"{forced.isa13:09d}" != f"{first.isa13:09d}"
    assert {k for k, n in _notices(settings).items() if n.status == "sent"} == {
        (d, c) for d in (delivery_id, second) for c in ("webhook", "email")}
    ledger = open_ledger(settings)
    try:
        assert ledger.verify_chain().ok
    finally:
        ledger.close()


def test_a_failing_receiver_leaves_the_file_delivered_and_the_notice_failed_alerted_and_resendable(
        sftp_workspace: Any, tmp_path: Path, webhook: WebhookReceiver, smtp: SmtpReceiver, alerts: WebhookReceiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from carrierfeeds.cli import app

    ws = sftp_workspace
    settings = _setup(ws, tmp_path, webhook, smtp, alerts, monkeypatch, retries=1)
    webhook.status = 503
    ws.write_census(members=20, seed=9, as_of=DAY)
    summary = run_feed(settings, RunRef.for_day(ws.feed.feed_id, DAY), clock=_clock, actor="test")
    assert summary.status == "delivered", summary.error  # the notice never undoes the delivery
    assert [p.name for p in ws.inbox.iterdir()] == [summary.file_name]
    [delivery_id] = _delivery_ids(settings, summary.run_id)
    key = idempotency_key(delivery_id, "webhook")
    assert [p.headers["Idempotency-Key"] for p in webhook.posts] == [key, key]  # one retry, the same key
    failed = _notices(settings)[(delivery_id, "webhook")]
    assert (failed.status, failed.error_code, failed.attempts) == ("failed", "notice_not_accepted", 2)
    assert failed.message is not None and "HTTP 503" in failed.message
    assert _notices(settings)[(delivery_id, "email")].status == "sent" and len(smtp.messages) == 1
    [alert] = alerts.bodies
    assert alert["event"] == "notice_failed" and alert["delivery_id"] == delivery_id
    assert (alert["channel"], alert["error_code"]) == ("webhook", "notice_not_accepted")

    for name, value in _env(settings).items():
        monkeypatch.setenv(name, value)
    runner = CliRunner()
    board = runner.invoke(app, ["status", "--json"])
    assert board.exit_code == 1, board.output
    [row] = json.loads(board.output)["feeds"]
    assert row["notices_unsent"] == 1 and "notice_unsent" in row["attention"]
    shown = runner.invoke(app, ["audit", "show", summary.run_id])
    assert f"notice to the carrier by webhook: failed, delivery {delivery_id}" in shown.output

    listed = runner.invoke(app, ["notice", "list", "--failed", "--json"])
    assert [(n["delivery_id"], n["channel"], n["error_code"]) for n in json.loads(listed.output)["notices"]] == [
        (delivery_id, "webhook", "notice_not_accepted")]

    webhook.status = 204
    resent = runner.invoke(app, ["notice", "resend", summary.run_id, "--by", "ops.jane", "--json"])
    assert resent.exit_code == 0, resent.output
    assert json.loads(resent.output)["deliveries"] == {delivery_id: {"webhook": "sent", "email": "already_sent"}}
    assert [p.headers["Idempotency-Key"] for p in webhook.posts] == [key] * 3 and len(smtp.messages) == 1
    again = runner.invoke(app, ["notice", "resend", delivery_id, "--json"])
    assert json.loads(again.output)["deliveries"] == {delivery_id: {"webhook": "already_sent",
                                                                    "email": "already_sent"}}
    assert len(webhook.posts) == 3 and len(smtp.messages) == 1
    assert "no notices to resend" in runner.invoke(app, ["notice", "list", "--failed"]).output
    [row] = json.loads(runner.invoke(app, ["status", "--json"]).output)["feeds"]
    assert row["notices_unsent"] == 0 and "notice_unsent" not in row["attention"]
    assert runner.invoke(app, ["notice", "resend", "no-such-id"]).exit_code == 2


def test_a_crash_between_intent_and_outcome_is_resent_under_the_same_key(
        sftp_workspace: Any, tmp_path: Path, webhook: WebhookReceiver, smtp: SmtpReceiver, alerts: WebhookReceiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    ws = sftp_workspace
    settings = _setup(ws, tmp_path, webhook, smtp, alerts, monkeypatch)
    webhook.status = 503
    ws.write_census(members=20, seed=10, as_of=DAY)
    summary = run_feed(settings, RunRef.for_day(ws.feed.feed_id, DAY), clock=_clock, actor="test")
    assert summary.status == "delivered", summary.error
    [delivery_id] = _delivery_ids(settings, summary.run_id)
    assert _notices(settings)[(delivery_id, "webhook")].status == "failed"

    # `notice resend` in a process of its own, killed by the receiver the moment the POST arrives: the
    # carrier has the notice, the ledger has the intent and no outcome.
    webhook.status = 204
    child: list[subprocess.Popen[bytes]] = []
    webhook.on_post = lambda _post: os.kill(child[0].pid, signal.SIGKILL)
    env = {**os.environ, **_env(settings)}
    child.append(subprocess.Popen([sys.executable, "-m", "carrierfeeds", "notice", "resend", delivery_id],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    assert child[0].wait(timeout=300) == -signal.SIGKILL
    cut = _notices(settings)[(delivery_id, "webhook")]
    assert (cut.status, cut.tries) == ("sending", 2)

    webhook.on_post = None
    ran = subprocess.run([sys.executable, "-m", "carrierfeeds", "notice", "resend", delivery_id, "--json"],
                         env=env, capture_output=True, check=False, timeout=300)
    assert ran.returncode == 0, ran.stderr.decode()[-2000:]
    key = idempotency_key(delivery_id, "webhook")
    assert [p.headers["Idempotency-Key"] for p in webhook.posts] == [key] * 3  # failed, cut off, resent
    done = _notices(settings)[(delivery_id, "webhook")]
    assert (done.status, done.tries) == ("sent", 3)
    assert len(smtp.messages) == 1  # the e-mail went with the run and was never sent again
