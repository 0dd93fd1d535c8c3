"""The console's roles under Airflow's FAB auth manager, on a real ``airflow api-server``: the
permissions made by ``python -m carrierfeeds.console.airflow_plugin fab-permissions`` and granted with
``airflow roles add-perms`` exactly as docs/console.md shows. An "Auditor" role reads every page and is
refused the hand-off confirm; "Op" with ``can_edit`` confirms; a Viewer without the console's
permission reads nothing. Skipped where the FAB provider is not installed."""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from console_helpers import ROOT, SUNRISE, Workspace, make_workspace
from test_console_airflow import _entry_point_dist, _free_port

from carrierfeeds.ledger import Ledger

pytestmark = [pytest.mark.slow, pytest.mark.airflow,
              pytest.mark.skipif(importlib.util.find_spec("airflow.providers.fab") is None,
                                 reason="the FAB auth manager (apache-airflow-providers-fab) is not installed")]
AIRFLOW = [sys.executable, "-m", "airflow"]
FAB = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
USERS = {"olivia": ("Op", "ops-fab-password-1"), "audrey": ("Auditor", "auditor-fab-password-2"),
         "victor": ("Viewer", "viewer-fab-password-3")}
#: docs/console.md's commands, word for word.
GRANTS = [["roles", "create", "Auditor"],
          ["roles", "add-perms", "Auditor", "-a", "can_read", "-r", "Carrierfeeds Console", "DAGs", "DAG Runs",
           "Website"],
          ["roles", "add-perms", "Op", "-a", "can_read", "can_edit", "-r", "Carrierfeeds Console"]]


@dataclass(frozen=True)
class FabServer:
    base: str
    ws: Workspace


def _run(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.fixture
def fab_server(tmp_path: Path) -> Iterator[FabServer]:
    ws = make_workspace(tmp_path / "ws", f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    site = tmp_path / "site"
    _entry_point_dist(site)
    home = tmp_path / "airflow-home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CARRIERFEEDS_"))}
    env.update(ws.env())
    env.update({
        "PYTHONPATH": os.pathsep.join([str(site), str(ROOT / "src"), env.get("PYTHONPATH", "")]),
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"), "AIRFLOW__CORE__AUTH_MANAGER": FAB,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False", "AIRFLOW__CORE__LAZY_LOAD_PLUGINS": "False",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32), "GX_ANALYTICS_ENABLED": "False",
    })
    _run([*AIRFLOW, "db", "migrate"], env)
    made = _run([sys.executable, "-m", "carrierfeeds.console.airflow_plugin", "fab-permissions"], env)
    assert "can_read on Carrierfeeds Console" in made and "can_edit on Carrierfeeds Console" in made
    for grant in GRANTS:
        _run([*AIRFLOW, *grant], env)
    for name, (role, password) in USERS.items():
        _run([*AIRFLOW, "users", "create", "-u", name, "-p", password, "-f", name, "-l", "Test", "-r", role,
              "-e", f"{name}@example.invalid"], env)
    roles = json.loads(_run([*AIRFLOW, "roles", "list", "-p", "-o", "json"], env).strip().splitlines()[-1])
    granted = {(r["name"], r["resource"]): set(r["action"].split(",")) for r in roles}
    assert granted[("Auditor", "Carrierfeeds Console")] == {"can_read"}
    assert {"can_read", "can_edit"} <= granted[("Op", "Carrierfeeds Console")]
    assert ("Viewer", "Carrierfeeds Console") not in granted

    port = _free_port()
    log = (tmp_path / "api-server.log").open("wb")
    proc = subprocess.Popen([*AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, (tmp_path / "api-server.log").read_text(errors="replace")[-4000:]
            try:
                if httpx.get(f"{base}/api/v2/monitor/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "api-server.log").read_text(errors="replace")[-4000:]
            time.sleep(1)
        yield FabServer(base=base, ws=ws)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _cookies(base: str, user: str) -> dict[str, str]:
    response = httpx.post(f"{base}/auth/token", json={"username": user, "password": USERS[user][1]}, timeout=60)
    assert response.status_code == 201, response.text
    return {"_token": str(response.json()["access_token"])}


def test_fab_auditor_reads_and_cannot_confirm_ops_confirms(fab_server: FabServer) -> None:
    base, ws = fab_server.base, fab_server.ws
    auditor = _cookies(base, "audrey")
    for path in ("/", f"/feeds/{SUNRISE}", "/audit", "/handoffs"):
        page = httpx.get(f"{base}/carrierfeeds{path}", cookies=auditor, timeout=120)
        assert page.status_code == 200, (path, page.text[:500])
    page = httpx.get(f"{base}/carrierfeeds/handoffs", cookies=auditor, timeout=60).text
    assert 'name="received_by"' not in page and "read only" in page
    refused = httpx.post(f"{base}/carrierfeeds/handoffs/{ws.handoffs[0]}/confirm", cookies=auditor, timeout=60,
                         data={"method": "courier", "received_by": "clerk"})
    assert refused.status_code == 403 and "edit permission" in refused.text

    viewer = _cookies(base, "victor")  # Airflow's Viewer, never granted the console
    assert httpx.get(f"{base}/carrierfeeds/", cookies=viewer, timeout=60).status_code == 403

    ops = _cookies(base, "olivia")
    page = httpx.get(f"{base}/carrierfeeds/handoffs", cookies=ops, timeout=60).text
    assert page.count('name="received_by"') == 2
    csrf = page.split('name="csrf" value="')[1].split('"')[0]
    done = httpx.post(f"{base}/carrierfeeds/handoffs/{ws.handoffs[0]}/confirm", cookies=ops, timeout=60,
                      data={"method": "courier", "received_by": "clerk", "csrf": csrf})
    assert done.status_code == 303, done.text
    ledger = Ledger.open(str(ws.settings.ledger_url))
    try:
        assert [d.delivery_id for d in ledger.pending_handoffs()] == [ws.handoffs[1]]
        assert ledger.delivery_outcomes(delivery_ids=[ws.handoffs[0]])[-1].actor == "olivia"
    finally:
        ledger.close()
