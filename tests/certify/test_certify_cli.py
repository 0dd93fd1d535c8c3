"""`carrierfeeds certify`: the demo feed's packet through the command line, real gpg and pyx12; the build is
an audit event in the ledger (manifest sha256, by whom; SQLite and PostgreSQL) and `--verify` checks the folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from carrierfeeds.census.columns import CANONICAL_COLUMNS
from carrierfeeds.cli import app
from carrierfeeds.config import load_feed
from carrierfeeds.ledger.store import Ledger

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, demo_keys: Any, ledger_url: str) -> dict[str, str]:
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    feed = load_feed(ROOT / "feeds" / "acme-sunrise-medical.yaml")
    feed = feed.model_copy(update={"encryption": feed.encryption.model_copy(
        update={"signer_fingerprint": demo_keys.signer_fingerprint})})
    (feeds / "acme-sunrise-medical.yaml").write_text(yaml.safe_dump(feed.model_dump(mode="json"), sort_keys=False))
    data = tmp_path / "var"
    data.mkdir()
    return {"CARRIERFEEDS_FEEDS_DIR": str(feeds), "CARRIERFEEDS_MAPPINGS_DIR": str(ROOT / "mappings"),
            "CARRIERFEEDS_SCHEMAS_DIR": str(ROOT / "schemas"), "CARRIERFEEDS_DATA_DIR": str(data),
            "CARRIERFEEDS_GNUPG_HOME": str(demo_keys.ours.home),
            "CARRIERFEEDS_LEDGER_URL": ledger_url}


def _canary_census(env: dict[str, str]) -> None:
    """A census waiting in the feed's own drop folder, every value a canary: the packet must never read it."""
    drop = Path(env["CARRIERFEEDS_DATA_DIR"]) / "inbound" / "acme"
    drop.mkdir(parents=True)
    rows = [dict.fromkeys(CANONICAL_COLUMNS, "") | {
        "member_id": "CANARYID1", "subscriber_id": "CANARYID1", "relationship": "EE", "last_name": CANARY,
        "first_name": CANARY, "ssn": "778451234", "dob": "1980-01-01", "gender": "F", "address1": f"1 {CANARY} ST",
        "city": "SPRINGFIELD", "state": "IL", "zip": "62701", "plan_code": "MED-PPO", "coverage_level": "EMP",
        "coverage_start": "2026-01-01"}]
    pd.DataFrame(rows, columns=list(CANONICAL_COLUMNS)).to_csv(drop / "census_20261119.csv", index=False)


CANARY = "CANARYSURNAMEQX"


def test_certify_builds_records_and_verifies_a_packet(env: dict[str, str], tmp_path: Path) -> None:
    assert runner.invoke(app, ["db", "upgrade"], env=env).exit_code == 0
    _canary_census(env)
    out = tmp_path / "packet"
    built = runner.invoke(app, ["certify", "acme-sunrise-medical", "--out", str(out), "--seed", "3",
                                "--as-of", "2026-11-20", "--by", "onboarding-team", "--json"], env=env)
    assert built.exit_code == 0, built.output
    summary = json.loads(built.output)
    assert summary["ok"] and summary["as_of"] == "2026-11-20" and len(summary["scenarios"]) == 10
    assert [n["slug"] for n in summary["not_applicable"]] == ["cobra-event"]

    events = Ledger.open(env["CARRIERFEEDS_LEDGER_URL"]).audit_events(action="certification_packet_built")
    assert len(events) == 1
    event = events[0]
    assert (event.actor, event.object_type, event.object_id) == ("onboarding-team", "feed", "acme-sunrise-medical")
    assert event.detail["manifest_sha256"] == summary["manifest_sha256"]
    assert event.detail["seed"] == 3 and event.detail["scenarios"] == 10
    # No member data in the ledger, even synthetic: no name or id from the packet's files.
    manifest = json.loads((out / "manifest.json").read_text())
    first = json.loads((out / manifest["scenarios"][0]["expected_json"]).read_text())["members"][0]
    assert first["member_id"] not in json.dumps(event.detail)
    # The feed's real census is never read: nothing of it in any file of the packet.
    for path in out.iterdir():
        data = path.read_bytes()
        assert CANARY.encode() not in data and b"CANARYID1" not in data and b"778451234" not in data, path.name

    verified = runner.invoke(app, ["certify", "--verify", str(out), "--json"], env=env)
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.output)["ok"]

    (out / manifest["scenarios"][1]["file"]).write_bytes(b"ISA*tampered~")
    refused = runner.invoke(app, ["certify", "--verify", str(out)], env=env)
    assert refused.exit_code == 3
    assert f"{manifest['scenarios'][1]['file']}: sha256 differs from the manifest" in refused.output

    again = runner.invoke(app, ["certify", "acme-sunrise-medical", "--out", str(out)], env=env)
    assert again.exit_code == 2 and "not a new or empty folder" in again.output


def test_deliver_is_refused_without_a_test_endpoint(env: dict[str, str], tmp_path: Path) -> None:
    result = runner.invoke(app, ["certify", "acme-sunrise-medical", "--out", str(tmp_path / "p"), "--deliver"],
                           env=env)
    assert result.exit_code == 2
    assert "no test endpoint" in result.output
    assert not (tmp_path / "p").exists()


def test_usage_errors_exit_2(env: dict[str, str], tmp_path: Path) -> None:
    assert runner.invoke(app, ["certify", "acme-sunrise-medical"], env=env).exit_code == 2
    assert runner.invoke(app, ["certify", "acme-sunrise-medical", "--verify", str(tmp_path)], env=env).exit_code == 2
