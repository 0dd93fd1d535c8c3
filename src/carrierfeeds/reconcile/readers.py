"""Read a carrier's return file (an 834 full file, or a CSV / fixed-width export) into a :class:`Roster`.

The 834 goes through the project's own reader (:func:`carrierfeeds.x12.read.read_834`); flat exports
through the same declarative layout classes the flat-file writer uses, read instead of written. A bad
file is a :class:`DataError` naming the file, the line (``row``) and the column, never a value, raised
before anything is compared, so a bad file is never half-applied. Identity values are hashed before a
roster leaves this module.
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Final, Literal

import pandas as pd

from carrierfeeds.census.columns import RELATIONSHIP_INS02
from carrierfeeds.census.tokens import MemberTokenizer
from carrierfeeds.errors import DataError
from carrierfeeds.outputs.flatfile import FORMULA_CHARS, NEUTRALISER
from carrierfeeds.outputs.layouts import DATE_FIELDS, CsvColumn, CsvFlatLayout, FixedColumn, FixedWidthFlatLayout
from carrierfeeds.reconcile.roster import Roster, roster_from_view
from carrierfeeds.x12.read import read_834

log = logging.getLogger(__name__)

ReturnFormat = Literal["834", "csv", "fixed_width"]
#: Return files larger than this are refused unless the feed's ``reconciliation.max_bytes`` says otherwise.
DEFAULT_MAX_BYTES: Final[int] = 512 << 20
_RELATIONSHIP_CODES: Final[dict[str, str]] = dict(RELATIONSHIP_INS02)
_DATE_GROUPS: Final[dict[str, str]] = {"%Y": r"(?P<Y>\d{4})", "%m": r"(?P<m>\d{2})", "%d": r"(?P<d>\d{2})",
                                       "%y": r"(?P<y>\d{2})"}
_DIRECTIVE = re.compile(r"%.")
_CCYYMMDD = re.compile(r"^(\d{8})?$")
#: Members read per piece of an 834: the project's reader holds a dict per coverage row, so a whole
#: million-member file at once needs gigabytes; in pieces the peak is one piece plus the hashed roster
#: (figures in benchmarks/README.md).
CHUNK_MEMBERS: Final[int] = 50_000


def read_return_file(path: Path, *, fmt: ReturnFormat, tokenizer: MemberTokenizer,
                     layout: CsvFlatLayout | FixedWidthFlatLayout | None = None,
                     max_bytes: int = DEFAULT_MAX_BYTES, plan_lines: Mapping[str, str] | None = None) -> Roster:
    """The roster in the carrier's file at ``path``; refuses a file over ``max_bytes`` before reading it.

    ``plan_lines`` maps a plan description (HD04) to its insurance line (HD03) for flat exports that
    carry only the plan, so their coverage lines key the same way as the 834 view's.
    """
    name = path.name
    size = path.stat().st_size
    if size > max_bytes:
        raise DataError(f"file is {size} bytes, over the feed's limit of {max_bytes}", file=name,
                        rule="size_cap", details={"size": size, "max_bytes": max_bytes})
    data = path.read_bytes()
    return read_return_bytes(data, fmt=fmt, tokenizer=tokenizer, layout=layout, file_name=name,
                             plan_lines=plan_lines)


def read_return_bytes(data: bytes, *, fmt: ReturnFormat, tokenizer: MemberTokenizer, file_name: str,
                      layout: CsvFlatLayout | FixedWidthFlatLayout | None = None,
                      plan_lines: Mapping[str, str] | None = None) -> Roster:
    """The roster in ``data`` (see :func:`read_return_file`)."""
    if fmt == "834":
        roster = _read_834_roster(data, tokenizer=tokenizer, file_name=file_name)
        log.info("return file read: %d coverage rows, %d members, format 834", len(roster), roster.members)
        return roster
    if fmt == "csv":
        if not isinstance(layout, CsvFlatLayout):
            raise DataError("a CSV return file needs a CSV layout", file=file_name, rule="layout")
        view = _read_csv_view(data, layout, file_name=file_name)
    else:
        if not isinstance(layout, FixedWidthFlatLayout):
            raise DataError("a fixed-width return file needs a fixed-width layout", file=file_name, rule="layout")
        view = _read_fixed_view(data, layout, file_name=file_name)
    if plan_lines and (view.get("hd03") is None or bool((view["hd03"] == "").all())) and "hd04" in view:
        view["hd03"] = view["hd04"].map(dict(plan_lines)).fillna("").astype(object)
    roster = roster_from_view(view, tokenizer, source=file_name)
    log.info("return file read: %d coverage rows, %d members, format %s", len(roster), roster.members, fmt)
    return roster


# ------------------------------------------------------------------------------------------------ 834
def _read_834_roster(data: bytes, *, tokenizer: MemberTokenizer, file_name: str,
                     chunk_members: int = CHUNK_MEMBERS) -> Roster:
    """The 834's roster, read in pieces of ``chunk_members`` members by the project's reader.

    Each piece is the file's ISA (for the delimiters), whole members from one INS to the next, and a
    closing SE, so the reader closes the piece's last member as it would at a transaction's end.
    """
    if len(data) < 106 or data[:3] != b"ISA":
        raise DataError("not an X12 interchange (no 106-character ISA)", file=file_name, rule="isa")
    _check_ascii(data, file_name)
    element, terminator = data[3:4], data[105:106]
    starts = [m.end() for m in re.finditer(re.escape(terminator) + rb"[\r\n]*(?=INS" + re.escape(element) + rb")",
                                           data)]
    if not starts:
        raise DataError("no members (INS segments) in the file", file=file_name, rule="x12_empty")
    bounds = [*starts[::max(1, chunk_members)], len(data)]
    closing = b"SE" + element + b"0" + element + b"0" + terminator
    pieces: list[pd.DataFrame] = []
    rows = 0
    for lo, hi in itertools.pairwise(bounds):
        view = read_834(data[:106] + data[lo:hi] + closing)
        _check_834_view(view, file_name=file_name, row_offset=rows)
        rows += len(view)
        pieces.append(roster_from_view(view, tokenizer, source=file_name).table)
        del view
    table = pd.concat(pieces, ignore_index=True) if len(pieces) > 1 else pieces[0]
    return Roster(table=table, source=file_name)


def _check_834_view(view: pd.DataFrame, *, file_name: str, row_offset: int) -> None:
    """Every member needs an id, every date CCYYMMDD; ``row`` counts coverage rows from the file's start."""
    missing = view["member_id"].fillna("") == ""
    if bool(missing.any()):
        raise DataError("member without an id (REF*0F on a subscriber, REF*23 on a dependent)",
                        file=file_name, row=row_offset + int(missing.to_numpy().argmax()) + 1, column="REF",
                        rule="x12_member_id")
    for column in ("coverage_start", "coverage_end", "dob"):
        bad = ~view[column].fillna("").astype(str).str.match(_CCYYMMDD)
        if bool(bad.any()):
            raise DataError("date is not CCYYMMDD", file=file_name, row=row_offset + int(bad.to_numpy().argmax()) + 1,
                            column=column, rule="x12_date")


