"""Declarative carrier flat-file layouts (CSV, fixed width): configuration data, validated when a mapping loads.

A carrier that takes a flat file instead of an 834 describes it in its mapping (``mappings/*.yaml``,
block ``flatfile:``). The layout names *fields* of the 834 view (:data:`FIELD_SOURCES`), never census
columns directly, and a layout naming a field whose census source is not on the carrier's allowlist is
refused when the mapping is loaded (and again when rendering, by :mod:`carrierfeeds.outputs.flatfile`).

This module holds models only: no pandas, no rendering, so loading configuration (every Airflow DAG
parse) stays cheap.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Fields a layout may name: the 834 view's columns (see :mod:`carrierfeeds.enrollment`), the
#: maintenance columns of a change set, and ``relationship`` (EE, SP, CH, DP, ...: INS02 read back
#: through census.columns.RELATIONSHIP_INS02). The value is the census field each carries (None:
#: derived from configuration and the diff alone); a layout may name a field only when that census
#: field is on the carrier's allowlist.
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
#: The date directives a layout may use, each with its (start, end) slice of CCYYMMDD text.
DATE_PARTS: Final[dict[str, tuple[int, int]]] = {"%Y": (0, 4), "%m": (4, 6), "%d": (6, 8), "%y": (2, 4)}
DATE_DIRECTIVE: Final = re.compile(r"%.")
PRINTABLE: Final = re.compile(r"^[\x20-\x7e]*$")

_LINE_ENDINGS: Final[dict[str, str]] = {"crlf": "\r\n", "lf": "\n"}
_FILE_PLACEHOLDERS: Final[frozenset[str]] = frozenset({"feed", "control", "date", "sender", "receiver"})


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


def _check_date_format(value: str) -> str:
    unknown = sorted({d for d in DATE_DIRECTIVE.findall(value) if d not in DATE_PARTS and d != "%%"})
    if unknown:
        raise ValueError(f"unsupported date directive(s) {unknown}; use %Y %m %d %y and literal text")
    if not PRINTABLE.match(value):
        raise ValueError("must be printable ASCII")
    return value


def _check_printable(value: str) -> str:
    if not PRINTABLE.match(value):
        raise ValueError("must be printable ASCII (no tabs, CR or LF)")
    return value


Printable = Annotated[str, Field(max_length=200)]


class _Column(_Model):
    """One output column: a view ``field`` or a constant ``value`` (exactly one), then formatting.

    ``date_format`` (date fields only) overrides the layout's; ``codes`` translates values to the
    carrier's codes (a non-empty value missing from ``codes`` is a DataError by row; an empty value
    stays empty unless ``""`` is a key); ``overflow`` says what a value longer than the column does.
    """

    field: str | None = Field(
        None, description="the 834 view field printed in this column (its census source must be allowlisted)")
    value: Printable | None = Field(None, description="or: a constant printed in every record")
    date_format: str | None = Field(
        None, description="date fields: %Y %m %d %y and literal text (default: the layout's date_format)")
    codes: dict[str, Printable] | None = Field(
        None, description="translates values to the carrier's codes; a value not listed is refused by row (validate "
                          "finds it first)")
    overflow: Literal["error", "truncate"] = Field(
        "error", description="a value longer than the column: error (refused by row) or truncate")

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

    header: Printable | None = Field(None, description="the column's header cell (default: the field name)")
    max_length: int | None = Field(None, ge=1, le=10_000, description="a longer value is refused or cut (overflow)")

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

    length: int = Field(ge=1, le=10_000, description="the column's width in characters")
    start: int | None = Field(
        None, ge=1, description="1-based start position (default: right after the previous column)")
    justify: Literal["left", "right"] = Field("left", description="left or right justify the value in the column")
    pad: str = Field(" ", min_length=1, max_length=1, description="the character a short value is padded with")

    @field_validator("pad")
    @classmethod
    def _printable_pad(cls, v: str) -> str:
        return _check_printable(v)


class _LayoutBase(_Model):
    date_format: str = Field("%Y%m%d", description="how date fields are written (CCYYMMDD by default)")
    line_ending: Literal["crlf", "lf"] = Field("crlf", description="record separator: crlf or lf")
    file_name: str = Field("{feed}_{control}_{date}.txt",
                           description="fields: feed, control, date, sender, receiver; must hold {control}")

    @field_validator("date_format")
    @classmethod
    def _date_format(cls, v: str) -> str:
        return _check_date_format(v)

    @field_validator("file_name")
    @classmethod
    def _safe_file_name(cls, v: str) -> str:
        if "/" in v or "\\" in v or v.startswith(".") or not PRINTABLE.match(v):
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
    header: bool = Field(True, description="true: the first record holds the column headers")
    delimiter: str = Field(",", min_length=1, max_length=1, description="field separator (one character)")
    quote_char: str = Field(
        '"', min_length=1, max_length=1, description="quote character of cells holding the delimiter or itself")
    quoting: Literal["minimal", "all"] = Field("minimal", description="minimal: quote only cells that "
                                                                      "need it; all: quote every cell")
    file_name: str = Field(
        "{feed}_{control}_{date}.csv",
        description="file name template: {feed}, {control}, {date}, {sender}, {receiver}")

    @model_validator(mode="after")
    def _distinct_separators(self) -> CsvFlatLayout:
        for name, ch in (("delimiter", self.delimiter), ("quote_char", self.quote_char)):
            if ch.isalnum() or ch in " \r\n'" or (not PRINTABLE.match(ch) and ch != "\t"):
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
    record_length: int | None = Field(
        None, ge=1, le=100_000, description="when set, every record is exactly this long (columns must fit)")

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


__all__ = [
    "DATE_DIRECTIVE",
    "DATE_FIELDS",
    "DATE_PARTS",
    "FIELD_SOURCES",
    "PRINTABLE",
    "CsvColumn",
    "CsvFlatLayout",
    "FixedColumn",
    "FixedWidthFlatLayout",
    "FlatFileLayout",
]
