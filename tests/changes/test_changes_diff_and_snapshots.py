"""Change detection (pure diff) and the encrypted snapshot store, on synthetic families."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from tests.x12 import x12_helpers as h

from carrierfeeds.changes import (
    MEMBER_OPTIONS,
    OutsideRetroWindow,
    SnapshotRefused,
    SnapshotStore,
    TermEnd,
    diff_against_snapshot,
    is_full_file_day,
    term_date,
)
from carrierfeeds.config import CarrierMapping, ClientReporting, MemberReferences, PlanCode
from carrierfeeds.x12.check import check_834
from carrierfeeds.x12.render import render_834_bytes

AS_OF = h.AS_OF


def _snap(rows: list[dict[str, str]]) -> pd.DataFrame:
    return diff_against_snapshot(h.enrollment(h.census(rows)), None, as_of=AS_OF).snapshot


def _without(rows: list[dict[str, str]], member: str) -> list[dict[str, str]]:
    return [r for r in rows if member not in (r["member_id"], r["subscriber_id"])]


def test_first_run_without_snapshot_is_the_full_audit_file() -> None:
    cs = diff_against_snapshot(h.enrollment(), None, as_of=AS_OF)
    assert cs.full_file and cs.members_by_type == {"030": 5}
    assert set(cs.enrollment.table["hd01"]) == {"030"}


def test_unchanged_census_sends_nothing_and_keeps_the_snapshot() -> None:
    rows = h.family_rows()
    cs = diff_against_snapshot(h.enrollment(h.census(rows)), _snap(rows), as_of=AS_OF)
    assert cs.empty and cs.members_by_type == {}
    pd.testing.assert_frame_equal(cs.snapshot, _snap(rows))


def test_held_back_family_is_carried_over_never_termed() -> None:
    rows = h.family_rows()
    cs = diff_against_snapshot(h.enrollment(h.census(_without(rows, "E1001"))), _snap(rows), as_of=AS_OF,
                               held_back_members={"E1001"})
    assert cs.empty and cs.carried_over == 4
    assert (cs.snapshot["subscriber_id"] == "E1001").sum() == 8
    assert (cs.snapshot.loc[cs.snapshot["subscriber_id"] == "E1001", "coverage_end"] == "").all()


def test_omission_policy_sends_no_terms_and_keeps_members_until_a_full_file() -> None:
    rows = h.family_rows()
    cs = diff_against_snapshot(h.enrollment(h.census(_without(rows, "E1001-03"))), _snap(rows), as_of=AS_OF,
                               term_policy="omission")
    assert cs.empty
    assert (cs.snapshot["member_id"] == "E1001-03").sum() == 2
    full = diff_against_snapshot(h.enrollment(h.census(_without(rows, "E1001-03"))), cs.snapshot,
                                 as_of=AS_OF, full_file=True)
    assert "E1001-03" not in set(full.snapshot["member_id"])


def test_explicit_term_dates_follow_the_term_end_rule_and_then_reinstate() -> None:
    rows = h.family_rows()
    cs = diff_against_snapshot(h.enrollment(h.census(_without(rows, "E1001-03"))), _snap(rows), as_of=AS_OF,
                               term_end="day_before")
    sent = cs.enrollment.table
    assert set(sent["ins03"]) == {"024"} and set(sent["coverage_end"]) == {"20261119"}
    back = diff_against_snapshot(h.enrollment(h.census(rows)), cs.snapshot, as_of=AS_OF)
    assert back.members_by_type == {"025": 1} and back.coverages_by_type == {"025": 2}
    assert (back.snapshot["coverage_end"] == "").sum() == 9  # reinstated lines are open again


def test_coverage_level_change_is_hd_001_per_line() -> None:
    rows = h.family_rows()
    changed = [{**r, "coverage_level": "ESP"} if r["member_id"] == "E2002" and r["plan_code"] == "DEN-STD"
               else r for r in rows]
    cs = diff_against_snapshot(h.enrollment(h.census(changed)), _snap(rows), as_of=AS_OF)
    sent = cs.enrollment.table
    assert list(sent["hd01"]) == ["001"] and list(sent["hd05"]) == ["ESP"] and list(sent["ins03"]) == ["001"]


def test_dropping_one_line_terms_that_line_only() -> None:
    rows = h.family_rows()
    dropped = [r for r in rows if not (r["member_id"] == "E1001" and r["plan_code"] == "DEN-STD")]
    cs = diff_against_snapshot(h.enrollment(h.census(dropped)), _snap(rows), as_of=AS_OF)
    assert cs.members_by_type == {"001": 1} and cs.coverages_by_type == {"024": 1}


def test_retro_window_accepts_inside_and_refuses_outside_by_row() -> None:
    rows = h.family_rows()
    inside = [{**r, "coverage_start": "2026-10-01"} if r["member_id"] == "E1001-03" else r for r in rows]
    cs = diff_against_snapshot(h.enrollment(h.census(inside)), _snap(_without(rows, "E1001-03")), as_of=AS_OF,
                               retro_window_days=60)
    assert cs.members_by_type == {"021": 1}
    with pytest.raises(OutsideRetroWindow) as err:
        diff_against_snapshot(h.enrollment(h.census(inside)), _snap(_without(rows, "E1001-03")), as_of=AS_OF,
                              retro_window_days=30)
    assert err.value.details["count"] == 2 and "E1001" not in str(err.value)


def _options(*, department: bool = True, **update: object) -> CarrierMapping:
    """The demo mapping with every 834 option on: REF*1L/17/DX, DTP*356/357, a plan's 2300 REF*1L."""
    base = h.mapping()
    plans = dict(base.plans)
    plans["MED-PPO"] = PlanCode(insurance_line="HLT", description="PPO GOLD", policy_number="PPO-77-A")
    return h.validated(**{
        "allowlist": (*base.allowlist, "department"), "plans": plans,
        "member_dates": ("eligibility_begin", "eligibility_end"),
        "member_references": MemberReferences(group_policy_number=True, department=department,
                                              client_reporting_category=ClientReporting(value="EAST")),
        **update})