# ------------------------------------------------------------------------------------------- flat files
def _check_ascii(data: bytes, file_name: str) -> None:
    bad = re.search(rb"[^\x09\x0a\x0d\x20-\x7e]", data)
    if bad is not None:
        at = bad.start()
        line = data.count(b"\n", 0, at) + 1
        column = at - (data.rfind(b"\n", 0, at) + 1) + 1
        raise DataError(f"byte outside printable ASCII at character {column}", file=file_name, row=line,
                        column=f"character {column}", rule="flat_charset",
                        details={"line": line, "character": column})


def _date_regex(fmt: str) -> re.Pattern[str]:
    parts: list[str] = []
    pos = 0
    for match in _DIRECTIVE.finditer(fmt):
        parts.append(re.escape(fmt[pos:match.start()]))
        parts.append("%" if match.group() == "%%" else _DATE_GROUPS[match.group()])
        pos = match.end()
    parts.append(re.escape(fmt[pos:]))
    return re.compile("^" + "".join(parts) + "$")


def _undo_neutraliser(cells: pd.Series) -> pd.Series:
    # The writer prefixes an apostrophe to a cell starting with a formula character; a carrier's export
    # made by the same rules carries it too.
    risky = cells.str.startswith(NEUTRALISER) & cells.str.slice(1, 2).isin(list(FORMULA_CHARS))
    return cells.where(~risky, cells.str.slice(1))


