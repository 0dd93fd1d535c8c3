"""Write an Enrollment as an X12 834 005010X220A1 file: a pure generator of byte chunks (no clock, no I/O).

Layout (element separators as declared in :class:`~carrierfeeds.x12.envelope.Delimiters`)::

    ISA GS*BE
      per transaction set  ST*834 BGN [REF*38] [DTP*007] [QTY...] N1*P5 N1*IN [N1*TV] [N1*BO]
        per member  (Loop 2000)  INS  REF*0F  [REF*1L]  [REF*17]  [REF*23 dependents]  [REF*DX]
                                 [DTP*303]  [DTP*336 hire date]  [DTP*337]  [DTP*340]  [DTP*341]
                                 [DTP*356]  [DTP*357]
                    (Loop 2100A) NM1*IL [...*34*ssn]  [PER*IP]  [N3 N4]  [DMG*D8]  [ICM]  [HLH]  [LUI]
                    (Loop 2100B) [NM1*70 [DMG*D8]]
                    (Loop 2100C) [NM1*31 N3 N4]
                    after its Loop 2300s [LS*2700 (LX N1*75 REF [DTP*007])... LE*2700]
                    per coverage (Loop 2300) HD  DTP*348  [DTP*349]  [AMT*FK] [AMT*P3]  [REF*1L]
                                 [Loop 2310: LX NM1*P3 (primary care provider)]
      SE
    GE IEA

The optional segments come from optional view columns (:mod:`carrierfeeds.enrollment`): REF*1L
``group_policy_number``, REF*17 ``reporting_category``, REF*DX ``department``, DTP*356/357
``eligibility_begin``/``eligibility_end``, the 2300 REF*1L ``coverage_policy_number``; a segment is
written only for a non-empty value, so a view without those columns renders as it always has. The
member status columns (``benefit_status`` ... ``death_date``) fill INS05-INS12 (:func:`ins_elements`),
``maintenance_effective``, ``employment_end_date``, ``cobra_begin``/``cobra_end`` DTP*303/337/340/341.

One transaction set unless ``Enrollment.options.max_members_per_transaction`` caps it: then families
are packed, whole and in order, into sets of at most that many members (a family larger than the cap
is refused: never split, never over the cap). A single set carries the ledger's ST02; split sets are
numbered 0001, 0002, ... (unique in the group, and the same on every retry, being derived from the
view alone), their BGN02 is the file's reference plus "-1", "-2", ..., and GE01 counts them.

Change files (:mod:`carrierfeeds.changes`) add optional view columns: ``ins04`` (INS04, "XN" when
absent) and ``hd01`` (HD01, INS03 when absent); a row whose ``hd03`` is "" is a member without a
Loop 2300 (a demographic change). Without those columns the bytes are those of a full file.
Trailing empty elements are never written. :func:`render_834` builds each chunk of members with
one Arrow gather of its segments' pieces (:class:`_Pieces`); :func:`render_834_naive` is the per-row
reference it must equal byte for byte (tests assert it; benchmarks use it as the baseline).

Why one module: the vectorised writer, the per-row reference and the segment layout above change
together whenever a segment is added; kept side by side, a reviewer sees both writers of each segment
and the test that holds them byte-identical covers one file.
"""

from __future__ import annotations

import functools
import io
import itertools
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, BinaryIO, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from carrierfeeds.census.columns import ROW_NUMBER
from carrierfeeds.enrollment import Enrollment, RenderOptions, assert_allowlisted, family_starts, member_starts
from carrierfeeds.errors import ConformanceFailed
from carrierfeeds.threads import iter_in_order, thread_count
from carrierfeeds.x12.codes import AmountQualifier, ControlTotal, DateQualifier
from carrierfeeds.x12.envelope import DEFAULT_DELIMITERS, ControlNumbers, Delimiters, TransactionHeader
from carrierfeeds.x12.sanitize import CHARACTER_SETS, Charset, bytes_outside, fold_text

log = logging.getLogger(__name__)

VERSION = "005010X220A1"
_TEXT_COLUMNS = ("member_id", "subscriber_id", "ins01", "ins02", "ins03", "ins04", "employment_status",
                 "last_name", "first_name", "middle_initial", "ssn", "dob", "gender", "address1",
                 "address2", "city", "state", "zip", "hire_date", "hd01", "hd03", "hd04", "hd05",
                 "coverage_start", "coverage_end")
#: Maintenance columns a change set adds to the view: derived from config and the diff, not the census.
MAINTENANCE_COLUMNS = ("ins04", "hd01")
#: View columns behind the situational REF/DTP options: only those the view has are carried (every
#: extra empty column costs a conversion, a filter and a delimiter scan per chunk).
OPTION_COLUMNS = ("group_policy_number", "reporting_category", "department", "eligibility_begin",
                  "eligibility_end", "coverage_policy_number",
                  # volumes: 2100A ICM01/ICM02, 2300 AMT*FK and AMT*P3
                  "icm01", "salary", "coverage_amount", "premium_amount",
                  # contact: 2100A PER, HLH, LUI; 2100C N3/N4
                  "phone", "email", "hlh01", "language", "mailing_address1", "mailing_address2",
                  "mailing_city", "mailing_state", "mailing_zip",
                  # primary care provider: Loop 2310 LX, NM1*P3
                  "pcp_npi", "pcp_relationship",
                  # member reporting categories: Loop 2700/2750 values and DTP*007 dates
                  *(f"reporting_2750_{k}{suffix}" for k in range(1, 11) for suffix in ("", "_date")),
                  # member status (INS05-INS12, DTP*303/337/340/341)
                  "benefit_status", "medicare_plan", "medicare_reason", "cobra_event", "student_status",
                  "handicap", "death_date", "maintenance_effective", "employment_end_date", "cobra_begin",
                  "cobra_end",
                  # Loop 2100B (identity corrections): NM1*70 and DMG with what the carrier holds
                  "prior_last_name", "prior_first_name", "prior_middle_initial", "prior_ssn", "prior_dob",
                  "prior_gender")
#: Loop 2300 AMT segments, in the order written (after DTP*348/349, before REF*1L), and their columns.
_AMOUNTS = ((AmountQualifier.COVERAGE_AMOUNT.value, "coverage_amount"),
            (AmountQualifier.PREMIUM_AMOUNT.value, "premium_amount"))
#: Option columns written inside INS (INS05-INS12), in element order; the rest are Loop 2000 DTPs.
INS_STATUS_COLUMNS = ("benefit_status", "medicare_plan", "medicare_reason", "cobra_event", "student_status",
                      "handicap", "death_date")


