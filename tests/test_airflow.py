"""Airflow: the DAG folder imports cleanly, and the demo feed's DAG runs with Airflow's own dag.test().

Airflow reads its configuration once per process, so each test drives it in a fresh interpreter with
its own AIRFLOW_HOME (SQLite metadata database) and our settings in the environment.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from carrierfeeds.testing.webhook import WebhookReceiver

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


def _workspace_env(tmp_path: Path, settings: Any, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Airflow's environment for a prepared workspace, its metadata database migrated."""
    s = settings
    env = _airflow_env(tmp_path, {
        "CARRIERFEEDS_FEEDS_DIR": str(s.feeds_dir), "CARRIERFEEDS_MAPPINGS_DIR": str(s.mappings_dir),
        "CARRIERFEEDS_SCHEMAS_DIR": str(s.schemas_dir), "CARRIERFEEDS_DATA_DIR": str(s.data_dir),
        "CARRIERFEEDS_GNUPG_HOME": str(s.gnupg_home), "CARRIERFEEDS_KEYS_DIR": str(tmp_path / "keys"),
        **(extra or {}),
    })
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True,
                   capture_output=True, timeout=300)
    return env


def _with_notify(settings: Any, connection_id: str) -> None:
    feed_file = settings.feeds_dir / "acme-sunrise-medical.yaml"
    data = yaml.safe_load(feed_file.read_text())
    data["notify"] = {"webhook_connection_id": connection_id}
    feed_file.write_text(yaml.safe_dump(data, sort_keys=False))


def _state(value: Any) -> str:
    return str(value).rsplit(".", 1)[-1].lower()


#: For a dag.test() script's RESULT: the design its DAGs were built with (task id -> the stages it runs),
#: so a test names the task that runs a stage instead of one design's task ids.
DESIGN = "{t: list(s) for t, s in __import__('carrierfeeds.airflow').airflow.design_tasks().items()}"


def _task_of(result: dict[str, Any], stage: str) -> str:
    """The task that ran ``stage`` in the design the script's DAGs were built with."""
    return next(task_id for task_id, stages in result["design"].items() if stage in stages)


def _design_in(env: dict[str, str]) -> dict[str, list[str]]:
    """The design DAGs are built with in ``env``: task id -> its stages (a fresh interpreter asks Airflow's
    module, so this one never imports Airflow)."""
    result = _run_python(f'import json; print("RESULT " + json.dumps({{"design": {DESIGN}}}))', env, ROOT)
    design: dict[str, list[str]] = result["design"]
    return design