def _field_cells(cells: pd.Series, col: CsvColumn | FixedColumn, layout: CsvFlatLayout | FixedWidthFlatLayout,
                 *, file_name: str, first_line: int, label: str) -> tuple[str, pd.Series] | None:
    """The view field one layout column carries, its cells turned back into view form; None for constants."""
    if col.field is None:
        return None
    field = col.field
    if col.codes is not None:
        back = {v: k for k, v in col.codes.items()}
        mapped = cells.map(back)
        unknown = mapped.isna() & (cells != "")
        if bool(unknown.any()):
            raise DataError("value has no entry in the layout's codes", file=file_name,
                            row=first_line + int(unknown.to_numpy().argmax()), column=label, rule="flat_code")
        cells = mapped.fillna("").astype(object)
    if field in DATE_FIELDS:
        parts = cells.str.extract(_date_regex(col.date_format or layout.date_format))
        bad = parts.isna().any(axis=1) & (cells != "")
        if bool(bad.any()):
            raise DataError("date does not match the layout's date format", file=file_name,
                            row=first_line + int(bad.to_numpy().argmax()), column=label, rule="flat_date")
        year = parts["Y"] if "Y" in parts else "20" + parts["y"]
        cells = (year + parts["m"] + parts["d"]).where(cells != "", "").fillna("").astype(object)
    if field == "relationship":
        return "ins02", cells.map(_RELATIONSHIP_CODES).fillna(cells).astype(object)
    return field, cells


def _view_from_columns(columns: dict[str, pd.Series], index: pd.Index) -> pd.DataFrame:
    view = pd.DataFrame(columns, index=index)
    return view.reset_index(drop=True).astype(object)


def _read_csv_view(data: bytes, layout: CsvFlatLayout, *, file_name: str) -> pd.DataFrame:
    """A CSV export as view columns: header checked, field count checked per line, codes and dates undone."""
    _check_ascii(data, file_name)
    width = len(layout.columns)
    reader = csv.reader(io.StringIO(data.decode("ascii"), newline=""), delimiter=layout.delimiter,
                        quotechar=layout.quote_char, strict=True)
    rows: list[list[str]] = []
    first_line = 2 if layout.header else 1
    try:
        for record in reader:
            if not record:
                continue
            if len(record) != width:
                raise DataError(f"{len(record)} fields; the layout has {width}", file=file_name,
                                row=reader.line_num, rule="flat_fields")
            if layout.header and reader.line_num == 1:
                for i, col in enumerate(layout.columns):
                    if record[i].strip() != col.header_text:
                        raise DataError(f"header does not match the layout (expected {col.header_text!r})",
                                        file=file_name, row=1, column=f"column {i + 1}", rule="flat_header")
                continue
            rows.append(record)
    except csv.Error:
        raise DataError("malformed quoting", file=file_name, row=reader.line_num, rule="flat_quoting") from None
    if layout.header and reader.line_num == 0:
        raise DataError("the file has no header line", file=file_name, row=1, rule="flat_header")
    frame = pd.DataFrame(rows, columns=range(width), dtype=object)
    frame = frame.reset_index(drop=True)
    columns: dict[str, pd.Series] = {}
    for i, col in enumerate(layout.columns):
        cells = _undo_neutraliser(frame[i].astype(str).str.strip())
        got = _field_cells(cells, col, layout, file_name=file_name, first_line=first_line,
                           label=f"column {i + 1} ({col.label})")
        if got is not None:
            columns[got[0]] = got[1]
    return _view_from_columns(columns, frame.index)


def _read_fixed_view(data: bytes, layout: FixedWidthFlatLayout, *, file_name: str) -> pd.DataFrame:
    """A fixed-width export as view columns: every record exactly the layout's width, pads stripped."""
    _check_ascii(data, file_name)
    records = data.decode("ascii").splitlines()
    while records and not records[-1].strip():
        records.pop()
    lines = pd.Series(records, dtype=object)
    if lines.empty:
        raise DataError("the file holds no records", file=file_name, rule="flat_empty")
    width = layout.width
    # Some exports trim trailing blanks; a record is wrong only if it is longer, or too short to hold
    # the last column's first character.
    lengths = lines.str.len()
    last_start = layout.spans()[-1][0]
    bad = (lengths > width) | (lengths <= last_start)
    if bool(bad.any()):
        at = int(bad.to_numpy().argmax())
        raise DataError(f"record is {int(lengths.iloc[at])} characters; the layout's records are {width}",
                        file=file_name, row=int(lines.index[at]) + 1, rule="flat_length")
    lines = lines.str.ljust(width)
    columns: dict[str, pd.Series] = {}
    for i, (col, (start, end)) in enumerate(zip(layout.columns, layout.spans(), strict=True)):
        raw = lines.str.slice(start, end)
        cells = raw.str.rstrip(col.pad) if col.justify == "left" else raw.str.lstrip(col.pad)
        cells = cells.str.strip()
        got = _field_cells(cells, col, layout, file_name=file_name, first_line=1,
                           label=f"column {i + 1} ({col.label})")
        if got is not None:
            columns[got[0]] = got[1]
    return _view_from_columns(columns, pd.RangeIndex(len(lines)))