def _snap_with(rows: list[dict[str, str]], m: CarrierMapping) -> pd.DataFrame:
    return diff_against_snapshot(h.enrollment(h.census(rows), m), None, as_of=AS_OF).snapshot


@pytest.mark.parametrize("column", [*MEMBER_OPTIONS, "coverage_policy_number"])
def test_a_change_to_an_option_column_is_sent(column: str) -> None:
    """The carrier holds an older value of an option column for one member: that member is sent (001)."""
    m = _options()
    rows = h.family_rows()
    current = h.enrollment(h.census(rows), m)
    assert column in current.table.columns
    held = _snap_with(rows, m)
    who = held["member_id"] == "E1001"
    if column == "coverage_policy_number":
        who &= held["hd03"] == "HLT"
    old = "20200101" if column.startswith("eligibility") else "OLD VALUE"
    held.loc[who, column] = old
    cs = diff_against_snapshot(current, held, as_of=AS_OF)
    sent = cs.enrollment.table
    assert cs.members_by_type == {"001": 1} and set(sent["member_id"]) == {"E1001"}
    assert set(sent["ins04"]) == {"AI"}
    if column == "coverage_policy_number":
        assert cs.coverages_by_type == {"001": 1} and list(sent["coverage_policy_number"]) == ["PPO-77-A"]
    else:
        assert cs.coverages_by_type == {} and old not in set(sent[column])
    pd.testing.assert_frame_equal(cs.snapshot, _snap_with(rows, m))


def test_a_department_change_in_the_census_sends_ref_dx() -> None:
    m = _options()
    rows = h.family_rows()
    moved = [{**r, "department": "Plant 3"} if r["member_id"] == "E1001" else r for r in rows]
    cs = diff_against_snapshot(h.enrollment(h.census(moved), m), _snap_with(rows, m), as_of=AS_OF)
    assert cs.members_by_type == {"001": 1}
    data = render_834_bytes(cs.enrollment, h.header(m), h.CONTROL)
    assert b"REF*DX*PLANT 3~" in data and check_834(data).ok
    assert set(cs.snapshot.loc[cs.snapshot["member_id"] == "E1001", "department"]) == {"PLANT 3"}


