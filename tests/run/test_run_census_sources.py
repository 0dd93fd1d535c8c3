"""Census sources wired into the pipeline: an employer's SFTP drop on a real sshd, a SQL source on SQLite and
PostgreSQL, the processed-once rule (``no_new_census``, ``force_census``) and PHI canaries in a rejected run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from carrierfeeds.census.generate import generate_census, write_census_csv
from carrierfeeds.census.sources import CensusIndex
from carrierfeeds.config import LocalDelivery, SftpSource, SqlSource
from carrierfeeds.run.context import RunRef, scratch_dir_for
from carrierfeeds.run.stages import run_feed
from carrierfeeds.settings import open_ledger, open_store

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DAY1, DAY2, DAY3 = date(2026, 11, 20), date(2026, 11, 21), date(2026, 11, 22)
T0 = 1_790_000_000  # remote file times, seconds


def _clock() -> datetime:
    return datetime(2026, 11, 23, 7, 30, tzinfo=UTC)


@dataclass
class SourceWorkspace:
    settings: Any
    feed_id: str
    outbox: Path
    data_dir: Path


def _workspace(tmp_path: Path, keys: Any, source: SftpSource | SqlSource) -> SourceWorkspace:
    """The demo feed delivering to a local outbox, its census coming from ``source``."""
    from carrierfeeds.demo import prepare_workspace

    ws = prepare_workspace(tmp_path / "ws", keys=keys, keys_dir=tmp_path / "keys", config_root=ROOT,
                           delivery=LocalDelivery(path="outbox"))
    feed_file = ws.settings.feeds_dir / f"{ws.feed.feed_id}.yaml"
    data = yaml.safe_load(feed_file.read_text())
    data["census"]["source"] = source.model_dump(mode="json")
    feed_file.write_text(yaml.safe_dump(data, sort_keys=False))
    return SourceWorkspace(settings=ws.settings, feed_id=ws.feed.feed_id, outbox=ws.settings.data_dir / "outbox",
                           data_dir=ws.settings.data_dir)


def _sent(ws: SourceWorkspace) -> list[str]:
    return sorted(p.name for p in ws.outbox.iterdir()) if ws.outbox.exists() else []


def _put(folder: Path, name: str, frame: pd.DataFrame, mtime: int) -> Path:
    path = folder / name
    write_census_csv(frame, path)
    os.utime(path, (mtime, mtime))
    return path


def _finished(ws: SourceWorkspace, run_id: str) -> list[tuple[str, str | None]]:
    """Each attempt's final status and error code, from the ledger."""
    ledger = open_ledger(ws.settings)
    try:
        return [(e.status, e.error_code) for e in ledger.run_events(run_id) if e.kind == "run_finished"]
    finally:
        ledger.close()


@pytest.fixture
def drop(tmp_path: Path, demo_keys: Any, sshd_server: Any) -> tuple[SourceWorkspace, Path]:
    folder = sshd_server.root / f"drop-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    source = SftpSource(connection_id="acme-drop", remote_dir=str(folder), pattern="census_*.csv",
                        processed_dir="processed")
    ws = _workspace(tmp_path, demo_keys, source)
    sshd_server.write_keys_dir(tmp_path / "keys", "acme-drop")
    return ws, folder


