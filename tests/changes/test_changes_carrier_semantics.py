"""What the carrier holds after our change files: several coverage periods per member and insurance line
(history, future-dated elections), overlapping periods refused by validation, a rehire after a gap sent as
a new enrollment (021, never 025), a reinstatement without a gap (025), and a plan change on one line under
both ``plan_change`` settings (HD*024 old + HD*021 new, or HD*001), checked segment by segment."""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from tests.x12 import x12_helpers as h

from carrierfeeds.census.tokens import MemberTokenizer
from carrierfeeds.changes import ChangeSet, diff_against_snapshot
from carrierfeeds.config import CensusSchema, load_schema
from carrierfeeds.enrollment import build_enrollment
from carrierfeeds.errors import DataError
from carrierfeeds.validation import CarrierRules, ValidationReport, validate_census
from carrierfeeds.x12.check import check_834, validate_with_pyx12
from carrierfeeds.x12.render import render_834_bytes

AS_OF = h.AS_OF  # 2026-11-20
SOLO = "E2002"  # single employee: MED-HDHP from 2024-01-01, DEN-STD 2024-01-01..2026-10-31
SCHEMA: CensusSchema = load_schema(h.ROOT / "schemas" / "census-v1.yaml")
SUITE = h.ROOT / "schemas" / "census-v1.suite.json"
TOKENIZER = MemberTokenizer(b"k" * 32)


def _validate(rows: list[dict[str, str]], as_of: date = AS_OF) -> ValidationReport:
    """The demo suite and the carrier's rules over ``rows`` (their test SSNs moved out of the 9xx area
    the suite refuses)."""
    feed, mapping = h.feed(), h.mapping()
    rows = [dict(r, ssn="1" + r["ssn"][1:]) if r["ssn"] else r for r in rows]
    return validate_census(h.census(rows), SUITE, SCHEMA, TOKENIZER, as_of=as_of, source_name="census.csv",
                           carrier=CarrierRules.for_feed(mapping, feed.authorization.plans))


def _medical(rows: list[dict[str, str]]) -> dict[str, str]:
    return next(r for r in rows if r["member_id"] == SOLO and r["plan_code"] == "MED-HDHP")


def _snapshot(rows: list[dict[str, str]], as_of: date = AS_OF) -> pd.DataFrame:
    return diff_against_snapshot(h.enrollment(h.census(rows)), None, as_of=as_of).snapshot


def _diff(before: list[dict[str, str]], after: list[dict[str, str]], **kwargs: object) -> ChangeSet:
    return diff_against_snapshot(h.enrollment(h.census(after)), _snapshot(before), as_of=AS_OF,
                                 **kwargs)  # type: ignore[arg-type]


def _segments(change_set: ChangeSet) -> list[list[str]]:
    data = render_834_bytes(change_set.enrollment, h.header(), h.CONTROL)
    assert check_834(data).ok
    return [s.split("*") for s in data.decode().replace("\n", "").split("~") if s]


def _coverage(segments: list[list[str]], member: str = SOLO) -> tuple[str, list[list[str]]]:
    """The member's INS03 and its Loop 2300 segments (HD and DTP*348/349), in file order."""
    at = next(i for i, s in enumerate(segments) if s[0] == "REF" and s[1:3] == ["0F", member])
    ins03 = segments[at - 1][3]
    loop = []
    for s in segments[at + 1:]:
        if s[0] in ("INS", "SE"):
            break
        if s[0] == "HD" or (s[0] == "DTP" and s[1] in ("348", "349")):
            loop.append(s)
    return ins03, loop


def _history_rows() -> list[dict[str, str]]:
    """The solo employee switched from HDHP to PPO on 2026-11-01, written as two census rows."""
    rows = h.family_rows()
    old = _medical(rows)
    return [dict(r, coverage_end="2026-10-31") if r is old else r for r in rows] + [
        dict(old, plan_code="MED-PPO", coverage_start="2026-11-01")]