def test_an_option_turned_on_sends_its_values_as_changes() -> None:
    """A snapshot made before the mapping asked for REF*DX holds no department: the carrier has none, so
    every member with one is sent (001) and only then does the snapshot hold it."""
    rows = h.family_rows()
    before = _snap_with(rows, _options(department=False))
    assert "department" not in before.columns
    cs = diff_against_snapshot(h.enrollment(h.census(rows), _options()), before, as_of=AS_OF)
    assert cs.members_by_type == {"001": 1} and set(cs.enrollment.table["member_id"]) == {"E1001"}
    assert set(cs.snapshot.loc[cs.snapshot["member_id"] == "E1001", "department"]) == {"PLANT 2"}


@pytest.mark.parametrize(("gone", "term_end"), [("E2002", "end_of_month"), ("E1001-03", "day_before")])
def test_a_member_gone_from_the_census_is_termed_with_eligibility_end(gone: str, term_end: TermEnd) -> None:
    m = _options()
    rows = h.family_rows()
    cs = diff_against_snapshot(h.enrollment(h.census(_without(rows, gone)), m), _snap_with(rows, m),
                               as_of=AS_OF, term_end=term_end)
    sent = cs.enrollment.table
    ended = "20261130" if term_end == "end_of_month" else "20261119"
    assert cs.members_by_type == {"024": 1} and set(sent["member_id"]) == {gone}
    assert set(sent["eligibility_end"]) == {ended}
    data = render_834_bytes(cs.enrollment, h.header(m), h.CONTROL)
    assert data.count(f"DTP*357*D8*{ended}~".encode()) == 1 and check_834(data).ok
    held = cs.snapshot.loc[cs.snapshot["member_id"] == gone]
    assert set(held["eligibility_end"]) == {ended}
    again = diff_against_snapshot(h.enrollment(h.census(_without(rows, gone)), m), cs.snapshot, as_of=AS_OF,
                                  term_end=term_end)
    assert again.empty


def test_term_date_and_full_file_day() -> None:
    assert term_date(date(2026, 2, 10), "end_of_month") == date(2026, 2, 28)
    assert term_date(date(2026, 2, 10), "day_before") == date(2026, 2, 9)
    assert is_full_file_day(date(2026, 11, 22), "sunday") and not is_full_file_day(date(2026, 11, 22), None)


def test_snapshot_store_is_encrypted_staged_and_advanced_only_when_confirmed(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snap", tmp_path / "keys" / "snapshot.key")
    frame = _snap(h.family_rows())
    assert store.load("feed-a") is None
    store.stage("feed-a", "run1", frame)
    assert store.load("feed-a") is None  # pending until confirmed
    assert os.stat(tmp_path / "keys" / "snapshot.key").st_mode & 0o777 == 0o600
    raw = b"".join(p.read_bytes() for p in (tmp_path / "snap").rglob("*.snap"))
    assert b"RIVERA" not in raw and b"E1001" not in raw and b"900112222" not in raw
    assert store.advance("feed-a", "run1") and store.advance("feed-a", "run1")  # idempotent
    pd.testing.assert_frame_equal(store.load("feed-a"), frame)
    assert store.load_base("feed-a", "run1") is None  # a rerun of run1 diffs against what run1 saw
    store.stage("feed-a", "run2", frame.iloc[:2])
    assert store.load_base("feed-a", "run2") is not None and len(store.load("feed-a")) == len(frame)
    with pytest.raises(SnapshotRefused):
        store.advance("feed-a", "run3")
    current = tmp_path / "snap" / "feed-a" / "current.snap"
    data = bytearray(current.read_bytes())
    data[-5] ^= 1
    current.write_bytes(bytes(data))
    with pytest.raises(SnapshotRefused):
        store.load("feed-a")


def test_snapshot_store_refuses_a_missing_or_exposed_key(tmp_path: Path) -> None:
    key = tmp_path / "snapshot.key"
    store = SnapshotStore(tmp_path / "snap", key)
    store.stage("feed-a", "run1", _snap(h.family_rows()))
    store.advance("feed-a", "run1")
    os.chmod(key, 0o644)
    with pytest.raises(SnapshotRefused):
        SnapshotStore(tmp_path / "snap", key).load("feed-a")
    key.unlink()
    with pytest.raises(SnapshotRefused):
        SnapshotStore(tmp_path / "snap", key).load("feed-a")
