"""Read an employer census file into the canonical census: text only, mapped, with employer row numbers.

Structural problems (empty file, missing or duplicated columns, wrong field counts, NUL bytes, bytes the
declared encoding cannot decode) raise :class:`~carrierfeeds.errors.DataError` naming the file by its
name, the row and the column, never a cell value. Value problems are left for validation to report.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from carrierfeeds.census.columns import CANONICAL_COLUMNS, REQUIRED_COLUMNS, ROW_NUMBER
from carrierfeeds.config import CensusSchema
from carrierfeeds.errors import DataError

log = logging.getLogger(__name__)

#: Canonical columns holding dates, converted from the schema's date format to ISO YYYY-MM-DD.
DATE_COLUMNS: tuple[str, ...] = ("dob", "hire_date", "coverage_start", "coverage_end")
_ISO = "%Y-%m-%d"
_NON_BLANK = re.compile(r"[^\s\ufeff]")


def read_census(path: Path, schema: CensusSchema, *, display_name: str | None = None) -> pd.DataFrame:
    """The census at ``path`` as canonical text columns plus ``row_number`` (header is row 1).

    ``display_name`` is the name errors use for the file (default: ``path.name``), for a file that was
    staged under another name. Unknown extra columns are dropped with a warning naming them; optional
    canonical columns the file lacks are added empty.
    """
    name = display_name or path.name
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError("census file not found", file=name) from None
    text = _decode(raw, schema.encoding, name)
    bom = text.startswith("\ufeff")  # a BOM the declared encoding did not strip (utf-8, cp1252)
    if "\x00" in text:
        raise DataError("file contains a NUL byte; is it a spreadsheet or UTF-16 file saved as CSV?",
                        file=name, row=text.count("\n", 0, text.index("\x00")) + 1, rule="nul_byte")
    if _NON_BLANK.search(text) is None:
        raise DataError("file is empty", file=name, rule="empty_file")
    if schema.encoding in ("utf-8", "utf-8-sig"):
        # already valid UTF-8: hand pyarrow the bytes as they are rather than a re-encoded copy
        data = raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw
    else:
        data = (text[1:] if bom else text).encode("utf-8")
    del text

    header = _header(data, schema.delimiter)
    _check_header(header, name)
    wanted = {schema.header_for(c): c for c in CANONICAL_COLUMNS}
    missing = sorted(c for c in REQUIRED_COLUMNS if schema.header_for(c) not in header)
    if missing:
        raise DataError(f"missing required column(s) {missing} (expected headers "
                        f"{[schema.header_for(c) for c in missing]})", file=name, column=missing[0],
                        rule="required_columns", details={"missing": missing})
    extra = [h for h in header if h not in wanted]
    if extra:
        log.warning("%s: dropping %d unknown column(s): %s", name, len(extra), extra)

    frame = _parse(data, schema.delimiter, header, name)
    if frame.empty:
        raise DataError("no data rows (header only)", file=name, row=2, rule="no_data_rows")

    frame = frame.drop(columns=extra).rename(columns=wanted)
    out: dict[str, pd.Series] = {}
    for column in CANONICAL_COLUMNS:
        if column in frame.columns:
            out[column] = frame[column].astype("str").fillna("").str.strip()
        else:
            out[column] = pd.Series("", index=frame.index, dtype="str")
    absent = [c for c in CANONICAL_COLUMNS if c not in frame.columns]
    if absent:
        log.info("%s: optional column(s) absent, left empty: %s", name, absent)

    out["relationship"] = _apply_codes(out["relationship"], schema.relationship_codes)
    out["gender"] = _apply_codes(out["gender"], schema.gender_codes)
    if schema.date_format != _ISO:
        for column in DATE_COLUMNS:
            out[column] = _to_iso(out[column], schema.date_format)
    census = pd.DataFrame(out)
    census[ROW_NUMBER] = np.arange(2, len(census) + 2, dtype=np.int64)
    log.info("%s: read %d rows", name, len(census))
    return census


def _decode(raw: bytes, encoding: str, name: str) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        row = raw[: exc.start].decode(encoding, errors="replace").count("\n") + 1
        raise DataError(f"bytes that are not valid {encoding} (byte offset {exc.start}); save the file as "
                        f"{encoding} or declare its encoding in the census schema",
                        file=name, row=row, rule="encoding") from None


def _header(data: bytes, delimiter: str) -> list[str]:
    end = data.find(b"\n")
    first_line = (data if end < 0 else data[:end]).decode("utf-8")
    return [h.strip() for h in next(csv.reader([first_line], delimiter=delimiter))]


def _check_header(header: list[str], name: str) -> None:
    blanks = [i + 1 for i, h in enumerate(header) if not h]
    if blanks:
        raise DataError(f"column(s) at position(s) {blanks} have no header", file=name, row=1,
                        rule="blank_header")
    seen: set[str] = set()
    dupes = sorted({h for h in header if h in seen or seen.add(h)})  # type: ignore[func-returns-value]
    if dupes:
        raise DataError(f"duplicated column(s) {dupes}", file=name, row=1, column=dupes[0],
                        rule="duplicate_columns", details={"duplicated": dupes})


def _parse(data: bytes, delimiter: str, header: list[str], name: str) -> pd.DataFrame:
    """Parse with pyarrow (fast); when it refuses, find the structural fault ourselves, else use C."""
    # pyarrow skips blank lines, which would shift the row numbers after them: check those files
    # record by record instead.
    body = data.rstrip(b"\r\n")
    if b"\n\n" not in body and b"\n\r\n" not in body:
        try:
            return _read(data, delimiter, header, engine="pyarrow")
        except (pd.errors.ParserError, ValueError, TypeError) as exc:
            # the engine's message can quote the offending line; keep only the exception's type
            log.info("%s: pyarrow engine could not parse the file (%s); checking it row by row",
                     name, type(exc).__name__)
    _check_records(body.decode("utf-8"), delimiter, len(header), name)
    return _read(body, delimiter, header, engine="c")


def _read(data: bytes, delimiter: str, header: list[str], *, engine: str) -> pd.DataFrame:
    extra: dict[str, object] = {"na_filter": False, "skip_blank_lines": False} if engine == "c" else {}
    frame = pd.read_csv(io.BytesIO(data), sep=delimiter, dtype=str, keep_default_na=False,
                        engine=engine, encoding="utf-8", **extra)  # type: ignore[call-overload]
    frame.columns = pd.Index(header)
    return frame  # type: ignore[no-any-return]


def _check_records(text: str, delimiter: str, width: int, name: str) -> None:
    """Raise on the first blank or wrong-width record; rows are records, so header is row 1."""
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, strict=True)
    row = 0
    try:
        for row, record in enumerate(reader, start=1):
            if not record:
                raise DataError("blank line", file=name, row=row, rule="blank_line")
            if len(record) != width:
                raise DataError(f"expected {width} fields, found {len(record)}", file=name, row=row,
                                rule="field_count")
    except csv.Error:
        raise DataError("malformed CSV (unbalanced quotes or a stray quote)", file=name, row=row + 1,
                        rule="csv_syntax") from None


def _apply_codes(series: pd.Series, codes: Mapping[str, str]) -> pd.Series:
    """Map employer codes to canonical ones; unmapped codes stay as they are, for validation to report."""
    if all(k == v for k, v in codes.items()):
        return series
    mapped = series.map(codes)
    return mapped.where(mapped.notna(), series).astype("str")


def _to_iso(series: pd.Series, date_format: str) -> pd.Series:
    """Dates in ``date_format`` become ISO text; blanks and unparseable values stay as they are."""
    parsed = pd.to_datetime(series, format=date_format, errors="coerce")
    iso = parsed.dt.strftime(_ISO)
    return iso.where(parsed.notna(), series).astype("str")
