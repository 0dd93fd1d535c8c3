"""The console as an Airflow 3 plugin on a real ``airflow api-server``: registered through the package's
``airflow.plugins`` entry point (no file in dags/ or plugins/), anonymous requests refused, a logged-in
auditor (viewer) reads and cannot confirm, ops (admin) confirms a hand-off."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from console_helpers import ROOT, SUNRISE, Workspace, make_workspace

from carrierfeeds.ledger import Ledger

pytestmark = [pytest.mark.slow, pytest.mark.airflow]
AIRFLOW = [sys.executable, "-m", "airflow"]
PASSWORDS = {"ops": "ops-airflow-pw-1", "audrey": "auditor-airflow-pw-2"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry_point_dist(site: Path) -> None:
    """A distribution that declares only pyproject's ``airflow.plugins`` entry point, as installing the
    package does (the shared venv's editable install predates it)."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["airflow.plugins"]
    info = site / "carrierfeeds_console_entry-0.0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: carrierfeeds-console-entry\nVersion: 0.0.0\n")
    (info / "entry_points.txt").write_text("[airflow.plugins]\n" + "".join(f"{k} = {v}\n" for k, v in declared.items()))


def _token(base: str, user: str) -> str:
    response = httpx.post(f"{base}/auth/token", json={"username": user, "password": PASSWORDS[user]}, timeout=30)
    assert response.status_code == 201, response.text
    return str(response.json()["access_token"])


