"""Connections: the keys directory's webhook lookup without Airflow, and the library importing no Airflow."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from carrierfeeds.credentials import KeysDirConnections, StaticConnections, WebhookTarget
from carrierfeeds.errors import ConfigError
from carrierfeeds.notify import webhook_target


def test_a_webhook_connection_resolves_from_airflows_json_form(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_CF_HOOK", json.dumps({
        "conn_type": "http", "host": "hooks.example.test", "port": 8443, "schema": "https", "login": "ops",
        "password": "s3cret", "extra": {"endpoint": "/carrierfeeds"}}))
    target = KeysDirConnections(tmp_path).webhook("cf_hook")
    assert target.url == "https://hooks.example.test:8443/carrierfeeds"
    assert target.headers == {"Authorization": "Basic " + base64.b64encode(b"ops:s3cret").decode()}


def test_a_webhook_connection_resolves_from_airflows_uri_form(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_CF_HOOK", "http://hooks.example.test/http?endpoint=hook")
    assert KeysDirConnections(tmp_path).webhook("cf_hook") == WebhookTarget("http://hooks.example.test/hook", {})


def test_an_undefined_webhook_connection_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_NO_SUCH_HOOK", raising=False)
    for connections in (KeysDirConnections(tmp_path), StaticConnections()):
        with pytest.raises(ConfigError, match="webhook connection 'no_such_hook' is not defined"):
            webhook_target(connections, connection_id="no_such_hook")
    assert webhook_target(StaticConnections(), url="http://x.test/h") == WebhookTarget("http://x.test/h")


def test_the_library_imports_no_airflow() -> None:
    """Only carrierfeeds.airflow imports Airflow: notices, arrival checks and runs stay cheap to import."""
    probe = ("import sys\n"
             "import carrierfeeds.notify, carrierfeeds.ops.arrival, carrierfeeds.run, carrierfeeds.credentials\n"
             "import carrierfeeds.acknowledgments, carrierfeeds.reconcile.alert, carrierfeeds.cli\n"
             "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
