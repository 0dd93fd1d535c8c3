"""Change-file scenarios (add, change, term, reinstate, audit): golden 834s named by scenario, each passing
the structural check and pyx12, compared byte for byte, and read back to the same members.

Regenerate after an intended change (then review the diff like code):

    CARRIERFEEDS_REGENERATE_GOLDEN=1 .venv/bin/pytest tests/x12/test_x12_scenarios.py
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import x12_helpers as h

from carrierfeeds.changes import ChangeSet, diff_against_snapshot
from carrierfeeds.config import CarrierMapping, FullFileSpec
from carrierfeeds.x12.check import check_834, validate_with_pyx12
from carrierfeeds.x12.envelope import TransactionHeader
from carrierfeeds.x12.read import read_834
from carrierfeeds.x12.render import render_834_bytes, render_834_naive

FAMILY = "E1001"


def _frame(rows: list[dict[str, str]]) -> pd.DataFrame:
    return h.census(rows)


def _snapshot(rows: list[dict[str, str]]) -> pd.DataFrame:
    return diff_against_snapshot(h.enrollment(_frame(rows)), None, as_of=h.AS_OF).snapshot


def _diff(before: list[dict[str, str]], after: list[dict[str, str]], **kwargs: object) -> ChangeSet:
    return diff_against_snapshot(h.enrollment(_frame(after)), _snapshot(before), as_of=h.AS_OF,
                                 **kwargs)  # type: ignore[arg-type]


def _without(rows: list[dict[str, str]], member: str) -> list[dict[str, str]]:
    return [r for r in rows if r["member_id"] != member and r["subscriber_id"] != member]


def _edit(rows: list[dict[str, str]], when: Callable[[dict[str, str]], bool], **values: str
          ) -> list[dict[str, str]]:
    return [{**r, **values} if when(r) else dict(r) for r in rows]


def _changes_header() -> TransactionHeader:
    return dataclasses.replace(h.header(), action="2")


def add_employee_with_spouse_and_children() -> tuple[ChangeSet, TransactionHeader]:
    rows = _edit(h.family_rows(), lambda r: r["subscriber_id"] == FAMILY, coverage_start="2026-12-01")
    return _diff(_without(rows, FAMILY), rows), _changes_header()


def add_dependent() -> tuple[ChangeSet, TransactionHeader]:
    rows = _edit(h.family_rows(), lambda r: r["member_id"] == "E1001-03", coverage_start="2026-11-01")
    return _diff(_without(rows, "E1001-03"), rows), _changes_header()


def change_address() -> tuple[ChangeSet, TransactionHeader]:
    rows = h.family_rows()
    moved = _edit(rows, lambda r: r["subscriber_id"] == FAMILY, address1="77 Birch Road", address2="",
                  zip="62704")
    return _diff(rows, moved), _changes_header()


def _switch_plan(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return _edit(rows, lambda r: r["member_id"] == "E2002" and r["plan_code"] == "MED-HDHP",
                 plan_code="MED-PPO", coverage_start="2026-12-01")


def change_plan() -> tuple[ChangeSet, TransactionHeader]:
    """A carrier that takes a plan change as HD*001 with the new plan (``plan_change: change``)."""
    rows = h.family_rows()
    m = h.mapping(plan_change="change")
    return _diff(rows, _switch_plan(rows), plan_change=m.plan_change), _changes_header()


def change_plan_term_and_add() -> tuple[ChangeSet, TransactionHeader]:
    """The default: the old plan ends the day before the new one starts (HD*024), the new one is added
    (HD*021), two Loop 2300s on one line, old first."""
    rows = h.family_rows()
    m = h.mapping()
    assert m.plan_change == "term_and_add"
    return _diff(rows, _switch_plan(rows), plan_change=m.plan_change), _changes_header()


def coverage_level_change() -> tuple[ChangeSet, TransactionHeader]:
    rows = h.family_rows()
    leveled = _edit(rows, lambda r: r["subscriber_id"] == FAMILY and r["plan_code"] == "DEN-STD",
                    coverage_level="ESP")
    return _diff(rows, leveled), _changes_header()


def terminate_subscriber_and_dependents() -> tuple[ChangeSet, TransactionHeader]:
    rows = h.family_rows()
    return _diff(rows, _without(rows, FAMILY)), _changes_header()


def terminate_one_dependent() -> tuple[ChangeSet, TransactionHeader]:
    rows = h.family_rows()
    return _diff(rows, _without(rows, "E1001-03")), _changes_header()


def reinstate() -> tuple[ChangeSet, TransactionHeader]:
    rows = h.family_rows()
    termed = diff_against_snapshot(h.enrollment(_frame(_without(rows, "E1001-03"))), _snapshot(rows),
                                   as_of=h.AS_OF).snapshot
    return diff_against_snapshot(h.enrollment(_frame(rows)), termed, as_of=h.AS_OF), _changes_header()


def full_audit_file() -> tuple[ChangeSet, TransactionHeader]:
    rows = h.family_rows()
    m = h.mapping(full_file=FullFileSpec(bgn08="RX"))
    change_set = diff_against_snapshot(h.enrollment(_frame(rows), m), _snapshot(rows), as_of=h.AS_OF,
                                       full_file=True)
    return change_set, h.header(m)


def change_relationship() -> tuple[ChangeSet, TransactionHeader]:
    """A child the employer now records as a stepchild: INS02 19 -> 17, a change in identifying data (25)."""
    m = h.validated(relationship_codes={"EE": "18", "SP": "01", "CH": "19", "SC": "17"})
    rows = h.family_rows()
    step = _edit(rows, lambda r: r["member_id"] == "E1001-03", relationship="SC")
    before = diff_against_snapshot(h.enrollment(_frame(rows), m), None, as_of=h.AS_OF).snapshot
    return diff_against_snapshot(h.enrollment(_frame(step), m), before, as_of=h.AS_OF), _changes_header()


def _diff_with(m: CarrierMapping, before: list[dict[str, str]], after: list[dict[str, str]]) -> ChangeSet:
    base = diff_against_snapshot(h.enrollment(_frame(before), m), None, as_of=h.AS_OF).snapshot
    return diff_against_snapshot(h.enrollment(_frame(after), m), base, as_of=h.AS_OF)


def add_newborn_with_birth_event() -> tuple[ChangeSet, TransactionHeader]:
    """A newborn added with the census's event: INS04 02 (birth), DTP*303 the birth date."""
    m = h.status_mapping(event_reasons=True, maintenance_effective=True)
    rows = _edit(h.family_rows(), lambda r: r["member_id"] == "E1001-03", coverage_start="2026-11-01",
                 dob="2026-11-01", event_reason="Birth", event_date="2026-11-01")
    return _diff_with(m, _without(rows, "E1001-03"), rows), _changes_header()


