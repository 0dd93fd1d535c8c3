"""The demo feed's DAG on a distributed engine: PostgreSQL metadata, CeleryExecutor over Redis, a worker.

Every Airflow component is its own process sharing one AIRFLOW_HOME and one carrierfeeds data directory
(the staging store): the execution API (tasks report through it in Airflow 3), the DAG processor, the
scheduler and a Celery worker on a queue of its own, so other workers on the same Redis never take our
tasks. The test triggers a run, waits for it (bounded), and checks the carrier got one file and the
staging store holds the run's state and ciphertext and no plaintext.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from test_airflow import _design_in

pytestmark = [pytest.mark.slow, pytest.mark.airflow, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW = [sys.executable, "-m", "airflow"]
REDIS = ("127.0.0.1", 6379)
DEADLINE_S = 240  # a bound on waiting, not a performance assertion


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def redis_url() -> str:
    """Redis on 127.0.0.1:6379 (.ci/run starts it); a database number of our own."""
    try:
        with socket.create_connection(REDIS, timeout=3) as sock:
            sock.sendall(b"PING\r\n")
            answer = sock.recv(16)
    except OSError as exc:
        if os.environ.get("CARRIERFEEDS_TEST_PG_URL"):  # CI: .ci/run should have started it
            pytest.fail(f"Redis is not running at {REDIS} ({type(exc).__name__})")
        pytest.skip(f"Redis is not running at {REDIS}")
    assert answer.startswith(b"+PONG")
    return f"redis://{REDIS[0]}:{REDIS[1]}/{secrets.randbelow(14) + 1}"


class _Processes:
    """Long-running Airflow components, each logging to its own file; all stopped at the end."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen([*AIRFLOW, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                pytest.fail(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, chars: int = 3000) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def _wait_http(port: int, procs: _Processes, deadline: float) -> None:
    while time.monotonic() < deadline:
        procs.check_alive()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(1)
    pytest.fail(f"execution API did not listen on {port}:\n{procs.tail('api-server')}")


@pytest.fixture
def airflow_processes(tmp_path: Path) -> Iterator[list[_Processes]]:
    holder: list[_Processes] = []
    try:
        yield holder
    finally:
        for procs in holder:
            procs.stop()


