"""read_census's byte-level checks (UTF-8, NUL, blank file, blank lines, strip, formula signs) agree with
the decoded-text and per-cell checks they stand in for, errors included (file, row, column, rule)."""

from __future__ import annotations

import itertools
import logging
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from carrierfeeds.census.generate import generate_census, write_census_csv
from carrierfeeds.census.readers import (
    _FORMULA_START,
    _has_blank_line,
    _is_utf8,
    _read_arrow,
    _stripped,
    read_census,
)
from carrierfeeds.config import CensusSchema, load_schema
from carrierfeeds.errors import DataError

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = load_schema(ROOT / "schemas" / "census-v1.yaml")  # utf-8-sig
UTF8 = SCHEMA.model_copy(update={"encoding": "utf-8"})
BOTH = pytest.mark.parametrize("schema", [SCHEMA, UTF8], ids=["utf-8-sig", "utf-8"])


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, bytes]:
    """Over 2 MiB of CSV: invalid bytes, NUL bytes and blank lines deep in a file."""
    frame = generate_census(5000, 7, as_of=date(2026, 11, 20))
    path = tmp_path_factory.mktemp("big") / "census.csv"
    write_census_csv(frame, path)
    data = path.read_bytes()
    assert len(data) > 2 << 20
    return frame, data


def _pyarrow_reads(data: bytes) -> bool:
    """Whether pyarrow reads ``data`` in the reader's 4 MiB blocks (not when a quoted line break falls on a
    block boundary)."""
    try:
        _read_arrow(data, ",", len(data[:data.index(b"\n")].split(b",")))
    except ValueError:
        return False
    return True


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "census.csv"
    path.write_bytes(data)
    return path


def _error(path: Path, schema: CensusSchema = SCHEMA) -> DataError:
    with pytest.raises(DataError) as info:
        read_census(path, schema)
    assert info.value.file == path.name
    return info.value


# ------------------------------------------------------------------------------------------ UTF-8
@given(st.binary(max_size=40))
@example(b"\xed\xa0\x80")  # a surrogate
@example(b"\xc0\x80")  # overlong NUL
@example(b"\xf4\x90\x80\x80")  # past U+10FFFF
@example(b"\xe2\x82")  # truncated at the end
@example(b"\xef\xbb\xbfa")
@example("Núñez \u2003 \U0001f600".encode())
def test_is_utf8_agrees_with_the_codec(data: bytes) -> None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        assert not _is_utf8(data)
    else:
        assert _is_utf8(data)


@BOTH
@pytest.mark.parametrize("bom", [False, True])
def test_invalid_utf8_deep_in_a_file_names_its_row(tmp_path: Path, big: tuple[pd.DataFrame, bytes],
                                                   schema: CensusSchema, bom: bool) -> None:
    lines = big[1].split(b"\n")
    bad = b"\xc3("  # a lead byte without its continuation
    lines[4000] = lines[4000].replace(b'","', b'","' + bad, 1)
    data = b"\n".join(lines)
    err = _error(_write(tmp_path, (b"\xef\xbb\xbf" if bom else b"") + data), schema)
    assert err.rule == "encoding" and err.row == 4001
    if not bom:
        assert f"byte offset {data.index(bad)}" in str(err)


@BOTH
@pytest.mark.parametrize("bom", [False, True])
def test_a_nul_byte_deep_in_a_file_names_its_row(tmp_path: Path, big: tuple[pd.DataFrame, bytes],
                                                 schema: CensusSchema, bom: bool) -> None:
    lines = big[1].split(b"\n")
    lines[3000] = lines[3000][:5] + b"\x00" + lines[3000][5:]
    err = _error(_write(tmp_path, (b"\xef\xbb\xbf" if bom else b"") + b"\n".join(lines)), schema)
    assert err.rule == "nul_byte" and err.row == 3001


