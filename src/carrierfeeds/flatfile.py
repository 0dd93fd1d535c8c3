"""Carrier flat files (CSV, fixed width) rendered from the 834 view through a declarative layout: pure, allowlisted.

A carrier that takes a flat file instead of an 834 describes it in its mapping (``mappings/*.yaml``,
block ``flatfile:``). The layout names *fields* of the 834 view (:data:`FIELD_SOURCES`), never census
columns directly, and a layout naming a field whose census source is not on the carrier's allowlist is
refused when the mapping is loaded (and again when rendering). So the minimum-necessary rule and the
change detection (``ins03``/``ins04``/``hd01`` of a change set) are exactly those of the 834 path: the
flat file is only a different rendering of the same view, one record per view row (member x coverage;
a change-set row without coverage is a member-level change with empty plan fields).

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
check; :func:`flatfile_name` the PHI-free file name.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from carrierfeeds.census.columns import ROW_NUMBER
from carrierfeeds.errors import ConfigError, ConformanceFailed, DataError, FieldNotAllowed

# pandas is imported inside the functions that render: config.py imports this module for the layout
# models, and loading config (every Airflow DAG parse) must stay cheap.
if TYPE_CHECKING:
    import pandas as pd

    from carrierfeeds.changes import ChangeSet
    from carrierfeeds.config import CarrierMapping
    from carrierfeeds.enrollment import Enrollment

log = logging.getLogger(__name__)

#: Fields a layout may name: the 834 view's columns (see :mod:`carrierfeeds.enrollment`), the
#: maintenance columns of a change set, and ``relationship`` (EE/SP/CH, derived from INS02). The value
#: is the census field each carries (None: derived from configuration and the diff alone); a layout
#: may name a field only when that census field is on the carrier's allowlist.
FIELD_SOURCES: Final[dict[str, str | None]] = {
    "member_id": "member_id", "subscriber_id": "subscriber_id",
    "ins01": "relationship", "ins02": "relationship", "relationship": "relationship",
    "ins03": None, "ins04": None, "hd01": None,
    "employment_status": "employment_status",
    "last_name": "last_name", "first_name": "first_name", "middle_initial": "middle_initial",
    "ssn": "ssn", "dob": "dob", "gender": "gender",
    "address1": "address1", "address2": "address2", "city": "city", "state": "state", "zip": "zip",
    "hire_date": "hire_date",
    "hd03": "plan_code", "hd04": "plan_code", "hd05": "coverage_level",
    "coverage_start": "coverage_start", "coverage_end": "coverage_end",
}
#: View fields holding CCYYMMDD dates; a layout's ``date_format`` applies to these only.
DATE_FIELDS: Final[frozenset[str]] = frozenset({"dob", "hire_date", "coverage_start", "coverage_end"})
#: Leading characters a spreadsheet may read as the start of a formula (OWASP CSV injection).
FORMULA_CHARS: Final[tuple[str, ...]] = ("=", "+", "-", "@", "\t", "\r")
NEUTRALISER: Final[str] = "'"

_RELATIONSHIP: Final[dict[str, str]] = {"18": "EE", "01": "SP", "19": "CH"}
_DATE_PARTS: Final[dict[str, tuple[int, int]]] = {"%Y": (0, 4), "%m": (4, 6), "%d": (6, 8), "%y": (2, 4)}
_DIRECTIVE = re.compile(r"%.")
_PRINTABLE = re.compile(r"^[\x20-\x7e]*$")
_NOT_PRINTABLE = r"[^\x20-\x7e]"
_LINE_ENDINGS: Final[dict[str, str]] = {"crlf": "\r\n", "lf": "\n"}
_FILE_PLACEHOLDERS: Final[frozenset[str]] = frozenset({"feed", "control", "date", "sender", "receiver"})


# ------------------------------------------------------------------------------------------ layout
class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


def _check_date_format(value: str) -> str:
    unknown = sorted({d for d in _DIRECTIVE.findall(value) if d not in _DATE_PARTS and d != "%%"})
    if unknown:
        raise ValueError(f"unsupported date directive(s) {unknown}; use %Y %m %d %y and literal text")
    if not _PRINTABLE.match(value):
        raise ValueError("must be printable ASCII")
    return value


def _check_printable(value: str) -> str:
    if not _PRINTABLE.match(value):
        raise ValueError("must be printable ASCII (no tabs, CR or LF)")
    return value


Printable = Annotated[str, Field(max_length=200)]


class _Column(_Model):
    """One output column: a view ``field`` or a constant ``value`` (exactly one), then formatting.

    ``date_format`` (date fields only) overrides the layout's; ``codes`` translates values to the
    carrier's codes (a non-empty value missing from ``codes`` is a DataError by row; an empty value
    stays empty unless ``""`` is a key); ``overflow`` says what a value longer than the column does.
    """

    field: str | None = None
    value: Printable | None = None
    date_format: str | None = None
    codes: dict[str, Printable] | None = None
    overflow: Literal["error", "truncate"] = "error"

    @field_validator("field")
    @classmethod
    def _known_field(cls, v: str | None) -> str | None:
        if v is not None and v not in FIELD_SOURCES:
            import difflib

            close = difflib.get_close_matches(v, list(FIELD_SOURCES), n=1)
            raise ValueError(f"unknown field {v!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                             + f"; fields: {sorted(FIELD_SOURCES)}")
        return v

    @field_validator("value")
    @classmethod
    def _printable_value(cls, v: str | None) -> str | None:
        return None if v is None else _check_printable(v)

    @field_validator("date_format")
    @classmethod
    def _date_format(cls, v: str | None) -> str | None:
        return None if v is None else _check_date_format(v)

    @field_validator("codes")
    @classmethod
    def _printable_codes(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        for code in (v or {}).values():
            _check_printable(code)
        return v

    @model_validator(mode="after")
    def _one_source(self) -> _Column:
        if (self.field is None) == (self.value is None):
            raise ValueError("give exactly one of field and value")
        if self.date_format is not None and self.field not in DATE_FIELDS:
            raise ValueError(f"date_format applies to date fields only ({sorted(DATE_FIELDS)})")
        if self.codes is not None and self.field is None:
            raise ValueError("codes apply to a field, not to a constant value")
        return self

    @property
    def label(self) -> str:
        return self.field or "value"


class CsvColumn(_Column):
    """A CSV column; ``header`` is its header cell (default: the field name); ``max_length`` optional."""

    header: Printable | None = None
    max_length: int | None = Field(None, ge=1, le=10_000)

    @field_validator("header")
    @classmethod
    def _printable_header(cls, v: str | None) -> str | None:
        return None if v is None else _check_printable(v)

    @property
    def header_text(self) -> str:
        return self.header if self.header is not None else (self.field or "")


class FixedColumn(_Column):
    """A fixed-width column: ``length`` characters from ``start`` (1-based; default: right after the
    previous column; a gap is filled with spaces), ``justify``-ed and padded with ``pad``."""

    length: int = Field(ge=1, le=10_000)
    start: int | None = Field(None, ge=1)
    justify: Literal["left", "right"] = "left"
    pad: str = Field(" ", min_length=1, max_length=1)

    @field_validator("pad")
    @classmethod
    def _printable_pad(cls, v: str) -> str:
        return _check_printable(v)


class _LayoutBase(_Model):
    date_format: str = Field("%Y%m%d", description="how date fields are written (CCYYMMDD by default)")
    line_ending: Literal["crlf", "lf"] = "crlf"
    file_name: str = Field("{feed}_{control}_{date}.txt",
                           description="fields: feed, control, date, sender, receiver; must hold {control}")

    @field_validator("date_format")
    @classmethod
    def _date_format(cls, v: str) -> str:
        return _check_date_format(v)

    @field_validator("file_name")
    @classmethod
    def _safe_file_name(cls, v: str) -> str:
        if "/" in v or "\\" in v or v.startswith(".") or not _PRINTABLE.match(v):
            raise ValueError("must be a plain file name, no folders")
        used = set(re.findall(r"{(\w*)}", v))
        if not used <= _FILE_PLACEHOLDERS:
            raise ValueError(f"unknown placeholder(s) {sorted(used - _FILE_PLACEHOLDERS)}; "
                             f"allowed: {sorted(_FILE_PLACEHOLDERS)}")
        if "control" not in used:
            raise ValueError("must contain {control} so every file gets its own name")
        return v

    @property
    def terminator(self) -> str:
        return _LINE_ENDINGS[self.line_ending]

    def columns_(self) -> Sequence[_Column]:
        raise NotImplementedError

    def fields(self) -> list[str]:
        """The view fields the layout names, in column order (duplicates kept)."""
        return [c.field for c in self.columns_() if c.field is not None]

    def census_fields(self) -> list[str]:
        """The census fields the layout's output carries."""
        return sorted({src for f in self.fields() if (src := FIELD_SOURCES[f]) is not None})

    def not_allowed(self, allowlist: Sequence[str]) -> list[tuple[int, str]]:
        """(column index, field) for each column whose census field is not on ``allowlist``."""
        allow = set(allowlist)
        return [(i, c.field) for i, c in enumerate(self.columns_())
                if c.field is not None and (src := FIELD_SOURCES[c.field]) is not None and src not in allow]


