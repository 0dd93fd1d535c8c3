"""`carrierfeeds feeds lifecycle / certify --approve / suspend / resume` and the lifecycle on `status`:
JSON for machines, exit codes per outcomes.py, the history in the ledger (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from carrierfeeds.cli import app
from carrierfeeds.outcomes import ExitCode

ROOT = Path(__file__).resolve().parents[2]
FEED = "acme-sunrise-medical"
TEST_ENDPOINT = ("  test:\n"
                 "    kind: sftp\n"
                 "    connection_id: sunrise_test_sftp\n"
                 "    remote_dir: /test/inbox\n")
runner = CliRunner()


def _config(tmp_path: Path, *, lifecycle: str | None, test_endpoint: bool) -> dict[str, str]:
    for name in ("feeds", "mappings", "schemas"):
        shutil.copytree(ROOT / name, tmp_path / name)
    feed = tmp_path / "feeds" / f"{FEED}.yaml"
    text = feed.read_text()
    anchor = "  remote_dir: /inbox\n"
    assert anchor in text
    if test_endpoint:
        text = text.replace(anchor, anchor + TEST_ENDPOINT)
    if lifecycle:
        text += f"lifecycle:\n  initial: {lifecycle}\n"
    feed.write_text(text)
    return {"CARRIERFEEDS_FEEDS_DIR": str(tmp_path / "feeds"), "CARRIERFEEDS_MAPPINGS_DIR": str(tmp_path / "mappings"),
            "CARRIERFEEDS_SCHEMAS_DIR": str(tmp_path / "schemas"), "CARRIERFEEDS_DATA_DIR": str(tmp_path / "var"),
            "CARRIERFEEDS_KEYS_DIR": str(tmp_path / "keys")}


def _invoke(env: dict[str, str], *args: str) -> tuple[int, Any]:
    result = runner.invoke(app, list(args), env=env)
    try:
        return result.exit_code, json.loads(result.output)
    except json.JSONDecodeError:
        return result.exit_code, result.output


def test_a_testing_feed_without_a_test_endpoint_fails_the_config_check(tmp_path: Path) -> None:
    env = _config(tmp_path / "bad", lifecycle="testing", test_endpoint=False)
    code, out = _invoke(env, "feeds", "check", "--json")
    assert code == ExitCode.USAGE
    [verdict] = [f for f in out["feeds"] if Path(f["file"]).stem == FEED]
    assert not verdict["ok"] and "delivery.test" in verdict["error"] and "lifecycle.initial" in verdict["error"]

    good = _config(tmp_path / "good", lifecycle="testing", test_endpoint=True)
    code, out = _invoke(good, "feeds", "check", "--config-only", "--json")
    assert code == ExitCode.OK and out["ok"], out
    # Without --config-only the test endpoint's connection must be defined, like the delivery's.
    code, out = _invoke(good, "feeds", "check", "--json")
    assert code == ExitCode.USAGE
    assert "test delivery connection sunrise_test_sftp" in json.dumps(out), out


def test_lifecycle_commands_record_the_history_the_cli_and_status_show(tmp_path: Path, ledger_url: str) -> None:
    env = {**_config(tmp_path, lifecycle="testing", test_endpoint=True), "CARRIERFEEDS_LEDGER_URL": ledger_url}

    code, out = _invoke(env, "feeds", "lifecycle", FEED, "--json")
    assert code == ExitCode.OK and out["state"] == "testing" and out["history"] == []

    # Incomplete approvals are usage errors and record nothing.
    assert _invoke(env, "feeds", "certify", FEED, "--by", "dana", "--reference", "CERT-4411")[0] == ExitCode.USAGE
    assert _invoke(env, "feeds", "certify", FEED, "--approve", "--by", "dana")[0] == ExitCode.USAGE
    assert _invoke(env, "feeds", "certify", FEED, "--approve", "--by", "dana", "--reference", "CERT-4411",
                   "--go-live", "2026-13-01")[0] == ExitCode.USAGE

    code, out = _invoke(env, "feeds", "certify", FEED, "--approve", "--by", "dana", "--reference",
                        "Sunrise EDI sign-off CERT-4411", "--go-live", "2026-12-10", "--json")
    assert code == ExitCode.OK, out
    assert (out["state"], out["go_live"]) == ("certified", "2026-12-10")

    code, out = _invoke(env, "feeds", "suspend", FEED, "--by", "ops", "--reason", "carrier asked", "--json")
    assert code == ExitCode.OK and out["state"] == "suspended" and out["suspended_from"] == "certified"
    code, out = _invoke(env, "feeds", "suspend", FEED, "--by", "ops", "--reason", "again", "--json")
    assert code == ExitCode.REFUSED and out["code"] == "lifecycle" and out["state"] == "suspended"
    code, out = _invoke(env, "feeds", "certify", FEED, "--approve", "--by", "dana", "--reference", "X", "--json")
    assert code == ExitCode.REFUSED and out["code"] == "lifecycle"
    code, out = _invoke(env, "feeds", "resume", FEED, "--by", "ops", "--json")
    assert code == ExitCode.OK and out["state"] == "certified" and out["go_live"] == "2026-12-10"

    code, text = _invoke(env, "feeds", "lifecycle", FEED)
    assert code == ExitCode.OK
    assert text.splitlines()[0] == f"{FEED}: certified (go-live 2026-12-10)"
    assert "approved  -> certified  by dana  go-live 2026-12-10  ref: Sunrise EDI sign-off CERT-4411" in text
    assert "suspended -> suspended  by ops" in text and "resumed   -> certified  by ops" in text

    code, board = _invoke(env, "status", "--json")
    row = next(r for r in board["feeds"] if r["feed_id"] == FEED)
    assert row["lifecycle"]["state"] == "certified" and row["lifecycle"]["go_live"] == "2026-12-10"
    assert [e["action"] for e in row["lifecycle"]["history"]] == ["approved", "suspended", "resumed"]
    other = next(r for r in board["feeds"] if r["feed_id"] != FEED)
    assert other["lifecycle"] == {"state": "unmanaged", "go_live": None, "history": []}
    code, table = _invoke(env, "status")
    assert "lifecycle" in table.splitlines()[1] and "certified (go-live 2026-12-10)" in table
    assert f"lifecycle {FEED}: resumed -> certified at " in table and "by ops; 3 change(s)" in table


def test_an_unmanaged_feed_is_declared_production_once(tmp_path: Path) -> None:
    env = _config(tmp_path, lifecycle=None, test_endpoint=False)
    code, out = _invoke(env, "feeds", "lifecycle", FEED, "--json")
    assert code == ExitCode.OK and out["state"] == "unmanaged"
    assert _invoke(env, "feeds", "lifecycle", FEED, "--declare", "production")[0] == ExitCode.USAGE  # no --by
    code, out = _invoke(env, "feeds", "lifecycle", FEED, "--declare", "production", "--by", "ops", "--reference",
                        "live since 2025", "--json")
    assert code == ExitCode.OK and out["state"] == "production"
    assert [(e["action"], e["actor"], e["reference"]) for e in out["history"]] == \
        [("declared", "ops", "live since 2025")]
    # Without a test endpoint there is nowhere to send tests: back to testing is refused.
    code, out = _invoke(env, "feeds", "lifecycle", FEED, "--declare", "testing", "--by", "ops", "--json")
    assert code == ExitCode.REFUSED and "test endpoint" in out["message"]


@pytest.mark.parametrize("args", [["feeds", "lifecycle"], ["feeds", "certify"], ["feeds", "suspend"],
                                  ["feeds", "resume"]])
def test_lifecycle_commands_name_an_unknown_feed(tmp_path: Path, args: list[str]) -> None:
    env = _config(tmp_path, lifecycle=None, test_endpoint=False)
    extra = {"certify": ["--approve", "--by", "a", "--reference", "b"], "suspend": ["--by", "a", "--reason", "b"],
             "resume": ["--by", "a"]}.get(args[1], [])
    code, out = _invoke(env, *args, "acme-sunrise-medicl", *extra, "--json")
    assert code == ExitCode.USAGE and "did you mean 'acme-sunrise-medical'" in out["message"]
