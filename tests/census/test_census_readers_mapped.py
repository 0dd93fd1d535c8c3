"""read_census over a memory map of the run's own staged copy (``private=True``) reads exactly what it
reads from a copy of the file's bytes: the same frame, dtypes included, or the same DataError (message,
file, row, column, rule, details), and it leaves nothing of the frame pointing into the map."""

from __future__ import annotations

import gc
import mmap
import tempfile
import weakref
import zipfile
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from carrierfeeds.census.generate import generate_census, write_census_csv
from carrierfeeds.census.readers import read_census
from carrierfeeds.config import CensusSchema, FixedWidthLayout, load_schema
from carrierfeeds.errors import DataError

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = load_schema(ROOT / "schemas" / "census-v1.yaml")  # utf-8-sig
ENCODINGS = ["utf-8-sig", "utf-8", "auto", "cp1252", "utf-16"]
HEADER = ("member_id,subscriber_id,relationship,last_name,first_name,dob,gender,plan_code,coverage_level,"
          "coverage_start,coverage_end")


def _outcome(read: Callable[[], pd.DataFrame]) -> tuple[str, Any]:
    try:
        return "frame", read()
    except DataError as exc:
        return "error", (str(exc), exc.file, exc.row, exc.column, exc.rule, exc.details)
    except Exception as exc:  # the same exception either way, even one that is not a DataError
        return type(exc).__name__, str(exc)


def _assert_same(path: Path, schema: CensusSchema) -> tuple[str, Any]:
    """Both ways of reading ``path`` agree; the outcome, for tests that want to know which it was."""
    copied = _outcome(lambda: read_census(path, schema))
    mapped = _outcome(lambda: read_census(path, schema, private=True))
    assert copied[0] == mapped[0], (copied[0], mapped[0])
    if copied[0] == "frame":
        pd.testing.assert_frame_equal(mapped[1], copied[1], check_exact=True)
    else:
        assert mapped[1] == copied[1]
    return copied


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Over 8 MiB of CSV, so the parser reads it in several of its 4 MiB blocks."""
    path = tmp_path_factory.mktemp("big") / "census.csv"
    write_census_csv(generate_census(20000, 11, as_of=date(2026, 11, 20)), path)
    data = path.read_bytes()
    assert len(data) > 8 << 20
    return data


@pytest.fixture
def maps(monkeypatch: pytest.MonkeyPatch) -> list[mmap.mmap]:
    """Every map read_census makes, kept here (the reader itself keeps none once it returns)."""
    made: list[mmap.mmap] = []
    real = mmap.mmap

    def mapping(*args: Any, **kwargs: Any) -> mmap.mmap:
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(mmap, "mmap", mapping)  # the reader calls mmap.mmap
    return made


# ------------------------------------------------------------------------------ what is read, errors
CELL = st.one_of(
    st.sampled_from(["", " ", "Núñez", '"a,b"', '"say ""hi"""', '"two\nlines"', "=1+1", "+1 (609) 555-0100", "-5",
                     "\u2003x", "x\u00a0", "\x00", "é", "\ufeff", "1990-01-31", "E", "M", '"', "a\rb"]),
    st.text(alphabet="ab ,\"\n\r\t\x00é=+-@\u2003\ufeff", max_size=6),
)
LEAD = st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b" \n", b"\n", b"\xef\xbb\xbf\xef\xbb\xbf",
                        b"\xe2\x80\x83"])
BREAK = st.sampled_from(["\n", "\r\n", "\n\n", "\n\r\n"])