def test_a_plan_change_in_two_census_rows_passes_validation_and_build() -> None:
    rows = _history_rows()
    report = _validate(rows)
    assert report.ok, report.rule_counts
    view = h.enrollment(h.census(rows)).table
    medical = view[(view["member_id"] == SOLO) & (view["hd03"] == "HLT")]
    # one Loop 2300 per line: the period in effect on the run day
    assert medical[["hd04", "coverage_start", "coverage_end"]].values.tolist() == [["PPO GOLD", "20261101", ""]]

    change_set = _diff(h.family_rows(), rows)
    ins03, loop = _coverage(_segments(change_set))
    assert ins03 == "001"
    assert loop == [["HD", "024", "", "HLT", "HDHP SILVER", "EMP"], ["DTP", "348", "D8", "20240101"],
                    ["DTP", "349", "D8", "20261031"],
                    ["HD", "021", "", "HLT", "PPO GOLD", "EMP"], ["DTP", "348", "D8", "20261101"]]
    held = change_set.snapshot[(change_set.snapshot["member_id"] == SOLO) & (change_set.snapshot["hd03"] == "HLT")]
    assert held["hd04"].tolist() == ["PPO GOLD"]  # the carrier holds the new plan only
    # the next day nothing is left to send for that line
    again = diff_against_snapshot(h.enrollment(h.census(rows)), change_set.snapshot, as_of=AS_OF)
    assert again.empty


def test_a_future_dated_election_is_sent_before_it_starts() -> None:
    """No period in effect on the run day: the earliest one starting later counts (a new hire starting
    next month, and an employee whose old coverage ended who elected again from next month)."""
    rows = h.family_rows()
    hire = h.row(member_id="E3003", subscriber_id="E3003", relationship="EE", last_name="Ng", first_name="Kim",
                 dob="1992-05-05", gender="F", plan_code="MED-PPO", coverage_level="EMP",
                 coverage_start="2026-12-01")
    dental = next(r for r in rows if r["member_id"] == SOLO and r["plan_code"] == "DEN-STD")
    later = [*rows, hire, dict(dental, coverage_start="2027-01-01", coverage_end="2027-12-31"),
             dict(dental, coverage_start="2028-01-01", coverage_end="")]
    assert _validate(later).ok
    change_set = _diff(rows, later)
    ins03, loop = _coverage(_segments(change_set), "E3003")
    assert ins03 == "021" and loop == [["HD", "021", "", "HLT", "PPO GOLD", "EMP"], ["DTP", "348", "D8", "20261201"]]
    ins03, loop = _coverage(_segments(change_set))
    # dental ended 2026-10-31 and starts again 2027-01-01: after a gap, so a new enrollment of the line
    assert ins03 == "001" and loop == [["HD", "021", "", "DEN", "DENTAL STANDARD", "EMP"],
                                       ["DTP", "348", "D8", "20270101"], ["DTP", "349", "D8", "20271231"]]


def test_overlapping_periods_on_one_line_are_refused_by_validate_with_row_column_rule() -> None:
    rows = _history_rows()
    rows[-1] = dict(rows[-1], coverage_start="2026-10-15")  # the PPO starts before the HDHP ended
    report = _validate(rows)
    assert not report.ok
    found = {(f.row, f.column, f.rule) for f in report.findings}
    old_row = next(i for i, r in enumerate(rows) if r["member_id"] == SOLO and r["plan_code"] == "MED-HDHP") + 2
    assert found == {(old_row, "coverage_start", "overlapping_coverage"),
                     (len(rows) + 1, "coverage_start", "overlapping_coverage")}
    # periods of one plan that do not overlap are history, not a repeat
    dental = next(r for r in rows if r["member_id"] == SOLO and r["plan_code"] == "DEN-STD")
    assert _validate([*_history_rows(), dict(dental, coverage_start="2026-12-01", coverage_end="")]).ok


def test_a_rehire_after_a_gap_is_a_new_enrollment_021_with_the_new_start() -> None:
    rows = h.family_rows()
    gone = [dict(r, coverage_end="2026-10-31") if r["member_id"] == SOLO else r for r in rows]
    back = [dict(r, coverage_start="2026-11-15", coverage_end="") if r["member_id"] == SOLO else r for r in rows]
    change_set = _diff(gone, back)
    ins03, loop = _coverage(_segments(change_set))
    assert ins03 == "021"
    assert [s for s in loop if s[0] == "HD"] == [["HD", "021", "", "HLT", "HDHP SILVER", "EMP"],
                                                 ["HD", "021", "", "DEN", "DENTAL STANDARD", "EMP"]]
    assert [s for s in loop if s[0] == "DTP"] == [["DTP", "348", "D8", "20261115"]] * 2
    assert change_set.members_by_type == {"021": 1}