def test_sftp_drop_run_moves_the_accepted_file_once_and_a_second_run_sends_nothing(
        drop: tuple[SourceWorkspace, Path]) -> None:
    ws, folder = drop
    census = generate_census(30, 14, as_of=DAY1)
    original = _put(folder, "census_20261120.csv", census, T0)
    data = original.read_bytes()

    first = run_feed(ws.settings, RunRef.for_day(ws.feed_id, DAY1), clock=_clock, actor="test")
    assert first.status == "delivered", first.error
    assert _sent(ws) == [first.file_name]
    assert first.validation["rows"] == len(census)
    # Accepted: moved (not copied, not changed) to the processed folder on the server, and remembered.
    assert not original.exists()
    assert (folder / "processed" / original.name).read_bytes() == data
    index = CensusIndex(ws.data_dir, ws.feed_id)
    (digest,) = index.entries()
    assert index.accepted_by(digest) == first.run_id
    assert not list(scratch_dir_for(ws.settings, RunRef.for_day(ws.feed_id, DAY1)).glob("*census*"))

    # The employer uploads the very same file again: the next interval has no new census and sends nothing.
    again_file = _put(folder, original.name, census, T0 + 100)
    second = run_feed(ws.settings, RunRef.for_day(ws.feed_id, DAY2), clock=_clock, actor="test")
    assert second.status == "no_new_census", second.error
    assert second.error is not None and second.error["rule"] == "already_processed"
    assert _sent(ws) == [first.file_name]
    assert again_file.exists(), "a census that was not processed stays in the drop"
    assert _finished(ws, second.run_id) == [("no_new_census", "no_new_census")]

    # Forced: processed again, sent for its interval, and moved aside without overwriting the first copy.
    forced = run_feed(ws.settings, RunRef.for_day(ws.feed_id, DAY2), clock=_clock, actor="test",
                      force_census=True)
    assert forced.status == "delivered", forced.error
    assert _sent(ws) == sorted([str(first.file_name), str(forced.file_name)])
    assert forced.payload_sha256 != first.payload_sha256  # a new interchange for the new interval
    assert not again_file.exists()
    assert sorted(p.name for p in (folder / "processed").iterdir()) == \
        sorted([original.name, f"{original.name}.{digest[:12]}"])
    assert _finished(ws, forced.run_id) == [("no_new_census", "no_new_census"), ("delivered", None)]
    ledger = open_ledger(ws.settings)
    assert ledger.verify_chain().ok
    ledger.close()


def _authorise_from(ws: SourceWorkspace, day: date) -> None:
    feed_file = ws.settings.feeds_dir / f"{ws.feed_id}.yaml"
    data = yaml.safe_load(feed_file.read_text())
    data["authorization"]["effective_from"] = day.isoformat()
    feed_file.write_text(yaml.safe_dump(data, sort_keys=False))


def test_a_census_whose_build_failed_is_not_processed_and_the_next_run_sends_it(
        drop: tuple[SourceWorkspace, Path]) -> None:
    """Validation accepts the census, then the build refuses the run (the carrier is not authorised yet
    that day). The census is not recorded as processed and stays in the drop: the next run processes
    that same census and delivers it, and only then is it recorded and moved aside."""
    ws, folder = drop
    census = generate_census(25, 21, as_of=DAY1)
    original = _put(folder, "census_20261120.csv", census, T0)
    _authorise_from(ws, DAY2)

    failed = run_feed(ws.settings, RunRef.for_day(ws.feed_id, DAY1), clock=_clock, actor="test")
    assert failed.status == "refused" and failed.error is not None
    assert failed.error["code"] == "not_authorized"
    assert failed.validation["rows"] == len(census)  # validation had accepted it
    assert _finished(ws, failed.run_id) == [("refused", "not_authorized")]
    assert original.exists(), "a census whose run has no outcome stays in the drop"
    assert CensusIndex(ws.data_dir, ws.feed_id).entries() == {}
    assert _sent(ws) == []

    retried = run_feed(ws.settings, RunRef.for_day(ws.feed_id, DAY2), clock=_clock, actor="test")
    assert retried.status == "delivered", retried.error
    assert retried.validation["rows"] == len(census)
    assert _sent(ws) == [retried.file_name]
    assert not original.exists() and (folder / "processed" / original.name).exists()
    index = CensusIndex(ws.data_dir, ws.feed_id)
    (digest,) = index.entries()
    assert index.accepted_by(digest) == retried.run_id


