"""Two deliveries of the same run at once (two workers, or a CLI rerun beside Airflow), in two processes
against a real sshd and the ledger on SQLite and PostgreSQL: exactly one uploads, the other finds the
file delivered; no failed attempt, no temp file left."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from carrierfeeds.run.context import RunRef, open_run
from carrierfeeds.run.stages import build, conformance, encrypt, stage_census, validate
from carrierfeeds.settings import open_ledger

pytestmark = pytest.mark.slow

TRIALS = 20
FIRST_DAY = date(2026, 11, 1)


def _clock() -> datetime:
    return datetime(2026, 11, 30, 7, 30, tzinfo=UTC)


def _deliverer(settings: Any, feed_id: str, jobs: Any, barrier: Any, results: Any) -> None:
    """A worker process: for each day it is given, open the run, wait for the other worker, deliver."""
    from carrierfeeds.errors import CarrierFeedsError
    from carrierfeeds.run.stages import deliver

    while (day := jobs.get()) is not None:
        ctx = open_run(settings, RunRef.for_day(feed_id, day), clock=_clock, actor="worker")
        try:
            barrier.wait(timeout=120)
            try:
                outcome = deliver(ctx)
            except CarrierFeedsError as exc:
                results.put((day, "error", exc.code))
            else:
                results.put((day, "already" if outcome.get("already_delivered") else "uploaded", None))
        finally:
            ctx.ledger.close()


def _prepare(ws: Any, day: date, seed: int) -> None:
    """Every stage before delivery, in this process (what the two workers then race to deliver)."""
    ctx = open_run(ws.settings, RunRef.for_day(ws.feed.feed_id, day), clock=_clock, actor="test")
    try:
        stage_census(ctx, ws.write_census(members=6, seed=seed, as_of=day))
        validate(ctx)
        build(ctx)
        conformance(ctx)
        encrypt(ctx)
    finally:
        ctx.ledger.close()


def test_two_processes_delivering_one_run_at_once_upload_it_exactly_once(sftp_workspace: Any) -> None:
    ws = sftp_workspace
    days = [FIRST_DAY + timedelta(days=k) for k in range(TRIALS)]
    spawn = multiprocessing.get_context("spawn")
    jobs, results = spawn.Queue(), spawn.Queue()
    barrier = spawn.Barrier(2)
    workers = [spawn.Process(target=_deliverer, args=(ws.settings, ws.feed.feed_id, jobs, barrier, results),
                             daemon=True) for _ in range(2)]
    for w in workers:
        w.start()
    seen: dict[date, list[tuple[str, Any]]] = {}
    try:
        for k, day in enumerate(days):
            _prepare(ws, day, seed=100 + k)
            jobs.put(day)
            jobs.put(day)
            for _ in range(2):
                got_day, kind, code = results.get(timeout=180)
                seen.setdefault(got_day, []).append((kind, code))
    finally:
        for _ in workers:
            jobs.put(None)
        for w in workers:
            w.join(timeout=60)
            if w.is_alive():
                w.kill()

    # Exactly one upload per run, the other worker found it delivered; no error anywhere.
    assert {d: sorted(v) for d, v in seen.items()} == {d: [("already", None), ("uploaded", None)] for d in days}
    names = sorted(p.name for p in Path(ws.inbox).iterdir())
    assert len(names) == TRIALS and not [n for n in names if n.startswith(".")]  # no temp file left
    ledger = open_ledger(ws.settings)
    try:
        deliveries = ledger.deliveries(feed_id=ws.feed.feed_id)
        assert sorted(d.interval_start for d in deliveries) == days  # one delivery row per run
        outcomes = ledger.delivery_outcomes(delivery_ids=[d.delivery_id for d in deliveries])
        # One rename request and one outcome per run, no failed attempt.
        assert sorted(o.status for o in outcomes) == ["delivered"] * TRIALS + ["rename_sent"] * TRIALS
        assert ledger.verify_chain().ok
    finally:
        ledger.close()