def test_dagbag_has_one_dag_per_feed_with_retries_and_timeouts(tmp_path: Path) -> None:
    """Every shipped feed, plus one with a preset schedule, another time zone and its own docs."""
    from carrierfeeds.config import load_feed

    feeds = tmp_path / "feeds"
    feeds.mkdir()
    for path in (ROOT / "feeds").glob("*.yaml"):
        (feeds / path.name).write_text(path.read_text())
    variant = yaml.safe_load((ROOT / "feeds" / "acme-sunrise-medical.yaml").read_text())
    variant.update(feed_id="zz-berlin-variant", schedule="@daily", timezone="Europe/Berlin",
                   description="Variant feed: **Berlin** time, preset schedule.")
    (feeds / "zz-berlin-variant.yaml").write_text(yaml.safe_dump(variant, sort_keys=False))
    env = _airflow_env(tmp_path, {"CARRIERFEEDS_FEEDS_DIR": str(feeds)})
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
                "tags": sorted(dag.tags), "schedule": dag.schedule, "timezone": dag.timezone.name,
                "timetable_tz": str(getattr(dag.timetable, "timezone", "")), "doc_md": dag.doc_md,
                "description": dag.description, "max_active_runs": dag.max_active_runs,
                "weight_rules": sorted({str(t.weight_rule) for t in dag.tasks}),
            }
        # Every design, built for one feed: its tasks and the stages each runs, in order.
        from carrierfeeds import airflow as cf
        from carrierfeeds.config import load_feed
        from carrierfeeds.errors import ConfigError
        from carrierfeeds.run import STAGES
        from carrierfeeds.settings import Settings, feed_paths
        feed = load_feed(feed_paths(Settings())[0])
        out["designs"] = {name: {"tasks": [t.task_id for t in cf.build_feed_dag(feed, name).tasks],
                                 "stages": [s for _, stages in groups for s in stages],
                                 "stages_of": {t: list(stages) for t, stages in groups}}
                          for name, groups in cf.TASK_DESIGNS.items()}
        out["default_design"] = cf.task_design()
        out["stages"] = list(STAGES)
        out["default_tasks"] = list(cf.design_tasks())
        out["task_of"] = {s: cf.task_for_stage(s) for s in STAGES}
        try:
            cf.build_feed_dag(feed, "two")
        except ConfigError as exc:
            out["unknown_design"] = exc.field
        print("RESULT " + json.dumps(out))
    """, env, ROOT)
    assert result["errors"] == {}
    # Keystone's employers are sent in one file: its DAG, not theirs (tests/test_airflow_aggregate.py).
    stems = sorted(p.stem for p in feeds.glob("*.yaml") if not p.stem.endswith("-keystone"))
    assert sorted(result["dags"]) == sorted(["carrierfeeds_housekeeping", "feed__keystone-exchange",
                                             *(f"feed__{f}" for f in stems)])
    assert result["dags"].pop("feed__keystone-exchange")["tasks"] == ["aggregate"]
    housekeeping = result["dags"].pop("carrierfeeds_housekeeping")
    assert housekeeping["tasks"] == ["poll_acknowledgments", "retention_purge", "verify_ledger_chain",
                                     "check_census_arrivals", "reconcile_returns"]
    assert housekeeping["schedule"] == "30 3 * * *" and housekeeping["timezone"] == "UTC"
    for info in [housekeeping, *result["dags"].values()]:
        assert all(r >= 1 for r in info["retries"])
        assert all(t is not None and t > 0 for t in info["timeouts"])
    for stem in stems:
        feed = load_feed(feeds / f"{stem}.yaml")
        info = result["dags"][f"feed__{stem}"]
        # The default design's tasks; a later task of any feed outranks an earlier one.
        assert info["tasks"] == result["default_tasks"]
        assert info["weight_rules"] in (["upstream"], ["WeightRule.UPSTREAM"])
        assert f"employer:{feed.employer.id}" in info["tags"] and f"carrier:{feed.carrier.id}" in info["tags"]
        assert info["schedule"] == feed.schedule
        # The DAG's time zone is what its cron is read in (the timetable's), not only its start date's.
        assert info["timezone"] == feed.timezone and feed.timezone in info["timetable_tz"]
        assert info["doc_md"] == feed.description and feed.description
        assert info["description"] == f"{feed.employer.name} to {feed.carrier.name}"
        assert info["max_active_runs"] == 1
    # Every design runs every stage exactly once, in the pipeline's order.
    designs = result["designs"]
    assert designs["three"]["tasks"] == ["intake", "build", "deliver"]
    assert designs["feed"]["tasks"] == ["run"]
    assert designs["stages"]["tasks"] == result["stages"]
    assert all(d["stages"] == result["stages"] for d in designs.values()), designs
    assert designs[result["default_design"]]["tasks"] == result["default_tasks"]
    default = designs[result["default_design"]]["stages_of"]
    assert result["task_of"] == {stage: task_id for task_id, stages in default.items() for stage in stages}
    assert result["unknown_design"] == "CARRIERFEEDS_AIRFLOW_TASKS"
    variant_dag = result["dags"]["feed__zz-berlin-variant"]
    assert (variant_dag["schedule"], variant_dag["timezone"]) == ("@daily", "Europe/Berlin")
    assert variant_dag["doc_md"] == "Variant feed: **Berlin** time, preset schedule."


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
        when = pendulum.datetime(2026, 11, 20, 12, tz="UTC")
        run = dag.test(logical_date=when)
        first = str(run.state)
        # A second run of the same interval (what a clear or a manual re-trigger does) must not resend.
        again = dag.test(logical_date=when)
        print("RESULT " + json.dumps({{"state": first, "again": str(again.state)}}))
    """, env, tmp_path)
    assert result["state"] in ("success", "DagRunState.SUCCESS")
    assert result["again"] in ("success", "DagRunState.SUCCESS")
    arrived = sorted(inbox.iterdir())
    assert len(arrived) == 1 and arrived[0].name.endswith(".834.pgp")
    assert "already delivered; not sending again" in result["_output"]

    from carrierfeeds.ledger import Ledger

    ledger = Ledger.open(s.resolved_ledger_url)
    try:
        (ledger_run,) = ledger.list_runs(feed_id=DEMO_FEED)
    finally:
        ledger.close()

    home = Path(env["AIRFLOW_HOME"])
    db = sqlite3.connect(home / "airflow.db")
    tables: dict[str, str] = {}
    for (table,) in db.execute("select name from sqlite_master where type='table'"):
        query = f'select * from "{table}"'  # noqa: S608 - table names from the schema
        tables[table] = "\n".join(repr(row) for row in db.execute(query))
    db.close()
    log_files = sorted(home.rglob("*.log"))
    logs = "".join(p.read_text(errors="replace") for p in log_files)
    # The search reaches what it must: the ledger's run id (not PHI) is in XCom and in the task logs.
    assert ledger_run.run_id in tables["xcom"], "XCom holds no stage result: the search would prove nothing"
    assert ledger_run.run_id in logs + result["_output"] and "stage validate succeeded" in logs + result["_output"]
    haystack = ("\n".join(tables.values()) + logs + result["_output"]).casefold()
    x12_forms = [canaries["first_name"].upper(), canaries["address1"].upper(),
                 canaries["dob"].replace("-", ""), canaries["ssn"], "123-45-6780"]
    for value in [*canaries.values(), *x12_forms]:
        assert value.casefold() not in haystack, value