@dataclass(frozen=True)
class ApiServer:
    base: str
    ws: Workspace


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[ApiServer]:
    """``airflow api-server`` (SQLite metadata, simple auth manager: ops is admin, audrey a viewer) with
    the console registered by entry point, over a console workspace."""
    ws = make_workspace(tmp_path / "ws", f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    site = tmp_path / "site"
    _entry_point_dist(site)
    home = tmp_path / "airflow-home"
    home.mkdir()
    (home / "passwords.json").write_text(json.dumps(PASSWORDS))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CARRIERFEEDS_"))}
    env.update(ws.env())
    env.update({
        "PYTHONPATH": os.pathsep.join([str(site), str(ROOT / "src"), env.get("PYTHONPATH", "")]),
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False", "AIRFLOW__CORE__LAZY_LOAD_PLUGINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "ops:admin,audrey:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32), "GX_ANALYTICS_ENABLED": "False",
    })
    migrate = subprocess.run([*AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
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

        yield ApiServer(base=base, ws=ws)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_plugin_on_a_real_api_server(api_server: ApiServer) -> None:
    base, ws = api_server.base, api_server.ws
    # Anonymous: a browser is sent to Airflow's login, anything else gets 401.
    browser = httpx.get(f"{base}/carrierfeeds/", headers={"accept": "text/html"}, timeout=30)
    assert browser.status_code == 303 and "/auth/login" in browser.headers["location"]
    assert httpx.get(f"{base}/carrierfeeds/", timeout=30).status_code == 401
    assert httpx.get(f"{base}/carrierfeeds/", cookies={"_token": "not.a.jwt"}, timeout=30).status_code == 401

    # The plugin and its navigation entry are registered.
    ops = {"_token": _token(base, "ops")}
    plugins = httpx.get(f"{base}/api/v2/plugins", cookies=ops, timeout=30).json()
    mine = [p for p in plugins["plugins"] if p["name"] == "carrierfeeds_console"]
    assert mine and mine[0]["external_views"][0]["href"] == "carrierfeeds/"

    auditor = {"_token": _token(base, "audrey")}
    board = httpx.get(f"{base}/carrierfeeds/", cookies=auditor, timeout=60)
    assert board.status_code == 200 and SUNRISE in board.text
    assert f'href="/dags/feed__{SUNRISE}"' in board.text
    page = httpx.get(f"{base}/carrierfeeds/handoffs", cookies=auditor, timeout=30).text
    assert 'name="received_by"' not in page and "read only" in page
    refused = httpx.post(f"{base}/carrierfeeds/handoffs/{ws.handoffs[0]}/confirm", cookies=auditor, timeout=30,
                         data={"method": "courier", "received_by": "clerk"})
    assert refused.status_code == 403 and "edit permission" in refused.text

    page = httpx.get(f"{base}/carrierfeeds/handoffs", cookies=ops, timeout=30).text
    assert page.count('name="received_by"') == 2
    csrf = page.split('name="csrf" value="')[1].split('"')[0]
    done = httpx.post(f"{base}/carrierfeeds/handoffs/{ws.handoffs[0]}/confirm", cookies=ops, timeout=30,
                      data={"method": "courier", "received_by": "clerk", "csrf": csrf})
    assert done.status_code == 303, done.text
    ledger = Ledger.open(str(ws.settings.ledger_url))
    assert [d.delivery_id for d in ledger.pending_handoffs()] == [ws.handoffs[1]]
    assert ledger.delivery_outcomes(delivery_ids=[ws.handoffs[0]])[-1].actor == "ops"
    ledger.close()


def test_a_browser_logs_in_to_airflow_and_uses_the_console(api_server: ApiServer, browser: Any,
                                                           tmp_path: Path) -> None:
    """Airflow's own login page, then the console inside Airflow's UI (its navigation entry) and every
    page of the mounted app; ops confirms a hand-off. Screenshots as in test_console_browser."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    base, ws = api_server.base, api_server.ws
    shots = Path(os.environ.get("CARRIERFEEDS_CONSOLE_SCREENSHOTS") or tmp_path / "shots")
    shots = shots if shots.is_absolute() else ROOT / shots
    shots.mkdir(parents=True, exist_ok=True)
    wait = WebDriverWait(browser, 60)

    browser.get(f"{base}/carrierfeeds/")
    password = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "input[type=password]")))
    assert "/auth/login" in browser.current_url
    browser.find_element(By.CSS_SELECTOR, "input:not([type=password])").send_keys("ops")
    password.send_keys(PASSWORDS["ops"])
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda b: "/carrierfeeds/" in b.current_url and b.find_elements(By.TAG_NAME, "h1"))
    assert browser.find_element(By.TAG_NAME, "h1").text == "Feeds board"

    browser.get(f"{base}/plugin/carrierfeeds")  # the navigation entry: the console inside Airflow's UI
    frame = wait.until(ec.presence_of_element_located((By.TAG_NAME, "iframe")))
    time.sleep(3)  # the UI's own data requests settle before the picture
    browser.save_screenshot(str(shots / "airflow-nav.png"))
    browser.switch_to.frame(frame)
    wait.until(ec.presence_of_element_located((By.TAG_NAME, "h1")))
    assert browser.find_element(By.TAG_NAME, "h1").text == "Feeds board"
    browser.switch_to.default_content()

    for path, heading in ((f"feeds/{SUNRISE}", f"Feed {SUNRISE}"), ("audit", "Auditors' view"),
                          ("audit/member?token=m_0123456789abcdef", "Member-token lookup"),
                          ("handoffs", "Manual hand-offs")):
        browser.get(f"{base}/carrierfeeds/{path}")
        assert browser.find_element(By.TAG_NAME, "h1").text == heading
    browser.find_element(By.ID, "method-1").send_keys("courier")
    browser.find_element(By.ID, "received-1").send_keys("carrier-clerk")
    browser.find_element(By.CSS_SELECTOR, "form.confirm button").click()
    status = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "[role=status]")))
    assert "recorded as handed off" in status.text
    ledger = Ledger.open(str(ws.settings.ledger_url))
    assert len(ledger.pending_handoffs()) == 1
    assert ledger.delivery_outcomes(delivery_ids=[ws.handoffs[0]])[-1].actor == "ops"
    ledger.close()
