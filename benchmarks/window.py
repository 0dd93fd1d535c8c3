"""The nightly window: N feeds triggered at once under a real Airflow, against the same N feeds in-process.

    python -m benchmarks.window --feeds 20 --members 2000 [--executor local|celery] [--parallelism 2]
                                [--out benchmarks/results] [--airflow-config SECTION__KEY=VALUE ...]
                                [--tasks three|feed|stages] [--preload] [--pool SLOTS]

Starts a real Airflow in a temporary AIRFLOW_HOME: the api-server with the execution API, the
dag-processor and the scheduler, on a fresh PostgreSQL metadata database (``window_<pid>``, dropped
afterwards); LocalExecutor, or CeleryExecutor on Redis with one celery worker. The DAG folder is the
project's ``dags/``. N copies of the demo feed (one census folder each, M synthetic members, delivering
over SFTP to a loopback OpenSSH sshd, ledger on PostgreSQL) are parsed, unpaused and triggered at once;
the benchmark waits until every run has ended. Then the same N feeds run in-process, ``run_feed`` back
to back in one fresh interpreter, against a ledger and an inbox of their own.

Reported, in ``<out>/window-<executor>-<N>x<M>-<stamp>.json`` (``"benchmark": "window"``):
- feeds/hour each way and ``airflow_over_inprocess`` (Airflow's feeds/hour over in-process feeds/hour);
- every task's queue-to-start and run time, from Airflow's metadata (task_instance queued_dttm,
  start_date, end_date), and their spread per task;
- CPU seconds and peak memory (RSS and PSS summed over the live process tree, sampled) of all of
  Airflow's processes during the window, and of the in-process run;
- load average and MemAvailable/Cached before and after each side;
- the exactly-once check: one delivery per feed in the ledger, one file per feed on the SFTP target
  whose hash and size are the ledger's, nothing else there. Any failure exits non-zero (the JSON is
  still written, with the problems listed).
No assertion on time anywhere. Every process started here runs in its own process group; all of them,
and whatever they started, are killed on any exit.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
DAY = date(2026, 11, 20)
#: Noon UTC on DAY: the same feed day in the demo feed's time zone (America/New_York).
LOGICAL_DATE = "2026-11-20T12:00:00+00:00"
RUN_ID = "window"
TEMPLATE_FEED = "acme-sunrise-medical"
CONNECTION_ID = "window_sftp"
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS = ("127.0.0.1", 6379)
#: The task of each design that runs the deliver stage (carrierfeeds.airflow.TASK_DESIGNS).
DELIVER_TASKS = {"three": "deliver", "feed": "run", "stages": "deliver"}
#: What ``--preload`` writes as $AIRFLOW_HOME/config/airflow_local_settings.py (as a deployment would).
LOCAL_SETTINGS = """from carrierfeeds.run.preload import preload_stage_modules