@pytest.mark.parametrize("design", ["three", "feed", "stages"])
def test_each_design_delivers_once_and_shows_every_stage_in_its_log_and_xcom(tmp_path: Path, demo_keys: Any,
                                                                             design: str) -> None:
    """Each task design (CARRIERFEEDS_AIRFLOW_TASKS) under dag.test(): every stage runs once, in its own
    collapsible log group followed by its outcome line, and the task's XCom lists what each of its stages
    did; a second run of the interval sends nothing."""
    from carrierfeeds.census.generate import generate_census, write_census_csv
    from carrierfeeds.config import LocalDelivery
    from carrierfeeds.demo import DEMO_FEED, prepare_workspace
    from carrierfeeds.ledger import Ledger
    from carrierfeeds.run import STAGES

    ws = prepare_workspace(tmp_path / "ws", keys=demo_keys, keys_dir=tmp_path / "keys", config_root=ROOT,
                           delivery=LocalDelivery(path="outbox"))
    day = pd.Timestamp("2026-11-20").date()
    write_census_csv(generate_census(20, 7, as_of=day), ws.inbound / "census_20261120.csv")
    env = _workspace_env(tmp_path, ws.settings, {"CARRIERFEEDS_AIRFLOW_TASKS": design})
    result = _run_python(f"""
        import json, runpy, pendulum
        module = runpy.run_path({str(ROOT / 'dags' / 'carrierfeeds_dags.py')!r})
        dag = module["feed__{DEMO_FEED}"]
        when = pendulum.datetime(2026, 11, 20, 12, tz="UTC")
        first = dag.test(logical_date=when)
        xcom = {{ti.task_id: ti.xcom_pull(task_ids=ti.task_id) for ti in first.get_task_instances()}}
        print("FIRST RUN ENDED", flush=True)
        again = dag.test(logical_date=when)
        print("RESULT " + json.dumps({{"states": [str(first.state), str(again.state)], "xcom": xcom,
                                       "tasks": [t.task_id for t in dag.tasks], "design": {DESIGN}}}))
    """, env, tmp_path)
    assert [_state(s) for s in result["states"]] == ["success", "success"]
    assert result["tasks"] == list(result["design"])
    assert [s for stages in result["design"].values() for s in stages] == list(STAGES)
    outbox = ws.settings.data_dir / "outbox"
    (sent,) = sorted(outbox.iterdir())
    assert sent.name.endswith(".834.pgp")

    ledger = Ledger.open(ws.settings.resolved_ledger_url)
    try:
        (ledger_run,) = ledger.list_runs(feed_id=DEMO_FEED)
        events = ledger.run_events(ledger_run.run_id)
        assert len(ledger.transmissions(ledger_run.run_id)) == 1
    finally:
        ledger.close()
    first_run = [e for e in events if e.kind == "stage"][:2 * len(STAGES)]
    assert [(e.stage, e.status) for e in first_run] == [(s, st) for s in STAGES for st in ("started", "succeeded")]

    # XCom: per task, each of its stages' status and counts, with the ledger's run id (nothing else to look up).
    for task_id, stages in result["design"].items():
        pushed = result["xcom"][task_id]
        assert (pushed["feed_id"], pushed["run_id"], pushed["task_id"]) == (DEMO_FEED, ledger_run.run_id, task_id)
        assert pushed["interval_start"] == "2026-11-20"
        assert list(pushed["stages"]) == stages
        assert {o["status"] for o in pushed["stages"].values()} == {"succeeded"}
        assert all(o["seconds"] >= 0 and isinstance(o["result"], dict) for o in pushed["stages"].values())
    validated = result["xcom"][next(t for t, s in result["design"].items() if "validate" in s)]
    assert validated["stages"]["validate"]["result"]["run_id"] == ledger_run.run_id

    # The task log: one group per stage (Airflow's UI folds it under the stage's name), its outcome after it.
    log_text = result["_output"].split("FIRST RUN ENDED")[0] + "".join(
        p.read_text(errors="replace") for p in sorted(Path(env["AIRFLOW_HOME"]).rglob("*.log")))
    for stage in STAGES:
        opened = log_text.find(f"::group::{stage}")
        assert opened >= 0, stage
        closed = log_text.find("::endgroup::", opened)
        outcome = log_text.find(f"stage {stage} succeeded in ", opened)
        assert 0 <= closed < outcome, stage


# ------------------------------------------------------------------------------ failure notifications


def test_notifier_posts_phi_free_json_from_a_connection(tmp_path: Path, webhook: WebhookReceiver) -> None:
    port = webhook.server_address[1]
    conn = {"conn_type": "http", "host": "127.0.0.1", "port": port, "schema": "http", "login": "ops",
            "password": "s3cret", "extra": {"endpoint": "hooks/carrierfeeds"}}
    env = _airflow_env(tmp_path, {"AIRFLOW_CONN_CF_WEBHOOK": json.dumps(conn)})
    result = _run_python("""
        import json
        from types import SimpleNamespace
        from carrierfeeds.airflow import FeedStageFailed
        from carrierfeeds.errors import TransientError
        from carrierfeeds.airflow import WebhookNotifier

        ti = SimpleNamespace(dag_id="feed__f1", task_id="validate", try_number=4)
        notifier = WebhookNotifier(feed_id="f1", connection_id="cf_webhook")
        notifier({"ti": ti, "run_id": "scheduled__2026-11-20", "exception":
                  FeedStageFailed("validate", "census_rejected", "3 rows failed rule ssn_format")})
        # Anything not ours is named by type only: its text could hold a member's data.
        notifier({"ti": ti, "run_id": "manual__1", "exception": KeyError("123-45-6789 Quillonius")})
        # A Variable naming no connection (housekeeping without a webhook): nothing sent, nothing raised.
        WebhookNotifier(feed_id=None, connection_variable="cf_no_such_variable").notify({"ti": ti})
        refused = None
        try:
            WebhookNotifier(feed_id="f1", url="http://127.0.0.1:9/closed").notify({"ti": ti})
        except TransientError as exc:
            refused = exc.code
        print("RESULT " + json.dumps({"refused": refused}))
    """, env, ROOT)
    assert result["refused"] == "transient"
    assert "names no webhook connection" in result["_output"]
    assert [p.path for p in webhook.posts] == ["/hooks/carrierfeeds", "/hooks/carrierfeeds"]
    first, second = webhook.bodies
    assert first == {"event": "failure", "feed_id": "f1", "dag_id": "feed__f1", "run_id": "scheduled__2026-11-20",
                     "task_id": "validate", "try_number": 4, "stage": "validate", "error_code": "census_rejected",
                     "message": "3 rows failed rule ssn_format", "logical_date": None}
    assert second["error_code"] == "internal" and second["message"] == "KeyError"
    assert "123-45-6789" not in json.dumps(webhook.bodies) and "Quillonius" not in json.dumps(webhook.bodies)
    auth = webhook.posts[0].headers["Authorization"]
    assert auth == "Basic " + base64.b64encode(b"ops:s3cret").decode()