def ins_elements(row: dict[str, str], d: Delimiters) -> list[str]:
    """INS01-INS12 of a member's view row (INS05 "A" unless the view has a benefit status)."""
    medicare = row.get("medicare_plan", "")
    if medicare and row.get("medicare_reason"):
        medicare += d.component + row["medicare_reason"]
    death = row.get("death_date", "")
    return [row["ins01"], row["ins02"], row["ins03"], row["ins04"], row.get("benefit_status") or "A", medicare,
            row.get("cobra_event", ""), row["employment_status"], row.get("student_status", ""),
            row.get("handicap", ""), "D8" if death else "", death]


def _seg(d: Delimiters, *elements: str) -> str:
    """One segment, trailing empty elements dropped, terminated."""
    parts = list(elements)
    while parts and parts[-1] == "":
        parts.pop()
    return d.element.join(parts) + d.terminator


def _check_value(value: str, d: Delimiters, what: str) -> str:
    if any(ch in value for ch in d.reserved):
        raise ConformanceFailed(f"{what} holds an X12 delimiter", details={"element": what})
    return value


def envelope_segments(header: TransactionHeader, control: ControlNumbers, d: Delimiters) -> list[str]:
    """ISA and GS, terminated."""
    ids = header.ids
    created = header.created_utc
    for value, what in ((ids.sender_id, "ISA06"), (ids.receiver_id, "ISA08"), (ids.gs_sender, "GS02"),
                        (ids.gs_receiver, "GS03")):
        _check_value(value, d, what)
    isa = d.element.join([
        "ISA", "00", " " * 10, "00", " " * 10, ids.sender_qualifier, f"{ids.sender_id:<15}"[:15],
        ids.receiver_qualifier, f"{ids.receiver_id:<15}"[:15], created.strftime("%y%m%d"),
        created.strftime("%H%M"), d.repetition, "00501", control.isa13_text, "1" if ids.ta1_requested else "0",
        ids.usage, d.component]) + d.terminator
    return [isa, _seg(d, "GS", "BE", ids.gs_sender, ids.gs_receiver, created.strftime("%Y%m%d"),
                      created.strftime("%H%M"), control.gs06_text, "X", VERSION)]


def set_header_segments(header: TransactionHeader, st02: str, d: Delimiters, *, reference: str | None = None,
                        group_number: bool = True, options: RenderOptions | None = None,
                        totals: dict[str, int] | None = None) -> list[str]:
    """ST, BGN, REF*38 and the two N1 parties of one transaction set, terminated; with ``options`` also
    the mapping's file header segments (DTP*007, QTY from ``totals``, Loop 1000C)."""
    created = header.created_utc
    bgn02 = header.reference if reference is None else reference
    for value, what in ((bgn02, "BGN02"), (header.action, "BGN08"), (st02, "ST02")):
        _check_value(value, d, what)
    segs = [
        _seg(d, "ST", "834", st02, VERSION),
        _seg(d, "BGN", "00", bgn02, created.strftime("%Y%m%d"), created.strftime("%H%M"), "UT",
             "", "", header.action),
    ]
    if group_number and header.group_number and fold_text(header.group_number, 50):
        segs.append(_seg(d, "REF", "38", fold_text(header.group_number, 50)))
    if options is not None:
        segs.extend(_file_dates_and_totals(options, totals or {}, d))
    for code, party in (("P5", header.sponsor), ("IN", header.payer)):
        segs.append(_seg(d, "N1", code, fold_text(party.name, 60), party.id_qualifier,
                         fold_text(party.id, 80)))
    if options is not None:
        segs.extend(_header_parties(options, d))
    return segs


def _file_dates_and_totals(options: RenderOptions, totals: dict[str, int], d: Delimiters) -> list[str]:
    """DTP*007 and the QTY totals the mapping asks for (between REF*38 and Loop 1000A, as the TR3 orders)."""
    segs = []
    if options.file_effective_date:
        segs.append(_seg(d, "DTP", DateQualifier.EFFECTIVE.value, "D8", options.file_effective_date))
    segs.extend(_seg(d, "QTY", q, str(totals.get(q, 0))) for q in options.control_totals)
    return segs


def _header_parties(options: RenderOptions, d: Delimiters) -> list[str]:
    """Loop 1000C: one N1 per TPA or broker the mapping names, after the payer."""
    for party in options.header_parties:
        _check_value(party[1], d, "N102")
        _check_value(party[3], d, "N104")
    return [_seg(d, "N1", *party) for party in options.header_parties]


def set_totals(table: pd.DataFrame, start: np.ndarray, lo: int, hi: int) -> dict[str, int]:
    """QTY counts of one transaction set (rows [lo, hi)): TO members, ET subscribers, DT dependents."""
    members = np.asarray(start[lo:hi], dtype=bool)
    employees = members & (table["ins01"].iloc[lo:hi].to_numpy(dtype=object) == "Y")
    total, ets = int(members.sum()), int(employees.sum())
    return {ControlTotal.TOTAL.value: total, ControlTotal.EMPLOYEE_TOTAL.value: ets,
            ControlTotal.DEPENDENT_TOTAL.value: total - ets}


def header_segments(header: TransactionHeader, control: ControlNumbers, d: Delimiters,
                    *, group_number: bool = True) -> list[str]:
    """ISA, GS, ST, BGN, REF*38 and the two N1 parties of a one-set file, terminated."""
    return [*envelope_segments(header, control, d),
            *set_header_segments(header, control.st02_text, d, group_number=group_number)]


def trailer_segments(control: ControlNumbers, d: Delimiters, st_segments: int, *, st02: str | None = None,
                     sets: int = 1) -> list[str]:
    """SE (counting ST..SE inclusive, of the last set), GE (counting ``sets``) and IEA."""
    return [_seg(d, "SE", str(st_segments), control.st02_text if st02 is None else st02),
            _seg(d, "GE", str(sets), control.gs06_text),
            _seg(d, "IEA", "1", control.isa13_text)]


def split_transaction_sets(table: pd.DataFrame, start: np.ndarray, cap: int | None) -> list[tuple[int, int]]:
    """Row bounds [lo, hi) of each transaction set: whole families, in order, at most ``cap`` members.

    A family is a run of rows with one subscriber id. One set when ``cap`` is None; a family with more
    members than ``cap`` is refused (never split across sets, never over the carrier's cap).
    """
    n = len(table)
    if cap is None or n == 0:
        return [(0, n)]
    fam_starts = np.flatnonzero(family_starts(table))
    members = np.add.reduceat(start.astype(np.int64), fam_starts)
    if int(members.max()) > cap:
        raise ConformanceFailed(
            f"a family of {int(members.max())} members exceeds max_members_per_transaction {cap}; "
            "families are never split across transaction sets",
            details={"rule": "family_exceeds_transaction_cap", "family_members": int(members.max()), "cap": cap})
    bounds: list[tuple[int, int]] = []
    lo, count = 0, 0
    for fam_start, size in zip(fam_starts.tolist(), members.tolist(), strict=True):
        if count and count + size > cap:
            bounds.append((lo, fam_start))
            lo, count = fam_start, 0
        count += size
    bounds.append((lo, n))
    return bounds


