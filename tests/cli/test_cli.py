"""The command line: exit codes that mean something, --json for machines, the demo end to end."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from carrierfeeds.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _env(settings: Any) -> dict[str, str]:
    return {"CARRIERFEEDS_FEEDS_DIR": str(settings.feeds_dir), "CARRIERFEEDS_MAPPINGS_DIR": str(settings.mappings_dir),
            "CARRIERFEEDS_SCHEMAS_DIR": str(settings.schemas_dir), "CARRIERFEEDS_DATA_DIR": str(settings.data_dir),
            "CARRIERFEEDS_KEYS_DIR": str(settings.keys_dir), "CARRIERFEEDS_GNUPG_HOME": str(settings.gnupg_home),
            "CARRIERFEEDS_LEDGER_URL": settings.resolved_ledger_url}


def test_feeds_check_passes_on_shipped_config() -> None:
    result = runner.invoke(app, ["feeds", "check", "--config-only", "--json"], env={
        "CARRIERFEEDS_FEEDS_DIR": str(ROOT / "feeds"), "CARRIERFEEDS_MAPPINGS_DIR": str(ROOT / "mappings"),
        "CARRIERFEEDS_SCHEMAS_DIR": str(ROOT / "schemas")})
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    shipped = {p.stem for p in (ROOT / "feeds").glob("*.yaml")}
    assert data["ok"] and {Path(f["file"]).stem for f in data["feeds"]} == shipped


def test_feeds_check_fails_with_usage_exit_code_and_names_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "acme-sunrise-medical.yaml"
    bad.write_text((ROOT / "feeds" / "acme-sunrise-medical.yaml").read_text().replace("mapping_id: sunrise-health",
                                                                                   "mapping_id: nowhere"))
    result = runner.invoke(app, ["feeds", "check", "--config-only"], env={
        "CARRIERFEEDS_FEEDS_DIR": str(tmp_path), "CARRIERFEEDS_MAPPINGS_DIR": str(ROOT / "mappings"),
        "CARRIERFEEDS_SCHEMAS_DIR": str(ROOT / "schemas")})
    assert result.exit_code == 2
    assert "FAIL" in result.output and "file nowhere.yaml not found" in result.output
    assert "mapping_id" in result.output and "did you mean" not in result.output  # nothing close to suggest


def test_a_mistyped_mapping_or_schema_id_gets_did_you_mean(tmp_path: Path) -> None:
    shipped = (ROOT / "feeds" / "acme-sunrise-medical.yaml").read_text()
    for old, new, suggestion in (("mapping_id: sunrise-health", "mapping_id: sunrise-helth", "sunrise-health"),
                                 ("schema_id: census-v1", "schema_id: census-v2", "census-v1")):
        assert old in shipped
        (tmp_path / "acme-sunrise-medical.yaml").write_text(shipped.replace(old, new))
        result = runner.invoke(app, ["feeds", "check", "--config-only"], env={
            "CARRIERFEEDS_FEEDS_DIR": str(tmp_path), "CARRIERFEEDS_MAPPINGS_DIR": str(ROOT / "mappings"),
            "CARRIERFEEDS_SCHEMAS_DIR": str(ROOT / "schemas")})
        assert result.exit_code == 2, result.output
        assert f"did you mean {suggestion!r}?" in result.output, result.output
        assert "acme-sunrise-medical.yaml" in result.output


def test_feeds_check_refuses_a_bad_cron_schedule(tmp_path: Path) -> None:
    bad = tmp_path / "acme-sunrise-medical.yaml"
    bad.write_text((ROOT / "feeds" / "acme-sunrise-medical.yaml").read_text().replace('schedule: "0 2 * * *"',
                                                                                   'schedule: "61 2 * * *"'))
    result = runner.invoke(app, ["feeds", "check", "--config-only"], env={
        "CARRIERFEEDS_FEEDS_DIR": str(tmp_path), "CARRIERFEEDS_MAPPINGS_DIR": str(ROOT / "mappings"),
        "CARRIERFEEDS_SCHEMAS_DIR": str(ROOT / "schemas")})
    assert result.exit_code == 2, result.output
    assert "FAIL" in result.output and "schedule" in result.output and "five-field cron" in result.output


def test_unknown_feed_is_a_usage_error_with_a_suggestion() -> None:
    result = runner.invoke(app, ["run", "acme-sunrise-medicl", "--json"], env={
        "CARRIERFEEDS_FEEDS_DIR": str(ROOT / "feeds")})
    assert result.exit_code == 2
    assert "did you mean 'acme-sunrise-medical'" in json.loads(result.output)["message"]


def test_generate_census_writes_the_members_asked_for(tmp_path: Path) -> None:
    out = tmp_path / "c.csv"
    result = runner.invoke(app, ["generate-census", "--members", "25", "--seed", "3", "--out", str(out),
                                 "--as-of", "2026-11-20"])
    assert result.exit_code == 0, result.output
    import pandas as pd

    assert pd.read_csv(out, dtype=str)["member_id"].nunique() == 25


@pytest.mark.slow
def test_run_json_summary_then_rerun_sends_nothing(sftp_workspace: Any) -> None:
    ws = sftp_workspace
    census = ws.write_census(members=30, seed=8, as_of=datetime(2026, 11, 20, tzinfo=UTC).date())
    args = ["run", ws.feed.feed_id, "--census", str(census), "--date", "2026-11-20", "--json"]
    first = runner.invoke(app, args, env=_env(ws.settings))
    assert first.exit_code == 0, first.output
    summary = json.loads(first.output)
    assert summary["status"] == "delivered"
    assert summary["members"] > 0 and summary["isa13"] >= 1 and len(summary["payload_sha256"]) == 64
    assert summary["file_name"].endswith(".834.pgp")
    # What it prints is what the ledger recorded, and the ciphertext hash is the file the carrier holds.
    from carrierfeeds.files import sha256_file
    from carrierfeeds.ledger import Ledger

    ledger = Ledger.open(ws.settings.resolved_ledger_url)
    try:
        delivery = ledger.find_delivery(feed_id=ws.feed.feed_id, interval_start=date(2026, 11, 20))
        run = ledger.get_run(summary["run_id"])
    finally:
        ledger.close()
    assert delivery is not None and run is not None
    assert summary["run_id"] == delivery.run_id == run.run_id and run.status == "delivered"
    assert summary["payload_sha256"] == delivery.payload_sha256
    assert summary["isa13"] == delivery.isa13 and summary["file_name"] == delivery.file_name
    assert summary["ciphertext_sha256"] == delivery.ciphertext_sha256 == sha256_file(ws.inbox / summary["file_name"])
    second = runner.invoke(app, args, env=_env(ws.settings))
    assert second.exit_code == 0, second.output
    assert json.loads(second.output)["status"] == "already_delivered"
    assert [p.name for p in ws.inbox.iterdir()] == [summary["file_name"]]


@pytest.mark.slow
def test_demo_command_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real `carrierfeeds demo` on a fresh checkout: gpg keys, an sshd, the feed, the carrier's round trip."""
    monkeypatch.chdir(ROOT)  # the demo reads the checkout's feeds/, mappings/ and schemas/
    result = runner.invoke(app, ["demo", "--workdir", str(tmp_path / "demo"), "--members", "40", "--seed", "2",
                                 "--json"], env=dict.fromkeys(_env_names()))
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["ok"] and out["rerun_status"] == "already_delivered" and out["chain_ok"]
    assert out["carrier_check"]["sha256_matches"] and out["carrier_check"]["signature_valid"]
    assert out["carrier_check"]["members"] == out["first_run"]["members"] == 40
    assert out["carrier_inbox"] == [out["first_run"]["file_name"]] and out["staging_plaintext_left"] == []
    # The demo's environment points the other commands at its workspace: its ledger verifies.
    env = out["environment"]
    assert set(env) == set(_env_names())
    verified = runner.invoke(app, ["audit", "verify", "--json"], env=env)
    assert verified.exit_code == 0 and json.loads(verified.output)["ok"], verified.output
    # Again without --reset: the previous demo (its ledger) is kept, and the way out is named.
    ledger_file = tmp_path / "demo" / "ledger.sqlite"
    before = ledger_file.read_bytes()
    kept = runner.invoke(app, ["demo", "--workdir", str(tmp_path / "demo"), "--members", "40"],
                         env=dict.fromkeys(_env_names()))
    assert kept.exit_code == 2 and "--reset" in kept.output, kept.output
    assert ledger_file.read_bytes() == before
    again = runner.invoke(app, ["demo", "--workdir", str(tmp_path / "demo"), "--members", "40", "--seed", "2",
                                "--reset"], env=dict.fromkeys(_env_names()))
    assert again.exit_code == 0, again.output
    assert "previous demo workspace deleted" in again.output and "demo OK" in again.output
    exports = [line.strip() for line in again.output.splitlines() if line.strip().startswith("export ")]
    assert [line.split("=")[0] for line in exports] == [f"export {name}" for name in _env_names()]


def _env_names() -> list[str]:
    return ["CARRIERFEEDS_FEEDS_DIR", "CARRIERFEEDS_MAPPINGS_DIR", "CARRIERFEEDS_SCHEMAS_DIR",
            "CARRIERFEEDS_DATA_DIR", "CARRIERFEEDS_KEYS_DIR", "CARRIERFEEDS_GNUPG_HOME", "CARRIERFEEDS_LEDGER_URL"]