def test_coverage_resuming_without_a_gap_is_a_reinstatement_025() -> None:
    rows = h.family_rows()
    gone = [dict(r, coverage_end="2026-10-31") if r["member_id"] == SOLO and r["plan_code"] == "MED-HDHP" else r
            for r in rows]
    # the end removed: coverage never stopped
    ins03, loop = _coverage(_segments(_diff(gone, rows)))
    assert ins03 == "025" and loop[0] == ["HD", "025", "", "HLT", "HDHP SILVER", "EMP"]
    # a new period starting the day after the old end: no gap either
    resumed = [dict(r, coverage_start="2026-11-01") if r["member_id"] == SOLO and r["plan_code"] == "MED-HDHP"
               else r for r in rows]
    ins03, loop = _coverage(_segments(_diff(gone, resumed)))
    assert ins03 == "025" and loop == [["HD", "025", "", "HLT", "HDHP SILVER", "EMP"], ["DTP", "348", "D8", "20261101"]]



def test_a_start_restored_by_a_025_is_no_change_the_next_day() -> None:
    """The snapshot after a 025 holds the start the carrier restored and the census start it resumed on
    (``coverage_resumed``): the next day's identical census sends nothing; a level change then goes out
    as HD*001 with the carrier's start, and the 834 view never carries the snapshot-only column."""
    rows = h.family_rows()
    gone = [dict(r, coverage_end="2026-10-31") if r["member_id"] == SOLO and r["plan_code"] == "MED-HDHP" else r
            for r in rows]
    resumed = [dict(r, coverage_start="2026-11-01") if r["member_id"] == SOLO and r["plan_code"] == "MED-HDHP"
               else r for r in rows]
    reinstated = diff_against_snapshot(h.enrollment(h.census(resumed)), _snapshot(gone), as_of=AS_OF)
    snap = reinstated.snapshot
    line = snap[(snap["member_id"] == SOLO) & (snap["hd03"] == "HLT")].iloc[0]
    assert (line["coverage_start"], line["coverage_resumed"]) == ("20240101", "20261101")
    assert "coverage_resumed" not in reinstated.enrollment.table.columns
    # a view drawn from the snapshot (a reconcile correction) carries the column and still renders
    drawn = snap.assign(ins03="001", ins04="AI", hd01="001")
    drawn_view = dataclasses.replace(reinstated.enrollment, table=drawn, member_count=drawn["member_id"].nunique())
    assert b"HD*001" in render_834_bytes(drawn_view, h.header(), h.CONTROL)
    quiet = diff_against_snapshot(h.enrollment(h.census(resumed)), snap, as_of=AS_OF)
    assert quiet.empty, quiet.members_by_type
    level = [dict(r, coverage_level="ESP") if r["member_id"] == SOLO and r["plan_code"] == "MED-HDHP" else r
             for r in resumed]
    ins03, loop = _coverage(_segments(diff_against_snapshot(h.enrollment(h.census(level)), snap, as_of=AS_OF)))
    assert ins03 == "001" and loop == [["HD", "001", "", "HLT", "HDHP SILVER", "ESP"], ["DTP", "348", "D8", "20240101"]]


def test_coverage_back_with_a_moved_start_is_hd001_with_the_new_start_not_025() -> None:
    """A 025 would restore the coverage from the start the carrier holds: when the census brings it back
    from another start (not the day after its end), HD*001 carries the new DTP*348 and no DTP*349."""
    rows = h.family_rows()
    gone = [dict(r, coverage_end="2026-10-31") if r["member_id"] == SOLO and r["plan_code"] == "MED-HDHP" else r
            for r in rows]
    moved = [dict(r, coverage_start="2025-06-01") if r["member_id"] == SOLO and r["plan_code"] == "MED-HDHP"
             else r for r in rows]
    ins03, loop = _coverage(_segments(_diff(gone, moved, retro_window_days=900)))
    assert ins03 == "001" and loop == [["HD", "001", "", "HLT", "HDHP SILVER", "EMP"], ["DTP", "348", "D8", "20250601"]]


