"""Pathological cells (long digit runs after a sign ending in a letter, repeated signs, nested quotes, huge
cells) get the right finding: over the schema's ``max_cell_length`` a ``cell_too_long`` DataError naming
file, row and column; else a formula-looking cell that is not a number is ``formula_like_cell``; else the
cell is read as it is. The expected finding comes from a plain-Python statement of each rule, not from
the reader's own regexes. No timing is asserted: benchmarks/pathological_cells.py measures that."""

from __future__ import annotations

import csv
import io
import string
import tempfile
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carrierfeeds.census.generate import generate_census
from carrierfeeds.census.readers import read_census
from carrierfeeds.config import load_schema
from carrierfeeds.errors import DataError

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = load_schema(ROOT / "schemas" / "census-v1.yaml")
COLUMNS = ("first_name", "last_name", "zip", "ssn", "phone", "dob", "address1")
_NUMBER_CHARS = set(string.digits) | set("().-/")


def _is_number(cell: str) -> bool:
    """The reader's "plainly a signed number or a phone number" rule, stated without a regex."""
    body = cell[1:] if cell[:1] in ("+", "-") else cell
    return any(c in string.digits for c in body) and all(c in _NUMBER_CHARS or c.isspace() for c in body)


def _expected(cell: str, limit: int) -> str | None:
    text = cell.strip()
    if len(text) > limit:
        return "cell_too_long"
    if text[:1] in ("=", "@") or (text[:1] in ("+", "-") and not _is_number(text)):
        return "formula_like_cell"
    return None


@pytest.fixture(scope="module")
def base() -> pd.DataFrame:
    return generate_census(6, 3, as_of=date(2026, 11, 20)).drop(columns=["row_number"], errors="ignore").astype(str)


_signs = st.text(alphabet="+-", min_size=0, max_size=4)
_digit_runs = st.builds(lambda s, n, tail: s + "1" * n + tail, _signs, st.integers(0, 4000),
                        st.sampled_from(["", "x", "1", " 1", "-", "a1", ")", "=1"]))
_repeated_signs = st.builds(lambda s, tail: s + tail, st.text(alphabet="+-", min_size=1, max_size=4000),
                            st.sampled_from(["", "1", "1x", "x", " "]))
_nested_quotes = st.builds(lambda k, body: '"' * k + body + '"' * k, st.integers(1, 3000),
                           st.sampled_from(["", "a", "-1", "=1", "1,2", "x\ny"]))
_huge = st.builds(lambda n, fill, lead: lead + fill * n, st.integers(1000, 200_000),
                  st.sampled_from(["1", "a", " ", "-", "\""]), st.sampled_from(["", "-", "=", "+"]))
_short = st.text(alphabet=string.ascii_letters + string.digits + " +-=@()./\"',", max_size=40)
CELLS = st.one_of(_digit_runs, _repeated_signs, _nested_quotes, _huge, _short)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(cell=CELLS, column=st.sampled_from(COLUMNS), at=st.integers(0, 5),
       limit=st.sampled_from([SCHEMA.max_cell_length, 64, 5000]))
def test_a_pathological_cell_gets_the_right_finding(base: pd.DataFrame, cell: str, column: str, at: int,
                                                    limit: int) -> None:
    if not cell.strip():
        return  # a blank cell is a missing value: validation's business, not the reader's
    frame = base.copy()
    frame.iloc[at, frame.columns.get_loc(column)] = cell
    buf = io.StringIO()
    frame.to_csv(buf, index=False, quoting=csv.QUOTE_MINIMAL)
    schema = SCHEMA.model_copy(update={"max_cell_length": limit})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "census.csv"
        path.write_text(buf.getvalue())
        expected = _expected(cell, limit)
        if expected is None:
            census = read_census(path, schema)
            assert census[column].iloc[at] == cell.strip()
            return
        with pytest.raises(DataError) as info:
            read_census(path, schema)
    err = info.value
    assert (err.rule, err.file, err.row, err.column) == (expected, "census.csv", at + 2, column)
    if len(cell.strip()) >= 12:
        assert cell.strip() not in str(err) and cell.strip() not in repr(err.as_dict())


def test_the_default_cap_is_a_schema_setting_with_a_clear_error(tmp_path: Path, base: pd.DataFrame) -> None:
    assert SCHEMA.max_cell_length == 1024
    frame = base.copy()
    frame.loc[4, "first_name"] = "Q" * 1025
    path = tmp_path / "census.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError) as info:
        read_census(path, SCHEMA, display_name="acme.csv")
    assert str(info.value).startswith("acme.csv, row 6, column 'first_name': cell is longer than")
    assert info.value.details == {"file": "acme.csv", "row": 6, "column": "first_name", "rule": "cell_too_long",
                                  "cells": 1, "max_cell_length": 1024}
    assert "QQQQ" not in str(info.value)


def test_a_huge_cell_in_a_file_read_row_by_row_is_cell_too_long(tmp_path: Path, base: pd.DataFrame) -> None:
    """A blank line sends the file through the csv module, whose own field cap comes first: still named
    cell_too_long at its row, not a syntax error."""
    frame = base.copy()
    frame.loc[2, "first_name"] = "Q" * 200_000
    lines = frame.to_csv(index=False).splitlines(keepends=True)
    path = tmp_path / "census.csv"
    path.write_text("".join([*lines[:6], "\n", *lines[6:]]))
    with pytest.raises(DataError) as info:
        read_census(path, SCHEMA)
    assert (info.value.rule, info.value.row) == ("cell_too_long", 4)
    assert "QQQQ" not in str(info.value)


@pytest.mark.parametrize(("chars", "refused"), [(1024, False), (1025, True)])
@pytest.mark.parametrize("private", [False, True])
def test_the_cap_counts_characters_not_bytes(tmp_path: Path, base: pd.DataFrame, chars: int, refused: bool,
                                             private: bool) -> None:
    """A cell of two-byte characters is over the cap in bytes long before it is in characters: the byte
    bound the reader checks first (Arrow offsets) only ever lets a column skip the count of characters."""
    frame = base.copy()
    frame.loc[3, "last_name"] = "é" * chars  # 2 bytes a character in UTF-8
    path = tmp_path / "census.csv"
    frame.to_csv(path, index=False)
    if not refused:
        assert read_census(path, SCHEMA, private=private)["last_name"].iloc[3] == "é" * chars
        return
    with pytest.raises(DataError) as info:
        read_census(path, SCHEMA, private=private)
    assert (info.value.rule, info.value.row, info.value.column) == ("cell_too_long", 5, "last_name")
