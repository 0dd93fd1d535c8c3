"""Carrier flat files (CSV, fixed width) rendered from the 834 view through a declarative layout: pure, allowlisted.

The layout (:mod:`carrierfeeds.outputs.layouts`) names fields of the 834 view, so the minimum-necessary
rule and the change detection (``ins03``/``ins04``/``hd01`` of a change set) are exactly those of the 834
path: the flat file is only a different rendering of the same view, one record per view row (member x
coverage; a change-set row without coverage is a member-level change with empty plan fields).

Rules every rendered file follows (and :func:`check_flatfile`, the conformance gate, re-checks):

* Every cell is printable ASCII (0x20-0x7E). The view's fold rule (:mod:`carrierfeeds.x12.sanitize`)
  already removes CR, LF, tabs and other controls from free text; a cell that still holds one is
  refused (ConformanceFailed), so no value can start a new record.
* CSV: a cell holding the delimiter or the quote character is quoted (quote doubled), so no value can
  add a field. **Formula neutralisation**: a cell beginning with ``=``, ``+``, ``-``, ``@``, tab or CR
  gets a leading apostrophe (``'``), so a spreadsheet opening the file shows text instead of running a
  formula (OWASP "CSV injection"). The apostrophe is outside a column's ``max_length``.
* Fixed width: every record is exactly the layout's record length; a value longer than its column is a
  DataError (by row number and column) unless the column says ``overflow: truncate``.

:func:`render_flatfile` yields the file in chunks of bytes; :func:`check_flatfile` is the structural
check; :func:`flatfile_name` the PHI-free file name; :func:`layout_for` the mapping's layout.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Final, Literal

import pandas as pd

from carrierfeeds.census.columns import RELATIONSHIP_INS02, ROW_NUMBER
from carrierfeeds.changes import ChangeSet
from carrierfeeds.config import CarrierMapping
from carrierfeeds.enrollment import Enrollment
from carrierfeeds.errors import ConfigError, ConformanceFailed, DataError, FieldNotAllowed
from carrierfeeds.outputs.layouts import (
    DATE_DIRECTIVE,
    DATE_FIELDS,
    DATE_PARTS,
    PRINTABLE,
    CsvColumn,
    CsvFlatLayout,
    FixedColumn,
    FixedWidthFlatLayout,
)

log = logging.getLogger(__name__)

#: Leading characters a spreadsheet may read as the start of a formula (OWASP CSV injection).
FORMULA_CHARS: Final[tuple[str, ...]] = ("=", "+", "-", "@", "\t", "\r")
NEUTRALISER: Final[str] = "'"

#: INS02 -> the canonical relationship of the same meaning (EE, SP, CH, DP, SC, ...); an INS02 with none
#: (a carrier's own choice beyond the table) is written as the INS02 code itself, never dropped.
_RELATIONSHIP: Final[dict[str, str]] = {code: rel for rel, code in RELATIONSHIP_INS02.items()}
_NOT_PRINTABLE = r"[^\x20-\x7e]"


def flatfile_name(layout: CsvFlatLayout | FixedWidthFlatLayout, *, feed_id: str, control: int, day: date,
                  sender: str = "", receiver: str = "") -> str:
    """The file name from the layout's template: PHI-free (feed, control number, day, envelope ids)."""
    return layout.file_name.format(feed=feed_id, control=f"{control:09d}", date=day.strftime("%Y%m%d"),
                                   sender=sender.strip(), receiver=receiver.strip())


# ------------------------------------------------------------------------------------------ render
def _as_view(source: Enrollment | ChangeSet) -> Enrollment:
    return source.enrollment if isinstance(source, ChangeSet) else source


def _assert_layout_allowed(layout: CsvFlatLayout | FixedWidthFlatLayout, allowlist: Sequence[str]) -> None:
    bad = layout.not_allowed(allowlist)
    if bad:
        fields = sorted({f for _, f in bad})
        raise FieldNotAllowed(f"the flat-file layout names field(s) not on the carrier's allowlist: {fields}",
                              details={"fields": fields, "columns": [i for i, _ in bad]})


def _format_dates(values: pd.Series, fmt: str) -> pd.Series:
    """CCYYMMDD text to ``fmt`` (directives %Y %m %d %y, literal text otherwise); "" stays ""."""
    out = pd.Series("", index=values.index, dtype=object)
    pos = 0
    for match in DATE_DIRECTIVE.finditer(fmt):
        if match.start() > pos:
            out = out + fmt[pos:match.start()]
        directive = match.group()
        if directive == "%%":
            out = out + "%"
        else:
            lo, hi = DATE_PARTS[directive]
            out = out + values.str.slice(lo, hi)
        pos = match.end()
    if pos < len(fmt):
        out = out + fmt[pos:]
    return out.where(values != "", "")


