"""compare_rosters: pure, deterministic, one discrepancy per difference and none for equal rosters."""

from __future__ import annotations

from datetime import date

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carrierfeeds.census.tokens import MemberTokenizer
from carrierfeeds.reconcile.compare import Discrepancy, compare_rosters
from carrierfeeds.reconcile.roster import roster_from_view

TOKENS = MemberTokenizer(b"c" * 32)
AS_OF = date(2026, 11, 20)
TEXT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=12)


@st.composite
def views(draw: st.DrawFn) -> pd.DataFrame:
    rows = []
    for i in range(draw(st.integers(1, 8))):
        member = f"M{i}"
        for line in draw(st.lists(st.sampled_from(["HLT", "DEN", "VIS"]), min_size=1, max_size=3, unique=True)):
            rows.append({"member_id": member, "subscriber_id": "M0", "ins02": "18" if i == 0 else "19",
                         "hd03": line, "hd04": draw(st.sampled_from(["GOLD", "SILVER"])),
                         "hd05": draw(st.sampled_from(["EMP", "FAM"])),
                         "coverage_start": "20250101",
                         "coverage_end": draw(st.sampled_from(["", "20261031", "20271231"])),
                         "last_name": draw(TEXT), "first_name": draw(TEXT), "dob": "19800101", "ssn": "",
                         "gender": draw(st.sampled_from(["M", "F", "U"]))})
    return pd.DataFrame(rows)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(views())
def test_a_roster_matches_itself(view: pd.DataFrame) -> None:
    roster = roster_from_view(view, TOKENS, source="x")
    assert compare_rosters(roster, roster, as_of=AS_OF) == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(views(), st.data())
def test_one_changed_value_is_one_discrepancy(view: pd.DataFrame, data: st.DataObject) -> None:
    row = data.draw(st.integers(0, len(view) - 1))
    column, kind, field = data.draw(st.sampled_from([
        ("hd04", "plan", "plan"), ("hd05", "coverage_level", "coverage_level"),
        ("coverage_start", "coverage_dates", "coverage_start"), ("dob", "identity", "dob"),
        ("gender", "identity", "gender")]))
    member = view.loc[row, "member_id"]
    carrier = view.copy()
    value = {"hd04": "BRONZE", "hd05": "ESP", "coverage_start": "20250201", "dob": "19810101",
             "gender": "X"}[column]
    # Member-level fields are one value per member; line-level fields one per line.
    target = carrier["member_id"] == member if column in ("dob", "gender") else carrier.index == row
    carrier.loc[target, column] = value
    got = compare_rosters(roster_from_view(view, TOKENS, source="e"), roster_from_view(carrier, TOKENS, source="c"),
                          as_of=AS_OF)
    line = "" if column in ("dob", "gender") else view.loc[row, "hd03"]
    assert got == [Discrepancy(TOKENS.token(member), kind, line, field)]


def _view(**over: str) -> pd.DataFrame:
    base = {"member_id": "E1", "subscriber_id": "E1", "ins02": "18", "hd03": "HLT", "hd04": "GOLD", "hd05": "EMP",
            "coverage_start": "20250101", "coverage_end": "", "last_name": "A", "first_name": "B", "dob": "19800101",
            "ssn": "", "gender": "F"}
    return pd.DataFrame([{**base, **over}])


def test_missing_extra_and_termed() -> None:
    expected = pd.concat([_view(), _view(member_id="E2", subscriber_id="E2"),
                          _view(member_id="E3", subscriber_id="E3", coverage_end="20261031"),
                          _view(member_id="E5", subscriber_id="E5", coverage_end="20261031")])
    carrier = pd.concat([_view(), _view(member_id="E3", subscriber_id="E3"),
                         _view(member_id="E4", subscriber_id="E4")])
    got = compare_rosters(roster_from_view(expected, TOKENS, source="e"),
                          roster_from_view(carrier, TOKENS, source="c"), as_of=AS_OF)
    assert {(d.kind, d.member_token) for d in got} == {
        ("missing_at_carrier", TOKENS.token("E2")), ("termed_here_active_there", TOKENS.token("E3")),
        ("extra_at_carrier", TOKENS.token("E4"))}
    assert got == sorted(got)


def test_skipped_members_are_not_judged() -> None:
    expected = roster_from_view(_view(), TOKENS, source="e")
    carrier = roster_from_view(_view(hd04="SILVER"), TOKENS, source="c")
    assert compare_rosters(expected, carrier, as_of=AS_OF, skip_members={TOKENS.token("E1")}) == []
