"""Carrier flat files: golden CSV and fixed-width outputs byte for byte, formula neutralisation,
injection attempts caught by the gate, and the minimum-necessary rule (layouts cannot reach a field
off the allowlist; a planted value never appears).

Regenerate the golden files after an intended change (then review the diff like code):

    CARRIERFEEDS_REGENERATE_GOLDEN=1 .venv/bin/pytest tests/outputs/test_flatfile_golden_and_gate.py
"""

from __future__ import annotations

import csv
import io
import os
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from carrierfeeds.census.columns import CANONICAL_COLUMNS
from carrierfeeds.changes import diff_against_snapshot, snapshot_columns
from carrierfeeds.config import CarrierMapping, Feed, load_feed, load_mapping
from carrierfeeds.enrollment import VIEW_SOURCES, Enrollment, build_enrollment
from carrierfeeds.errors import ConfigError, ConformanceFailed, DataError, FieldNotAllowed
from carrierfeeds.outputs.flatfile import (
    FORMULA_CHARS,
    check_flatfile,
    flatfile_name,
    render_flatfile,
    render_flatfile_bytes,
)
from carrierfeeds.outputs.layouts import FIELD_SOURCES, CsvFlatLayout, FixedWidthFlatLayout

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "fixtures" / "flatfile"
AS_OF = date(2026, 11, 20)
CANARY_SSN = "900445566"
CANARY_STREET = "77 CANARY LANE"


def _feed() -> Feed:
    return load_feed(ROOT / "feeds" / "acme-clearview-vision.yaml")


def _mapping(**update: Any) -> CarrierMapping:
    base = load_mapping(ROOT / "mappings" / "clearview-csv.yaml")
    return base.model_copy(update=update) if update else base


def _row(**values: str) -> dict[str, str]:
    out = dict.fromkeys(CANONICAL_COLUMNS, "")
    out.update(values)
    return out


def _census() -> pd.DataFrame:
    """Two families on vision (one with a spouse and a child), a medical-only row the carrier may not
    see, a name a spreadsheet would run as a formula, and a comma and quote that need CSV quoting."""
    home = {"address1": CANARY_STREET, "city": "SPRINGFIELD", "state": "IL", "zip": "62701",
            "phone": "2175550100", "ssn": CANARY_SSN, "department": "PLANT 2", "employment_status": "FT"}
    rows = [
        _row(member_id="E1001", subscriber_id="E1001", relationship="EE", last_name="Rivera",
             first_name="Ana", dob="1984-03-09", gender="F", plan_code="VIS-STD", coverage_level="FAM",
             coverage_start="2025-01-01", **home),
        _row(member_id="E1001-01", subscriber_id="E1001", relationship="SP", last_name="O'Neil, Jr",
             first_name='Mateo "Teo"', dob="1983-11-30", gender="M", plan_code="VIS-STD",
             coverage_level="FAM", coverage_start="2025-01-01", **home),
        _row(member_id="E1001-02", subscriber_id="E1001", relationship="CH", last_name="Rivera",
             first_name="Lucía", dob="2012-07-15", gender="F", plan_code="VIS-STD", coverage_level="FAM",
             coverage_start="2025-01-01", **home),
        _row(member_id="E1001", subscriber_id="E1001", relationship="EE", last_name="Rivera",
             first_name="Ana", dob="1984-03-09", gender="F", plan_code="MED-PPO", coverage_level="FAM",
             coverage_start="2025-01-01", **home),
        _row(member_id="E2002", subscriber_id="E2002", relationship="EE", last_name="=HYPERLINK(1+1)",
             first_name="-Sam", dob="1990-05-01", gender="U", plan_code="VIS-STD", coverage_level="EMP",
             coverage_start="2026-11-01", coverage_end="2026-11-30", **home),
    ]
    frame = pd.DataFrame(rows, dtype=object)
    frame["row_number"] = range(2, len(frame) + 2)
    return frame


def _enrollment(mapping: CarrierMapping | None = None) -> Enrollment:
    return build_enrollment(_census(), _feed(), mapping or _mapping(), as_of=AS_OF)


_FIXED_LAYOUT = """
kind: fixed-width
line_ending: lf
date_format: "%Y%m%d"
record_length: 80
file_name: "CV{control}.TXT"
columns:
  - {value: "D", length: 1}
  - {field: ins03, length: 1, codes: {"021": A, "001": C, "024": T, "025": R, "030": F}}
  - {field: subscriber_id, length: 12, start: 4}
  - {field: member_id, length: 12}
  - {field: relationship, length: 2}
  - {field: last_name, length: 12, overflow: truncate}
  - {field: first_name, length: 8, overflow: truncate}
  - {field: dob, length: 8}
  - {field: gender, length: 1}
  - {field: hd05, length: 4}
  - {field: coverage_start, length: 8, date_format: "%y%m%d", justify: right, pad: "0"}
  - {field: coverage_end, length: 8}
"""


