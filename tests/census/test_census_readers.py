"""read_census: canonical text columns with employer row numbers; bad structure is a DataError by row."""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from carrierfeeds.census.generate import generate_census, write_census_csv
from carrierfeeds.census.readers import read_census
from carrierfeeds.config import CensusSchema, load_schema
from carrierfeeds.errors import DataError

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = load_schema(ROOT / "schemas" / "census-v1.yaml")
CANARY = "Quillonius"


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    frame = generate_census(6, 4, as_of=date(2026, 11, 20))
    frame.loc[:, "first_name"] = CANARY
    return frame


def _lines(tmp_path: Path, sample: pd.DataFrame) -> tuple[Path, list[str]]:
    path = tmp_path / "census_bad.csv"
    write_census_csv(sample, path)
    return path, path.read_text(encoding="utf-8").splitlines()


def _error(path: Path, schema: CensusSchema = SCHEMA) -> DataError:
    with pytest.raises(DataError) as info:
        read_census(path, schema)
    err = info.value
    assert path.name in str(err) and err.file == path.name
    assert CANARY not in str(err) and CANARY not in str(err.as_dict())
    return err


def test_reads_text_with_row_numbers(tmp_path: Path, sample: pd.DataFrame) -> None:
    path, _ = _lines(tmp_path, sample)
    frame = read_census(path, SCHEMA)
    assert frame["row_number"].tolist() == list(range(2, len(sample) + 2))
    assert (frame.drop(columns="row_number").dtypes == "str").all()


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"\n \n")
    assert _error(path).rule == "empty_file"


def test_header_only_is_no_data_rows(tmp_path: Path, sample: pd.DataFrame) -> None:
    path, lines = _lines(tmp_path, sample)
    path.write_text(lines[0] + "\n", encoding="utf-8")
    err = _error(path)
    assert err.rule == "no_data_rows" and "no data rows" in str(err)


def test_missing_required_columns_are_listed(tmp_path: Path, sample: pd.DataFrame) -> None:
    path = tmp_path / "c.csv"
    write_census_csv(sample.drop(columns=["dob", "plan_code", "address2"]), path)
    err = _error(path)
    assert err.rule == "required_columns" and err.details["missing"] == ["dob", "plan_code"]


def test_missing_optional_columns_are_added_empty(tmp_path: Path, sample: pd.DataFrame) -> None:
    path = tmp_path / "c.csv"
    write_census_csv(sample.drop(columns=["address2", "department"]), path)
    frame = read_census(path, SCHEMA)
    assert (frame["address2"] == "").all() and (frame["department"] == "").all()


def test_duplicated_column(tmp_path: Path, sample: pd.DataFrame) -> None:
    path, lines = _lines(tmp_path, sample)
    lines[0] = lines[0].replace('"city"', '"zip"')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    err = _error(path)
    assert err.rule == "duplicate_columns" and err.row == 1 and err.column == "zip"


@pytest.mark.parametrize("change", ["extra", "short"])
def test_wrong_field_count_names_the_row(tmp_path: Path, sample: pd.DataFrame, change: str) -> None:
    path, lines = _lines(tmp_path, sample)
    lines[3] = lines[3] + ',"' + CANARY + '"' if change == "extra" else lines[3].rsplit(",", 1)[0]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    err = _error(path)
    assert err.rule == "field_count" and err.row == 4


def test_blank_line_in_the_middle_names_the_row(tmp_path: Path, sample: pd.DataFrame) -> None:
    path, lines = _lines(tmp_path, sample)
    path.write_text("\n".join([*lines[:3], "", *lines[3:]]) + "\n\n", encoding="utf-8")
    err = _error(path)
    assert err.rule == "blank_line" and err.row == 4


def test_nul_byte(tmp_path: Path, sample: pd.DataFrame) -> None:
    path, lines = _lines(tmp_path, sample)
    lines[2] = lines[2].replace(CANARY, CANARY[:3] + "\x00" + CANARY[3:], 1)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    err = _error(path)
    assert err.rule == "nul_byte" and err.row == 3


def test_undecodable_bytes_name_the_row(tmp_path: Path, sample: pd.DataFrame) -> None:
    path, lines = _lines(tmp_path, sample)
    data = ("\n".join(lines) + "\n").encode("utf-8").split(b"\n")
    data[4] = data[4].replace(CANARY.encode(), b"Quill\xffonius", 1)
    path.write_bytes(b"\n".join(data))
    err = _error(path)
    assert err.rule == "encoding" and err.row == 5 and "utf-8" in str(err)


def test_bom_file_reads_cleanly(tmp_path: Path, sample: pd.DataFrame) -> None:
    path, lines = _lines(tmp_path, sample)
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8-sig"))
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    for schema in (SCHEMA, SCHEMA.model_copy(update={"encoding": "utf-8"})):
        frame = read_census(path, schema)
        assert frame["member_id"].tolist() == sample["member_id"].tolist()


def test_cp1252_file_via_schema(tmp_path: Path, sample: pd.DataFrame) -> None:
    frame = sample.copy()
    frame.loc[:, "last_name"] = "Núñez"
    path = tmp_path / "c1252.csv"
    path.write_bytes(frame.to_csv(index=False).encode("cp1252"))
    with pytest.raises(DataError):
        read_census(path, SCHEMA)  # not valid UTF-8
    got = read_census(path, SCHEMA.model_copy(update={"encoding": "cp1252"}))
    assert (got["last_name"] == "Núñez").all()