def set_numbers(control: ControlNumbers, sets: int) -> list[str]:
    """ST02 of each set: the ledger's own for a single set; 0001, 0002, ... when split."""
    return [control.st02_text] if sets == 1 else [f"{k:04d}" for k in range(1, sets + 1)]


def _set_reference(header: TransactionHeader, k: int, sets: int) -> str:
    if sets == 1:
        return header.reference
    suffix = f"-{k}"
    return header.reference[:50 - len(suffix)] + suffix


def _prepare(enrollment: Enrollment, d: Delimiters) -> tuple[pd.DataFrame, np.ndarray]:
    """The view with every optional column present ("" when dropped; option columns only when the view
    has them) and the member-start mask."""
    table = enrollment.table
    source = enrollment.options.source_of
    assert_allowlisted([ROW_NUMBER if c in MAINTENANCE_COLUMNS else source(c) or ROW_NUMBER
                        for c in table.columns], enrollment.allowlist)
    missing = [c for c in _TEXT_COLUMNS if c not in table.columns]
    if missing:
        table = table.assign(**{c: "" for c in missing})
        if "gender" in missing:
            table["gender"] = "U"
        if "ins04" in missing:
            table["ins04"] = "XN"
        if "hd01" in missing:
            table["hd01"] = table["ins03"]
    table = table[[*_TEXT_COLUMNS, *(c for c in OPTION_COLUMNS if c in table.columns)]]
    return table, member_starts(table)


_EMPTY = pa.scalar("", pa.large_string())


def _arrow(series: pd.Series) -> pa.Array:
    """A view column as one large_string Arrow array, missing values as "" (no Python str objects)."""
    arr = pa.array(series, from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = arr.cast(pa.large_string())
    return pc.fill_null(arr, _EMPTY) if arr.null_count else arr


def _data_bytes(arr: pa.Array) -> np.ndarray:
    """The bytes of every string of a (large_)string array, back to back, without a copy."""
    if not len(arr) or arr.buffers()[2] is None:
        return np.empty(0, dtype=np.uint8)
    width = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offsets = np.frombuffer(arr.buffers()[1], dtype=width)
    lo, hi = int(offsets[arr.offset]), int(offsets[arr.offset + len(arr)])
    return np.frombuffer(arr.buffers()[2], dtype=np.uint8)[lo:hi]


def _holds_any(data: bytes, characters: bytes) -> bool:
    """Whether ``data`` holds any of ``characters``: one C pass (bytes.translate deleting them), faster
    than a numpy byte lookup or a regex per column (figures in benchmarks/README.md)."""
    return len(data.translate(None, characters)) != len(data)


def _assert_no_delimiters(columns: dict[str, pa.Array], d: Delimiters) -> None:
    # Over each column's data buffer: the separators are ASCII, and a multi-byte UTF-8 character never
    # holds an ASCII byte, so a byte search is exact.
    reserved = d.reserved.encode("ascii")
    for col, arr in columns.items():
        if _holds_any(_text_bytes(arr), reserved):
            raise ConformanceFailed(f"a value in column {col!r} holds an X12 delimiter",
                                    details={"column": col})


def _cat(*parts: Any) -> pa.Array:
    """Element-wise concatenation of arrays and str scalars (all as large_string)."""
    return pc.binary_join_element_wise(*(_large(p) if isinstance(p, str) else p for p in parts), _EMPTY)


@functools.cache
def _large(text: str) -> pa.Scalar:
    return pa.scalar(text, pa.large_string())


def _when(cond: pa.Array, yes: Any, no: Any = _EMPTY) -> pa.Array:
    return pc.if_else(cond, yes, no)


def _non_empty(arr: pa.Array) -> pa.Array:
    return pc.not_equal(arr, _EMPTY)


def _text_bytes(arr: pa.Array) -> bytes:
    """All the strings of ``arr`` back to back (one copy of its data buffer's live slice)."""
    return _data_bytes(arr).tobytes()


def _assert_charset(text: bytes, d: Delimiters, charset: Charset) -> None:
    # Every byte must be in the character set or be one of the rows' own separators; a non-ASCII byte
    # is never in either (both sets are ASCII), so deleting those leaves nothing in a good chunk.
    allowed = ("".join(sorted(CHARACTER_SETS[charset])) + d.element + d.component + d.segment
               + d.suffix).encode("ascii")
    if _data_outside(text, allowed):
        raise ConformanceFailed(f"a value holds a character outside the {charset} character set",
                                details={"rule": "character_set", "charset": charset})


def _data_outside(text: bytes, allowed: bytes) -> bool:
    """Whether ``text`` holds a byte not in ``allowed``."""
    return bool(text.translate(None, allowed))


def _columns_clean(columns: dict[str, pa.Array], d: Delimiters, charset: Charset) -> bool:
    """Whether every byte of every column is in ``charset`` and none is reserved by ``d``.

    Then neither check can fail: no column holds a delimiter, and the chunk's text, the columns' values
    between literals that hold only tags and separators, is in the character set. Only when this is
    False do :func:`_assert_no_delimiters` and :func:`_assert_charset` run, and they decide.
    """
    allowed = "".join(sorted(CHARACTER_SETS[charset] - set(d.reserved))).encode("ascii")
    return not any(bytes_outside(arr, allowed) for arr in columns.values())


class _Pieces:
    """The text of each row of a chunk as pieces in order, each a literal or a view column, each written
    only on the rows of its mask (None: every row).

    Rendered by one Arrow ``take`` over all the pieces' strings in row-major order: the strings of the
    result, back to back, are the chunk's text. One gather of whole strings instead of a nested
    element-wise join per segment, which copies every byte once per level (figures in
    benchmarks/README.md).
    """

    def __init__(self, columns: dict[str, pa.Array], rows: int) -> None:
        self.columns = columns
        self.rows = rows
        self.pieces: list[tuple[str | None, str, np.ndarray | None]] = []

    def lit(self, text: str, mask: np.ndarray | None = None) -> None:
        """A literal; merged into the literal before it when both are written on the same rows."""
        last = self.pieces[-1] if self.pieces else None
        if last is not None and last[0] is None and last[2] is mask:
            self.pieces[-1] = (None, last[1] + text, mask)
        else:
            self.pieces.append((None, text, mask))

    def col(self, column: str, mask: np.ndarray | None = None) -> None:
        self.pieces.append((column, "", mask))

    def literals_in(self, charset: Charset, d: Delimiters) -> bool:
        """Whether every literal is in ``charset`` or is one of the rows' own separators."""
        allowed = CHARACTER_SETS[charset] | set(d.element + d.component + d.segment + d.suffix)
        return set("".join(t for c, t, _ in self.pieces if c is None)) <= allowed

    def text(self) -> pa.Array:
        """Every written piece's string, row by row, piece by piece (a large_string array)."""
        n = self.rows
        used = list(dict.fromkeys(c for c, _, _ in self.pieces if c is not None))
        literals = list(dict.fromkeys(t for c, t, _ in self.pieces if c is None))
        where = {c: k * n for k, c in enumerate(used)}
        literal_at = {t: len(used) * n + k for k, t in enumerate(literals)}
        strings = pa.concat_arrays([*(self.columns[c] for c in used), pa.array(literals, pa.large_string())])
        index = np.empty((n, len(self.pieces)), dtype=np.int64)
        keep = np.empty((n, len(self.pieces)), dtype=bool)
        rows = np.arange(n, dtype=np.int64)
        for k, (column, literal, mask) in enumerate(self.pieces):
            index[:, k] = rows + where[column] if column is not None else literal_at[literal]
            keep[:, k] = True if mask is None else mask
        return pc.take(strings, pa.array(np.compress(keep.ravel(), index.ravel())))


def _filled(arr: pa.Array) -> np.ndarray:
    """Which values of a large_string array are not empty (from its offsets, without a kernel)."""
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset:arr.offset + len(arr) + 1]
    filled: np.ndarray = offsets[1:] > offsets[:-1]
    return filled