preload_stage_modules()
"""
AIRFLOW = [sys.executable, "-m", "airflow"]
SAMPLE_S = 0.5
CLK_TCK = os.sysconf("SC_CLK_TCK")


class WindowFailed(RuntimeError):
    """The window did not end as it must: a component died, a run failed, or a feed was not delivered once."""


# ---------------------------------------------------------------------------------- process trees
def _proc_table() -> dict[int, tuple[int, float, int]]:
    """Every process: pid -> (parent pid, CPU seconds incl. reaped children, start time in ticks)."""
    table: dict[int, tuple[int, float, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                raw = fh.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses; the fields after the last ')' are fixed.
        fields = raw.rsplit(b")", 1)[-1].split()
        ticks = sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
        table[int(entry.name)] = (int(fields[1]), ticks / CLK_TCK, int(fields[19]))
    return table


def _tree(roots: list[int], table: dict[int, tuple[int, float, int]]) -> list[int]:
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _cpu, _start) in table.items():
        kids.setdefault(ppid, []).append(pid)
    out: list[int] = []
    todo = [r for r in roots if r in table]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, ()))
    return out


def _memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in kB; zeros once it is gone."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def tree_cpu_s(roots: list[int]) -> float:
    """CPU seconds of the live tree under ``roots``: each process's own time plus its reaped children's.

    A finished task process counts once its parent has reaped it (in the parent's cutime/cstime) and
    while it is a zombie (its own stat), so a sum over the live tree loses only processes whose parent
    never waits for them.
    """
    table = _proc_table()
    return sum(table[pid][1] for pid in _tree(roots, table))


class TreeSampler(threading.Thread):
    """Samples the process tree under some roots: peak summed RSS and PSS, and every pid seen."""

    def __init__(self, roots: Callable[[], list[int]], interval: float = SAMPLE_S) -> None:
        super().__init__(daemon=True, name="tree-sampler")
        self.roots, self.interval = roots, interval
        self.peak_rss_kb = self.peak_pss_kb = 0
        self.peak_processes = 0
        self.seen: set[int] = set()
        self._halt = threading.Event()

    def sample(self) -> None:
        pids = _tree(self.roots(), _proc_table())
        self.seen.update(pids)
        rss = pss = 0
        for pid in pids:
            r, p = _memory_kb(pid)
            rss, pss = rss + r, pss + p
        self.peak_rss_kb, self.peak_pss_kb = max(self.peak_rss_kb, rss), max(self.peak_pss_kb, pss)
        self.peak_processes = max(self.peak_processes, len(pids))

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.sample()

    def stop(self) -> dict[str, Any]:
        self._halt.set()
        self.join(timeout=10)
        return {"peak_rss_mb": round(self.peak_rss_kb / 1024, 1), "peak_pss_mb": round(self.peak_pss_kb / 1024, 1),
                "peak_processes": self.peak_processes, "processes_seen": len(self.seen)}


@dataclass
class Components:
    """Long-running processes, each in a process group of its own, logging to ``logs/<name>.log``.

    ``stop`` ends every group and then any process that left its group (a daemonised grandchild), so
    nothing outlives the benchmark however it exits; it is registered with atexit too.
    """

    env: dict[str, str]
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # pid -> start time (ticks): only a process that is still the one seen is killed later.
    known: dict[int, int] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        out = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(argv, env=env or self.env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=ROOT)
        out.close()
        self.procs[name] = proc
        return proc

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values() if p.poll() is None]

    def remember_tree(self) -> None:
        table = _proc_table()
        for pid in _tree([p.pid for p in self.procs.values()], table):
            self.known.setdefault(pid, table[pid][2])

    def check_alive(self, names: list[str] | None = None) -> None:
        for name, proc in self.procs.items():
            if (names is None or name in names) and proc.poll() is not None:
                raise WindowFailed(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, chars: int = 3000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop(self, names: list[str] | None = None, grace_s: float = 20.0) -> None:
        chosen = {n: p for n, p in self.procs.items() if names is None or n in names}
        with contextlib.suppress(OSError):
            self.remember_tree()
        for proc in chosen.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in chosen.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # whatever is left in its group
        if names is None:
            table = _proc_table()
            for pid, started in self.known.items():
                if pid in table and table[pid][2] == started and pid != os.getpid():
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
        for name in chosen:
            self.procs.pop(name, None)


def _raise_on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


# ---------------------------------------------------------------------------------- machine state
def machine_state() -> dict[str, Any]:
    from benchmarks.e2e import load_average, memory_state

    return {"load_avg": load_average(), "memory": memory_state(), "at": datetime.now(UTC).isoformat()}


def _spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "n": len(values)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------------- databases
@contextlib.contextmanager
def fresh_databases(admin_url: str, names: list[str]) -> Iterator[dict[str, str]]:
    """Create each named PostgreSQL database (dropping a leftover of the same name); drop them after."""
    import sqlalchemy as sa

    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    urls: dict[str, str] = {}
    try:
        with admin.connect() as conn:
            for name in names:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
                urls[name] = sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        yield urls
    finally:
        with admin.connect() as conn:
            for name in urls:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# ---------------------------------------------------------------------------------- workspaces
@dataclass(frozen=True)
class Side:
    """One side's deployment: settings as plain paths and URLs, its feeds, and its carrier inbox."""

    name: str
    root: Path
    feed_ids: tuple[str, ...]
    inbox: Path
    ledger_url: str
    keys_dir: Path
    gnupg_home: Path

    @property
    def feeds_dir(self) -> Path:
        return self.root / "feeds"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def settings(self) -> Any:
        from carrierfeeds.settings import Settings

        return Settings(feeds_dir=self.feeds_dir, mappings_dir=ROOT / "mappings", schemas_dir=ROOT / "schemas",
                        data_dir=self.data_dir, keys_dir=self.keys_dir, gnupg_home=self.gnupg_home,
                        ledger_url=self.ledger_url)


def write_censuses(folder: Path, feeds: int, members: int, seed: int) -> list[Path]:
    """One synthetic census per feed (seeded per feed), written once and copied to both sides."""
    from carrierfeeds.census.generate import generate_census, write_census_csv

    folder.mkdir(parents=True)
    paths = []
    for n in range(feeds):
        path = folder / f"feed-{n:03d}.csv"
        write_census_csv(generate_census(members, seed + n, as_of=DAY), path)
        paths.append(path)
    return paths


def make_side(name: str, root: Path, *, censuses: list[Path], keys: Any, sshd: Any, ledger_url: str) -> Side:
    """The demo feed copied once per census (``window-000``...), schedule off, one census folder each."""
    import yaml

    from carrierfeeds.config import SftpDelivery, load_feed
    from carrierfeeds.settings import open_ledger

    inbox = sshd.root / f"{name}-{uuid.uuid4().hex[:8]}"
    inbox.mkdir()
    keys_dir = root / "keys"
    sshd.write_keys_dir(keys_dir, CONNECTION_ID)
    template = load_feed(ROOT / "feeds" / f"{TEMPLATE_FEED}.yaml")
    feed_ids = []
    (root / "feeds").mkdir(parents=True)
    for n, census in enumerate(censuses):
        feed_id = f"window-{n:03d}"
        source = template.census.source.model_copy(update={"path": f"inbound/{feed_id}"})
        feed = template.model_copy(update={
            "feed_id": feed_id, "schedule": None,
            "census": template.census.model_copy(update={"source": source}),
            "encryption": template.encryption.model_copy(update={
                "recipient_fingerprint": keys.carrier_fingerprint, "signer_fingerprint": keys.signer_fingerprint}),
            "delivery": SftpDelivery(connection_id=CONNECTION_ID, remote_dir=str(inbox)),
        })
        (root / "feeds" / f"{feed_id}.yaml").write_text(yaml.safe_dump(feed.model_dump(mode="json"), sort_keys=False))
        inbound = root / "data" / "inbound" / feed_id
        inbound.mkdir(parents=True, mode=0o700)
        shutil.copyfile(census, inbound / f"census_{DAY:%Y%m%d}.csv")
        feed_ids.append(feed_id)
    side = Side(name=name, root=root, feed_ids=tuple(feed_ids), inbox=inbox, ledger_url=ledger_url,
                keys_dir=keys_dir, gnupg_home=keys.ours.home)
    # The ledger's tables are made here, once, not by the first tasks racing to make them.
    open_ledger(side.settings()).close()
    return side


# ---------------------------------------------------------------------------------- exactly once
def check_exactly_once(side: Side) -> dict[str, Any]:
    """Every feed delivered exactly once: ledger rows, and the carrier's inbox holding exactly those files."""
    from carrierfeeds.ledger.records import SENT_STATUSES
    from carrierfeeds.settings import open_ledger
    from carrierfeeds.transport.base import TEMP_PREFIX, TEMP_SUFFIX

    problems: list[str] = []
    expected: dict[str, Any] = {}
    ledger = open_ledger(side.settings())
    try:
        for feed_id in side.feed_ids:
            deliveries = ledger.deliveries(feed_id=feed_id)
            if len(deliveries) != 1:
                problems.append(f"{feed_id}: {len(deliveries)} delivery rows")
                continue
            (delivery,) = deliveries
            if delivery.status not in ("delivered", "reconciled"):
                problems.append(f"{feed_id}: delivery {delivery.status}")
            outcomes = [o.status for o in ledger.delivery_outcomes(delivery_ids=[delivery.delivery_id])]
            if sum(s in SENT_STATUSES for s in outcomes) != 1:
                problems.append(f"{feed_id}: outcomes {outcomes}")
            runs = [r.status for r in ledger.list_runs(feed_id=feed_id)]
            if runs.count("delivered") != 1:
                problems.append(f"{feed_id}: runs {runs}")
            if delivery.remote_path:
                expected[delivery.remote_path.rsplit("/", 1)[-1]] = delivery
        chain = ledger.verify_chain()
        if not chain.ok:
            problems.append(f"ledger chain broken at {chain.first_broken}")
    finally:
        ledger.close()
    arrived = sorted(p.name for p in side.inbox.iterdir())
    leftovers = [n for n in arrived if n.startswith(TEMP_PREFIX) or n.endswith(TEMP_SUFFIX)]
    if leftovers:
        problems.append(f"temp files left on the server: {leftovers}")
    if arrived != sorted(expected):
        problems.append(f"server holds {len(arrived)} files, ledger delivered {len(expected)}: "
                        f"extra {sorted(set(arrived) - set(expected))}, missing {sorted(set(expected) - set(arrived))}")
    for name, delivery in expected.items():
        path = side.inbox / name
        if not path.exists():
            continue
        if path.stat().st_size != delivery.size:
            problems.append(f"{name}: size differs from the ledger")
        if delivery.ciphertext_sha256 and hashlib.sha256(path.read_bytes()).hexdigest() != delivery.ciphertext_sha256:
            problems.append(f"{name}: ciphertext differs from the ledger")
    return {"ok": not problems, "feeds": len(side.feed_ids), "files": len(arrived), "delivered": len(expected),
            "problems": problems}


# ---------------------------------------------------------------------------------- task phases
#: The markers in a task try's log (Airflow 3 JSON lines) that bound its phases.
_PRE_EXECUTE = "::group::Pre Execute"
_GROUP, _GROUP_END = "::group::", "::endgroup::"


def _log_events(text: str) -> list[tuple[datetime, dict[str, Any]]]:
    events = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
            events.append((datetime.fromisoformat(event["timestamp"]), event))
        except (ValueError, KeyError, TypeError):
            continue  # not a structured line (a child's stray output)
    return events


def task_log_marks(text: str) -> dict[str, Any]:
    """When a task try passed each mark, from its log: the task runner's first line, the end of its
    "Pre Execute" group (the DAG bundle and the DAG file's parse), the first stage's group, and the
    line after the last stage; and the DAG file's parse time the task runner reports. Missing: None."""
    events = _log_events(text)
    marks: dict[str, Any] = {"first_line": events[0][0] if events else None, "pre_execute_end": None,
                             "first_stage": None, "stages_end": None, "dag_file_parse_s": None}
    in_pre_execute = False
    for at, event in events:
        message = str(event.get("event", ""))
        if message == _PRE_EXECUTE:
            in_pre_execute = True
        elif in_pre_execute and message == _GROUP_END:
            marks["pre_execute_end"], in_pre_execute = at, False
        elif message.startswith(_GROUP) and event.get("logger") == "carrierfeeds.airflow":
            marks["first_stage"] = marks["first_stage"] or at
        elif message.startswith("stage ") and event.get("logger") == "carrierfeeds.airflow":
            marks["stages_end"] = at  # each stage's outcome line follows its group
        if "dag_file_parse_ms" in event:
            marks["dag_file_parse_s"] = round(float(event["dag_file_parse_ms"]) / 1000, 3)
    return marks


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return round((end - start).total_seconds(), 3) if start and end else None


def task_phases(marks: dict[str, Any], start: datetime | None, end: datetime | None) -> dict[str, float | None]:
    """A task try's run time (Airflow's start_date to end_date) split at its log's marks: the task
    process starting, Pre Execute (of which the DAG file's parse), the run's setup before the first
    stage, the stages, and finishing (XCom, the final state sent to the execution API)."""
    return {"process_start_s": _seconds(start, marks["first_line"]),
            "pre_execute_s": _seconds(marks["first_line"], marks["pre_execute_end"]),
            "dag_file_parse_s": marks["dag_file_parse_s"],
            "setup_s": _seconds(marks["pre_execute_end"], marks["first_stage"]),
            "stages_s": _seconds(marks["first_stage"], marks["stages_end"]),
            "finish_s": _seconds(marks["stages_end"], end)}


def celery_worker_marks(text: str) -> dict[str, dict[str, datetime]]:
    """Per celery task id, when the worker received it and when its pool process was free again
    ("succeeded in"/"failed in"), from the celery worker's log."""
    out: dict[str, dict[str, datetime]] = {}
    for line in text.splitlines():
        stamp, _, rest = line.partition(" ")
        if "execute_workload[" not in rest:
            continue
        celery_id = rest.split("execute_workload[", 1)[1].split("]", 1)[0]
        kind = "received" if "] received" in rest else "done" if re.search(r"\] (succeeded|failed) in", rest) else None
        if kind is None:
            continue
        try:
            out.setdefault(celery_id, {})[kind] = datetime.fromisoformat(stamp)
        except ValueError:
            continue
    return out


# ---------------------------------------------------------------------------------- Airflow side
def airflow_env(side: Side, *, home: Path, metadata_url: str, executor: str, parallelism: int, api_port: int,
                endpoint: Any, redis_url: str | None, queue: str | None,
                overrides: dict[str, str], tasks: str = "feed", pool: int | None = None) -> dict[str, str]:
    """Airflow's environment: our settings, the SFTP connection and the staging key as Airflow sees them;
    ``pool`` the default pool's slots (made with them by ``db migrate``; None: Airflow's 128)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CARRIERFEEDS_"))}
    conn = {"conn_type": "sftp", "host": endpoint.host, "port": endpoint.port, "login": endpoint.username,
            "extra": {"key_file": str(endpoint.private_key_path), "known_hosts": endpoint.known_hosts}}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor" if executor == "celery" else "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
        # psycopg 3 is async too; Airflow would otherwise look for asyncpg.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": metadata_url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        # Paused at creation: the housekeeping DAG's schedule would add a run to the window otherwise.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "GX_ANALYTICS_ENABLED": "False",
        "CARRIERFEEDS_FEEDS_DIR": str(side.feeds_dir), "CARRIERFEEDS_MAPPINGS_DIR": str(ROOT / "mappings"),
        "CARRIERFEEDS_SCHEMAS_DIR": str(ROOT / "schemas"), "CARRIERFEEDS_DATA_DIR": str(side.data_dir),
        "CARRIERFEEDS_GNUPG_HOME": str(side.gnupg_home), "CARRIERFEEDS_KEYS_DIR": str(side.keys_dir),
        "CARRIERFEEDS_LEDGER_URL": side.ledger_url,
        "CARRIERFEEDS_AIRFLOW_TASKS": tasks,
        # One staging key for every task, as the Variable a deployment sets (no race to make a key file).
        "AIRFLOW_VAR_CARRIERFEEDS_STAGING_SECRET_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        f"AIRFLOW_CONN_{CONNECTION_ID.upper()}": json.dumps(conn),
    })
    if executor == "celery":
        assert redis_url is not None and queue is not None
        env.update({"AIRFLOW__CELERY__BROKER_URL": redis_url, "AIRFLOW__CELERY__RESULT_BACKEND": redis_url,
                    "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(parallelism),
                    "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue})
    if pool is not None:
        # Every feed task runs in the default pool: its slots bound what the scheduler hands the executor
        # (queued and running), so the executor's first-in-first-out queue stays short and the scheduler
        # picks each free slot by priority weight (weight_rule upstream: finishing feeds first).
        env["AIRFLOW__CORE__DEFAULT_POOL_TASK_SLOT_COUNT"] = str(pool)
    env.update({f"AIRFLOW__{key.upper()}": value for key, value in overrides.items()})
    return env


def _redis_url() -> str:
    try:
        with socket.create_connection(REDIS, timeout=3) as sock:
            sock.sendall(b"PING\r\n")
            answer = sock.recv(16)
    except OSError as exc:
        raise WindowFailed(f"Redis is not running at {REDIS[0]}:{REDIS[1]} ({type(exc).__name__})") from None
    if not answer.startswith(b"+PONG"):
        raise WindowFailed(f"no PONG from {REDIS[0]}:{REDIS[1]}")
    return f"redis://{REDIS[0]}:{REDIS[1]}/{secrets.randbelow(14) + 1}"


def _forget_redis_keys(redis_url: str, queue: str, celery_ids: list[str]) -> None:
    """Remove what this run left in Redis: its queue's keys and its tasks' results."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        doomed = [*client.scan_iter(match=f"*{queue}*"), *(f"celery-task-meta-{i}" for i in celery_ids)]
        if doomed:
            client.delete(*doomed)
    finally:
        client.close()


_TRIGGER = """
import json, sys
from datetime import UTC, datetime
from airflow.api.client.local_client import Client
client = Client()
print("READY", flush=True)
sys.stdin.readline()
first = datetime.now(UTC)
for dag_id in json.loads(sys.argv[1]):
    client.trigger_dag(dag_id=dag_id, run_id=sys.argv[2], logical_date=datetime.fromisoformat(sys.argv[3]))
print(json.dumps({"first": first.isoformat(), "last": datetime.now(UTC).isoformat()}), flush=True)
"""


def trigger_all(env: dict[str, str], dag_ids: list[str], at_go: Callable[[], None]) -> tuple[datetime, datetime]:
    """Trigger every DAG from one process that has imported Airflow already; ``at_go`` runs just before.

    Returns when the first trigger started and the last one ended. The process's own start (importing
    Airflow takes seconds) is kept out of the window, as a deployment's trigger would be.
    """
    proc = subprocess.Popen([sys.executable, "-c", _TRIGGER, json.dumps(dag_ids), RUN_ID, LOGICAL_DATE], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        line = proc.stdout.readline()
        if line.strip() != "READY":
            _out, err = proc.communicate(timeout=60)
            raise WindowFailed(f"the trigger process did not start: {line!r}\n{err[-3000:]}")
        at_go()
        out, err = proc.communicate("go\n", timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    if proc.returncode != 0:
        raise WindowFailed(f"triggering failed:\n{out[-2000:]}{err[-3000:]}")
    times = json.loads(out.strip().splitlines()[-1])
    return datetime.fromisoformat(times["first"]), datetime.fromisoformat(times["last"])


def _wait(what: str, check: Callable[[], bool], deadline: float, comps: Components, names: list[str],
          tail: str, poll_s: float = 1.0) -> None:
    while not check():
        comps.check_alive(names)
        if time.monotonic() > deadline:
            raise WindowFailed(f"timed out waiting for {what}:\n{comps.tail(tail)}")
        time.sleep(poll_s)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def run_airflow(side: Side, *, base: Path, metadata_url: str, executor: str, parallelism: int, endpoint: Any,
                overrides: dict[str, str], timeout_s: float, comps_out: list[Components], tasks: str = "feed",
                preload: bool = False, pool: int | None = None) -> dict[str, Any]:
    """Start Airflow, trigger every feed at once, wait for every run; timings, CPU, memory, task rows."""
    import sqlalchemy as sa

    home = base / "airflow-home"
    home.mkdir()
    if preload:
        (home / "config").mkdir()
        (home / "config" / "airflow_local_settings.py").write_text(LOCAL_SETTINGS)
    logs = base / "airflow-logs"
    logs.mkdir()
    api_port = _free_port()
    redis_url = _redis_url() if executor == "celery" else None
    queue = f"carrierfeeds_window_{uuid.uuid4().hex[:8]}" if executor == "celery" else None
    env = airflow_env(side, home=home, metadata_url=metadata_url, executor=executor, parallelism=parallelism,
                      api_port=api_port, endpoint=endpoint, redis_url=redis_url, queue=queue, overrides=overrides,
                      tasks=tasks, pool=pool)
    started = time.monotonic()
    migrate = subprocess.run([*AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True,
                             timeout=900, cwd=ROOT, check=False)
    if migrate.returncode != 0:
        raise WindowFailed(f"airflow db migrate failed:\n{migrate.stdout[-3000:]}{migrate.stderr[-3000:]}")
    migrate_s = time.monotonic() - started

    comps = Components(env=env, logs=logs)
    comps_out.append(comps)
    comps.start("api-server", [*AIRFLOW, "api-server", "--apps", "execution", "--host", "127.0.0.1",
                               "--port", str(api_port), "--workers", "1"])
    comps.start("dag-processor", [*AIRFLOW, "dag-processor"])
    comps.start("scheduler", [*AIRFLOW, "scheduler"])
    if executor == "celery":
        assert queue is not None
        comps.start("worker", [*AIRFLOW, "celery", "worker", "--queues", queue, "--concurrency", str(parallelism),
                               "--skip-serve-logs", "--without-gossip", "--without-mingle"])
    names = list(comps.procs)
    engine = sa.create_engine(metadata_url)
    dag_ids = [f"feed__{f}" for f in side.feed_ids]
    deadline = time.monotonic() + timeout_s
    rows: list[dict[str, Any]] = []
    try:
        _wait("the execution API", lambda: _port_open(api_port), deadline, comps, names, "api-server")

        def parsed() -> bool:
            with engine.connect() as db:
                return int(db.execute(sa.text("select count(*) from serialized_dag where dag_id = any(:ids)"),
                                      {"ids": dag_ids}).scalar_one()) == len(dag_ids)

        _wait(f"the DAG processor to parse {len(dag_ids)} DAGs", parsed, deadline, comps, names, "dag-processor")
        with engine.begin() as db:
            db.execute(sa.text("update dag set is_paused = false where dag_id = any(:ids)"), {"ids": dag_ids})
            # What the window ran with, read back rather than assumed from the setting.
            pool_slots = db.execute(sa.text("select slots from slot_pool where pool = 'default_pool'")).scalar()
        startup_s = time.monotonic() - started

        sampler = TreeSampler(comps.pids)
        sampler.sample()
        before: dict[str, Any] = {}

        def at_go() -> None:
            before["state"] = machine_state()
            before["cpu"] = tree_cpu_s(comps.pids())
            sampler.start()

        t0, triggered = trigger_all(env, dag_ids, at_go)
        state_before, cpu_before = before["state"], before["cpu"]

        def all_ended() -> bool:
            with engine.connect() as db:
                states = [s for (s,) in db.execute(sa.text(
                    "select state from dag_run where dag_id = any(:ids) and run_id = :r"),
                    {"ids": dag_ids, "r": RUN_ID})]
            return len(states) == len(dag_ids) and all(s in ("success", "failed") for s in states)

        _wait("every run to end", all_ended, deadline, comps, names, "scheduler", poll_s=1.0)
        cpu_after = tree_cpu_s(comps.pids())
        memory = sampler.stop()
        state_after = machine_state()
        comps.remember_tree()
        with engine.connect() as db:
            runs = {d: s for d, s in db.execute(sa.text(
                "select dag_id, state from dag_run where dag_id = any(:ids) and run_id = :r"),
                {"ids": dag_ids, "r": RUN_ID})}
            rows = [dict(r._mapping) for r in db.execute(sa.text(
                "select dag_id, task_id, try_number, state, queued_dttm, start_date, end_date, external_executor_id "
                "from task_instance where dag_id = any(:ids) and run_id = :r order by start_date"),
                {"ids": dag_ids, "r": RUN_ID})]
    finally:
        engine.dispose()
        comps.stop()
        if redis_url is not None and queue is not None:
            with contextlib.suppress(Exception):  # cleanup only: the run's figures stand without it
                _forget_redis_keys(redis_url, queue, [r["external_executor_id"] for r in rows
                                                      if r.get("external_executor_id")])

    worker_log = logs / "worker.log"
    worker = celery_worker_marks(worker_log.read_text(errors="replace")) if worker_log.exists() else {}
    task_rows = []
    for row in rows:
        q, s, e = row["queued_dttm"], row["start_date"], row["end_date"]
        task_log = (home / "logs" / f"dag_id={row['dag_id']}" / f"run_id={RUN_ID}" / f"task_id={row['task_id']}"
                    / f"attempt={row['try_number']}.log")
        marks = task_log_marks(task_log.read_text(errors="replace")) if task_log.exists() else task_log_marks("")
        task_row = {"dag_id": row["dag_id"], "task_id": row["task_id"], "try_number": row["try_number"],
                    "state": row["state"], "queued_to_start_s": _seconds(q, s), "run_s": _seconds(s, e),
                    "queued_at_s": _seconds(t0, q), "end_at_s": _seconds(t0, e),
                    "phases": task_phases(marks, s, e)}
        if executor == "celery":
            # The celery side of queue-to-start, and how long the worker's pool process stayed taken
            # after the task ended (its slot is not free before).
            seen = worker.get(row.get("external_executor_id") or "", {})
            task_row["celery"] = {"queued_to_received_s": _seconds(q, seen.get("received")),
                                  "received_to_start_s": _seconds(seen.get("received"), s),
                                  "end_to_slot_free_s": _seconds(e, seen.get("done"))}
        task_rows.append(task_row)
    ends = [t["end_at_s"] for t in task_rows if t["end_at_s"] is not None]
    wall = max(ends) if ends else None
    by_task: dict[str, dict[str, Any]] = {}
    for task_id in dict.fromkeys(t["task_id"] for t in task_rows):
        mine = [t for t in task_rows if t["task_id"] == task_id]
        by_task[task_id] = {
            "queued_to_start_s": _spread([t["queued_to_start_s"] for t in mine if t["queued_to_start_s"] is not None]),
            "run_s": _spread([t["run_s"] for t in mine if t["run_s"] is not None]),
            "phases": {name: _spread([t["phases"][name] for t in mine if t["phases"][name] is not None])
                       for name in mine[0]["phases"]}}
        if executor == "celery":
            by_task[task_id]["celery"] = {
                name: _spread([t["celery"][name] for t in mine if t["celery"][name] is not None])
                for name in mine[0]["celery"]}
    delivered_at = sorted(t["end_at_s"] for t in task_rows if t["task_id"] == DELIVER_TASKS[tasks]
                          and t["end_at_s"] is not None and t["state"] == "success")
    succeeded = sum(1 for s in runs.values() if s == "success")
    task_s = sum(t["run_s"] or 0.0 for t in task_rows)
    return {
        "executor": executor, "parallelism": parallelism, "task_design": tasks, "preload": preload,
        "default_pool_slots": pool_slots,
        "runs": {s: list(runs.values()).count(s) for s in set(runs.values())},
        "feeds_per_hour": round(succeeded / wall * 3600, 1) if wall else None,
        "wall_s": wall, "trigger_s": round((triggered - t0).total_seconds(), 3),
        "first_delivery_s": delivered_at[0] if delivered_at else None,
        "last_delivery_s": delivered_at[-1] if delivered_at else None,
        "cpu_s": round(cpu_after - cpu_before, 2),
        "cpu_s_per_feed": round((cpu_after - cpu_before) / len(dag_ids), 2),
        # Task time (start_date to end_date, last tries) over the slots the window had: the rest is
        # hand-over (the scheduler noticing an end and queueing the next, the executor starting it).
        "task_s_per_feed": round(task_s / len(dag_ids), 3),
        "slots_busy": round(task_s / (parallelism * wall), 3) if wall else None,
        "phase_s_per_feed": {name: round(sum(t["phases"][name] or 0.0 for t in task_rows) / len(dag_ids), 3)
                             for name in (task_rows[0]["phases"] if task_rows else ())},
        **memory,
        "startup_s": {"db_migrate": round(migrate_s, 1), "until_parsed": round(startup_s, 1)},
        "machine_state": {"before": state_before, "after": state_after},
        "task_summary": by_task,
        "tasks": task_rows,
        "failed_runs": sorted(d for d, s in runs.items() if s != "success"),
    }


# ---------------------------------------------------------------------------------- in-process side
_INPROCESS = """
import json, sys
from benchmarks.window import inprocess_batch
json.dump(inprocess_batch(json.loads(sys.argv[1])), sys.stdout)
"""


def inprocess_batch(spec: dict[str, Any]) -> dict[str, Any]:
    """Run every feed of ``spec`` back to back with ``run_feed`` in this process (the child's entry point)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    from carrierfeeds import run
    from carrierfeeds.settings import Settings

    settings = Settings(**{k: Path(v) for k, v in spec["paths"].items()}, ledger_url=spec["ledger_url"])
    seconds: list[float] = []
    statuses: dict[str, int] = {}
    started = time.perf_counter()
    for feed_id in spec["feed_ids"]:
        t0 = time.perf_counter()
        summary = run.run_feed(settings, run.RunRef.for_day(feed_id, DAY), clock=lambda: datetime.now(UTC),
                               actor="benchmark")
        seconds.append(round(time.perf_counter() - t0, 3))
        statuses[summary.status] = statuses.get(summary.status, 0) + 1
    return {"feed_s": seconds, "statuses": statuses, "wall_s": round(time.perf_counter() - started, 3)}


def run_inprocess(side: Side, *, base: Path, comps_out: list[Components], timeout_s: float) -> dict[str, Any]:
    """The same feeds, ``run_feed`` back to back in one fresh interpreter; wall, CPU and memory of its tree."""
    logs = base / "inprocess-logs"
    logs.mkdir()
    s = side.settings()
    spec = {"paths": {"feeds_dir": str(s.feeds_dir), "mappings_dir": str(s.mappings_dir),
                      "schemas_dir": str(s.schemas_dir), "data_dir": str(s.data_dir), "keys_dir": str(s.keys_dir),
                      "gnupg_home": str(s.gnupg_home)},
            "ledger_url": side.ledger_url, "feed_ids": list(side.feed_ids)}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CARRIERFEEDS_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["GX_ANALYTICS_ENABLED"] = "False"
    comps = Components(env=env, logs=logs)
    comps_out.append(comps)
    out_path = logs / "result.json"
    state_before = machine_state()
    # The child is the only process this one reaps meanwhile (sshd and gpg-agent live on), so the
    # growth of this process's children's CPU is the child's, with its own reaped children (gpg, pyx12).
    kids_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with out_path.open("wb") as out, (logs / "inprocess.log").open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-c", _INPROCESS, json.dumps(spec)], env=env, stdout=out,
                                stderr=err, stdin=subprocess.DEVNULL, start_new_session=True, cwd=ROOT)
        comps.procs["inprocess"] = proc
        sampler = TreeSampler(lambda: [proc.pid])
        sampler.start()
        while proc.poll() is None:
            if time.perf_counter() - t0 > timeout_s:
                comps.stop()
                raise WindowFailed(f"in-process run timed out:\n{comps.tail('inprocess')}")
            time.sleep(SAMPLE_S / 5)
        wall = time.perf_counter() - t0
    kids_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (kids_after.ru_utime + kids_after.ru_stime) - (kids_before.ru_utime + kids_before.ru_stime)
    memory = sampler.stop()
    state_after = machine_state()
    if proc.returncode != 0:
        raise WindowFailed(f"in-process run exited {proc.returncode}:\n{comps.tail('inprocess')}")
    comps.procs.pop("inprocess", None)
    result = json.loads(out_path.read_text())
    delivered = result["statuses"].get("delivered", 0)
    span = result["wall_s"]
    return {
        # From the first feed's start to the last one's end, like Airflow's window from the first
        # trigger to the last task's end: neither counts its service starting (here the interpreter
        # and importing carrierfeeds; the first feed still pays pandas, GX and pyx12's imports).
        "feeds_per_hour": round(delivered / span * 3600, 1) if span else None,
        "wall_s": span, "process_start_to_exit_s": round(wall, 3),
        "first_feed_s": result["feed_s"][0] if result["feed_s"] else None,
        "warm_feed_s": _spread(result["feed_s"][1:]),
        "feed_s": result["feed_s"], "statuses": result["statuses"],
        "cpu_s": round(cpu, 2), "cpu_s_per_feed": round(cpu / len(side.feed_ids), 2),
        **memory,
        "machine_state": {"before": state_before, "after": state_after},
    }


# ---------------------------------------------------------------------------------- main
def _parse_overrides(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "__" not in key:
            raise SystemExit(f"--airflow-config wants SECTION__KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=20)
    parser.add_argument("--members", type=int, default=2_000)
    parser.add_argument("--executor", choices=("local", "celery"), default="local")
    parser.add_argument("--parallelism", type=int, default=2,
                        help="Airflow's [core] parallelism (and the celery worker's concurrency)")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--pg-url", default=os.environ.get("CARRIERFEEDS_TEST_PG_URL", PG_DEFAULT),
                        help="an admin URL of the PostgreSQL server; fresh databases are made beside it")
    parser.add_argument("--airflow-config", action="append", default=[], metavar="SECTION__KEY=VALUE",
                        help="extra Airflow setting, e.g. WORKERS__MIN_HEARTBEAT_INTERVAL=1 (repeatable)")
    parser.add_argument("--tasks", choices=tuple(DELIVER_TASKS), default="feed",
                        help="the feed DAGs' task design (CARRIERFEEDS_AIRFLOW_TASKS; default the project's)")
    parser.add_argument("--preload", action="store_true",
                        help="an airflow_local_settings.py that imports the stage modules in every Airflow process")
    parser.add_argument("--pool", type=int, default=None, metavar="SLOTS",
                        help="the default pool's slots (every feed task runs in it); default Airflow's 128")
    parser.add_argument("--timeout", type=float, default=3600.0, help="bound on each side's wait, in seconds")
    parser.add_argument("--skip-inprocess", action="store_true", help="Airflow only (no ratio)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs) afterwards")
    args = parser.parse_args(argv)
    overrides = _parse_overrides(args.airflow_config)

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    from benchmarks.e2e import machine
    from carrierfeeds.testing.gpg import make_keyring
    from carrierfeeds.testing.sshd import running_sshd

    comps: list[Components] = []

    def stop_everything() -> None:
        for c in comps:
            c.stop()

    atexit.register(stop_everything)
    previous = {sig: signal.signal(sig, _raise_on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = Path(tempfile.mkdtemp(prefix="cf-window-"))
    db = f"window_{os.getpid()}"
    result: dict[str, Any] = {
        "benchmark": "window", "date": datetime.now(UTC).date().isoformat(), "stamp": stamp, "machine": machine(),
        "executor": args.executor, "feeds": args.feeds, "members_per_feed": args.members,
        "parallelism": args.parallelism, "task_design": args.tasks, "preload": args.preload, "pool": args.pool,
        "airflow_version": _airflow_version(), "airflow_config": overrides,
        "machine_state": {"start": machine_state()},
        # Removed afterwards (unless --keep); named so that a check can find anything left running from it.
        "workdir": str(base),
    }
    problems: list[str] = []
    keys = None
    try:
        keys = make_keyring(base / "gnupg")
        censuses = write_censuses(base / "censuses", args.feeds, args.members, args.seed)
        with fresh_databases(args.pg_url, [db, f"{db}_ledger", f"{db}_inproc"]) as urls, \
                running_sshd(base / "sshd") as sshd:
            endpoint = sshd.endpoint()
            air = make_side("airflow", base / "airflow", censuses=censuses, keys=keys, sshd=sshd,
                            ledger_url=urls[f"{db}_ledger"])
            result["airflow"] = run_airflow(air, base=base, metadata_url=urls[db], executor=args.executor,
                                            parallelism=args.parallelism, endpoint=endpoint, overrides=overrides,
                                            timeout_s=args.timeout, comps_out=comps, tasks=args.tasks,
                                            preload=args.preload, pool=args.pool)
            exactly_once = {"airflow": check_exactly_once(air)}
            if not args.skip_inprocess:
                inproc = make_side("inprocess", base / "inprocess", censuses=censuses, keys=keys, sshd=sshd,
                                   ledger_url=urls[f"{db}_inproc"])
                result["inprocess"] = run_inprocess(inproc, base=base, comps_out=comps, timeout_s=args.timeout)
                exactly_once["inprocess"] = check_exactly_once(inproc)
            result["exactly_once"] = exactly_once
        a = result["airflow"]["feeds_per_hour"]
        b = result.get("inprocess", {}).get("feeds_per_hour")
        result["airflow_over_inprocess"] = round(a / b, 3) if a and b else None
        problems += [f"airflow: {d} did not succeed" for d in result["airflow"]["failed_runs"]]
        problems += [f"{side}: {p}" for side, check in exactly_once.items() for p in check["problems"]]
    finally:
        stop_everything()
        if keys is not None:
            keys.stop_agents()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if args.keep:
            log.warning("kept %s", base)
        else:
            shutil.rmtree(base, ignore_errors=True)
    result["machine_state"]["end"] = machine_state()
    loads = [s["load_avg"][0] for part in ("airflow", "inprocess") if part in result
             for s in result[part]["machine_state"].values()]
    cores = os.cpu_count() or 1
    # More runnable work than half the cores before or after a side: its figures are not a quiet machine's.
    result["loaded_machine"] = bool(loads) and max(loads) > cores / 2
    result["ok"] = not problems
    result["problems"] = problems
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"window-{args.executor}-{args.feeds}x{args.members}-{stamp}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    summary = {k: result.get(k) for k in ("executor", "feeds", "members_per_feed", "parallelism", "task_design",
                                          "preload", "pool",
                                          "airflow_over_inprocess", "loaded_machine", "ok")}
    summary["airflow_feeds_per_hour"] = result["airflow"]["feeds_per_hour"]
    summary["inprocess_feeds_per_hour"] = result.get("inprocess", {}).get("feeds_per_hour")
    summary["results"] = str(path)
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    if problems:
        raise WindowFailed("not every feed was delivered exactly once:\n" + "\n".join(problems))
    return result


def _airflow_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("apache-airflow")
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