@BOTH
@pytest.mark.parametrize("text", ["", "\n\r\n", " \t\x0b\x0c\n", "\u2003\n", "\ufeff\n", "\ufeff\ufeff", "\x1c\x1f",
                                  "\u00a0 \u3000\n", "\x85", "\n\u2028"])
def test_a_file_of_whitespace_is_empty(tmp_path: Path, schema: CensusSchema, text: str) -> None:
    assert _error(_write(tmp_path, text.encode()), schema).rule == "empty_file"


@BOTH
@pytest.mark.parametrize("lead", ["\u2003", "\x1c", "\ufeff", "\u00a0 ", " \n\u00a0"])
def test_a_header_behind_unicode_whitespace_reads_as_before(tmp_path: Path, big: tuple[pd.DataFrame, bytes],
                                                            schema: CensusSchema, lead: str) -> None:
    # The byte checks cannot tell whether such a file is blank: the decoded text decides, as it always
    # did. The header names are stripped (an unquoted header here; csv keeps a quote after a space).
    header, body = big[1].split(b"\n", 1)
    data = header.replace(b'"', b"") + b"\n" + body
    clean = read_census(_write(tmp_path, data), schema)
    if "\n" in lead:  # a first line of whitespace is a header without names
        assert _error(_write(tmp_path, lead.encode() + data), schema).rule == "blank_header"
        return
    pd.testing.assert_frame_equal(read_census(_write(tmp_path, lead.encode() + data), schema), clean)


# ------------------------------------------------------------------------------------- blank lines
@given(st.binary(max_size=40).map(lambda b: bytes(b"\n\ra"[x % 3] for x in b)), st.integers(0, 40),
       st.sampled_from([1, 2, 3, 5, 1 << 22]))
def test_blank_line_scan_agrees_with_bytes_find(data: bytes, end: int, step: int) -> None:
    end = min(end, len(data))
    expected = data.find(b"\n\n", 0, end) >= 0 or data.find(b"\n\r\n", 0, end) >= 0
    assert _has_blank_line(data, end, step=step) is expected


def test_blank_line_scan_across_its_steps() -> None:
    data = bytearray(b"a\n" * (3 << 21))
    assert not _has_blank_line(bytes(data), len(data))
    for at in ((1 << 22) - 1, 1 << 22, (1 << 22) + 1):
        for pattern in (b"\n\n", b"\n\r\n"):
            changed = bytearray(data)
            changed[at:at + len(pattern)] = pattern
            assert _has_blank_line(bytes(changed), len(changed)), (at, pattern)


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("at", [1, 2, 4321, -1])
def test_a_blank_line_names_its_row(tmp_path: Path, big: tuple[pd.DataFrame, bytes], newline: str, at: int) -> None:
    lines = big[1].decode().split("\n")[:-1]
    at = at % len(lines)
    lines.insert(at, "")
    err = _error(_write(tmp_path, (newline.join(lines) + newline).encode()))
    assert (err.rule, err.row) == ("blank_line", at + 1)


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_trailing_blank_lines_are_ignored(tmp_path: Path, big: tuple[pd.DataFrame, bytes], newline: str) -> None:
    lines = big[1].decode().split("\n")[:-1]
    got = read_census(_write(tmp_path, (newline.join(lines) + newline * 3).encode()), SCHEMA)
    pd.testing.assert_frame_equal(got, read_census(_write(tmp_path, big[1]), SCHEMA))


# ------------------------------------------------------------------------------ strip and formulas
EDGY = ["", " ", "x", " x", "x ", "\u2003x", "x\u00a0", "\x85x", "x\u3000", "\u200bx", "x\u200b", "\ufeffx", "é",
        "Ω ", "\x1cx", "x\x1f", "a b", "\t-1\t", "=x", " =x", "\u2003=x", "\u00a0@x", "+1 (609) 555-0100", "-", "@"]


