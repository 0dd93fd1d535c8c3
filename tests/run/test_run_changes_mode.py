"""A changes-mode feed end to end: day 1 the full file, day 2 only the changes; a failed delivery leaves the
snapshot where it was and the rerun sends the same changes (real gpg, sshd, ledger)."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from carrierfeeds.run.context import RunRef
from carrierfeeds.run.stages import run_feed

pytestmark = pytest.mark.slow

DAY1, DAY2, DAY3 = date(2026, 11, 19), date(2026, 11, 20), date(2026, 11, 21)
ROOT = Path(__file__).resolve().parents[2]


def _clock() -> datetime:
    return datetime(2026, 11, 21, 7, 30, tzinfo=UTC)


def _plain(ws: Any, name: str, tmp_path: Path) -> bytes:
    out = tmp_path / f"{name}.plain"
    assert ws.keys.carrier.decrypt_file(ws.inbox / name, out).valid_signature
    return out.read_bytes()


def _changes_mode(ws: Any, tmp_path: Path) -> tuple[Any, Any]:
    """The workspace's settings with the demo carrier's mapping switched to changes mode, and its snapshot store."""
    from carrierfeeds.changes import SnapshotStore

    mappings = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", mappings)
    m = mappings / "sunrise-health.yaml"
    m.write_text(m.read_text().replace("# mode: full", "mode: changes"))
    settings = ws.settings.model_copy(update={"mappings_dir": mappings})
    return settings, SnapshotStore(settings.data_dir / "snapshots", settings.resolved_keys_dir / "snapshot.key")


def test_changes_mode_sends_full_then_only_changes_and_resends_after_a_failure(
        sftp_workspace: Any, tmp_path: Path) -> None:
    ws = sftp_workspace
    settings, store = _changes_mode(ws, tmp_path)

    census1 = ws.write_census(members=20, seed=5, as_of=DAY1)
    first = run_feed(settings, RunRef.for_day(ws.feed.feed_id, DAY1), clock=_clock, actor="test")
    assert first.status == "delivered", first.error
    day1 = _plain(ws, first.file_name, tmp_path)
    assert b"***4~" in day1 and b"*030*" in day1
    base = store.info(ws.feed.feed_id)
    assert base is not None and base.run_id == first.run_id

    frame = pd.read_csv(census1, dtype=str, keep_default_na=False)
    mover = frame.loc[frame["plan_code"].isin(ws.feed.authorization.plans), "member_id"].iloc[0]
    frame.loc[frame["member_id"] == mover, "address1"] = "1 Changed Street"
    census1.unlink()
    frame.to_csv(ws.inbound / f"census_{DAY2:%Y%m%d}.csv", index=False)

    known_hosts = ws.keys_dir / "known_hosts"
    good = known_hosts.read_text()
    host = good.split()[0]
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    known_hosts.write_text(f"{host} {' '.join((tmp_path / 'other.pub').read_text().split()[:2])}\n")
    failed = run_feed(settings, RunRef.for_day(ws.feed.feed_id, DAY2), clock=_clock, actor="test")
    assert failed.status in ("refused", "failed")
    after_failure = store.info(ws.feed.feed_id)
    assert after_failure is not None and after_failure.run_id == first.run_id

    known_hosts.write_text(good)
    second = run_feed(settings, RunRef.for_day(ws.feed.feed_id, DAY2), clock=_clock, actor="test")
    assert second.status == "delivered", second.error
    assert second.payload_sha256 == failed.payload_sha256  # the very same changes, resent
    day2 = _plain(ws, second.file_name, tmp_path)
    assert b"***2~" in day2
    ins = [s for s in day2.split(b"~\n") if s.startswith(b"INS*")]
    assert ins and all(s.split(b"*")[3] == b"001" and s.split(b"*")[4] == b"43" for s in ins)
    assert b"HD*" not in day2  # an address change carries no coverage loop
    now = store.info(ws.feed.feed_id)
    assert now is not None and now.run_id == second.run_id


def test_full_file_on_demand_sends_every_member_as_030_and_advances_the_snapshot(
        sftp_workspace: Any, tmp_path: Path) -> None:
    ws = sftp_workspace
    settings, store = _changes_mode(ws, tmp_path)

    census1 = ws.write_census(members=12, seed=9, as_of=DAY1)
    first = run_feed(settings, RunRef.for_day(ws.feed.feed_id, DAY1), clock=_clock, actor="test")
    assert first.status == "delivered", first.error
    day1_ins = [s for s in _plain(ws, first.file_name, tmp_path).split(b"~\n") if s.startswith(b"INS*")]

    frame = pd.read_csv(census1, dtype=str, keep_default_na=False)
    mover = frame.loc[frame["plan_code"].isin(ws.feed.authorization.plans), "member_id"].iloc[0]
    frame.loc[frame["member_id"] == mover, "address1"] = "2 Changed Street"
    census1.unlink()
    frame.to_csv(ws.inbound / f"census_{DAY2:%Y%m%d}.csv", index=False)

    full = run_feed(settings, RunRef.for_day(ws.feed.feed_id, DAY2), clock=_clock, actor="test", full_file=True)
    assert full.status == "delivered", full.error
    day2 = _plain(ws, full.file_name, tmp_path)
    assert b"***4~" in day2  # BGN08: the full audit file, not a change file (2)
    ins = [s for s in day2.split(b"~\n") if s.startswith(b"INS*")]
    # every member again, each as 030, although only one address changed
    assert len(ins) == len(day1_ins) and all(s.split(b"*")[3] == b"030" for s in ins)
    assert b"2 CHANGED STREET" in day2.upper()
    now = store.info(ws.feed.feed_id)
    assert now is not None and now.run_id == full.run_id


def test_a_change_outside_the_retro_window_ends_rejected_by_row_and_the_census_is_tried_again(
        sftp_workspace: Any, tmp_path: Path) -> None:
    """The retroactive window depends on the carrier's snapshot, so the build judges it: the run ends in a
    recorded state (rejected, outside_retro_window, by row) and the census is not recorded as processed,
    so the next run tries that same census again; once ops widen the window it is delivered."""
    from carrierfeeds.census.sources import CensusIndex
    from carrierfeeds.settings import open_ledger

    ws = sftp_workspace
    settings, store = _changes_mode(ws, tmp_path)
    census1 = ws.write_census(members=12, seed=11, as_of=DAY1)
    first = run_feed(settings, RunRef.for_day(ws.feed.feed_id, DAY1), clock=_clock, actor="test")
    assert first.status == "delivered", first.error

    frame = pd.read_csv(census1, dtype=str, keep_default_na=False)
    mover = frame.loc[frame["plan_code"].isin(ws.feed.authorization.plans), "member_id"].iloc[0]
    moved = (frame["member_id"] == mover) & frame["plan_code"].isin(ws.feed.authorization.plans)
    frame.loc[moved, "coverage_start"] = "2026-06-01"  # before the 60-day window, inside 366 days
    census1.unlink()
    frame.to_csv(ws.inbound / f"census_{DAY2:%Y%m%d}.csv", index=False)
    rows = sorted(int(i) + 2 for i in frame.index[moved])

    refused = run_feed(settings, RunRef.for_day(ws.feed.feed_id, DAY2), clock=_clock, actor="test")
    assert refused.status == "rejected" and refused.error is not None
    assert refused.error["code"] == "outside_retro_window" and refused.error["row"] == rows[0]
    assert refused.error["column"] == "coverage_start" and refused.error["rule"] == "retro_window"
    ledger = open_ledger(settings)
    try:
        finished = [(e.status, e.error_code) for e in ledger.run_events(refused.run_id) if e.kind == "run_finished"]
    finally:
        ledger.close()
    assert finished == [("rejected", "outside_retro_window")]
    assert len(CensusIndex(settings.data_dir, ws.feed.feed_id).entries()) == 1  # day 1's census only
    base = store.info(ws.feed.feed_id)
    assert base is not None and base.run_id == first.run_id

    again = run_feed(settings, RunRef.for_day(ws.feed.feed_id, DAY3), clock=_clock, actor="test")
    assert again.status == "rejected" and again.error is not None  # the same census, not "no new census"
    assert again.error["code"] == "outside_retro_window"

    m = settings.mappings_dir / "sunrise-health.yaml"
    m.write_text(m.read_text().replace("# retro_window_days: 60", "retro_window_days: 366"))
    sent = run_feed(settings, RunRef.for_day(ws.feed.feed_id, DAY3), clock=_clock, actor="test")
    assert sent.status == "delivered", sent.error
    assert len(CensusIndex(settings.data_dir, ws.feed.feed_id).entries()) == 2
