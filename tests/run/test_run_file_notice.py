"""The per-file notice in a real run (real gpg, sshd, ledger): written beside the 834 and kept in the
staging store, its hashes recorded in the build stage's ledger detail, its counts and control numbers
those of the delivered file, and no member value in it. And a feed of an aggregated carrier file is
never sent alone."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from carrierfeeds.run.context import RunRef
from carrierfeeds.run.stages import run_feed
from carrierfeeds.settings import open_ledger, open_store

pytestmark = pytest.mark.slow

DAY = date(2026, 11, 20)
ROOT = Path(__file__).resolve().parents[2]


def _clock() -> datetime:
    return datetime(2026, 11, 20, 7, 30, tzinfo=UTC)


def _mappings(tmp_path: Path, text: str) -> Path:
    mappings = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", mappings)
    m = mappings / "sunrise-health.yaml"
    m.write_text(m.read_text() + text)
    return mappings


def _build_detail(settings: Any, run_id: str) -> dict[str, Any]:
    ledger = open_ledger(settings)
    try:
        events = ledger.run_events(run_id)
    finally:
        ledger.close()
    return next(e.detail for e in events if e.stage == "build" and e.status == "succeeded")


def test_a_run_writes_the_notice_and_the_ledger_records_it(sftp_workspace: Any, tmp_path: Path) -> None:
    ws = sftp_workspace
    settings = ws.settings.model_copy(update={"mappings_dir": _mappings(
        tmp_path, "notice:\n  formats: [json, text]\n")})
    census = ws.write_census(members=30, seed=8, as_of=DAY)
    summary = run_feed(settings, RunRef.for_day(ws.feed.feed_id, DAY), clock=_clock, actor="test")
    assert summary.status == "delivered", summary.error
    detail = _build_detail(settings, summary.run_id)
    plain_name = summary.file_name.removesuffix(ws.feed.encryption.suffix)
    store = open_store(settings)  # kept after the run with its state and ciphertext
    notice_json = store.get_bytes(ws.feed.feed_id, DAY, f"{plain_name}.notice.json")
    notice_text = store.get_bytes(ws.feed.feed_id, DAY, f"{plain_name}.notice.txt")
    assert detail["notice_json"] == hashlib.sha256(notice_json).hexdigest()
    assert detail["notice_text"] == hashlib.sha256(notice_text).hexdigest()
    notice = json.loads(notice_json)
    assert notice["file"]["sha256"] == summary.payload_sha256 and notice["file"]["name"] == plain_name
    assert notice["control_numbers"]["isa13"] == f"{summary.isa13:09d}"
    assert notice["members"] == summary.members and notice["members_by_type"] == {"030": summary.members}
    assert notice["coverages_by_type"] == {"030": summary.coverages}
    frame = pd.read_csv(census, dtype=str, keep_default_na=False)
    for text in (notice_json.decode(), notice_text.decode()):
        for column in ("last_name", "first_name", "ssn", "member_id", "address1", "dob"):
            for value in set(frame[column]) - {""}:
                assert value not in text, column


def test_a_feed_of_an_aggregated_file_is_never_sent_alone(sftp_workspace: Any, tmp_path: Path) -> None:
    ws = sftp_workspace
    settings = ws.settings.model_copy(update={"mappings_dir": _mappings(
        tmp_path, "aggregation:\n  on_employer_failure: isolate\n")})
    ws.write_census(members=10, seed=8, as_of=DAY)
    summary = run_feed(settings, RunRef.for_day(ws.feed.feed_id, DAY), clock=_clock, actor="test")
    assert summary.status != "delivered" and summary.error is not None
    assert summary.error["code"] == "config" and "aggregation" in summary.error["message"]
    assert not any(ws.inbox.iterdir())
