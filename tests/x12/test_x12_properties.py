"""Property: no name or address, however hostile, can break the 834's structure."""

from __future__ import annotations

import re

import x12_helpers as h
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from carrierfeeds.x12.check import check_834
from carrierfeeds.x12.read import read_834
from carrierfeeds.x12.render import render_834_bytes, render_834_naive
from carrierfeeds.x12.sanitize import BASIC_CHARACTERS, fold_text

HOSTILE = st.text(alphabet=st.sampled_from([*"~*:^|\r\n\t ÀéßøŁ漢字😀'\"&-./aZ09", "\x00", "\x7f"]),
                  max_size=40)
NAMES = st.text(min_size=1, max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(last=st.one_of(HOSTILE, NAMES), first=st.one_of(HOSTILE, NAMES), street=st.one_of(HOSTILE, NAMES),
       city=st.one_of(HOSTILE, NAMES), middle=HOSTILE)
def test_hostile_text_cannot_break_structure(last: str, first: str, street: str, city: str,
                                             middle: str) -> None:
    assume(fold_text(last, 35) and fold_text(first, 35))
    rows = h.family_rows()
    for r in rows:
        if r["member_id"] == "E1001-02":
            r.update(last_name=last, first_name=first, middle_initial=middle, address1=street, city=city)
    enrollment = h.enrollment(h.census(rows))
    data = render_834_bytes(enrollment, h.header(), h.CONTROL)
    assert data == render_834_naive(enrollment, h.header(), h.CONTROL)
    report = check_834(data)
    assert report.ok, report.problems
    assert report.member_count == enrollment.member_count == 5
    back = read_834(data)
    assert back["member_id"].nunique() == 5
    assert len(data.split(b"~")) - 1 == report.segment_count
    child = back[back["member_id"] == "E1001-02"].iloc[0]
    assert child["last_name"] == fold_text(last, 35)
    assert set(child["last_name"] + child["first_name"] + child["address1"]) <= BASIC_CHARACTERS


@given(st.text(max_size=60))
def test_fold_text_is_idempotent_and_basic(value: str) -> None:
    once = fold_text(value)
    assert fold_text(once) == once
    assert set(once) <= BASIC_CHARACTERS
    assert not re.search(r"^ | $|  ", once)


@given(st.lists(st.one_of(HOSTILE, NAMES, st.sampled_from(["SMITH", "O'NEIL", "Zoë", "ANN  LEE"])),
                max_size=30), st.integers(min_value=1, max_value=40))
def test_fold_series_is_fold_text_over_a_column(items: list[str], max_length: int) -> None:
    import pandas as pd

    from carrierfeeds.x12.sanitize import fold_series

    folded, changed = fold_series(pd.Series(items, dtype=object), max_length)
    assert folded.tolist() == [fold_text(v, max_length) for v in items]
    assert changed == sum(fold_text(v) != v.upper().strip() for v in items)