def change_student_status() -> tuple[ChangeSet, TransactionHeader]:
    """A child leaves school (INS09 F -> N): a 001 with no reason given, dated the run's day (DTP*303)."""
    m = h.status_mapping(student=True, maintenance_effective=True)
    rows = _edit(h.family_rows(), lambda r: r["member_id"] == "E1001-02", student_status="F")
    left = _edit(rows, lambda r: r["member_id"] == "E1001-02", student_status="N")
    return _diff_with(m, rows, left), _changes_header()


def cobra_continuation() -> tuple[ChangeSet, TransactionHeader]:
    """The terminated employee elects COBRA after a termination of employment: INS05 C, INS07 1, INS04
    09 (COBRA), DTP*303 the day COBRA begins, DTP*337 employment end, DTP*340/341 COBRA begin and end."""
    m = h.status_mapping(benefit_status=True, cobra=True, employment_end=True, event_reasons=True,
                        maintenance_effective=True)
    rows = _edit(h.family_rows(), lambda r: r["member_id"] == "E2002", employment_end_date="2026-10-31")
    cobra = _edit(rows, lambda r: r["member_id"] == "E2002", benefit_status="C", cobra_event="1",
                  cobra_begin="2026-11-01", cobra_end="2028-04-30", event_reason="cobra",
                  event_date="2026-11-01")
    return _diff_with(m, rows, cobra), _changes_header()


def correct_ssn() -> tuple[ChangeSet, TransactionHeader]:
    """The employee's SSN was keyed wrong: 2100A with the right one, 2100B NM1*70 with the one the carrier
    holds (INS04 25), no DMG (birth date and gender unchanged)."""
    m = h.status_mapping(identity_corrections=True)
    rows = h.family_rows()
    return _diff_with(m, rows, _edit(rows, lambda r: r["member_id"] == "E1001", ssn="900112223")), _changes_header()


