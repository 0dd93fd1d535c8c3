"""Member reporting categories: Loop 2700/2750 (LS, LX, N1*75, REF, DTP*007, LE) after a member's Loop 2300s,
from the census fields the mapping names. Golden 834s named by scenario, each passing the structural check
and pyx12, compared byte for byte.

Regenerate after an intended change (then review the diff like code):

    CARRIERFEEDS_REGENERATE_GOLDEN=1 .venv/bin/pytest tests/x12/test_x12_reporting_categories.py
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pydantic
import pytest
import x12_helpers as h

from carrierfeeds.changes import diff_against_snapshot
from carrierfeeds.config import CarrierMapping
from carrierfeeds.config.mapping import ReportingCategory
from carrierfeeds.enrollment import Enrollment
from carrierfeeds.x12.check import check_834, validate_with_pyx12
from carrierfeeds.x12.envelope import TransactionHeader
from carrierfeeds.x12.read import read_834, split_segments
from carrierfeeds.x12.render import render_834_bytes, render_834_naive


def category_mapping() -> CarrierMapping:
    """Department (with the hire date as its effective date) and employment status as categories."""
    return h.validated(allowlist=(*h.mapping().allowlist, "department", "hire_date"), reporting_categories=(
        ReportingCategory(name="DEPARTMENT", field="department", qualifier="ZZ", date_field="hire_date"),
        ReportingCategory(name="EMPLOYMENT CLASS", field="employment_status", qualifier="17")))


def _enrollment(rows: list[dict[str, str]]) -> Enrollment:
    return h.enrollment(h.census(rows), category_mapping())


def full_file_reporting_categories() -> tuple[Enrollment, TransactionHeader]:
    return _enrollment(h.family_rows()), h.header(category_mapping())


def change_reporting_category() -> tuple[Enrollment, TransactionHeader]:
    """The employee moves department: INS*001 (AI) with the new Loop 2700 and no Loop 2300."""
    rows = h.family_rows()
    after = [{**r, "department": "Plant 7"} if r["member_id"] == "E1001" else dict(r) for r in rows]
    snapshot = diff_against_snapshot(_enrollment(rows), None, as_of=h.AS_OF).snapshot
    change = diff_against_snapshot(_enrollment(after), snapshot, as_of=h.AS_OF)
    return change.enrollment, dataclasses.replace(h.header(category_mapping()), action="2")


SCENARIOS: dict[str, Callable[[], tuple[Enrollment, TransactionHeader]]] = {
    f"{fn.__name__.replace('_', '-')}.834": fn for fn in (full_file_reporting_categories,
                                                          change_reporting_category)
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_reporting_category_golden_file(name: str, tmp_path: Path) -> None:
    enrollment, header = SCENARIOS[name]()
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
    assert back["member_id"].nunique() == enrollment.member_count
    assert set(back["reporting_category"]) == {""}  # a 2750 REF*17 is not the Loop 2000 REF*17


def test_categories_follow_the_coverage_and_only_with_a_value() -> None:
    enrollment, header = full_file_reporting_categories()
    segments, _ = split_segments(render_834_bytes(enrollment, header, h.CONTROL))
    ids = [s[0] + ("*" + s[1] if s[0] in ("N1", "REF", "DTP", "HD") else "") for s in segments]
    first = ids.index("LS")
    assert ids[first - 2:first + 10] == ["HD*030", "DTP*348", "LS", "LX", "N1*75", "REF*ZZ", "DTP*007", "LX",
                                         "N1*75", "REF*17", "LE", "INS"]
    assert segments[first + 3] == ["REF", "ZZ", "PLANT 2"]
    # The spouse and children have no department or status: no Loop 2700; the single employee has
    # only a status (its LX is 1).
    assert ids.count("LS") == 2
    second = ids.index("LS", first + 1)
    assert segments[second + 1:second + 4] == [["LX", "1"], ["N1", "75", "EMPLOYMENT CLASS"], ["REF", "17", "TE"]]


def test_change_sends_the_member_alone() -> None:
    enrollment, _ = change_reporting_category()
    assert enrollment.table[["member_id", "ins03", "ins04", "hd03", "reporting_2750_1"]].values.tolist() == [
        ["E1001", "001", "AI", "", "PLANT 7"]]


def test_mapping_refuses_a_category_off_the_allowlist() -> None:
    with pytest.raises(pydantic.ValidationError, match="allowlist"):
        h.validated(reporting_categories=(ReportingCategory(name="DEPT", field="department"),))
    with pytest.raises(pydantic.ValidationError, match="did you mean"):
        ReportingCategory(name="DEPT", field="departmnet")