@pytest.mark.parametrize("setting", ["term_and_add", "change"])
def test_a_plan_change_on_one_line_under_each_plan_change_setting(setting: str, tmp_path: Path) -> None:
    rows = h.family_rows()
    switched = [dict(r, plan_code="MED-PPO", coverage_start="2026-12-01")
                if r["member_id"] == SOLO and r["plan_code"] == "MED-HDHP" else r for r in rows]
    mapping = h.validated(plan_change=setting)
    change_set = _diff(rows, switched, plan_change=mapping.plan_change)
    ins03, loop = _coverage(_segments(change_set))
    assert ins03 == "001"
    if setting == "term_and_add":
        assert loop == [["HD", "024", "", "HLT", "HDHP SILVER", "EMP"], ["DTP", "348", "D8", "20240101"],
                        ["DTP", "349", "D8", "20261130"],
                        ["HD", "021", "", "HLT", "PPO GOLD", "EMP"], ["DTP", "348", "D8", "20261201"]]
        assert change_set.coverages_by_type == {"021": 1, "024": 1}
        path = tmp_path / "term-and-add.834"
        path.write_bytes(render_834_bytes(change_set.enrollment, h.header(), h.CONTROL))
        verdict = validate_with_pyx12(path)
        assert verdict.ok, verdict.errors
    else:
        assert loop == [["HD", "001", "", "HLT", "PPO GOLD", "EMP"], ["DTP", "348", "D8", "20261201"]]
    held = change_set.snapshot[(change_set.snapshot["member_id"] == SOLO) & (change_set.snapshot["hd03"] == "HLT")]
    assert held[["hd04", "coverage_start"]].values.tolist() == [["PPO GOLD", "20261201"]]


def test_a_full_file_sends_the_period_that_counts_once_per_line() -> None:
    change_set = diff_against_snapshot(h.enrollment(h.census(_history_rows())), _snapshot(h.family_rows()),
                                       as_of=AS_OF, full_file=True)
    ins03, loop = _coverage(_segments(change_set))
    assert ins03 == "030" and sorted(s[1:5] for s in loop if s[0] == "HD") == [
        ["030", "", "DEN", "DENTAL STANDARD"], ["030", "", "HLT", "PPO GOLD"]]


def test_validate_refuses_first_what_the_build_would_refuse() -> None:
    """A name with nothing left after the carrier's character rule passes the suite, and the build refused
    the whole file for it; validation now names the row, column and rule."""
    rows = h.family_rows()
    at = next(i for i, r in enumerate(rows) if r["member_id"] == SOLO)
    rows[at] = dict(rows[at], first_name="~*")
    rows = [dict(r, first_name="~*") if r["member_id"] == SOLO else r for r in rows]
    with pytest.raises(DataError) as refused:
        build_enrollment(h.census(rows), h.feed(), h.mapping(), as_of=AS_OF)
    assert refused.value.rule == "empty_after_sanitize"
    report = _validate(rows)
    assert ("first_name", "empty_after_sanitize") in {(f.column, f.rule) for f in report.findings}
    assert at + 2 in {f.row for f in report.findings if f.rule == "empty_after_sanitize"}


def test_a_member_who_drops_a_line_and_moves_the_same_day_is_sent_the_new_address() -> None:
    """The dropped line's term may open the member loop: it must carry the member's current address, not
    the one the carrier held (found by the carrier replay)."""
    rows = h.family_rows()
    moved = [dict(r, address1="77 Birch Road", zip="62704") if r["member_id"] == SOLO else r for r in rows
             if not (r["member_id"] == SOLO and r["plan_code"] == "MED-HDHP")]
    change_set = _diff(rows, moved)
    segments = _segments(change_set)
    at = next(i for i, s in enumerate(segments) if s[0] == "REF" and s[1:3] == ["0F", SOLO])
    address = next(s for s in segments[at:] if s[0] == "N3")
    assert address == ["N3", "77 BIRCH ROAD"]
    ins03, loop = _coverage(segments)
    assert ins03 == "024" and loop[0][:4] == ["HD", "024", "", "HLT"]  # its dental had ended already
    held = change_set.snapshot[change_set.snapshot["member_id"] == SOLO]
    assert set(held["address1"]) == {"77 BIRCH ROAD"}


