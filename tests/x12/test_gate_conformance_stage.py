"""The conformance stage with pyx12 in a child process (large files) or in this one (small files): same
verdicts, same order, no sample left behind, either way."""

from __future__ import annotations

import contextlib
import hashlib
import mmap
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from carrierfeeds import files, pipeline
from carrierfeeds.errors import ConformanceFailed
from carrierfeeds.pipeline import RunContext, RunRef

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DAY = date(2026, 11, 20)
SAMPLE = "pyx12-sample.834"


def _clock() -> datetime:
    return datetime(2026, 11, 21, 7, 30, tzinfo=UTC)


@pytest.fixture(autouse=True, params=["child", "this"])
def pyx12_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with pyx12 in a child process (any size qualifies) and in this process (none does)."""
    monkeypatch.setattr(pipeline, "PYX12_CHILD_MIN_BYTES", 0 if request.param == "child" else 1 << 62)
    return str(request.param)


@pytest.fixture
def built(tmp_path: Path, demo_keys: Any) -> Callable[[int], RunContext]:
    """A run of the demo feed taken through build (12 members), pyx12 sampled above ``max_members``."""
    from carrierfeeds.census.generate import generate_census, write_census_csv
    from carrierfeeds.config import LocalDelivery
    from carrierfeeds.demo import prepare_workspace

    def make(max_members: int) -> RunContext:
        ws = prepare_workspace(tmp_path / "ws", keys=demo_keys, keys_dir=tmp_path / "keys", config_root=ROOT,
                               ledger_url=f"sqlite:///{tmp_path / 'ledger.sqlite'}",
                               delivery=LocalDelivery(path="outbox"))
        settings = ws.settings.model_copy(update={"pyx12_max_members": max_members})
        census = ws.inbound / f"census_{DAY:%Y%m%d}.csv"
        write_census_csv(generate_census(12, 7, as_of=DAY), census)
        ctx = pipeline.open_run(settings, RunRef.for_day(ws.feed.feed_id, DAY), clock=_clock, actor="test")
        pipeline.stage_census(ctx, census)
        pipeline.validate(ctx)
        pipeline.build(ctx)
        return ctx

    return make


def _rewrite(ctx: RunContext, change: Callable[[bytes], bytes]) -> None:
    """Replace the built file as if build had rendered ``change(file)``: the state's hash to match."""
    path = ctx.fetch(ctx.state()["file_name"])
    data = change(path.read_bytes())
    path.write_bytes(data)
    ctx.save_state(payload_sha256=hashlib.sha256(data).hexdigest())


def _long_name(data: bytes) -> bytes:
    """The first member's NM1*IL with an NM105 pyx12 refuses as too long; the structure is untouched."""
    at = data.index(b"NM1*IL*")
    end = data.index(b"~", at)
    fields = data[at:end].split(b"*")
    fields[5] = b"Q" * 40
    broken = data[:at] + b"*".join(fields) + data[end:]
    return broken


def _bad_se_count(data: bytes) -> bytes:
    at = data.rindex(b"SE*")
    count = data[at + 3:data.index(b"*", at + 3)]
    return data[:at + 3] + str(int(count) + 1).encode() + data[at + 3 + len(count):]


def _stage_detail(ctx: RunContext, status: str) -> dict[str, Any]:
    events = [e for e in ctx.ledger.run_events(ctx.run_id) if e.kind == "stage" and e.stage == "conformance"
              and e.status == status]
    assert len(events) == 1
    return dict(events[0].detail or {})


def _leftovers(ctx: RunContext) -> list[str]:
    return [p.name for p in ctx.run_dir.iterdir() if "pyx12" in p.name]


@pytest.mark.parametrize(("max_members", "mode"), [(5, "sample"), (2000, "full")])
def test_a_good_file_passes_and_no_sample_is_left(built: Callable[[int], RunContext], max_members: int,
                                                   mode: str, pyx12_process: str) -> None:
    ctx = built(max_members)
    try:
        pipeline.conformance(ctx)
        assert ctx.state()["conformance"] == "passed"
        detail = _stage_detail(ctx, "succeeded")
        assert detail["pyx12"] == mode and detail["pyx12_ok"] is True
        assert detail["pyx12_process"] == pyx12_process
        assert 0 < detail["pyx12_segments"] <= detail["segments"]
        assert (detail["pyx12_segments"] < detail["segments"]) == (mode == "sample")
        assert _leftovers(ctx) == []
    finally:
        ctx.ledger.close()