def test_failed_run_notifies_the_feeds_webhook(tmp_path: Path, demo_keys: Any, webhook: WebhookReceiver) -> None:
    """A real dag.test() whose first stage fails for good (no census) posts one notice, no retries."""
    from carrierfeeds.config import LocalDelivery
    from carrierfeeds.demo import DEMO_FEED, prepare_workspace

    ws = prepare_workspace(tmp_path / "ws", keys=demo_keys, keys_dir=tmp_path / "keys", config_root=ROOT,
                           delivery=LocalDelivery(path="outbox"))
    feed_file = ws.settings.feeds_dir / f"{DEMO_FEED}.yaml"
    data = yaml.safe_load(feed_file.read_text())
    data["notify"] = {"webhook_connection_id": "cf_webhook"}
    feed_file.write_text(yaml.safe_dump(data, sort_keys=False))
    conn = {"conn_type": "http", "host": f"http://127.0.0.1:{webhook.server_address[1]}",
            "extra": {"endpoint": "feed-failures"}}
    s = ws.settings
    env = _airflow_env(tmp_path, {
        "CARRIERFEEDS_FEEDS_DIR": str(s.feeds_dir), "CARRIERFEEDS_MAPPINGS_DIR": str(s.mappings_dir),
        "CARRIERFEEDS_SCHEMAS_DIR": str(s.schemas_dir), "CARRIERFEEDS_DATA_DIR": str(s.data_dir),
        "CARRIERFEEDS_GNUPG_HOME": str(s.gnupg_home), "CARRIERFEEDS_KEYS_DIR": str(tmp_path / "keys"),
        "AIRFLOW_CONN_CF_WEBHOOK": json.dumps(conn),
    })
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True,
                   capture_output=True, timeout=300)
    result = _run_python(f"""
        import json, runpy, pendulum
        module = runpy.run_path({str(ROOT / 'dags' / 'carrierfeeds_dags.py')!r})
        run = module["feed__{DEMO_FEED}"].test(logical_date=pendulum.datetime(2026, 11, 20, 12, tz="UTC"))
        states = {{ti.task_id: str(ti.state) for ti in run.get_task_instances()}}
        print("RESULT " + json.dumps({{"state": str(run.state), "tasks": states, "design": {DESIGN}}}))
    """, env, tmp_path)
    assert result["state"] in ("failed", "DagRunState.FAILED")
    assert result["tasks"][_task_of(result, "stage_census")] in ("failed", "TaskInstanceState.FAILED")
    assert len(webhook.posts) == 1
    post = webhook.posts[0]
    assert post.path == "/feed-failures"
    notice = post.body
    assert notice["feed_id"] == DEMO_FEED and notice["dag_id"] == f"feed__{DEMO_FEED}"
    assert notice["stage"] == "stage_census" and notice["error_code"] == "data"
    assert notice["try_number"] == 1  # permanent: failed on the first try, no retries


