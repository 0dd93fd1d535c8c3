"""Return-file readers: the project's 834 reader and the flat-file layouts read back; bad files named."""

from __future__ import annotations

from pathlib import Path

import pytest

from carrierfeeds.census.columns import CANONICAL_COLUMNS
from carrierfeeds.census.tokens import MemberTokenizer
from carrierfeeds.enrollment import Enrollment
from carrierfeeds.errors import DataError
from carrierfeeds.outputs.flatfile import render_flatfile_bytes
from carrierfeeds.outputs.layouts import CsvFlatLayout, FixedWidthFlatLayout
from carrierfeeds.reconcile.readers import read_return_bytes, read_return_file
from carrierfeeds.reconcile.roster import ROSTER_COLUMNS, roster_from_view
from carrierfeeds.x12.read import read_834

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TOKENS = MemberTokenizer(b"r" * 32)
FIELDS = ("subscriber_id", "member_id", "relationship", "last_name", "first_name", "dob", "gender", "ssn",
          "hd03", "hd04", "hd05", "coverage_start", "coverage_end")
CSV = CsvFlatLayout(columns=tuple({"header": f.upper(), "field": f} for f in FIELDS),  # type: ignore[arg-type]
                    date_format="%m/%d/%Y")
FIXED = FixedWidthFlatLayout(columns=tuple({"field": f, "length": 30} for f in FIELDS))  # type: ignore[arg-type]


def _view() -> Enrollment:
    table = read_834((FIXTURES / "x12" / "full-file-family.834").read_bytes())
    return Enrollment(table=table, member_count=table["member_id"].nunique(), subscriber_count=1,
                      coverage_count=len(table), allowlist=tuple(CANONICAL_COLUMNS))


def test_834_roster_holds_tokens_and_hashes_only() -> None:
    data = (FIXTURES / "x12" / "full-file-family.834").read_bytes()
    roster = read_return_bytes(data, fmt="834", tokenizer=TOKENS, file_name="back.834")
    assert tuple(roster.table.columns) == ROSTER_COLUMNS and len(roster) > 0
    view = read_834(data)
    text = roster.table.to_csv()
    for column in ("member_id", "last_name", "first_name", "dob", "ssn"):
        for value in view[column]:
            if value:
                assert value not in text, column


@pytest.mark.parametrize("layout", [CSV, FIXED], ids=["csv", "fixed_width"])
def test_flat_export_reads_back_to_the_rosters_own_view(layout: CsvFlatLayout | FixedWidthFlatLayout) -> None:
    view = _view()
    data = render_flatfile_bytes(view, layout)
    fmt = "csv" if isinstance(layout, CsvFlatLayout) else "fixed_width"
    got = read_return_bytes(data, fmt=fmt, tokenizer=TOKENS, layout=layout, file_name="back")
    want = roster_from_view(view.table, TOKENS, source="view")
    assert got.table.equals(want.table)


def test_csv_short_line_names_file_and_line() -> None:
    data = render_flatfile_bytes(_view(), CSV).replace(b"\r\n", b"\n")
    lines = data.split(b"\n")
    lines[2] = lines[2].rsplit(b",", 1)[0]
    with pytest.raises(DataError) as info:
        read_return_bytes(b"\n".join(lines), fmt="csv", tokenizer=TOKENS, layout=CSV, file_name="carrier.csv")
    assert info.value.file == "carrier.csv" and info.value.row == 3 and info.value.rule == "flat_fields"


def test_csv_bad_date_names_line_and_column_never_the_value() -> None:
    data = render_flatfile_bytes(_view(), CSV).replace(b"\r\n", b"\n")
    lines = data.split(b"\n")
    cells = lines[1].split(b",")
    cells[5] = b"1984-03-09"
    lines[1] = b",".join(cells)
    with pytest.raises(DataError) as info:
        read_return_bytes(b"\n".join(lines), fmt="csv", tokenizer=TOKENS, layout=CSV, file_name="carrier.csv")
    assert info.value.row == 2 and "column 6" in str(info.value.column)
    assert "1984" not in info.value.message


def test_csv_wrong_header_is_refused() -> None:
    data = render_flatfile_bytes(_view(), CSV).replace(b"MEMBER_ID", b"MEMBER")
    with pytest.raises(DataError) as info:
        read_return_bytes(data, fmt="csv", tokenizer=TOKENS, layout=CSV, file_name="carrier.csv")
    assert info.value.row == 1 and info.value.rule == "flat_header"


