"""The housekeeping DAG's reconcile_returns task, run with dag.test(): it collects the carrier's return
file over the real sshd (an Airflow SFTP connection) and compares it, as `reconcile collect` does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pendulum
import pytest
from tests.reconcile.test_reconcile_collect import carrier_with_six_discrepancies, deliver_with_outbox
from tests.reconcile.test_reconcile_scenario import _return_834
from tests.test_airflow import ROOT, _airflow_env, _run_python

from carrierfeeds.demo import CONNECTION_ID
from carrierfeeds.ledger.worklist import work_items
from carrierfeeds.settings import open_ledger

pytestmark = [pytest.mark.slow, pytest.mark.airflow]


def test_housekeeping_reconciles_every_feed_with_a_return_source(
        sftp_workspace: Any, sshd_server: Any, tmp_path: Path, ledger_url: str) -> None:
    if not ledger_url.startswith("sqlite"):
        pytest.skip("one ledger is enough for the DAG wiring; the comparison is tested on both")
    d = deliver_with_outbox(sftp_workspace, tmp_path, sshd_server)
    carrier, _ = carrier_with_six_discrepancies(d)
    d.put("ELIG_20261201.pgp", _return_834(carrier, d.mappings, d.ws.feed))

    endpoint = sshd_server.endpoint()
    conn = {"conn_type": "sftp", "host": endpoint.host, "port": endpoint.port, "login": endpoint.username,
            "extra": {"key_file": str(endpoint.private_key_path), "known_hosts": endpoint.known_hosts}}
    s = d.ws.settings
    env = _airflow_env(tmp_path, {
        "CARRIERFEEDS_FEEDS_DIR": str(s.feeds_dir), "CARRIERFEEDS_MAPPINGS_DIR": str(d.mappings),
        "CARRIERFEEDS_SCHEMAS_DIR": str(s.schemas_dir), "CARRIERFEEDS_DATA_DIR": str(s.data_dir),
        "CARRIERFEEDS_GNUPG_HOME": str(s.gnupg_home), "CARRIERFEEDS_KEYS_DIR": str(d.ws.keys_dir),
        "CARRIERFEEDS_LEDGER_URL": s.resolved_ledger_url,
        "CARRIERFEEDS_TOKEN_KEY_FILE": str(s.resolved_token_key_file),
        f"AIRFLOW_CONN_{CONNECTION_ID.upper()}": json.dumps(conn),
    })
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True,
                   capture_output=True, timeout=300)
    when = pendulum.datetime(2026, 12, 1, 4, tz="UTC")
    result = _run_python(f"""
        import json, runpy, pendulum
        module = runpy.run_path({str(ROOT / 'dags' / 'carrierfeeds_dags.py')!r})
        run = module["carrierfeeds_housekeeping"].test(logical_date=pendulum.parse({when.isoformat()!r}))
        tis = {{ti.task_id: str(ti.state).rsplit(".", 1)[-1].lower() for ti in run.get_task_instances()}}
        xcom = [ti.xcom_pull(task_ids="reconcile_returns") for ti in run.get_task_instances()
                if ti.task_id == "reconcile_returns"]
        print("RESULT " + json.dumps({{"tasks": tis, "xcom": xcom}}))
    """, env, tmp_path)
    out = result["_output"]
    assert result["tasks"]["reconcile_returns"] == "success", out[out.find("task_id=reconcile_returns"):][:6000]
    assert result["xcom"] == [{"feeds": 1, "compared": 1, "refused": 0, "open": 6, "failed": 0}]
    ledger = open_ledger(s)
    try:
        items = work_items(ledger, feed_id=d.ws.feed.feed_id, status="open")
        assert len(items) == 6 and all(i.events[0].actor.startswith("airflow:") for i in items)
    finally:
        ledger.close()
    assert not [c for c in d.canaries if c in result["_output"]]
