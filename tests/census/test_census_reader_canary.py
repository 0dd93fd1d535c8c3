"""No reader error ever quotes a census cell: every cell of the census carries a canary string, the file
is broken in one of the ways the readers refuse (CSV, XLSX, fixed width, zip; with and without a header
row), and neither the DataError's message, its details, the log, nor (when the file reads) the validation
report contains the canary."""

from __future__ import annotations

import io
import json
import logging
import tempfile
import zipfile
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

openpyxl = pytest.importorskip("openpyxl")

from carrierfeeds.census.columns import CANONICAL_COLUMNS  # noqa: E402
from carrierfeeds.census.generate import generate_census  # noqa: E402
from carrierfeeds.census.readers import read_census  # noqa: E402
from carrierfeeds.census.tokens import MemberTokenizer  # noqa: E402
from carrierfeeds.config import CensusSchema, load_schema  # noqa: E402
from carrierfeeds.errors import DataError  # noqa: E402
from carrierfeeds.validation import validate_census  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CSV = load_schema(ROOT / "schemas" / "census-v1.yaml")
XLSX = CSV.model_copy(update={"format": "xlsx"})
ZIP = CSV.model_copy(update={"allow_zip": True})
DAY = date(2026, 11, 20)
TEXT_COLUMNS = ("last_name", "first_name", "middle_initial", "address1", "address2", "city")
WIDTHS = {"member_id": 12, "subscriber_id": 12, "relationship": 2, "last_name": 24, "first_name": 24,
          "dob": 8, "gender": 1, "plan_code": 10, "coverage_level": 3, "coverage_start": 8}
FIXED_YAML = {"schema_id": "acme-fixed", "format": "fixed_width", "encoding": "utf-8", "date_format": "%Y%m%d",
              "suite": "census-v1.suite.json", "fixed_width": {
                  "fields": [{"column": c, "start": 1 + sum(list(WIDTHS.values())[:i]), "width": w}
                             for i, (c, w) in enumerate(WIDTHS.items())],
                  "header_lines": 1, "record_length": sum(WIDTHS.values())}}


@pytest.fixture(scope="module")
def fixed_schema(tmp_path_factory: pytest.TempPathFactory) -> CensusSchema:
    path = tmp_path_factory.mktemp("schemas") / "acme-fixed.yaml"
    path.write_text(yaml.safe_dump(FIXED_YAML))
    return load_schema(path)


def _frame(canary: str) -> pd.DataFrame:
    frame = generate_census(5, 4, as_of=DAY).drop(columns=["row_number"], errors="ignore").astype(str)
    for column in TEXT_COLUMNS:
        frame[column] = [f"{canary}{i}" for i in range(len(frame))]
    for column in ("member_id", "subscriber_id"):  # ids stay consistent: a subscriber's id is its family's
        frame[column] = canary + frame[column]
    return frame


def csv_reads_with_bad_values(f: pd.DataFrame, c: str) -> bytes:
    """Reads; validation then reports the bad values (by row and rule, never by value)."""
    g = f.copy()
    g.iloc[1, g.columns.get_loc("ssn")] = c
    g.iloc[2, g.columns.get_loc("dob")] = c
    g.iloc[3, g.columns.get_loc("gender")] = c
    return _csv(g).encode()


def _csv(frame: pd.DataFrame, *, header: bool = True) -> str:
    buf = io.StringIO()
    frame.to_csv(buf, index=False, header=header)
    return buf.getvalue()


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


# ---------------------------------------------------------------------------- faults, one per error path
def csv_no_header(f: pd.DataFrame, c: str) -> bytes:
    return _csv(f, header=False).encode()


def csv_no_header_all_canary(f: pd.DataFrame, c: str) -> bytes:
    row = ",".join([c] * len(f.columns)) + "\n"
    return (row + _csv(f, header=False)).encode()


def csv_blank_line(f: pd.DataFrame, c: str) -> bytes:
    lines = _lines(_csv(f))
    return "".join([*lines[:3], "\n", *lines[3:]]).encode()


def csv_field_count(f: pd.DataFrame, c: str) -> bytes:
    lines = _lines(_csv(f))
    lines[4] = lines[4].rstrip("\n") + f",{c},{c}\n"
    return "".join(lines).encode()


def csv_stray_quote(f: pd.DataFrame, c: str) -> bytes:
    lines = _lines(_csv(f))
    lines[3] = f'"{c}' + lines[3]
    return "".join(lines).encode()


def csv_nul(f: pd.DataFrame, c: str) -> bytes:
    g = f.copy()
    g.iloc[2, g.columns.get_loc("first_name")] = f"{c}\x00{c}"
    return _csv(g).encode()