def test_demo_feed_runs_on_celery_with_postgres(tmp_path: Path, pg_database: str, redis_url: str,
                                                demo_keys: Any, sshd_server: Any,
                                                airflow_processes: list[_Processes]) -> None:
    import sqlalchemy as sa

    from carrierfeeds.config import SftpDelivery
    from carrierfeeds.demo import CONNECTION_ID, DEMO_FEED, prepare_workspace

    inbox = sshd_server.root / f"celery-{uuid.uuid4().hex[:8]}"
    inbox.mkdir()
    ws = prepare_workspace(tmp_path / "ws", keys=demo_keys, keys_dir=tmp_path / "unused-keys", config_root=ROOT,
                           delivery=SftpDelivery(connection_id=CONNECTION_ID, remote_dir=str(inbox)))
    # Triggered by hand: a schedule would add a run for today's interval beside ours.
    feed_file = ws.settings.feeds_dir / f"{DEMO_FEED}.yaml"
    feed_data = yaml.safe_load(feed_file.read_text())
    feed_data["schedule"] = None
    feed_file.write_text(yaml.safe_dump(feed_data, sort_keys=False))
    from carrierfeeds.census.generate import generate_census, write_census_csv

    write_census_csv(generate_census(30, 7, as_of=pd.Timestamp("2026-11-20").date()),
                     ws.inbound / "census_20261120.csv")

    endpoint = sshd_server.endpoint()
    conn = {"conn_type": "sftp", "host": endpoint.host, "port": endpoint.port, "login": endpoint.username,
            "extra": {"key_file": str(endpoint.private_key_path), "known_hosts": endpoint.known_hosts}}
    home = tmp_path / "airflow-home"
    home.mkdir()
    api_port = _free_port()
    queue = f"carrierfeeds_test_{uuid.uuid4().hex[:8]}"
    s = ws.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CARRIERFEEDS_"))}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg_database,
        # psycopg 3 is async too; Airflow would otherwise look for asyncpg.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": pg_database,
        "AIRFLOW__CELERY__BROKER_URL": redis_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": redis_url,
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "GX_ANALYTICS_ENABLED": "False",
        "CARRIERFEEDS_FEEDS_DIR": str(s.feeds_dir), "CARRIERFEEDS_MAPPINGS_DIR": str(s.mappings_dir),
        "CARRIERFEEDS_SCHEMAS_DIR": str(s.schemas_dir), "CARRIERFEEDS_DATA_DIR": str(s.data_dir),
        "CARRIERFEEDS_GNUPG_HOME": str(s.gnupg_home), "CARRIERFEEDS_KEYS_DIR": str(tmp_path / "keys"),
        f"AIRFLOW_CONN_{CONNECTION_ID.upper()}": json.dumps(conn),
    })
    migrate = subprocess.run([*AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]

    logs = tmp_path / "process-logs"
    logs.mkdir()
    procs = _Processes(env, logs)
    airflow_processes.append(procs)
    deadline = time.monotonic() + DEADLINE_S
    procs.start("api-server", "api-server", "--apps", "execution", "--host", "127.0.0.1", "--port", str(api_port),
                "--workers", "1")
    procs.start("dag-processor", "dag-processor")
    procs.start("scheduler", "scheduler")
    procs.start("worker", "celery", "worker", "--queues", queue, "--concurrency", "1", "--skip-serve-logs",
                "--without-gossip", "--without-mingle")
    _wait_http(api_port, procs, deadline)

    dag_id = f"feed__{DEMO_FEED}"
    engine = sa.create_engine(pg_database)
    tasks: dict[str, str] = {}
    queues: set[str] = set()
    celery_ids: list[str] = []
    state = None
    try:
        while True:
            procs.check_alive()
            with engine.connect() as db:
                parsed = db.execute(sa.text("select count(*) from serialized_dag where dag_id = :d"),
                                    {"d": dag_id}).scalar_one()
            if parsed:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"the DAG processor never parsed {dag_id}:\n{procs.tail('dag-processor')}")
            time.sleep(1)
        for args in (["dags", "unpause", dag_id],
                     ["dags", "trigger", dag_id, "--logical-date", "2026-11-20T12:00:00+00:00",
                      "--run-id", "celery_test"]):
            done = subprocess.run([*AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

        while state not in ("success", "failed"):
            procs.check_alive()
            if time.monotonic() > deadline:
                break
            time.sleep(2)
            with engine.connect() as db:
                state = db.execute(sa.text("select state from dag_run where dag_id = :d and run_id = 'celery_test'"),
                                   {"d": dag_id}).scalar_one_or_none()
        with engine.connect() as db:
            tasks = dict(db.execute(sa.text("select task_id, state from task_instance where dag_id = :d "
                                            "and run_id = 'celery_test'"), {"d": dag_id}).all())
            queues = {q for (q,) in db.execute(sa.text("select distinct queue from task_instance "
                                                        "where run_id = 'celery_test'"))}
            celery_ids = [i for (i,) in db.execute(sa.text("select external_executor_id from task_instance "
                                                           "where run_id = 'celery_test'")) if i]
    finally:
        engine.dispose()
        procs.stop()
        _forget_celery_keys(redis_url, queue, celery_ids)
    assert state == "success", (f"run ended {state}; tasks {tasks}\nworker:\n{procs.tail('worker')}\n"
                                f"scheduler:\n{procs.tail('scheduler')}")
    assert set(tasks.values()) == {"success"} and sorted(tasks) == sorted(_design_in(env))
    assert queues == {queue} and len(celery_ids) == len(tasks)  # every task went through our Celery queue

    arrived = sorted(inbox.iterdir())
    assert len(arrived) == 1 and arrived[0].name.endswith(".834.pgp")
    import hashlib
    from datetime import date

    from carrierfeeds.staging import StagingKey, StagingStore

    store = StagingStore(s.staging_dir, StagingKey.from_file(tmp_path / "keys" / "staging.key"))
    day = date(2026, 11, 20)
    left = store.names(DEMO_FEED, day)
    assert "state.json" in left and any(name.endswith(".834.pgp") for name in left)
    assert "census.csv" not in left and not any(name.endswith(".834") for name in left)
    state_json = json.loads(store.get_bytes(DEMO_FEED, day, "state.json"))
    assert state_json["delivered"] is True
    staged_cipher = store.get_bytes(DEMO_FEED, day, state_json["cipher_name"])
    assert hashlib.sha256(staged_cipher).hexdigest() == sha_of(arrived[0])


def _forget_celery_keys(redis_url: str, queue: str, celery_ids: list[str]) -> None:
    """Remove what this test left in Redis: its queue's bindings and its tasks' results."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        doomed = [*client.scan_iter(match=f"*{queue}*"), *(f"celery-task-meta-{i}" for i in celery_ids)]
        if doomed:
            client.delete(*doomed)
        # Kombu's shared bookkeeping key goes only when nobody else uses this database.
        if client.dbsize() == 1 and client.exists("_kombu.binding_deadlines"):
            client.delete("_kombu.binding_deadlines")
    finally:
        client.close()


def sha_of(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()
