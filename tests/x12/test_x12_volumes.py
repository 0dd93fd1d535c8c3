"""Life, AD&D, STD and LTD volumes: salary (2100A ICM), benefit amount and premium (2300 AMT*FK / AMT*P3),
and the evidence-of-insurability hold. Golden 834s named by scenario, each passing the structural check
and pyx12, compared byte for byte and read back to the same values.

The goldens carry STD and LTD lines: the 005010X220A1 HD03 code list (pyx12's map) has STD and LTD but
no LIF or ADD, so a life or AD&D line renders and passes the structural check, yet pyx12 refuses it
(see test_life_and_add_lines_are_outside_the_tr3_code_list).

Regenerate after an intended change (then review the diff like code):

    CARRIERFEEDS_REGENERATE_GOLDEN=1 .venv/bin/pytest tests/x12/test_x12_volumes.py
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pydantic
import pytest
import x12_helpers as h

from carrierfeeds.changes import ChangeSet, diff_against_snapshot
from carrierfeeds.config import CarrierMapping, Feed, PlanCode
from carrierfeeds.config.mapping import Conformance, Volumes
from carrierfeeds.enrollment import Enrollment, build_enrollment
from carrierfeeds.errors import DataError
from carrierfeeds.x12.check import check_834, validate_with_pyx12
from carrierfeeds.x12.envelope import TransactionHeader
from carrierfeeds.x12.read import read_834
from carrierfeeds.x12.render import render_834_bytes

_VOLUME_FIELDS = ("salary", "salary_frequency", "coverage_amount", "premium_amount", "eoi_pending")
_LINES = {"LIFE-BASIC": PlanCode(insurance_line="LIF", description="BASIC LIFE"),
          "ADD-BASIC": PlanCode(insurance_line="ADD", description="BASIC AD&D"),
          "STD-CORE": PlanCode(insurance_line="STD", description="SHORT TERM DISABILITY"),
          "LTD-CORE": PlanCode(insurance_line="LTD", description="LONG TERM DISABILITY")}


def volume_mapping(**volumes: bool) -> CarrierMapping:
    base = h.mapping()
    return h.validated(plans={**base.plans, **_LINES}, allowlist=(*base.allowlist, *_VOLUME_FIELDS),
                       volumes=Volumes(**(volumes or dict(salary=True, coverage_amount=True, premium=True,
                                                           eoi_hold=True))),
                       conformance=Conformance(hd03_beyond_tr3=("LIF", "ADD")))


def volume_feed() -> Feed:
    f = h.feed()
    auth = f.authorization.model_copy(update={"plans": (*f.authorization.plans, *_LINES)})
    return f.model_copy(update={"authorization": auth})


def volume_rows() -> list[dict[str, str]]:
    """The demo family, the employee with salary, STD and LTD (LTD waiting on EOI), the single employee
    with STD."""
    rows = h.family_rows()
    for r in rows:
        if r["member_id"] == "E1001":
            r.update(salary="78000.00", salary_frequency="ANNUALLY")
        if r["member_id"] == "E2002":
            r.update(salary="$52,000", salary_frequency="annually")
    ee = next(r for r in rows if r["member_id"] == "E1001")
    solo = next(r for r in rows if r["member_id"] == "E2002")
    for plan, amount, premium, eoi in (("STD-CORE", "1250", "8.75", ""), ("LTD-CORE", "5000", "14.20", "Y")):
        rows.append({**ee, "plan_code": plan, "coverage_level": "EMP", "coverage_amount": amount,
                     "premium_amount": premium, "eoi_pending": eoi})
    rows.append({**solo, "plan_code": "STD-CORE", "coverage_level": "EMP", "coverage_amount": "950",
                 "premium_amount": "$6.24", "coverage_start": "2024-01-01", "coverage_end": ""})
    return rows


def _edit(rows: list[dict[str, str]], when: Callable[[dict[str, str]], bool], **values: str
          ) -> list[dict[str, str]]:
    return [{**r, **values} if when(r) else dict(r) for r in rows]


def volume_enrollment(rows: list[dict[str, str]], m: CarrierMapping | None = None) -> Enrollment:
    return build_enrollment(h.census(rows), volume_feed(), m or volume_mapping(), as_of=h.AS_OF)


def _snapshot(rows: list[dict[str, str]]) -> pd.DataFrame:
    return diff_against_snapshot(volume_enrollment(rows), None, as_of=h.AS_OF).snapshot


def _diff(before: list[dict[str, str]], after: list[dict[str, str]]) -> ChangeSet:
    return diff_against_snapshot(volume_enrollment(after), _snapshot(before), as_of=h.AS_OF)


def _header() -> TransactionHeader:
    return h.header(volume_mapping())


def _changes_header() -> TransactionHeader:
    return dataclasses.replace(_header(), action="2")


def full_file_disability_volumes() -> tuple[Enrollment, TransactionHeader]:
    return volume_enrollment(volume_rows()), _header()


def _is_std(r: dict[str, str]) -> bool:
    return r["member_id"] == "E1001" and r["plan_code"] == "STD-CORE"


def change_disability_volume() -> tuple[Enrollment, TransactionHeader]:
    """A benefit amount (and its premium) goes up: INS*001 and HD*001 with the new AMT*FK / AMT*P3."""
    rows = volume_rows()
    return _diff(rows, _edit(rows, _is_std, coverage_amount="1500", premium_amount="10.50")).enrollment, \
        _changes_header()


def change_salary() -> tuple[Enrollment, TransactionHeader]:
    """A raise: INS*001 with the new ICM and no Loop 2300 (no coverage changed)."""
    rows = volume_rows()
    return _diff(rows, _edit(rows, lambda r: r["member_id"] == "E2002", salary="56000")).enrollment, \
        _changes_header()


def hold_volume_increase_pending_eoi() -> tuple[Enrollment, TransactionHeader]:
    """An increase waiting on EOI is held back (the carrier keeps the amount it holds) while a raise on
    the same member goes: INS*001 with the new ICM, no Loop 2300 for the held line."""
    rows = volume_rows()
    after = _edit(rows, _is_std, coverage_amount="2000", eoi_pending="Y")
    after = _edit(after, lambda r: r["member_id"] == "E1001", salary="81000.00")
    return _diff(rows, after).enrollment, _changes_header()


SCENARIOS: dict[str, Callable[[], tuple[Enrollment, TransactionHeader]]] = {
    f"{fn.__name__.replace('_', '-')}.834": fn for fn in (
        full_file_disability_volumes, change_disability_volume, change_salary, hold_volume_increase_pending_eoi)
}
_READ = ["member_id", "subscriber_id", "ins03", "ins04", "hd01", "hd03", "hd04", "coverage_start", "coverage_end",
         "icm01", "salary", "coverage_amount", "premium_amount"]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_volume_golden_file(name: str, tmp_path: Path) -> None:
    enrollment, header = SCENARIOS[name]()
    data = h.golden_834(name, enrollment, header, tmp_path)
    back = read_834(data)
    expected = enrollment.table.reindex(columns=_READ, fill_value="").astype(object).reset_index(drop=True)
    if "hd01" not in enrollment.table.columns:  # a full file: HD01 is INS03
        expected["hd01"], expected["ins04"] = expected["ins03"], "XN"
    expected.loc[expected["hd03"] == "", ["hd01", "coverage_start", "coverage_end", "coverage_amount",
                                          "premium_amount"]] = ""
    # ICM is a member's: read back onto every row of the member, as the view carries it.
    pd.testing.assert_frame_equal(back[_READ].reset_index(drop=True), expected, check_dtype=False)


def test_full_file_holds_the_line_waiting_on_eoi() -> None:
    enrollment, _ = full_file_disability_volumes()
    assert enrollment.excluded == {"plan_not_authorized": 4, "eoi_pending": 1}
    assert enrollment.held_lines == (("E1001", "E1001", "LTD"),)
    assert "LTD" not in set(enrollment.table["hd03"])
    ee = enrollment.table[enrollment.table["member_id"] == "E1001"]
    assert set(ee["icm01"]) == {"7"} and set(ee["salary"]) == {"78000.00"}
    solo = enrollment.table[enrollment.table["member_id"] == "E2002"]
    assert set(solo["salary"]) == {"52000"}  # "$" and "," dropped; frequency matched in any case
    assert set(solo.loc[solo["hd03"] == "STD", "premium_amount"]) == {"6.24"}


def test_volume_changes_are_001_with_the_right_codes() -> None:
    rows = volume_rows()
    raised = _diff(rows, _edit(rows, _is_std, coverage_amount="1500"))
    assert (raised.members_by_type, raised.coverages_by_type) == ({"001": 1}, {"001": 1})
    sent = raised.enrollment.table
    assert sent[["ins03", "ins04", "hd01", "hd03", "coverage_amount"]].values.tolist() == [
        ["001", "AI", "001", "STD", "1500"]]
    salary = _diff(rows, _edit(rows, lambda r: r["member_id"] == "E2002", salary="56000"))
    assert (salary.members_by_type, salary.coverages_by_type) == ({"001": 1}, {})


def test_the_held_line_keeps_what_the_carrier_holds_until_eoi_is_approved() -> None:
    rows = volume_rows()
    base = _snapshot(rows)
    pending = _edit(rows, _is_std, coverage_amount="2000", eoi_pending="Y")
    held = diff_against_snapshot(volume_enrollment(pending), base, as_of=h.AS_OF)
    assert (held.members_by_type, held.coverages_by_type) == ({}, {})  # nothing to send: never a term
    std = held.snapshot[(held.snapshot["member_id"] == "E1001") & (held.snapshot["hd03"] == "STD")]
    assert std["coverage_amount"].tolist() == ["1250"]
    approved = diff_against_snapshot(volume_enrollment(_edit(pending, _is_std, eoi_pending="N")),
                                     held.snapshot, as_of=h.AS_OF)
    assert approved.coverages_by_type == {"001": 1}
    assert approved.enrollment.table["coverage_amount"].tolist() == ["2000"]


def test_off_by_default_and_gated_by_the_allowlist() -> None:
    rows = volume_rows()
    plain = volume_mapping(salary=False)
    table = volume_enrollment(rows, plain).table
    assert not {"icm01", "salary", "coverage_amount", "premium_amount"} & set(table.columns)
    assert "LTD" in set(table["hd03"])  # no hold unless the mapping asks for it
    base = h.mapping()
    with pytest.raises(pydantic.ValidationError, match=r"volumes\.salary needs"):
        h.validated(plans={**base.plans, **_LINES}, volumes=Volumes(salary=True),
                    conformance=Conformance(hd03_beyond_tr3=("LIF", "ADD")))


@pytest.mark.parametrize(("column", "value", "rule"), [
    ("salary", "52k", "amount_format"), ("coverage_amount", "-100", "amount_format"),
    ("premium_amount", "1.234", "amount_format"), ("salary_frequency", "FORTNIGHTLY", "salary_frequency"),
])
def test_bad_volume_values_are_refused_by_row(column: str, value: str, rule: str) -> None:
    rows = _edit(volume_rows(), lambda r: r["member_id"] == "E2002", **{column: value})
    with pytest.raises(DataError) as caught:
        volume_enrollment(rows)
    assert caught.value.rule == rule
    assert value not in str(caught.value)


def test_life_and_add_lines_are_outside_the_tr3_code_list(tmp_path: Path) -> None:
    """LIF and ADD volumes render with their amounts and pass the structural check; pyx12 refuses HD03
    LIF/ADD (the 005010X220A1 list has neither); the gate waives that only for a mapping naming them in
    conformance.hd03_beyond_tr3 (test_hd03_beyond_tr3.py)."""
    rows = volume_rows()
    ee = next(r for r in rows if r["member_id"] == "E1001" and r["plan_code"] == "MED-PPO")
    rows += [{**ee, "plan_code": plan, "coverage_level": "EMP", "coverage_amount": "100000", "premium_amount": "2.10"}
             for plan in ("LIFE-BASIC", "ADD-BASIC")]
    enrollment = volume_enrollment(rows)
    data = render_834_bytes(enrollment, _header(), h.CONTROL)
    assert b"HD*030**LIF*BASIC LIFE*EMP~\nDTP*348*D8*20250101~\nAMT*FK*100000~\nAMT*P3*2.10~" in data
    assert check_834(data).ok
    out = tmp_path / "life.834"
    out.write_bytes(data)
    verdict = validate_with_pyx12(out)
    assert {(p.segment_id, p.element) for p in verdict.errors} == {("HD", "HD03")}