def _row_numbers(table: pd.DataFrame, mask: pd.Series) -> list[int]:
    if ROW_NUMBER not in table.columns:
        return [int(i) + 1 for i in mask[mask].index[:50]]
    return sorted(int(r) for r in table.loc[mask.to_numpy(), ROW_NUMBER].tolist())[:50]


def _field_values(table: pd.DataFrame, field: str) -> pd.Series:
    if field == "relationship":
        base = table["ins02"] if "ins02" in table.columns else pd.Series("", index=table.index, dtype=object)
        codes = base.fillna("").astype(str)
        return codes.map(_RELATIONSHIP).fillna(codes).astype(object)
    if field == "hd01" and "hd01" not in table.columns and "ins03" in table.columns:
        return table["ins03"].astype(str).astype(object)
    if field in table.columns:
        return table[field].fillna("").astype(str).astype(object)
    return pd.Series("", index=table.index, dtype=object)


def _cells(table: pd.DataFrame, col: CsvColumn | FixedColumn, index: int,
           layout: CsvFlatLayout | FixedWidthFlatLayout, limit: int | None) -> pd.Series:
    """One column's cell text for every row of ``table`` (not yet padded or quoted)."""
    if col.value is not None:
        cells = pd.Series(col.value, index=table.index, dtype=object)
    else:
        assert col.field is not None  # noqa: S101 - guaranteed by the model validator
        cells = _field_values(table, col.field)
        if col.field in DATE_FIELDS:
            cells = _format_dates(cells, col.date_format or layout.date_format)
        if col.codes is not None:
            mapped = cells.map(col.codes)
            unknown = mapped.isna() & (cells != "")
            if bool(unknown.any()):
                rows = _row_numbers(table, unknown)
                raise DataError(f"{int(unknown.sum())} value(s) have no entry in the layout's codes",
                                row=rows[0] if rows else None, column=col.field, rule="flatfile_code",
                                details={"count": int(unknown.sum()), "rows": rows, "layout_column": index})
            cells = mapped.fillna("").astype(object)
    bad = cells.str.contains(_NOT_PRINTABLE, regex=True).fillna(False).astype(bool)
    if bool(bad.any()):
        raise ConformanceFailed(f"a value for layout column {index} ({col.label}) holds a character outside "
                                "printable ASCII", details={"layout_column": index, "count": int(bad.sum())})
    if limit is not None:
        long = cells.str.len() > limit
        if bool(long.any()):
            if col.overflow == "truncate":
                cells = cells.where(~long, cells.str.slice(0, limit))
            else:
                rows = _row_numbers(table, long)
                raise DataError(f"{int(long.sum())} value(s) are longer than the layout's {limit} characters",
                                row=rows[0] if rows else None, column=col.label, rule="flatfile_length",
                                details={"count": int(long.sum()), "rows": rows, "layout_column": index})
    return cells


def neutralise_formulas(cells: pd.Series) -> pd.Series:
    """Prefix ``'`` to every cell beginning with a formula character (``= + - @``, tab, CR)."""
    risky = cells.str.startswith(FORMULA_CHARS).fillna(False).astype(bool)
    return cells.where(~risky, NEUTRALISER + cells)


def _csv_quote(cells: pd.Series, layout: CsvFlatLayout) -> pd.Series:
    q = layout.quote_char
    escaped = cells.str.replace(q, q + q, regex=False)
    if layout.quoting == "all":
        return q + escaped + q
    # Minimal quoting as RFC 4180 (and Python's csv module) does it: the delimiter, the quote or a
    # line break in the cell. Line breaks cannot reach here; quoting them anyway costs nothing.
    needs = (cells.str.contains(re.escape(layout.delimiter), regex=True)
             | cells.str.contains(re.escape(q), regex=True) | cells.str.contains("[\r\n]", regex=True))
    return escaped.where(~needs.astype(bool), q + escaped + q)


def _csv_header(layout: CsvFlatLayout) -> str:
    cells = pd.Series([c.header_text for c in layout.columns], dtype=object)
    quoted = _csv_quote(neutralise_formulas(cells), layout)
    return layout.delimiter.join(quoted.tolist()) + layout.terminator


