"""`feeds check` names a mapping's notice connections (webhook, mail server) that a run could not resolve,
before any run sends a file whose notice would then fail."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from carrierfeeds.cli import app
from carrierfeeds.config import SftpDelivery
from carrierfeeds.outcomes import ExitCode

ROOT = Path(__file__).resolve().parents[2]


def test_feeds_check_names_undefined_notice_connections(tmp_path: Path, demo_keys: Any, sshd_server: Any) -> None:
    from carrierfeeds.demo import CONNECTION_ID, prepare_workspace

    inbox = sshd_server.root / tmp_path.name[-10:]
    inbox.mkdir()
    keys_dir = tmp_path / "keys"
    sshd_server.write_keys_dir(keys_dir, CONNECTION_ID)
    ws = prepare_workspace(tmp_path / "ws", keys=demo_keys, keys_dir=keys_dir, config_root=ROOT,
                           delivery=SftpDelivery(connection_id=CONNECTION_ID, remote_dir=str(inbox)))
    mappings = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", mappings)
    m = mappings / "sunrise-health.yaml"
    m.write_text(m.read_text() + """notice:
  send:
    webhook: {connection_id: sunrise_notice}
    email: {connection_id: tpa_mail, to: [elig@sunrise.example], from_address: feeds@tpa.example}
""")
    env = {"CARRIERFEEDS_FEEDS_DIR": str(ws.settings.feeds_dir), "CARRIERFEEDS_MAPPINGS_DIR": str(mappings),
           "CARRIERFEEDS_SCHEMAS_DIR": str(ROOT / "schemas"), "CARRIERFEEDS_DATA_DIR": str(tmp_path / "ws"),
           "CARRIERFEEDS_KEYS_DIR": str(keys_dir), "CARRIERFEEDS_GNUPG_HOME": str(demo_keys.ours.home)}
    runner = CliRunner()
    missing = runner.invoke(app, ["feeds", "check", "--json"], env=env)
    assert missing.exit_code == ExitCode.USAGE, missing.output
    [feed] = json.loads(missing.output)["feeds"]
    assert {(c["role"], c["ok"]) for c in feed["connections"] if c["role"].startswith("notice")} == {
        ("notice webhook", False), ("notice smtp", False)}
    assert "notice smtp connection tpa_mail" in feed["error"] and "sunrise_notice" in feed["error"]

    (keys_dir / "tpa_mail.json").write_text(json.dumps({"host": "smtp.tpa.example"}))
    (keys_dir / "tpa_mail.json").chmod(0o600)
    env["AIRFLOW_CONN_SUNRISE_NOTICE"] = json.dumps({"host": "https://hooks.sunrise.example"})
    defined = runner.invoke(app, ["feeds", "check"], env=env)
    assert defined.exit_code == ExitCode.OK, defined.output
    assert "notice smtp connection tpa_mail: defined" in defined.output
    assert runner.invoke(app, ["feeds", "check", "--config-only"], env={**env, "CARRIERFEEDS_KEYS_DIR": str(
        tmp_path / "nowhere")}).exit_code == ExitCode.OK  # a checkout without secrets