def test_fixed_width_long_record_names_its_line() -> None:
    data = render_flatfile_bytes(_view(), FIXED).replace(b"\r\n", b"\n")
    lines = data.split(b"\n")
    lines[1] += b"XX"
    with pytest.raises(DataError) as info:
        read_return_bytes(b"\n".join(lines), fmt="fixed_width", tokenizer=TOKENS, layout=FIXED, file_name="f.txt")
    assert info.value.row == 2 and info.value.rule == "flat_length"


def test_non_ascii_byte_names_line_and_character() -> None:
    data = render_flatfile_bytes(_view(), CSV).replace(b"\r\n", b"\n")
    data = data.replace(b"\n", b"\n\xe9", 1)
    with pytest.raises(DataError) as info:
        read_return_bytes(data, fmt="csv", tokenizer=TOKENS, layout=CSV, file_name="carrier.csv")
    assert info.value.row == 2 and info.value.rule == "flat_charset"


def test_834_not_x12_and_bad_date_are_clear_errors() -> None:
    with pytest.raises(DataError) as info:
        read_return_bytes(b"hello", fmt="834", tokenizer=TOKENS, file_name="x.834")
    assert info.value.file == "x.834"
    data = (FIXTURES / "x12" / "full-file-family.834").read_bytes().replace(b"D8*20", b"D8*2X", 1)
    with pytest.raises(DataError) as info:
        read_return_bytes(data, fmt="834", tokenizer=TOKENS, file_name="x.834")
    assert info.value.rule == "x12_date"


def test_size_cap_refuses_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.834"
    path.write_bytes((FIXTURES / "x12" / "full-file-family.834").read_bytes())
    with pytest.raises(DataError) as info:
        read_return_file(path, fmt="834", tokenizer=TOKENS, max_bytes=100)
    assert info.value.rule == "size_cap" and info.value.file == "big.834"


def test_834_read_in_pieces_equals_read_whole() -> None:
    from carrierfeeds.reconcile.readers import _read_834_roster

    for name in ("full-file-family.834", "full-file-split-transaction-sets.834", "full-file-terminated-coverage.834"):
        data = (FIXTURES / "x12" / name).read_bytes()
        whole = roster_from_view(read_834(data), TOKENS, source="x").table
        for size in (1, 2, 3, 1000):
            assert _read_834_roster(data, tokenizer=TOKENS, file_name=name, chunk_members=size).table.equals(whole)


def test_roster_built_in_slices_equals_built_whole() -> None:
    view = read_834((FIXTURES / "x12" / "full-file-family.834").read_bytes())
    whole = roster_from_view(view, TOKENS, source="x").table
    for rows in (1, 2, 5):
        assert roster_from_view(view, TOKENS, source="x", chunk_rows=rows).table.equals(whole)


def test_834_streamed_in_small_blocks_and_pieces_gives_the_same_roster(tmp_path: Path) -> None:
    """Blocks of a few bytes split member boundaries (and CR LF line breaks) anywhere; pieces of one
    member each join into the roster a whole read gives."""
    import io

    from carrierfeeds.reconcile.readers import _read_834_stream

    data = (FIXTURES / "x12" / "full-file-family.834").read_bytes()
    whole = _read_834_stream(io.BytesIO(data), tokenizer=TOKENS, file_name="back.834", chunk_members=10_000)
    assert whole.members > 1
    for text in (data, data.replace(b"~", b"~\r\n")):
        for block, chunk in ((7, 1), (64, 2), (1 << 20, 1)):
            got = _read_834_stream(io.BytesIO(text), tokenizer=TOKENS, file_name="back.834", chunk_members=chunk,
                                   block_bytes=block)
            assert got.table.astype(object).equals(whole.table.astype(object)), (block, chunk)
    path = tmp_path / "back.834"
    path.write_bytes(data)
    assert read_return_file(path, fmt="834", tokenizer=TOKENS).table.astype(object).equals(whole.table.astype(object))


def test_834_byte_outside_ascii_is_named_by_line_across_blocks() -> None:
    import io

    from carrierfeeds.reconcile.readers import _read_834_stream

    data = (FIXTURES / "x12" / "full-file-family.834").read_bytes().replace(b"~", b"~\n")
    at = data.index(b"INS*", 300)
    bad = data[:at + 2] + b"\xe9" + data[at + 3:]
    line = bad.count(b"\n", 0, at + 2) + 1
    for block in (5, 1 << 20):
        with pytest.raises(DataError) as info:
            _read_834_stream(io.BytesIO(bad), tokenizer=TOKENS, file_name="x.834", block_bytes=block)
        assert (info.value.row, info.value.rule) == (line, "flat_charset")
        assert info.value.details["character"] == 3
