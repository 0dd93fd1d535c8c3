"""Read an employer census file (CSV, XLSX or fixed width) into the canonical census: text only, mapped.

Structural problems (empty file, missing or duplicated columns, wrong field counts, NUL bytes, bytes the
declared encoding cannot decode, a formula-looking cell, a cell over the schema's ``max_cell_length``, a
file over the size cap, an archive where a census was expected) raise
:class:`~carrierfeeds.errors.DataError` naming the file by its name, the row and the column, never a cell
value. Value problems are left for validation to report.

Encodings: the schema declares one, or ``auto``: a byte order mark decides (UTF-8, UTF-16 LE/BE), a
UTF-16 file without one is recognised by its NUL pattern, and anything else must be strict UTF-8. Bytes
are never decoded by guesswork, so nothing is silently mangled.

Why one module: the three formats share one contract (text only, mapped columns, the same structural
errors raised the same way, the same byte and encoding rules), and most of the code is that shared
checking; a module per format would split each rule across three files. Its length is the edge cases
an employer's file really has, each handled once.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import mmap
import os
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from functools import partial
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import ParseError

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from carrierfeeds.census.archive import (
    MAGIC,
    check_size,
    check_zip_container,
    extract_single,
    sniff_format,
)
from carrierfeeds.census.columns import CANONICAL_COLUMNS, READER_WARNINGS, REQUIRED_COLUMNS, ROW_NUMBER
from carrierfeeds.config import CensusSchema, FixedWidthLayout
from carrierfeeds.errors import ConfigError, DataError
from carrierfeeds.hardening import loggable

log = logging.getLogger(__name__)

#: Canonical columns holding dates, converted from the schema's date format to ISO YYYY-MM-DD.
DATE_COLUMNS: tuple[str, ...] = ("dob", "hire_date", "coverage_start", "coverage_end",
                                 "death_date", "employment_end_date", "event_date", "cobra_begin", "cobra_end")
_ISO = "%Y-%m-%d"
_NON_BLANK = re.compile(r"[^\s\ufeff]")
_ASCII_SPACE = re.compile(rb"[ \t\n\r\x0b\x0c]+")
_FIRST_LINE = re.compile(rb"[^\n]*")  # matches from the start, even an empty line: never None
#: A spreadsheet runs a cell starting with these as a formula (CSV/formula injection).
_FORMULA_START = ("=", "+", "-", "@")
#: ...unless it is plainly a signed number or a phone number: digits with spaces, dots, dashes, brackets.
#: Linear by construction: what comes before the first digit cannot be a digit, so the two repeats never
#: compete for the same characters (``[..0-9..]*[0-9][..0-9..]*`` backtracked quadratically on a long
#: run of digits ending in a letter; see benchmarks/README.md). ASCII digits: re takes \d as any digit.
_NUMBERISH = r"^[+-]?[\s().\-/]*[0-9][0-9\s().\-/]*$"
#: The type of a memory map (the module's name is looked up at each call, so tests can watch the maps made).
_MMAP = mmap.mmap
#: Columns a coded read (``read_census(coded=True)``) keeps as text: about one distinct text per member, so
#: a dictionary would only add a hash of every cell to the read.
READ_PLAIN: tuple[str, ...] = ("member_id", "ssn")
#: The Arrow type a coded read parses the other columns into (one dictionary per block, unified after).
_DICTIONARY = pa.dictionary(pa.int32(), pa.string())
#: First bytes of a cell that starts like a formula.
_SIGN_BYTES = tuple(np.uint8(ord(c)) for c in _FORMULA_START)


def read_census(path: Path, schema: CensusSchema, *, display_name: str | None = None,
                private: bool = False, coded: bool = False) -> pd.DataFrame:
    """The census at ``path`` as canonical text columns plus ``row_number`` (header is row 1).

    The schema's ``format`` decides how the file is read (never its name: a staged file is always called
    ``census.csv``). ``display_name`` is the name errors use for the file (default: ``path.name``), for a
    file that was staged under another name. Unknown extra columns are dropped with a warning naming
    them; optional canonical columns the file lacks are added empty. Row numbers are the employer's:
    CSV records (header is 1), sheet rows, or lines of a fixed-width file.

    ``private``: the file is the run's own staged copy (see :func:`_map`), so a CSV or fixed-width file
    is read through a read-only memory map of it instead of a copy of its bytes. Leave it False for a
    file someone else may change while it is read (the CLI's ``validate`` and ``preview``).

    ``coded``: a CSV's columns other than :data:`READ_PLAIN` come as pandas ``Categorical`` columns over
    ``str`` categories (the distinct texts, in order of first appearance, every one of them used) instead
    of ``str`` columns, parsed straight into Arrow dictionaries: the same texts, without 8 bytes of
    offsets and a copy of the text per cell (the census frame's memory at scale; benchmarks/README.md),
    and validation takes their codes as they are instead of hashing the column again. Every check and
    code table runs on the distinct texts. XLSX, fixed width and a CSV the row-by-row path reads stay
    ``str``; a consumer of a coded census takes both.
    """
    name = loggable(display_name or path.name)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DataError("census file not found", file=name) from None
    check_size(size, schema.max_bytes, name=name)
    parsed: list[tuple[list[str], pd.DataFrame, np.ndarray]] = []
    if schema.format == "xlsx":
        parsed.append(_read_xlsx(path, schema, name))
    elif schema.format == "fixed_width" and schema.fixed_width is not None:  # the schema requires both
        raw, encoding = _bytes_of(path, schema, name, mapped=private)
        text, _ = _text_of(raw, encoding, name)
        del raw
        parsed.append(_read_fixed_width(text, schema.fixed_width, schema, name))
    else:
        raw, encoding = _bytes_of(path, schema, name, mapped=private)
        # A CSV that is plainly valid UTF-8 is parsed from its bytes with no decoded copy of the file
        # (decoding it to str only to check it costs more; benchmarks/README.md); anything the byte
        # checks cannot settle goes through the decoded text, which gives the error as it always did.
        data = _plain_utf8(raw, encoding)
        if data is None:
            text, utf8 = _text_of(raw, encoding, name)
            del raw  # a cp1252 or UTF-16 file's bytes are not held while its text is encoded again
            # Already valid UTF-8: hand the parser the bytes as they are rather than a re-encoded copy.
            data = utf8 if utf8 is not None else memoryview(text.encode("utf-8"))
            del text, utf8
        else:
            del raw
        held = [data]
        del data
        # A mapped file is unmapped when the last view of it goes, in _parse once the frame is made (the
        # CSV parser copies every value into its own buffers: nothing of the frame points into the map;
        # tests/census/test_census_readers_mapped.py closes the map and then reads the frame).
        parsed.append(_read_csv(held, schema, name, coded=coded))
    # Every cell is checked for a formula after it is stripped, in every format. (A byte scan that let CSVs
    # skip the check took longer than the check itself, see benchmarks/README.md, and missed a formula
    # behind Unicode whitespace the strip removes, such as an em space.)
    # The parsed table is handed over, not held here: _normalise frees each raw column once it is done.
    return _normalise(parsed, schema, name)


class NotStreamable(Exception):
    """The census cannot be read block by block (:func:`census_blocks`): the caller reads it whole
    (:func:`read_census`), which gives any error the file earns exactly as it always did."""


#: Bytes of CSV in a block of the block reader (parsed 4 MiB at a time, as the whole read).
BLOCK_BYTES = 64 << 20


def census_blocks(path: Path, schema: CensusSchema, *, display_name: str | None = None,
                  block_bytes: int = BLOCK_BYTES) -> Iterator[tuple[pd.DataFrame, ReadFaults]]:
    """The run's own staged CSV census (read through a memory map, see :func:`_map`) as canonical
    blocks, coded as ``read_census(coded=True)`` reads it, each with what the whole-file checks found
    in it; the caller adds the faults up and raises them (:meth:`ReadFaults.raise_first`) and the date
    warnings, once every block is read. Only a CSV that is plainly UTF-8, without blank lines, that the
    Arrow reader takes is read so; for any other file (or at the block Arrow refuses) this raises
    :class:`NotStreamable`, and :func:`read_census` reads it whole.
    """
    name = loggable(display_name or path.name)
    if schema.format != "csv":
        raise NotStreamable
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DataError("census file not found", file=name) from None
    check_size(size, schema.max_bytes, name=name)
    raw, encoding = _bytes_of(path, schema, name, mapped=True)
    # checked window by window, each window's pages of the map dropped once checked: the whole file's
    # pages are never resident together (they were the read's peak; benchmarks/README.md)
    data = _plain_utf8(raw, encoding) if not isinstance(raw, _MMAP) else _plain_utf8_releasing(raw, encoding)
    del raw
    if data is None:
        raise NotStreamable
    above = schema.header_row - 1
    if above:
        data = _past_lines(data, above, name)
    header = _header(data, schema.delimiter, name, row=above + 1)
    _check_header(header, schema, name, row=above + 1)
    _check_required(header, schema, name, row=above + 1)
    end = len(data)
    while end and data[end - 1] in b"\r\n":
        end -= 1
    if _has_blank_line_releasing(data, end):
        raise NotStreamable
    plain = {schema.header_for(c) for c in READ_PLAIN}
    dictionaries = {h for h in header if h not in plain}
    parse_bytes = min(block_bytes, 4 << 20)
    try:
        reader = pa_csv.open_csv(
            _source(data), read_options=pa_csv.ReadOptions(encoding="utf-8", block_size=parse_bytes, use_threads=False),
            parse_options=pa_csv.ParseOptions(delimiter=schema.delimiter),
            convert_options=pa_csv.ConvertOptions(default_column_type=pa.large_string(), null_values=[],
                                                  column_types=dict.fromkeys(dictionaries, _DICTIONARY),
                                                  strings_can_be_null=False, check_utf8=False))
    except (ValueError, TypeError):
        raise NotStreamable from None
    del data
    done = 0
    ended = False
    while not ended:
        # Arrow parses 4 MiB at a time (as the whole read); a block is made of several, each canonical
        # block costing a fixed overhead a column (figures in benchmarks/README.md)
        batches: list[pa.RecordBatch] = []
        size = 0
        while size < block_bytes:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                ended = True
                break
            except (ValueError, TypeError):  # ArrowInvalid: the whole read checks the file row by row
                raise NotStreamable from None
            if batch.num_columns != len(header):
                raise NotStreamable
            if batch.num_rows:
                batches.append(batch)
                size += parse_bytes
        if not batches:
            continue
        tables = [pa.Table.from_batches(batches)]
        del batches
        frame = _frame_of(tables)
        frame.columns = pd.Index(header)
        rows = np.arange(above + 2 + done, above + 2 + done + len(frame), dtype=np.int64)
        done += len(frame)
        yield _canonical(header, frame, rows, schema, name, quiet=done > len(rows))
    if not done:
        raise DataError("no data rows (header only)", file=name, row=above + 2, rule="no_data_rows")


#: Bytes of a mapped census checked before the pages behind them are dropped.
_WINDOW = 64 << 20


def _drop_pages(mapped: mmap.mmap, upto: int, released: int) -> int:
    """Drop the map's pages below ``upto`` (from ``released``) from this process; the new ``released``."""
    upto = min(upto, len(mapped)) // mmap.PAGESIZE * mmap.PAGESIZE
    if upto > released and hasattr(mapped, "madvise"):
        mapped.madvise(mmap.MADV_DONTNEED, released, upto - released)
        return upto
    return released


def _plain_utf8_releasing(raw: mmap.mmap, encoding: str) -> memoryview | None:
    """:func:`_plain_utf8` of a mapped file, checked in windows cut after a line break (never inside a
    UTF-8 sequence), each window's pages dropped once checked."""
    if encoding not in ("utf-8", "utf-8-sig"):
        return None
    data = _without_bom(raw)
    base = len(raw) - len(data)
    view = np.frombuffer(data, dtype=np.uint8)
    at = released = 0
    while at < len(data):
        cut = min(len(data), at + _WINDOW)
        if cut < len(data):
            breaks = np.flatnonzero(view[at:cut] == 0x0A)
            if not len(breaks):
                return _plain_utf8(raw, encoding)
            cut = at + int(breaks[-1]) + 1
        if (view[at:cut] == 0).any() or not _is_utf8(data[at:cut]):
            return None
        at = cut
        released = _drop_pages(raw, base + at, released)
    lead = _ASCII_SPACE.match(data)
    start = lead.end() if lead is not None else 0
    if start == len(data) or data[start] >= 0x80 or 0x1C <= data[start] <= 0x1F:
        return None
    return data


def _has_blank_line_releasing(data: memoryview, end: int) -> bool:
    """:func:`_has_blank_line`, window by window, dropping the pages of a mapped ``data`` behind it."""
    mapped = data.obj if isinstance(data.obj, _MMAP) else None
    if mapped is None:
        return _has_blank_line(data, end)
    base = (np.frombuffer(data, dtype=np.uint8).ctypes.data
            - np.frombuffer(memoryview(mapped), dtype=np.uint8).ctypes.data)
    released = 0
    for start in range(0, end, _WINDOW):
        stop = min(end, start + _WINDOW + 2)  # two bytes over: a pattern across the boundary is seen whole
        if _has_blank_line(data[start:stop], stop - start):
            return True
        released = _drop_pages(mapped, base + start + _WINDOW, released)
    return False


def _bytes_of(path: Path, schema: CensusSchema, name: str, *, mapped: bool = False
              ) -> tuple[bytes | mmap.mmap, str]:
    """The file's bytes (unzipped when the schema allows a zip) and the codec they are declared or
    detected to be in; ``mapped``: a read-only map of the file rather than a copy (:func:`_map`)."""
    raw = _map(path) if mapped else path.read_bytes()
    kind = sniff_format(raw[:512])
    if kind == "zip" and schema.allow_zip:
        # the archive's bytes (a slice of the map is a copy of it); the member is extracted
        _, raw = extract_single(raw if isinstance(raw, bytes) else raw[:], name=name, max_bytes=schema.max_bytes)
    elif kind is not None:
        hint = ("an encrypted workbook or a legacy .xls" if kind == "ole" else
                "a zip archive, and the census schema does not allow zips" if kind == "zip" else
                f"a {kind} archive")
        raise DataError(f"file is {hint}, not a {schema.format} census", file=name, rule="archive",
                        details={"format": kind})
    return raw, _encoding_for(raw[:4096], schema.encoding, name)


def _map(path: Path) -> bytes | mmap.mmap:
    """A read-only memory map of the file at ``path`` (b"" for an empty file, which cannot be mapped).

    The staged census was just written, so its pages are in the page cache: the map reads them where they
    are, where ``read_bytes`` would copy them into fresh anonymous memory (which a VM with free-page
    reporting pays for in kernel time; figures in benchmarks/README.md). Only for the run's own copy: a
    mapped file truncated while it is read kills the process (SIGBUS). The staged census is 0600 in the
    run's private folder, and whatever puts it there (stage_census through ``open_private`` or by moving its
    download aside, ``StagingStore.get_file``) writes another file and renames it over the old one, which
    leaves a mapped inode as it was; nothing truncates it in place.
    """
    with path.open("rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return b""
        # the map keeps its own descriptor; it is unmapped when the map and every view of it are gone
        return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)


def _plain_utf8(raw: bytes | mmap.mmap, encoding: str) -> memoryview | None:
    """``raw`` without a BOM (a view, not a copy) when it is UTF-8 that :func:`_text_of` would accept,
    by byte checks alone: valid UTF-8 (Arrow's validator refuses exactly what Python's codec does), no
    NUL byte, and a first byte past the leading ASCII whitespace that is printable ASCII, so the file is
    not blank. None when the encoding is another or a check fails: the decoded text then settles it,
    with the exact error."""
    if encoding not in ("utf-8", "utf-8-sig"):
        return None
    # a BOM holds no NUL: the search runs over raw, with find's own memchr (a memoryview has no find)
    if raw.find(b"\x00") >= 0:
        return None
    data = _without_bom(raw)
    if not _is_utf8(data):
        return None
    lead = _ASCII_SPACE.match(data)
    start = lead.end() if lead is not None else 0
    # \x1c-\x1f are whitespace to str.isspace(); a non-ASCII first character may be Unicode whitespace
    if start == len(data) or data[start] >= 0x80 or 0x1C <= data[start] <= 0x1F:
        return None
    return data


def _without_bom(raw: bytes | mmap.mmap) -> memoryview:
    """A view of ``raw`` past a UTF-8 byte order mark, if it starts with one."""
    return memoryview(raw)[3:] if raw[:3] == codecs.BOM_UTF8 else memoryview(raw)


def _is_utf8(data: bytes | memoryview) -> bool:
    """Whether ``data`` is strict UTF-8 (as ``data.decode("utf-8")`` would say), without decoding it."""
    offsets = pa.py_buffer(np.array([0, len(data)], dtype=np.int64))
    whole = pa.Array.from_buffers(pa.large_string(), 1, [None, offsets, pa.py_buffer(data)])
    try:
        whole.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _text_of(raw: bytes | mmap.mmap, encoding: str, name: str) -> tuple[str, memoryview | None]:
    """The file's text (decoded as declared or detected), and its UTF-8 bytes without a BOM (a view)
    when the file already was UTF-8."""
    text = _decode(raw, encoding, name)
    utf8 = None
    if encoding in ("utf-8", "utf-8-sig"):
        utf8 = _without_bom(raw)
    if "\x00" in text:
        raise DataError("file contains a NUL byte; is it a spreadsheet or UTF-16 file saved as CSV?",
                        file=name, row=text.count("\n", 0, text.index("\x00")) + 1, rule="nul_byte")
    if _NON_BLANK.search(text) is None:
        raise DataError("file is empty", file=name, rule="empty_file")
    return (text[1:] if text.startswith("\ufeff") else text), utf8  # a BOM the codec did not strip


def _encoding_for(head: bytes, declared: str, name: str) -> str:
    """The codec to decode with: the declared one (checked against a BOM), or detected for ``auto``,
    from the file's first 4096 bytes (``head``)."""
    utf16_bom = head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    if declared == "auto":
        if head.startswith(codecs.BOM_UTF8):
            return "utf-8-sig"
        if utf16_bom:
            return "utf-16"
        # ASCII text in UTF-16 without a BOM: every other byte is NUL.
        if len(head) >= 4 and head[1::2].count(0) > 0.9 * len(head[1::2]):
            return "utf-16-le"
        if len(head) >= 4 and head[0::2].count(0) > 0.9 * len(head[0::2]):
            return "utf-16-be"
        return "utf-8"
    if utf16_bom and declared != "utf-16":
        raise DataError(f"file starts with a UTF-16 byte order mark but the census schema declares "
                        f"{declared}; declare utf-16 (or auto)", file=name, row=1, rule="encoding")
    return declared


def _read_csv(held: list[memoryview], schema: CensusSchema, name: str, *, coded: bool = False
              ) -> tuple[list[str], pd.DataFrame, np.ndarray]:
    """The CSV whose bytes are taken out of ``held``: :func:`_parse` releases them once they are parsed.

    Lines above the schema's ``header_row`` (a title) are skipped; rows keep the file's own numbers."""
    above = schema.header_row - 1
    if above:
        held.append(_past_lines(held.pop(), above, name))
    header = _header(held[0], schema.delimiter, name, row=above + 1)
    _check_header(header, schema, name, row=above + 1)
    _check_required(header, schema, name, row=above + 1)
    dictionaries = ({h for h in header if h not in {schema.header_for(c) for c in READ_PLAIN}} if coded
                    else set())
    frame = _parse(held, schema.delimiter, header, name, above=above, dictionaries=dictionaries)
    if frame.empty:
        raise DataError("no data rows (header only)", file=name, row=above + 2, rule="no_data_rows")
    return header, frame, np.arange(above + 2, len(frame) + above + 2, dtype=np.int64)


def _past_lines(data: memoryview, lines: int, name: str) -> memoryview:
    """``data`` after its first ``lines`` lines (a view, not a copy): the rows above the header row."""
    view = np.frombuffer(data, dtype=np.uint8)
    breaks = np.flatnonzero(view[: min(len(view), 1 << 20)] == 0x0A)
    if len(breaks) < lines:
        raise DataError(f"the census schema's header_row is {lines + 1}, but the file has fewer lines",
                        file=name, row=len(breaks) + 1, rule="header_row")
    at = int(breaks[lines - 1]) + 1
    return data[at:]


def _check_required(header: list[str], schema: CensusSchema, name: str, *, row: int | None = None) -> None:
    missing = sorted(c for c in REQUIRED_COLUMNS if schema.header_for(c) not in header)
    if missing:
        # a header row with at most two cells is most likely a title above the real headers
        hint = ("; is there a title above the headers? the census schema's header_row names the header row"
                if row is not None and sum(1 for h in header if h) <= 2 else "")
        raise DataError(f"missing required column(s) {missing} (expected headers "
                        f"{[schema.header_for(c) for c in missing]}){hint}", file=name, row=row,
                        column=missing[0], rule="required_columns", details={"missing": missing})


def _normalise(parsed: list[tuple[list[str], pd.DataFrame, np.ndarray]], schema: CensusSchema,
               name: str) -> pd.DataFrame:
    """Map a parsed table (employer headers, text cells), taken out of ``parsed``, onto the canonical census.

    Each raw column is released as soon as its canonical one is made, so reading holds about one copy
    of the census instead of two.
    """
    header, frame, rows = parsed.pop()
    census, faults = _canonical(header, frame, rows, schema, name)
    del frame
    faults.raise_first(schema, name)
    warnings = faults.date_warnings(schema, name)
    if warnings:
        # PHI-free (file, column, row counts): validation carries them into its report
        census.attrs[READER_WARNINGS] = warnings
    log.info("%s: read %d rows", name, len(census))
    return census


@dataclass
class ReadFaults:
    """What the whole-file checks found in some rows of a census (the rows of one block, or all of
    them): the first cell over ``max_cell_length`` and the first formula-like cell, each as (row, header)
    with its count, and the date columns' day-and-month tallies. Blocks' faults add up to the file's
    (:meth:`add`), so a census read block by block raises and warns exactly as one read whole."""

    long_first: tuple[int, str] | None = None
    long_count: int = 0
    formula_first: tuple[int, str] | None = None
    formula_count: int = 0
    #: per date column: rows that read both ways, only with day and month swapped, only as declared
    dates: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    def add(self, other: ReadFaults) -> None:
        self.long_first = _earlier(self.long_first, other.long_first)
        self.long_count += other.long_count
        self.formula_first = _earlier(self.formula_first, other.formula_first)
        self.formula_count += other.formula_count
        for column, tally in other.dates.items():
            mine = self.dates.get(column, (0, 0, 0))
            self.dates[column] = (mine[0] + tally[0], mine[1] + tally[1], mine[2] + tally[2])

    def raise_first(self, schema: CensusSchema, name: str) -> None:
        """The error the file's cells earn, if any: a cell too long first, then a formula."""
        limit = schema.max_cell_length
        if self.long_first is not None:
            raise DataError(f"cell is longer than the census schema's max_cell_length of {limit} characters "
                            f"({self.long_count} such cell(s) in the file)", file=name, row=self.long_first[0],
                            column=self.long_first[1], rule="cell_too_long",
                            details={"cells": self.long_count, "max_cell_length": limit})
        if self.formula_first is not None:
            raise DataError(f"cell starts like a spreadsheet formula (=, +, -, @) and is not a number "
                            f"({self.formula_count} such cell(s) in the file); remove the formula or the "
                            "leading sign", file=name, row=self.formula_first[0], column=self.formula_first[1],
                            rule="formula_like_cell", details={"cells": self.formula_count})

    def date_warnings(self, schema: CensusSchema, name: str) -> list[str]:
        stats = [(c, *self.dates[c]) for c in DATE_COLUMNS if c in self.dates]
        return _date_warnings(stats, schema, name)


def _earlier(a: tuple[int, str] | None, b: tuple[int, str] | None) -> tuple[int, str] | None:
    return b if a is None or (b is not None and b[0] < a[0]) else a


def _canonical(header: list[str], frame: pd.DataFrame, rows: np.ndarray, schema: CensusSchema, name: str,
               *, quiet: bool = False) -> tuple[pd.DataFrame, ReadFaults]:
    """The canonical census of a parsed table (or of a block of one), and what the whole-file checks
    found in it (raised by the caller: a block's faults count only with the whole file's).
    ``quiet``: the logs about dropped and absent columns are not repeated (a later block)."""
    wanted = {schema.header_for(c): c for c in CANONICAL_COLUMNS}
    extra = [h for h in header if h not in wanted]
    if extra and not quiet:
        log.warning("%s: dropping %d unknown column(s): %s", name, len(extra), extra)
    index = frame.index
    raw = {wanted[h]: series for h, series in frame.items() if h in wanted}
    del frame
    out: dict[str, pd.Series] = {}
    signed: dict[str, np.ndarray] = {}
    for column in CANONICAL_COLUMNS:
        if column in raw:
            series = raw.pop(column)
            if _is_coded(series):
                out[column], signed[column] = _stripped_coded(series)
            else:
                out[column], signed[column] = _stripped(series.astype("str").fillna(""))
        else:
            out[column] = pd.Series("", index=index, dtype="str")
    present = {wanted[h] for h in header if h in wanted}
    absent = [c for c in CANONICAL_COLUMNS if c not in present]
    if absent and not quiet:
        log.info("%s: optional column(s) absent, left empty: %s", name, absent)
    faults = ReadFaults()
    faults.long_first, faults.long_count = _cell_length_faults(out, rows, schema)
    if faults.long_first is None:  # a cell too long is raised first: the formula check reads bounded cells
        faults.formula_first, faults.formula_count = _formula_faults(out, signed, rows, schema)

    for column, table in (("relationship", schema.relationship_codes), ("gender", schema.gender_codes),
                          ("coverage_level", schema.coverage_level_codes),
                          ("employment_status", schema.employment_status_codes),
                          ("benefit_status", schema.benefit_status_codes),
                          ("event_reason", schema.event_reason_codes)):
        out[column] = _per_text(out[column], partial(_apply_codes, codes=table, any_case=True))
    out["plan_code"] = _per_text(out["plan_code"], partial(_apply_codes, codes=schema.plan_codes))
    if schema.salary_frequency_codes:  # keys are upper case: employer codes match in any case
        out["salary_frequency"] = _per_text(out["salary_frequency"],
                                            partial(_frequency_codes, codes=schema.salary_frequency_codes))
    if schema.date_format != _ISO:
        faults.dates = _date_stats({c: out[c] for c in DATE_COLUMNS if c in present}, schema)
        for column in DATE_COLUMNS:
            out[column] = _per_text(out[column], partial(_to_iso, date_format=schema.date_format))
    census = pd.DataFrame(out)
    census[ROW_NUMBER] = rows
    return census, faults


def _is_coded(series: pd.Series) -> bool:
    """Whether ``series`` is a coded column of a coded read (a Categorical; see :func:`read_census`)."""
    return isinstance(series.dtype, pd.CategoricalDtype)


def _distinct(series: pd.Series) -> pd.Series:
    """A coded column's distinct texts, as a ``str`` Series in code order."""
    return pd.Series(series.cat.categories, dtype="str")


def _per_row(series: pd.Series, per_text: np.ndarray) -> np.ndarray:
    """Positions of the rows of coded ``series`` whose text's flag in ``per_text`` is set."""
    if not per_text.any():
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(per_text[series.cat.codes.to_numpy()])


def _recoded(series: pd.Series, texts: pd.Series) -> pd.Series:
    """Coded ``series`` with each distinct text replaced by the one at its position in ``texts`` (a
    mapping of the distinct texts, such as a strip or a code table): texts that become equal become one
    code, and the distinct texts stay in order of first appearance (the first of those merged comes
    first among the old ones, so first among the rows)."""
    if len(texts) == 0:
        return series
    from carrierfeeds.census.accepted import categorical_from

    codes, distinct = pd.factorize(texts.astype("str"))
    old = series.cat.codes.to_numpy()
    new = old if len(distinct) == len(texts) else np.asarray(codes, dtype=np.int32)[old]
    return pd.Series(categorical_from(new, pd.Index(distinct, dtype="str")), index=series.index,
                     name=series.name, copy=False)


def _per_text(series: pd.Series, fn: Callable[[pd.Series], pd.Series]) -> pd.Series:
    """``fn`` (a function of each cell's text alone) over ``series``: over its distinct texts when coded."""
    if not _is_coded(series):
        return fn(series)
    distinct = _distinct(series)
    texts = fn(distinct)
    return series if texts is distinct else _recoded(series, texts)


def _stripped_coded(series: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """:func:`_stripped` of a coded column, on its distinct texts: the column stripped, and the positions of
    its rows that start with a formula sign."""
    distinct = _distinct(series)
    stripped, signed = _stripped(distinct)
    flags = np.zeros(len(distinct), dtype=bool)
    flags[signed] = True
    return (series if stripped is distinct else _recoded(series, stripped)), _per_row(series, flags)


def _frequency_codes(series: pd.Series, codes: Mapping[str, str]) -> pd.Series:
    """The schema's salary_frequency_codes over ``series`` (keys upper case: employer codes in any case)."""
    upper = series.str.upper()
    return _apply_codes(upper, codes).where(upper.isin(list(codes)), series).astype("str")


def _stripped(series: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """``series.str.strip()``, and the positions of its cells that start with a formula sign.

    A column is returned as it is when strip() would copy it unchanged (a copy of every column for
    nothing): when every cell starts and ends with printable ASCII, or the few that do not (a name
    ending in é) are their own strip. Either way the signs are read off the column's Arrow buffers,
    one byte a cell, instead of four ``startswith`` passes over it.
    """
    edges = _edges(series)
    if edges is not None:
        signed, odd = edges
        if not len(odd):
            return series, signed
        if len(odd) <= len(series) // 4:
            cells = series.iloc[odd]
            if bool((cells.str.strip() == cells).all()):
                return series, signed
    stripped = series.str.strip()
    edges = _edges(stripped)
    if edges is None:
        return stripped, np.flatnonzero(stripped.str.startswith(_FORMULA_START).to_numpy(dtype=bool))
    return stripped, edges[0]


def _edges(series: pd.Series) -> tuple[np.ndarray, np.ndarray] | None:
    """From a text column's Arrow buffers, the positions of its cells whose first byte is one of
    _FORMULA_START, and of its cells that start or end with a byte other than printable ASCII
    (whitespace, a control character, or a non-ASCII character, which may be Unicode whitespace
    that strip() removes). None when the column is not Arrow text without nulls.
    """
    column = pa.chunked_array(series)
    if column.null_count or not (pa.types.is_large_string(column.type) or pa.types.is_string(column.type)):
        return None
    width = np.int64 if pa.types.is_large_string(column.type) else np.int32
    signed: list[np.ndarray] = []
    odd: list[np.ndarray] = []
    done = 0
    for chunk in column.chunks:
        if len(chunk):
            _, offsets_buffer, data_buffer = chunk.buffers()
            offsets = np.frombuffer(offsets_buffer, dtype=width)[chunk.offset:chunk.offset + len(chunk) + 1
                                                                 ].astype(np.int64, copy=False)
            if offsets[-1] > offsets[0]:  # else every cell is empty (and the data buffer may be too)
                data = np.frombuffer(data_buffer, dtype=np.uint8)
                starts, ends = offsets[:-1], offsets[1:]
                # An empty cell's "first byte" is its neighbour's (or a clipped index's): each candidate
                # is kept only if the cell is not empty, which is cheaper than masking every cell.
                first = data.take(starts, mode="clip")
                at = np.flatnonzero(_maybe_space(first) | _maybe_space(data.take(ends - 1, mode="clip")))
                odd.append(at[ends[at] > starts[at]] + done)
                signs = first == _SIGN_BYTES[0]
                for sign in _SIGN_BYTES[1:]:
                    signs |= first == sign
                at = np.flatnonzero(signs)
                signed.append(at[ends[at] > starts[at]] + done)
        done += len(chunk)
    none = np.zeros(0, dtype=np.int64)
    return (np.concatenate(signed) if signed else none), (np.concatenate(odd) if odd else none)


def _maybe_space(edge: np.ndarray) -> np.ndarray:
    """Which bytes at a cell's edge strip() may remove, or may begin or end a character it may: every
    byte but printable ASCII other than the space (0x21-0x7E). Byte arithmetic wraps below 0x21, and
    takes a tenth of the time of a 256-entry look-up table."""
    return (edge - np.uint8(0x21)) > np.uint8(0x7E - 0x21)


def _cell_length_faults(out: Mapping[str, pd.Series], rows: np.ndarray, schema: CensusSchema
                        ) -> tuple[tuple[int, str] | None, int]:
    """The first cell longer than the schema's ``max_cell_length`` (row, header) and how many there are:
    refused (:meth:`ReadFaults.raise_first`), naming its row and column (never its text), before any
    check that reads cells: no census field is that long, and every later per-cell check then works on
    bounded cells."""
    limit = schema.max_cell_length
    first: tuple[int, str] | None = None
    count = 0
    for column, series in out.items():
        text = _distinct(series) if _is_coded(series) else series
        if _fits(text, limit):
            continue
        long = np.flatnonzero(text.str.len().to_numpy(dtype=np.int64, na_value=0) > limit)
        if _is_coded(series):
            flags = np.zeros(len(text), dtype=bool)
            flags[long] = True
            long = _per_row(series, flags)
        if not len(long):
            continue
        count += len(long)
        row = int(rows[long[0]])
        if first is None or row < first[0]:
            first = (row, schema.header_for(column))
    return first, count


def _fits(series: pd.Series, limit: int) -> bool:
    """Whether no cell of a text column can be longer than ``limit`` characters, read off its Arrow
    offsets: a cell's UTF-8 bytes are at least its characters, so a column whose longest cell in bytes is
    within the limit needs no count of characters (which reads every byte). False when it may not be,
    or the column is not Arrow text: the caller then counts."""
    column = pa.chunked_array(series)
    if not (pa.types.is_large_string(column.type) or pa.types.is_string(column.type)):
        return False
    width = np.int64 if pa.types.is_large_string(column.type) else np.int32
    for chunk in column.chunks:
        if len(chunk) == 0:
            continue
        offsets = np.frombuffer(chunk.buffers()[1], dtype=width)[chunk.offset:chunk.offset + len(chunk) + 1]
        if offsets[-1] - offsets[0] > limit and int(np.diff(offsets).max()) > limit:
            return False
    return True


def _formula_faults(out: Mapping[str, pd.Series], signed: Mapping[str, np.ndarray], rows: np.ndarray,
                    schema: CensusSchema) -> tuple[tuple[int, str] | None, int]:
    """The first text cell a spreadsheet would run as a formula (row, header) and how many there are.

    ``signed`` holds, for each column read from the file, the positions of its cells that start with
    a formula sign (after the strip); only those are tested further.
    """
    first: tuple[int, str] | None = None
    count = 0
    for column, series in out.items():
        at = signed.get(column)
        if at is None or not len(at):
            continue
        suspects = series.iloc[at].astype("str")
        bad = suspects.str.startswith(("=", "@")) | ~suspects.str.match(_NUMBERISH)
        positions = at[bad.to_numpy(dtype=bool)]
        if not len(positions):
            continue
        count += len(positions)
        row = int(rows[positions[0]])
        if first is None or row < first[0]:
            first = (row, schema.header_for(column))
    return first, count


# ---------------------------------------------------------------------------------------------- XLSX
def _read_xlsx(path: Path, schema: CensusSchema, name: str) -> tuple[list[str], pd.DataFrame, np.ndarray]:
    """The chosen sheet's cached values as text; formulas are never evaluated."""
    openpyxl = _safe_openpyxl()
    from openpyxl.utils.exceptions import InvalidFileException  # type: ignore[import-untyped]

    with path.open("rb") as fh:
        head = fh.read(8)
    if head.startswith(MAGIC["ole"]):
        raise DataError("password-protected (encrypted) workbook or a legacy .xls; save it as an "
                        "unprotected .xlsx", file=name, rule="encrypted_workbook")
    if not head.startswith(MAGIC["zip"]):
        raise DataError("not an XLSX workbook", file=name, rule="not_xlsx")
    unreadable = (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError, zlib.error, ParseError,
                  InvalidFileException)
    # File objects, not the path: openpyxl refuses a path by its extension, and a staged census is
    # always called census.csv.
    with path.open("rb") as values_fh, path.open("rb") as formulas_fh:
        try:
            with zipfile.ZipFile(values_fh) as zf:
                check_zip_container(zf, name=name, max_bytes=schema.max_bytes)
            values_wb = openpyxl.load_workbook(values_fh, read_only=True, data_only=True)
            formulas_wb = openpyxl.load_workbook(formulas_fh, read_only=True, data_only=False)
        except unreadable as exc:
            raise DataError(f"not a readable XLSX workbook (truncated or damaged: {type(exc).__name__})",
                            file=name, rule="bad_xlsx") from None
        table = _sheet_table(values_wb, formulas_wb, schema, name, unreadable)
    return _table_frame(table, schema, name)


def _safe_openpyxl() -> Any:
    """openpyxl, parsing a workbook's XML only through defusedxml (no entity expansion, no external
    entities: a workbook is a zip of XML files the employer wrote). openpyxl picks its parsers once, when
    first imported, from what is installed and its environment (``OPENPYXL_DEFUSEDXML``,
    ``OPENPYXL_LXML``); if they are not defusedxml's, an XLSX census is refused rather than read."""
    os.environ.setdefault("OPENPYXL_LXML", "False")  # lxml's fromstring would bypass defusedxml
    import openpyxl  # type: ignore[import-untyped]
    from openpyxl.xml import functions  # type: ignore[import-untyped]

    parsers = (functions.fromstring, functions.iterparse)
    if not all(getattr(f, "__module__", "").startswith("defusedxml") for f in parsers):
        raise ConfigError("XLSX censuses are read only through defusedxml, and openpyxl is not using it "
                          "(is defusedxml installed, OPENPYXL_DEFUSEDXML unset, and OPENPYXL_LXML False?)",
                          field="census.format")
    return openpyxl


def _sheet_table(values_wb: Any, formulas_wb: Any, schema: CensusSchema, name: str,
                 unreadable: tuple[type[BaseException], ...]) -> list[list[str]]:
    try:
        sheet = _pick_sheet(values_wb, schema.sheet, name)
        values, formulas = values_wb[sheet], formulas_wb[sheet]
        values.reset_dimensions()  # the stored dimension can be wrong; read every row there is
        formulas.reset_dimensions()
        table: list[list[str]] = []
        for row_no, (vrow, frow) in enumerate(zip(values.iter_rows(), formulas.iter_rows(), strict=True),
                                              start=1):
            cells: list[str] = []
            for col_no, (vcell, fcell) in enumerate(zip(vrow, frow, strict=True), start=1):
                cells.append(_cell_text(vcell, fcell, schema, name, row_no, col_no, table))
            table.append(cells)
    except unreadable as exc:
        raise DataError(f"not a readable XLSX workbook (truncated or damaged: {type(exc).__name__})",
                        file=name, rule="bad_xlsx") from None
    finally:
        values_wb.close()
        formulas_wb.close()
    return table


def _pick_sheet(wb: Any, wanted: str | None, name: str) -> str:
    visible = [ws.title for ws in wb.worksheets if ws.sheet_state == "visible"]
    if wanted is None:
        if not visible:
            raise DataError("the workbook has no visible sheet", file=name, rule="no_sheet")
        return str(visible[0])
    if wanted not in wb.sheetnames:
        raise DataError(f"no sheet named {wanted!r} (visible sheets: {visible})", file=name, rule="no_sheet")
    if wanted not in visible:
        raise DataError(f"sheet {wanted!r} is hidden; hidden sheets are never read", file=name,
                        rule="hidden_sheet")
    return wanted


def _cell_text(vcell: Any, fcell: Any, schema: CensusSchema, name: str, row: int, col: int,
               table: list[list[str]]) -> str:
    value = vcell.value
    if fcell.data_type == "f" and value is None:
        raise DataError("cell holds a formula with no saved value (formulas are never evaluated); "
                        "paste the values instead", file=name, row=row, column=_column_name(table, col, schema),
                        rule="formula_cell")
    if vcell.data_type == "e":
        raise DataError("cell holds a spreadsheet error value", file=name, row=row,
                        column=_column_name(table, col, schema), rule="error_cell")
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, datetime):
        return value.date().strftime(schema.date_format) if value.time() == time(0) else value.isoformat()
    if isinstance(value, date):
        return value.strftime(schema.date_format)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _column_name(table: list[list[str]], col: int, schema: CensusSchema) -> str:
    """The header of 1-based column ``col`` when the header row holds one of the schema's column names there,
    else its position (``#3``). Row 1 is not trusted to be a header: in a sheet sent without its header
    row it holds a member's data, which must never reach a message."""
    at = schema.header_row - 1
    if len(table) > at and col <= len(table[at]):
        header = table[at][col - 1].strip()
        if header and header in {schema.header_for(c) for c in CANONICAL_COLUMNS}:
            return header
    return f"#{col}"


def _table_frame(table: list[list[str]], schema: CensusSchema, name: str
                 ) -> tuple[list[str], pd.DataFrame, np.ndarray]:
    """A sheet's rows as a frame: header on the schema's ``header_row`` (rows above it skipped), trailing
    blank rows and columns dropped; rows keep the sheet's own numbers."""
    while table and not any(table[-1]):
        table.pop()
    if not table:
        raise DataError("sheet is empty", file=name, rule="empty_file")
    above = schema.header_row - 1
    if len(table) <= above:
        raise DataError(f"the census schema's header_row is {above + 1}, but the sheet has fewer rows",
                        file=name, row=len(table), rule="header_row")
    header = [h.strip() for h in table[above]]
    while header and not header[-1]:
        header.pop()
    _check_header(header, schema, name, row=above + 1)
    _check_required(header, schema, name, row=above + 1)
    width = len(header)
    body = table[above + 1:]
    if not body:
        raise DataError("no data rows (header only)", file=name, row=above + 2, rule="no_data_rows")
    for row, cells in enumerate(body, start=above + 2):
        if not any(cells):
            raise DataError("blank row", file=name, row=row, rule="blank_line")
        if any(cells[width:]):
            raise DataError(f"cells beyond the {width} headed columns", file=name, row=row,
                            rule="field_count")
    rows = [(cells + [""] * width)[:width] for cells in body]
    frame = pd.DataFrame(rows, columns=header, dtype="str")
    return header, frame, np.arange(above + 2, len(rows) + above + 2, dtype=np.int64)


# --------------------------------------------------------------------------------------- fixed width
def _read_fixed_width(text: str, layout: FixedWidthLayout, schema: CensusSchema, name: str
                      ) -> tuple[list[str], pd.DataFrame, np.ndarray]:
    """Slice each record by the layout; a short, long (with record_length) or blank record is an error."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    first = layout.header_lines + 1
    body = lines[layout.header_lines:]
    while body and not body[-1].strip():
        body.pop()
    if not body:
        raise DataError("no data rows", file=name, row=first, rule="no_data_rows")
    end = max(f.start + f.width - 1 for f in layout.fields)
    header = [schema.header_for(f.column) for f in layout.fields]
    _check_required(header, schema, name)
    columns: dict[str, list[str]] = {h: [] for h in header}
    for row, line in enumerate(body, start=first):
        if not line.strip():
            raise DataError("blank line", file=name, row=row, rule="blank_line")
        if layout.record_length is not None and len(line) != layout.record_length:
            raise DataError(f"record is {len(line)} characters; the layout's record_length is "
                            f"{layout.record_length}", file=name, row=row, rule="record_length")
        elif len(line.rstrip()) > end:
            # Short records are fine (writers trim trailing blanks); text past the layout means the
            # layout is not this file's.
            raise DataError(f"characters beyond the layout's {end}", file=name, row=row, rule="record_length")
        for h, f in zip(header, layout.fields, strict=True):
            columns[h].append(line[f.start - 1:f.start - 1 + f.width])
    frame = pd.DataFrame(columns, dtype="str")
    return header, frame, np.arange(first, first + len(body), dtype=np.int64)


def _decode(raw: bytes | mmap.mmap, encoding: str, name: str) -> str:
    try:
        # str(raw, encoding) is raw.decode(encoding) for bytes (the same C function), and takes a map
        return str(raw, encoding)
    except UnicodeDecodeError as exc:
        row = raw[: exc.start].decode(encoding, errors="replace").count("\n") + 1
        raise DataError(f"bytes that are not valid {encoding} (byte offset {exc.start}); save the file as "
                        f"{encoding} or declare its encoding in the census schema",
                        file=name, row=row, rule="encoding") from None


def _header(data: bytes | memoryview, delimiter: str, name: str, *, row: int = 1) -> list[str]:
    first_line = bytes(_FIRST_LINE.match(data).group()).decode("utf-8")  # type: ignore[union-attr]
    try:
        return [h.strip() for h in next(csv.reader([first_line], delimiter=delimiter))]
    except csv.Error:
        # A lone carriage return inside an unquoted header field (found by the mapped-read property test).
        raise DataError("malformed CSV header (a line break or stray quote inside a header field)",
                        file=name, row=row, rule="csv_syntax") from None


def _check_header(header: list[str], schema: CensusSchema, name: str, *, row: int = 1) -> None:
    """Blank or duplicated headers, named by position. Header text is named only when it is one of the
    schema's column names: in a file sent without its header row, row 1 holds a member's data."""
    blanks = [i + 1 for i, h in enumerate(header) if not h]
    if blanks:
        raise DataError(f"column(s) at position(s) {blanks} have no header", file=name, row=row,
                        rule="blank_header")
    seen: set[str] = set()
    dupes = sorted({h for h in header if h in seen or seen.add(h)})  # type: ignore[func-returns-value]
    if not dupes:
        return
    known = {schema.header_for(c) for c in CANONICAL_COLUMNS}
    named = [h for h in dupes if h in known]
    positions = [i + 1 for i, h in enumerate(header) if h in dupes and h not in known]
    parts = [f"duplicated column(s) {named}"] if named else []
    if positions:
        parts.append(f"the same header text at positions {positions} (not a column name of census schema "
                     f"{schema.schema_id!r}; is the header row missing?)")
    raise DataError("; ".join(parts), file=name, row=row, column=named[0] if named else None,
                    rule="duplicate_columns", details={"duplicated": named, "positions": positions})


def _parse(held: list[memoryview], delimiter: str, header: list[str], name: str, *, above: int = 0,
           dictionaries: set[str] | frozenset[str] = frozenset()) -> pd.DataFrame:
    """Parse with pyarrow (fast); when it refuses, find the structural fault ourselves, else use C.

    The bytes are taken out of ``held`` and released as soon as they are parsed, rather than when the
    caller returns: the frame is made, and the row-by-row check runs on its copy of the records,
    without the whole file beside them.
    """
    data = held.pop()
    # pyarrow skips blank lines, which would shift the row numbers after them: check those files
    # record by record instead.
    # (searched in place up to the trailing line breaks: no copy of the file)
    end = len(data)
    while end and data[end - 1] in b"\r\n":
        end -= 1
    if not _has_blank_line(data, end):
        try:
            table = _read_arrow(data, delimiter, len(header), dictionaries=dictionaries)
        except (pd.errors.ParserError, ValueError, TypeError) as exc:
            # the engine's message can quote the offending line; keep only the exception's type
            log.info("%s: pyarrow engine could not parse the file (%s); checking it row by row",
                     name, type(exc).__name__)
        else:
            del data
            if dictionaries:
                tables = [table]
                del table
                frame: pd.DataFrame = _frame_of(tables)
            else:
                frame = table.to_pandas()
                del table
            frame.columns = pd.Index(header)
            return frame
    body = data[:end]
    del data
    _check_records(str(body, "utf-8"), delimiter, len(header), name, above=above)
    return _read(body, delimiter, header, engine="c")


def _has_blank_line(data: bytes | memoryview, end: int, *, step: int = 1 << 22) -> bool:
    """Whether ``data[:end]`` holds b"\\n\\n" or b"\\n\\r\\n", as ``bytes.find`` would say.

    ``bytes.find`` compares every byte for a two-byte pattern (benchmarks/README.md); this
    finds the line breaks with numpy, 4 MiB at a time, and looks at the gaps between them.
    """
    view = np.frombuffer(data, dtype=np.uint8, count=end)
    for start in range(0, end, step):
        chunk = view[start:start + step + 2]  # two bytes over: a pattern across the boundary is seen whole
        breaks = np.flatnonzero(chunk == 0x0A)
        gaps = np.diff(breaks)
        if (gaps == 1).any() or (chunk[breaks[:-1][gaps == 2] + 1] == 0x0D).any():
            return True
    return False


def _read_arrow(data: bytes | memoryview, delimiter: str, width: int, *,
                dictionaries: set[str] | frozenset[str] = frozenset()) -> pa.Table:
    """The table behind ``pd.read_csv(engine="pyarrow", dtype=str, keep_default_na=False)`` (the options it
    hands pyarrow), with pyarrow reading the bytes in place rather than through a file object, and in 4 MiB
    blocks rather than 1 MiB (a quarter as many chunks per column, which every pass over a column's chunks
    pays for), without checking the UTF-8 a second time. The values do not depend on the block size; only
    whether a quoted line break falls on a block boundary does (pyarrow then refuses the file and the caller
    checks it row by row). Raises ``ValueError`` (``pyarrow.ArrowInvalid`` is one).

    ``dictionaries``: the headers whose columns are parsed into Arrow dictionaries (one per block)."""
    table = pa_csv.read_csv(
        _source(data),
        read_options=pa_csv.ReadOptions(encoding="utf-8", block_size=4 << 20),
        parse_options=pa_csv.ParseOptions(delimiter=delimiter),
        # check_utf8 off: the bytes are the file's own once they were found to be UTF-8, or the decoded
        # text encoded again, never anything else; cells split at ASCII delimiters stay UTF-8
        convert_options=pa_csv.ConvertOptions(default_column_type=pa.large_string(), null_values=[],
                                              column_types=dict.fromkeys(dictionaries, _DICTIONARY),
                                              strings_can_be_null=False, check_utf8=False))
    if table.num_columns != width:
        raise ValueError(f"{table.num_columns} columns parsed for {width} headers")
    return table


def _frame_of(tables: list[pa.Table]) -> pd.DataFrame:
    """The table taken out of ``tables`` as pandas: dictionary columns as Categoricals
    (:func:`~carrierfeeds.census.accepted.as_categorical`, the blocks' dictionaries unified: the distinct
    texts in order of first appearance), the rest as ``table.to_pandas()`` has them. Each column is let
    go of as soon as it is converted (the caller holds no reference to the table: its codes and the
    frame's are never all resident together)."""
    from carrierfeeds.census.accepted import as_categorical

    table = tables.pop()
    names = table.column_names
    columns = dict(zip(names, table.columns, strict=True))
    plain = table.select([i for i, f in enumerate(table.schema) if not pa.types.is_dictionary(f.type)])
    del table
    frame = plain.to_pandas()
    del plain
    out: dict[str, pd.Series] = {}
    for column in names:  # distinct: a repeated header was refused before the parse
        arrow = columns.pop(column)
        out[column] = (pd.Series(as_categorical(arrow), copy=False) if pa.types.is_dictionary(arrow.type)
                       else frame[column])
        del arrow
        # Arrow's pool keeps what it frees for a while (mimalloc's purge delay); handed back at once, the
        # table's pages go as the frame's come instead of both being resident (benchmarks/README.md)
        pa.default_memory_pool().release_unused()
    return pd.DataFrame(out, copy=False)


def _source(data: bytes | memoryview) -> pa.NativeFile:
    """What pyarrow's CSV reader reads ``data`` from: a view of a memory map through
    :class:`_ReleasingReader`, anything else in place."""
    if isinstance(data, memoryview) and isinstance(data.obj, _MMAP) and len(data):
        return pa.PythonFile(_ReleasingReader(data, data.obj), mode="r")
    return pa.BufferReader(pa.py_buffer(data))


class _ReleasingReader(io.RawIOBase):
    """A mapped census handed to pyarrow's CSV reader block by block: each block is copied out (pyarrow
    holds that copy until the block is parsed) and the map's pages behind it are dropped from this
    process (``madvise(MADV_DONTNEED)``), so the whole file's pages and the whole parsed table are not
    resident together (the read's peak; figures in benchmarks/README.md). The pages stay in the page
    cache; the map is read-only and nothing reads those pages again, and one that did would fault them
    back in unchanged. Only for the run's own staged copy, as for the map itself (see :func:`_map`)."""

    def __init__(self, data: memoryview, mapped: mmap.mmap) -> None:
        super().__init__()
        self._data = data
        self._map = mapped
        # where the view starts in the map (past a byte order mark, if any)
        self._base = (np.frombuffer(data, dtype=np.uint8).ctypes.data
                      - np.frombuffer(memoryview(mapped), dtype=np.uint8).ctypes.data)
        self._pos = 0
        self._released = 0

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size is None or size < 0 else min(len(self._data), self._pos + size)
        block = bytes(self._data[self._pos:end])
        self._pos = end
        upto = (self._base + end) // mmap.PAGESIZE * mmap.PAGESIZE
        if upto > self._released and hasattr(self._map, "madvise"):
            self._map.madvise(mmap.MADV_DONTNEED, self._released, upto - self._released)
            self._released = upto
        return block

    def close(self) -> None:
        self._data = memoryview(b"")  # the map is unmapped once the caller's last view of it goes
        super().close()


def _read(data: bytes | memoryview, delimiter: str, header: list[str], *, engine: str) -> pd.DataFrame:
    extra: dict[str, object] = {"na_filter": False, "skip_blank_lines": False} if engine == "c" else {}
    frame = pd.read_csv(io.BytesIO(data), sep=delimiter, dtype=str, keep_default_na=False,
                        engine=engine, encoding="utf-8", **extra)  # type: ignore[call-overload]
    frame.columns = pd.Index(header)
    return frame  # type: ignore[no-any-return]


def _check_records(text: str, delimiter: str, width: int, name: str, *, above: int = 0) -> None:
    """Raise on the first blank or wrong-width record; rows are records, so the header is row 1 (after
    the ``above`` lines above it)."""
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, strict=True)
    row = above
    try:
        for row, record in enumerate(reader, start=above + 1):
            if not record:
                raise DataError("blank line", file=name, row=row, rule="blank_line")
            if len(record) != width:
                raise DataError(f"expected {width} fields, found {len(record)}", file=name, row=row,
                                rule="field_count")
    except csv.Error as exc:
        if "field limit" in str(exc):  # the csv module's own cap on a field, far past max_cell_length
            raise DataError(f"a cell is longer than {csv.field_size_limit()} characters", file=name,
                            row=row + 1, rule="cell_too_long") from None
        raise DataError("malformed CSV (unbalanced quotes or a stray quote)", file=name, row=row + 1,
                        rule="csv_syntax") from None


def _apply_codes(series: pd.Series, codes: Mapping[str, str], *, any_case: bool = False) -> pd.Series:
    """Map employer codes to canonical ones; unmapped codes stay as they are, for validation to report.

    ``any_case``: a code table's keys match cells in any case (an employer's "Spouse", "SPOUSE" and
    "spouse" are one code); plan names match exactly."""
    if all(k == v for k, v in codes.items()):
        return series
    if any_case:
        upper = {k.strip().upper(): v for k, v in codes.items()}
        mapped = series.astype("str").str.upper().map(upper)
        return mapped.where(mapped.notna(), series).astype("str")
    mapped = series.map(codes)
    return mapped.where(mapped.notna(), series).astype("str")


def _swapped(date_format: str) -> str | None:
    """``date_format`` with day and month swapped; None when it lacks one of them."""
    if date_format.count("%d") != 1 or date_format.count("%m") != 1:
        return None
    return date_format.replace("%d", "\x00").replace("%m", "%d").replace("\x00", "%m")


def _date_stats(columns: Mapping[str, pd.Series], schema: CensusSchema) -> dict[str, tuple[int, int, int]]:
    """Per date column with a date in it: rows whose dates read both ways (day and month 12 or less and
    differing), rows that are dates only with day and month swapped, rows only as declared."""
    other = _swapped(schema.date_format)
    if other is None:
        return {}
    stats: dict[str, tuple[int, int, int]] = {}
    for column, series in columns.items():
        counts = series[series != ""].value_counts()
        counts = counts[counts > 0]  # a coded column counts every distinct text, those no row has too
        if counts.empty:
            continue
        values = pd.Series(counts.index, dtype="str")
        declared = pd.to_datetime(values, format=schema.date_format, errors="coerce")
        swapped = pd.to_datetime(values, format=other, errors="coerce")
        weights = counts.to_numpy()
        two = (declared.notna() & swapped.notna() & (declared != swapped)).to_numpy()
        only_swapped = (declared.isna() & swapped.notna()).to_numpy()
        only_declared = (declared.notna() & swapped.isna()).to_numpy()
        stats[column] = (int(weights[two].sum()), int(weights[only_swapped].sum()), int(weights[only_declared].sum()))
    return stats


def _date_warnings(stats: list[tuple[str, int, int, int]], schema: CensusSchema, name: str) -> list[str]:
    """Whether the schema's ``date_format`` may have day and month the wrong way round, from
    :func:`_date_stats` (column, both ways, only swapped, only declared; in ``DATE_COLUMNS`` order).

    A date whose day and month both are 12 or less (and differ) reads as two different dates, so a wrong
    format swaps it silently. Two signs, by row count per column (never a value): a column with dates
    that are dates only with day and month swapped (a day above 12 in the month's place) and none that
    is a date only as declared; or no date in the file that confirms the order (every column's dates
    read both ways), so the file cannot tell."""
    other = _swapped(schema.date_format)
    if other is None:
        return []

    def where(column: str) -> str:
        return f"column {schema.header_for(column)!r} ({column})"

    out = [f"{name}: {where(c)}: {only_swapped} row(s) are dates only with day and month swapped ({other!r}), "
           f"none only as the census schema's date_format {schema.date_format!r}; if the format is wrong, "
           f"the {both} row(s) that read both ways have day and month silently swapped"
           for c, both, only_swapped, only_declared in stats if only_swapped and not only_declared]
    if not out and not any(only_declared for *_, only_declared in stats):
        ambiguous = [f"{where(c)} {both} row(s)" for c, both, *_ in stats if both]
        if ambiguous:
            out.append(f"{name}: no date in the file confirms the census schema's date_format "
                       f"{schema.date_format!r}: every date reads both as it and as {other!r} (day and month "
                       f"12 or less) in {', '.join(ambiguous)}; check a few rows by hand")
    return out


def _to_iso(series: pd.Series, date_format: str) -> pd.Series:
    """Dates in ``date_format`` become ISO text; blanks and unparseable values stay as they are."""
    parsed = pd.to_datetime(series, format=date_format, errors="coerce")
    iso = parsed.dt.strftime(_ISO)
    return iso.where(parsed.notna(), series).astype("str")
