"""Runs: one per (feed, interval), every attempt and stage recorded in order, vocabulary enforced."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa
from ledger_helpers import JAN, Clock, start

from carrierfeeds.ledger import Ledger, LedgerError, UnknownRecord


def test_start_run_is_idempotent_per_feed_and_interval(ledger: Ledger, raw: sa.Engine, clock: Clock) -> None:
    first = start(ledger, clock)
    again = start(ledger, clock, actor="airflow")
    assert again.run_id == first.run_id
    assert (first.attempt, again.attempt) == (1, 2)
    assert again.started_at == first.started_at
    assert again.status == first.status == "running"
    with raw.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM runs")).scalar_one() == 1
    attempts = [e for e in ledger.run_events(first.run_id) if e.kind == "run_attempt"]
    assert [(e.attempt, e.actor, e.status) for e in attempts] == [(1, "test", "started"),
                                                                  (2, "airflow", "started")]


def test_every_attempt_records_the_carrierfeeds_version_that_ran_it(ledger: Ledger, clock: Clock) -> None:
    import carrierfeeds

    run = start(ledger, clock)
    start(ledger, clock)
    attempts = [e for e in ledger.run_events(run.run_id) if e.kind == "run_attempt"]
    assert [e.detail for e in attempts] == [{"version": carrierfeeds.__version__}] * 2
    assert carrierfeeds.__version__


def test_other_interval_or_feed_is_another_run(ledger: Ledger, clock: Clock) -> None:
    jan = start(ledger, clock)
    feb = start(ledger, clock, interval=(date(2026, 2, 1), date(2026, 2, 28)))
    other = start(ledger, clock, feed_id="globex-dental")
    assert len({jan.run_id, feb.run_id, other.run_id}) == 3
    assert feb.attempt == other.attempt == 1


def test_stages_and_finish_are_recorded_in_order(ledger: Ledger, clock: Clock) -> None:
    run = start(ledger, clock)
    ledger.record_stage(run.run_id, "validate", "started", now=clock())
    ledger.record_stage(run.run_id, "validate", "succeeded", now=clock(),
                        detail={"members": 12, "bad_rows": 0})
    ledger.record_stage(run.run_id, "deliver", "failed", now=clock(), error_code="transient",
                        message="connection reset after 3 attempts")
    ledger.finish_run(run.run_id, "failed", now=clock(), error_code="transient")
    assert ledger.get_run(run.run_id).status == "failed"  # type: ignore[union-attr]

    retry = start(ledger, clock)
    assert (retry.run_id, retry.attempt, retry.status) == (run.run_id, 2, "running")
    ledger.record_stage(run.run_id, "deliver", "succeeded", now=clock(), detail={"bytes": 2048})
    ledger.finish_run(run.run_id, "delivered", now=clock(), counts={"members": 12, "subscribers": 5})

    events = ledger.run_events(run.run_id)
    assert [(e.kind, e.stage, e.status, e.attempt) for e in events] == [
        ("run_attempt", None, "started", 1),
        ("stage", "validate", "started", 1),
        ("stage", "validate", "succeeded", 1),
        ("stage", "deliver", "failed", 1),
        ("run_finished", None, "failed", 1),
        ("run_attempt", None, "started", 2),
        ("stage", "deliver", "succeeded", 2),
        ("run_finished", None, "delivered", 2),
    ]
    assert events[2].detail == {"members": 12, "bad_rows": 0}
    assert events[3].error_code == "transient" and events[3].message == "connection reset after 3 attempts"
    assert events[-1].detail == {"members": 12, "subscribers": 5}
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert all(e.at.tzinfo is not None and e.at.utcoffset() == UTC.utcoffset(None) for e in events)
    assert ledger.get_run(run.run_id).status == "delivered"  # type: ignore[union-attr]


def test_times_come_back_as_the_same_utc_instant(ledger: Ledger) -> None:
    from datetime import timedelta, timezone

    eastern = timezone(timedelta(hours=-5))
    when = datetime(2026, 1, 31, 22, 15, 1, 123456, tzinfo=eastern)
    run = ledger.start_run(feed_id="acme-medical", interval_start=JAN[0], interval_end=JAN[1], actor="t",
                           now=when)
    assert run.started_at == when and run.started_at.tzinfo == UTC
    assert run.started_at.isoformat() == "2026-02-01T03:15:01.123456+00:00"


def test_unknown_run_and_bad_vocabulary_are_refused(ledger: Ledger, clock: Clock) -> None:
    run = start(ledger, clock)
    assert ledger.get_run("nope") is None
    with pytest.raises(UnknownRecord):
        ledger.record_stage("nope", "validate", "started", now=clock())
    with pytest.raises(UnknownRecord):
        ledger.finish_run("nope", "failed", now=clock())
    with pytest.raises(LedgerError):
        ledger.record_stage(run.run_id, "validate", "done", now=clock())
    with pytest.raises(LedgerError):
        ledger.finish_run(run.run_id, "ok", now=clock())
    with pytest.raises(LedgerError):
        ledger.record_stage(run.run_id, "validate", "started", now=datetime(2026, 1, 1))  # noqa: DTZ001
    with pytest.raises(LedgerError):
        ledger.start_run(feed_id="acme-medical", interval_start=JAN[1], interval_end=JAN[0], actor="t",
                         now=clock())
    with pytest.raises(LedgerError):
        ledger.start_run(feed_id="acme-medical", interval_start=datetime(2026, 1, 1, tzinfo=UTC),
                         interval_end=JAN[1], actor="t", now=clock())
    assert [e.kind for e in ledger.run_events(run.run_id)] == ["run_attempt"]


def test_latest_runs_is_each_feeds_newest_run_as_get_run_reads_it(ledger: Ledger, clock: Clock) -> None:
    assert ledger.latest_runs() == {}
    feb = (date(2026, 2, 1), date(2026, 2, 28))
    # acme: February's run started first, then January's (a backfill): January's is the newest started.
    early = start(ledger, clock, interval=feb)
    ledger.finish_run(early.run_id, "delivered", now=clock())
    backfill = start(ledger, clock)
    ledger.record_stage(backfill.run_id, "validate", "started", now=clock())
    # globex: failed, retried, delivered.
    failed = start(ledger, clock, feed_id="globex-dental")
    ledger.finish_run(failed.run_id, "failed", now=clock(), error_code="transient")
    start(ledger, clock, feed_id="globex-dental")
    ledger.finish_run(failed.run_id, "delivered", now=clock())
    # initech: retried while the first attempt is still open.
    open_run = start(ledger, clock, feed_id="initech-vision")
    start(ledger, clock, feed_id="initech-vision")

    latest = ledger.latest_runs()
    assert {f: run.run_id for f, (run, _) in latest.items()} == {
        "acme-medical": backfill.run_id, "globex-dental": failed.run_id, "initech-vision": open_run.run_id}
    for run, events in latest.values():
        assert run == ledger.get_run(run.run_id)
        assert events == ledger.run_events(run.run_id)
    assert [(run.status, run.attempt) for run, _ in latest.values()] == [
        ("running", 1), ("delivered", 2), ("running", 2)]
