"""Console fixtures: a workspace over a real SQLite ledger and the standalone app in FastAPI's TestClient."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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