def test_housekeeping_dag_purges_and_verifies_the_ledger(tmp_path: Path, webhook: WebhookReceiver) -> None:
    """The chain check passes on an intact ledger and fails the run once a row is edited behind its back;
    the failure reaches the webhook connection the Variable names, like a feed's notice."""
    from datetime import UTC, datetime

    import sqlalchemy as sa

    from carrierfeeds.ledger import Ledger

    data_dir = tmp_path / "var"
    data_dir.mkdir()
    url = f"sqlite:///{data_dir / 'ledger.sqlite'}"
    ledger = Ledger.open(url)
    ledger.upgrade()
    for n in range(3):
        ledger.audit(actor="test", action="seed", object_type="feed", object_id=f"f{n}",
                     now=datetime(2026, 11, 1, tzinfo=UTC))
    ledger.close()
    env = _airflow_env(tmp_path, {
        "CARRIERFEEDS_FEEDS_DIR": str(ROOT / "feeds"), "CARRIERFEEDS_MAPPINGS_DIR": str(ROOT / "mappings"),
        "CARRIERFEEDS_SCHEMAS_DIR": str(ROOT / "schemas"), "CARRIERFEEDS_DATA_DIR": str(data_dir),
        "AIRFLOW_VAR_CARRIERFEEDS_HOUSEKEEPING_WEBHOOK": "ops_webhook",
        "AIRFLOW_CONN_OPS_WEBHOOK": json.dumps({"conn_type": "http", "host": "127.0.0.1", "schema": "http",
                                                "port": webhook.server_address[1],
                                                "extra": {"endpoint": "housekeeping"}}),
    })
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True,
                   capture_output=True, timeout=300)
    code = f"""
        import json, runpy, sys, pendulum
        module = runpy.run_path({str(ROOT / 'dags' / 'carrierfeeds_dags.py')!r})
        day = int(sys.argv[1]) if len(sys.argv) > 1 else 20
        run = module["carrierfeeds_housekeeping"].test(logical_date=pendulum.datetime(2026, 11, DAY, 4, tz="UTC"))
        tis = {{ti.task_id: str(ti.state).rsplit(".", 1)[-1].lower() for ti in run.get_task_instances()}}
        print("RESULT " + json.dumps({{"state": str(run.state).rsplit(".", 1)[-1].lower(), "tasks": tis}}))
    """
    intact = _run_python(code.replace("DAY", "20"), env, tmp_path)
    assert intact["state"] == "success", intact["tasks"]
    assert intact["tasks"] == {"poll_acknowledgments": "success", "retention_purge": "success",
                               "verify_ledger_chain": "success", "check_census_arrivals": "success",
                               "reconcile_returns": "success"}
    assert webhook.bodies == []

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("update audit_events set object_id = 'forged' where object_id = 'f1'"))
    engine.dispose()
    tampered = _run_python(code.replace("DAY", "21"), env, tmp_path)
    assert tampered["state"] == "failed"
    assert tampered["tasks"]["verify_ledger_chain"] == "failed"
    assert "ledger_chain_broken" in tampered["_output"]
    assert [p.path for p in webhook.posts] == ["/housekeeping"]
    notice = webhook.posts[0].body
    assert notice["dag_id"] == "carrierfeeds_housekeeping" and notice["feed_id"] is None
    assert (notice["task_id"], notice["error_code"], notice["try_number"]) == (
        "verify_ledger_chain", "ledger_chain_broken", 1)
    assert notice["message"].startswith("ledger chain broken at")


def test_staging_store_key_comes_from_an_airflow_variable(tmp_path: Path) -> None:
    """Workers sharing a store by URL share the Variable's key; without it a shared store is refused."""
    from carrierfeeds.staging import StagingKey

    key = StagingKey.generate()
    base = {"CARRIERFEEDS_DATA_DIR": str(tmp_path / "var"), "CARRIERFEEDS_KEYS_DIR": str(tmp_path / "keys")}
    code = """
        import json, uuid
        from datetime import date
        from carrierfeeds.airflow import staging_store
        from carrierfeeds.errors import ConfigError
        from carrierfeeds.settings import Settings

        out = {}
        try:
            store = staging_store(Settings(), "memory://cf-" + uuid.uuid4().hex + "/staging")
            store.put_bytes("f1", date(2026, 11, 20), "census.csv", b"ssn,name")
            out["shared"] = store.get_bytes("f1", date(2026, 11, 20), "census.csv").decode()
            out["key_id"] = store.key.key_id
        except ConfigError as exc:
            out["refused"] = exc.code
        local = staging_store(Settings())
        out["local_key_id"] = local.key.key_id
        print("RESULT " + json.dumps(out))
    """
    shared_key = {"AIRFLOW_VAR_CARRIERFEEDS_STAGING_SECRET_KEY": key.as_text()}
    with_var = _run_python(code, _airflow_env(tmp_path, {**base, **shared_key}), ROOT)
    assert with_var["shared"] == "ssn,name" and with_var["key_id"] == key.key_id
    assert with_var["local_key_id"] == key.key_id
    without = _run_python(code, _airflow_env(tmp_path, base), ROOT)
    assert without["refused"] == "config" and "shared" not in without
    # The local folder falls back to the keys directory's file, made 0600 on first use.
    assert without["local_key_id"] == StagingKey.from_file(tmp_path / "keys" / "staging.key").key_id