def test_rejected_sftp_census_stays_in_the_drop_and_leaks_no_phi(
        drop: tuple[SourceWorkspace, Path], caplog: pytest.LogCaptureFixture) -> None:
    ws, folder = drop
    good = generate_census(30, 15, as_of=DAY1)
    census = good.copy()
    canaries = {"ssn": "666123457", "first_name": "Zebediah", "last_name": "Quillonius", "dob": "2099-07-04"}
    for column, value in canaries.items():
        census.loc[2, column] = value  # area 666 and a birth date in the future: two failing rules
    bad = _put(folder, "census_20261120.csv", census, T0)
    bad_bytes = bad.read_bytes()

    caplog.set_level("DEBUG")
    ref = RunRef.for_day(ws.feed_id, DAY1)
    rejected = run_feed(ws.settings, ref, clock=_clock, actor="test")
    assert rejected.status == "rejected", rejected.error
    assert rejected.error is not None and rejected.error["code"] == "census_rejected"
    assert _sent(ws) == []
    assert bad.read_bytes() == bad_bytes and not (folder / "processed").exists()
    assert CensusIndex(ws.data_dir, ws.feed_id).entries() == {}

    report_dir = ws.settings.reports_dir / ws.feed_id / DAY1.isoformat()
    report_csv = (report_dir / "validation.csv").read_text()
    report_html = (report_dir / "validation.html").read_text()
    found = pd.read_csv(report_dir / "validation.csv", dtype=str)
    assert {"ssn", "dob"} <= set(found["column"])  # the report names the failures, by column
    ledger_dump = _dump_ledger(ws.settings.resolved_ledger_url)
    assert "census_rejected" in ledger_dump and "validate" in caplog.text  # there is something to search
    state = open_store(ws.settings).get_bytes(ws.feed_id, DAY1, "state.json").decode()
    for value in canaries.values():
        for where, text in (("report csv", report_csv), ("report html", report_html), ("logs", caplog.text),
                            ("ledger", ledger_dump), ("summary", json.dumps(rejected.as_dict())),
                            ("run state", state)):
            assert value not in text, where

    # The employer uploads a fixed file: this one is processed (the bad one is never deleted).
    fixed = _put(folder, "census_20261120_fixed.csv", good, T0 + 100)
    accepted = run_feed(ws.settings, ref, clock=_clock, actor="test")
    assert accepted.status == "delivered", accepted.error
    assert not fixed.exists() and (folder / "processed" / fixed.name).exists()
    assert bad.read_bytes() == bad_bytes
    # What is left in the drop is older than the accepted census: superseded, never sent afterwards.
    later = run_feed(ws.settings, RunRef.for_day(ws.feed_id, DAY2), clock=_clock, actor="test")
    assert later.status == "no_new_census" and later.error is not None
    assert later.error["rule"] == "older_than_accepted"
    assert _sent(ws) == [accepted.file_name]


def _dump_ledger(url: str) -> str:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    chunks = []
    with engine.connect() as conn:
        for table in sa.inspect(conn).get_table_names():
            for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):  # noqa: S608 - names from the schema
                chunks.append(repr(tuple(row)))
    engine.dispose()
    return "\n".join(chunks)


# ------------------------------------------------------------------------------- structurally bad files
def _poison(path: Path, kind: str) -> None:
    """Make the census at ``path`` structurally bad: a NUL byte, a formula cell, or (see the test) too big."""
    if kind == "nul_byte":
        lines = path.read_bytes().split(b"\n")
        lines[4] = lines[4].replace(b",", b",\x00", 1)
        path.write_bytes(b"\n".join(lines))
    elif kind == "formula_like_cell":
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        frame.loc[6, "department"] = "=HYPERLINK(\"http://example.invalid\",\"x\")"
        write_census_csv(frame, path)


@pytest.mark.parametrize("kind", ["nul_byte", "formula_like_cell", "too_large"])
def test_a_structurally_bad_census_ends_the_run_rejected_and_keeps_the_employers_file(
        tmp_path: Path, demo_keys: Any, kind: str) -> None:
    from carrierfeeds.demo import prepare_workspace

    ws = prepare_workspace(tmp_path / "ws", keys=demo_keys, keys_dir=tmp_path / "keys", config_root=ROOT,
                           delivery=LocalDelivery(path="outbox"))
    settings = ws.settings
    path = ws.inbound / "census_20261120.csv"
    write_census_csv(generate_census(30, 18, as_of=DAY1), path)
    _poison(path, kind)
    if kind == "too_large":
        # a copy of the shipped schemas whose census schema caps files below this one's size
        schemas = tmp_path / "schemas"
        schemas.mkdir()
        for shipped in (ROOT / "schemas").iterdir():
            (schemas / shipped.name).write_bytes(shipped.read_bytes())
        schema_file = schemas / "census-v1.yaml"
        schema_file.write_text(schema_file.read_text() + f"max_bytes: {path.stat().st_size - 1}\n")
        settings = settings.model_copy(update={"schemas_dir": schemas})
    kept = path.read_bytes()

    summary = run_feed(settings, RunRef.for_day(ws.feed.feed_id, DAY1), clock=_clock, actor="test")
    assert summary.status == "rejected", summary.error
    assert summary.error is not None and summary.error["rule"] == kind
    assert summary.error["file"] == path.name
    # the error names where: line 5 holds the NUL, frame row 6 is the employer's row 8
    where = {"nul_byte": (5, None), "formula_like_cell": (8, "department"), "too_large": (None, None)}[kind]
    assert (summary.error["row"], summary.error["column"]) == where
    ledger = open_ledger(settings)
    try:
        finished = [e.status for e in ledger.run_events(summary.run_id) if e.kind == "run_finished"]
        (run,) = ledger.list_runs(feed_id=ws.feed.feed_id)
    finally:
        ledger.close()
    assert finished == ["rejected"] and run.status == "rejected"
    assert path.read_bytes() == kept, "the employer's file is kept as it came, for reprocessing"
    index = CensusIndex(settings.data_dir, ws.feed.feed_id)
    assert not index.path.exists() and index.entries() == {}
    assert not (settings.data_dir / "outbox").exists() or not list((settings.data_dir / "outbox").iterdir())


