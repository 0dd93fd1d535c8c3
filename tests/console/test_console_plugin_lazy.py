"""The console's Airflow plugin is cheap to load: every Airflow process loads plugins (each task's under
Celery), so the console app, and FastAPI with it, is built on its first request, not at import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from console_helpers import Workspace
from fastapi import FastAPI
from fastapi.testclient import TestClient

from carrierfeeds.demo import demo_environment

STATIC = Path(__file__).resolve().parents[2] / "src" / "carrierfeeds" / "console" / "static"
STYLESHEET = "console.css"


def test_loading_the_plugin_imports_neither_fastapi_nor_the_app() -> None:
    probe = ("import sys, json; from carrierfeeds.console.airflow_plugin import CarrierfeedsConsolePlugin as p; "
             "print(json.dumps([m for m in ('fastapi', 'starlette', 'carrierfeeds.console.app') "
             "if m in sys.modules] + [type(p.fastapi_apps[0]['app']).__name__]))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                                       text=True, timeout=300).stdout)
    assert loaded == ["LazyConsole"]


def test_the_console_is_built_once_on_its_first_request(workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    from carrierfeeds.console import airflow_plugin

    for name, value in demo_environment(workspace.settings).items():
        monkeypatch.setenv(name, value)
    built: list[Any] = []
    real = airflow_plugin.build_app

    def counting() -> FastAPI:
        built.append(real())
        return built[-1]

    monkeypatch.setattr(airflow_plugin, "build_app", counting)
    console = airflow_plugin.LazyConsole()
    root = FastAPI()
    root.mount(airflow_plugin.URL_PREFIX, console)
    assert built == []
    with TestClient(root) as client:
        # The console's own stylesheet, served by the console built on this first request (its pages ask
        # Airflow's auth manager, which only the api-server has: tests/console/test_console_airflow.py).
        first = client.get(f"/carrierfeeds/static/{STYLESHEET}")
        assert first.status_code == 200 and first.content == (STATIC / STYLESHEET).read_bytes()
        assert client.get("/carrierfeeds/static/missing.css").status_code == 404
        # Pages find the console's routes from the router it is mounted on, as Airflow's api-server has it.
        assert root.url_path_for("static", path=STYLESHEET) == f"/carrierfeeds/static/{STYLESHEET}"
    assert len(built) == 1 and console.app is built[0]