# ------------------------------------------------------------------------------ connections
def test_sftp_connection_branches_pin_the_host_and_refuse_what_fails_open(tmp_path: Path, sshd_server: Any) -> None:
    """SFTP provider conventions: PEM in the extras, host_key or known_hosts pins; every refusal names its field."""
    import paramiko

    endpoint = sshd_server.endpoint()
    host = f"[{endpoint.host}]:{endpoint.port}"
    key_type, key_b64 = sshd_server.host_public_key_line.split()[:2]
    pem = Path(endpoint.private_key_path).read_text()
    base = {"conn_type": "sftp", "host": endpoint.host, "port": endpoint.port, "login": endpoint.username}
    conns = {
        "cf_pem": {**base, "extra": {"private_key": pem, "host_key": f"{key_type} {key_b64}"}},
        "cf_hashed": {**base, "extra": {"key_file": str(endpoint.private_key_path),
                                        "known_hosts": f"# pinned\n{paramiko.HostKeys.hash_host(host)} "
                                                       f"{key_type} {key_b64}\n"}},
        "cf_port22": {**base, "host": "sftp.carrier.example", "port": None,
                      "extra": {"key_file": str(endpoint.private_key_path), "host_key": f"{key_type} {key_b64}"}},
        "cf_no_check": {**base, "extra": {"key_file": str(endpoint.private_key_path), "no_host_key_check": "true",
                                          "host_key": f"{key_type} {key_b64}"}},
        "cf_no_pin": {**base, "extra": {"key_file": str(endpoint.private_key_path)}},
        "cf_other_host": {**base, "extra": {"key_file": str(endpoint.private_key_path),
                                            "known_hosts": f"[{endpoint.host}]:{endpoint.port + 1} {key_type} "
                                                           f"{key_b64}\nsftp.other.example {key_type} {key_b64}\n"}},
        "cf_only_revoked": {**base, "extra": {"key_file": str(endpoint.private_key_path),
                                              "known_hosts": f"@revoked {host} {key_type} {key_b64}\n"}},
    }
    env = _airflow_env(tmp_path, {f"AIRFLOW_CONN_{cid.upper()}": json.dumps(c) for cid, c in conns.items()})
    scratch = tmp_path / "scratch"
    scratch.mkdir(mode=0o700)
    inbox = sshd_server.root / "conn-test"
    inbox.mkdir(exist_ok=True)
    result = _run_python(f"""
        import json, stat
        from pathlib import Path
        from carrierfeeds.airflow import sftp_endpoint_from_connection
        from carrierfeeds.errors import ConfigError
        from carrierfeeds.transport.sftp import SftpTransport

        scratch = Path({str(scratch)!r})
        out = {{}}
        pem = sftp_endpoint_from_connection("cf_pem", scratch)
        key = Path(pem.private_key_path)
        out["pem"] = {{"in_scratch": key.parent == scratch, "mode": stat.S_IMODE(key.stat().st_mode),
                       "key": key.read_text(), "known_hosts": pem.known_hosts}}
        probe = scratch / "probe.txt"
        probe.write_text("not member data")
        SftpTransport(pem, {str(inbox)!r}).deliver(probe, "probe.txt")
        hashed = sftp_endpoint_from_connection("cf_hashed", scratch)
        SftpTransport(hashed, {str(inbox)!r}).deliver(probe, "probe-hashed.txt")
        out["port22"] = sftp_endpoint_from_connection("cf_port22", scratch).known_hosts
        for cid in ("cf_no_check", "cf_no_pin", "cf_other_host", "cf_only_revoked"):
            try:
                sftp_endpoint_from_connection(cid, scratch)
                out[cid] = "accepted"
            except ConfigError as exc:
                out[cid] = {{"field": exc.field, "message": exc.message}}
        print("RESULT " + json.dumps(out))
    """, env, ROOT)
    pem_info = result["pem"]
    assert pem_info["in_scratch"] and pem_info["mode"] == 0o600 and pem_info["key"] == pem
    assert pem_info["known_hosts"] == f"{host} {key_type} {key_b64}\n"
    assert sorted(p.name for p in inbox.iterdir()) == ["probe-hashed.txt", "probe.txt"]
    assert result["port22"] == f"sftp.carrier.example {key_type} {key_b64}\n"
    assert result["cf_no_check"]["field"] == "extra.no_host_key_check"
    assert result["cf_no_pin"]["field"] == "extra.host_key"
    assert result["cf_other_host"]["field"] == "extra.known_hosts"
    assert f"pins no key for {host}" in result["cf_other_host"]["message"]
    assert result["cf_only_revoked"]["field"] == "extra.known_hosts"
    assert pem not in result["_output"]  # the key itself is never logged


# ------------------------------------------------------------------------------ failing for good
def test_broken_mapping_fails_at_once_and_the_notice_names_it(tmp_path: Path, demo_keys: Any,
                                                              webhook: WebhookReceiver) -> None:
    """A mapping that does not load is a ConfigError: no retries, and the notice carries its code and file."""
    import shutil

    from carrierfeeds.config import LocalDelivery
    from carrierfeeds.demo import DEMO_FEED, prepare_workspace

    ws = prepare_workspace(tmp_path / "ws", keys=demo_keys, keys_dir=tmp_path / "keys", config_root=ROOT,
                           delivery=LocalDelivery(path="outbox"))
    mappings = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", mappings)
    broken = mappings / f"{ws.feed.mapping_id}.yaml"
    broken.write_text(broken.read_text().replace("  - ssn\n", "  - snn\n"))
    _with_notify(ws.settings, "cf_webhook")
    conn = {"conn_type": "http", "host": f"http://127.0.0.1:{webhook.server_address[1]}"}
    env = _workspace_env(tmp_path, ws.settings, {"CARRIERFEEDS_MAPPINGS_DIR": str(mappings),
                                                 "AIRFLOW_CONN_CF_WEBHOOK": json.dumps(conn)})
    result = _run_python(f"""
        import datetime, json, runpy, pendulum
        module = runpy.run_path({str(ROOT / 'dags' / 'carrierfeeds_dags.py')!r})
        dag = module["feed__{DEMO_FEED}"]
        for t in dag.tasks:  # the same retries, without minutes of back-off between them
            t.retry_delay, t.retry_exponential_backoff = datetime.timedelta(0), False
        run = dag.test(logical_date=pendulum.datetime(2026, 11, 20, 12, tz="UTC"))
        tis = {{ti.task_id: [str(ti.state), ti.try_number] for ti in run.get_task_instances()}}
        print("RESULT " + json.dumps({{"state": str(run.state), "tasks": tis, "design": {DESIGN}}}))
    """, env, tmp_path)
    assert _state(result["state"]) == "failed"
    state, tries = result["tasks"][_task_of(result, "stage_census")]
    assert _state(state) == "failed" and tries == 1
    assert [b["error_code"] for b in webhook.bodies] == ["config"]
    notice = webhook.posts[0].body
    assert notice["stage"] == "stage_census" and notice["try_number"] == 1
    assert broken.name in notice["message"] and "snn" in notice["message"]