class CsvFlatLayout(_LayoutBase):
    """A delimited file: ``columns`` in order, an optional header row, RFC 4180 quoting."""

    kind: Literal["csv"] = "csv"
    columns: tuple[CsvColumn, ...] = Field(min_length=1)
    header: bool = True
    delimiter: str = Field(",", min_length=1, max_length=1)
    quote_char: str = Field('"', min_length=1, max_length=1)
    quoting: Literal["minimal", "all"] = Field("minimal", description="minimal: quote only cells that "
                                                                      "need it; all: quote every cell")
    file_name: str = "{feed}_{control}_{date}.csv"

    @model_validator(mode="after")
    def _distinct_separators(self) -> CsvFlatLayout:
        for name, ch in (("delimiter", self.delimiter), ("quote_char", self.quote_char)):
            if ch.isalnum() or ch in " \r\n'" or (not _PRINTABLE.match(ch) and ch != "\t"):
                raise ValueError(f"{name} must be a punctuation character or tab, not a letter, digit, space, "
                                 "apostrophe, CR or LF")
        if self.delimiter == self.quote_char:
            raise ValueError("delimiter and quote_char must differ")
        return self

    def columns_(self) -> Sequence[_Column]:
        return self.columns


class FixedWidthFlatLayout(_LayoutBase):
    """Fixed-width records: each column at its position; ``record_length`` pads every record (spaces)."""

    kind: Literal["fixed-width"] = "fixed-width"
    columns: tuple[FixedColumn, ...] = Field(min_length=1)
    record_length: int | None = Field(None, ge=1, le=100_000)

    @model_validator(mode="after")
    def _positions(self) -> FixedWidthFlatLayout:
        end = 0
        for i, col in enumerate(self.columns):
            start = col.start - 1 if col.start is not None else end
            if start < end:
                raise ValueError(f"columns[{i}] starts at {start + 1}, inside the previous column "
                                 f"(which ends at {end})")
            end = start + col.length
        if self.record_length is not None and self.record_length < end:
            raise ValueError(f"record_length {self.record_length} is shorter than the columns ({end})")
        return self

    def columns_(self) -> Sequence[_Column]:
        return self.columns

    def spans(self) -> list[tuple[int, int]]:
        """Each column's (start, end) as 0-based, end-exclusive offsets in the record."""
        out: list[tuple[int, int]] = []
        end = 0
        for col in self.columns:
            start = col.start - 1 if col.start is not None else end
            end = start + col.length
            out.append((start, end))
        return out

    @property
    def width(self) -> int:
        return self.record_length or self.spans()[-1][1]


