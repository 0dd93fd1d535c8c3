"""Primary care provider: Loop 2310 (LX, NM1*P3 with the NPI and NM110 existing patient 25 / not 26 /
unknown 72) in the Loop 2300 of the HMO/DHMO plans the mapping names. Golden 834s named by scenario, each
passing the structural check and pyx12, compared byte for byte and read back.

Regenerate after an intended change (then review the diff like code):

    CARRIERFEEDS_REGENERATE_GOLDEN=1 .venv/bin/pytest tests/x12/test_x12_primary_care.py
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pandas as pd
import pydantic
import pytest
import x12_helpers as h

from carrierfeeds.census.generate import generate_census
from carrierfeeds.changes import diff_against_snapshot
from carrierfeeds.config import CarrierMapping, PlanCode
from carrierfeeds.config.mapping import PrimaryCareProvider
from carrierfeeds.enrollment import Enrollment, _npi_ok
from carrierfeeds.errors import DataError
from carrierfeeds.x12.envelope import TransactionHeader
from carrierfeeds.x12.read import read_834

_NPI_A, _NPI_B = "1234567893", "1245319599"


def pcp_mapping() -> CarrierMapping:
    """MED-PPO sent as an HMO (HD03 HMO) carrying the PCP; dental without one."""
    base = h.mapping()
    plans = {**base.plans, "MED-PPO": PlanCode(insurance_line="HMO", description="HMO GOLD")}
    return h.validated(plans=plans, allowlist=(*base.allowlist, "pcp_npi", "pcp_existing_patient"),
                       primary_care_provider=PrimaryCareProvider(plans=("MED-PPO",)))


def pcp_rows() -> list[dict[str, str]]:
    """The employee an existing patient, the spouse a new one, a child with the flag unknown, the other
    child without a PCP."""
    rows = h.family_rows()
    values = {"E1001": dict(pcp_npi=_NPI_A, pcp_existing_patient="Y"),
              "E1001-01": dict(pcp_npi=_NPI_B, pcp_existing_patient="n"),
              "E1001-02": dict(pcp_npi="1234-567-893")}
    for r in rows:
        r.update(values.get(r["member_id"], {}))
    return rows


def _enrollment(rows: list[dict[str, str]]) -> Enrollment:
    return h.enrollment(h.census(rows), pcp_mapping())


def full_file_primary_care_provider() -> tuple[Enrollment, TransactionHeader]:
    return _enrollment(pcp_rows()), h.header(pcp_mapping())


def change_primary_care_provider() -> tuple[Enrollment, TransactionHeader]:
    """The spouse picks another PCP: INS*001 with HD*001 on the HMO line, the new Loop 2310."""
    rows = pcp_rows()
    after = [{**r, "pcp_npi": _NPI_A} if r["member_id"] == "E1001-01" else dict(r) for r in rows]
    snapshot = diff_against_snapshot(_enrollment(rows), None, as_of=h.AS_OF).snapshot
    change = diff_against_snapshot(_enrollment(after), snapshot, as_of=h.AS_OF)
    return change.enrollment, dataclasses.replace(h.header(pcp_mapping()), action="2")


SCENARIOS: dict[str, Callable[[], tuple[Enrollment, TransactionHeader]]] = {
    f"{fn.__name__.replace('_', '-')}.834": fn for fn in (full_file_primary_care_provider,
                                                          change_primary_care_provider)
}
_READ = ["member_id", "ins03", "hd03", "pcp_npi", "pcp_relationship"]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_primary_care_golden_file(name: str, tmp_path: Path) -> None:
    enrollment, header = SCENARIOS[name]()
    data = h.golden_834(name, enrollment, header, tmp_path)
    back = read_834(data)
    expected = enrollment.table.reindex(columns=_READ, fill_value="").astype(object).reset_index(drop=True)
    pd.testing.assert_frame_equal(back[_READ].reset_index(drop=True), expected, check_dtype=False)


def test_pcp_only_on_the_plans_named() -> None:
    table = _enrollment(pcp_rows()).table
    got = table[["member_id", "hd03", "pcp_npi", "pcp_relationship"]].values.tolist()
    assert ["E1001", "HMO", _NPI_A, "25"] in got and ["E1001-01", "HMO", _NPI_B, "26"] in got
    assert ["E1001-02", "HMO", _NPI_A, "72"] in got  # hyphens dropped; no flag: unknown
    assert set(table.loc[table["hd03"] != "HMO", "pcp_npi"]) == {""}
    assert set(table.loc[table["member_id"] == "E1001-03", "pcp_npi"]) == {""}


def test_change_is_hd_001_on_the_hmo_line() -> None:
    enrollment, _ = change_primary_care_provider()
    assert enrollment.table[["member_id", "ins03", "hd01", "hd03", "pcp_npi"]].values.tolist() == [
        ["E1001-01", "001", "001", "HMO", _NPI_A]]


@pytest.mark.parametrize(("column", "value", "rule"), [
    ("pcp_npi", "1234567890", "npi"), ("pcp_npi", "12345", "npi"), ("pcp_existing_patient", "maybe",
                                                                      "pcp_existing_patient")])
def test_bad_pcp_values_are_refused_by_row(column: str, value: str, rule: str) -> None:
    rows = [{**r, column: value} if r["member_id"] == "E1001" else r for r in pcp_rows()]
    with pytest.raises(DataError) as caught:
        _enrollment(rows)
    assert caught.value.rule == rule
    assert value not in str(caught.value)


def test_mapping_refuses_a_pcp_it_cannot_send() -> None:
    base = h.mapping()
    with pytest.raises(pydantic.ValidationError, match="allowlist"):
        h.validated(primary_care_provider=PrimaryCareProvider(plans=("MED-PPO",)))
    with pytest.raises(pydantic.ValidationError, match="not among"):
        h.validated(allowlist=(*base.allowlist, "pcp_npi", "pcp_existing_patient"),
                    primary_care_provider=PrimaryCareProvider(plans=("HMO-X",)))


def test_generated_npis_carry_a_valid_check_digit() -> None:
    frame = generate_census(200, 11, as_of=date(2026, 11, 20))
    npis = frame.loc[frame["pcp_npi"] != "", "pcp_npi"].unique()
    assert len(npis) > 50 and all(_npi_ok(n) for n in npis)
    assert set(frame["pcp_existing_patient"]) <= {"Y", "N", ""}
