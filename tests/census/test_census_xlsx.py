"""XLSX censuses written by a real library (openpyxl): named or first visible sheet, cached values only,
hidden sheets ignored, formulas without values, error cells, encrypted and truncated workbooks refused."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

openpyxl = pytest.importorskip("openpyxl")

from carrierfeeds.census.generate import generate_census  # noqa: E402
from carrierfeeds.census.readers import read_census  # noqa: E402
from carrierfeeds.census.sources import fetch_census  # noqa: E402
from carrierfeeds.config import CensusSchema, LocalSource, load_schema  # noqa: E402
from carrierfeeds.errors import DataError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
XLSX = load_schema(ROOT / "schemas" / "census-v1.yaml").model_copy(update={"format": "xlsx"})
DAY = date(2026, 11, 20)
CANARY = "Quillonius"


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    frame = generate_census(7, 9, as_of=DAY)
    frame.loc[:, "first_name"] = CANARY
    return frame


def _workbook(sample: pd.DataFrame, *, title: str = "Census", hidden_first: bool = False,
              edit: Any = None) -> Any:
    """A workbook as HR systems write them: dates as real date cells, ids and zips as numbers where they can be."""
    wb = openpyxl.Workbook()
    ws = wb.active
    if hidden_first:
        ws.title = "Old export"
        ws.append(["member_id"])
        ws.append(["should never be read"])
        ws.sheet_state = "hidden"
        ws = wb.create_sheet(title)
    else:
        ws.title = title
    columns = [c for c in sample.columns if c != "row_number"]
    ws.append(columns)
    for _, row in sample.iterrows():
        cells: list[Any] = []
        for column in columns:
            value = row[column]
            if column in ("dob", "coverage_start") and value:
                cells.append(date.fromisoformat(value))
            elif column == "hire_date" and value:
                cells.append(datetime.fromisoformat(value))
            elif column == "zip" and value.isdigit() and not value.startswith("0"):
                cells.append(int(value))
            else:
                cells.append(value or None)
        ws.append(cells)
    wb.create_sheet("Notes").append(["free text the reader must ignore"])
    if edit is not None:
        edit(wb, ws, columns)
    return wb


def _save(wb: Any, path: Path) -> Path:
    wb.save(path)
    return path


def _error(path: Path, schema: CensusSchema = XLSX) -> DataError:
    with pytest.raises(DataError) as info:
        read_census(path, schema)
    err = info.value
    assert err.file == path.name and path.name in str(err)
    assert CANARY not in str(err) and CANARY not in json.dumps(err.as_dict(), default=str)
    return err


def test_reads_the_first_visible_sheet_with_dates_and_numbers_as_text(tmp_path: Path,
                                                                       sample: pd.DataFrame) -> None:
    path = _save(_workbook(sample, hidden_first=True), tmp_path / "census.xlsx")
    got = read_census(path, XLSX)
    for column in ("member_id", "first_name", "dob", "coverage_start", "hire_date", "zip", "coverage_end"):
        assert got[column].tolist() == sample[column].tolist(), column
    assert got["row_number"].tolist() == list(range(2, len(sample) + 2))
    assert (got.drop(columns="row_number").dtypes == "str").all()


def test_a_named_sheet_and_the_schema_date_format(tmp_path: Path, sample: pd.DataFrame) -> None:
    path = _save(_workbook(sample, title="Eligibility"), tmp_path / "census.xlsx")
    schema = XLSX.model_copy(update={"sheet": "Eligibility", "date_format": "%m/%d/%Y"})
    got = read_census(path, schema)
    assert got["dob"].tolist() == sample["dob"].tolist()
    err = _error(path, XLSX.model_copy(update={"sheet": "Census 2026"}))
    assert err.rule == "no_sheet" and "Eligibility" in str(err)


def test_a_hidden_sheet_is_never_read_even_by_name(tmp_path: Path, sample: pd.DataFrame) -> None:
    path = _save(_workbook(sample, hidden_first=True), tmp_path / "census.xlsx")
    assert _error(path, XLSX.model_copy(update={"sheet": "Old export"})).rule == "hidden_sheet"


def test_a_formula_without_a_saved_value_names_row_and_column(tmp_path: Path, sample: pd.DataFrame) -> None:
    def edit(wb: Any, ws: Any, columns: list[str]) -> None:
        ws.cell(row=4, column=columns.index("plan_code") + 1, value='=CONCAT("MED","-PPO")')

    path = _save(_workbook(sample, edit=edit), tmp_path / "census.xlsx")
    err = _error(path)
    assert (err.rule, err.row, err.column) == ("formula_cell", 4, "plan_code")


def test_an_error_cell_names_row_and_column(tmp_path: Path, sample: pd.DataFrame) -> None:
    def edit(wb: Any, ws: Any, columns: list[str]) -> None:
        ws.cell(row=3, column=columns.index("ssn") + 1, value="#N/A")

    path = _save(_workbook(sample, edit=edit), tmp_path / "census.xlsx")
    err = _error(path)
    assert (err.rule, err.row, err.column) == ("error_cell", 3, "ssn")


def test_formula_looking_text_is_refused(tmp_path: Path, sample: pd.DataFrame) -> None:
    def edit(wb: Any, ws: Any, columns: list[str]) -> None:
        cell = ws.cell(row=6, column=columns.index("address1") + 1, value="@SUM(1+1)*cmd")
        assert cell.data_type == "s"

    path = _save(_workbook(sample, edit=edit), tmp_path / "census.xlsx")
    err = _error(path)
    assert (err.rule, err.row, err.column) == ("formula_like_cell", 6, "address1")


def test_structure_problems(tmp_path: Path, sample: pd.DataFrame) -> None:
    def blank_row(wb: Any, ws: Any, columns: list[str]) -> None:
        ws.insert_rows(4)

    err = _error(_save(_workbook(sample, edit=blank_row), tmp_path / "b.xlsx"))
    assert (err.rule, err.row) == ("blank_line", 4)

    def stray_cell(wb: Any, ws: Any, columns: list[str]) -> None:
        ws.cell(row=5, column=len(columns) + 2, value="x")

    err = _error(_save(_workbook(sample, edit=stray_cell), tmp_path / "s.xlsx"))
    assert (err.rule, err.row) == ("field_count", 5)

    def dup_header(wb: Any, ws: Any, columns: list[str]) -> None:
        ws.cell(row=1, column=columns.index("city") + 1, value="zip")

    err = _error(_save(_workbook(sample, edit=dup_header), tmp_path / "d.xlsx"))
    assert (err.rule, err.column) == ("duplicate_columns", "zip")

    err = _error(_save(_workbook(sample.drop(columns=["dob"])), tmp_path / "m.xlsx"))
    assert err.rule == "required_columns" and err.details["missing"] == ["dob"]

    empty = openpyxl.Workbook()
    assert _error(_save(empty, tmp_path / "e.xlsx")).rule == "empty_file"
    header_only = _workbook(sample.iloc[:0])
    assert _error(_save(header_only, tmp_path / "h.xlsx")).rule == "no_data_rows"


def test_trailing_blank_rows_and_unknown_columns_are_fine(tmp_path: Path, sample: pd.DataFrame) -> None:
    def edit(wb: Any, ws: Any, columns: list[str]) -> None:
        ws.cell(row=1, column=len(columns) + 1, value="Notes")
        ws.cell(row=2, column=len(columns) + 1, value=CANARY)
        ws.cell(row=len(sample) + 20, column=1, value=None).number_format = "0"  # formatted, empty

    got = read_census(_save(_workbook(sample, edit=edit), tmp_path / "c.xlsx"), XLSX)
    assert len(got) == len(sample) and "Notes" not in got.columns


def test_encrypted_truncated_and_non_workbooks_are_refused_clearly(tmp_path: Path, sample: pd.DataFrame) -> None:
    good = _save(_workbook(sample), tmp_path / "good.xlsx").read_bytes()

    encrypted = tmp_path / "locked.xlsx"
    # What Excel writes for a password-protected workbook: an OLE compound file around the encrypted package.
    encrypted.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504 + b"EncryptedPackage" * 64)
    err = _error(encrypted)
    assert err.rule == "encrypted_workbook" and "password" in str(err)

    for cut in (len(good) // 2, len(good) - 30):
        truncated = tmp_path / f"cut{cut}.xlsx"
        truncated.write_bytes(good[:cut])
        assert _error(truncated).rule == "bad_xlsx"

    csv_named_xlsx = tmp_path / "export.xlsx"
    csv_named_xlsx.write_text("member_id\n1\n")
    assert _error(csv_named_xlsx).rule == "not_xlsx"

    assert _error(tmp_path / "good.xlsx", XLSX.model_copy(update={"max_bytes": 1000})).rule == "too_large"


def test_xlsx_through_a_local_source_is_not_mistaken_for_a_zip(tmp_path: Path, sample: pd.DataFrame) -> None:
    inbound = tmp_path / "data" / "in"
    inbound.mkdir(parents=True)
    _save(_workbook(sample), inbound / "census.xlsx")
    pick = fetch_census(LocalSource(path="in", pattern="*.xlsx"), feed_id="acme-x", schema=XLSX,
                        data_dir=tmp_path / "data", keys_dir=tmp_path / "keys", work_dir=tmp_path / "w")
    staged = tmp_path / "census.csv"  # the pipeline stages every census under this name
    staged.write_bytes(pick.path.read_bytes())
    got = read_census(staged, XLSX, display_name=pick.name)
    assert got["member_id"].tolist() == sample["member_id"].tolist()


def test_schema_config() -> None:
    with pytest.raises(ValueError, match="sheet applies to format xlsx"):
        CensusSchema(schema_id="x", suite="s.json", sheet="Census")
    assert CensusSchema(schema_id="x", suite="s.json", format="xlsx", sheet="Census").sheet == "Census"
