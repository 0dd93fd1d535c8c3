"""Airflow and a carrier aggregator's file: one DAG per aggregation mapping (none for its employers' feeds),
and that DAG run with Airflow's own dag.test() delivers the one file once.

Airflow reads its configuration once per process, so each test drives it in a fresh interpreter with its
own AIRFLOW_HOME (SQLite metadata database) and our settings in the environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.airflow]

ROOT = Path(__file__).resolve().parents[1]
MAPPING = "keystone-exchange"
EMPLOYERS = ("cedar-grove-keystone", "pinecrest-keystone")


def _airflow_env(tmp_path: Path, extra: dict[str, str]) -> dict[str, str]:
    home = tmp_path / "airflow-home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CARRIERFEEDS_"))}
    env.update({
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False", "GX_ANALYTICS_ENABLED": "False", **extra,
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


def test_one_dag_per_aggregated_file_and_none_for_its_employers(tmp_path: Path) -> None:
    env = _airflow_env(tmp_path, {"CARRIERFEEDS_FEEDS_DIR": str(ROOT / "feeds"),
                                  "CARRIERFEEDS_MAPPINGS_DIR": str(ROOT / "mappings")})
    result = _run_python("""
        import json
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag()
        out = {"errors": {k: str(v)[:300] for k, v in bag.import_errors.items()},
               "dags": {d: {"tasks": [t.task_id for t in dag.tasks], "tags": sorted(dag.tags),
                            "schedule": dag.schedule, "timezone": dag.timezone.name,
                            "retries": [t.retries for t in dag.tasks]}
                        for d, dag in bag.dags.items()}}
        print("RESULT " + json.dumps(out))
    """, env, ROOT)
    assert result["errors"] == {}
    dags = result["dags"]
    assert not {f"feed__{e}" for e in EMPLOYERS} & set(dags)
    info = dags[f"feed__{MAPPING}"]
    assert info["tasks"] == ["aggregate"] and info["retries"] == [3]
    assert (info["schedule"], info["timezone"]) == ("0 1 * * *", "America/New_York")
    assert {"aggregate", "carrier:keystone-exchange", "employer:cedar-grove", "employer:pinecrest"} <= set(info["tags"])
    assert "feed__acme-sunrise-medical" in dags  # an ordinary feed keeps its own DAG


def test_aggregate_dag_test_delivers_one_file_once(tmp_path: Path, demo_keys: Any, sshd_server: Any) -> None:
    from carrierfeeds.census.generate import generate_census, write_census_csv
    from carrierfeeds.config import SftpDelivery
    from carrierfeeds.demo import CONNECTION_ID, prepare_workspace
    from carrierfeeds.ledger import Ledger

    inbox = sshd_server.root / "airflow-aggregate"
    inbox.mkdir(exist_ok=True)
    for k, feed_id in enumerate(EMPLOYERS):
        ws = prepare_workspace(tmp_path / "ws", keys=demo_keys, keys_dir=tmp_path / "unused-keys",
                               config_root=ROOT, feed_id=feed_id,
                               delivery=SftpDelivery(connection_id=CONNECTION_ID, remote_dir=str(inbox)))
        census = generate_census(20 + k, 60 + k, as_of=date(2026, 11, 20), id_prefix="CP"[k])
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
        assert not any(k.startswith("feed__cedar") for k in module)
        dag = module["feed__{MAPPING}"]
        when = pendulum.datetime(2026, 11, 20, 12, tz="UTC")
        first = str(dag.test(logical_date=when).state)
        # A second run of the same interval (a clear, a manual re-trigger) must not resend.
        again = str(dag.test(logical_date=when).state)
        print("RESULT " + json.dumps({{"state": first, "again": again}}))
    """, env, tmp_path)
    assert result["state"] in ("success", "DagRunState.SUCCESS"), result["_output"][-3000:]
    assert result["again"] in ("success", "DagRunState.SUCCESS")
    (arrived,) = sorted(inbox.iterdir())
    assert arrived.name.startswith("KBX_") and arrived.name.endswith(".834.pgp")
    assert "already delivered; not sending again" in result["_output"]
    # The task log folds each of the aggregate's stages under its name, its outcome after the group.
    first_run = result["_output"].split("already delivered")[0]
    for stage in ("build", "conformance", "encrypt", "deliver", "confirm"):
        opened = first_run.find(f"::group::{stage}")
        assert opened >= 0, stage
        assert 0 <= first_run.find("::endgroup::", opened) < first_run.find(f"stage {stage} succeeded in ", opened)

    ledger = Ledger.open(s.resolved_ledger_url)
    try:
        (delivery,) = ledger.deliveries(feed_id=MAPPING)
        assert delivery.status == "delivered"
        for feed_id in EMPLOYERS:
            (employer_run,) = ledger.list_runs(feed_id=feed_id)
            assert employer_run.status == "already_delivered"  # the second DAG run's word; the first delivered
            shares = [e.detail for e in ledger.run_events(employer_run.run_id)
                      if e.stage == "deliver" and e.status == "succeeded"]
            assert len(shares) == 2 and {d["delivery_id"] for d in shares} == {delivery.delivery_id}
    finally:
        ledger.close()
