"""Golden 834 files, compared byte for byte, and the round trip each must survive.

Regenerate after an intended change to the writer (then review the diff like code):

    CARRIERFEEDS_REGENERATE_GOLDEN=1 .venv/bin/pytest tests/x12/test_x12_golden.py

The files are synthetic and use a fixed creation time and fixed control numbers (x12_helpers).
Each passes the structural check and pyx12, both writers produce it, and reading it back recovers the
members (and every optional REF/DTP value the mapping asked for).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import x12_helpers as h

from carrierfeeds.config import MEMBER_STATUS_SOURCES, ClientReporting, MemberReferences, PlanCode
from carrierfeeds.config.mapping import BrokerParty, FileHeader
from carrierfeeds.enrollment import Enrollment
from carrierfeeds.x12.check import check_834, validate_with_pyx12
from carrierfeeds.x12.envelope import TransactionHeader
from carrierfeeds.x12.read import read_834
from carrierfeeds.x12.render import render_834_bytes, render_834_naive

_NARROW = ("member_id", "subscriber_id", "relationship", "last_name", "first_name", "dob", "gender",
           "plan_code", "coverage_level", "coverage_start", "coverage_end")


def _full_family() -> tuple[Enrollment, TransactionHeader]:
    return h.enrollment(), h.header()


def _minimum_necessary() -> tuple[Enrollment, TransactionHeader]:
    m = h.mapping(allowlist=_NARROW, group_number=None)
    return h.enrollment(m=m), h.header(m)


def _terminate_subscriber() -> tuple[Enrollment, TransactionHeader]:
    frame = h.family_census()
    frame = frame[frame["member_id"] == "E2002"]
    return h.enrollment(frame), h.header()


def _member_references() -> tuple[Enrollment, TransactionHeader]:
    """REF*1L (group number), REF*17 (fixed category), REF*DX (department) and a plan's 2300 REF*1L."""
    base = h.mapping()
    plans = dict(base.plans)
    plans["MED-PPO"] = PlanCode(insurance_line="HLT", description="PPO GOLD", policy_number="PPO-77-A")
    m = h.validated(allowlist=(*base.allowlist, "department"), plans=plans, member_references=MemberReferences(
        group_policy_number=True, client_reporting_category=ClientReporting(value="EAST"), department=True))
    return h.enrollment(m=m), h.header(m)


def _member_dates() -> tuple[Enrollment, TransactionHeader]:
    """DTP*336 (subscribers' hire date), DTP*356 (eligibility begin), DTP*357 once all coverage ends."""
    m = h.validated(allowlist=(*h.mapping().allowlist, "hire_date"),
                    member_dates=("hire", "eligibility_begin", "eligibility_end"))
    frame = h.family_census()
    # The single employee's medical ends too, so every coverage of that member has ended: DTP*357.
    frame.loc[(frame["member_id"] == "E2002") & (frame["plan_code"] == "MED-HDHP"), "coverage_end"] = "2026-11-30"
    return h.enrollment(frame, m), h.header(m)


def _extended_charset() -> tuple[Enrollment, TransactionHeader]:
    """Names as the census spells them (extended set), accents transliterated, others replaced, cut."""
    m = h.validated(charset="extended", name_case="as_is", last_name_max_length=12, first_name_max_length=10,
                    member_references=MemberReferences(department=True),
                    allowlist=(*h.mapping().allowlist, "department"))
    rows = h.family_rows()
    for r in rows:
        if r["member_id"] == "E1001-03":
            r.update(first_name="Teo_[2]", last_name="Rivera-Sánchez~Mäkinen", address1="5 Oak #4 @rear|x")
        if r["member_id"] == "E1001":
            r.update(department="R&D (east) 50%")
    return h.enrollment(h.census(rows), m), h.header(m)


