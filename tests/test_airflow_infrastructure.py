"""Infrastructure errors under Airflow: an unreachable ledger is retried (a retry may fix it); a ledger URL
of the wrong scheme fails the task at once, in the feed DAG and in the housekeeping DAG alike, with the
setting named in the task log.

One fresh interpreter runs Airflow's own ``dag.test()`` several times, changing only the environment the
tasks read their settings from.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from test_airflow import DESIGN, ROOT, _airflow_env, _run_python, _state, _task_of

pytestmark = [pytest.mark.slow, pytest.mark.airflow]


def test_unreachable_ledger_is_retried_and_a_bad_url_fails_at_once(tmp_path: Path) -> None:
    import subprocess
    import sys

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = _airflow_env(tmp_path, {
        "CARRIERFEEDS_FEEDS_DIR": str(ROOT / "feeds"), "CARRIERFEEDS_MAPPINGS_DIR": str(ROOT / "mappings"),
        "CARRIERFEEDS_SCHEMAS_DIR": str(ROOT / "schemas"), "CARRIERFEEDS_DATA_DIR": str(tmp_path / "var"),
        "CARRIERFEEDS_KEYS_DIR": str(tmp_path / "keys")})
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True,
                   capture_output=True, timeout=300)
    result = _run_python(f"""
        import datetime, json, os, runpy, pendulum
        module = runpy.run_path({str(ROOT / 'dags' / 'carrierfeeds_dags.py')!r})
        out = {{"design": {DESIGN}}}

        def run(dag_id, day, url):
            os.environ["CARRIERFEEDS_LEDGER_URL"] = url
            dag = module[dag_id]
            for t in dag.tasks:  # the same retries, without minutes of back-off between them
                t.retry_delay, t.retry_exponential_backoff = datetime.timedelta(0), False
            r = dag.test(logical_date=pendulum.datetime(2026, 11, day, 12, tz="UTC"))
            return {{ti.task_id: [str(ti.state), ti.try_number] for ti in r.get_task_instances()}}

        unreachable = "postgresql+psycopg://postgres@127.0.0.1:{port}/test"
        out["feed_unreachable"] = run("feed__acme-sunrise-medical", 20, unreachable)
        out["feed_bad_url"] = run("feed__acme-sunrise-medical", 21, "postgres://postgres@127.0.0.1/test")
        out["housekeeping_bad_url"] = run("carrierfeeds_housekeeping", 22, "postgres://postgres@127.0.0.1/test")
        print("RESULT " + json.dumps(out))
    """, env, tmp_path)
    first_task = _task_of(result, "stage_census")
    state, tries = result["feed_unreachable"][first_task]
    assert _state(state) == "failed" and tries == 4  # 1 + RETRIES: a retry may fix it
    state, tries = result["feed_bad_url"][first_task]
    assert _state(state) == "failed" and tries == 1
    for task_id, (state, tries) in result["housekeeping_bad_url"].items():
        assert _state(state) == "failed" and tries == 1, (task_id, state, tries)
    log = result["_output"]
    assert f"CARRIERFEEDS_LEDGER_URL: PostgreSQL at 127.0.0.1:{port} is unreachable (connection refused)" in log
    assert "CARRIERFEEDS_LEDGER_URL: scheme 'postgres' is not supported" in log