def correct_name_and_birth_date() -> tuple[ChangeSet, TransactionHeader]:
    """A child's name and birth date corrected: 2100B with the carrier's name (no SSN: it has none) and
    its DMG with the carrier's birth date and gender."""
    m = h.status_mapping(identity_corrections=True)
    rows = h.family_rows()
    fixed = _edit(rows, lambda r: r["member_id"] == "E1001-02", first_name="Luciana", dob="2012-07-16")
    return _diff_with(m, rows, fixed), _changes_header()


SCENARIOS: dict[str, Callable[[], tuple[ChangeSet, TransactionHeader]]] = {
    f"{fn.__name__.replace('_', '-')}.834": fn for fn in (
        add_employee_with_spouse_and_children, add_dependent, change_address, change_plan,
        change_plan_term_and_add, coverage_level_change, terminate_subscriber_and_dependents,
        terminate_one_dependent, reinstate, full_audit_file, change_relationship, add_newborn_with_birth_event,
        change_student_status, cobra_continuation, correct_ssn, correct_name_and_birth_date)
}

#: What each scenario must send: members per INS03 and Loop 2300s per HD01 (the diff's own counts).
EXPECTED: dict[str, tuple[dict[str, int], dict[str, int]]] = {
    "add-employee-with-spouse-and-children.834": ({"021": 4}, {"021": 8}),
    "add-dependent.834": ({"021": 1}, {"021": 2}),
    "change-address.834": ({"001": 4}, {}),
    "change-plan.834": ({"001": 1}, {"001": 1}),
    "change-plan-term-and-add.834": ({"001": 1}, {"021": 1, "024": 1}),
    "coverage-level-change.834": ({"001": 4}, {"001": 4}),
    "terminate-subscriber-and-dependents.834": ({"024": 4}, {"024": 8}),
    "terminate-one-dependent.834": ({"024": 1}, {"024": 2}),
    "reinstate.834": ({"025": 1}, {"025": 2}),
    "full-audit-file.834": ({"030": 5}, {"030": 10}),
    "change-relationship.834": ({"001": 1}, {}),
    "add-newborn-with-birth-event.834": ({"021": 1}, {"021": 2}),
    "change-student-status.834": ({"001": 1}, {}),
    "cobra-continuation.834": ({"001": 1}, {}),
    "correct-ssn.834": ({"001": 1}, {}),
    "correct-name-and-birth-date.834": ({"001": 1}, {}),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_golden_file(name: str, tmp_path: Path) -> None:
    change_set, header = SCENARIOS[name]()
    assert (change_set.members_by_type, change_set.coverages_by_type) == EXPECTED[name]
    enrollment = change_set.enrollment
    data = render_834_bytes(enrollment, header, h.CONTROL)
    assert data == render_834_naive(enrollment, header, h.CONTROL)
    path = h.FIXTURES / name
    h.write_golden_if_asked(path, data)
    assert path.exists(), f"missing golden file {name}; see this module's docstring to create it"
    assert data == path.read_bytes()

    report = check_834(data)
    assert report.ok, report.problems
    assert report.member_count == enrollment.member_count
    out = tmp_path / name
    out.write_bytes(data)
    verdict = validate_with_pyx12(out)
    assert verdict.ok, verdict.errors

    back = read_834(data)
    cols = ["member_id", "subscriber_id", "ins03", "ins04", "hd01", "hd03", "hd04", "hd05", "coverage_start",
            "coverage_end", "last_name", "address1"]
    expected = enrollment.table.reindex(columns=cols, fill_value="").astype(object).reset_index(drop=True)
    expected.loc[expected["hd03"] == "", ["hd01", "coverage_start", "coverage_end"]] = ""
    pd.testing.assert_frame_equal(back[cols].reset_index(drop=True), expected, check_dtype=False)
    if change_set.full_file:
        assert b"BGN*00*CF000000042*20261121*0730*UT***RX~" in data
    else:
        assert b"***2~" in data.split(b"\n")[3]


def test_term_without_end_date_and_wrong_hd01_are_caught() -> None:
    change_set, header = terminate_one_dependent()
    data = render_834_bytes(change_set.enrollment, header, h.CONTROL)
    broken = data.replace(b"DTP*349*D8*20261130~\n", b"", 1)
    codes = {p.code for p in check_834(broken).problems}
    assert "term_without_end_date" in codes
    mixed = data.replace(b"HD*024", b"HD*021", 1)
    assert "maintenance_mismatch" in {p.code for p in check_834(mixed).problems}
    bare = render_834_bytes(change_address()[0].enrollment, header, h.CONTROL).replace(b"*001*", b"*021*", 1)
    assert "coverage_missing" in {p.code for p in check_834(bare).problems}
