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

from carrierfeeds import files, run
from carrierfeeds.errors import ConformanceFailed
from carrierfeeds.run import gate
from carrierfeeds.run.context import RunContext, RunRef

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DAY = date(2026, 11, 20)
SAMPLE = "pyx12-sample.834"


def _clock() -> datetime:
    return datetime(2026, 11, 21, 7, 30, tzinfo=UTC)


#: How the stage runs pyx12 in each variant, as (pyx12_process, pieces, children started before the map?),
#: and the CPUs it is given: in this process; a large file on 1 CPU: one child started before the file is
#: read (as before pieces); on 3 CPUs: two pieces in children started before it is read (the structural
#: check keeps the third); a target of PYX12_PIECES_MIN_BYTES or more on 2 CPUs: two pieces in children
#: started once the pieces are cut.
_VARIANTS = {"this": (("this", 1, False), 2), "child": (("child", 1, True), 1),
             "early-2": (("child", 2, True), 3), "pieces-2": (("child", 2, False), 2)}


@pytest.fixture(autouse=True, params=list(_VARIANTS))
def variant(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> tuple[str, int, bool]:
    """Every test runs in each variant: (pyx12_process, pieces, children started before the map?)."""
    (process, pieces, early), workers = _VARIANTS[str(request.param)]
    monkeypatch.setattr(gate, "pyx12_workers", lambda: workers)
    monkeypatch.setattr(gate, "PYX12_CHILD_MIN_BYTES", 0 if early else 1 << 62)
    monkeypatch.setattr(gate, "PYX12_PIECES_MIN_BYTES", 0 if process == "child" else 1 << 62)
    return process, pieces, early


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
        ctx = run.open_run(settings, RunRef.for_day(ws.feed.feed_id, DAY), clock=_clock, actor="test")
        run.stage_census(ctx, census)
        run.validate(ctx)
        run.build(ctx)
        return ctx

    return make


def _rewrite(ctx: RunContext, change: Callable[[bytes], bytes]) -> None:
    """Replace the built file as if build had rendered ``change(file)``: the state's hash to match."""
    path = ctx.fetch(ctx.state().build.file_name)
    data = change(path.read_bytes())
    path.write_bytes(data)
    ctx.save_state(built=ctx.state().build.model_copy(update={"payload_sha256": hashlib.sha256(data).hexdigest()}))


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
                                                   mode: str, variant: tuple[str, int, bool]) -> None:
    ctx = built(max_members)
    try:
        data = ctx.fetch(ctx.state().build.file_name).read_bytes()
        run.conformance(ctx)
        assert ctx.state().gate is not None
        detail = _stage_detail(ctx, "succeeded")
        assert detail["pyx12"] == mode and detail["pyx12_ok"] is True
        assert detail["pyx12_process"] == variant[0]
        assert detail["pyx12_pieces"] == variant[1]  # the sample of 5 holds 3 families
        if mode == "full":
            # Each piece carries the envelope and header (ISA..N1, SE, GE, IEA) of its own.
            envelope = data.count(b"~", 0, data.index(b"INS*")) + 3
            assert detail["pyx12_segments"] == detail["segments"] + (variant[1] - 1) * envelope
        else:
            assert 0 < detail["pyx12_segments"] < detail["segments"]
        assert _leftovers(ctx) == []
    finally:
        ctx.ledger.close()


@pytest.mark.parametrize("max_members", [5, 2000])
def test_a_file_only_pyx12_rejects_is_refused_and_no_sample_is_left(built: Callable[[int], RunContext],
                                                                     max_members: int,
                                                                     variant: tuple[str, int, bool]) -> None:
    ctx = built(max_members)
    try:
        _rewrite(ctx, _long_name)
        with pytest.raises(ConformanceFailed, match=r"pyx12 rejected the file .*NM105") as refused:
            run.conformance(ctx)
        assert ctx.state().gate is None
        assert _leftovers(ctx) == []
        detail = _stage_detail(ctx, "failed")
        assert detail["sampled"] is (max_members == 5)
        assert detail["pyx12_process"] == variant[0]
        # The first member's family is in the first piece.
        assert (detail["pyx12_pieces"], detail["pyx12_piece"]) == (variant[1], 1)
        assert ("piece 1 of 2, segment" in str(refused.value)) is (variant[1] == 2)
    finally:
        ctx.ledger.close()


def _long_name_last(data: bytes) -> bytes:
    """The last member's NM1*IL with an NM105 pyx12 refuses: in the last family, so in the last piece."""
    at = data.rindex(b"NM1*IL*")
    return data[:at] + _long_name(data[at:])


def _long_name_sampled_last(data: bytes) -> bytes:
    """As :func:`_long_name_last` for the last member of the sample of 5 (of its last piece)."""
    from carrierfeeds.x12.check import sample_834

    sample, sampled = sample_834(data, max_members=5)
    assert sampled
    at = sample.rindex(b"NM1*IL*")
    segment = sample[at:sample.index(b"~", at) + 1]
    assert data.count(segment) == 1
    at = data.index(segment)
    return data[:at] + _long_name(data[at:])


@pytest.mark.parametrize("max_members", [5, 2000])
def test_a_bad_family_in_the_last_piece_is_refused_and_the_piece_named(built: Callable[[int], RunContext],
                                                                       max_members: int,
                                                                       variant: tuple[str, int, bool]) -> None:
    ctx = built(max_members)
    try:
        _rewrite(ctx, _long_name_last if max_members == 2000 else _long_name_sampled_last)
        with pytest.raises(ConformanceFailed, match=r"pyx12 rejected the file .*NM105") as refused:
            run.conformance(ctx)
        detail = _stage_detail(ctx, "failed")
        assert (detail["pyx12_pieces"], detail["pyx12_piece"]) == (variant[1], variant[1])
        assert ("piece 2 of 2, segment" in str(refused.value)) is (variant[1] == 2)
        assert _leftovers(ctx) == []
    finally:
        ctx.ledger.close()


