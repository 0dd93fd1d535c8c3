"""pyx12 gives up on some broken files by raising; in this process, in a child and in a pooled worker that
is our own refusal (ConformanceFailed, rule ``pyx12_unreadable``, the name of what pyx12 raised), never
pyx12's exception or its text, and the gate refuses the file with it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
import x12_helpers as h

from carrierfeeds.config import load_schema
from carrierfeeds.errors import ConformanceFailed
from carrierfeeds.run.gate import check_file
from carrierfeeds.settings import FeedBundle
from carrierfeeds.x12.check import check_834
from carrierfeeds.x12.pyx12_adapter import (
    UNREADABLE_RULE,
    Pyx12Child,
    Pyx12Job,
    Pyx12Workers,
    validate_with_pyx12,
)
from carrierfeeds.x12.render import render_834_bytes

#: The version pyx12 has no map for; it names it in its own message, which must not reach ours.
UNKNOWN_VERSION = b"005010X999A1"


def _good() -> bytes:
    return render_834_bytes(h.enrollment(), h.header(), h.CONTROL)


def _unknown_gs08(data: bytes) -> bytes:
    """GS08 a version pyx12 has no map for (ST03 kept): the structural check passes it, pyx12 gives up
    (EngineError)."""
    broken = data.replace(b"*X*005010X220A1~", b"*X*" + UNKNOWN_VERSION + b"~", 1)
    assert broken != data
    return broken


def _no_gs(data: bytes) -> bytes:
    """ISA then ST, no GS: pyx12 gives up (IndexError)."""
    return data[:data.index(b"\n") + 1] + data[data.index(b"ST*"):]


BROKEN: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "unknown-gs08": (_unknown_gs08, "EngineError"),
    "no-gs": (_no_gs, "IndexError"),
}


def _refusal(run: Callable[[], object]) -> ConformanceFailed:
    with pytest.raises(ConformanceFailed) as caught:
        run()
    error = caught.value
    assert error.details["rule"] == UNREADABLE_RULE
    assert "pyx12 could not read the file" in error.message
    # pyx12's exception (its text may quote the file) does not ride along
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    assert UNKNOWN_VERSION.decode() not in str(error.as_dict())
    return error


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_pyx12_giving_up_is_our_refusal_in_this_process(tmp_path: Path, name: str) -> None:
    breaker, raised = BROKEN[name]
    path = tmp_path / f"{name}.834"
    path.write_bytes(breaker(_good()))
    error = _refusal(lambda: validate_with_pyx12(path, with_999=False))
    assert error.details == {"rule": UNREADABLE_RULE, "exception": raised}
    _refusal(lambda: validate_with_pyx12(path))  # with its 999 too


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_pyx12_giving_up_in_a_child_or_a_worker_is_the_same_refusal(tmp_path: Path, name: str) -> None:
    breaker, raised = BROKEN[name]
    path = tmp_path / f"{name}.834"
    path.write_bytes(breaker(_good()))
    with Pyx12Child(path) as child:
        error = _refusal(child.verdict)
    assert error.details == {"rule": UNREADABLE_RULE, "exception": raised, "pyx12_process": "child"}
    pool = Pyx12Workers()
    try:
        with Pyx12Job(path, pool=pool) as job:
            assert _refusal(job.verdict).details == error.details
        assert len(pool) == 0  # a worker whose pyx12 gave up is not kept for another file
        good = tmp_path / "good.834"
        good.write_bytes(_good())
        with Pyx12Job(good, pool=pool) as job:
            assert job.verdict().ok  # the next file gets a fresh worker
    finally:
        pool.close()


def test_the_gate_refuses_a_sound_file_pyx12_gives_up_on(tmp_path: Path) -> None:
    data = _unknown_gs08(_good())
    report = check_834(data)
    assert report.ok  # the structure is sound: only pyx12 can refuse it
    path = tmp_path / "unknown-gs08.834"
    path.write_bytes(data)
    bundle = FeedBundle(feed=h.feed(), mapping=h.mapping(), schema=load_schema(h.ROOT / "schemas" / "census-v1.yaml"),
                        suite_path=h.ROOT / "schemas" / "census-v1.suite.json")
    detail: dict[str, object] = {}
    error = _refusal(lambda: check_file(path, bundle, payload_sha256=hashlib.sha256(data).hexdigest(),
                                        members=report.member_count, records=None, pyx12_max_members=2000,
                                        scratch=tmp_path, detail=detail))
    assert error.details["exception"] == "EngineError"
