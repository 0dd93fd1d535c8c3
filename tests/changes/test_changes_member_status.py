"""Change detection of member status: each field a 001, events give INS04 and DTP*303, never stored."""

from __future__ import annotations

import pytest
from tests.x12 import x12_helpers as h

from carrierfeeds.changes import EVENTS, diff_against_snapshot
from carrierfeeds.x12.codes import MaintenanceReason

_M = h.status_mapping(**h.ALL_STATUS)


def _rows(member: str = "", **values: str) -> list[dict[str, str]]:
    return [{**r, **values} if r["member_id"] == member else dict(r) for r in h.family_rows()]


def _diff(before: list[dict[str, str]], after: list[dict[str, str]]):  # type: ignore[no-untyped-def]
    base = diff_against_snapshot(h.enrollment(h.census(before), _M), None, as_of=h.AS_OF).snapshot
    return diff_against_snapshot(h.enrollment(h.census(after), _M), base, as_of=h.AS_OF)


@pytest.mark.parametrize(("column", "value"), [
    ("benefit_status", "C"), ("student_status", "F"), ("handicap", "Y"), ("death_date", "2026-11-02"),
    ("employment_end_date", "2026-10-31"), ("medicare_plan", "A"), ("cobra_event", "2"),
    ("cobra_begin", "2026-11-01"), ("cobra_end", "2028-04-30"), ("employment_status", "L1")])
def test_a_change_in_any_status_field_is_a_change_dated_the_run_day(column: str, value: str) -> None:
    member = "E1001" if column.startswith("employment") else "E1001-02"  # subscribers only
    change = _diff(h.family_rows(), _rows(member, **{column: value}))
    assert (change.members_by_type, change.coverages_by_type) == ({"001": 1}, {})
    sent = change.enrollment.table
    assert sent["member_id"].tolist() == [member]
    assert sent["ins04"].tolist() == [MaintenanceReason.NO_REASON_GIVEN.value]
    assert sent["maintenance_effective"].tolist() == ["20261120"]
    assert set(change.snapshot.loc[change.snapshot["member_id"] == member, column]) == {
        value.replace("-", "")}


def test_the_census_event_gives_the_reason_and_the_date() -> None:
    after = _rows("E1001-01", death_date="2026-11-02", benefit_status="S", event_reason="DEATH",
                  event_date="2026-11-02")
    sent = _diff(h.family_rows(), after).enrollment.table
    assert sent[["member_id", "ins03", "ins04", "maintenance_effective"]].values.tolist() == [
        ["E1001-01", "001", "03", "20261102"]]


def test_an_event_alone_changes_nothing_and_is_never_stored() -> None:
    before = _rows("E1001-02", event_reason="birth", event_date="2012-07-15")
    change = _diff(before, _rows("E1001-02", event_reason="adoption", event_date="2013-01-01"))
    assert change.empty
    assert not set(EVENTS) & set(change.snapshot.columns)


def test_a_term_is_dated_the_run_day_and_keeps_its_reason() -> None:
    change = _diff(h.family_rows(), [r for r in h.family_rows() if r["member_id"] != "E1001-03"])
    sent = change.enrollment.table
    assert set(sent["ins03"]) == {"024"} and set(sent["ins04"]) == {"07"}
    assert set(sent["maintenance_effective"]) == {"20261120"}


def test_a_full_file_has_no_maintenance_date() -> None:
    change = diff_against_snapshot(h.enrollment(h.family_census(), _M), None, as_of=h.AS_OF)
    assert change.full_file and "maintenance_effective" not in change.enrollment.table.columns


def test_an_event_already_sent_does_not_linger_on_a_later_change() -> None:
    """A newborn's add carries INS04 02 (birth); the census keeps saying "birth" afterwards, but the
    family's move a week later is a change of location (43) for every member, the child too: INS04 is the
    reason for this maintenance (TR3 INS04), and the birth was already sent with the add."""
    newborn = {**next(r for r in h.family_rows() if r["member_id"] == "E1001-03" and r["plan_code"] == "MED-PPO"),
               "member_id": "E1001-04", "first_name": "Nina", "dob": "2026-11-01", "coverage_start": "2026-11-01",
               "event_reason": "birth", "event_date": "2026-11-01"}
    with_child = [*h.family_rows(), newborn]
    added = _diff(h.family_rows(), with_child).enrollment.table
    assert added[["member_id", "ins03", "ins04"]].values.tolist() == [["E1001-04", "021", "02"]]
    moved = [{**r, "address1": "1 Harbor Rd"} if r["subscriber_id"] == "E1001" else dict(r) for r in with_child]
    sent = _diff(with_child, moved).enrollment.table.drop_duplicates("member_id")
    assert set(sent["maintenance_effective"]) == {"20261120"}  # the run's day, not the birth's
    assert dict(zip(sent["member_id"], sent["ins04"], strict=True)) == dict.fromkeys(
        ("E1001", "E1001-01", "E1001-02", "E1001-03", "E1001-04"), MaintenanceReason.CHANGE_OF_LOCATION.value)