def _render_chunk(chunk: pd.DataFrame, start: np.ndarray, d: Delimiters, charset: Charset = "basic",
                  options: frozenset[str] | None = None, names: tuple[tuple[str, str], ...] = ()
                  ) -> tuple[bytes, int]:
    """One chunk of whole members as ASCII bytes, and its segment count.

    Column-wise: no Python object per value (making and joining str objects would take most of the time
    and memory); see :class:`_Pieces`.
    """
    e, t = d.element, d.terminator
    options = frozenset(OPTION_COLUMNS).intersection(chunk.columns) if options is None else options
    c = {col: _arrow(chunk[col]) for col in chunk.columns}
    clean = _columns_clean(c, d, charset)
    if not clean:
        _assert_no_delimiters(c, d)
    start = np.asarray(start, dtype=bool)
    filled = {col: _filled(arr) for col, arr in c.items()}
    out = _Pieces(c, len(chunk))
    members = start

    def segment(head: str, column: str, mask: np.ndarray) -> None:
        out.lit(head, mask)
        out.col(column, mask)
        out.lit(t, mask)

    out.lit(f"INS{e}", members)
    if options.isdisjoint(INS_STATUS_COLUMNS):
        for col, sep in (("ins01", e), ("ins02", e), ("ins03", e), ("ins04", f"{e}A")):
            out.col(col, members)
            out.lit(sep, members)
        has_status = members & filled["employment_status"]
        out.lit(e * 3, has_status)
        out.col("employment_status", has_status)
    else:
        _ins_status(out, c, filled, members, d, options)
    out.lit(t, members)
    segment(f"REF{e}0F{e}", "subscriber_id", members)
    optional: list[np.ndarray] = []

    def situational(head: str, column: str) -> None:
        if column in options:
            present = members & filled[column]
            optional.append(present)
            segment(head, column, present)

    situational(f"REF{e}1L{e}", "group_policy_number")
    situational(f"REF{e}17{e}", "reporting_category")
    dependent = members & pc.not_equal(c["ins01"], _large("Y")).to_numpy(zero_copy_only=False)
    segment(f"REF{e}23{e}", "member_id", dependent)
    situational(f"REF{e}DX{e}", "department")
    situational(f"DTP{e}303{e}D8{e}", "maintenance_effective")
    has_hire = members & filled["hire_date"]
    segment(f"DTP{e}336{e}D8{e}", "hire_date", has_hire)
    for qualifier, column in (("337", "employment_end_date"), ("340", "cobra_begin"), ("341", "cobra_end")):
        situational(f"DTP{e}{qualifier}{e}D8{e}", column)
    situational(f"DTP{e}356{e}D8{e}", "eligibility_begin")
    situational(f"DTP{e}357{e}D8{e}", "eligibility_end")
    out.lit(f"NM1{e}IL{e}1{e}", members)
    out.col("last_name", members)
    out.lit(e, members)
    out.col("first_name", members)
    has_ssn = members & filled["ssn"]
    out.lit(e, has_ssn)
    out.col("middle_initial", has_ssn)
    out.lit(f"{e}{e}{e}34{e}", has_ssn)
    out.col("ssn", has_ssn)
    middle_only = members & ~filled["ssn"] & filled["middle_initial"]
    out.lit(e, middle_only)
    out.col("middle_initial", middle_only)
    out.lit(t, members)
    contact: list[np.ndarray] = []
    has_phone = members & filled["phone"] if "phone" in options else np.zeros(len(chunk), dtype=bool)
    has_email = members & filled["email"] if "email" in options else np.zeros(len(chunk), dtype=bool)
    if has_phone.any() or has_email.any():
        has_per = has_phone | has_email
        contact.append(has_per)
        out.lit(f"PER{e}IP{e}", has_per)
        for qualifier, column, has in (("TE", "phone", has_phone), ("EM", "email", has_email)):
            if column in options:
                out.lit(f"{e}{qualifier}{e}", has)
                out.col(column, has)
        out.lit(t, has_per)
    has_addr = members & filled["address1"] & filled["city"]
    out.lit(f"N3{e}", has_addr)
    out.col("address1", has_addr)
    has_a2 = has_addr & filled["address2"]
    out.lit(e, has_a2)
    out.col("address2", has_a2)
    out.lit(f"{t}N4{e}", has_addr)
    out.col("city", has_addr)
    has_zip = has_addr & filled["zip"]
    out.lit(e, has_zip)
    out.col("state", has_zip)
    out.lit(e, has_zip)
    out.col("zip", has_zip)
    state_only = has_addr & ~filled["zip"] & filled["state"]
    out.lit(e, state_only)
    out.col("state", state_only)
    out.lit(t, has_addr)
    has_dob = members & filled["dob"]
    out.lit(f"DMG{e}D8{e}", has_dob)
    out.col("dob", has_dob)
    out.lit(e, has_dob)
    out.col("gender", has_dob)
    out.lit(t, has_dob)
    has_icm = members & filled["icm01"] & filled["salary"] if "icm01" in options and "salary" in options else None
    if has_icm is not None:
        out.lit(f"ICM{e}", has_icm)
        out.col("icm01", has_icm)
        out.lit(e, has_icm)
        out.col("salary", has_icm)
        out.lit(t, has_icm)
    for head, column in ((f"HLH{e}", "hlh01"), (f"LUI{e}LE{e}", "language")):
        if column in options:
            contact.append(members & filled[column])
            segment(head, column, contact[-1])
    if "prior_last_name" in options:
        optional.extend(_loop_2100b(out, filled, members, d, options))
    if "mailing_address1" in options:
        has_mail = members & filled["mailing_address1"] & filled["mailing_city"]
        contact.extend((has_mail, has_mail, has_mail))
        out.lit(f"NM1{e}31{e}1{t}N3{e}", has_mail)
        out.col("mailing_address1", has_mail)
        mail2 = has_mail & filled["mailing_address2"]
        out.lit(e, mail2)
        out.col("mailing_address2", mail2)
        out.lit(f"{t}N4{e}", has_mail)
        out.col("mailing_city", has_mail)
        mail_zip = has_mail & filled["mailing_zip"]
        out.lit(e, mail_zip)
        out.col("mailing_state", mail_zip)
        out.lit(e, mail_zip)
        out.col("mailing_zip", mail_zip)
        mail_state = has_mail & ~filled["mailing_zip"] & filled["mailing_state"]
        out.lit(e, mail_state)
        out.col("mailing_state", mail_state)
        out.lit(t, has_mail)

    has_hd = filled["hd03"]
    out.lit(f"HD{e}", has_hd)
    for col, sep in (("hd01", e * 2), ("hd03", e), ("hd04", e), ("hd05", f"{t}DTP{e}348{e}D8{e}"),
                     ("coverage_start", t)):
        out.col(col, has_hd)
        out.lit(sep, has_hd)
    has_end = has_hd & filled["coverage_end"]
    segment(f"DTP{e}349{e}D8{e}", "coverage_end", has_end)
    amounts: list[np.ndarray] = []
    for qualifier, column in _AMOUNTS:
        if column in options:
            amounts.append(has_hd & filled[column])
            segment(f"AMT{e}{qualifier}{e}", column, amounts[-1])
    has_policy = has_hd & filled["coverage_policy_number"] if "coverage_policy_number" in options else None
    if has_policy is not None:
        segment(f"REF{e}1L{e}", "coverage_policy_number", has_policy)
    has_pcp = has_hd & filled["pcp_npi"] if "pcp_npi" in options else None
    if has_pcp is not None:
        out.lit(f"LX{e}1{t}NM1{e}P3{e}1{e * 6}XX{e}", has_pcp)  # NM103-NM107 empty
        out.col("pcp_npi", has_pcp)
        out.lit(e, has_pcp)
        out.col("pcp_relationship", has_pcp)
        out.lit(t, has_pcp)
    categories = _reporting_categories(out, chunk, start, filled, options, e, t, names)
    text = _text_bytes(out.text())
    if not (clean and out.literals_in(charset, d)):
        _assert_charset(text, d, charset)

    def count(mask_: np.ndarray) -> int:
        return int(np.count_nonzero(mask_))

    segments = (count(members) * 3 + count(dependent) + count(has_hire) + 2 * count(has_addr) + count(has_dob)
                + sum(count(x) for x in optional) + 2 * count(has_hd) + count(has_end)
                + (count(has_policy) if has_policy is not None else 0)
                + (count(has_icm) if has_icm is not None else 0) + sum(count(x) for x in amounts)
                + sum(count(x) for x in contact) + (2 * count(has_pcp) if has_pcp is not None else 0)
                + categories)
    return text, segments