def _fixed_layout() -> FixedWidthFlatLayout:
    layout = _mapping(flatfile=None).model_validate(
        {**_mapping().model_dump(mode="json", exclude={"flatfile"}), "flatfile": yaml.safe_load(_FIXED_LAYOUT)}
    ).flatfile
    assert isinstance(layout, FixedWidthFlatLayout)
    return layout


def _golden(name: str, data: bytes) -> None:
    path = GOLDEN / name
    if os.environ.get("CARRIERFEEDS_REGENERATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    assert data == path.read_bytes(), f"{name} differs from the golden file"


def _csv_layout() -> CsvFlatLayout:
    layout = _mapping().flatfile
    assert isinstance(layout, CsvFlatLayout)
    return layout


# ------------------------------------------------------------------------------------------- golden
def test_full_roster_csv_matches_golden_and_passes_the_gate() -> None:
    enrollment = _enrollment()
    data = render_flatfile_bytes(enrollment, _csv_layout())
    _golden("full-roster.csv", data)
    report = check_flatfile(data, _csv_layout(), expected_records=len(enrollment.table))
    assert report.ok, report.problems
    assert report.records == 4  # three vision members of family 1 and one of family 2; medical left out

    rows = list(csv.reader(io.StringIO(data.decode("ascii"), newline="")))
    assert rows[0][:4] == ["Action", "Group", "Subscriber ID", "Member ID"]
    assert [r[3] for r in rows[1:]] == ["E1001", "E1001-01", "E1001-02", "E2002"]
    assert rows[2][5] == "O'NEIL, JR" and rows[2][6] == 'MATEO "TEO"'  # quoted, quote doubled, read back
    assert rows[4][5] == "'=HYPERLINK(1+1)" and rows[4][6] == "'-SAM"  # neutralised formulas
    assert rows[1][7] == "03/09/1984" and rows[4][12] == "11/30/2026"
    assert all(r[0] == "F" and r[1] == "CV-1007" for r in rows[1:])
    assert data.count(b"\r\n") == 5 and data.endswith(b"\r\n")


def test_fixed_width_matches_golden_with_positions_padding_and_justification() -> None:
    layout = _fixed_layout()
    enrollment = _enrollment()
    data = render_flatfile_bytes(enrollment, layout)
    _golden("full-roster.txt", data)
    lines = data.decode("ascii").split("\n")
    assert lines[-1] == "" and len(lines) == 5
    assert {len(line) for line in lines[:-1]} == {80}
    first = lines[0]
    assert first[0:2] == "DF" and first[2] == " "  # constant, code, then the gap before column 4
    assert first[3:15] == "E1001       "  # left-justified, space padded
    assert first[15:27] == "E1001       " and first[27:29] == "EE"  # right after the two 12-wide ids
    assert "00250101" in first  # %y%m%d, right-justified and zero padded to eight
    assert "OHYPERLINK" not in data.decode() and "=HYPERLINK(1" in lines[3]  # truncated to 12, not quoted
    assert check_flatfile(data, layout, expected_records=4).ok
    assert flatfile_name(layout, feed_id="f", control=42, day=AS_OF) == "CV000000042.TXT"


def test_change_file_csv_uses_the_same_change_detection_as_the_834() -> None:
    mapping = _mapping()
    base = _enrollment(mapping)
    snapshot = base.table[snapshot_columns(base.table)]
    census = _census()
    census.loc[census["member_id"] == "E1001-02", "coverage_end"] = "2026-11-30"  # child's vision ends
    census.loc[census["member_id"] == "E1001", "first_name"] = "Anna"  # a demographic change
    census = census[census["member_id"] != "E2002"]  # gone, but its coverage had already ended: not resent
    census = pd.concat([census, pd.DataFrame([_row(
        member_id="E3003", subscriber_id="E3003", relationship="EE", last_name="Nguyen", first_name="Bao",
        dob="1979-02-02", gender="M", plan_code="VIS-STD", coverage_level="EMP",
        coverage_start="2026-12-01") | {"row_number": 9}])], ignore_index=True)
    current = build_enrollment(census, _feed(), mapping, as_of=AS_OF)
    changes = diff_against_snapshot(current, snapshot, as_of=AS_OF, term_policy=mapping.term_policy,
                                    term_end=mapping.term_end, retro_window_days=mapping.retro_window_days)
    assert changes.members_by_type == {"001": 1, "021": 1, "024": 1}
    data = render_flatfile_bytes(changes, _csv_layout())
    _golden("changes.csv", data)
    rows = list(csv.reader(io.StringIO(data.decode("ascii"), newline="")))[1:]
    assert sorted((r[3], r[0]) for r in rows) == [("E1001", "C"), ("E1001-02", "T"), ("E3003", "A")]
    assert [r[12] for r in rows if r[3] == "E1001-02"] == ["11/30/2026"]
    assert check_flatfile(data, _csv_layout(), expected_records=len(changes.enrollment.table)).ok


def test_chunked_rendering_gives_the_same_bytes() -> None:
    enrollment = _enrollment()
    for layout in (_csv_layout(), _fixed_layout()):
        assert b"".join(render_flatfile(enrollment, layout, chunk_rows=1)) == render_flatfile_bytes(
            enrollment, layout)


# ------------------------------------------------------------------------------- minimum necessary
def test_planted_values_off_the_allowlist_never_appear() -> None:
    enrollment = _enrollment()
    for layout in (_csv_layout(), _fixed_layout()):
        data = render_flatfile_bytes(enrollment, layout).decode("ascii")
        for canary in (CANARY_SSN, CANARY_STREET, "SPRINGFIELD", "2175550100", "PLANT 2", "62701", "MED-PPO",
                       "HLT"):
            assert canary not in data


def test_a_layout_naming_a_field_off_the_allowlist_is_a_config_error_at_load(tmp_path: Path) -> None:
    text = (ROOT / "mappings" / "clearview-csv.yaml").read_text()
    text = text.replace("    - {header: Gender, field: gender}\n",
                        "    - {header: Gender, field: gender}\n    - {header: SSN, field: ssn}\n")
    path = tmp_path / "clearview-csv.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_mapping(path)
    assert "flatfile.columns.9 (field 'ssn')" in err.value.message
    assert "allowlist" in err.value.message


def test_a_misspelt_field_gets_a_did_you_mean(tmp_path: Path) -> None:
    text = (ROOT / "mappings" / "clearview-csv.yaml").read_text().replace("field: last_name", "field: lastname")
    path = tmp_path / "clearview-csv.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="did you mean 'last_name'"):
        load_mapping(path)


def test_rendering_refuses_a_layout_off_the_views_allowlist() -> None:
    layout = CsvFlatLayout(columns=({"field": "member_id"}, {"field": "zip"}))  # type: ignore[arg-type]
    with pytest.raises(FieldNotAllowed) as err:
        render_flatfile_bytes(_enrollment(), layout)
    assert err.value.details["fields"] == ["zip"]


def test_field_catalogue_matches_the_834_view() -> None:
    for field, source in VIEW_SOURCES.items():
        if source is not None:
            assert FIELD_SOURCES[field] == source


# ------------------------------------------------------------------------------ injection, formulas
def _view(values: list[str], column: str = "last_name") -> Enrollment:
    """A minimal view with arbitrary text in ``column`` (bypassing the fold rule on purpose)."""
    n = len(values)
    table = pd.DataFrame({
        "member_id": [f"M{i}" for i in range(n)], "subscriber_id": [f"M{i}" for i in range(n)],
        "ins01": ["Y"] * n, "ins02": ["18"] * n, "ins03": ["030"] * n, "last_name": [""] * n,
        "row_number": list(range(2, n + 2))}, dtype=object)
    table[column] = values
    return Enrollment(table=table, member_count=n, subscriber_count=n, coverage_count=n,
                      allowlist=("member_id", "subscriber_id", "relationship", "last_name"))


_PLAIN = CsvFlatLayout(columns=({"field": "member_id"}, {"field": "last_name"}),  # type: ignore[arg-type]
                   header=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12),
                min_size=1, max_size=8))