@st.composite
def census_bytes(draw: st.DrawFn) -> tuple[bytes, str]:
    """A small census, well formed or not: odd cells, blank lines, short rows, BOMs, bad bytes."""
    rows = [HEADER]
    for _ in range(draw(st.integers(0, 5))):
        cells = draw(st.lists(CELL, min_size=10, max_size=12))
        rows.append(",".join(cells))
    text = draw(BREAK).join(rows) + draw(st.sampled_from(["", "\n", "\r\n", "\n\n\n"]))
    encoding = draw(st.sampled_from(ENCODINGS))
    codec = {"auto": "utf-8", "utf-8-sig": "utf-8"}.get(encoding, encoding)
    data = text.encode(codec, errors="replace")
    if draw(st.booleans()):  # a byte the declared encoding may not decode, somewhere
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\xff", b"\xc3(", b"\x81", b"\xed\xa0\x80"])) + data[at:]
    return draw(LEAD) + data, encoding


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(census_bytes())
@example((b"", "utf-8-sig"))  # an empty file cannot be mapped: it is still "file is empty"
@example((b"\xef\xbb\xbf", "utf-8-sig"))
@example((b"\xef\xbb\xbf" + HEADER.encode() + b"\n1,1,18,a,b,1990-01-01,M,P,EMP,2026-01-01,\n", "utf-8-sig"))
@example((HEADER.encode() + b"\n1,1,18,a,b,1990-01-01,M,P,EMP,2026-01-01,\n", "utf-8"))
@example((HEADER.encode() + b"\n1,1,18,a,b,1990-01-01,M,P,EMP,2026-01-01,", "cp1252"))
@example((HEADER.encode() + b"\n1,1,18,a\x00,b,1990-01-01,M,P,EMP,2026-01-01,\n", "utf-8"))
@example((HEADER.encode(), "utf-8"))  # header only, no line break
@example((HEADER.encode("utf-16"), "utf-16"))
@example((b"PK\x03\x04rest", "utf-8"))
def test_a_mapped_census_reads_as_a_copied_one(case: tuple[bytes, str]) -> None:
    data, encoding = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "census.csv"
        path.write_bytes(data)
        _assert_same(path, SCHEMA.model_copy(update={"encoding": encoding}))


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("bom", [False, True])
def test_a_large_mapped_census_reads_as_a_copied_one(tmp_path: Path, big: bytes, encoding: str, bom: bool) -> None:
    data = big.decode("utf-8").encode("utf-16") if encoding == "utf-16" else big
    path = tmp_path / "census.csv"
    # a UTF-8 BOM where it is one (cp1252 reads it as three letters of the first header)
    path.write_bytes((b"\xef\xbb\xbf" if bom and encoding.startswith(("utf-8", "auto")) else b"") + data)
    kind, frame = _assert_same(path, SCHEMA.model_copy(update={"encoding": encoding}))
    assert kind == "frame" and len(frame) > 30000


@pytest.mark.parametrize("fault", ["nul", "encoding", "field_count", "blank_line", "formula"])
def test_a_fault_deep_in_a_mapped_census_is_the_same_error(tmp_path: Path, big: bytes, fault: str) -> None:
    lines = big.split(b"\n")
    line = lines[20000]
    lines[20000] = {"nul": line[:5] + b"\x00" + line[5:], "encoding": line.replace(b'","', b'","\xc3(', 1),
                    "field_count": line + b',""', "blank_line": b"", "formula": line.replace(b'","', b'","=X', 1),
                    }[fault]
    path = tmp_path / "census.csv"
    path.write_bytes(b"\n".join(lines))
    kind, error = _assert_same(path, SCHEMA)
    assert kind == "error" and error[2] == 20001


def test_a_zipped_census_reads_the_same_mapped(tmp_path: Path, big: bytes) -> None:
    path = tmp_path / "census.csv"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("census.csv", big)
    assert _assert_same(path, SCHEMA.model_copy(update={"allow_zip": True}))[0] == "frame"
    assert _assert_same(path, SCHEMA)[1][4] == "archive"  # zips not allowed


WIDTHS = {"member_id": 12, "subscriber_id": 12, "relationship": 2, "last_name": 20, "first_name": 15, "dob": 10,
          "gender": 1, "plan_code": 10, "coverage_level": 3, "coverage_start": 10}
LAYOUT = FixedWidthLayout.model_validate({"header_lines": 1, "fields": [
    {"column": c, "start": 1 + sum(list(WIDTHS.values())[:i]), "width": w} for i, (c, w) in enumerate(WIDTHS.items())]})


@pytest.mark.parametrize("encoding", ["cp1252", "utf-8", "utf-8-sig", "auto", "utf-16"])
@pytest.mark.parametrize("fault", [None, "encoding", "nul", "long", "blank"])
def test_a_mapped_fixed_width_census_reads_as_a_copied_one(tmp_path: Path, encoding: str, fault: str | None) -> None:
    frame = generate_census(300, 5, as_of=date(2026, 11, 20))
    lines = ["EXPORT 20261120"] + ["".join(str(row[c])[:w].ljust(w) for c, w in WIDTHS.items()).rstrip()
                                   for _, row in frame.iterrows()]
    lines[100] = {None: lines[100], "encoding": lines[100], "nul": lines[100][:4] + "\x00",
                  "long": lines[100].ljust(200, "x"), "blank": "  "}[fault]
    codec = {"auto": "utf-8", "utf-8-sig": "utf-8"}.get(encoding, encoding)
    data = ("\r\n".join(lines) + "\r\n").encode(codec)
    if fault == "encoding" and encoding != "utf-16":  # a byte the codec cannot decode, on row 101
        at = data.index(lines[100].encode(codec)) + 30
        data = data[:at] + (b"\x81" if encoding == "cp1252" else b"\xff") + data[at:]
    path = tmp_path / "census.txt"
    path.write_bytes(data)
    kind, got = _assert_same(path, SCHEMA.model_copy(update={"format": "fixed_width", "fixed_width": LAYOUT,
                                                             "encoding": encoding}))
    if fault is None or (fault == "encoding" and encoding == "utf-16"):
        assert kind == "frame" and len(got) == len(lines) - 1
    else:
        assert kind == "error" and got[2] == 101 and got[4] == {"long": "record_length", "blank": "blank_line",
                                                                "nul": "nul_byte"}.get(fault, fault)


# ----------------------------------------------------------------------------------- the map itself
def test_the_frame_holds_nothing_of_the_map(tmp_path: Path, big: bytes, maps: list[mmap.mmap]) -> None:
    """Closing the map refuses (BufferError) while any view of it is alive: it closes once read_census
    returns, and the frame reads in full afterwards."""
    path = tmp_path / "census.csv"
    path.write_bytes(big)
    frame = read_census(path, SCHEMA, private=True)
    assert len(maps) == 1
    maps[0].close()
    assert maps[0].closed
    pd.testing.assert_frame_equal(frame, read_census(path, SCHEMA), check_exact=True)


@pytest.mark.parametrize("blank", [False, True])
def test_the_map_is_unmapped_when_read_census_returns(tmp_path: Path, big: bytes, monkeypatch: pytest.MonkeyPatch,
                                                      blank: bool) -> None:
    """Nothing keeps the map once the frame is made; after an error, nothing once the error is gone."""
    path = tmp_path / "census.csv"
    path.write_bytes(big.replace(b"\n", b"\n\n", 1) if blank else big)
    alive: list[weakref.ref[mmap.mmap]] = []
    real = mmap.mmap

    def mapping(*args: Any, **kwargs: Any) -> mmap.mmap:
        made = real(*args, **kwargs)
        alive.append(weakref.ref(made))
        return made

    monkeypatch.setattr(mmap, "mmap", mapping)  # the reader calls mmap.mmap
    if blank:
        with pytest.raises(DataError) as info:
            read_census(path, SCHEMA, private=True)
        assert info.value.rule == "blank_line"
        del info  # its traceback's frames hold views of the map: it goes with them, not before
        gc.collect()
        assert len(alive) == 1 and alive[0]() is None
        return
    frame = read_census(path, SCHEMA, private=True)
    assert len(alive) == 1 and alive[0]() is None
    assert frame["member_id"].str.len().sum() > 0


def test_a_copied_read_makes_no_map(tmp_path: Path, big: bytes, maps: list[mmap.mmap]) -> None:
    path = tmp_path / "census.csv"
    path.write_bytes(big)
    read_census(path, SCHEMA)
    assert maps == []
