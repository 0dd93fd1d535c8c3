"""Airflow: the DAG folder imports cleanly, and the demo feed's DAG runs with Airflow's own dag.test().

Airflow reads its configuration once per process, so each test drives it in a fresh interpreter with
its own AIRFLOW_HOME (SQLite metadata database) and our settings in the environment.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.airflow]

ROOT = Path(__file__).resolve().parents[1]


def _airflow_env(tmp_path: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    home = tmp_path / "airflow-home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CARRIERFEEDS_"))}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "GX_ANALYTICS_ENABLED": "False",
        **(extra or {}),
    })
    return env


def _run_python(code: str, env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter; its last ``RESULT {json}`` line, plus its whole output."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    marker = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and marker, f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    result: dict[str, Any] = json.loads(marker[-1][len("RESULT "):])
    result["_output"] = proc.stdout + proc.stderr
    return result


def test_dagbag_has_one_dag_per_feed_with_retries_and_timeouts(tmp_path: Path) -> None:
    env = _airflow_env(tmp_path, {"CARRIERFEEDS_FEEDS_DIR": str(ROOT / "feeds")})
    result = _run_python("""
        import json
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag()
        out = {"errors": {k: str(v)[:300] for k, v in bag.import_errors.items()}, "dags": {}}
        for dag_id, dag in bag.dags.items():
            out["dags"][dag_id] = {
                "tasks": [t.task_id for t in dag.tasks],
                "retries": [t.retries for t in dag.tasks],
                "timeouts": [t.execution_timeout.total_seconds() if t.execution_timeout else None
                             for t in dag.tasks],
                "tags": sorted(dag.tags), "schedule": str(getattr(dag.timetable, "description", "")),
            }
        print("RESULT " + json.dumps(out))
    """, env, ROOT)
    assert result["errors"] == {}
    feeds = sorted(p.stem for p in (ROOT / "feeds").glob("*.yaml"))
    assert sorted(result["dags"]) == [f"feed__{f}" for f in feeds]
    for info in result["dags"].values():
        assert info["tasks"] == ["stage_census", "validate", "build", "conformance", "encrypt", "deliver",
                                 "confirm"]
        assert all(r >= 1 for r in info["retries"])
        assert all(t is not None and t > 0 for t in info["timeouts"])
        assert any(tag.startswith("employer:") for tag in info["tags"])


def test_demo_feed_dag_test_delivers_and_keeps_phi_out_of_airflow(tmp_path: Path, demo_keys: Any,
                                                                    sshd_server: Any) -> None:
    from carrierfeeds.census.generate import generate_census, write_census_csv
    from carrierfeeds.config import SftpDelivery
    from carrierfeeds.demo import CONNECTION_ID, DEMO_FEED, prepare_workspace

    inbox = sshd_server.root / "airflow-test"
    inbox.mkdir(exist_ok=True)
    ws = prepare_workspace(tmp_path / "ws", keys=demo_keys, keys_dir=tmp_path / "unused-keys", config_root=ROOT,
                           delivery=SftpDelivery(connection_id=CONNECTION_ID, remote_dir=str(inbox)))
    day = pd.Timestamp("2026-11-20").date()
    census = generate_census(40, 21, as_of=day)
    canaries = {"ssn": "123456780", "first_name": "Quillonius", "dob": "1971-03-14",
                "address1": "4242 Canary Wharf Lane"}
    first_member = census["member_id"] == census.loc[0, "member_id"]
    for column, value in canaries.items():
        census.loc[first_member, column] = value
    write_census_csv(census, ws.inbound / "census_20261120.csv")

    endpoint = sshd_server.endpoint()
    conn = {"conn_type": "sftp", "host": endpoint.host, "port": endpoint.port, "login": endpoint.username,
            "extra": {"key_file": str(endpoint.private_key_path), "known_hosts": endpoint.known_hosts}}
    s = ws.settings
    env = _airflow_env(tmp_path, {
        "CARRIERFEEDS_FEEDS_DIR": str(s.feeds_dir), "CARRIERFEEDS_MAPPINGS_DIR": str(s.mappings_dir),
        "CARRIERFEEDS_SCHEMAS_DIR": str(s.schemas_dir), "CARRIERFEEDS_DATA_DIR": str(s.data_dir),
        "CARRIERFEEDS_GNUPG_HOME": str(s.gnupg_home), "CARRIERFEEDS_KEYS_DIR": str(tmp_path / "keys"),
        f"AIRFLOW_CONN_{CONNECTION_ID.upper()}": json.dumps(conn),
    })
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True,
                   capture_output=True, timeout=300)
    result = _run_python(f"""
        import json, runpy, pendulum
        module = runpy.run_path({str(ROOT / 'dags' / 'carrierfeeds_dags.py')!r})
        dag = module["feed__{DEMO_FEED}"]
        run = dag.test(logical_date=pendulum.datetime(2026, 11, 20, 12, tz="UTC"))
        print("RESULT " + json.dumps({{"state": str(run.state)}}))
    """, env, tmp_path)
    assert result["state"] in ("success", "DagRunState.SUCCESS")
    arrived = sorted(inbox.iterdir())
    assert len(arrived) == 1 and arrived[0].name.endswith(".834.pgp")

    home = Path(env["AIRFLOW_HOME"])
    db = sqlite3.connect(home / "airflow.db")
    dump = []
    for (table,) in db.execute("select name from sqlite_master where type='table'"):
        query = f'select * from "{table}"'  # noqa: S608 - table names from the schema
        dump.extend(repr(row) for row in db.execute(query))
    db.close()
    logs = "".join(p.read_text(errors="replace") for p in home.rglob("*.log"))
    haystack = "\n".join(dump) + logs + result["_output"]
    assert "deliver" in haystack and "validate" in result["_output"]  # there is something to search
    for value in canaries.values():
        assert value not in haystack
