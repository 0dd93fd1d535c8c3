"""Relationships beyond EE/SP/CH: the carrier's INS02 table, the employer's code tables in any case."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from tests.x12 import x12_helpers as h

from carrierfeeds.census.columns import RELATIONSHIP_CODES
from carrierfeeds.census.generate import generate_census, write_census_csv
from carrierfeeds.census.readers import read_census
from carrierfeeds.config import CensusSchema
from carrierfeeds.errors import DataError

EXTENDED = {"EE": "18", "SP": "01", "CH": "19", "DP": "53", "SC": "17", "FC": "10", "AC": "09", "WD": "15",
            "SD": "23", "HD": "19", "XS": "25", "GC": "05", "CD": "38", "OR": "G9"}


def _with_partner(rel: str = "DP") -> pd.DataFrame:
    rows = h.family_rows()
    solo = next(r for r in rows if r["member_id"] == "E2002" and r["plan_code"] == "MED-HDHP")
    rows.append({**solo, "member_id": "E2002-01", "relationship": rel, "first_name": "Jordan",
                 "ssn": "", "employment_status": "", "hire_date": ""})
    return h.census(rows)


def test_a_carrier_without_the_relationship_refuses_its_row() -> None:
    with pytest.raises(DataError) as info:
        h.enrollment(_with_partner(), h.mapping())
    err = info.value
    assert (err.rule, err.column, err.row) == ("relationship_code", "relationship", 16)
    assert "Jordan" not in str(err)


@pytest.mark.parametrize(("rel", "ins02"), sorted(EXTENDED.items()))
def test_each_relationship_goes_as_the_carriers_ins02(rel: str, ins02: str) -> None:
    view = h.enrollment(_with_partner(rel.lower()) if rel != "EE" else h.family_census(),
                        h.validated(relationship_codes=EXTENDED)).table
    if rel == "EE":
        assert set(view.loc[view["member_id"] == "E2002", ["ins01", "ins02"]].itertuples(index=False)) == {
            ("Y", "18")}
        return
    member = view[view["member_id"] == "E2002-01"]
    assert set(member["ins01"]) == {"N"} and set(member["ins02"]) == {ins02}
    family = view[view["subscriber_id"] == "E2002"]["member_id"].drop_duplicates().tolist()
    assert family == ["E2002", "E2002-01"]  # subscriber first


def test_a_partner_comes_before_the_children_like_a_spouse() -> None:
    rows = h.family_rows()
    rows = [{**r, "relationship": "DP"} if r["member_id"] == "E1001-01" else r for r in rows]
    rows = [r for r in rows if r["member_id"] != "E1001-01"] + [r for r in rows if r["member_id"] == "E1001-01"]
    view = h.enrollment(h.census(rows), h.validated(relationship_codes=EXTENDED)).table
    order = view[view["subscriber_id"] == "E1001"]["member_id"].drop_duplicates().tolist()
    assert order == ["E1001", "E1001-01", "E1001-02", "E1001-03"]


@pytest.mark.parametrize("codes", [{"EE": "19", "SP": "01"}, {"EE": "18", "SP": "18"}, {"EE": "18", "ZZ": "01"},
                                   {"SP": "01"}])
def test_a_relationship_table_that_breaks_the_subscriber_rule_is_refused(codes: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        h.validated(relationship_codes=codes)


def test_mapping_relationship_keys_match_any_case() -> None:
    m = h.validated(relationship_codes={"ee": "18", "Sp": "01", "ch": "19", "dp": "53"})
    assert set(m.relationship_codes) == {"EE", "SP", "CH", "DP"}


_SCHEMA = dict(schema_id="hr", suite="census-v1.suite.json")


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["Spouse", "SPOUSE", "spouse", "sPoUsE", " spouse "]))
def test_employer_code_tables_match_any_case(cell: str) -> None:
    schema = CensusSchema(**_SCHEMA, relationship_codes={"Employee": "EE", "Spouse": "SP", "Child": "CH"})
    from carrierfeeds.census.readers import _apply_codes

    got = _apply_codes(pd.Series([cell.strip(), "Employee", "CHILD", "other"], dtype="str"),
                       schema.relationship_codes, any_case=True)
    assert got.tolist() == ["SP", "EE", "CH", "other"]


def test_tier_and_status_code_tables_apply_when_read(tmp_path: Path) -> None:
    frame = generate_census(20, 3, as_of=date(2026, 11, 20))
    frame["coverage_level"] = frame["coverage_level"].map(
        {"EMP": "Employee Only", "ESP": "employee + spouse", "ECH": "EMPLOYEE + CHILDREN", "FAM": "Family"})
    frame["employment_status"] = frame["employment_status"].map(
        {"FT": "full time", "PT": "Part Time", "RT": "retired", "TE": "TERMINATED", "": ""})
    path = tmp_path / "census.csv"
    write_census_csv(frame, path)
    schema = CensusSchema(
        **_SCHEMA, coverage_level_codes={"employee only": "EMP", "Employee + Spouse": "ESP",
                                         "Employee + Children": "ECH", "FAMILY": "FAM"},
        employment_status_codes={"Full Time": "FT", "part time": "PT", "Retired": "RT", "terminated": "TE"})
    got = read_census(path, schema)
    original = generate_census(20, 3, as_of=date(2026, 11, 20))
    assert got["coverage_level"].tolist() == original["coverage_level"].tolist()
    assert got["employment_status"].fillna("").tolist() == original["employment_status"].fillna("").tolist()


@pytest.mark.parametrize("table", ["relationship_codes", "coverage_level_codes", "employment_status_codes"])
def test_a_code_table_whose_keys_differ_only_in_case_must_agree(table: str) -> None:
    codes = {"relationship_codes": {"Spouse": "SP", "SPOUSE": "CH"},
             "coverage_level_codes": {"Family": "FAM", "FAMILY": "EMP"},
             "employment_status_codes": {"Full": "FT", "full": "PT"}}[table]
    with pytest.raises(ValidationError, match="two codes"):
        CensusSchema(**_SCHEMA, **{table: codes})
    agreeing = {k: next(iter(codes.values())) for k in codes}
    CensusSchema(**_SCHEMA, **{table: agreeing})


def test_every_canonical_relationship_passes_validation_as_a_code() -> None:
    from carrierfeeds.config import Relationship

    assert set(RELATIONSHIP_CODES) == set(Relationship.__args__)  # type: ignore[attr-defined]
