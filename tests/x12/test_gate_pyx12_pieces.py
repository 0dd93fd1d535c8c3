"""pyx12's target cut into pieces (x12.check.pyx12_target): one piece is today's sample byte for byte
(against the cutter as it was, kept here as the oracle, on good, split, CRLF and suffixless files and on
any byte-level damage); W pieces hold exactly its families between them, in order, each piece its own
conformant 834 that pyx12 passes; the cut is deterministic; and a bad family fails exactly the piece it
falls in."""

from __future__ import annotations

import functools
import itertools
import re
from pathlib import Path

import pytest
import x12_helpers as h
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carrierfeeds.census.generate import generate_census
from carrierfeeds.x12.check import (
    Payload,
    SegmentEnds,
    check_834,
    find_segment_ends,
    pyx12_target,
    sample_834,
    sample_families,
    validate_with_pyx12,
)
from carrierfeeds.x12.envelope import DEFAULT_DELIMITERS, Delimiters
from carrierfeeds.x12.render import render_834_bytes

_CRLF = Delimiters(element="|", component=">", repetition="{", segment="~", suffix="\r\n")


@functools.cache
def _file(delimiters: Delimiters = DEFAULT_DELIMITERS, cap: int | None = None) -> bytes:
    """40 generated employees (22 families, 89 members); ``cap``: at most that many members per ST/SE set."""
    m = h.validated(max_members_per_transaction=cap) if cap else h.mapping()
    enrollment = h.enrollment(generate_census(40, 3, as_of=h.AS_OF), m)
    return render_834_bytes(enrollment, h.header(m), h.CONTROL, delimiters)


def _sample_before(data: bytes, *, max_members: int = 5_000,
                   segment_ends: SegmentEnds | None = None) -> tuple[Payload, bool]:
    """sample_834 as it was before pyx12_target (commit 5333e37), verbatim but for names: the oracle."""
    from carrierfeeds.x12.check import _index, _segment_starts, _starting_with, _starting_with_each

    if len(data) < 106:
        return data, False
    e, t = data[3:4], data[105:106]
    sep, term = re.escape(e), re.escape(t)

    def segment_starts(tag: bytes, within: bytes) -> list[int]:
        return [m.start(1) for m in re.finditer(rb"(?:" + term + rb")\s*(" + tag + rb")", within)]

    starts = _segment_starts(data, t[0], segment_ends)
    ins, st_ = _starting_with_each(data, starts, (b"INS" + e, b"ST" + e))
    members = len(ins)
    if members <= max_members:
        return data, False
    families: list[int] = _starting_with(data, ins, b"INS" + e + b"Y" + e).tolist()
    st_at: list[int] = st_.tolist()
    tail = segment_starts(b"SE" + sep, data[families[-1]:]) if families else []
    if not families or not st_at or not tail:
        return data, False
    se_at = families[-1] + tail[0]
    every = max(1, -(-members // max_members))
    bounds = [*families, se_at]
    se_inside = re.compile(rb"(?:" + term + rb")\s*(SE" + sep + rb")")

    def whole_set(chunk: bytes) -> bytes:
        found = se_inside.search(chunk) if len(st_at) > 1 else None
        return chunk if found is None else chunk[:found.start(1)]

    body = whole_set(data[:families[0]]) + b"".join(whole_set(data[bounds[i]:bounds[i + 1]])
                                                    for i in sample_families(every, len(families)))
    se_end = _index(data, t, se_at)
    st02 = data[st_at[0]:_index(data, t, st_at[0])].split(e)[2]
    seg_count = body[st_at[0]:].count(t) + 1
    rest = data[se_end:]
    if len(st_at) > 1:
        rest = re.sub(rb"(GE" + sep + rb")\d+", rb"\g<1>1", rest, count=1)
    return body + b"SE" + e + str(seg_count).encode() + e + st02 + rest, True


def _families(piece: Payload) -> list[bytes]:
    """A piece's families: the slices from each INS*Y to the next one or to SE, terminators included."""
    data = bytes(piece)
    e, t = data[3:4], re.escape(data[105:106])
    cuts = [m.start(1) for m in re.finditer(rb"(?:" + t + rb")\s*(INS" + re.escape(e) + rb"Y" + re.escape(e)
                                              + rb"|SE" + re.escape(e) + rb")", data)]
    return [data[a:b] for a, b in itertools.pairwise(cuts) if data[a:a + 3] == b"INS"]


_FILES = [(DEFAULT_DELIMITERS, None), (Delimiters(suffix=""), None), (_CRLF, None), (DEFAULT_DELIMITERS, 7)]


@pytest.mark.parametrize(("delimiters", "cap"), _FILES)
@pytest.mark.parametrize("max_members", [1, 5, 30, 89, 10_000])
def test_one_piece_is_todays_sample_byte_for_byte(delimiters: Delimiters, cap: int | None,
                                                   max_members: int) -> None:
    data = _file(delimiters, cap)
    ends = find_segment_ends(data)
    before = _sample_before(data, max_members=max_members, segment_ends=ends)
    assert sample_834(data, max_members=max_members, segment_ends=ends) == before
    target = pyx12_target(data, max_members=max_members, segment_ends=ends)
    assert (target.pieces(1), target.sampled) == ([before[0]], before[1])
    assert (before[0] is data) == (max_members >= 89)  # up to its member count, the file itself


@pytest.mark.parametrize(("delimiters", "cap"), _FILES)
@pytest.mark.parametrize("max_members", [1, 5, 30, 10_000])
@pytest.mark.parametrize("count", [2, 3, 4, 50])
def test_pieces_hold_exactly_the_one_pieces_families_each_a_sound_834(delimiters: Delimiters, cap: int | None,
                                                                        max_members: int, count: int) -> None:
    data = _file(delimiters, cap)
    target = pyx12_target(data, max_members=max_members)
    (one,) = target.pieces(1)
    pieces = target.pieces(count)
    if cap is not None and not target.sampled:
        # A split file checked whole is never cut: each set's own envelope is pyx12's to read.
        assert pieces == [data]
        return
    wanted = _families(one)
    assert len(pieces) == min(count, len(wanted))  # one family (max_members 1): one piece
    assert [f for piece in pieces for f in _families(piece)] == wanted  # disjoint, complete, in order
    assert all(_families(piece) for piece in pieces)
    assert max(map(len, map(_families, pieces))) - min(map(len, map(_families, pieces))) <= 1
    for piece in pieces:
        assert isinstance(piece, bytes)
        assert piece.startswith(bytes(one)[:bytes(one).index(wanted[0])])  # the same envelope and header
        report = check_834(piece, delimiters=delimiters)
        assert report.ok, report.problems
        assert report.transaction_sets == 1
    assert target.pieces(count) == pieces  # deterministic
    assert pyx12_target(data, max_members=max_members).pieces(count) == pieces


@pytest.mark.slow
@pytest.mark.parametrize(("delimiters", "cap"), [(DEFAULT_DELIMITERS, None), (_CRLF, 7)])
def test_pyx12_passes_every_piece_of_a_good_file(tmp_path: Path, delimiters: Delimiters, cap: int | None) -> None:
    data = _file(delimiters, cap)
    pieces = pyx12_target(data, max_members=30 if cap else 10_000).pieces(3)
    assert len(pieces) == 3
    for k, piece in enumerate(pieces):
        path = tmp_path / f"piece-{k}.834"
        path.write_bytes(piece)
        verdict = validate_with_pyx12(path, with_999=False)
        assert verdict.ok and verdict.errors == (), k
        assert verdict.segments == bytes(piece).count(b"~")


def _long_name_in_family(data: bytes, family: int) -> bytes:
    """Family ``family``'s subscriber NM1*IL with an NM105 pyx12 refuses as too long; structure untouched."""
    at = [m.start() for m in re.finditer(rb"INS\*Y\*", data)][family]
    nm1 = data.index(b"NM1*IL*", at)
    end = data.index(b"~", nm1)
    fields = data[nm1:end].split(b"*")
    fields[5] = b"Q" * 40
    return data[:nm1] + b"*".join(fields) + data[end:]


@pytest.mark.slow
@pytest.mark.parametrize(("family", "holder"), [(0, 0), (6, 0), (7, 1), (14, 2), (21, 2)])
def test_a_bad_family_fails_exactly_the_piece_it_falls_in(tmp_path: Path, family: int, holder: int) -> None:
    data = _long_name_in_family(_file(), family)
    assert check_834(data).ok
    pieces = pyx12_target(data, max_members=10_000).pieces(3)
    # 22 families: 7, 7 and 8 of them, in file order.
    assert [len(_families(piece)) for piece in pieces] == [7, 7, 8]
    assert [k for k, piece in enumerate(pieces) if b"Q" * 40 in piece] == [holder]
    for k, piece in enumerate(pieces):
        path = tmp_path / f"piece-{k}.834"
        path.write_bytes(piece)
        verdict = validate_with_pyx12(path, with_999=False)
        assert verdict.ok is (k != holder), k
        if k == holder:
            assert {p.element for p in verdict.errors} == {"NM105"}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.integers(0, 8_000), st.sampled_from(["insert", "delete", "replace"]),
                                st.sampled_from([b"~", b"\n", b"\r", b"*", b"INS*Y*", b"SE*", b"ST*", b"A",
                                                 b"\xe9", b""])),
                      max_size=4),
       variant=st.sampled_from(_FILES), max_members=st.sampled_from([1, 5, 10_000]))
