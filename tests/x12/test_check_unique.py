"""The conformance gate's hashing ``np.unique`` replacement returns exactly what ``np.unique`` returns."""

from __future__ import annotations

import numpy as np
import pytest

from carrierfeeds.x12.check import _keys, _unique_rows


@pytest.mark.parametrize("width", [1, 7, 8, 9, 18, 96])
def test_unique_rows_equals_numpy_unique(width: int) -> None:
    rng = np.random.default_rng(width)
    # Few distinct rows repeated many times, as in an 834 (zero padding included), in random order.
    distinct = rng.integers(0, 256, size=(37, width), dtype=np.uint8)
    distinct[::3, width // 2:] = 0
    mat = distinct[rng.integers(0, len(distinct), size=5_000)]
    keys = np.ascontiguousarray(mat).view(f"S{width}").ravel()
    want_uniq, want_inverse = np.unique(keys, return_inverse=True)
    uniq, inverse = _unique_rows(mat)
    assert uniq.tolist() == want_uniq.tolist()
    assert np.array_equal(inverse, want_inverse.reshape(-1))


def test_unique_rows_on_nothing() -> None:
    uniq, inverse = _unique_rows(np.zeros((0, 18), dtype=np.uint8))
    assert len(uniq) == 0 and len(inverse) == 0


def test_keys_stop_at_each_segments_end() -> None:
    data = b"ISA*1~GS*22~S~~INS*Y*18~"
    arr = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(arr == ord("~"))
    starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
    mat = _keys(arr, starts, ends, ord("*"), 6)
    assert [bytes(row).rstrip(b"\x00") for row in mat] == [b"ISA*1", b"GS*22", b"S", b"", b"INS*Y*"]


def test_rows_whose_hashes_collide_still_get_their_own_keys() -> None:
    """Two different rows built to share the one-factorize hash (word0 * K ^ word1): the codes are made
    word by word instead, and equal np.unique's."""
    from carrierfeeds.x12.check import _MIX, _row_codes

    a, b, a2 = np.uint64(0x2A2A2A2A59534E49), np.uint64(0x3033302A38312A59), np.uint64(0x2A2A2A3033302A44)
    b2 = ((np.array([a]) * _MIX) ^ b ^ (np.array([a2]) * _MIX))[0]  # the same hash as (a, b); arrays wrap silently
    words = np.array([[a, b], [a2, b2], [a, b], [a2, b2], [a, a]], dtype=np.uint64)
    mixed = (words[:, 0] * _MIX) ^ words[:, 1]
    assert mixed[0] == mixed[1] and not np.array_equal(words[0], words[1])
    codes, first = _row_codes(words)
    assert codes.tolist() == [0, 1, 0, 1, 2] and first.tolist() == [0, 1, 4]
    mat = words.view(np.uint8).reshape(len(words), 16)
    keys = np.ascontiguousarray(mat).view("S16").ravel()
    want_uniq, want_inverse = np.unique(keys, return_inverse=True)
    uniq, inverse = _unique_rows(mat)
    assert uniq.tolist() == want_uniq.tolist() and np.array_equal(inverse, want_inverse.reshape(-1))
