"""The gate's fast paths give exactly what their plain forms give: the walk by member shapes over windows,
word-wise tags, keys."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carrierfeeds.x12.check import _grammar, _keys, _OrderWalk, _segment_starts, _starting_with

_MEMBER_PARTS = "IFlcfxmhjkNp34DHbe"
_ALPHABET = "AGSBoPY" + _MEMBER_PARTS + "sgz"


@st.composite
def _member(draw: st.DrawFn) -> str:
    optional = "".join(c for c in "lcfxmhjk" if draw(st.booleans()))
    address = "34" if draw(st.booleans()) else ""
    coverages = "".join("Hb" + ("e" if draw(st.booleans()) else "") + ("l" if draw(st.booleans()) else "")
                        for _ in range(draw(st.integers(0, 3))))
    return ("IF" + optional + "N" + ("p" if draw(st.booleans()) else "") + address
            + ("D" if draw(st.booleans()) else "") + coverages)


@st.composite
def _file(draw: st.DrawFn) -> str:
    groups = []
    for _ in range(draw(st.integers(1, 2))):
        sets = ["SB" + ("o" if draw(st.booleans()) else "") + "PY"
                + "".join(draw(st.lists(_member(), max_size=4))) + "s"
                for _ in range(draw(st.integers(1, 3)))]
        groups.append("G" + "".join(sets) + "g")
    return "A" + "".join(groups) + "z"


@st.composite
def _mutated(draw: st.DrawFn) -> str:
    seq = draw(_file())
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(seq)))
        kind = draw(st.sampled_from(["insert", "delete", "replace", "swap"]))
        char = draw(st.sampled_from(_ALPHABET))
        if kind == "insert":
            seq = seq[:at] + char + seq[at:]
        elif kind == "delete":
            seq = seq[:at] + seq[at + 1:]
        elif kind == "replace":
            seq = seq[:at] + char + seq[at + 1:]
        elif at + 1 < len(seq):
            seq = seq[:at] + seq[at + 1] + seq[at] + seq[at + 2:]
    return seq


def _walk(seq: str, require_dmg: bool, *, window: int | None = None) -> int | None:
    """The first misplaced token of ``seq`` by the walk over windows of ``window`` tokens (one: all of it)."""
    walk = _OrderWalk(*_grammar(require_dmg))
    keys = np.arange(len(seq), dtype=np.int64)
    step = window or max(1, len(seq))
    for lo in range(0, len(seq), step):
        walk.feed(seq[lo:lo + step], keys[lo:lo + step], lo, final=False)
    walk.feed("", keys[:0], len(seq), final=True)
    return None if walk.error is None else walk.error[0]


def _members_one_by_one(seq: str, require_dmg: bool) -> int | None:
    """The plain form: the walk member by member over the whole sequence, never by shapes."""
    walk = _OrderWalk(*_grammar(require_dmg))
    return walk._misplaced(seq, final=True)


@pytest.mark.parametrize("require_dmg", [True, False])
@settings(max_examples=400, deadline=None)
@given(seq=st.one_of(_file(), _mutated(), st.text(alphabet=_ALPHABET, min_size=1, max_size=40)),
       window=st.sampled_from([None, 1, 2, 5]))
def test_the_walk_by_shapes_equals_the_member_by_member_walk(seq: str, require_dmg: bool,
                                                              window: int | None) -> None:
    assert _walk(seq, require_dmg, window=window) == _members_one_by_one(seq, require_dmg)


def test_the_walk_accepts_a_well_formed_file_and_finds_a_misplaced_segment() -> None:
    good = "AGSBPY" + "IFNDHb" * 3 + "sgz"
    assert _walk(good, True) is None
    assert _walk(good.replace("IFNDHb", "IFNHb", 1), True) == 6


def _plain_starting_with(data: bytes, starts: list[int], tag: bytes) -> list[int]:
    return [s for s in starts if s + len(tag) <= len(data) and data[s:s + len(tag)] == tag]


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=60), picks=st.lists(st.integers(0, 70), max_size=20),
       tag=st.binary(min_size=0, max_size=10))
def test_word_wise_tags_equal_bytewise_comparison(data: bytes, picks: list[int], tag: bytes) -> None:
    starts = sorted({p for p in picks if p <= len(data)})
    if tag and data and len(data) > 2 and len(starts) > 1:
        data = data[:starts[1]] + tag + data[starts[1]:]  # make a hit likely
    starts = sorted({p for p in picks if p <= len(data)})
    got = _starting_with(data, np.array(starts, dtype=np.int64), tag)
    assert got.tolist() == _plain_starting_with(data, starts, tag)


@pytest.mark.parametrize("tag", [b"INS*", b"INS*Y*", b"ST*", b"\x00\x00", b"~\n"])
def test_word_wise_tags_at_the_end_of_a_file(tag: bytes) -> None:
    data = b"ISA*00~\nINS*Y*18~\nST*834~\n\x00\x00INS*"
    starts = list(range(len(data) + 1))
    got = _starting_with(data, np.array(starts, dtype=np.int64), tag)
    assert got.tolist() == _plain_starting_with(data, starts, tag)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(min_size=0, max_size=300), cuts=st.lists(st.integers(0, 300), max_size=30),
       width=st.integers(1, 100))
def test_keys_of_wide_segments_are_their_first_bytes_zero_padded(data: bytes, cuts: list[int],
                                                                 width: int) -> None:
    bounds = sorted({c for c in cuts if c <= len(data)} | {0, len(data)})
    starts = np.array(bounds[:-1], dtype=np.int64)
    ends = np.array(bounds[1:], dtype=np.int64)
    got = _keys(np.frombuffer(data, dtype=np.uint8), starts, ends, 0, width)
    assert got.shape == (len(starts), width)
    for row, (lo, hi) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        assert got[row].tobytes() == data[lo:min(hi, lo + width)].ljust(width, b"\0")


def _plain_segment_starts(data: bytes, term: int) -> list[int]:
    """The definition: after each terminator, skip up to two LF/CR bytes; keep offsets inside the file."""
    out = []
    for at, byte in enumerate(data):
        if byte != term:
            continue
        start = at + 1
        for _ in range(2):
            if start < len(data) and data[start] in b"\n\r":
                start += 1
        if start < len(data):
            out.append(start)
    return out


@settings(max_examples=400, deadline=None)
@given(data=st.lists(st.sampled_from([b"~", b"\n", b"\r", b"\r\n", b"A", b"INS*", b"\x00"]), max_size=40),
       term=st.sampled_from([ord("~"), ord("\n"), ord("\r"), ord("A")]))
def test_segment_starts_equal_their_definition_on_any_bytes(data: list[bytes], term: int) -> None:
    joined = b"".join(data)
    assert _segment_starts(joined, term).tolist() == _plain_segment_starts(joined, term)