def test_any_printable_value_round_trips_and_no_cell_starts_a_formula(values: list[str]) -> None:
    data = render_flatfile_bytes(_view(values), _PLAIN)
    rows = list(csv.reader(io.StringIO(data.decode("ascii"), newline="")))
    assert len(rows) == len(values)
    for row, original in zip(rows, values, strict=True):
        assert len(row) == 2
        cell = row[1]
        assert not cell.startswith(FORMULA_CHARS)
        assert cell == ("'" + original if original.startswith(FORMULA_CHARS) else original)
    assert check_flatfile(data, _PLAIN, expected_records=len(values)).ok


@pytest.mark.parametrize("value", ["=1+2", "+CMD", "-2+3", "@SUM(A1)"])
def test_each_formula_character_is_neutralised(value: str) -> None:
    data = render_flatfile_bytes(_view([value]), _PLAIN)
    assert data == f"M0,'{value}\r\n".encode()


@pytest.mark.parametrize("value", ["SMITH\r\nM9,EVIL", "SMITH\nX", "\tTAB", "CAFÉ", "\x00"])
def test_line_breaks_controls_and_non_ascii_are_refused_without_echoing_the_value(value: str) -> None:
    for layout in (_PLAIN, FixedWidthFlatLayout(columns=({"field": "last_name", "length": 20},))):  # type: ignore[arg-type]
        with pytest.raises(ConformanceFailed) as err:
            render_flatfile_bytes(_view([value]), layout)
        assert value not in err.value.message
        assert err.value.details["layout_column"] == (1 if isinstance(layout, CsvFlatLayout) else 0)


