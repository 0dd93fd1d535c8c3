"""Polling every configured carrier (the housekeeping task) and the CLI's ``acks collect`` / ``acks status``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ack_helpers import FEED, ROOT, T0, WITH_ACK_SOURCE, config_root, deliver, pyx12_999
from typer.testing import CliRunner

from carrierfeeds.cli import app
from carrierfeeds.ledger import Ledger


def test_cli_collect_from_a_folder_and_status(tmp_path: Path, inbox: Path) -> None:
    ledger_url = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    led = Ledger.open(ledger_url)
    led.upgrade()
    # Real time here: the CLI reads the wall clock; two hours back with a one-hour window is overdue.
    past = datetime.now(UTC) - timedelta(hours=2)
    accepted, late = deliver(led, 1, at=past), deliver(led, 2, at=past)
    (inbox / "999.x12").write_bytes(pyx12_999(tmp_path, accepted.x12))
    led.close()
    root = config_root(tmp_path, WITH_ACK_SOURCE)
    env = {"CARRIERFEEDS_FEEDS_DIR": str(root / "feeds"), "CARRIERFEEDS_MAPPINGS_DIR": str(root / "mappings"),
           "CARRIERFEEDS_SCHEMAS_DIR": str(root / "schemas"), "CARRIERFEEDS_DATA_DIR": str(tmp_path / "var"),
           "CARRIERFEEDS_LEDGER_URL": ledger_url}
    runner = CliRunner()
    result = runner.invoke(app, ["acks", "collect", "--from-dir", str(inbox), "--source-id", "sunrise-health",
                                 "--json"], env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["sources"][0]["recorded"] == 1 and data["alerts"] == []
    result = runner.invoke(app, ["acks", "status", "--overdue", "--window-hours", "1", "--format", "json"], env=env)
    assert result.exit_code == 1, result.output
    assert [r["delivery_id"] for r in json.loads(result.output)] == [late.delivery.delivery_id]
    same = runner.invoke(app, ["acks", "status", "--overdue", "--window-hours", "1", "--json"], env=env)
    assert same.exit_code == 1 and json.loads(same.output) == json.loads(result.output)  # --json: --format json
    result = runner.invoke(app, ["acks", "status", "--window-hours", "1"], env=env)
    assert "accepted" in result.output and "overdue" in result.output
    # The shipped mapping names no acknowledgment source: nothing is awaited, so nothing is overdue.
    shipped = {**env, "CARRIERFEEDS_MAPPINGS_DIR": str(ROOT / "mappings")}
    result = runner.invoke(app, ["acks", "status", "--window-hours", "1", "--format", "json"], env=shipped)
    assert result.exit_code == 0, result.output
    assert {(r["delivery_id"], r["status"]) for r in json.loads(result.output)} == {
        (accepted.delivery.delivery_id, "accepted"), (late.delivery.delivery_id, "not_expected")}


def test_housekeeping_poll_collects_configured_sources_and_fails_on_overdue(ledger: Ledger, tmp_path: Path,
                                                                             inbox: Path) -> None:
    from carrierfeeds.acknowledgments import AcksNeedAttention, CarrierAcks, poll_acks, poll_all
    from carrierfeeds.config import AckSpec
    from carrierfeeds.settings import Settings

    settings = Settings(feeds_dir=ROOT / "feeds", mappings_dir=ROOT / "mappings", schemas_dir=ROOT / "schemas",
                        data_dir=tmp_path)
    answered, silent = deliver(ledger, 1), deliver(ledger, 2)
    (inbox / "999.x12").write_bytes(pyx12_999(tmp_path, answered.x12))
    spec = AckSpec.model_validate({"source": {"kind": "local", "path": inbox.name}})
    carriers = [CarrierAcks(source_id="sunrise-health", spec=spec, window=timedelta(hours=6), feed_ids=(FEED,))]
    result = poll_acks(settings, now=T0 + timedelta(hours=7), ledger=ledger, carriers=carriers)
    assert result.reports[0].count("recorded") == 1
    assert [s.delivery_id for s in result.overdue] == [silent.delivery.delivery_id]
    assert [a.kind for a in result.alerts] == ["overdue"]
    assert (tmp_path / "acks" / "sunrise-health").is_dir()
    # The DAG's entry point. The shipped mappings name no source (all skipped): nothing can be
    # collected for them, so no delivery of theirs is ever overdue, however late.
    from carrierfeeds.config import load_feed

    mappings = len({load_feed(p).mapping_id for p in (ROOT / "feeds").glob("*.yaml")})
    for now in (T0 + timedelta(hours=1), T0 + timedelta(days=3)):
        assert poll_all(settings, ledger, now=now) == {
            "sources": 0, "skipped": mappings, "files_recorded": 0, "files_duplicate": 0, "files_failed": 0,
            "files_set_aside": 0, "files_deferred": 0, "overdue": 0}
    # The same carrier with a source configured: its silent delivery is overdue and fails the task.
    root = config_root(tmp_path, WITH_ACK_SOURCE)
    configured = Settings(feeds_dir=root / "feeds", mappings_dir=root / "mappings", schemas_dir=root / "schemas",
                          data_dir=tmp_path)
    with pytest.raises(AcksNeedAttention) as err:
        poll_all(configured, ledger, now=T0 + timedelta(days=3))
    assert err.value.details["alerts_overdue"] == 1 and err.value.details["overdue"] == 1
    assert (err.value.details["sources"], err.value.details["skipped"]) == (1, mappings - 1)
    assert err.value.details["files_duplicate"] == 1  # the 999 the first poll recorded
    assert poll_all(configured, ledger, now=T0 + timedelta(hours=5))["overdue"] == 0  # 6 h window
