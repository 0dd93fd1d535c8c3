"""Fixed-width censuses: fields by position from the schema's layout, line numbers as row numbers."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import yaml

from carrierfeeds.census.generate import generate_census
from carrierfeeds.census.readers import read_census
from carrierfeeds.config import CensusSchema, FixedWidthLayout, load_schema
from carrierfeeds.errors import ConfigError, DataError

DAY = date(2026, 11, 20)
CANARY = "Quillonius"
WIDTHS = {"member_id": 12, "subscriber_id": 12, "relationship": 2, "last_name": 20, "first_name": 15,
          "dob": 8, "gender": 1, "plan_code": 10, "coverage_level": 3, "coverage_start": 8, "coverage_end": 8}


def _layout_fields() -> list[dict[str, object]]:
    fields, start = [], 1
    for column, width in WIDTHS.items():
        fields.append({"column": column, "start": start, "width": width})
        start += width
    return fields


RECORD = sum(WIDTHS.values())
SCHEMA_YAML = {"schema_id": "acme-fixed", "format": "fixed_width", "encoding": "cp1252", "date_format": "%Y%m%d",
               "suite": "census-v1.suite.json", "fixed_width": {"fields": _layout_fields(), "header_lines": 1}}


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> CensusSchema:
    path = tmp_path_factory.mktemp("schemas") / "acme-fixed.yaml"
    path.write_text(yaml.safe_dump(SCHEMA_YAML))
    return load_schema(path)  # the layout lives in schemas/, loaded like any schema


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    frame = generate_census(9, 6, as_of=DAY)
    frame.loc[:, "first_name"] = CANARY
    frame.loc[0, "last_name"] = "Núñez"  # cp1252 can hold it
    return frame


def _lines(sample: pd.DataFrame) -> list[str]:
    out = ["ACME ELIGIBILITY EXPORT 20261120"]
    for i, (_, row) in enumerate(sample.iterrows()):
        record = ""
        for column, width in WIDTHS.items():
            value = row[column].replace("-", "") if column in ("dob", "coverage_start", "coverage_end") else row[column]
            record += value[:width].ljust(width)
        out.append(record.rstrip() if i % 2 else record)  # some writers trim trailing blanks
    return out


def _write(path: Path, lines: list[str], *, encoding: str = "cp1252", newline: str = "\r\n") -> Path:
    path.write_bytes((newline.join(lines) + newline).encode(encoding))
    return path


def _error(path: Path, schema: CensusSchema) -> DataError:
    with pytest.raises(DataError) as info:
        read_census(path, schema)
    err = info.value
    assert err.file == path.name and CANARY not in str(err) and CANARY not in json.dumps(err.as_dict(), default=str)
    return err


def test_reads_fields_by_position(tmp_path: Path, schema: CensusSchema, sample: pd.DataFrame) -> None:
    got = read_census(_write(tmp_path / "acme.txt", _lines(sample)), schema)
    for column in WIDTHS:
        assert got[column].tolist() == sample[column].tolist(), column
    assert got.loc[0, "last_name"] == "Núñez"
    assert (got["address1"] == "").all()
    assert got["row_number"].tolist() == list(range(2, len(sample) + 2))  # line numbers; line 1 is the header


def test_record_length_blank_lines_and_overlong_records(tmp_path: Path, schema: CensusSchema,
                                                        sample: pd.DataFrame) -> None:
    lines = _lines(sample)
    strict = schema.model_copy(update={"fixed_width": schema.fixed_width.model_copy(  # type: ignore[union-attr]
        update={"record_length": RECORD})})
    err = _error(_write(tmp_path / "a.txt", lines), strict)
    assert (err.rule, err.row) == ("record_length", 3)  # line 3 was trimmed

    blank = _write(tmp_path / "b.txt", [*lines[:4], "", *lines[4:]])
    err = _error(blank, schema)
    assert (err.rule, err.row) == ("blank_line", 5)

    long = list(lines)
    long[6] = lines[6].ljust(RECORD) + "EXTRA"
    err = _error(_write(tmp_path / "c.txt", long), schema)
    assert (err.rule, err.row) == ("record_length", 7)

    err = _error(_write(tmp_path / "d.txt", lines[:1]), schema)
    assert err.rule == "no_data_rows"
    empty = tmp_path / "e.txt"
    empty.write_bytes(b"")
    assert _error(empty, schema).rule == "empty_file"


def test_bytes_the_encoding_cannot_hold_and_formula_cells(tmp_path: Path, schema: CensusSchema,
                                                          sample: pd.DataFrame) -> None:
    lines = _lines(sample)
    cp1252 = _write(tmp_path / "a.txt", lines)
    err = _error(cp1252, schema.model_copy(update={"encoding": "utf-8"}))  # never decoded by guesswork
    assert (err.rule, err.row) == ("encoding", 2)
    raw = (("\r\n".join(lines) + "\r\n").encode("cp1252")).replace(CANARY.encode(), b"Quill\x81onius", 1)
    bad = tmp_path / "b.txt"
    bad.write_bytes(raw)  # 0x81 is undefined in cp1252
    err = _error(bad, schema)
    assert (err.rule, err.row) == ("encoding", 2)

    formula = list(lines)
    start = sum(list(WIDTHS.values())[:4])
    formula[3] = formula[3][:start] + "=1+2".ljust(15) + formula[3][start + 15:]
    err = _error(_write(tmp_path / "f.txt", formula), schema)
    assert (err.rule, err.row, err.column) == ("formula_like_cell", 4, "first_name")


def test_layout_is_checked_when_the_schema_loads(tmp_path: Path) -> None:
    overlap = {"fields": [{"column": "member_id", "start": 1, "width": 10},
                          {"column": "last_name", "start": 5, "width": 10}]}
    with pytest.raises(ValueError, match="overlap"):
        FixedWidthLayout.model_validate(overlap)
    with pytest.raises(ValueError, match="did you mean 'last_name'"):
        FixedWidthLayout.model_validate({"fields": [{"column": "lastname", "start": 1, "width": 5}]})
    with pytest.raises(ValueError, match="record_length"):
        FixedWidthLayout.model_validate({"fields": [{"column": "dob", "start": 1, "width": 8}], "record_length": 4})
    path = tmp_path / "acme-fixed.yaml"
    path.write_text(yaml.safe_dump({**SCHEMA_YAML, "fixed_width": None}))
    with pytest.raises(ConfigError, match="fixed_width"):
        load_schema(path)