# ------------------------------------------------------------------------------------------- SQL
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def hr_urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(the HR admin's URL, which makes the table; the read-only login the feed is given)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hr.sqlite'}", f"sqlite:///{tmp_path / 'hr.sqlite'}"
        return
    from carrierfeeds.testing.postgres import read_only_login

    admin = str(request.getfixturevalue("pg_database"))
    with read_only_login(admin) as url:
        yield admin, url


def test_sql_source_run_reads_the_hr_database_every_interval(tmp_path: Path, demo_keys: Any,
                                                             hr_urls: tuple[str, str]) -> None:
    import sqlalchemy as sa

    admin_url, hr_url = hr_urls
    census = generate_census(25, 16, as_of=DAY1).drop(columns=["row_number"], errors="ignore")
    table = census.copy()
    table.insert(0, "line", range(len(table)))
    engine = sa.create_engine(admin_url)
    table.to_sql("hr_census", engine, index=False)
    engine.dispose()
    columns = ", ".join(census.columns)
    query = f"SELECT {columns} FROM hr_census ORDER BY line"  # noqa: S608 - column names from the generator
    source = SqlSource(connection_id="acme-hr", query=query)
    ws = _workspace(tmp_path, demo_keys, source)
    keys = tmp_path / "keys"
    keys.mkdir(exist_ok=True)
    fd = os.open(keys / "acme-hr.json", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"url": hr_url}, fh)

    first = run_feed(ws.settings, RunRef.for_day(ws.feed_id, DAY1), clock=_clock, actor="test")
    assert first.status == "delivered", first.error
    assert first.validation["rows"] == len(census)
    assert first.members > 0 and _sent(ws) == [first.file_name]
    # A query's result is this interval's census: the next interval reads it again, nothing is "processed".
    second = run_feed(ws.settings, RunRef.for_day(ws.feed_id, DAY2), clock=_clock, actor="test")
    assert second.status == "delivered", second.error
    assert second.members == first.members
    assert CensusIndex(ws.data_dir, ws.feed_id).entries() == {}
    for day in (DAY1, DAY2):
        assert not scratch_dir_for(ws.settings, RunRef.for_day(ws.feed_id, day)).exists() or \
            not list(scratch_dir_for(ws.settings, RunRef.for_day(ws.feed_id, day)).iterdir())


# --------------------------------------------------------------------------------------- Airflow
def _airflow_env(tmp_path: Path, extra: dict[str, str]) -> dict[str, str]:
    home = tmp_path / "airflow-home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CARRIERFEEDS_"))}
    env.update({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
                "AIRFLOW__CORE__UNIT_TEST_MODE": "False", "GX_ANALYTICS_ENABLED": "False", **extra})
    return env


def _run_python(code: str, env: dict[str, str], cwd: Path) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=600)
    marker = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and marker, f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    result: dict[str, Any] = json.loads(marker[-1][len("RESULT "):])
    return result


