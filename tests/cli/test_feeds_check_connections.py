"""`feeds check` checks what a run needs besides the files: connections defined, keys in the keyring, and
with --connect the carrier's real server (a real sshd): pinned host key, working login, nothing uploaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from carrierfeeds.cli import app
from carrierfeeds.config import SftpDelivery
from carrierfeeds.outcomes import ExitCode

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture
def workspace(tmp_path: Path, demo_keys: Any, sshd_server: Any) -> dict[str, Any]:
    """The demo feed pinning generated keys, delivering to its own folder on the loopback sshd."""
    from carrierfeeds.demo import CONNECTION_ID, prepare_workspace

    inbox = sshd_server.root / tmp_path.name[-10:]
    inbox.mkdir()
    keys_dir = tmp_path / "keys"
    sshd_server.write_keys_dir(keys_dir, CONNECTION_ID)
    ws = prepare_workspace(tmp_path / "ws", keys=demo_keys, keys_dir=keys_dir, config_root=ROOT,
                           delivery=SftpDelivery(connection_id=CONNECTION_ID, remote_dir=str(inbox)))
    env = {"CARRIERFEEDS_FEEDS_DIR": str(ws.settings.feeds_dir), "CARRIERFEEDS_MAPPINGS_DIR": str(ROOT / "mappings"),
           "CARRIERFEEDS_SCHEMAS_DIR": str(ROOT / "schemas"), "CARRIERFEEDS_DATA_DIR": str(tmp_path / "ws"),
           "CARRIERFEEDS_KEYS_DIR": str(keys_dir), "CARRIERFEEDS_GNUPG_HOME": str(demo_keys.ours.home)}
    return {"env": env, "keys_dir": keys_dir, "connection": keys_dir / f"{CONNECTION_ID}.json", "inbox": inbox,
            "feed": ws.settings.feeds_dir / f"{ws.feed.feed_id}.yaml", "sshd": sshd_server}


def _check(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any], str]:
    as_json = runner.invoke(app, ["feeds", "check", "--json", *args], env=env)
    text = runner.invoke(app, ["feeds", "check", *args], env=env)
    assert as_json.exit_code == text.exit_code, (as_json.output, text.output)
    return as_json.exit_code, json.loads(as_json.output), text.output


def test_connect_finds_the_pinned_host_key_and_a_working_login_and_uploads_nothing(workspace: dict[str, Any]) -> None:
    code, data, text = _check(workspace["env"], "--connect")
    assert code == ExitCode.OK, text
    (feed,) = data["feeds"]
    (delivery,) = [c for c in feed["connections"] if c["role"] == "delivery"]
    assert delivery["ok"] and delivery["host_key_fingerprint"]
    assert f"host key {delivery['host_key_fingerprint']} is the pinned one, login ok" in text
    assert {c["key"]: c["status"] for c in feed["connections"] if c["role"] == "key"} == {
        "recipient": "ok", "signer": "ok"}
    assert list(workspace["inbox"].iterdir()) == [], "a check uploads nothing"


def test_connect_refuses_a_changed_host_key_before_logging_in(workspace: dict[str, Any], tmp_path: Path) -> None:
    from carrierfeeds.testing.sshd import write_ed25519_key

    sshd = workspace["sshd"]
    other = write_ed25519_key(tmp_path / "impostor")
    (workspace["keys_dir"] / "known_hosts").write_text(f"[{sshd.host}]:{sshd.port} {other}\n")
    assert _check(workspace["env"])[0] == ExitCode.OK  # without --connect the server is not asked
    code, data, text = _check(workspace["env"], "--connect")
    assert code == ExitCode.REFUSED, text
    assert "host key" in data["feeds"][0]["error"] and "refusing before authentication" in text


def test_connect_reports_a_refused_login(workspace: dict[str, Any]) -> None:
    spec = json.loads(workspace["connection"].read_text())
    workspace["connection"].write_text(json.dumps({**spec, "login": "nobody-we-know"}))
    code, data, text = _check(workspace["env"], "--connect")
    assert code == ExitCode.FAILED, text
    assert "authentication failed" in data["feeds"][0]["error"]


def test_a_missing_connection_file_or_key_is_named_without_connecting(workspace: dict[str, Any]) -> None:
    workspace["connection"].unlink()
    code, data, text = _check(workspace["env"])
    assert code == ExitCode.USAGE, text
    assert str(workspace["connection"]) in data["feeds"][0]["error"]
    assert "no credentials for connection 'sunrise_sftp'" in text
    assert _check(workspace["env"], "--config-only")[0] == ExitCode.OK  # the files themselves are fine
    feed = workspace["feed"]
    text_before = feed.read_text()
    unknown = "0123456789ABCDEF0123456789ABCDEF01234567"
    pinned = json.loads(json.dumps(text_before.split("recipient_fingerprint:")[1].split("\n")[0].strip()))
    feed.write_text(text_before.replace(pinned, f"'{unknown}'"))
    code, data, text = _check(workspace["env"])
    assert code == ExitCode.USAGE
    assert f"encryption.recipient_fingerprint {unknown}: missing in the gpg home" in text
    assert "non-zero error code" not in text
