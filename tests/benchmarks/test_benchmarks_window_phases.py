"""The window benchmark splits a task's run time at its log's marks, and reads the celery worker's log."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from benchmarks.window import celery_worker_marks, task_log_marks, task_phases

T0 = datetime(2026, 12, 6, 20, 0, 0, tzinfo=UTC)


def _line(seconds: float, event: str, logger: str = "task", **extra: object) -> str:
    stamp = (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")
    return json.dumps({"timestamp": stamp, "level": "info", "event": event, "logger": logger, **extra})


def _task_log() -> str:
    """A task try's log as Airflow 3 writes it for the feed design (two stages here), with a stray
    unstructured line and a group of Airflow's own after the stages."""
    ours = "carrierfeeds.airflow"
    return "\n".join([
        _line(1.0, "::group::Pre Execute"),
        _line(1.5, "DAG bundles loaded: dags-folder", logger="airflow.dag_processing.bundles.manager"),
        _line(2.25, "Worker startup parse complete", logger="task", dag_file_parse_ms=550, bundle_prepare_ms=8),
        _line(2.5, "::endgroup::"),
        "a child's stray output",
        _line(3.0, "run r1 of feed f: attempt 1", logger="carrierfeeds.ledger.store"),
        _line(3.5, "::group::stage_census", logger=ours),
        _line(3.75, "::endgroup::", logger=ours),
        _line(3.75, "stage stage_census succeeded in 0.2 s (run r1)", logger=ours),
        _line(3.75, "::group::validate", logger=ours),
        _line(9.0, "::endgroup::", logger=ours),
        _line(9.25, "stage validate succeeded in 5.5 s (run r1)", logger=ours),
        _line(9.5, "::group::Post Execute"),
        _line(9.75, "::endgroup::"),
    ]) + "\n"


def test_task_phases_split_the_run_time_at_the_log_marks_and_add_up_to_it() -> None:
    start, end = T0 + timedelta(seconds=0.75), T0 + timedelta(seconds=10.0)
    phases = task_phases(task_log_marks(_task_log()), start, end)
    assert phases == {"process_start_s": 0.25, "pre_execute_s": 1.5, "dag_file_parse_s": 0.55, "setup_s": 1.0,
                      "stages_s": 5.75, "finish_s": 0.75}
    parts = ("process_start_s", "pre_execute_s", "setup_s", "stages_s", "finish_s")
    assert sum(phases[p] or 0.0 for p in parts) == (end - start).total_seconds()


def test_a_task_that_never_reached_a_stage_has_no_stage_phases() -> None:
    text = "\n".join(_task_log().splitlines()[:4]) + "\n"
    phases = task_phases(task_log_marks(text), T0, T0 + timedelta(seconds=3))
    assert phases["pre_execute_s"] == 1.5
    assert phases["setup_s"] is None and phases["stages_s"] is None and phases["finish_s"] is None
    empty = task_phases(task_log_marks(""), T0, T0 + timedelta(seconds=3))
    assert set(empty.values()) == {None}


def test_celery_worker_marks_pair_each_celery_task_with_its_receipt_and_its_end() -> None:
    log = "\n".join([
        "2026-12-06T20:37:33.504875Z [info     ] Task execute_workload[aaa-1] received [celery.worker.strategy]",
        "2026-12-06T20:37:33.519666Z [info     ] Task execute_workload[bbb-2] received [celery.worker.strategy]",
        "2026-12-06T20:37:33.600000Z [info     ] [aaa-1] Executing workload in Celery: ti=... [airflow]",
        "2026-12-06T20:37:57.811839Z [info     ] Workload finished [supervisor] duration=23.4 exit_code=0",
        "2026-12-06T20:37:57.819879Z [info     ] Task execute_workload[aaa-1] succeeded in 24.3s: None [trace]",
        "2026-12-06T20:38:01.000000Z [error    ] Task execute_workload[bbb-2] failed in 27.4s: boom [trace]",
        "not a log line",
    ])
    marks = celery_worker_marks(log)
    assert set(marks) == {"aaa-1", "bbb-2"}
    assert marks["aaa-1"] == {"received": datetime(2026, 12, 6, 20, 37, 33, 504875, tzinfo=UTC),
                              "done": datetime(2026, 12, 6, 20, 37, 57, 819879, tzinfo=UTC)}
    assert marks["bbb-2"]["done"] == datetime(2026, 12, 6, 20, 38, 1, tzinfo=UTC)
