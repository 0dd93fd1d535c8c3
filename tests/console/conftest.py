"""Console fixtures: a workspace over a real SQLite ledger and the standalone app in FastAPI's TestClient."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from console_helpers import Workspace, make_workspace
from fastapi.testclient import TestClient

from carrierfeeds.console.app import create_app
from carrierfeeds.console.auth import StandaloneAuth


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path, f"sqlite:///{tmp_path / 'ledger.sqlite'}")


@pytest.fixture
def client(workspace: Workspace) -> Iterator[TestClient]:
    auth = StandaloneAuth(workspace.settings.resolved_keys_dir)
    app = create_app(workspace.settings, auth=auth, secret=auth.secret)
    with TestClient(app, follow_redirects=False) as test_client:
        yield test_client


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's headless chromium through its chromedriver (Selenium), 1440 x 900."""
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (scripts/setup.sh installs them)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1440,900", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
