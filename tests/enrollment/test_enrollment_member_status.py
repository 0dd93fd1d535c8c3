"""Member status (INS04-INS12, DTP*303/337/340/341): off unless the mapping asks, allowlisted, coded."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from tests.x12 import x12_helpers as h

from carrierfeeds.config import MEMBER_STATUS_SOURCES
from carrierfeeds.errors import DataError
from carrierfeeds.x12.check import check_834
from carrierfeeds.x12.render import render_834_bytes, render_834_naive

_STATUS_FIELDS = tuple(dict.fromkeys(f for need in MEMBER_STATUS_SOURCES.values() for f in need
                                     if f != "employment_status"))
status_mapping = h.status_mapping


def _rows(**by_member: dict[str, str]) -> pd.DataFrame:
    rows = h.family_rows()
    for r in rows:
        r.update(by_member.get(r["member_id"].replace("-", "_"), {}))
    return h.census(rows)


@pytest.mark.parametrize("setting", [k for k, v in MEMBER_STATUS_SOURCES.items() if v])
def test_each_setting_needs_its_fields_on_the_allowlist(setting: str) -> None:
    value: object = "all" if setting == "employment_codes" else True
    allow = tuple(f for f in h.mapping().allowlist if f not in MEMBER_STATUS_SOURCES[setting])
    with pytest.raises(ValidationError, match="minimum necessary"):
        h.validated(allowlist=allow, member_status={setting: value})


def test_settings_off_send_nothing_the_census_holds() -> None:
    frame = _rows(E2002=dict(benefit_status="C", cobra_event="1", cobra_begin="2026-11-01", medicare_plan="C",
                             death_date="2026-01-01", student_status="F", employment_end_date="2026-10-31"))
    allow = (*h.mapping().allowlist, *_STATUS_FIELDS, "event_date")
    m = h.validated(allowlist=allow)
    view = h.enrollment(frame, m).table
    assert not set(_STATUS_FIELDS) & set(view.columns)
    assert render_834_bytes(h.enrollment(frame, m), h.header(m), h.CONTROL) == h.family_file()


def test_a_field_off_the_allowlist_never_reaches_the_view_even_when_set() -> None:
    # The census holds COBRA data; the carrier takes only benefit status, so nothing else is read.
    m = status_mapping(benefit_status=True)
    view = h.enrollment(_rows(E2002=dict(benefit_status="C", cobra_event="1", cobra_begin="2026-11-01")), m).table
    assert "benefit_status" in view.columns and not {"cobra_event", "cobra_begin"} & set(view.columns)
    assert set(view.loc[view["member_id"] == "E2002", "benefit_status"]) == {"C"}
    assert set(view.loc[view["member_id"] != "E2002", "benefit_status"]) == {"A"}


@pytest.mark.parametrize(("column", "setting", "bad"), [
    ("benefit_status", "benefit_status", "X"), ("student_status", "student", "Y"), ("handicap", "handicap", "maybe"),
    ("medicare_plan", "medicare", "Z"), ("medicare_reason", "medicare", "9"), ("cobra_event", "cobra", "11"),
    ("event_reason", "event_reasons", "promotion")])
def test_a_value_without_a_code_is_refused_by_row_without_echoing_it(column: str, setting: str, bad: str) -> None:
    m = status_mapping(**{setting: True})
    values = {column: bad, "medicare_plan": "C"} if column == "medicare_reason" else {column: bad}
    with pytest.raises(DataError) as info:
        h.enrollment(_rows(E1001_02=values), m)
    assert (info.value.rule, info.value.column) == (f"{column}_code", column)
    assert bad not in str(info.value)


def test_codes_are_read_in_any_case_and_a_handicapped_dependent_is_flagged() -> None:
    m = h.validated(**{**status_mapping(handicap=True, student=True, medicare=True).model_dump(),
                       "relationship_codes": {"EE": "18", "SP": "01", "CH": "19", "HD": "19"}})
    frame = _rows(E1001_02=dict(student_status="f", handicap="n"), E1001_03=dict(relationship="HD"),
                  E1001_01=dict(medicare_reason="1"), E2002=dict(medicare_plan="c", medicare_reason="0"))
    view = h.enrollment(frame, m).table.drop_duplicates("member_id").set_index("member_id")
    assert view.loc["E1001-02", ["student_status", "handicap"]].tolist() == ["F", "N"]
    assert view.loc["E1001-03", ["ins02", "handicap"]].tolist() == ["19", "Y"]
    assert view.loc["E1001-01", ["medicare_plan", "medicare_reason"]].tolist() == ["", ""]  # no plan, no reason
    assert view.loc["E2002", ["medicare_plan", "medicare_reason"]].tolist() == ["C", "0"]


def test_every_ins08_code_only_when_the_carrier_takes_them() -> None:
    frame = _rows(E1001=dict(employment_status="l1"))
    basic = h.enrollment(frame, h.mapping()).table
    assert set(basic.loc[basic["member_id"] == "E1001", "employment_status"]) == {""}
    every = h.enrollment(frame, status_mapping(employment_codes="all")).table
    assert set(every.loc[every["member_id"] == "E1001", "employment_status"]) == {"L1"}
    assert set(every.loc[every["member_id"] == "E1001-01", "employment_status"]) == {""}  # subscribers only


_code = st.sampled_from
_MEMBER = st.fixed_dictionaries({
    "benefit_status": _code(["", "A", "C", "S", "T"]), "student_status": _code(["", "F", "P", "N"]),
    "handicap": _code(["", "Y", "N"]), "death_date": _code(["", "2026-11-02"]),
    "employment_end_date": _code(["", "2026-10-31"]), "medicare_plan": _code(["", "A", "B", "C", "D", "E"]),
    "medicare_reason": _code(["", "0", "1", "2"]), "cobra_event": _code(["", "1", "10", "ZZ"]),
    "cobra_begin": _code(["", "2026-11-01"]), "cobra_end": _code(["", "2028-04-30"]),
    "employment_status": _code(["", "FT", "AC", "L1", "TE"])})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(on=st.fixed_dictionaries({k: st.booleans() for k in ("benefit_status", "student", "handicap", "death",
                                                             "employment_end", "medicare", "cobra")}),
       members=st.lists(_MEMBER, min_size=5, max_size=5))
def test_both_writers_agree_and_the_gate_accepts_any_status(on: dict[str, bool],
                                                           members: list[dict[str, str]]) -> None:
    m = status_mapping(**on, employment_codes="all")
    ids = ["E1001", "E1001_01", "E1001_02", "E1001_03", "E2002"]
    enrollment = h.enrollment(_rows(**dict(zip(ids, members, strict=True))), m)
    data = render_834_bytes(enrollment, h.header(m), h.CONTROL)
    assert data == render_834_naive(enrollment, h.header(m), h.CONTROL)
    report = check_834(data)
    assert report.ok, report.problems


def test_every_setting_at_once_renders_what_the_gate_accepts() -> None:
    m = status_mapping(**h.ALL_STATUS)
    frame = _rows(E2002=dict(benefit_status="C", cobra_event="1", cobra_begin="2026-11-01", cobra_end="2028-04-30",
                             medicare_plan="B", medicare_reason="1", employment_end_date="2026-10-31"))
    enrollment = h.enrollment(frame, m)
    data = render_834_bytes(enrollment, h.header(m), h.CONTROL)
    assert data == render_834_naive(enrollment, h.header(m), h.CONTROL)
    assert b"INS*Y*18*030*XN*C*B:1*1*TE~" in data
    assert check_834(data).ok