@pytest.mark.parametrize("max_members", [5, 2000])
def test_a_file_only_pyx12_rejects_is_refused_and_no_sample_is_left(built: Callable[[int], RunContext],
                                                                     max_members: int, pyx12_process: str) -> None:
    ctx = built(max_members)
    try:
        _rewrite(ctx, _long_name)
        with pytest.raises(ConformanceFailed, match=r"pyx12 rejected the file .*NM105"):
            pipeline.conformance(ctx)
        assert ctx.state().get("conformance") != "passed"
        assert _leftovers(ctx) == []
        assert _stage_detail(ctx, "failed")["sampled"] is (max_members == 5)
        assert _stage_detail(ctx, "failed")["pyx12_process"] == pyx12_process
    finally:
        ctx.ledger.close()


def test_structural_problems_are_still_reported_before_pyx12s(built: Callable[[int], RunContext]) -> None:
    ctx = built(5)
    try:
        _rewrite(ctx, lambda data: _bad_se_count(_long_name(data)))
        with pytest.raises(ConformanceFailed, match=r"structural problem\(s\); first at segment \d+ SE SE01"):
            pipeline.conformance(ctx)
        assert _stage_detail(ctx, "failed")["rule"] == "se_count"
        assert _leftovers(ctx) == []
    finally:
        ctx.ledger.close()


def test_the_member_count_is_checked_before_pyx12(built: Callable[[int], RunContext]) -> None:
    ctx = built(5)
    try:
        _rewrite(ctx, _long_name)
        state = ctx.state()
        ctx.save_state(counts={**state["counts"], "members": state["counts"]["members"] + 1})
        with pytest.raises(ConformanceFailed, match="members, build counted"):
            pipeline.conformance(ctx)
        assert _leftovers(ctx) == []
    finally:
        ctx.ledger.close()


@pytest.fixture
def spied(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """What the stage opened, in order: ("child", the Pyx12Child) and ("mapped", the file's map)."""
    from carrierfeeds.x12 import pyx12_adapter

    opened: list[tuple[str, Any]] = []

    class SpiedChild(pyx12_adapter.Pyx12Child):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            opened.append(("child", self))

    real = files.read_mapped

    @contextlib.contextmanager
    def spied_map(path: Path) -> Iterator[Any]:
        with real(path) as view:
            opened.append(("mapped", view))
            yield view

    monkeypatch.setattr(pyx12_adapter, "Pyx12Child", SpiedChild)
    monkeypatch.setattr(pipeline, "read_mapped", spied_map)
    return opened


def _all_closed(opened: list[tuple[str, Any]], pyx12_process: str) -> None:
    """The child, if any, started before the file was mapped (the stage is unwound in full), reaped; the
    map closed."""
    kinds = [kind for kind, _ in opened]
    assert kinds == (["child", "mapped"] if pyx12_process == "child" else ["mapped"])
    for kind, thing in opened:
        if kind == "child":
            assert thing.returncode is not None
        else:
            assert isinstance(thing, mmap.mmap) and thing.closed


def test_the_child_starts_before_the_file_is_mapped_and_all_is_closed(built: Callable[[int], RunContext],
                                                                        spied: list[tuple[str, Any]],
                                                                        pyx12_process: str) -> None:
    ctx = built(5)
    try:
        pipeline.conformance(ctx)
        assert ctx.state()["conformance"] == "passed"
        _all_closed(spied, pyx12_process)
        assert _leftovers(ctx) == []
    finally:
        ctx.ledger.close()


@pytest.mark.parametrize("case", ["changed", "structure", "members", "pyx12", "uncuttable"])
def test_every_refusal_reaps_the_child_and_closes_the_map(built: Callable[[int], RunContext],
                                                         spied: list[tuple[str, Any]], pyx12_process: str,
                                                         case: str) -> None:
    ctx = built(5)
    try:
        if case == "changed":
            path = ctx.fetch(ctx.state()["file_name"])
            path.write_bytes(_long_name(path.read_bytes()))  # the state's hash no longer matches
            expected = "changed after it was built"
        elif case == "structure":
            _rewrite(ctx, _bad_se_count)
            expected = r"structural problem\(s\)"
        elif case == "members":
            state = ctx.state()
            ctx.save_state(counts={**state["counts"], "members": state["counts"]["members"] + 1})
            expected = "members, build counted"
        elif case == "pyx12":
            _rewrite(ctx, _long_name)
            expected = "pyx12 rejected the file"
        else:
            # No SE terminator after the last family: the sample cannot be cut; the structure says why.
            _rewrite(ctx, lambda data: data[:data.rindex(b"SE*")] + data[data.rindex(b"SE*"):].replace(b"~", b""))
            expected = r"structural problem\(s\)"
        with pytest.raises(ConformanceFailed, match=expected):
            pipeline.conformance(ctx)
        assert ctx.state().get("conformance") != "passed"
        _all_closed(spied, pyx12_process)
        assert _leftovers(ctx) == []
    finally:
        ctx.ledger.close()
