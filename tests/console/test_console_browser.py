"""A headless Chromium (Debian's, driven by Selenium) against the standalone console served by uvicorn
over a real ledger: log in, visit every page, reach the skip link from the keyboard, confirm a hand-off,
and save a screenshot of each page (``CARRIERFEEDS_CONSOLE_SCREENSHOTS=docs/console`` writes the
README's images; by default they go to the test's temporary folder)."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from console_helpers import NORTHWIND, PASSWORDS, ROOT, SUNRISE, TOKEN, Workspace, make_workspace

from carrierfeeds.ledger import Ledger

pytestmark = [pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Workspace]]:
    import uvicorn

    from carrierfeeds.console.app import create_app
    from carrierfeeds.console.auth import StandaloneAuth

    ws = make_workspace(tmp_path, f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    auth = StandaloneAuth(ws.settings.resolved_keys_dir)
    app = create_app(ws.settings, auth=auth, secret=auth.secret,
                     dag_url=lambda request, feed_id: f"http://airflow.invalid/dags/feed__{feed_id}")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}", ws
    server.should_exit = True
    thread.join(timeout=10)


def test_a_browser_logs_in_visits_every_page_and_confirms(served: tuple[str, Workspace], browser: Any,
                                                          tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    def after_submit(locate: Callable[[Any], Any]) -> Any:
        """What ``locate`` finds once the page a form posted to has loaded (a submit returns at once)."""
        return WebDriverWait(browser, 30).until(locate)

    base, ws = served
    shots = Path(os.environ.get("CARRIERFEEDS_CONSOLE_SCREENSHOTS") or tmp_path / "shots")
    if not shots.is_absolute():
        shots = ROOT / shots
    shots.mkdir(parents=True, exist_ok=True)

    def shot(name: str) -> None:
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1440, min(max(int(height), 600), 2400))
        assert browser.save_screenshot(str(shots / f"{name}.png"))
        browser.set_window_size(1440, 900)

    browser.get(f"{base}/")
    assert "/login" in browser.current_url  # no session: the login form
    shot("login")
    browser.find_element(By.ID, "user").send_keys("olivia")
    browser.find_element(By.ID, "password").send_keys(PASSWORDS["olivia"] + Keys.ENTER)
    assert after_submit(lambda b: "/login" not in b.current_url)
    assert browser.find_element(By.TAG_NAME, "h1").text == "Feeds board"

    feeds = len(list(ws.settings.feeds_dir.glob("*.yaml")))
    assert browser.find_element(By.CSS_SELECTOR, "caption").text.startswith(f"{feeds} of {feeds} feeds")
    shot("board")
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)  # the first Tab reaches the skip link
    assert browser.switch_to.active_element.get_attribute("class") == "skip"

    pages = {"feed": (f"/feeds/{NORTHWIND}", f"Feed {NORTHWIND}"), "audit": ("/audit", "Auditors' view"),
             "member": (f"/audit/member?token={TOKEN}", "Member-token lookup"),
             "report": ("/audit/report?since=2026-11-01&until=2026-12-05", None),
             "handoffs": ("/handoffs", "Manual hand-offs")}
    for name, (path, heading) in pages.items():
        browser.get(base + path)
        if heading is not None:
            assert browser.find_element(By.TAG_NAME, "h1").text == heading
        shot(name)
    browser.get(f"{base}/feeds/{SUNRISE}")
    dag = browser.find_element(By.LINK_TEXT, "Open the feed's DAG in Airflow")
    assert f"feed__{SUNRISE}" in dag.get_attribute("href")

    browser.get(f"{base}/handoffs")
    browser.find_element(By.ID, "method-1").send_keys("courier")
    browser.find_element(By.ID, "received-1").send_keys("carrier-clerk")
    browser.find_element(By.CSS_SELECTOR, "form.confirm button").click()
    status = after_submit(lambda b: b.find_elements(By.CSS_SELECTOR, "[role=status]"))[0].text
    assert "recorded as handed off" in status
    shot("handoffs-confirmed")

    ledger = Ledger.open(str(ws.settings.ledger_url))
    assert len(ledger.pending_handoffs()) == 1
    ledger.close()