def member_ends(start: np.ndarray) -> np.ndarray:
    """For each row of a chunk of whole members, whether it is its member's last row."""
    ends = np.ones(len(start), dtype=bool)
    if len(start) > 1:
        ends[:-1] = np.asarray(start[1:], dtype=bool)
    return ends


def _reporting_categories(out: _Pieces, chunk: pd.DataFrame, start: np.ndarray, filled: dict[str, np.ndarray],
                          options: frozenset[str], e: str, t: str, names: tuple[tuple[str, str], ...]) -> int:
    """Loop 2700 after a member's last Loop 2300: LS, per category with a value LX (numbered per member),
    N1*75 ``names``' N102, REF with its REF01 and the value, the optional DTP*007, then LE. Returns the
    segments written."""
    present = [(k, name, qualifier) for k, (name, qualifier) in enumerate(names, start=1)
               if f"reporting_2750_{k}" in options]
    if not present:
        return 0
    last = member_ends(start)
    has = [last & filled[f"reporting_2750_{k}"] for k, _, _ in present]
    any_category = np.logical_or.reduce(has)
    out.lit(f"LS{e}2700{t}", any_category)
    number = np.zeros(len(chunk), dtype=np.int64)
    segments = 2 * int(np.count_nonzero(any_category))
    for (k, name, qualifier), mask in zip(present, has, strict=True):
        number = number + mask
        for n in np.unique(number[mask]).tolist():
            out.lit(f"LX{e}{n}{t}", mask & (number == n))
        out.lit(f"N1{e}75{e}{name}{t}REF{e}{qualifier}{e}", mask)
        out.col(f"reporting_2750_{k}", mask)
        out.lit(t, mask)
        segments += 3 * int(np.count_nonzero(mask))
        if f"reporting_2750_{k}_date" in options:
            dated = mask & filled[f"reporting_2750_{k}_date"]
            out.lit(f"DTP{e}007{e}D8{e}", dated)
            out.col(f"reporting_2750_{k}_date", dated)
            out.lit(t, dated)
            segments += int(np.count_nonzero(dated))
    out.lit(f"LE{e}2700{t}", any_category)
    return segments


def _ins_status(out: _Pieces, c: dict[str, pa.Array], filled: dict[str, np.ndarray], members: np.ndarray,
                d: Delimiters, options: frozenset[str]) -> None:
    """INS01-INS12 after "INS*", as :func:`ins_elements` gives them: each element's separator is written
    only where a later element is filled, so trailing empty elements are never written."""
    e = d.element
    for col in ("ins01", "ins02", "ins03", "ins04"):
        out.col(col, members)
        out.lit(e, members)
    if "benefit_status" in options:
        out.col("benefit_status", members & filled["benefit_status"])
        out.lit("A", members & ~filled["benefit_status"])
    else:
        out.lit("A", members)
    none = np.zeros(len(members), dtype=bool)

    def has(col: str) -> np.ndarray:
        return members & filled[col] if col in options else none

    # INS06 (its reason after the component separator), INS07 ... INS12 (INS11 "D8" with a death date)
    elements = [has("medicare_plan"), has("cobra_event"), members & filled["employment_status"],
                has("student_status"), has("handicap"), has("death_date"), has("death_date")]
    last = np.zeros(len(members), dtype=np.int64)
    for k, mask in enumerate(elements, start=1):
        last[mask] = k
    columns = {1: "medicare_plan", 2: "cobra_event", 3: "employment_status", 4: "student_status", 5: "handicap",
               7: "death_date"}
    for k, mask in enumerate(elements, start=1):
        out.lit(e, members & (last >= k))
        if k == 6:
            out.lit("D8", mask)
        elif columns[k] in options or columns[k] == "employment_status":
            out.col(columns[k], mask)
        if k == 1 and "medicare_reason" in options:
            with_reason = mask & has("medicare_reason")
            out.lit(d.component, with_reason)
            out.col("medicare_reason", with_reason)