def _series(cells: list[str], cuts: list[int]) -> pd.Series:
    """A text column held as several Arrow chunks, some of them slices (a non-zero offset)."""
    whole = pa.array(["pad", *cells, "pad"], type=pa.large_string())
    bounds = sorted({1, len(cells) + 1, *(1 + c % (len(cells) + 1) for c in cuts)})
    chunks = [whole.slice(a, b - a) for a, b in itertools.pairwise(bounds)]
    return pd.Series(pd.array(pa.chunked_array(chunks, type=pa.large_string()), dtype="str"))


@given(st.lists(st.one_of(st.sampled_from(EDGY), st.text(alphabet=" \t\u2003\u00a0\x85\u200b\ufeff=+-@x1é",
                                                                 max_size=6)), max_size=30),
       st.lists(st.integers(0, 40), max_size=4))
@example(["", "=x"], [1])  # an empty cell's neighbour starts with a sign
@example(["=x", ""], [])
@example([" ", "", "-1"], [2])
@example(["ab", "cd", "José", "-1", "ef", "gh", "ij", "kl"], [3])  # a few non-ASCII edges, none stripped
@example(["ab", "cd", "x\u2003", "=1", "ef", "gh", "ij", "kl"], [])  # a few, one of them stripped
@example(["ab", "cd", "\u2003=1", "ef", "gh", "ij", "kl", "mn"], [5])  # a sign only after the strip
def test_stripped_agrees_with_str_strip(cells: list[str], cuts: list[int]) -> None:
    got, signed = _stripped(_series(cells, cuts))
    assert got.tolist() == [c.strip() for c in cells]
    assert signed.tolist() == [i for i, c in enumerate(cells) if c.strip().startswith(_FORMULA_START)]
    assert got.dtype == "str"


def test_cells_are_stripped_like_str_strip(tmp_path: Path, big: tuple[pd.DataFrame, bytes]) -> None:
    frame = big[0].copy()
    safe = [c for c in EDGY if not c.strip().startswith(_FORMULA_START) or c.strip() == "+1 (609) 555-0100"]
    for i, column in enumerate(["address2", "department", "city", "middle_initial"]):
        cells = [safe[(j + i) % len(safe)] for j in range(len(frame))]
        frame[column] = cells
    path = tmp_path / "census.csv"
    write_census_csv(frame, path)
    got = read_census(path, SCHEMA)
    for column in ["address2", "department", "city", "middle_initial", "last_name", "member_id"]:
        assert got[column].tolist() == [c.strip() for c in frame[column]], column


@pytest.mark.parametrize("position", [0, 2600, -1])
@pytest.mark.parametrize(("column", "cell"), [("city", "=HYPERLINK(1)"), ("zip", "\u2003=1+1"),
                                              ("member_id", "@SUM(1)"), ("address2", "-x")])
def test_a_formula_in_an_otherwise_clean_column_names_its_row_and_column(
        tmp_path: Path, big: tuple[pd.DataFrame, bytes], position: int, column: str, cell: str) -> None:
    frame = big[0].copy()
    index = position % len(frame)
    frame.loc[index, column] = cell
    path = tmp_path / "census.csv"
    write_census_csv(frame, path)
    err = _error(path)
    assert (err.rule, err.row, err.column, err.details["cells"]) == ("formula_like_cell", index + 2,
                                                                     SCHEMA.header_for(column), 1)
    assert cell.strip() not in str(err)


def test_signed_numbers_next_to_empty_cells_pass_and_formulas_are_counted(
        tmp_path: Path, big: tuple[pd.DataFrame, bytes]) -> None:
    frame = big[0].copy()
    frame["address2"] = ""
    frame.loc[[10, 11, 3000], "address2"] = ["-5", "+1 (609) 555-0100", "- 12.5"]  # numbers and phones pass
    path = tmp_path / "census.csv"
    write_census_csv(frame, path)
    assert read_census(path, SCHEMA)["address2"].iloc[[9, 10, 11, 12]].tolist() == ["", "-5", "+1 (609) 555-0100", ""]
    # after an empty cell, before an empty cell, and in two columns: the earliest row is named
    frame.loc[[20, 4000], "address2"] = ["=1", "@x"]
    frame.loc[15, "department"] = "+x"
    write_census_csv(frame, path)
    err = _error(path)
    assert (err.row, err.column, err.details["cells"]) == (17, SCHEMA.header_for("department"), 3)


