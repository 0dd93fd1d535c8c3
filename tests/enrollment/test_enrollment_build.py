"""build_enrollment: authorisation, minimum necessary, 834 codes, ordering and PHI-free errors."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from carrierfeeds.census.columns import CANONICAL_COLUMNS
from carrierfeeds.config import CarrierMapping, Feed
from carrierfeeds.enrollment import assert_allowlisted, build_enrollment
from carrierfeeds.errors import DataError, FieldNotAllowed, NotAuthorized

ROOT = Path(__file__).resolve().parents[2]
AS_OF = date(2026, 11, 20)


def _row(**values: str) -> dict[str, str]:
    out = dict.fromkeys(CANONICAL_COLUMNS, "")
    out.update(coverage_start="2025-01-01", dob="1980-01-01", gender="F", **values)
    return out


def _census(rows: list[dict[str, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(CANONICAL_COLUMNS))
    frame["row_number"] = range(2, len(frame) + 2)
    return frame


def _family() -> pd.DataFrame:
    """Rows deliberately out of order: children before parents, families interleaved."""
    def person(mid: str, sid: str, rel: str, first: str, plan: str = "MED-PPO",
               **extra: str) -> dict[str, str]:
        return _row(member_id=mid, subscriber_id=sid, relationship=rel, last_name="Kowalski",
                    first_name=first, plan_code=plan, coverage_level="FAM", **extra)

    return _census([
        person("A1-02", "A1", "CH", "Ola"),
        person("B7", "B7", "EE", "Bo", employment_status="pt", ssn="900-11-2222"),
        person("A1", "A1", "EE", "Jan", employment_status="FT", ssn="900112222", address1="1 Rue  Zoë",
               city="Łódź", state="il", zip="62701"),
        person("A1-01", "A1", "SP", "Eva"),
        person("A1-03", "A1", "CH", "Iga"),
        person("A1", "A1", "EE", "Jan", plan="DEN-STD", employment_status="FT", ssn="900112222",
               coverage_end="2026-06-30"),
        person("A1-02", "A1", "CH", "Ola", plan="DEN-STD"),
        person("A1", "A1", "EE", "Jan", plan="VIS-STD"),
        person("C9", "C9", "EE", "Cy", plan="LIFE-1"),
    ])


def test_refuses_outside_the_authorisation_window(feed: Feed, mapping: CarrierMapping) -> None:
    with pytest.raises(NotAuthorized) as info:
        build_enrollment(_family(), feed, mapping, as_of=date(2023, 12, 31))
    message = str(info.value)
    assert feed.feed_id in message and "2023-12-31" in message and "2024-01-01" in message
    assert "Kowalski" not in message and "A1" not in message


def test_maps_codes_and_orders_families(feed: Feed, mapping: CarrierMapping) -> None:
    result = build_enrollment(_family(), feed, mapping, as_of=AS_OF)
    table = result.table
    assert result.excluded == {"plan_not_authorized": 2}
    assert (result.member_count, result.subscriber_count, result.coverage_count) == (5, 2, 7)
    assert table["member_id"].tolist() == ["A1", "A1", "A1-01", "A1-02", "A1-02", "A1-03", "B7"]
    assert table["ins01"].tolist() == ["Y", "Y", "N", "N", "N", "N", "Y"]
    assert table["ins02"].tolist() == ["18", "18", "01", "19", "19", "19", "18"]
    assert set(table["ins03"]) == {"030"}
    assert table["employment_status"].tolist() == ["FT", "FT", "", "", "", "", "PT"]
    assert table["hd03"].tolist()[:2] == ["HLT", "DEN"]
    assert table["hd04"].tolist()[:2] == ["PPO GOLD", "DENTAL STANDARD"]
    assert set(table["hd05"]) == {"FAM"}
    assert table["coverage_start"].iloc[0] == "20250101"
    assert table["coverage_end"].tolist()[:2] == ["", "20260630"]
    assert table["ssn"].tolist()[-1] == "900112222"
    first = table.iloc[0]
    assert (first["last_name"], first["address1"], first["city"], first["state"]) == (
        "KOWALSKI", "1 RUE ZOE", "LODZ", "IL")
    assert result.sanitized == {"address1": 1, "city": 1}
    assert table["row_number"].tolist()[0] == 4


def test_drops_fields_off_the_allowlist(feed: Feed, mapping: CarrierMapping) -> None:
    narrow = mapping.model_copy(update={"allowlist": (
        "member_id", "subscriber_id", "relationship", "last_name", "first_name", "plan_code",
        "coverage_level", "coverage_start")})
    table = build_enrollment(_family(), feed, narrow, as_of=AS_OF).table
    for dropped in ("ssn", "dob", "gender", "address1", "city", "zip", "employment_status",
                    "coverage_end", "hire_date", "middle_initial"):
        assert dropped not in table.columns
    flat = " ".join(table.astype(str).to_numpy().ravel())
    assert "900112222" not in flat and "RUE" not in flat


def test_assert_allowlisted(mapping: CarrierMapping) -> None:
    assert_allowlisted(["member_id", "ssn", "row_number"], mapping)
    with pytest.raises(FieldNotAllowed) as info:
        assert_allowlisted(["member_id", "phone", "department"], mapping)
    assert info.value.details["fields"] == ["department", "phone"]


#: (column, a bad value, the rule that must name it): shared with the Categorical-census tests.
BAD_VALUES = [
    ("dob", "03/09/1984", "iso_date"),
    ("coverage_start", "", "iso_date"),
    ("relationship", "XX", "relationship_code"),
    ("coverage_level", "ZZZ", "coverage_level"),
    ("last_name", "~*^:", "empty_after_sanitize"),
]


@pytest.mark.parametrize(("column", "value", "rule"), BAD_VALUES)
def test_bad_values_are_data_errors_by_row_never_by_value(feed: Feed, mapping: CarrierMapping, column: str,
                                                          value: str, rule: str) -> None:
    frame = _family()
    frame.loc[3, column] = value
    with pytest.raises(DataError) as info:
        build_enrollment(frame, feed, mapping, as_of=AS_OF)
    err = info.value
    assert (err.row, err.column, err.rule) == (5, column, rule)
    if value:
        assert value not in str(err) and value not in str(err.as_dict())


def test_odd_strings_do_not_crash(feed: Feed, mapping: CarrierMapping) -> None:
    frame = _family()
    frame.loc[0, "first_name"] = "O\u0301la\r\n\x00"
    frame.loc[0, "zip"] = "not a zip"
    frame.loc[0, "state"] = "Illinois"
    frame.loc[0, "gender"] = "female"
    frame.loc[0, "ssn"] = "12"
    table = build_enrollment(frame, feed, mapping, as_of=AS_OF).table
    child = table[table["member_id"] == "A1-02"].iloc[0]
    assert (child["first_name"], child["zip"], child["state"], child["gender"], child["ssn"]) == (
        "OLA", "", "", "U", "")


def test_empty_census(feed: Feed, mapping: CarrierMapping) -> None:
    result = build_enrollment(_census([]), feed, mapping, as_of=AS_OF)
    assert (result.member_count, result.coverage_count, len(result.table)) == (0, 0, 0)
