"""The I/O edges between stages: what a stage writes to the run folder and what it keeps in the staging
store are one pass and agree byte for byte; a census that changes while it is staged leaves neither."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from carrierfeeds import run
from carrierfeeds.census.accepted import read_accepted
from carrierfeeds.errors import TransientError
from carrierfeeds.run.context import ACCEPTED, RunRef, run_dir_for

pytestmark = pytest.mark.slow

DAY = date(2026, 11, 20)


def _clock() -> datetime:
    return datetime(2026, 11, 21, 7, 30, tzinfo=UTC)


def test_staged_census_accepted_rows_and_834_are_what_the_run_folder_holds(sftp_workspace: Any) -> None:
    ws = sftp_workspace
    census = ws.write_census(members=40, seed=31, as_of=DAY)
    ref = RunRef.for_day(ws.feed.feed_id, DAY)
    ctx = run.open_run(ws.settings, ref, clock=_clock, actor="test")
    run.stage_census(ctx, census)
    staged = ctx.run_dir / "census.csv"
    assert staged.read_bytes() == census.read_bytes()
    assert ctx.state().census.census_sha256 == hashlib.sha256(census.read_bytes()).hexdigest()
    assert ctx.store.get_bytes(ctx.feed_id, DAY, "census.csv") == census.read_bytes()
    assert (staged.stat().st_mode & 0o777) == 0o600

    run.validate(ctx)
    accepted = ctx.run_dir / ACCEPTED
    assert ctx.store.get_bytes(ctx.feed_id, DAY, ACCEPTED) == accepted.read_bytes()
    assert (accepted.stat().st_mode & 0o777) == 0o600
    frame = read_accepted(accepted)
    pd.testing.assert_frame_equal(frame, _as_arrow_reads_it(accepted), check_exact=True)
    assert len(frame) == len(pd.read_csv(census, dtype=str))

    run.build(ctx)
    state = ctx.state().build
    payload = (ctx.run_dir / state.file_name).read_bytes()
    assert hashlib.sha256(payload).hexdigest() == state.payload_sha256 and len(payload) == state.payload_bytes
    assert ctx.store.get_bytes(ctx.feed_id, DAY, state.file_name) == payload
    assert not [p.name for p in ctx.run_dir.iterdir() if ".tmp" in p.name]
    assert not [p.name for p in run_dir_for(ws.settings, ref).iterdir() if ".tmp-" in p.name]
    ctx.ledger.close()


def _as_arrow_reads_it(path: Path) -> pd.DataFrame:
    """A small run's accepted file (one chunk: one IPC stream) as pyarrow's own stream reader reads it."""
    import pyarrow as pa

    with pa.OSFile(str(path)) as source:  # read, not mapped: the test overwrites the file after
        reader = pa.ipc.open_stream(source)
        frame: pd.DataFrame = reader.read_all().to_pandas()
        assert source.tell() == path.stat().st_size  # one chunk
    return frame


@pytest.mark.parametrize("compression", ["lz4", "uncompressed"])
def test_build_reads_accepted_rows_staged_as_plain_text_before(sftp_workspace: Any, compression: str) -> None:
    """A run validated by a version that wrote plain text columns (LZ4 feather, then uncompressed) is built
    the same after the upgrade (validate now writes low-cardinality columns as dictionaries)."""
    ws = sftp_workspace
    census = ws.write_census(members=30, seed=32, as_of=DAY)
    ref = RunRef.for_day(ws.feed.feed_id, DAY)
    ctx = run.open_run(ws.settings, ref, clock=_clock, actor="test", ephemeral=True)
    run.stage_census(ctx, census)
    run.validate(ctx)
    first = run.open_run(ws.settings, ref, clock=_clock, actor="test", ephemeral=True)
    run.build(first)
    sha_uncompressed = first.state().build.payload_sha256

    rows = _as_arrow_reads_it(first.fetch(ACCEPTED))
    assert any(isinstance(dtype, pd.CategoricalDtype) for dtype in rows.dtypes)
    rows = rows.astype({c: "str" for c, dtype in rows.dtypes.items() if isinstance(dtype, pd.CategoricalDtype)})
    before = first.run_dir / ACCEPTED
    rows.to_feather(before, compression=compression)
    first.keep(before)
    run.wipe_scratch(first)
    frame = read_accepted(first.fetch(ACCEPTED))
    pd.testing.assert_frame_equal(frame, rows, check_exact=True)
    run.build(first)  # a retry of build: the same control numbers, so the same bytes
    assert first.state().build.payload_sha256 == sha_uncompressed
    first.ledger.close()
    ctx.ledger.close()


@pytest.mark.parametrize("earlier", [False, True])
def test_census_changing_while_staged_leaves_no_copy_and_no_object(
        sftp_workspace: Any, monkeypatch: pytest.MonkeyPatch, earlier: bool) -> None:
    """The employer's file grows after the pick hashed it: TransientError, and neither a copy in the run
    folder nor a new object in the store (an earlier attempt's object stays as it was)."""
    from carrierfeeds.census import sources

    ws = sftp_workspace
    census = ws.write_census(members=20, seed=33, as_of=DAY)
    original = census.read_bytes()
    ref = RunRef.for_day(ws.feed.feed_id, DAY)
    ctx = run.open_run(ws.settings, ref, clock=_clock, actor="test")
    if earlier:
        run.stage_census(ctx, census)
        (ctx.run_dir / "census.csv").unlink()
    real = sources.census_from_file

    def pick_then_grow(path: Path, **kwargs: Any) -> Any:
        pick = real(path, **kwargs)
        with path.open("ab") as fh:  # still being written by the employer's export
            fh.write(b"\n" + original.splitlines()[-1] + b"\n")
        return pick

    monkeypatch.setattr(sources, "census_from_file", pick_then_grow)
    with pytest.raises(TransientError, match="changed while it was staged"):
        run.stage_census(ctx, census)
    assert not (ctx.run_dir / "census.csv").exists()
    assert not [p.name for p in ctx.run_dir.iterdir() if "census" in p.name]
    store_dir = run_dir_for(ws.settings, ref)  # caught before the store is touched: maybe not even made
    store_names = [p.name for p in store_dir.iterdir()] if store_dir.exists() else []
    assert not [n for n in store_names if ".tmp-" in n]
    if earlier:
        assert ctx.store.get_bytes(ctx.feed_id, DAY, "census.csv") == original
    else:
        assert "census.csv.enc" not in store_names
    ctx.ledger.close()


@pytest.mark.parametrize("named", [True, False])
def test_a_local_census_is_staged_from_one_pass_copy_sealed_and_hashed(sftp_workspace: Any, named: bool) -> None:
    """An explicitly named file and the local source's newest file: the private copy (0600), the sealed
    object and the recorded sha256 are all of the employer's bytes; no temporary is left."""
    ws = sftp_workspace
    census = ws.write_census(members=25, seed=34, as_of=DAY)
    original = census.read_bytes()
    ref = RunRef.for_day(ws.feed.feed_id, DAY)
    ctx = run.open_run(ws.settings, ref, clock=_clock, actor="test")
    result = run.stage_census(ctx, census if named else None)
    staged = ctx.run_dir / "census.csv"
    assert staged.read_bytes() == original and (staged.stat().st_mode & 0o777) == 0o600
    assert ctx.store.get_bytes(ctx.feed_id, DAY, "census.csv") == original
    assert result["census_sha256"] == ctx.state().census.census_sha256 == hashlib.sha256(original).hexdigest()
    assert ctx.state().census.census_pick["kind"] == "local"
    assert [p.name for p in ctx.run_dir.rglob("*") if p.is_file() and "census" in p.name] == ["census.csv"]
    assert not [p.name for p in run_dir_for(ws.settings, ref).iterdir() if ".tmp-" in p.name]
    ctx.ledger.close()


@pytest.mark.parametrize("earlier", [False, True])
def test_a_census_refused_after_its_copy_leaves_no_copy_and_no_object(sftp_workspace: Any, earlier: bool) -> None:
    """A zip the schema does not allow is refused once copied (the archive check reads the copy): the
    sealed object written beside the copy is abandoned with it; an earlier attempt's object stays."""
    import zipfile

    from carrierfeeds.errors import DataError

    ws = sftp_workspace
    census = ws.write_census(members=20, seed=35, as_of=DAY)
    original = census.read_bytes()
    ref = RunRef.for_day(ws.feed.feed_id, DAY)
    ctx = run.open_run(ws.settings, ref, clock=_clock, actor="test")
    if earlier:
        run.stage_census(ctx, census)
        (ctx.run_dir / "census.csv").unlink()
    zipped = census.with_name("census.zip")
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("census.csv", original)
    with pytest.raises(DataError, match="archive"):
        run.stage_census(ctx, zipped)
    assert not [p.name for p in ctx.run_dir.rglob("*") if p.is_file() and "census" in p.name]
    store_names = [p.name for p in run_dir_for(ws.settings, ref).iterdir()]
    assert not [n for n in store_names if ".tmp-" in n]
    if earlier:
        assert ctx.store.get_bytes(ctx.feed_id, DAY, "census.csv") == original
    else:
        assert "census.csv.enc" not in store_names
    ctx.ledger.close()