@pytest.mark.parametrize("setting", ["term_and_add", "change"])
def test_a_two_row_plan_change_seen_before_and_on_the_switch_day(setting: str) -> None:
    """Before the switch the old period counts: its end goes out as a term. On the switch day the new
    plan follows as a plan change, never as a reinstatement (025 would restore the old plan)."""
    rows = h.family_rows()
    old = _medical(rows)
    two = [dict(r, coverage_end="2026-11-30") if r is old else r for r in rows] + [
        dict(old, plan_code="MED-PPO", coverage_start="2026-12-01")]
    before = diff_against_snapshot(h.enrollment(h.census(two)), _snapshot(rows), as_of=AS_OF,
                                   plan_change=setting)  # type: ignore[arg-type]
    _, loop = _coverage(_segments(before))
    assert loop == [["HD", "024", "", "HLT", "HDHP SILVER", "EMP"], ["DTP", "348", "D8", "20240101"],
                    ["DTP", "349", "D8", "20261130"]]
    switch_day = date(2026, 12, 1)
    on = diff_against_snapshot(build_enrollment(h.census(two), h.feed(), h.mapping(), as_of=switch_day),
                               before.snapshot, as_of=switch_day, plan_change=setting)  # type: ignore[arg-type]
    ins03, loop = _coverage(_segments(on))
    assert ins03 == "001"
    if setting == "change":
        assert loop == [["HD", "001", "", "HLT", "PPO GOLD", "EMP"], ["DTP", "348", "D8", "20261201"]]
    else:
        assert [s[:5] for s in loop if s[0] == "HD"] == [["HD", "024", "", "HLT", "HDHP SILVER"],
                                                         ["HD", "021", "", "HLT", "PPO GOLD"]]


def test_coverage_resuming_with_another_level_is_hd001_not_a_reinstatement() -> None:
    """025 restores the coverage as the carrier held it, so a resumption that also changes the level
    goes out as HD*001 with the new level and no end (found by the carrier replay)."""
    rows = h.family_rows()
    medical = next(r for r in rows if r["member_id"] == SOLO and r["plan_code"] == "MED-HDHP")
    gone = [dict(r, coverage_end="2026-10-31") if r is medical else r for r in rows]
    back = [dict(r, coverage_level="ESP") if r is medical else r for r in rows]
    ins03, loop = _coverage(_segments(_diff(gone, back)))
    assert ins03 == "001" and loop == [["HD", "001", "", "HLT", "HDHP SILVER", "ESP"], ["DTP", "348", "D8", "20240101"]]


@pytest.mark.parametrize("pending_terms", [True, False])
def test_a_full_file_carries_a_term_still_ahead_only_in_changes_mode(pending_terms: bool) -> None:
    """Changes mode's weekly full file carries a line the carrier still covers (its end, sent, is after
    ``as_of``) though the census no longer has it, with its DTP*349; mode full (``pending_terms=False``)
    sends the census alone."""
    rows = h.family_rows()
    ending = [dict(r, coverage_end="2026-11-30") if r["member_id"] == SOLO else r for r in rows]
    left = [r for r in rows if r["member_id"] != SOLO]
    change_set = diff_against_snapshot(h.enrollment(h.census(left)), _snapshot(ending), as_of=AS_OF,
                                       full_file=True, pending_terms=pending_terms)
    assert change_set.full_file
    if not pending_terms:
        assert SOLO not in set(change_set.enrollment.table["member_id"])
        return
    ins03, loop = _coverage(_segments(change_set))
    assert ins03 == "030"
    assert ["HD", "030", "", "HLT", "HDHP SILVER", "EMP"] in loop and ["DTP", "349", "D8", "20261130"] in loop
    assert SOLO in set(change_set.snapshot["member_id"])
