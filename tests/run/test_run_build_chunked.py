"""The build stage over an accepted census in family-whole chunks (an Arrow IPC stream, as validate will
write it) gives the file, counts and disclosure record of the same census staged whole, for every chunk
size from one family; chunks that cannot give that file (a family's first census row left out of the
view, its rows far apart) fall back to the whole census and still do."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from tests.census.chunked_accepted import write_chunked

from carrierfeeds.census.accepted import read_accepted, read_accepted_chunks
from carrierfeeds.census.generate import generate_census, write_census_csv
from carrierfeeds.run.context import ACCEPTED, RunContext, RunRef, open_run
from carrierfeeds.run.disclosure import DISCLOSURE
from carrierfeeds.run.stages import build, stage_census, validate

pytestmark = pytest.mark.slow

DAY = date(2026, 11, 20)


def _clock() -> datetime:
    return datetime(2026, 11, 21, 7, 30, tzinfo=UTC)


def _built(ctx: RunContext) -> tuple[str, dict[str, Any], bytes]:
    """Build; the file's sha256 (hashed from the run folder), the build's counts, the disclosure record."""
    build(ctx)
    state = ctx.state()
    assert state.built is not None
    digest = hashlib.sha256((ctx.run_dir / state.built.file_name).read_bytes()).hexdigest()
    assert digest == state.built.payload_sha256
    return digest, dict(state.built.counts), ctx.store.get_bytes(ctx.feed_id, ctx.ref.interval_start, DISCLOSURE)


def _stage_chunked(ctx: RunContext, whole: pd.DataFrame, families: int, tmp_path: Path) -> int:
    """Replace the run's accepted file with ``whole`` in chunks of ``families`` families; the chunks."""
    path = ctx.run_dir / ACCEPTED
    sizes = write_chunked(tmp_path / ACCEPTED, whole, families)
    (tmp_path / ACCEPTED).replace(path)
    ctx.keep(path)
    return len(sizes)


def _validated(ws: Any, census: Path) -> tuple[RunContext, pd.DataFrame]:
    ctx = open_run(ws.settings, RunRef.for_day(ws.feed.feed_id, DAY), clock=_clock, actor="test")
    stage_census(ctx, census)
    validate(ctx)
    return ctx, read_accepted(ctx.fetch(ACCEPTED))


def test_chunked_accepted_census_builds_the_same_file(sftp_workspace: Any, tmp_path: Path) -> None:
    ws = sftp_workspace
    ctx, whole = _validated(ws, ws.write_census(members=40, seed=7, as_of=DAY))
    want = _built(ctx)
    assert want[1]["excluded_plan_not_authorized"]  # vision rows: the view leaves some out
    families = whole["subscriber_id"].nunique()
    for size in (1, 2, 3, families):
        chunks = _stage_chunked(ctx, whole, size, tmp_path)
        assert chunks == -(-families // size)
        assert len(list(read_accepted_chunks(ctx.run_dir / ACCEPTED))) == chunks
        assert _built(ctx) == want, size


def test_chunks_out_of_the_views_order_fall_back_to_the_whole_census(sftp_workspace: Any, tmp_path: Path) -> None:
    """Every vision row (not authorised: left out of the view) first, in reverse: the chunks' order (their
    families' first rows) is not the view's (their first rows the view keeps)."""
    ws = sftp_workspace
    frame = generate_census(30, 3, as_of=DAY)
    vision = frame["plan_code"] == "VIS-STD"
    assert vision.any() and set(ws.feed.authorization.plans).isdisjoint({"VIS-STD"})
    frame = pd.concat([frame[vision].iloc[::-1], frame[~vision]], ignore_index=True)
    census = ws.inbound / f"census_{DAY:%Y%m%d}.csv"
    write_census_csv(frame, census)
    ctx, whole = _validated(ws, census)
    want = _built(ctx)
    for size in (1, 2):
        _stage_chunked(ctx, whole, size, tmp_path)
        assert _built(ctx) == want, size
    counts = json.loads(want[2])
    assert counts  # a disclosure record was staged


def test_a_snapshot_feeds_first_file_streams_and_stages_the_same_snapshot(
        sftp_workspace: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Changes mode, no snapshot yet: the full audit file and the next snapshot, chunk by chunk (a
    segmented snapshot), are those of the whole census's in-memory diff (the path a feed with a base
    takes, forced here by claiming a base that load_base then does not find)."""
    from tests.run.test_run_changes_mode import _changes_mode

    from carrierfeeds.changes import SnapshotStore

    ws = sftp_workspace
    settings, store = _changes_mode(ws, tmp_path)
    census = ws.write_census(members=40, seed=5, as_of=DAY)
    ctx = open_run(settings, RunRef.for_day(ws.feed.feed_id, DAY), clock=_clock, actor="test")
    stage_census(ctx, census)
    validate(ctx)
    whole = read_accepted(ctx.fetch(ACCEPTED))
    pending = store._dir(ws.feed.feed_id) / "pending" / f"{ctx.run_id}.snap"

    def snapshot() -> tuple[bytes, pd.DataFrame]:
        got = store._read(pending, ws.feed.feed_id)
        assert got is not None and got[0].rows == len(got[1]) and got[0].full_file
        return pending.read_bytes()[:8], got[1]

    with monkeypatch.context() as patched:
        patched.setattr(SnapshotStore, "has_base", lambda *_: True)
        want = _built(ctx)
    magic, want_snapshot = snapshot()
    assert magic == b"CFSNAP1\n" and want[1]["ins03_030"] == want[1]["members"] > 0
    families = whole["subscriber_id"].nunique()
    for size in (1, 3, families):
        _stage_chunked(ctx, whole, size, tmp_path)
        assert _built(ctx) == want, size
        magic, got_snapshot = snapshot()
        assert magic == b"CFSNAP2\n"
        pd.testing.assert_frame_equal(got_snapshot, want_snapshot, check_exact=True)
        assert ctx.state().snapshot_staged


def test_data_the_build_refuses_gives_the_whole_censuss_error(sftp_workspace: Any, tmp_path: Path) -> None:
    """A coverage level the mapping does not know in a late family and a malformed start date in the
    first (an accepted file validation did not write): the whole census's build names the level first
    (its rule runs before the dates'); the chunked build, whose first chunk fails on the date, gives that
    same error."""
    from carrierfeeds.config import load_feed
    from carrierfeeds.enrollment import build_enrollment
    from carrierfeeds.errors import DataError

    ws = sftp_workspace
    ctx, whole = _validated(ws, ws.write_census(members=30, seed=4, as_of=DAY))
    whole = whole.astype({c: "str" for c in ("coverage_level", "coverage_start")})
    kept = whole["plan_code"].astype("str").isin(ws.feed.authorization.plans)
    first, late = whole.index[kept][0], whole.index[kept][-1]
    whole.loc[late, "coverage_level"] = "NOPE"
    whole.loc[first, "coverage_start"] = "2026-13-45"
    with pytest.raises(DataError) as want:
        build_enrollment(whole, load_feed(ws.settings.feeds_dir / f"{ws.feed.feed_id}.yaml"), ctx.bundle.mapping,
                         as_of=DAY)
    assert want.value.details["rule"] == "coverage_level"
    _stage_chunked(ctx, whole, 1, tmp_path)
    with pytest.raises(DataError) as got:
        build(ctx)
    assert (got.value.message, got.value.details) == (want.value.message, want.value.details)