def _split_transaction_sets() -> tuple[Enrollment, TransactionHeader]:
    """At most 4 members per ST/SE: the family of four alone, then the two single employees."""
    m = h.validated(max_members_per_transaction=4)
    rows = h.family_rows()
    rows += [{**r, "member_id": "E3003", "subscriber_id": "E3003", "first_name": "Kim", "ssn": "900135555"}
             for r in rows if r["member_id"] == "E2002"]
    return h.enrollment(h.census(rows), m), h.header(m)


#: A carrier that takes every relationship the census knows, with the TR3's INS02 codes.
EXTENDED_RELATIONSHIPS = {"EE": "18", "SP": "01", "CH": "19", "DP": "53", "SC": "17", "FC": "10", "AC": "09",
                          "WD": "15", "SD": "23", "HD": "19", "XS": "25", "GC": "05", "CD": "38", "OR": "G9"}


def extended_family_rows() -> list[dict[str, str]]:
    """The single employee's household: a domestic partner, a stepchild, a foster child, a ward, a
    sponsored dependent and a handicapped adult dependent, each on the employee's medical plan."""
    rows = h.family_rows()
    solo = next(r for r in rows if r["member_id"] == "E2002" and r["plan_code"] == "MED-HDHP")
    for k, (rel, first, dob, gender) in enumerate((
            ("DP", "Jordan", "1989-05-05", "U"), ("SC", "Riley", "2011-02-03", "F"),
            ("FC", "Casey", "2015-08-19", "M"), ("WD", "Avery", "2009-12-24", "F"),
            ("SD", "Morgan", "2003-04-30", "M"), ("HD", "Quinn", "1996-10-10", "F")), start=1):
        rows.append({**solo, "member_id": f"E2002-{k:02d}", "relationship": rel, "first_name": first,
                     "dob": dob, "gender": gender, "ssn": "", "hire_date": "", "employment_status": "",
                     "coverage_level": "FAM"})
    return rows


def _extended_relationships() -> tuple[Enrollment, TransactionHeader]:
    """INS02 53 (life partner), 17, 10, 15, 23 and 19 (a handicapped dependent is a child to the TR3)."""
    m = h.validated(relationship_codes=EXTENDED_RELATIONSHIPS)
    return h.enrollment(h.census(extended_family_rows()), m), h.header(m)


def _member_status() -> tuple[Enrollment, TransactionHeader]:
    """INS05, INS08 (every TR3 code), INS09, INS10, INS11/12 and DTP*337: the terminated employee's
    employment end, an adult child at school, a handicapped child, a spouse's date of death."""
    m = h.status_mapping(benefit_status=True, employment_codes="all", student=True, handicap=True, death=True,
                       employment_end=True)
    rows = h.family_rows()
    for r in rows:
        if r["member_id"] == "E1001":
            r.update(employment_status="L1", benefit_status="A")
        if r["member_id"] == "E1001-01":
            r.update(death_date="2026-11-02", benefit_status="S")
        if r["member_id"] == "E1001-02":
            r.update(student_status="F", handicap="N")
        if r["member_id"] == "E1001-03":
            r.update(student_status="n", handicap="Y")
        if r["member_id"] == "E2002":
            r.update(employment_end_date="2026-10-31", benefit_status="t")
    return h.enrollment(h.census(rows), m), h.header(m)


def _retiree_with_medicare() -> tuple[Enrollment, TransactionHeader]:
    """A retiree (INS08 RT) on Medicare parts A and B by age (INS06 C:0) and a spouse on part A by
    disability (A:1); the other family without Medicare sends no INS06."""
    m = h.status_mapping(medicare=True, employment_end=True)
    rows = h.family_rows()
    for r in rows:
        if r["member_id"] == "E2002":
            r.update(employment_status="RT", medicare_plan="C", medicare_reason="0",
                     employment_end_date="2025-12-31", dob="1958-02-11")
        if r["member_id"] == "E1001-01":
            r.update(medicare_plan="a", medicare_reason="1")
    return h.enrollment(h.census(rows), m), h.header(m)


