"""The schema's salary_frequency_codes: employer pay-frequency codes onto canonical frequencies, any case."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pydantic
import pytest

from carrierfeeds.census.generate import generate_census, write_census_csv
from carrierfeeds.census.readers import read_census
from carrierfeeds.config import load_schema

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = load_schema(ROOT / "schemas" / "census-v1.yaml")


def test_employer_codes_map_in_any_case_and_others_stay(tmp_path: Path) -> None:
    frame = generate_census(4, 7, as_of=date(2026, 11, 20))
    codes = ["bw", "BW", "Sal", "monthly"]
    frame["salary_frequency"] = [codes[i % 4] for i in range(len(frame))]
    path = tmp_path / "census.csv"
    write_census_csv(frame, path)
    schema = SCHEMA.model_copy(update={"salary_frequency_codes": SCHEMA.model_validate(
        {**SCHEMA.model_dump(), "salary_frequency_codes": {"bw": "biweekly", "SAL": "Annually"}},
    ).salary_frequency_codes})
    read = read_census(path, schema)
    expected = {"bw": "BIWEEKLY", "BW": "BIWEEKLY", "Sal": "ANNUALLY", "monthly": "monthly"}
    assert read["salary_frequency"].tolist() == [expected[c] for c in frame["salary_frequency"]]


@pytest.mark.parametrize("codes", [{"X": "FORTNIGHTLY"}, {"bw": "BIWEEKLY", "BW": "BIWEEKLY"}])
def test_unknown_frequency_or_case_twins_are_refused(codes: dict[str, str]) -> None:
    with pytest.raises(pydantic.ValidationError):
        SCHEMA.model_validate({**SCHEMA.model_dump(), "salary_frequency_codes": codes})