def _loop_2100b(out: _Pieces, filled: dict[str, np.ndarray], members: np.ndarray, d: Delimiters,
                options: frozenset[str]) -> list[np.ndarray]:
    """Loop 2100B of each corrected member (``prior_last_name`` filled): NM1*70 with the name and SSN the
    carrier holds, and DMG with its birth date and gender where ``prior_dob`` is filled; the masks of the
    segments written, for the segment count."""
    e, t = d.element, d.terminator
    none = np.zeros(len(members), dtype=bool)

    def has(col: str) -> np.ndarray:
        return members & filled[col] if col in options else none

    def col(column: str, mask: np.ndarray) -> None:
        if column in options:
            out.col(column, mask)

    prior = has("prior_last_name")
    out.lit(f"NM1{e}70{e}1{e}", prior)
    out.col("prior_last_name", prior)
    with_first = prior & (has("prior_first_name") | has("prior_middle_initial") | has("prior_ssn"))
    out.lit(e, with_first)
    col("prior_first_name", with_first)
    with_ssn = prior & has("prior_ssn")
    with_middle = prior & has("prior_middle_initial") & ~with_ssn
    out.lit(e, with_ssn | with_middle)
    col("prior_middle_initial", with_ssn | with_middle)
    out.lit(f"{e}{e}{e}34{e}", with_ssn)
    col("prior_ssn", with_ssn)
    out.lit(t, prior)
    dmg = prior & has("prior_dob")
    out.lit(f"DMG{e}D8{e}", dmg)
    col("prior_dob", dmg)
    with_gender = dmg & has("prior_gender")
    out.lit(e, with_gender)
    col("prior_gender", with_gender)
    out.lit(t, dmg)
    return [prior, dmg]


def render_834(enrollment: Enrollment, header: TransactionHeader, control: ControlNumbers,
               delimiters: Delimiters = DEFAULT_DELIMITERS, *,
               chunk_members: int = 20_000, workers: int | None = None) -> Iterator[bytes]:
    """Yield the 834 for ``enrollment`` in chunks of ``chunk_members`` members (ASCII bytes).

    Chunks are rendered by ``workers`` threads (default: the CPUs this process may use, at most 4) and
    yielded in order; Arrow's kernels and numpy release the GIL, so they run side by side. At most
    ``workers + 1`` chunks are in memory at once. The bytes do not depend on ``workers``.
    """
    return render_834_employers([(enrollment, header)], control, delimiters, chunk_members=chunk_members,
                                workers=workers)


def render_834_employers(parts: Sequence[tuple[Enrollment, TransactionHeader]], control: ControlNumbers,
                         delimiters: Delimiters = DEFAULT_DELIMITERS, *,
                         chunk_members: int = 20_000, workers: int | None = None) -> Iterator[bytes]:
    """One interchange (one ISA/GS, from the first part's envelope ids) holding each part's transaction
    set(s) in order: a carrier aggregator's file, one employer per part. The TR3 has one sponsor (Loop
    1000A N1*P5) per transaction set, so each employer is its own ST/SE with its own BGN, sponsor and
    header totals (several when its mapping caps members per set). ST02 is the ledger's for a single
    set and 0001, 0002, ... across the group otherwise; GE01 counts every set. One part is
    :func:`render_834`, byte for byte."""
    d = delimiters
    if not parts:
        raise ValueError("an interchange needs at least one transaction set")
    if workers is None:
        workers = thread_count(None)
    ids = parts[0][1].ids
    if any(header.ids != ids for _, header in parts):
        raise ValueError("every employer's transaction set must share the interchange's envelope ids")
    plans = []
    for enrollment, header in parts:
        options = enrollment.options
        table, start = _prepare(enrollment, d)
        for name, _ in options.reporting_categories:
            _check_value(name, d, "N102")
        plans.append((enrollment, header, table, start,
                      split_transaction_sets(table, start, options.max_members_per_transaction)))
    numbers = iter(set_numbers(control, sum(len(p[4]) for p in plans)))
    total_sets = sum(len(p[4]) for p in plans)
    head = envelope_segments(parts[0][1], control, d)
    total = done = 0
    for enrollment, header, table, start, sets in plans:
        options = enrollment.options
        present = frozenset(OPTION_COLUMNS).intersection(enrollment.table.columns)
        for k, (set_lo, set_hi) in enumerate(sets, start=1):
            st02 = next(numbers)
            done += 1
            set_head = set_header_segments(header, st02, d, reference=_set_reference(header, k, len(sets)),
                                           options=options, totals=set_totals(table, start, set_lo, set_hi))
            yield "".join([*head, *set_head]).encode("ascii")
            count = len(set_head)
            starts = set_lo + np.flatnonzero(start[set_lo:set_hi])
            bounds = [*starts[::max(1, chunk_members)].tolist(), set_hi]
            chunks = ((table.iloc[lo:hi], start[lo:hi], d, options.charset, present, options.reporting_categories)
                      for lo, hi in itertools.pairwise(bounds))
            for data, segments in iter_in_order(_render_chunk, chunks, workers, name="render834"):
                count += segments
                yield data
            total += len(starts)
            se = _seg(d, "SE", str(count + 1), st02)
            if done < total_sets:
                head = [se]
                log.info("rendered 834 ISA13 %s set %s: %d members, %d segments in ST..SE", control.isa13_text,
                         st02, len(starts), count + 1)
            else:
                yield "".join([se, *trailer_segments(control, d, count + 1, st02=st02, sets=total_sets)[1:]]
                              ).encode("ascii")
    log.info("rendered 834 ISA13 %s: %d members in %d transaction set(s)", control.isa13_text, total,
             total_sets)


#: Bytes copied at a time from the members' spill into the file (:func:`render_834_parts`).
_SPILL_BLOCK = 1 << 20


def render_834_parts(parts: Iterable[Enrollment], header: TransactionHeader, control: ControlNumbers,
                     delimiters: Delimiters = DEFAULT_DELIMITERS, *, spill: BinaryIO | None = None,
                     chunk_members: int = 20_000, workers: int | None = None) -> Iterator[bytes]:
    """The 834 of a view given in parts (the views of family-whole chunks of one census, in order:
    :func:`carrierfeeds.enrollment.build_enrollment_chunks`), byte for byte :func:`render_834` of the
    parts' whole view, with one part in memory at a time (``parts`` is read lazily).

    Without QTY control totals or a cap on members per set, the one set's header does not depend on its
    members: it is written first and the members stream after it. Otherwise each set's header (its
    totals; with a cap, whether the file has one set or several) is known only once every member is
    rendered, so the members are written to ``spill`` (a binary file open for reading and writing; in
    memory when None), counted by set as they go, and copied from it after each set's header.
    """
    d = delimiters
    workers = thread_count(None) if workers is None else workers
    rest = iter(parts)
    first = next(rest, None)
    if first is None:
        raise ValueError("a view has at least one part")
    options = first.options
    for name, _ in options.reporting_categories:
        _check_value(name, d, "N102")
    every = itertools.chain([first], rest)
    if not options.control_totals and options.max_members_per_transaction is None:
        return _render_streamed(every, header, control, d, chunk_members, workers)
    return _render_spilled(every, header, control, d, spill if spill is not None else io.BytesIO(),
                           chunk_members, workers)