def test_reading_leaves_the_text_columns_as_str(tmp_path: Path, big: tuple[pd.DataFrame, bytes]) -> None:
    got = read_census(_write(tmp_path, big[1]), SCHEMA)
    assert (got.drop(columns="row_number").dtypes == "str").all()
    assert got["row_number"].to_numpy().tolist() == np.arange(2, len(big[0]) + 2).tolist()


@pytest.mark.parametrize("change", ["extra", "short"])
def test_a_row_pyarrow_refuses_deep_in_a_file_is_named(tmp_path: Path, big: tuple[pd.DataFrame, bytes],
                                                       change: str) -> None:
    lines = big[1].split(b"\n")
    row = 6001
    lines[row - 1] = lines[row - 1] + b',"x"' if change == "extra" else lines[row - 1].rsplit(b",", 1)[0]
    err = _error(_write(tmp_path, b"\n".join(lines)))
    assert (err.rule, err.row) == ("field_count", row)


@pytest.mark.parametrize("copies", [1, 3])
def test_quoted_line_breaks_read_whatever_the_blocks(tmp_path: Path, big: tuple[pd.DataFrame, bytes], copies: int,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    # pyarrow reads a quoted line break inside a block (one block: 2 MiB) and refuses one on a block
    # boundary (three 4 MiB blocks here), and the C parser reads the file: either way the same cells
    # The census-v1 columns only (later optional columns are read back empty).
    frame = pd.concat([big[0]] * copies, ignore_index=True).loc[:, "member_id":"coverage_end"]
    path = tmp_path / "census.csv"
    # Where the block boundaries fall depends on the census's width: pad the line breaks' cells until a
    # boundary falls inside quotes for three copies (as pyarrow itself finds it), so the test keeps
    # covering the fallback whatever columns the canonical census grows.
    for pad in range(16):
        frame["address2"] = [f"Apt {i}{'-' * pad}\nBldg {i % 7}" if i % 3 else "" for i in range(len(frame))]
        write_census_csv(frame, path)
        if copies == 1 or not _pyarrow_reads(path.read_bytes()):
            break
    caplog.set_level(logging.INFO)
    got = read_census(path, SCHEMA)
    assert ("checking it row by row" in caplog.text) is (copies > 1)
    assert got["address2"].tolist() == frame["address2"].tolist()
    assert got["member_id"].tolist() == frame["member_id"].tolist()
    assert got["row_number"].tolist() == list(range(2, len(frame) + 2))


def test_formulas_and_strips_in_later_chunks_name_their_rows(tmp_path: Path, big: tuple[pd.DataFrame, bytes]) -> None:
    # three copies: 6.6 MiB, read in two 4 MiB blocks, so every column comes in two chunks
    frame = pd.concat([big[0]] * 3, ignore_index=True)
    last = len(frame) - 1
    frame.loc[[5, last - 1], "city"] = [" Trenton\u2003", "\u00a0Camden"]
    path = tmp_path / "census.csv"
    write_census_csv(frame, path)
    got = read_census(path, SCHEMA)
    assert got["city"].tolist() == [c.strip() for c in frame["city"]]
    frame.loc[last, "zip"] = "\u2003@1"
    frame.loc[last - 2, "department"] = "=1"
    write_census_csv(frame, path)
    err = _error(path)
    assert (err.row, err.column, err.details["cells"]) == (last, SCHEMA.header_for("department"), 2)