FlatFileLayout = Annotated[CsvFlatLayout | FixedWidthFlatLayout, Field(discriminator="kind")]


def flatfile_name(layout: CsvFlatLayout | FixedWidthFlatLayout, *, feed_id: str, control: int, day: date,
                  sender: str = "", receiver: str = "") -> str:
    """The file name from the layout's template: PHI-free (feed, control number, day, envelope ids)."""
    return layout.file_name.format(feed=feed_id, control=f"{control:09d}", date=day.strftime("%Y%m%d"),
                                   sender=sender.strip(), receiver=receiver.strip())


# ------------------------------------------------------------------------------------------ render
def _as_view(source: Enrollment | ChangeSet) -> Enrollment:
    from carrierfeeds.changes import ChangeSet

    return source.enrollment if isinstance(source, ChangeSet) else source


def _assert_layout_allowed(layout: CsvFlatLayout | FixedWidthFlatLayout, allowlist: Sequence[str]) -> None:
    bad = layout.not_allowed(allowlist)
    if bad:
        fields = sorted({f for _, f in bad})
        raise FieldNotAllowed(f"the flat-file layout names field(s) not on the carrier's allowlist: {fields}",
                              details={"fields": fields, "columns": [i for i, _ in bad]})


def _format_dates(values: pd.Series, fmt: str) -> pd.Series:
    """CCYYMMDD text to ``fmt`` (directives %Y %m %d %y, literal text otherwise); "" stays ""."""
    import pandas as pd

    out = pd.Series("", index=values.index, dtype=object)
    pos = 0
    for match in _DIRECTIVE.finditer(fmt):
        if match.start() > pos:
            out = out + fmt[pos:match.start()]
        directive = match.group()
        if directive == "%%":
            out = out + "%"
        else:
            lo, hi = _DATE_PARTS[directive]
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
    import pandas as pd

    if field == "relationship":
        base = table["ins02"] if "ins02" in table.columns else pd.Series("", index=table.index, dtype=object)
        return base.astype(str).map(_RELATIONSHIP).fillna("").astype(object)
    if field == "hd01" and "hd01" not in table.columns and "ins03" in table.columns:
        return table["ins03"].astype(str).astype(object)
    if field in table.columns:
        return table[field].fillna("").astype(str).astype(object)
    return pd.Series("", index=table.index, dtype=object)


def _cells(table: pd.DataFrame, col: _Column, index: int, layout: CsvFlatLayout | FixedWidthFlatLayout,
           limit: int | None) -> pd.Series:
    """One column's cell text for every row of ``table`` (not yet padded or quoted)."""
    import pandas as pd

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
    import pandas as pd

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
    import pandas as pd

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
    for match in _DIRECTIVE.finditer(fmt):
        parts.append(re.escape(fmt[pos:match.start()]))
        directive = match.group()
        if directive == "%%":
            parts.append("%")
        else:
            lo, hi = _DATE_PARTS[directive]
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
        elif not _PRINTABLE.match(line) and not (isinstance(layout, CsvFlatLayout) and layout.delimiter == "\t"):
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
