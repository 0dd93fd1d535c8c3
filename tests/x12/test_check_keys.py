"""The structural gate's fast helpers equal their plain-Python definitions on any input."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from carrierfeeds.x12.check import _keys, _segment_starts, _starting_with


@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=0, max_size=80), cuts=st.lists(st.integers(0, 80), max_size=12),
       width=st.integers(1, 20))
def test_keys_are_each_segments_first_bytes_zero_padded(data: bytes, cuts: list[int], width: int) -> None:
    bounds = sorted({c for c in cuts if c <= len(data)})
    starts = np.array(bounds[:-1] if len(bounds) > 1 else [], dtype=np.int64)
    ends = np.array(bounds[1:] if len(bounds) > 1 else [], dtype=np.int64)
    got = _keys(np.frombuffer(data, dtype=np.uint8), starts, ends, 0, width)
    assert got.shape == (len(starts), width)
    for row, (lo, hi) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        want = data[lo:min(hi, lo + width)].ljust(width, b"\0")
        assert got[row].tobytes() == want


@settings(max_examples=200, deadline=None)
@given(segments=st.lists(st.sampled_from([b"INS*Y*18", b"INS*N*19", b"REF*0F*1", b"ST*834", b"INSX", b"IN"]),
                         max_size=15),
       suffix=st.sampled_from([b"", b"\n", b"\r\n"]))
def test_segment_starts_find_every_segment_after_a_terminator(segments: list[bytes], suffix: bytes) -> None:
    data = b"ISA*x~" + suffix + b"".join(s + b"~" + suffix for s in segments)
    starts = _segment_starts(data, ord("~"))
    offsets, at = [], len(b"ISA*x~" + suffix)
    for s in segments:
        offsets.append(at)
        at += len(s) + 1 + len(suffix)
    assert starts.tolist() == offsets
    want_ins = [o for o, s in zip(offsets, segments, strict=True) if s.startswith(b"INS*")]
    assert _starting_with(data, starts, b"INS*").tolist() == want_ins
    want_sub = [o for o, s in zip(offsets, segments, strict=True) if s.startswith(b"INS*Y*")]
    assert _starting_with(data, starts, b"INS*Y*").tolist() == want_sub