def _render_csv(table: pd.DataFrame, layout: CsvFlatLayout) -> str:
    parts: list[pd.Series] = []
    for i, col in enumerate(layout.columns):
        cells = _cells(table, col, i, layout, col.max_length)
        parts.append(_csv_quote(neutralise_formulas(cells), layout))
    line = parts[0]
    for part in parts[1:]:
        line = line + layout.delimiter + part
    return "".join((line + layout.terminator).tolist())


def _render_fixed(table: pd.DataFrame, layout: FixedWidthFlatLayout) -> str:
    record = pd.Series("", index=table.index, dtype=object)
    at = 0
    for i, (col, (start, end)) in enumerate(zip(layout.columns, layout.spans(), strict=True)):
        if start > at:
            record = record + " " * (start - at)
        cells = _cells(table, col, i, layout, col.length)
        side: Literal["left", "right"] = "right" if col.justify == "left" else "left"
        record = record + cells.str.pad(col.length, side=side, fillchar=col.pad)
        at = end
    if layout.width > at:
        record = record + " " * (layout.width - at)
    return "".join((record + layout.terminator).tolist())


def render_flatfile(source: Enrollment | ChangeSet, layout: CsvFlatLayout | FixedWidthFlatLayout, *,
                    chunk_rows: int = 50_000) -> Iterator[bytes]:
    """Yield the flat file for ``source`` (an Enrollment, or a ChangeSet's view) in ASCII chunks.

    One record per view row, in the view's order (families together, subscriber first). Raises
    FieldNotAllowed when the layout names a field off the view's allowlist, DataError (by row and
    column) for a value too long or without a code, ConformanceFailed for a non-printable value.
    """
    enrollment = _as_view(source)
    _assert_layout_allowed(layout, enrollment.allowlist)
    table = enrollment.table
    if isinstance(layout, CsvFlatLayout) and layout.header:
        yield _csv_header(layout).encode("ascii")
    step = max(1, chunk_rows)
    for lo in range(0, len(table), step):
        chunk = table.iloc[lo:lo + step]
        text = _render_csv(chunk, layout) if isinstance(layout, CsvFlatLayout) else _render_fixed(chunk, layout)
        yield text.encode("ascii")
    log.info("rendered %s flat file: %d records, %d columns", layout.kind, len(table), len(layout.columns))


def render_flatfile_bytes(source: Enrollment | ChangeSet, layout: CsvFlatLayout | FixedWidthFlatLayout) -> bytes:
    """The whole flat file in memory, for small files and tests."""
    return b"".join(render_flatfile(source, layout))


# ------------------------------------------------------------------------------------------- check
@dataclass(frozen=True)
class FlatProblem:
    """One structural problem: the 1-based physical record (header included), the layout column index
    (or -1 for the whole record), a rule code and a PHI-free message."""

    record: int
    column: int
    code: str
    message: str


@dataclass(frozen=True)
class FlatFileReport:
    """The flat-file gate's verdict: ``records`` data records found (header excluded); ``problems`` is
    empty exactly when ``ok`` (at most the first 100 are kept; ``problem_count`` counts them all)."""

    ok: bool
    records: int
    problems: tuple[FlatProblem, ...]
    problem_count: int = 0


_MAX_PROBLEMS = 100
_Add = Callable[[int, int, str, str], None]


def _date_pattern(fmt: str) -> re.Pattern[str]:
    parts: list[str] = []
    pos = 0
    for match in DATE_DIRECTIVE.finditer(fmt):
        parts.append(re.escape(fmt[pos:match.start()]))
        directive = match.group()
        if directive == "%%":
            parts.append("%")
        else:
            lo, hi = DATE_PARTS[directive]
            parts.append(rf"\d{{{hi - lo}}}")
        pos = match.end()
    parts.append(re.escape(fmt[pos:]))
    return re.compile("".join(parts))


