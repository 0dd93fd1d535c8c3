"""Under Airflow the notice's mail server is an Airflow SMTP connection: ``security`` from its extra, else
the SMTP provider's ``disable_ssl``/``disable_tls``; an id that resolves to nothing is a ConfigError.
Run in a process of its own with its own AIRFLOW_HOME (Airflow reads its settings once per process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.airflow]

PROBE = """
import json
from carrierfeeds.airflow import AirflowConnections
from carrierfeeds.errors import ConfigError
out = {}
for cid in ("tpa_mail", "tpa_mail_ssl", "tpa_mail_plain"):
    t = AirflowConnections().smtp(cid)
    out[cid] = [t.host, t.port, t.security, t.login]
try:
    AirflowConnections().smtp("no_such_mail")
except ConfigError as exc:
    out["missing"] = exc.message
print(json.dumps(out))
"""


def test_airflow_smtp_connections(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CARRIERFEEDS_"))}
    env.update({
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW_CONN_TPA_MAIL": json.dumps({"conn_type": "smtp", "host": "smtp.tpa.example", "port": 2525,
                                             "login": "feeds", "password": "secret-pw",
                                             "extra": {"disable_ssl": True}}),
        "AIRFLOW_CONN_TPA_MAIL_SSL": json.dumps({"conn_type": "smtp", "host": "smtp.tpa.example"}),
        "AIRFLOW_CONN_TPA_MAIL_PLAIN": json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": 25,
                                                   "extra": {"security": "none"}}),
    })
    ran = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300,
                         check=False)
    assert ran.returncode == 0, ran.stderr[-2000:]
    out = json.loads(ran.stdout.strip().splitlines()[-1])
    assert out["tpa_mail"] == ["smtp.tpa.example", 2525, "starttls", "feeds"]
    assert out["tpa_mail_ssl"] == ["smtp.tpa.example", 465, "ssl", None]  # the provider's default: SSL
    assert out["tpa_mail_plain"] == ["127.0.0.1", 25, "none", None]
    assert "'no_such_mail' is not defined" in out["missing"]
    assert "secret-pw" not in ran.stdout + ran.stderr