def csv_bad_utf8(f: pd.DataFrame, c: str) -> bytes:
    return _csv(f).encode().replace(c.encode(), c.encode() + b"\xff\xfe", 1)


def csv_formula(f: pd.DataFrame, c: str) -> bytes:
    g = f.copy()
    g.iloc[3, g.columns.get_loc("last_name")] = f"=HYPERLINK(\"{c}\")"
    g.iloc[4, g.columns.get_loc("city")] = f"-{c}"
    return _csv(g).encode()


def csv_too_long(f: pd.DataFrame, c: str) -> bytes:
    g = f.copy()
    g.iloc[1, g.columns.get_loc("address1")] = c * (2000 // len(c) + 1)
    return _csv(g).encode()


def csv_header_only(f: pd.DataFrame, c: str) -> bytes:
    return _lines(_csv(f))[0].encode()


def csv_missing_column(f: pd.DataFrame, c: str) -> bytes:
    return _csv(f.drop(columns=["dob"])).encode()


def csv_utf16_bom_declared_utf8(f: pd.DataFrame, c: str) -> bytes:
    return _csv(f).encode("utf-16")


def _xlsx(rows: list[list[Any]], edit: Callable[[Any], None] | None = None) -> bytes:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Census"
    for row in rows:
        ws.append(row)
    if edit is not None:
        edit(ws)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def _rows(f: pd.DataFrame, *, header: bool = True) -> list[list[Any]]:
    body = [list(r) for r in f.itertuples(index=False)]
    return [list(f.columns), *body] if header else body


def xlsx_no_header_error_cell(f: pd.DataFrame, c: str) -> bytes:
    def edit(ws: Any) -> None:
        ws.cell(row=3, column=2, value="#N/A")
    return _xlsx(_rows(f, header=False), edit)


def xlsx_no_header_formula_without_value(f: pd.DataFrame, c: str) -> bytes:
    def edit(ws: Any) -> None:
        for col in range(1, len(f.columns) + 1):
            ws.cell(row=4, column=col, value="=A1")
    return _xlsx(_rows(f, header=False), edit)


def xlsx_error_cell(f: pd.DataFrame, c: str) -> bytes:
    def edit(ws: Any) -> None:
        ws.cell(row=3, column=len(f.columns) + 2, value="#DIV/0!")
    return _xlsx(_rows(f), edit)


def xlsx_beyond_header(f: pd.DataFrame, c: str) -> bytes:
    def edit(ws: Any) -> None:
        ws.cell(row=4, column=len(f.columns) + 3, value=c)
    return _xlsx(_rows(f), edit)


def xlsx_blank_row(f: pd.DataFrame, c: str) -> bytes:
    rows = _rows(f)
    return _xlsx([*rows[:3], [None] * len(f.columns), *rows[3:]])


def xlsx_no_header(f: pd.DataFrame, c: str) -> bytes:
    return _xlsx(_rows(f, header=False))


def xlsx_truncated(f: pd.DataFrame, c: str) -> bytes:
    data = _xlsx(_rows(f))
    return data[: len(data) * 2 // 3]


def xlsx_formula_like(f: pd.DataFrame, c: str) -> bytes:
    def edit(ws: Any) -> None:
        cell = ws.cell(row=2, column=5)
        cell.value = f"@{c}"
        cell.data_type = "s"
    return _xlsx(_rows(f), edit)


def fixed(f: pd.DataFrame, c: str, *, mangle: Callable[[list[str]], list[str]] | None = None) -> bytes:
    lines = [f"EXPORT {c}\n"]
    for _, row in f.iterrows():
        rec = ""
        for column, width in WIDTHS.items():
            value = row[column].replace("-", "") if column in ("dob", "coverage_start") else row[column]
            rec += value[:width].ljust(width)
        lines.append(rec + "\n")
    return "".join(mangle(lines) if mangle else lines).encode()


def fixed_long_record(f: pd.DataFrame, c: str) -> bytes:
    return fixed(f, c, mangle=lambda ls: [*ls[:3], ls[3].rstrip("\n") + c + "\n", *ls[4:]])


def fixed_blank_line(f: pd.DataFrame, c: str) -> bytes:
    return fixed(f, c, mangle=lambda ls: [*ls[:3], "\n", *ls[3:]])


def fixed_no_data(f: pd.DataFrame, c: str) -> bytes:
    return fixed(f, c, mangle=lambda ls: ls[:1])


def fixed_short_record(f: pd.DataFrame, c: str) -> bytes:
    return fixed(f, c, mangle=lambda ls: [*ls[:2], ls[2][:30] + "\n", *ls[3:]])


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out.getvalue()


def zip_of(inner: Callable[[pd.DataFrame, str], bytes]) -> Callable[[pd.DataFrame, str], bytes]:
    def build(f: pd.DataFrame, c: str) -> bytes:
        return _zip({"census.csv": inner(f, c)})
    build.__name__ = f"zip_of_{inner.__name__}"
    return build


def zip_two_members(f: pd.DataFrame, c: str) -> bytes:
    return _zip({"a.csv": _csv(f).encode(), "b.csv": _csv(f).encode()})


def zip_nested(f: pd.DataFrame, c: str) -> bytes:
    return _zip({"census.csv": _zip({"inner.csv": _csv(f).encode()})})


def zip_damaged(f: pd.DataFrame, c: str) -> bytes:
    data = _zip({"census.csv": _csv(f).encode()})
    return data[:40] + bytes(len(data) - 40)


CSV_FAULTS = [csv_reads_with_bad_values, csv_no_header, csv_no_header_all_canary, csv_blank_line,
              csv_field_count, csv_stray_quote, csv_nul, csv_bad_utf8, csv_formula, csv_too_long,
              csv_header_only, csv_missing_column, csv_utf16_bom_declared_utf8]
FAULTS: list[tuple[str, Callable[[pd.DataFrame, str], bytes]]] = [
    *(("csv", f) for f in CSV_FAULTS),
    *(("xlsx", f) for f in (xlsx_no_header_error_cell, xlsx_no_header_formula_without_value, xlsx_error_cell,
                            xlsx_beyond_header, xlsx_blank_row, xlsx_no_header, xlsx_truncated,
                            xlsx_formula_like)),
    *(("fixed", f) for f in (fixed_long_record, fixed_blank_line, fixed_no_data, fixed_short_record)),
    *(("zip", zip_of(f)) for f in CSV_FAULTS),
    *(("zip", f) for f in (zip_two_members, zip_nested, zip_damaged)),
]
CANARIES = st.from_regex(r"Zq[A-Za-z]{6,10}", fullmatch=True)


def _check(canary: str, kind: str, build: Callable[[pd.DataFrame, str], bytes], fixed_schema: CensusSchema,
           caplog: pytest.LogCaptureFixture) -> None:
    schema = {"csv": CSV, "xlsx": XLSX, "fixed": fixed_schema, "zip": ZIP}[kind]
    caplog.clear()
    with tempfile.TemporaryDirectory() as tmp, caplog.at_level(logging.DEBUG):
        path = Path(tmp) / "census.csv"
        path.write_bytes(build(_frame(canary), canary))
        try:
            census = read_census(path, schema, display_name="acme.csv")
        except DataError as err:
            assert canary not in str(err), build.__name__
            assert canary not in json.dumps(err.as_dict(), default=str), build.__name__
            assert err.file == "acme.csv"
        else:
            report = validate_census(census, ROOT / "schemas" / schema.suite, schema, MemberTokenizer(b"t" * 32),
                                     as_of=DAY, source_name="acme.csv", workers=1)
            assert canary not in json.dumps(report.to_dict(), default=str), build.__name__
    assert canary not in caplog.text, build.__name__


@pytest.mark.parametrize(("kind", "build"), FAULTS, ids=[f"{k}-{b.__name__}" for k, b in FAULTS])
def test_no_reader_error_quotes_a_cell(kind: str, build: Callable[[pd.DataFrame, str], bytes],
                                       fixed_schema: CensusSchema, caplog: pytest.LogCaptureFixture) -> None:
    _check("ZqCanaryCell", kind, build, fixed_schema, caplog)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(canary=CANARIES, fault=st.sampled_from(FAULTS))
def test_no_reader_error_quotes_a_cell_whatever_the_canary(canary: str,
                                                            fault: tuple[str, Callable[[pd.DataFrame, str], bytes]],
                                                            fixed_schema: CensusSchema,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    assert canary not in {*CANONICAL_COLUMNS}
    _check(canary, *fault, fixed_schema, caplog)


def test_an_xlsx_without_a_header_row_names_an_error_cell_by_position(fixed_schema: CensusSchema) -> None:
    """The reported case: the error cell's column was named by the member's data above it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "census.xlsx"
        path.write_bytes(xlsx_no_header_error_cell(_frame("ZqNoHeader"), "ZqNoHeader"))
        with pytest.raises(DataError) as info:
            read_census(path, XLSX)
    assert (info.value.rule, info.value.row, info.value.column) == ("error_cell", 3, "#2")