def _member_chunks(table: pd.DataFrame, start: np.ndarray, lo: int, hi: int, chunk_members: int
                   ) -> list[tuple[int, int]]:
    """Row bounds of the render's chunks of rows [lo, hi): ``chunk_members`` members each."""
    starts = lo + np.flatnonzero(start[lo:hi])
    return list(itertools.pairwise([*starts[::max(1, chunk_members)].tolist(), hi]))


def _render_streamed(parts: Iterable[Enrollment], header: TransactionHeader, control: ControlNumbers,
                     d: Delimiters, chunk_members: int, workers: int) -> Iterator[bytes]:
    """One transaction set whose header needs no count: header, members part by part, trailer."""
    st02 = control.st02_text
    members = count = 0
    for k, enrollment in enumerate(parts):
        options = enrollment.options
        table, start = _prepare(enrollment, d)
        if k == 0:
            set_head = set_header_segments(header, st02, d, reference=_set_reference(header, 1, 1),
                                           options=options, totals={})
            yield "".join([*envelope_segments(header, control, d), *set_head]).encode("ascii")
            count = len(set_head)
        present = frozenset(OPTION_COLUMNS).intersection(enrollment.table.columns)
        chunks = ((table.iloc[lo:hi], start[lo:hi], d, options.charset, present, options.reporting_categories)
                  for lo, hi in _member_chunks(table, start, 0, len(table), chunk_members))
        for data, segments in iter_in_order(_render_chunk, chunks, workers, name="render834"):
            count += segments
            yield data
        members += int(start.sum())
        del table, start, enrollment, chunks  # not held while the next part is made
    yield "".join(trailer_segments(control, d, count + 1, st02=st02, sets=1)).encode("ascii")
    log.info("rendered 834 ISA13 %s: %d members in 1 transaction set, part by part", control.isa13_text, members)


def _render_spilled(parts: Iterable[Enrollment], header: TransactionHeader, control: ControlNumbers,
                    d: Delimiters, spill: BinaryIO, chunk_members: int, workers: int) -> Iterator[bytes]:
    """Members of every part into ``spill``, counted by transaction set (families packed whole and in
    order, as :func:`split_transaction_sets` packs them, across parts); then each set's header with its
    totals, its members copied from the spill, and its SE."""
    options: RenderOptions | None = None
    cap: int | None = None
    # per set: members, subscribers (INS01 Y), segments, first and end byte in the spill
    sets: list[list[int]] = []
    in_set = biggest = 0
    begin = spill.tell()
    for enrollment in parts:
        options = enrollment.options
        cap = options.max_members_per_transaction
        table, start = _prepare(enrollment, d)
        if cap is None or not len(table):
            pieces = [(0, len(table), not sets)]
        else:
            fam_starts = np.flatnonzero(family_starts(table))
            sizes = np.add.reduceat(start.astype(np.int64), fam_starts)
            biggest = max(biggest, int(sizes.max()))
            pieces = []
            lo = 0
            for fam_start, size in zip(fam_starts.tolist(), sizes.tolist(), strict=True):
                if not sets and not pieces:
                    pieces.append((0, 0, True))
                elif in_set and in_set + size > cap:
                    pieces.append((lo, fam_start, False))
                    pieces.append((fam_start, fam_start, True))
                    lo, in_set = fam_start, 0
                in_set += size
            pieces.append((lo, len(table), False))
        if cap is not None and biggest > cap:
            continue  # refused below, with the largest family of all: nothing more to render
        present = frozenset(OPTION_COLUMNS).intersection(enrollment.table.columns)
        calls: list[tuple[int, int, bool]] = []
        for lo, hi, new_set in pieces:
            if new_set:
                calls.append((lo, lo, True))
            calls.extend((a, b, False) for a, b in _member_chunks(table, start, lo, hi, chunk_members))
        marks = iter(calls)
        chunks = ((table.iloc[lo:hi], start[lo:hi], d, options.charset, present, options.reporting_categories)
                  for lo, hi, new_set in calls if not new_set)
        employee = table["ins01"].to_numpy(dtype=object) == "Y"
        for data, segments in iter_in_order(_render_chunk, chunks, workers, name="render834"):
            lo, hi, new_set = next(marks)
            while new_set:
                at = spill.tell()
                sets.append([0, 0, 0, at, at])
                lo, hi, new_set = next(marks)
            spill.write(data)
            here = sets[-1]
            members = start[lo:hi]
            here[0] += int(members.sum())
            here[1] += int((members & employee[lo:hi]).sum())
            here[2] += segments
            here[4] = spill.tell()
        for _lo, _hi, new_set in marks:  # a set opened after the part's last chunk
            if new_set:
                sets.append([0, 0, 0, spill.tell(), spill.tell()])
        del table, start, employee, enrollment, chunks  # not held while the next part is made
    if cap is not None and biggest > cap:
        raise ConformanceFailed(
            f"a family of {biggest} members exceeds max_members_per_transaction {cap}; "
            "families are never split across transaction sets",
            details={"rule": "family_exceeds_transaction_cap", "family_members": biggest, "cap": cap})
    if not sets:
        sets.append([0, 0, 0, begin, begin])
    assert options is not None  # noqa: S101 - render_834_parts passes at least one part
    spill.flush()
    numbers = set_numbers(control, len(sets))
    head = envelope_segments(header, control, d)
    for k, (counted, st02) in enumerate(zip(sets, numbers, strict=True), start=1):
        in_members, employees, segments, lo, hi = counted
        totals = {ControlTotal.TOTAL.value: in_members, ControlTotal.EMPLOYEE_TOTAL.value: employees,
                  ControlTotal.DEPENDENT_TOTAL.value: in_members - employees}
        set_head = set_header_segments(header, st02, d, reference=_set_reference(header, k, len(sets)),
                                       options=options, totals=totals)
        yield "".join([*head, *set_head]).encode("ascii")
        spill.seek(lo)
        while lo < hi:
            block = spill.read(min(_SPILL_BLOCK, hi - lo))
            if not block:
                raise OSError("the 834's member spill ended early")
            lo += len(block)
            yield block
        count = len(set_head) + segments + 1
        head = [_seg(d, "SE", str(count), st02)]
        log.info("rendered 834 ISA13 %s set %s: %d members, %d segments in ST..SE", control.isa13_text, st02,
                 in_members, count)
    yield "".join([*head, *trailer_segments(control, d, 0, sets=len(sets))[1:]]).encode("ascii")
    log.info("rendered 834 ISA13 %s: %d members in %d transaction set(s), part by part", control.isa13_text,
             sum(s[0] for s in sets), len(sets))