@pytest.mark.airflow
def test_sql_url_comes_from_an_airflow_connection_with_the_sqlalchemy_driver(tmp_path: Path) -> None:
    pg = {"conn_type": "postgres", "host": "db.example", "port": 5433, "login": "hr_reader",
          "password": "p@ss/word", "schema": "hr"}
    lite = {"conn_type": "sqlite", "host": str(tmp_path / "hr.sqlite")}
    env = _airflow_env(tmp_path, {"AIRFLOW_CONN_ACME_HR": json.dumps(pg), "AIRFLOW_CONN_ACME_LITE": json.dumps(lite),
                                  "AIRFLOW_CONN_ACME_NOHOST": json.dumps({"conn_type": "postgres"})})
    result = _run_python(
        "import json, sqlalchemy as sa\n"
        "from carrierfeeds.airflow import sql_url_from_connection as url_for\n"
        "from carrierfeeds.errors import ConfigError\n"
        "pg = sa.make_url(url_for('acme_hr'))\n"
        "try:\n    url_for('acme_nohost'); err = None\n"
        "except ConfigError as exc:\n    err = exc.details['field']\n"
        "print('RESULT ' + json.dumps({'pg': [pg.drivername, pg.username, pg.password, pg.host, pg.port,"
        " pg.database], 'lite': url_for('acme_lite'), 'err': err}))\n", env, tmp_path)
    assert result["pg"] == ["postgresql+psycopg", "hr_reader", "p@ss/word", "db.example", 5433, "hr"]
    assert result["lite"] == f"sqlite:///{tmp_path / 'hr.sqlite'}"
    assert result["err"] == "host"


@pytest.mark.airflow
def test_airflow_skips_the_rest_of_the_dag_when_there_is_no_new_census(tmp_path: Path, demo_keys: Any) -> None:
    from carrierfeeds.demo import DEMO_FEED, prepare_workspace

    ws = prepare_workspace(tmp_path / "ws", keys=demo_keys, keys_dir=tmp_path / "keys", config_root=ROOT,
                           delivery=LocalDelivery(path="outbox"))
    write_census_csv(generate_census(20, 17, as_of=DAY1), ws.inbound / "census_20261120.csv")
    s = ws.settings
    env = _airflow_env(tmp_path, {
        "CARRIERFEEDS_FEEDS_DIR": str(s.feeds_dir), "CARRIERFEEDS_MAPPINGS_DIR": str(s.mappings_dir),
        "CARRIERFEEDS_SCHEMAS_DIR": str(s.schemas_dir), "CARRIERFEEDS_DATA_DIR": str(s.data_dir),
        "CARRIERFEEDS_GNUPG_HOME": str(s.gnupg_home), "CARRIERFEEDS_KEYS_DIR": str(tmp_path / "keys")})
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True,
                   timeout=300)
    result = _run_python(
        "import json, runpy, pendulum\n"
        f"module = runpy.run_path({str(ROOT / 'dags' / 'carrierfeeds_dags.py')!r})\n"
        f"dag = module['feed__{DEMO_FEED}']\n"
        "out = {}\n"
        "for day in (20, 21, 22):\n"
        "    conf = {'force_census': True} if day == 22 else None\n"
        "    run = dag.test(logical_date=pendulum.datetime(2026, 11, day, 12, tz='UTC'), run_conf=conf)\n"
        "    out[day] = {'state': str(run.state),"
        " 'tasks': {ti.task_id: str(ti.state) for ti in run.get_task_instances()}}\n"
        "print('RESULT ' + json.dumps(out))\n", env, tmp_path)
    assert result["20"]["state"] in ("success", "DagRunState.SUCCESS")
    second = result["21"]
    assert second["state"] in ("success", "DagRunState.SUCCESS"), second
    assert set(second["tasks"].values()) <= {"skipped", "TaskInstanceState.SKIPPED"}, second
    # ops trigger with the DAG param force_census: the same census is processed again and delivered
    assert result["22"]["state"] in ("success", "DagRunState.SUCCESS"), result["22"]
    assert len(list((s.data_dir / "outbox").iterdir())) == 2
    ledger = open_ledger(s)
    try:
        statuses = {r.interval_start: r.status for r in ledger.list_runs(feed_id=DEMO_FEED)}
    finally:
        ledger.close()
    assert statuses == {DAY1: "delivered", DAY2: "no_new_census", date(2026, 11, 22): "delivered"}