@pytest.fixture
def silent_sftp_port() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts connections and never says a word (no SSH banner)."""
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def test_timeout_on_the_last_try_closes_the_run_and_clears_staged_member_data(
        tmp_path: Path, demo_keys: Any, sshd_server: Any, webhook: WebhookReceiver, silent_sftp_port: int) -> None:
    """deliver hangs on a carrier that never answers until its task's execution timeout, twice: the retry
    skips encrypt (done in the first try) instead of making the file again; after the last try the ledger
    run is closed as failed and the staging store keeps only the state and the ciphertext."""
    from carrierfeeds.config import SftpDelivery
    from carrierfeeds.demo import DEMO_FEED, prepare_workspace
    from carrierfeeds.ledger import Ledger
    from carrierfeeds.staging import StagingKey, StagingStore

    ws = prepare_workspace(tmp_path / "ws", keys=demo_keys, keys_dir=tmp_path / "unused-keys", config_root=ROOT,
                           delivery=SftpDelivery(connection_id="cf_silent", remote_dir="/inbox"))
    day = pd.Timestamp("2026-11-20").date()
    from carrierfeeds.census.generate import generate_census, write_census_csv

    write_census_csv(generate_census(30, 5, as_of=day), ws.inbound / "census_20261120.csv")
    _with_notify(ws.settings, "cf_webhook")
    endpoint = sshd_server.endpoint()
    silent = {"conn_type": "sftp", "host": "127.0.0.1", "port": silent_sftp_port, "login": endpoint.username,
              "extra": {"key_file": str(endpoint.private_key_path), "banner_timeout": 300, "connect_timeout": 5,
                        "host_key": " ".join(sshd_server.host_public_key_line.split()[:2])}}
    hook = {"conn_type": "http", "host": f"http://127.0.0.1:{webhook.server_address[1]}"}
    env = _workspace_env(tmp_path, ws.settings, {"AIRFLOW_CONN_CF_SILENT": json.dumps(silent),
                                                 "AIRFLOW_CONN_CF_WEBHOOK": json.dumps(hook)})
    result = _run_python(f"""
        import datetime, json, runpy, pendulum
        module = runpy.run_path({str(ROOT / 'dags' / 'carrierfeeds_dags.py')!r})
        dag = module["feed__{DEMO_FEED}"]
        design = {DESIGN}
        [(task_id, stages)] = [(t, s) for t, s in design.items() if "deliver" in s]
        deliver = dag.get_task(task_id)
        # The task runs its stages before deliver first (in its first try): room for them on a busy
        # machine (10 s each: encrypt alone in the three-task design), then the hang.
        deliver.execution_timeout = datetime.timedelta(seconds=5 + 10 * stages.index("deliver"))
        deliver.retries, deliver.retry_delay, deliver.retry_exponential_backoff = 1, datetime.timedelta(0), False
        run = dag.test(logical_date=pendulum.datetime(2026, 11, 20, 12, tz="UTC"))
        tis = {{ti.task_id: [str(ti.state), ti.try_number] for ti in run.get_task_instances()}}
        print("RESULT " + json.dumps({{"state": str(run.state), "tasks": tis, "design": design}}))
    """, env, tmp_path)
    assert _state(result["state"]) == "failed"
    task_id = _task_of(result, "deliver")
    state, tries = result["tasks"][task_id]
    assert _state(state) == "failed" and tries == 2, result["tasks"]
    # The stages of the deliver task that come before deliver (encrypt, or every one in the feed design).
    stages = result["design"][task_id]
    earlier = stages[:stages.index("deliver")]
    assert "encrypt" in earlier
    assert all(_state(result["tasks"][t][0]) == "success" for t in result["design"] if t != task_id)
    assert "AirflowTaskTimeout" in result["_output"], result["_output"][-6000:]
    # Under any design the task log says which stage hung, after that stage's log group.
    assert result["_output"].count("stage deliver failed (AirflowTaskTimeout) in ") == 2

    ledger = Ledger.open(ws.settings.resolved_ledger_url)
    try:
        (run,) = ledger.list_runs(feed_id=DEMO_FEED)
        events = ledger.run_events(run.run_id)
    finally:
        ledger.close()
    assert run.status == "failed"
    final = events[-1]
    assert (final.kind, final.status, final.error_code) == ("run_finished", "failed", "timeout")
    assert final.message == "deliver: AirflowTaskTimeout"
    # Each stage is in the ledger: encrypt made the ciphertext once and was skipped by the retry, like
    # every stage of that task before deliver.
    for stage in earlier:
        assert [e.status for e in events if e.stage == stage] == ["started", "succeeded", "skipped"], stage
    assert [e.status for e in events if e.stage == "deliver"].count("started") == 2
    assert not [e for e in events if e.stage == "confirm"]

    store = StagingStore(ws.settings.staging_dir, StagingKey.from_file(tmp_path / "keys" / "staging.key"))
    staged = json.loads(store.get_bytes(DEMO_FEED, day, "state.json"))
    assert staged["cipher_name"].endswith(".834.pgp")
    assert store.names(DEMO_FEED, day) == sorted(["state.json", staged["cipher_name"]])
    scratch = ws.settings.data_dir / "scratch"
    assert not scratch.exists() or not any(p.is_file() for p in scratch.rglob("*"))

    assert [b["error_code"] for b in webhook.bodies] == ["timeout"]
    assert webhook.posts[0].body["stage"] == "deliver" and webhook.posts[0].body["try_number"] == 2


# ---------------------------------------------------------------------------------------- lifecycle
def test_dag_runs_follow_the_feeds_lifecycle_and_a_suspended_feed_alerts(tmp_path: Path, demo_keys: Any,
                                                                          webhook: WebhookReceiver) -> None:
    """A testing feed's DAG run sends its T file to the test endpoint only; once suspended, the next run's
    build is refused (recorded in the ledger) and the feed's webhook gets one notice, no retries."""
    from carrierfeeds.census.generate import generate_census, write_census_csv
    from carrierfeeds.config import LocalDelivery, LocalEndpoint
    from carrierfeeds.demo import DEMO_FEED, prepare_workspace
    from carrierfeeds.lifecycle import suspend
    from carrierfeeds.settings import load_bundle, open_ledger

    ws = prepare_workspace(tmp_path / "ws", keys=demo_keys, keys_dir=tmp_path / "keys", config_root=ROOT,
                           delivery=LocalDelivery(path="carrier-inbox", test=LocalEndpoint(path="carrier-test")))
    feed_file = ws.settings.feeds_dir / f"{DEMO_FEED}.yaml"
    data = yaml.safe_load(feed_file.read_text())
    data["lifecycle"] = {"initial": "testing"}
    data["notify"] = {"webhook_connection_id": "cf_webhook"}
    feed_file.write_text(yaml.safe_dump(data, sort_keys=False))

    def census_for(day: str) -> None:
        when = pd.Timestamp(day).date()
        write_census_csv(generate_census(20, 31, as_of=when), ws.inbound / f"census_{when:%Y%m%d}.csv")

    census_for("2026-11-20")
    conn = {"conn_type": "http", "host": f"http://127.0.0.1:{webhook.port}"}
    env = _workspace_env(tmp_path, ws.settings, {"AIRFLOW_CONN_CF_WEBHOOK": json.dumps(conn)})
    dag_run = f"""
        import json, runpy, pendulum
        module = runpy.run_path({str(ROOT / 'dags' / 'carrierfeeds_dags.py')!r})
        run = module["feed__{DEMO_FEED}"].test(logical_date=pendulum.datetime(%s, 12, tz="UTC"))
        states = {{ti.task_id: str(ti.state) for ti in run.get_task_instances()}}
        print("RESULT " + json.dumps({{"state": str(run.state), "tasks": states, "design": {DESIGN}}}))
    """
    first = _run_python(dag_run % "2026, 11, 20", env, tmp_path)
    assert _state(first["state"]) == "success", first["tasks"]
    sent = sorted((ws.settings.data_dir / "carrier-test").iterdir())
    assert len(sent) == 1 and sent[0].name.startswith("TEST_") and sent[0].name.endswith(".834.pgp")
    assert not (ws.settings.data_dir / "carrier-inbox").exists() or \
        list((ws.settings.data_dir / "carrier-inbox").iterdir()) == []
    assert webhook.posts == []

    ledger = open_ledger(ws.settings)
    suspend(ledger, load_bundle(ws.settings, DEMO_FEED).feed, by="ops", reason="carrier paused testing",
            now=pd.Timestamp("2026-11-21T08:00:00Z").to_pydatetime())
    census_for("2026-11-21")
    second = _run_python(dag_run % "2026, 11, 21", env, tmp_path)
    assert _state(second["state"]) == "failed", (second["tasks"], second["_output"][-6000:])
    assert _state(second["tasks"][_task_of(second, "build")]) == "failed"
    assert _state(second["tasks"][_task_of(second, "deliver")]) != "success"
    assert len(list((ws.settings.data_dir / "carrier-test").iterdir())) == 1
    [notice] = webhook.bodies
    assert notice["stage"] == "build" and notice["error_code"] == "lifecycle"
    assert notice["try_number"] == 1  # a refusal is permanent: no retries
    runs = {r.interval_start.isoformat(): r for r in ledger.list_runs(feed_id=DEMO_FEED)}
    assert runs["2026-11-21"].status == "refused"
    assert ledger.transmissions(runs["2026-11-21"].run_id) == []
    delivery = ledger.find_delivery(feed_id=DEMO_FEED, interval_start=runs["2026-11-20"].interval_start)
    assert delivery is not None and delivery.transport == "local:test"
    ledger.close()