def test_mapped_headers_codes_dates_and_whitespace(tmp_path: Path, sample: pd.DataFrame,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    schema = CensusSchema(
        schema_id="acme-hr", delimiter=";", suite="census-v1.suite.json", date_format="%m/%d/%Y",
        columns={"member_id": "EmpID", "subscriber_id": "Sub ID", "relationship": "Rel", "dob": "Birth Date"},
        relationship_codes={"E": "EE", "S": "SP", "C": "CH"}, gender_codes={"1": "M", "2": "F", "M": "M",
                                                                            "F": "F", "U": "U"})
    frame = sample.rename(columns={"member_id": "EmpID", "subscriber_id": "Sub ID", "relationship": "Rel",
                                   "dob": "Birth Date"})
    frame["Rel"] = frame["Rel"].map({"EE": "E", "SP": "S", "CH": "C"})
    frame["gender"] = frame["gender"].map({"M": "1", "F": "2", "U": "U"})
    frame["Birth Date"] = pd.to_datetime(frame["Birth Date"]).dt.strftime("%m/%d/%Y")
    frame.loc[0, "Birth Date"] = "31/31/1990"   # unparseable: left for validation to report
    frame.loc[1, "Rel"] = "X"                   # unmapped code: left as it is
    frame.loc[2, "zip"] = "  " + frame.loc[2, "zip"] + " "
    frame["Secret Notes"] = CANARY
    path = tmp_path / "acme.csv"
    path.write_text(frame.to_csv(index=False, sep=";"), encoding="utf-8")
    caplog.set_level(logging.DEBUG)
    got = read_census(path, schema)
    assert "Secret Notes" in caplog.text and CANARY not in caplog.text
    assert "Secret Notes" not in got.columns
    assert got.loc[2:, "relationship"].tolist() == sample.loc[2:, "relationship"].tolist()
    assert got.loc[1, "relationship"] == "X"
    assert got.loc[1:, "dob"].tolist() == sample.loc[1:, "dob"].tolist()
    assert got.loc[0, "dob"] == "31/31/1990"
    assert got["gender"].tolist() == sample["gender"].tolist()
    assert got.loc[2, "zip"] == sample.loc[2, "zip"]


def test_a_file_without_its_header_row_never_echoes_row_1(tmp_path: Path, sample: pd.DataFrame) -> None:
    """Row 1 then holds a member's data: duplicated 'headers' (member_id == subscriber_id on an employee's
    row) are reported by position, and no cell of that row appears in the error."""
    path, lines = _lines(tmp_path, sample)
    # an employee's row with no empty cell, as row 1
    cells = [c if c.strip('"') else f"blank{i}" for i, c in enumerate(lines[1].split(","))]
    assert cells[0] == cells[1]
    # Short codes (a middle initial, a status) may repeat by chance: only the ids are the duplicate here.
    cells = [c if i < 2 or c not in cells[:i] else f"{c}{i}" for i, c in enumerate(cells)]
    path.write_text("\n".join([",".join(cells), *lines[2:]]) + "\n", encoding="utf-8")
    err = _error(path)
    assert (err.row, err.rule, err.details["positions"], err.details["duplicated"]) == (
        1, "duplicate_columns", [1, 2], [])
    text = str(err) + repr(err.as_dict())
    assert not [c for c in cells if len(c.strip('"')) > 2 and c.strip('"') in text]


def test_plan_names_become_plan_codes_by_the_schema_table(tmp_path: Path, sample: pd.DataFrame) -> None:
    codes = sorted(sample["plan_code"].unique())
    names = {code: f"{code.title()} Plan {i}" for i, code in enumerate(codes)}  # the employer's names
    schema = SCHEMA.model_copy(update={"plan_codes": {n: c for c, n in names.items() if c != codes[-1]}})
    frame = sample.copy()
    frame["plan_code"] = frame["plan_code"].map(names)
    path = tmp_path / "plans.csv"
    write_census_csv(frame, path)
    got = read_census(path, schema)
    mapped = sample["plan_code"] != codes[-1]
    assert got.loc[mapped, "plan_code"].tolist() == sample.loc[mapped, "plan_code"].tolist()
    # a name the table does not list is kept as it is, for validation or the mapping to report
    assert (got.loc[~mapped, "plan_code"] == names[codes[-1]]).all() and (~mapped).any()
    # the default (no table) keeps names as they are
    assert read_census(path, SCHEMA)["plan_code"].tolist() == frame["plan_code"].tolist()


@pytest.mark.parametrize("table", [{"": "MED-PPO"}, {"  ": "MED-PPO"}, {"Gold": " "}])
def test_a_plan_code_table_with_a_blank_entry_is_refused(table: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="plan names and codes must not be blank"):
        CensusSchema(schema_id="acme-hr", suite="census-v1.suite.json", plan_codes=table)


def test_plan_code_table_entries_are_stripped_like_the_cells() -> None:
    schema = CensusSchema(schema_id="acme-hr", suite="census-v1.suite.json", plan_codes={" Gold ": " MED-PPO"})
    assert schema.plan_codes == {"Gold": "MED-PPO"}


@pytest.mark.parametrize("private", [False, True])
def test_carriage_return_inside_a_header_field_is_a_csv_syntax_error_on_row_1(
        tmp_path: Path, sample: pd.DataFrame, private: bool) -> None:
    path, lines = _lines(tmp_path, sample)
    header = lines[0].replace('"subscriber_id"', "sub\rscriber_id")
    assert header != lines[0]
    path.write_bytes(("\n".join([header, *lines[1:]]) + "\n").encode("utf-8"))
    with pytest.raises(DataError) as info:
        read_census(path, SCHEMA, private=private)
    assert info.value.rule == "csv_syntax" and info.value.row == 1 and info.value.file == path.name
