"""Property: no name, address or reference, however hostile, can break the 834's structure or put a
character outside the carrier's character set (or a delimiter) into the file."""

from __future__ import annotations

import re

import x12_helpers as h
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from carrierfeeds.config import ClientReporting, MemberReferences
from carrierfeeds.x12.check import check_834
from carrierfeeds.x12.envelope import Delimiters
from carrierfeeds.x12.read import read_834, split_segments
from carrierfeeds.x12.render import render_834, render_834_bytes, render_834_naive
from carrierfeeds.x12.sanitize import BASIC_CHARACTERS, CHARACTER_SETS, TextRule, fold_text

HOSTILE = st.text(alphabet=st.sampled_from([*"~*:^|\r\n\t ÀéßøŁ漢字😀'\"&-./aZ09", "\x00", "\x7f"]),
                  max_size=40)
#: Also the extended set's own symbols and those it leaves out because they can be delimiters.
WIDE = st.text(alphabet=st.sampled_from([*"~*:^|>{}\\<`\r\n\t %@#$_[]aZz09!?=ÀéßøŁ漢😀", "\x00", "\x7f"]),
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


_RULES = [("basic", "upper"), ("extended", "upper"), ("extended", "as_is")]
_DELIMITERS = [Delimiters(), Delimiters(element="|", component=">", repetition="{", segment="~", suffix="\r\n"),
               Delimiters(element="{", component="}", repetition="|", segment="\\", suffix="")]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule=st.sampled_from(_RULES), delimiters=st.sampled_from(_DELIMITERS),
       last=st.one_of(WIDE, NAMES), first=st.one_of(WIDE, NAMES), street=st.one_of(WIDE, NAMES),
       city=WIDE, department=st.one_of(WIDE, NAMES), cap=st.sampled_from([None, 4, 5]))
def test_no_output_holds_a_character_outside_the_carriers_set(
        rule: tuple[str, str], delimiters: Delimiters, last: str, first: str, street: str, city: str,
        department: str, cap: int | None) -> None:
    charset, case = rule
    text_rule = TextRule(charset, case)  # type: ignore[arg-type]
    assume(fold_text(last, 35, text_rule) and fold_text(first, 35, text_rule))
    m = h.validated(charset=charset, name_case=case, max_members_per_transaction=cap,
                    allowlist=(*h.mapping().allowlist, "department"),
                    member_references=MemberReferences(department=True, client_reporting_category=ClientReporting(
                        field="department")))
    rows = h.family_rows()
    for r in rows:
        if r["member_id"] in ("E1001-02", "E2002"):
            r.update(last_name=last, first_name=first, address1=street, city=city)
        if r["member_id"] in ("E1001", "E2002"):
            r.update(department=department)
    enrollment = h.enrollment(h.census(rows), m)
    header = h.header(m)
    data = render_834_bytes(enrollment, header, h.CONTROL, delimiters)
    assert data == render_834_naive(enrollment, header, h.CONTROL, delimiters)
    assert data == b"".join(render_834(enrollment, header, h.CONTROL, delimiters, chunk_members=1))
    report = check_834(data, delimiters=delimiters)
    assert report.ok, report.problems
    assert report.member_count == enrollment.member_count == 5
    allowed = CHARACTER_SETS[charset]
    segments, _ = split_segments(data)
    assert len(segments) == report.segment_count
    for elements in segments[1:]:  # ISA declares the delimiters themselves
        for value in elements:
            assert set(value) <= allowed, "a character outside the carrier's set reached the file"
    back = read_834(data)
    child = back[back["member_id"] == "E1001-02"].iloc[0]
    assert child["last_name"] == fold_text(last, 35, text_rule)