def _file_header() -> tuple[Enrollment, TransactionHeader]:
    """DTP*007 (the run's day), QTY*TO/DT/ET per transaction set, Loop 1000C TPA and broker; split into
    sets of at most 4 members so each set carries its own totals."""
    m = h.validated(max_members_per_transaction=4, file_header=FileHeader(
        file_effective_date=True, control_totals=("TO", "DT", "ET"),
        parties=(BrokerParty(role="TV", name="Harbor Benefits TPA", id_qualifier="FI", id="990000123"),
                 BrokerParty(role="BO", name="Keystone Brokerage", id_qualifier="94", id="KB-1138"))))
    rows = h.family_rows()
    rows += [{**r, "member_id": "E3003", "subscriber_id": "E3003", "first_name": "Kim", "ssn": "900135555"}
             for r in rows if r["member_id"] == "E2002"]
    return h.enrollment(h.census(rows), m), h.header(m)


SCENARIOS: dict[str, Callable[[], tuple[Enrollment, TransactionHeader]]] = {
    "full-file-family.834": _full_family,
    "full-file-minimum-necessary.834": _minimum_necessary,
    "full-file-terminated-coverage.834": _terminate_subscriber,
    "full-file-member-references.834": _member_references,
    "full-file-member-dates.834": _member_dates,
    "full-file-extended-charset.834": _extended_charset,
    "full-file-split-transaction-sets.834": _split_transaction_sets,
    "full-file-extended-relationships.834": _extended_relationships,
    "full-file-member-status.834": _member_status,
    "full-file-retiree-with-medicare.834": _retiree_with_medicare,
    "full-file-header-totals-and-parties.834": _file_header,
}
#: Optional columns each scenario must carry through the file and back.
_OPTIONAL = ("group_policy_number", "reporting_category", "department", "hire_date", "eligibility_begin",
             "eligibility_end", "coverage_policy_number", *(c for c in dict.fromkeys(
                 f for need in MEMBER_STATUS_SOURCES.values() for f in need)
                 if c not in ("employment_status", "event_reason")))


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_golden_file(name: str, tmp_path: Path) -> None:
    enrollment, header = SCENARIOS[name]()
    data = render_834_bytes(enrollment, header, h.CONTROL)
    assert data == render_834_naive(enrollment, header, h.CONTROL)
    path = h.FIXTURES / name
    h.write_golden_if_asked(path, data)
    assert path.exists(), f"missing golden file {name}; see this module's docstring to create it"
    assert data == path.read_bytes()

    report = check_834(data)
    assert report.ok, report.problems
    out = tmp_path / name
    out.write_bytes(data)
    verdict = validate_with_pyx12(out)
    assert verdict.ok, verdict.errors
    assert verdict.segments == report.segment_count
    back = read_834(data)
    table = enrollment.table
    assert back["member_id"].nunique() == enrollment.member_count == report.member_count
    expected = table.reindex(columns=["member_id", "last_name", "first_name", "dob", "gender", "hd03",
                                      "coverage_start", "coverage_end", *_OPTIONAL], fill_value="")
    if "benefit_status" not in table.columns:
        expected["benefit_status"] = "A"  # INS05 is required: active unless the view says otherwise
    pd.testing.assert_frame_equal(back[expected.columns].reset_index(drop=True),
                                  expected.reset_index(drop=True).astype(object), check_dtype=False)


def test_golden_files_are_never_regenerated_in_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the flag set under CI the golden tests fail rather than rewrite (and so trivially match) the files."""
    path = tmp_path / "golden.834"
    path.write_bytes(b"before")
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv(h.REGENERATE_ENV, "1")
    with pytest.raises(pytest.fail.Exception):
        h.write_golden_if_asked(path, b"after")
    assert path.read_bytes() == b"before"
    monkeypatch.delenv(h.REGENERATE_ENV)
    h.write_golden_if_asked(path, b"after")  # CI without the flag: compare only
    assert path.read_bytes() == b"before"
