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
