"""A formula hidden behind Unicode whitespace (which the reader strips) is refused like any other."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from carrierfeeds.census.generate import generate_census, write_census_csv
from carrierfeeds.census.readers import read_census
from carrierfeeds.config import load_schema
from carrierfeeds.errors import DataError

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = load_schema(ROOT / "schemas" / "census-v1.yaml")


@pytest.mark.parametrize("space", ["\u2003", "\u3000", "\u00a0", "\t", " "])
def test_a_formula_behind_whitespace_is_refused_by_row_and_column(tmp_path: Path, space: str) -> None:
    frame = generate_census(20, 1, as_of=date(2026, 11, 20))
    frame.loc[3, "last_name"] = f"{space}=HYPERLINK(1)"
    path = tmp_path / "census.csv"
    write_census_csv(frame, path)
    with pytest.raises(DataError) as caught:
        read_census(path, SCHEMA)
    assert caught.value.rule == "formula_like_cell"
    assert caught.value.row == 5 and caught.value.column == SCHEMA.header_for("last_name")
    assert "HYPERLINK" not in str(caught.value)


@pytest.mark.parametrize("cell", ["-\u0661\u0662\u0663", "+\uff15\uff15\uff15 123 4567"])
def test_a_sign_before_non_ascii_digits_is_not_a_number(tmp_path: Path, cell: str) -> None:
    # only ASCII digits make a signed cell "plainly a number"; re's \d would take Arabic-Indic or
    # full-width digits too, and let a leading sign through
    frame = generate_census(20, 1, as_of=date(2026, 11, 20))
    frame.loc[3, "department"] = cell
    path = tmp_path / "census.csv"
    write_census_csv(frame, path)
    with pytest.raises(DataError) as caught:
        read_census(path, SCHEMA)
    assert caught.value.rule == "formula_like_cell" and caught.value.row == 5