def test_the_gate_catches_tampering() -> None:
    layout = _csv_layout()
    enrollment = _enrollment()
    good = render_flatfile_bytes(enrollment, layout)
    n = len(enrollment.table)

    def codes(data: bytes, expected: int = n) -> set[str]:
        report = check_flatfile(data, layout, expected_records=expected)
        assert not report.ok
        return {p.code for p in report.problems}

    assert "field_count" in codes(good.replace(b",CV-1007,E1001,", b",CV-1007,E1001,X,", 1))
    assert "formula" in codes(good.replace(b"'=HYPERLINK", b"=HYPERLINK"))
    assert "line_break_injection" in codes(good.replace(b"RIVERA", b"RIV\nERA", 1))
    assert "record_count" in codes(good, n + 1)
    assert "header_mismatch" in codes(good.replace(b"Action", b"Akshun", 1))
    assert "unterminated" in codes(good[:-2])
    assert "not_ascii" in codes(good.replace(b"RIVERA", "RIVÉRA".encode(), 1))
    assert "csv_syntax" in codes(good.replace(b'"O\'NEIL, JR"', b'"O\'NEIL"X, JR"', 1))

    fixed = _fixed_layout()
    text = render_flatfile_bytes(enrollment, fixed)
    report = check_flatfile(text.replace(b"E1001 ", b"E1001", 1), fixed, expected_records=n)
    assert {p.code for p in report.problems} == {"record_length"}
    report = check_flatfile(text.replace(b"19840309", b"1984-3-9", 1), fixed, expected_records=n)
    assert {p.code for p in report.problems} == {"date_shape"} and report.problems[0].record == 1
    # Problems name records, columns and rules only.
    assert all("RIVERA" not in p.message for p in report.problems)


# ----------------------------------------------------------------------------------- data problems
def test_overflow_is_a_data_error_by_row_and_truncate_cuts() -> None:
    long = "A" * 30
    layout = FixedWidthFlatLayout(columns=({"field": "last_name", "length": 10},))  # type: ignore[arg-type]
    with pytest.raises(DataError) as err:
        render_flatfile_bytes(_view(["OK", long]), layout)
    assert err.value.row == 3 and err.value.rule == "flatfile_length" and long not in err.value.message
    cut = FixedWidthFlatLayout(columns=({"field": "last_name", "length": 10, "overflow": "truncate"},))  # type: ignore[arg-type]
    assert render_flatfile_bytes(_view([long]), cut) == b"AAAAAAAAAA\r\n"


def test_a_value_without_a_code_is_a_data_error_by_row() -> None:
    layout = CsvFlatLayout(columns=({"field": "last_name", "codes": {"A": "1"}},), header=False)  # type: ignore[arg-type]
    with pytest.raises(DataError) as err:
        render_flatfile_bytes(_view(["A", "B"]), layout)
    assert err.value.row == 3 and err.value.rule == "flatfile_code"


@pytest.mark.parametrize(("layout", "message"), [
    ({"kind": "fixed-width", "columns": [{"field": "member_id", "length": 5},
                                         {"field": "dob", "length": 8, "start": 3}]}, "inside the previous"),
    ({"kind": "csv", "columns": [{"field": "dob", "date_format": "%B %d"}]}, "unsupported date directive"),
    ({"kind": "csv", "columns": [{"field": "member_id", "date_format": "%Y"}]}, "date fields only"),
    ({"kind": "csv", "columns": [{"field": "member_id", "value": "X"}]}, "exactly one of field and value"),
    ({"kind": "csv", "file_name": "roster.csv", "columns": [{"field": "member_id"}]}, "{control}"),
    ({"kind": "csv", "file_name": "../x{control}.csv", "columns": [{"field": "member_id"}]}, "plain file name"),
    ({"kind": "csv", "delimiter": "A", "columns": [{"field": "member_id"}]}, "punctuation"),
    ({"kind": "csv", "columns": [{"value": "a\tb"}]}, "printable ASCII"),
    ({"kind": "xml", "columns": [{"field": "member_id"}]}, "kind"),
])
def test_bad_layouts_are_config_errors_naming_the_field(tmp_path: Path, layout: dict[str, Any],
                                                        message: str) -> None:
    data = yaml.safe_load((ROOT / "mappings" / "clearview-csv.yaml").read_text())
    data["flatfile"] = layout
    path = tmp_path / "clearview-csv.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_mapping(path)
    assert message in err.value.message
    assert "flatfile" in err.value.message
