"""Rendering on several threads writes exactly the bytes of one thread, in order, split sets included."""

from __future__ import annotations

import pytest
from tests.x12 import x12_helpers as h

from carrierfeeds.census.generate import generate_census
from carrierfeeds.errors import ConformanceFailed
from carrierfeeds.x12.render import render_834, render_834_naive


@pytest.mark.parametrize("cap", [None, 40])
def test_threads_change_nothing_in_the_bytes(cap: int | None) -> None:
    m = h.validated(max_members_per_transaction=cap)
    enrollment = h.enrollment(generate_census(600, 5, as_of=h.AS_OF), m)
    header = h.header(m)
    one = b"".join(render_834(enrollment, header, h.CONTROL, chunk_members=7, workers=1))
    for workers in (2, 3, 8):
        assert b"".join(render_834(enrollment, header, h.CONTROL, chunk_members=7, workers=workers)) == one
    assert one == render_834_naive(enrollment, header, h.CONTROL)


def test_a_refused_chunk_on_a_worker_thread_fails_the_render() -> None:
    enrollment = h.enrollment(generate_census(300, 6, as_of=h.AS_OF))
    enrollment.table.loc[len(enrollment.table) - 1, "city"] = "PEORIA*IL"  # in the last chunk
    with pytest.raises(ConformanceFailed) as info:
        b"".join(render_834(enrollment, h.header(), h.CONTROL, chunk_members=5, workers=4))
    assert info.value.details["column"] == "city"
    assert "PEORIA" not in str(info.value)
