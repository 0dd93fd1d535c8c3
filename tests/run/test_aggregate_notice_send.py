"""An aggregated carrier file's notice (mapping ``keystone-exchange``) is sent like a feed's: once, after
the one file is delivered, about that file; a rerun sends nothing. Real parts: two employer feeds over the
loopback sshd and gpg, the ledger on SQLite and PostgreSQL, an HTTP receiver."""

from __future__ import annotations

import json
import shutil
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from carrierfeeds.ledger.notices import idempotency_key, notice_sends_of
from carrierfeeds.run.aggregate_run import run_aggregate
from carrierfeeds.settings import open_ledger
from carrierfeeds.testing.webhook import WebhookReceiver

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DAY = date(2026, 11, 20)
MAPPING = "keystone-exchange"
FEEDS = {"cedar-grove-keystone": ("C", 12, 41), "pinecrest-keystone": ("P", 9, 42)}


def _clock() -> datetime:
    return datetime(2026, 11, 21, 7, 30, tzinfo=UTC)


def test_the_aggregate_files_notice_is_sent_once(tmp_path: Path, demo_keys: Any, sshd_server: Any, ledger_url: str,
                                                 webhook: WebhookReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    from carrierfeeds.census.generate import generate_census, write_census_csv
    from carrierfeeds.config import SftpDelivery
    from carrierfeeds.demo import CONNECTION_ID, prepare_workspace

    inbox = sshd_server.root / uuid.uuid4().hex[:10]
    inbox.mkdir()
    keys_dir = tmp_path / "keys"
    sshd_server.write_keys_dir(keys_dir, CONNECTION_ID)
    for feed_id, (prefix, members, seed) in FEEDS.items():
        ws = prepare_workspace(tmp_path / "ws", keys=demo_keys, keys_dir=keys_dir, config_root=ROOT,
                               ledger_url=ledger_url, feed_id=feed_id,
                               delivery=SftpDelivery(connection_id=CONNECTION_ID, remote_dir=str(inbox)))
        write_census_csv(generate_census(members, seed, as_of=DAY, id_prefix=prefix),
                         ws.inbound / f"census_{DAY:%Y%m%d}.csv")
    mappings = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", mappings)
    m = mappings / f"{MAPPING}.yaml"
    text = m.read_text()
    assert "notice:\n  formats: [json]\n" in text
    m.write_text(text.replace("notice:\n  formats: [json]\n", "notice:\n  formats: [json]\n  send:\n"
                              "    webhook: {connection_id: keystone_notice}\n    backoff_seconds: 0\n"))
    monkeypatch.setenv("AIRFLOW_CONN_KEYSTONE_NOTICE", json.dumps({"host": webhook.url}))
    settings = ws.settings.model_copy(update={"mappings_dir": mappings})

    summary = run_aggregate(settings, MAPPING, DAY, clock=_clock, actor="test")
    assert summary.run.status == "delivered", summary.run.error
    ledger = open_ledger(settings)
    try:
        delivery = ledger.find_delivery(feed_id=MAPPING, interval_start=DAY)
        assert delivery is not None
        [post] = webhook.posts
        assert post.headers["Idempotency-Key"] == idempotency_key(delivery.delivery_id, "webhook")
        assert post.body["feed_id"] == MAPPING and post.body["members"] == 21
        assert post.body["file"]["sha256"] == delivery.payload_sha256
        assert post.body["control_numbers"]["isa13"] == f"{delivery.isa13:09d}"
        assert [(n.channel, n.status) for n in notice_sends_of(ledger, [delivery.delivery_id])] == [
            ("webhook", "sent")]
    finally:
        ledger.close()
    rerun = run_aggregate(settings, MAPPING, DAY, clock=_clock, actor="test")
    assert rerun.run.status == "already_delivered" and len(webhook.posts) == 1