def render_834_bytes(enrollment: Enrollment, header: TransactionHeader, control: ControlNumbers,
                     delimiters: Delimiters = DEFAULT_DELIMITERS) -> bytes:
    """The whole 834 in memory, for small files and tests."""
    return b"".join(render_834(enrollment, header, control, delimiters))


def _naive_categories(row: dict[str, str], categories: tuple[tuple[str, str], ...], d: Delimiters) -> list[str]:
    """Loop 2700 of one member, from its last row (the reference for :func:`_reporting_categories`)."""
    body: list[str] = []
    for k, (name, qualifier) in enumerate(categories, start=1):
        if row.get(f"reporting_2750_{k}"):
            body.append(_seg(d, "LX", str(sum(s.startswith("LX") for s in body) + 1)))
            body.append(_seg(d, "N1", "75", name))
            body.append(_seg(d, "REF", qualifier, row[f"reporting_2750_{k}"]))
            if row.get(f"reporting_2750_{k}_date"):
                body.append(_seg(d, "DTP", "007", "D8", row[f"reporting_2750_{k}_date"]))
    return [_seg(d, "LS", "2700"), *body, _seg(d, "LE", "2700")] if body else []



def render_834_naive(enrollment: Enrollment, header: TransactionHeader, control: ControlNumbers,
                     delimiters: Delimiters = DEFAULT_DELIMITERS) -> bytes:
    """The per-row reference writer: the same bytes as :func:`render_834`, one segment at a time."""
    d = delimiters
    options = enrollment.options
    table, start = _prepare(enrollment, d)
    sets = split_transaction_sets(table, start, options.max_members_per_transaction)
    numbers = set_numbers(control, len(sets))
    records = cast(list[dict[str, str]], table.to_dict("records"))
    allowed = CHARACTER_SETS[options.charset] | set(d.element + d.component + d.segment + d.suffix)
    segs = envelope_segments(header, control, d)
    for k, ((set_lo, set_hi), st02) in enumerate(zip(sets, numbers, strict=True), start=1):
        set_head = set_header_segments(header, st02, d, reference=_set_reference(header, k, len(sets)),
                                       options=options, totals=set_totals(table, start, set_lo, set_hi))
        segs.extend(set_head)
        count = len(set_head)
        lasts = member_ends(start[set_lo:set_hi]).tolist()
        for is_start, is_last, row in zip(start[set_lo:set_hi].tolist(), lasts, records[set_lo:set_hi],
                                          strict=True):
            for column, value in row.items():
                _check_value(value, d, column)
            body: list[str] = []
            if is_start:
                body.append(_seg(d, "INS", *ins_elements(row, d)))
                body.append(_seg(d, "REF", "0F", row["subscriber_id"]))
                if row.get("group_policy_number"):
                    body.append(_seg(d, "REF", "1L", row["group_policy_number"]))
                if row.get("reporting_category"):
                    body.append(_seg(d, "REF", "17", row["reporting_category"]))
                if row["ins01"] != "Y":
                    body.append(_seg(d, "REF", "23", row["member_id"]))
                if row.get("department"):
                    body.append(_seg(d, "REF", "DX", row["department"]))
                for qualifier, column in (("303", "maintenance_effective"), ("336", "hire_date"),
                                          ("337", "employment_end_date"), ("340", "cobra_begin"),
                                          ("341", "cobra_end"), ("356", "eligibility_begin"),
                                          ("357", "eligibility_end")):
                    if row.get(column):
                        body.append(_seg(d, "DTP", qualifier, "D8", row[column]))
                if row["ssn"]:
                    body.append(_seg(d, "NM1", "IL", "1", row["last_name"], row["first_name"],
                                     row["middle_initial"], "", "", "34", row["ssn"]))
                else:
                    body.append(_seg(d, "NM1", "IL", "1", row["last_name"], row["first_name"],
                                     row["middle_initial"]))
                numbers = [*(("TE", row["phone"]) if row.get("phone") else ()),
                           *(("EM", row["email"]) if row.get("email") else ())]
                if numbers:
                    body.append(_seg(d, "PER", "IP", "", *numbers))
                if row["address1"] and row["city"]:
                    body.append(_seg(d, "N3", row["address1"], row["address2"]))
                    body.append(_seg(d, "N4", row["city"], row["state"], row["zip"]))
                if row["dob"]:
                    body.append(_seg(d, "DMG", "D8", row["dob"], row["gender"]))
                if row.get("icm01") and row.get("salary"):
                    body.append(_seg(d, "ICM", row["icm01"], row["salary"]))
                if row.get("hlh01"):
                    body.append(_seg(d, "HLH", row["hlh01"]))
                if row.get("language"):
                    body.append(_seg(d, "LUI", "LE", row["language"]))
                if row.get("prior_last_name"):
                    body.append(_seg(d, "NM1", "70", "1", row["prior_last_name"], row.get("prior_first_name", ""),
                                     row.get("prior_middle_initial", ""), "", "",
                                     "34" if row.get("prior_ssn") else "", row.get("prior_ssn", "")))
                    if row.get("prior_dob"):
                        body.append(_seg(d, "DMG", "D8", row["prior_dob"], row.get("prior_gender", "")))
                if row.get("mailing_address1") and row.get("mailing_city"):
                    body.append(_seg(d, "NM1", "31", "1"))
                    body.append(_seg(d, "N3", row["mailing_address1"], row["mailing_address2"]))
                    body.append(_seg(d, "N4", row["mailing_city"], row["mailing_state"], row["mailing_zip"]))
            if row["hd03"]:
                body.append(_seg(d, "HD", row["hd01"], "", row["hd03"], row["hd04"], row["hd05"]))
                body.append(_seg(d, "DTP", "348", "D8", row["coverage_start"]))
                if row["coverage_end"]:
                    body.append(_seg(d, "DTP", "349", "D8", row["coverage_end"]))
                for qualifier, column in _AMOUNTS:
                    if row.get(column):
                        body.append(_seg(d, "AMT", qualifier, row[column]))
                if row.get("coverage_policy_number"):
                    body.append(_seg(d, "REF", "1L", row["coverage_policy_number"]))
                if row.get("pcp_npi"):
                    body.append(_seg(d, "LX", "1"))
                    body.append(_seg(d, "NM1", "P3", "1", "", "", "", "", "", "XX", row["pcp_npi"],
                                     row["pcp_relationship"]))
            if is_last:
                body.extend(_naive_categories(row, options.reporting_categories, d))
            if not set("".join(body)) <= allowed:
                raise ConformanceFailed(f"a value holds a character outside the {options.charset} character set",
                                        details={"rule": "character_set", "charset": options.charset})
            segs.extend(body)
            count += len(body)
        se = _seg(d, "SE", str(count + 1), st02)
        segs.append(se)
    segs.extend(trailer_segments(control, d, 0, sets=len(sets))[1:])
    return "".join(segs).encode("ascii")