def test_one_piece_is_todays_sample_on_damaged_files(edits: list[tuple[int, str, bytes]],
                                                      variant: tuple[Delimiters, int | None], max_members: int) -> None:
    data = _file(*variant)
    for at, kind, text in edits:
        at %= len(data) + 1
        if kind == "insert":
            data = data[:at] + text + data[at:]
        elif kind == "delete":
            data = data[:at] + data[at + (len(text) or 1):]
        else:
            data = data[:at] + text + data[at + len(text):]

    def outcome(cut: object) -> object:
        try:
            return cut() if callable(cut) else cut
        except (ValueError, IndexError) as error:
            return type(error), str(error)

    before = outcome(lambda: _sample_before(data, max_members=max_members))
    assert outcome(lambda: sample_834(data, max_members=max_members)) == before
    # More pieces never fail where one does not, and each holds families only of the one piece's.
    pieces = outcome(lambda: pyx12_target(data, max_members=max_members).pieces(3))
    if isinstance(before, tuple) and isinstance(before[0], type):
        assert pieces == before
    else:
        assert isinstance(pieces, list) and 1 <= len(pieces) <= 3


@pytest.mark.parametrize(("cpus", "workers"), [(1, 1), (2, 2), (4, 4), (64, 4)])
def test_one_pyx12_process_per_cpu_this_process_may_use_at_most_four(monkeypatch: pytest.MonkeyPatch,
                                                                    cpus: int, workers: int) -> None:
    import os

    from carrierfeeds.run import gate

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cpus)), raising=False)
    assert gate.pyx12_workers() == workers


def test_tiny_files_stay_in_this_process() -> None:
    """The demo's and the tests' files (here 89 members) are far below the size that pays for children."""
    from carrierfeeds.run import gate

    assert pyx12_target(_file(), max_members=10_000).size * 4 < gate.PYX12_PIECES_MIN_BYTES