def check_flatfile(data: bytes, layout: CsvFlatLayout | FixedWidthFlatLayout, *,
                   expected_records: int | None = None) -> FlatFileReport:
    """The conformance gate for a flat file: encoding, record count, record structure (CSV field count
    and header, fixed-width record length), no injected line breaks or formulas, column widths and
    date shapes. Problems name record numbers, column indexes and rules, never values."""
    problems: list[FlatProblem] = []
    count = 0

    def add(record: int, column: int, code: str, message: str) -> None:
        nonlocal count
        count += 1
        if len(problems) < _MAX_PROBLEMS:
            problems.append(FlatProblem(record, column, code, message))

    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        add(data.count(b"\n", 0, exc.start) + 1, -1, "not_ascii", "the file holds a byte outside ASCII")
        return FlatFileReport(False, 0, tuple(problems), count)
    term = layout.terminator
    if text and not text.endswith(term):
        add(text.count("\n") + 1, -1, "unterminated", "the last record does not end with the line ending")
    lines = text.split(term)
    if lines and lines[-1] == "":
        lines.pop()
    for n, line in enumerate(lines, start=1):
        if "\r" in line or "\n" in line:
            add(n, -1, "line_break_injection", "a record holds a line break that is not the line ending")
        elif not PRINTABLE.match(line) and not (isinstance(layout, CsvFlatLayout) and layout.delimiter == "\t"):
            add(n, -1, "not_printable", "a record holds a control character")
    first = 1
    if isinstance(layout, CsvFlatLayout):
        records = _check_csv(lines, layout, add)
        first = 2 if layout.header else 1
    else:
        records = len(lines)
        _check_fixed(lines, layout, add)
    if expected_records is not None and records != expected_records:
        add(first + records, -1, "record_count", f"file holds {records} records, the build made {expected_records}")
    return FlatFileReport(count == 0, records, tuple(problems), count)


def _check_csv(lines: list[str], layout: CsvFlatLayout, add: _Add) -> int:
    width = len(layout.columns)
    if layout.header:
        if not lines:
            add(1, -1, "header_missing", "the header row is missing")
            return 0
        expected = _csv_header(layout)[:-len(layout.terminator)]
        if lines[0] != expected:
            add(1, -1, "header_mismatch", "the header row differs from the layout's")
    body = lines[1:] if layout.header else lines
    offset = 2 if layout.header else 1
    reader = csv.reader(body, delimiter=layout.delimiter, quotechar=layout.quote_char, doublequote=True,
                        strict=True, quoting=csv.QUOTE_MINIMAL)
    n = offset - 1
    try:
        for n, cells in enumerate(reader, start=offset):
            if len(cells) != width:
                add(n, -1, "field_count", f"record has {len(cells)} fields, the layout {width}")
                continue
            for i, (cell, col) in enumerate(zip(cells, layout.columns, strict=True)):
                if cell.startswith(FORMULA_CHARS):
                    add(n, i, "formula", "a cell begins with a formula character")
                core = cell[1:] if cell.startswith(NEUTRALISER) and cell[1:].startswith(FORMULA_CHARS) else cell
                if col.max_length is not None and len(core) > col.max_length:
                    add(n, i, "field_width", f"a cell is longer than {col.max_length} characters")
    except csv.Error:
        add(n + 1, -1, "csv_syntax", "the record is not well-formed CSV (quoting)")
    return len(body)


def _check_fixed(lines: list[str], layout: FixedWidthFlatLayout, add: _Add) -> None:
    width = layout.width
    spans = layout.spans()
    dated: list[tuple[int, tuple[int, int], re.Pattern[str]]] = []
    for i, (col, span) in enumerate(zip(layout.columns, spans, strict=True)):
        if col.field in DATE_FIELDS and col.codes is None:
            # A date is blank (all padding) or the format's shape with padding on the justified side.
            shape = _date_pattern(col.date_format or layout.date_format).pattern
            pad = f"{re.escape(col.pad)}*"
            dated.append((i, span, re.compile(f"{pad}|{pad}(?:{shape})" if col.justify == "right"
                                              else f"{pad}|(?:{shape}){pad}")))
    for n, line in enumerate(lines, start=1):
        if len(line) != width:
            add(n, -1, "record_length", f"record is {len(line)} characters, the layout {width}")
            continue
        for i, (lo, hi), pattern in dated:
            if not pattern.fullmatch(line[lo:hi]):
                add(n, i, "date_shape", "a date field does not have the layout's date format")


def layout_for(mapping: CarrierMapping) -> CsvFlatLayout | FixedWidthFlatLayout:
    """The mapping's flat-file layout; a ConfigError when a ``flatfile`` feed's mapping has none."""
    if mapping.flatfile is None:
        raise ConfigError(f"mapping {mapping.mapping_id!r} has no flatfile layout, but the feed's output.format "
                          "is flatfile", file=f"{mapping.mapping_id}.yaml", field="flatfile")
    return mapping.flatfile