def test_structural_problems_are_still_reported_before_pyx12s(built: Callable[[int], RunContext]) -> None:
    ctx = built(5)
    try:
        _rewrite(ctx, lambda data: _bad_se_count(_long_name(data)))
        with pytest.raises(ConformanceFailed, match=r"structural problem\(s\); first at segment \d+ SE SE01"):
            run.conformance(ctx)
        assert _stage_detail(ctx, "failed")["rule"] == "se_count"
        assert _leftovers(ctx) == []
    finally:
        ctx.ledger.close()


def test_the_member_count_is_checked_before_pyx12(built: Callable[[int], RunContext]) -> None:
    ctx = built(5)
    try:
        _rewrite(ctx, _long_name)
        built = ctx.state().build
        ctx.save_state(built=built.model_copy(update={"counts": {**built.counts, "members": built.members + 1}}))
        with pytest.raises(ConformanceFailed, match="members, build counted"):
            run.conformance(ctx)
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
    # A child per file, as these tests follow each one (tests/x12/test_pyx12_worker.py: the pooled workers).
    monkeypatch.setenv(pyx12_adapter.PERSISTENT_ENV, "0")
    monkeypatch.setattr(gate, "read_mapped", spied_map)
    return opened


def _all_closed(opened: list[tuple[str, Any]], variant: tuple[str, int, bool], *, cut: bool = True) -> None:
    """The children, if any, started before the file was mapped (a large file) or once its pieces were cut
    (``cut``: the stage got that far), each reaped; the map closed."""
    process, pieces, early = variant
    kinds = [kind for kind, _ in opened]
    if process == "this":
        assert kinds == ["mapped"]
    elif early:
        assert kinds == ["child"] * pieces + ["mapped"]
    else:
        assert kinds == ["mapped"] + ["child"] * (pieces if cut else 0)
    for kind, thing in opened:
        if kind == "child":
            assert thing.returncode is not None
        else:
            assert isinstance(thing, mmap.mmap) and thing.closed


def test_the_children_start_before_the_file_is_mapped_or_once_cut_and_all_is_closed(
        built: Callable[[int], RunContext], spied: list[tuple[str, Any]], variant: tuple[str, int, bool]) -> None:
    ctx = built(5)
    try:
        run.conformance(ctx)
        assert ctx.state().gate is not None
        _all_closed(spied, variant)
        assert _leftovers(ctx) == []
    finally:
        ctx.ledger.close()


@pytest.mark.parametrize("case", ["changed", "structure", "members", "pyx12", "uncuttable"])
def test_every_refusal_reaps_the_children_and_closes_the_map(built: Callable[[int], RunContext],
                                                            spied: list[tuple[str, Any]],
                                                            variant: tuple[str, int, bool], case: str) -> None:
    ctx = built(5)
    try:
        if case == "changed":
            path = ctx.fetch(ctx.state().build.file_name)
            path.write_bytes(_long_name(path.read_bytes()))  # the state's hash no longer matches
            expected = "changed after it was built"
        elif case == "structure":
            _rewrite(ctx, _bad_se_count)
            expected = r"structural problem\(s\)"
        elif case == "members":
            built = ctx.state().build
            ctx.save_state(built=built.model_copy(update={"counts": {**built.counts,
                                                                      "members": built.members + 1}}))
            expected = "members, build counted"
        elif case == "pyx12":
            _rewrite(ctx, _long_name)
            expected = "pyx12 rejected the file"
        else:
            # No SE terminator after the last family: the sample cannot be cut; the structure says why.
            _rewrite(ctx, lambda data: data[:data.rindex(b"SE*")] + data[data.rindex(b"SE*"):].replace(b"~", b""))
            expected = r"structural problem\(s\)"
        with pytest.raises(ConformanceFailed, match=expected):
            run.conformance(ctx)
        assert ctx.state().gate is None
        _all_closed(spied, variant, cut=case not in ("changed", "uncuttable"))
        assert _leftovers(ctx) == []
    finally:
        ctx.ledger.close()


@pytest.mark.parametrize("failing", [1, 2])
def test_a_child_failing_on_any_piece_fails_closed_and_all_are_reaped(built: Callable[[int], RunContext],
                                                                      spied: list[tuple[str, Any]],
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      variant: tuple[str, int, bool],
                                                                      failing: int) -> None:
    """The ``failing``-th child is sent a path that does not exist: it exits 1, and the stage refuses."""
    from carrierfeeds.x12 import pyx12_adapter

    if variant[0] == "this" or failing > variant[1]:
        pytest.skip("no such child in this variant")
    given: list[Path] = []
    spied_child = pyx12_adapter.Pyx12Child

    def missing(path: Path) -> Path:
        given.append(path)
        return path.with_name("missing.834") if len(given) == failing else path

    class FailingChild(spied_child):  # type: ignore[misc, valid-type]
        def __init__(self, path: Path | None = None, **kwargs: Any) -> None:
            super().__init__(None if path is None else missing(path), **kwargs)

        def check(self, path: Path) -> None:
            super().check(missing(path))

    monkeypatch.setattr(pyx12_adapter, "Pyx12Child", FailingChild)
    ctx = built(5)
    try:
        with pytest.raises(ConformanceFailed, match=r"pyx12 \(child process\) failed with exit code 1"):
            run.conformance(ctx)
        assert ctx.state().gate is None
        assert len(given) == variant[1]
        _all_closed(spied, variant)
        assert _leftovers(ctx) == []
    finally:
        ctx.ledger.close()
