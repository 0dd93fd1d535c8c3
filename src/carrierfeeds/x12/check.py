"""The conformance gate for a rendered 834: a fast structural check of every byte, and pyx12.

:func:`check_834` scans the whole file with numpy (no Python object per element), a window of about a
megabyte at a time, so its memory does not grow with the file: envelope and control numbers (ST02 unique
within its group), segment counts, loop order (the guide's order of the segments we write, each
situational one at most once), code values, and no component (ISA16) or repetition (ISA11) separator
inside data, which X12 cannot escape. Every problem is reported by segment position, segment id,
element reference and a rule code, never by value.

:func:`validate_with_pyx12` (from :mod:`carrierfeeds.x12.pyx12_adapter`, where it can also run in a
child process) runs pyx12 over the 005010X220A1 map and returns our own verdict (errors stripped of
data values) plus the 999 pyx12 generates. pyx12 is slow on a large file (benchmarks/README.md), so
:func:`pyx12_target` cuts a deterministic sample of families (every k-th one) out of a large rendered
file, with its own envelope, for pyx12 to validate instead (:func:`sample_834`), and can cut what pyx12
checks into disjoint pieces, each its own conformant 834, for pyx12 to read on several cores.

Both read the 834 as bytes or as a read-only memory map of it (:data:`Payload`), with identical reports:
the gate maps a large file instead of copying it into anonymous memory.

Why one module: the structural check and the pyx12 sampling read the same segment index
(:class:`SegmentEnds`, the family starts) and must agree byte for byte on where a family begins; kept
together, a change to how segments are found cannot leave one of them behind. pyx12 itself stays in
:mod:`carrierfeeds.x12.pyx12_adapter`.
"""

from __future__ import annotations

import logging
import mmap
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple, overload

import numpy as np

from carrierfeeds.x12.codes import (
    BenefitStatus,
    CoverageLevel,
    IndividualRelationship,
    InsuranceLine,
    MaintenanceReason,
    MaintenanceType,
    ReferenceQualifier,
    ReportingCategoryQualifier,
    SubscriberIndicator,
    values,
)
from carrierfeeds.x12.envelope import Delimiters
from carrierfeeds.x12.pyx12_adapter import validate_with_pyx12
from carrierfeeds.x12.verdicts import Problem, Pyx12Verdict

log = logging.getLogger(__name__)

#: An 834's bytes, in memory or mapped read-only (``files.read_mapped``). Everything here reads it by
#: slices (bytes either way), ``find``, ``np.frombuffer`` and ``re``, which a map supports like bytes.
Payload = bytes | mmap.mmap


@dataclass(frozen=True)
class ConformanceReport:
    """The structural check's verdict; ``problems`` is empty exactly when ``ok``."""

    ok: bool
    segment_count: int
    member_count: int
    transaction_sets: int
    problems: tuple[Problem, ...]


def _ref(qualifier: ReferenceQualifier) -> bytes:
    return b"REF" + qualifier.value.encode("ascii")


# One character per segment kind; the order of required segments is then a regular expression.
_TOKENS: dict[bytes, str] = {
    b"ISA": "A", b"GS": "G", b"ST": "S", b"BGN": "B", _ref(ReferenceQualifier.MASTER_POLICY): "o",
    b"N1P5": "P", b"N1IN": "Y", b"INS": "I", _ref(ReferenceQualifier.SUBSCRIBER_NUMBER): "F",
    _ref(ReferenceQualifier.GROUP_OR_POLICY): "l", _ref(ReferenceQualifier.CLIENT_REPORTING_CATEGORY): "c",
    _ref(ReferenceQualifier.CLIENT_NUMBER): "f", _ref(ReferenceQualifier.DEPARTMENT): "x",
    b"DTP303": "m", b"DTP336": "h", b"DTP356": "j", b"DTP357": "k", b"NM1IL": "N", b"N3": "3", b"N4": "4",
    b"DMG": "D", b"PER": "p", b"HD": "H", b"DTP348": "b", b"DTP349": "e", b"SE": "s", b"GE": "g",
    b"IEA": "z",
    # member status dates: employment end, COBRA begin and end
    b"DTP337": "t", b"DTP340": "u", b"DTP341": "v",
    # Loop 2100B (an identity correction: the member's name as the carrier holds it)
    b"NM170": "7",
}
# Companion-guide depth, file header: DTP*007, QTY*TO/DT/ET, Loop 1000C N1*TV/N1*BO.
_TOKENS.update({b"DTP007": "a", b"QTYTO": "q", b"QTYDT": "q", b"QTYET": "q", b"N1TV": "T", b"N1BO": "T"})
# Volumes: 2100A ICM, 2300 AMT*FK/AMT*P3.
_TOKENS.update({b"ICM": "V", b"AMTFK": "U", b"AMTP3": "U"})
# Contact: 2100A HLH and LUI, 2100C NM1*31 (its N3/N4 are the same tokens as 2100A's).
_TOKENS.update({b"HLH": "w", b"LUI": "L", b"NM131": "M"})
# Primary care provider: Loop 2310 LX and NM1*P3.
_TOKENS.update({b"LX": "X", b"NM1P3": "R"})
# Member reporting categories: LS, LE, Loop 2750 N1*75 and its REF (REF*17 is "c" already; DTP*007 "a").
_TOKENS.update({b"LS": "J", b"LE": "E", b"N175": "K"})
_TOKENS.update({b"REF" + q.value.encode("ascii"): "Z" for q in ReportingCategoryQualifier
                if q is not ReportingCategoryQualifier.CLIENT_REPORTING_CATEGORY})
_QUALIFIED = {b"REF", b"DTP", b"N1", b"NM1", b"QTY", b"AMT"}
_NAMES = {"A": "ISA", "G": "GS", "S": "ST", "B": "BGN", "o": "REF", "P": "N1", "Y": "N1", "I": "INS",
          "F": "REF", "l": "REF", "c": "REF", "f": "REF", "x": "REF", "m": "DTP", "h": "DTP", "j": "DTP",
          "k": "DTP", "N": "NM1", "3": "N3", "4": "N4", "D": "DMG", "p": "PER", "H": "HD", "b": "DTP",
          "e": "DTP", "s": "SE", "g": "GE", "z": "IEA", "!": "", "?": "?",
          "t": "DTP", "u": "DTP", "v": "DTP", "7": "NM1"}
_NAMES.update({"a": "DTP", "q": "QTY", "T": "N1", "V": "ICM", "U": "AMT", "w": "HLH", "L": "LUI", "M": "NM1",
               "X": "LX", "R": "NM1", "J": "LS", "E": "LE", "K": "N1", "Z": "REF"})


def _grammar(require_dmg: bool) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """The header and the member (Loop 2000 + 2100A + 2300s) as regular expressions over tokens."""
    # Loop 2000 in the guide's order, each situational segment at most once: INS, REF*0F, REF*1L,
    # REF*17, REF*23, REF*DX, DTP*303/336/337/340/341/356/357. Loop 2300 is situational: a change file may carry a
    # member without coverage (a demographic change); the maintenance check (_Scan) demands coverage where the
    # maintenance type needs it.
    member = (r"IFl?c?f?x?m?h?t?u?v?j?k?Np?(?:34)?" + ("D" if require_dmg else "D?")
              + "V?w?L?"  # 2100A ICM, HLH, LUI
              + r"(?:7D?)?"  # Loop 2100B: NM1*70 and its DMG
              + "(?:M34)?"  # Loop 2100C: NM1*31, N3, N4
              + r"(?:Hbe?U{0,9}l?(?:XR)?)*(?:J(?:XK[cZ]a?)+E)?")  # the U after HD: 2300 AMT; the l: the 2300 REF*1L
    # Header: ST, BGN, REF*38, DTP*007, up to three QTY, N1*P5, N1*IN, up to two Loop 1000C N1.
    return re.compile(r"SBo?a?q{0,3}PYT{0,2}"), re.compile(member)


def _problem(pos: int, seg: str, element: str, code: str, message: str) -> Problem:
    return Problem(pos, seg, element, code, message)


def _isa(data: Payload, expected: Delimiters | None, problems: list[Problem]) -> Delimiters | None:
    if len(data) < 106 or data[:3] != b"ISA":
        problems.append(_problem(1, "ISA", "ISA", "isa_missing", "file does not start with a 106-char ISA"))
        return None
    head = data[:106]
    sep = head[3:4]
    parts = head[:105].split(sep)
    if len(parts) != 17 or len(parts[16]) != 1 or any(ch in b"\r\n" for ch in head):
        problems.append(_problem(1, "ISA", "ISA", "isa_length", "ISA is not 106 characters in 16 elements"))
        return None
    suffix = "\r\n" if data[106:108] == b"\r\n" else ("\n" if data[106:107] == b"\n" else "")
    try:
        found = Delimiters(element=sep.decode("ascii"), component=parts[16].decode("ascii"),
                           repetition=parts[11].decode("ascii"), segment=head[105:106].decode("ascii"),
                           suffix=suffix)
    except Exception:  # any undecodable or clashing delimiter is the same problem for the gate
        problems.append(_problem(1, "ISA", "ISA16", "isa_delimiters", "ISA declares unusable delimiters"))
        return None
    if expected is not None and (found.element, found.component, found.repetition, found.segment) != (
            expected.element, expected.component, expected.repetition, expected.segment):
        problems.append(_problem(1, "ISA", "ISA16", "isa_delimiters",
                                 "ISA declares other delimiters than expected"))
    return found


#: For k = 0..8, a little-endian mask of a 64-bit word's first k bytes.
_BYTE_MASKS = np.array([(1 << (8 * k)) - 1 for k in range(9)], dtype="<u8")


def _keys(arr: np.ndarray, starts: np.ndarray, ends: np.ndarray, sep: int, width: int) -> np.ndarray:
    """For each segment, its first ``width`` bytes (N x width uint8), zero at and after its end.

    Gathered eight bytes at a time through an unaligned 64-bit view of the file (one gather per word
    instead of one per byte: a gather per byte would be the gate's largest cost). Only the segments that
    reach a word are read for it, only those that end inside it are masked, and only those within 8
    bytes of the end of the file are shifted (each of these would be a pass over every row; figures in
    benchmarks/README.md).
    """
    words = -(-width // 8)
    out = np.zeros((len(starts), words), dtype="<u8")
    if len(starts) and len(arr):
        if len(arr) < 8:
            arr = np.concatenate([arr, np.zeros(8 - len(arr), dtype=np.uint8)])
        n = len(arr)
        sliding = np.ndarray(shape=(n - 7,), dtype="<u8", buffer=arr, strides=(1,))
        length = np.minimum(ends - starts, width)
        for j in range(words):
            # Word 0 of every row (empty segments included, masked to nothing below); later words only
            # of the rows that reach them, the others stay zero.
            rows = None if j == 0 else np.flatnonzero(length > 8 * j)
            pos = starts if rows is None else starts[rows] + 8 * j
            lens = length if rows is None else length[rows]
            late = np.flatnonzero(pos > n - 8)
            if len(late):
                # Within 8 bytes of the end of the file the word is read earlier, then shifted into place.
                shift = np.minimum(pos[late] - (n - 8), 7).astype("<u8") * np.uint64(8)
                pos = pos.copy()
                pos[late] = n - 8
            word = sliding[pos]
            if len(late):
                word[late] >>= shift
            short = np.flatnonzero(lens < 8 * (j + 1))
            if len(short):
                word[short] &= _BYTE_MASKS[np.clip(lens[short] - 8 * j, 0, 8)]
            if rows is None:
                out[:, j] = word
            else:
                out[rows, j] = word
    return out.view(np.uint8)[:, :width]


def _unique_rows(mat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique`` of the rows of an N x width uint8 key matrix, by hashing instead of sorting.

    Returns (the distinct rows in ascending byte order, as bytes keys ``S<width>``; for each row the index
    of its key), exactly what ``np.unique(keys, return_inverse=True)`` returns. The sort np.unique does
    over millions of keys was most of the gate's time on a large file (benchmarks/README.md); the
    distinct keys are few, so only they are sorted. Exact: no hash of a key is trusted (:func:`_row_codes`).
    """
    rows, width = mat.shape
    padded = -(-width // 8) * 8
    wide = np.zeros((rows, padded), dtype=np.uint8)
    wide[:, :width] = mat
    codes, first = _row_codes(wide.view(np.uint64))
    count = len(first)
    keys = np.ascontiguousarray(mat).view(f"S{width}").ravel()
    distinct = keys[first]
    order = np.argsort(distinct, kind="stable")
    rank = np.empty(count, dtype=np.int64)
    rank[order] = np.arange(count, dtype=np.int64)
    inverse: np.ndarray = rank[codes]
    return distinct[order], inverse


#: An odd 64-bit constant (2^64 / golden ratio) that mixes a row's words into one hash.
_MIX = np.uint64(0x9E3779B97F4A7C15)


def _row_codes(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For the rows of an N x W uint64 matrix: each row's code (0, 1, ... in order of first appearance;
    equal rows, equal codes) and each code's first row.

    One factorize over a hash of each row's words, then every row compared with its code's first row:
    when all are equal (no two different rows share a hash) the codes are exact; else they are made word
    by word, a factorize of each word combined with the codes so far (what this did always, ~8 factorizes
    a call where one does; figures in benchmarks/README.md)."""
    import pandas as pd

    rows, width = words.shape
    if rows and width > 1:
        mixed = words[:, 0].copy()
        for j in range(1, width):
            mixed *= _MIX  # wraps modulo 2^64, as meant
            mixed ^= words[:, j]
        codes, _ = pd.factorize(mixed)
        first = _first_rows(codes)
        if np.array_equal(words[first][codes], words):
            return codes, first
    codes = np.zeros(rows, dtype=np.int64)
    for j in range(width):
        column, _ = pd.factorize(words[:, j])
        combined = codes * (int(column.max()) + 1 if rows else 1) + column
        codes, _ = pd.factorize(combined)
    return codes, _first_rows(codes)


def _first_rows(codes: np.ndarray) -> np.ndarray:
    """For codes 0..K-1: each code's first row."""
    count = int(codes.max()) + 1 if len(codes) else 0
    first = np.empty(count, dtype=np.int64)
    first[codes[::-1]] = np.arange(len(codes) - 1, -1, -1, dtype=np.int64)
    return first


def _elements(segment: bytes, sep: bytes) -> list[str]:
    return segment.decode("ascii", "replace").split(sep.decode("ascii"))


@dataclass(frozen=True)
class SegmentEnds:
    """Where every byte equal to ``terminator`` is in a file of ``size`` bytes: the one scan of the file that
    :func:`check_834` and :func:`sample_834` share, instead of a scan each."""

    terminator: int
    size: int
    offsets: np.ndarray

    def of(self, data: Payload, terminator: int) -> np.ndarray:
        """The offsets, if taken from ``data`` (by its size) for ``terminator``; else a scan of ``data``."""
        if self.terminator == terminator and self.size == len(data):
            return self.offsets
        return _terminators(data, terminator)


def release_pages(data: Payload) -> Callable[[int], None]:
    """For a read-only map of a file: a function that drops the map's pages before an offset from this
    process (``madvise(MADV_DONTNEED)``; they stay in the page cache, and a later read maps them again),
    so that a pass over a large 834 does not keep all of it resident. For bytes, or a map that can be
    written (whose pages would be lost), it does nothing."""
    if not isinstance(data, mmap.mmap) or not hasattr(data, "madvise"):
        return lambda upto: None
    with memoryview(data) as view:
        if not view.readonly:
            return lambda upto: None
    done = 0

    def release(upto: int) -> None:
        nonlocal done
        upto = min(upto, len(data)) // mmap.PAGESIZE * mmap.PAGESIZE
        if upto > done:
            data.madvise(mmap.MADV_DONTNEED, done, upto - done)
            done = upto

    return release


def _terminators(data: Payload, terminator: int) -> np.ndarray:
    """Every offset of ``terminator``, compared a window at a time: no mask the size of the file."""
    arr = np.frombuffer(data, dtype=np.uint8)
    found = [np.flatnonzero(arr[lo:lo + CHECK_WINDOW_BYTES] == terminator) + lo
             for lo in range(0, len(arr), CHECK_WINDOW_BYTES)]
    return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)


def find_segment_ends(data: Payload) -> SegmentEnds | None:
    """The offsets of the segment terminator ISA declares (its byte 106), for :func:`check_834` and
    :func:`sample_834` to share; None for a file too short to hold an ISA (neither would use them)."""
    if len(data) < 106:
        return None
    return SegmentEnds(data[105], len(data), _terminators(data, data[105]))


def _ends_of(data: Payload, terminator: int, ends: SegmentEnds | None) -> np.ndarray:
    return _terminators(data, terminator) if ends is None else ends.of(data, terminator)


#: How many bytes of the 834 :func:`check_834` reads at a time (each window cut after a segment terminator):
#: its arrays are a function of this, not of the file's size. Figures in benchmarks/README.md.
CHECK_WINDOW_BYTES = 1 << 20


def check_834(data: Payload, *, delimiters: Delimiters | None = None, require_dmg: bool = True,
              max_problems: int = 100, segment_ends: SegmentEnds | None = None,
              window_bytes: int = CHECK_WINDOW_BYTES) -> ConformanceReport:
    """Check the whole 834 structurally; ``require_dmg`` demands a DMG for every member.

    The file is read in windows of about ``window_bytes`` (cut after a segment terminator, so a window may
    end inside a member or a transaction set): what the checks need from one window to the next (the open
    member and its coverage, HDs waiting for their DTP*349, the walk through the grammar, unpaired ST/SE and
    GS/GE, the first problems of each kind) is carried in :class:`_Scan`, so memory does not grow with the
    file and the report is the one a check of the whole file at once gives. ``segment_ends`` (from
    :func:`find_segment_ends` on the same bytes) saves the scan for terminators; it is used only when it
    holds the terminator this check reads (ISA's, or ``delimiters``').
    """
    problems: list[Problem] = []
    d = _isa(data, delimiters, problems)
    if d is None:
        return ConformanceReport(False, 0, 0, 0, tuple(problems))
    scan = _Scan(data, d, require_dmg, max_problems)
    for ends in _windows(data, scan.arr, ord(d.segment), max(1, window_bytes), segment_ends):
        scan.feed(ends)
    report = scan.report(problems)
    log.info("check_834: %d segments, %d members, %d problem(s)", report.segment_count, report.member_count,
             scan.problem_total)
    return report


def _windows(data: Payload, arr: np.ndarray, term: int, window: int,
             segment_ends: SegmentEnds | None) -> Iterator[np.ndarray]:
    """The file's terminator offsets, about ``window`` bytes' worth at a time (at least one terminator each).

    A read-only map's pages behind each window are dropped from this process as the next is asked for
    (:func:`release_pages`): a pass over the file holds a window of it, not all of it.
    """
    offsets = (segment_ends.offsets if segment_ends is not None and segment_ends.terminator == term
               and segment_ends.size == len(arr) else None)
    release = release_pages(data)
    lo, n = 0, len(arr)
    while lo < n:
        release(lo)
        hi = min(n, lo + window)
        if offsets is not None:
            first, last = np.searchsorted(offsets, (lo, hi))
            ends = offsets[first:last] if last > first else offsets[last:last + 1]
        else:
            ends = np.flatnonzero(arr[lo:hi] == term) + lo
            if not len(ends):
                at = data.find(bytes([term]), hi)
                ends = np.array([at] if at >= 0 else [], dtype=np.int64)
        if not len(ends):
            return
        yield ends.astype(np.int64, copy=False)
        lo = int(ends[-1]) + 1


_CODE_RULES: dict[str, list[tuple[int, str, frozenset[str]]]] = {
    "I": [(1, "INS01", values(SubscriberIndicator)), (2, "INS02", values(IndividualRelationship)),
          (3, "INS03", values(MaintenanceType)), (4, "INS04", values(MaintenanceReason)),
          (5, "INS05", values(BenefitStatus))],
    "H": [(1, "HD01", values(MaintenanceType)), (3, "HD03", values(InsuranceLine)),
          (5, "HD05", values(CoverageLevel))],
}
#: The leading bytes of an INS (INS01-05 fit in 18) and of an HD (HD04 is free text: the whole, bounded,
#: segment) that the code check reads.
_CODE_WIDTH = {"I": 18, "H": 96}

_ADD, _CHANGE, _TERM, _REINSTATE, _AUDIT = (m.value for m in (
    MaintenanceType.ADDITION, MaintenanceType.CHANGE, MaintenanceType.CANCELLATION,
    MaintenanceType.REINSTATEMENT, MaintenanceType.AUDIT_OR_COMPARE))
#: For each INS03, the HD01 values its Loop 2300s may carry and whether it needs at least one.
_HD_FOR_INS: dict[str, tuple[frozenset[str], bool]] = {
    _ADD: (frozenset({_ADD}), True),
    _CHANGE: (frozenset({_ADD, _CHANGE, _TERM, _REINSTATE}), False),
    _TERM: (frozenset({_TERM}), True),
    _REINSTATE: (frozenset({_REINSTATE, _ADD, _CHANGE}), True),
    _AUDIT: (frozenset({_AUDIT}), True),
}
#: INS03 as a small integer: its index in _HD_FOR_INS, or _OTHER_INS03 for any other value.
_INS03 = tuple(_HD_FOR_INS)
_OTHER_INS03 = len(_INS03)
_NEEDS_COVERAGE = np.array([_HD_FOR_INS[code][1] for code in _INS03] + [False])
_ENVELOPE = np.zeros(256, dtype=bool)
_ENVELOPE[[ord(c) for c in "SsGgz"]] = True
_HEADER_STEPS = tuple(re.compile(p) for p in ("S", "SB", "SBo?", "SBo?a?", "SBo?a?q{0,3}", "SBo?a?q{0,3}P"))


_ONES, _HIGHS = np.uint64(0x0101010101010101), np.uint64(0x8080808080808080)
#: Segment ids whose first element also decides their token (a qualifier), and HD (HD01 is read).
_ELEMENT1_IDS = np.array([int.from_bytes(seg_id, "little") for seg_id in (*_QUALIFIED, b"HD")], dtype=np.uint64)


def _significant(words: np.ndarray, sep: int) -> np.ndarray:
    """Each 8-byte key with only what classifying it reads: the segment id, and element 1 after the ids
    that are qualified (and HD's HD01); every later byte becomes the separator. A file's keys hold names,
    streets and ids in their first bytes (N3, DMG, REF*0F), so its distinct keys would grow with the file;
    these stay a few dozen. Word-wise: the lowest zero byte of ``word ^ seps`` is found exactly by the
    borrow trick, and masking below it needs no byte loop."""
    seps = _ONES * np.uint64(sep)
    x = words ^ seps
    t = (x - _ONES) & ~x & _HIGHS
    low = (t & (~t + np.uint64(1))) >> np.uint64(7)  # 1 << 8k for the first separator at byte k, else 0
    first = low - np.uint64(1)  # the bytes before it (all of them if there is none)
    x2 = x | (low * np.uint64(0xFF))  # that separator no longer a zero byte: find the second one
    t2 = (x2 - _ONES) & ~x2 & _HIGHS
    second = ((t2 & (~t2 + np.uint64(1))) >> np.uint64(7)) - np.uint64(1)
    mask = np.where(np.isin(words & first, _ELEMENT1_IDS), second, first)
    out: np.ndarray = (words & mask) | (seps & ~mask)
    return out


class _Key(NamedTuple):
    """What one distinct 8-byte segment key says: its token, its segment id (as reported), and as an HD
    (HD01 is read from these 8 bytes) whether it is a cancellation and which INS03s allow it (bit i:
    ``_INS03[i]``)."""

    token: int
    name: str
    hd_term: bool
    hd_allowed: int


@dataclass
class _Group:
    """A GS waiting for its GE (the k-th GS pairs with the k-th GE, as the envelope check always paired
    them): the STs after it, and the ST02s among them."""

    index: int
    pos: int
    elements: list[str]
    sets: int = 0
    seen: set[str] = field(default_factory=set)


class _Scan:
    """The structural check's state between windows, and the report it makes at the end.

    Each kind of finding keeps only its first problems (enough for ``max_problems`` of them), in the order
    the whole-file check made them; :meth:`report` then assembles them as that check did, caps included.
    """

    def __init__(self, data: Payload, d: Delimiters, require_dmg: bool, max_problems: int) -> None:
        self.data, self.d, self.max_problems = data, d, max_problems
        self.keep = max(1, max_problems)
        self.arr = np.frombuffer(data, dtype=np.uint8)
        self.sep, self.skip = ord(d.element), len(d.suffix)
        self.count = 0  # segments so far
        self.last_end = -1  # the last terminator so far
        self.members = 0
        self.suffix_bad = False
        self.high: int | None = None  # position of the first byte outside ASCII
        # Distinct 8-byte keys seen so far, sorted, and each one's index into key_info.
        self.known = np.zeros(0, dtype=np.uint64)
        self.known_index = np.zeros(0, dtype=np.int64)
        self.key_info: list[_Key] = []
        self.token_of = np.zeros(0, dtype=np.uint8)
        self.hd_term_of = np.zeros(0, dtype=bool)
        self.hd_allowed_of = np.zeros(0, dtype=np.uint8)
        self.empty: list[int] = []
        self.unexpected: list[tuple[int, str]] = []
        self.invalid: dict[str, dict[bytes, tuple[list[str], list[int]]]] = {"I": {}, "H": {}}
        self.code_parts: dict[str, dict[bytes, tuple[list[str], int]]] = {"I": {}, "H": {}}
        # Loop 2000 against its 2300s: the open member (row, INS03, HDs), HDs awaiting the segment two on.
        self.ins_total = 0
        self.open_ins: tuple[int, int, int] | None = None  # (row, INS03 as in _INS03, HDs so far)
        self.waiting_hd: list[tuple[int, bool]] = []  # (row, is HD*024)
        self.term_no_end: list[int] = []
        self.no_coverage: list[list[int]] = [[] for _ in _INS03]
        self.mismatch: list[list[int]] = [[] for _ in _INS03]
        # Separators inside data, found up front by memchr: only their segments are placed per window.
        # Separators inside data: for each of ISA16 and ISA11, its first offsets (memchr over each window).
        self.separator_hits: list[list[int]] = [[] for _ in dict.fromkeys((d.component, d.repetition))]
        self.placed: dict[int, tuple[int, str, int]] = {}
        self.walk = _OrderWalk(*_grammar(require_dmg))
        # Envelope: ST/SE and GS/GE paired in order, as the whole-file check zipped them.
        self.isa: list[str] = []
        self.st_waiting: deque[tuple[int, list[str]]] = deque()
        self.se_waiting: deque[tuple[int, list[str]]] = deque()
        self.pairs = self.st_count = self.se_count = 0
        self.gs_count = self.ge_count = 0
        self.groups: deque[_Group] = deque()
        self.ge_waiting: deque[tuple[int, list[str]]] = deque()
        self.iea: list[tuple[int, list[str]]] = []
        self.envelope: list[tuple[tuple[int, ...], Problem]] = []
        self.problem_total = 0

    # -- one window ------------------------------------------------------------------------------------
    def feed(self, ends: np.ndarray) -> None:
        arr, m, base = self.arr, len(ends), self.count
        starts = np.empty(m, dtype=np.int64)
        starts[0] = 0 if base == 0 else self.last_end + 1 + self.skip
        starts[1:] = ends[:-1] + 1 + self.skip
        if self.skip and not self.suffix_bad:
            # Every terminator but the file's last is followed by the suffix: the previous window's last now too.
            checked = ends[:-1] if base == 0 else np.concatenate(([self.last_end], ends[:-1]))
            if len(checked) and not np.all(arr[np.minimum(checked + 1, len(arr) - 1)] == ord(self.d.suffix[0])):
                self.suffix_bad = True
        if self.high is None:
            region = arr[self.last_end + 1:int(ends[-1]) + 1]
            if int(region.max()) > 126:
                first = self.last_end + 1 + int(np.flatnonzero(region > 126)[0])
                self.high = base + int(np.searchsorted(ends, first)) + 1
        codes = self._classify(_keys(arr, starts, ends, self.sep, 8))
        tok = self.token_of[codes]
        seq = tok.tobytes().decode("ascii")
        self.members += seq.count("I")
        if "!" in seq and len(self.empty) < self.keep:
            self.empty.extend((base + np.flatnonzero(tok == ord("!"))[:self.keep]).tolist())
            del self.empty[self.keep:]
        if "?" in seq and len(self.unexpected) < self.keep:
            for row in np.flatnonzero(tok == ord("?"))[:self.keep].tolist():
                self.unexpected.append((base + row, self.key_info[int(codes[row])].name))
            del self.unexpected[self.keep:]
        if base == 0:
            self.isa = self._elements(0, int(ends[0]))
        ins = np.flatnonzero(tok == ord("I"))
        hd = np.flatnonzero(tok == ord("H"))
        ins03 = self._codes("I", ins, starts, ends, base)
        self._codes("H", hd, starts, ends, base)
        self._maintenance(tok, base, ins, ins03, hd, codes[hd])
        hits = _separator_hits(self.data, self.d, self.separator_hits, 2 * self.keep,
                               max(106, self.last_end + 1), int(ends[-1]) + 1)
        if hits:
            self._place_separators(sorted(hits), ends, starts, codes, base)
        if self.walk.error is None and not self.empty and not self.unexpected:
            self.walk.feed(seq, codes, base, final=False)
        envelope = np.flatnonzero(_ENVELOPE[tok])
        if len(envelope):
            self._envelope(tok, envelope, starts, ends, base)
        self.count += m
        self.last_end = int(ends[-1])

    def _classify(self, mat: np.ndarray) -> np.ndarray:
        """Each segment's index into :attr:`key_info` from its 8-byte key; Python sees each distinct key once
        per file, a window's keys are found among those already seen by a sorted search."""
        import pandas as pd

        words = np.ascontiguousarray(mat).view(np.uint64).ravel()
        codes, uniques = pd.factorize(words)
        if self.sep:
            # Cut to what classifying reads once per distinct raw key (a window's are a fraction of its
            # segments: names and streets repeat little, the rest a lot), not once per segment.
            within, uniques = pd.factorize(_significant(np.asarray(uniques, dtype=np.uint64), self.sep))
            codes = within[codes]
        uniques = np.asarray(uniques, dtype=np.uint64)
        at = np.searchsorted(self.known, uniques)
        seen = at < len(self.known)
        seen[seen] = self.known[at[seen]] == uniques[seen]
        if not seen.all():
            new = uniques[~seen]
            first = len(self.key_info)
            added = [self._key(key_int) for key_int in new.tolist()]
            self.key_info.extend(added)
            keys = np.concatenate((self.known, new))
            index = np.concatenate((self.known_index, np.arange(first, len(self.key_info), dtype=np.int64)))
            order = np.argsort(keys, kind="stable")
            self.known, self.known_index = keys[order], index[order]
            self.token_of = np.concatenate((self.token_of, np.array([k.token for k in added], dtype=np.uint8)))
            self.hd_term_of = np.concatenate((self.hd_term_of, np.array([k.hd_term for k in added], dtype=bool)))
            self.hd_allowed_of = np.concatenate((self.hd_allowed_of,
                                                 np.array([k.hd_allowed for k in added], dtype=np.uint8)))
            at = np.searchsorted(self.known, uniques)
        out: np.ndarray = self.known_index[at][codes]
        return out

    def _key(self, key_int: int) -> _Key:
        key = int(key_int).to_bytes(8, "little").rstrip(b"\x00")
        parts = key.split(bytes([self.sep]))
        seg_id = parts[0]
        name = seg_id + (parts[1] if seg_id in _QUALIFIED and len(parts) > 1 else b"")
        token = ord(_TOKENS.get(name, "?") if seg_id else "!")
        elements = key.decode("ascii", "replace").split(self.d.element)
        hd01 = elements[1] if len(elements) > 1 else ""
        allowed = sum(1 << i for i, code in enumerate(_INS03) if hd01 in _HD_FOR_INS[code][0])
        return _Key(token, seg_id.decode("ascii", "replace")[:3], hd01 == _TERM, allowed)

    def _codes(self, kind: str, rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, base: int) -> np.ndarray:
        """Code values of the ``kind`` segments at ``rows``: the first rows of each failing distinct key kept;
        returns each one's INS03 as in _INS03 (for the maintenance check)."""
        if not len(rows):
            return np.zeros(0, dtype=np.int64)
        first, last = starts[rows], ends[rows]
        width = max(1, min(_CODE_WIDTH[kind], int((last - first).max())))
        uniq, inverse = _unique_rows(_keys(self.arr, first, last, 0, width))
        cache, rules, invalid = self.code_parts[kind], _CODE_RULES[kind], self.invalid[kind]
        parsed = []
        for key in uniq.tolist():
            found = cache.get(key)
            if found is None:
                parts = key.decode("ascii", "replace").split(self.d.element)
                failing = [ref for index, ref, allowed in rules
                           if (parts[index] if index < len(parts) else "") not in allowed]
                element3 = parts[3] if len(parts) > 3 else ""
                found = cache[key] = (failing, _INS03.index(element3) if element3 in _HD_FOR_INS else _OTHER_INS03)
            parsed.append(found)
        bad = [i for i, (failing, _) in enumerate(parsed) if failing]
        if bad:
            order = np.argsort(inverse, kind="stable")
            bounds = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))
            for i in bad:
                key = uniq[i].tobytes().rstrip(b"\x00")
                failing, hits = invalid.setdefault(key, (parsed[i][0], []))
                if len(hits) < self.keep:
                    hits.extend((base + rows[order[bounds[i]:bounds[i + 1]][:self.keep - len(hits)]]).tolist())
            if len(invalid) > 2 * self.keep:  # only the first failing keys in byte order are ever reported
                for key in sorted(invalid)[self.keep:]:
                    del invalid[key]
        if kind != "I":
            return np.zeros(0, dtype=np.int64)
        ins03: np.ndarray = np.asarray([p[1] for p in parsed], dtype=np.int64)[inverse]
        return ins03

    def _maintenance(self, tok: np.ndarray, base: int, ins: np.ndarray, ins03: np.ndarray, hd: np.ndarray,
                     hd_keys: np.ndarray) -> None:
        """INS03 against its HD01s (see :meth:`report`): which HD belongs to which member, DTP*349 two
        segments after an HD*024, members left without coverage, carried over window ends."""
        m, keep = len(tok), self.keep
        self.ins_total += len(ins)
        hd_term = self.hd_term_of[hd_keys]
        # DTP*349 follows HD and DTP*348 (grammar Hbe?), so it sits two segments after its HD.
        still: list[tuple[int, bool]] = []
        for row, term in self.waiting_hd:
            at = row + 2 - base
            if at >= m:
                still.append((row, term))
            elif term and tok[at] != ord("e") and len(self.term_no_end) < keep:
                self.term_no_end.append(row)
        after = hd + 2
        inside = after < m
        has_end = np.zeros(len(hd), dtype=bool)
        has_end[inside] = tok[after[inside]] == ord("e")
        if len(self.term_no_end) < keep:
            self.term_no_end.extend((base + hd[hd_term & ~has_end & inside][:keep]).tolist())
            del self.term_no_end[keep:]
        still.extend(zip((base + hd[~inside]).tolist(), hd_term[~inside].tolist(), strict=True))
        self.waiting_hd = still
        # Each HD's member: the last INS before it, in this window or carried from an earlier one.
        owner = np.searchsorted(ins, hd, side="right") - 1
        carried = self.open_ins
        if len(hd):
            member = np.full(len(hd), -1 if carried is None else carried[1], dtype=np.int64)
            if len(ins):
                mine = owner >= 0
                member[mine] = ins03[owner[mine]]
            fits = (self.hd_allowed_of[hd_keys].astype(np.int64) >> np.clip(member, 0, 7)) & 1
            bad = (member >= 0) & (member < _OTHER_INS03) & (fits == 0)
            if bad.any():
                for i, rows in enumerate(self.mismatch):
                    if len(rows) < keep:
                        rows.extend((base + hd[bad & (member == i)][:keep]).tolist())
                        del rows[keep:]
        if carried is not None:
            carried = (carried[0], carried[1], carried[2] + int(np.count_nonzero(owner < 0)))
        if not len(ins):
            self.open_ins = carried
            return
        counts = np.bincount(owner[owner >= 0], minlength=len(ins))
        if carried is not None:
            self._close_member(*carried)
        lacking = (counts[:-1] == 0) & _NEEDS_COVERAGE[ins03[:-1]]
        if lacking.any():
            for i, rows in enumerate(self.no_coverage):
                if len(rows) < keep:
                    rows.extend((base + ins[:-1][lacking & (ins03[:-1] == i)][:keep]).tolist())
                    del rows[keep:]
        self.open_ins = (base + int(ins[-1]), int(ins03[-1]), int(counts[-1]))

    def _close_member(self, row: int, code: int, hds: int) -> None:
        if _NEEDS_COVERAGE[code] and hds == 0 and len(self.no_coverage[code]) < self.keep:
            self.no_coverage[code].append(row)

    def _place_separators(self, hits: list[int], ends: np.ndarray, starts: np.ndarray, codes: np.ndarray,
                          base: int) -> None:
        """Segment, element and name of each separator hit in this window."""
        for hit in hits:
            row = int(np.searchsorted(ends, hit))
            start = int(starts[row])
            e = self.d.element.encode("ascii")
            # Element separators from the segment's start to the hit (negative if the hit is before it).
            element = (bytes(self.data[start:hit]).count(e) if start <= hit
                       else -bytes(self.data[hit:start]).count(e))
            self.placed[hit] = (base + row, self.key_info[int(codes[row])].name, element)

    def _elements(self, start: int, end: int) -> list[str]:
        return _elements(self.data[start:end], self.d.element.encode())

    def _envelope(self, tok: np.ndarray, rows: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                  base: int) -> None:
        """ST/SE, GS/GE and IEA in this window, paired in order as the whole-file check paired them."""
        for row in rows.tolist():
            kind, pos = chr(tok[row]), base + row
            elements = self._elements(int(starts[row]), int(ends[row]))
            if kind == "S":
                self.st_count += 1
                for group in self.groups:
                    number = elements[2] if len(elements) > 2 else ""
                    if number in group.seen:
                        self._flag((pos + 1, 2, group.index, 0, pos), pos + 1, "ST", "ST02",
                                   "duplicate_control_number",
                                   "ST02 repeats an earlier transaction set's in this group")
                    group.seen.add(number)
                    group.sets += 1
                self.st_waiting.append((pos, elements))
            elif kind == "s":
                self.se_count += 1
                self.se_waiting.append((pos, elements))
            elif kind == "G":
                self.gs_count += 1
                group = _Group(self.gs_count - 1, pos, elements)
                if self.ge_waiting:  # its GE came first: no set between them
                    self._close_group(group, *self.ge_waiting.popleft())
                else:
                    self.groups.append(group)
            elif kind == "g":
                self.ge_count += 1
                if self.groups:
                    self._close_group(self.groups.popleft(), pos, elements)
                else:
                    self.ge_waiting.append((pos, elements))
            elif len(self.iea) < 2:
                self.iea.append((pos, elements))
            while self.st_waiting and self.se_waiting:
                self._pair(*self.st_waiting.popleft(), *self.se_waiting.popleft())

    def _pair(self, st: int, st_el: list[str], se: int, se_el: list[str]) -> None:
        index = self.pairs
        self.pairs += 1
        if len(se_el) < 3 or not se_el[1].isdigit() or int(se_el[1]) != se - st + 1:
            self._flag((se + 1, 0, index, 0), se + 1, "SE", "SE01", "se_count",
                       f"SE01 does not equal the {se - st + 1} segments from ST to SE")
        if len(st_el) < 3 or len(se_el) < 3 or st_el[2] != se_el[2]:
            self._flag((se + 1, 0, index, 1), se + 1, "SE", "SE02", "control_number", "SE02 does not equal ST02")
        if len(st_el) < 4 or st_el[1] != "834" or st_el[3] != "005010X220A1":
            self._flag((st + 1, 0, index, 2), st + 1, "ST", "ST01", "transaction_set",
                       "ST is not an 834 005010X220A1")

    def _close_group(self, group: _Group, ge: int, ge_el: list[str]) -> None:
        gs_el, k, sets = group.elements, group.index, group.sets
        if len(ge_el) < 3 or ge_el[1] != str(sets):
            self._flag((ge + 1, 2, k, 1), ge + 1, "GE", "GE01", "ge_count",
                       f"GE01 does not equal the {sets} transaction set(s) in the group")
        if len(gs_el) < 7 or len(ge_el) < 3 or gs_el[6] != ge_el[2]:
            self._flag((ge + 1, 2, k, 2), ge + 1, "GE", "GE02", "control_number", "GE02 does not equal GS06")
        if len(gs_el) < 2 or gs_el[1] != "BE":
            self._flag((group.pos + 1, 2, k, 3), group.pos + 1, "GS", "GS01", "functional_group",
                       "GS01 is not BE")

    def _flag(self, order: tuple[int, ...], pos: int, seg: str, element: str, code: str, message: str) -> None:
        """An envelope problem: kept only while among the first (by position, then as the whole-file check
        appended them)."""
        self.envelope.append((order, _problem(pos, seg, element, code, message)))
        if len(self.envelope) > 4 * self.keep:
            self.envelope.sort(key=lambda item: item[0])
            del self.envelope[self.keep:]

    # -- the report ------------------------------------------------------------------------------------
    def report(self, problems: list[Problem]) -> ConformanceReport:
        """The whole-file check's report: its problems in its order, each kind capped as it capped them."""
        count, cap, data = self.count, self.max_problems, self.data
        if self.open_ins is not None:
            self._close_member(*self.open_ins)
        self.waiting_hd, waiting = [], self.waiting_hd
        for row, term in waiting:  # no DTP*349 two segments on: the file ended first
            if term and len(self.term_no_end) < self.keep:
                self.term_no_end.append(row)
        # Separators after the last terminator: never placed, but they count among each one's first.
        _separator_hits(data, self.d, self.separator_hits, 2 * self.keep, max(106, self.last_end + 1), len(data))
        tail = data[self.last_end + 1:]  # bytes: a map has no strip
        if self.high is None and len(tail) and int(self.arr[self.last_end + 1:].max()) > 126:
            self.high = count + 1
        if tail.strip(b"\r\n") or self.suffix_bad:
            problems.append(_problem(count, "", "", "segment_terminator",
                                     "text after the last terminator, or a terminator without the suffix"))
        if self.high is not None:
            problems.append(_problem(self.high, "", "", "character_set", "byte outside the ASCII character set"))
        for pos0 in self.empty:
            problems.append(_problem(pos0 + 1, "", "", "empty_segment", "empty segment"))
            if len(problems) >= cap:
                break
        for pos0, name in self.unexpected:
            if len(problems) >= cap:
                break
            problems.append(_problem(pos0 + 1, name, "", "unexpected_segment",
                                     "segment id or qualifier not used in this 834"))
        self._report_codes(problems)
        if self.ins_total:
            self._report_maintenance(problems)
        self._report_separators(problems)
        if not self.empty and not self.unexpected:
            self.walk.feed("", np.zeros(0, dtype=np.int64), count, final=True)
            if self.walk.error is not None:
                pos, at, key = self.walk.error
                message = ("the member loop starting here lacks a required segment (INS, REF*0F, NM1*IL, "
                           "DMG, HD, DTP*348), repeats one, or has one out of order" if at == "I" else
                           "segment out of order, or a required segment missing before it")
                problems.append(_problem(pos + 1, self.key_info[key].name, "", "segment_order", message))
        if self.st_count != self.se_count or not self.st_count:
            self._flag((count, 1), count, "SE", "", "st_se_pairs", "every ST needs one SE")
        if self.gs_count != self.ge_count or not self.gs_count:
            self._flag((count, 3), count, "GE", "", "gs_ge_pairs", "every GS needs one GE")
        if len(self.iea) != 1 or self.iea[0][0] != count - 1:
            self._flag((count, 4, 0), count, "IEA", "", "iea_missing", "the file must end with one IEA")
        else:
            iea = self.iea[0][1]
            if len(iea) < 3 or iea[1] != str(self.gs_count):
                self._flag((count, 4, 1), count, "IEA", "IEA01", "iea_count",
                           f"IEA01 does not equal the {self.gs_count} group(s)")
            if len(iea) < 3 or iea[2] != self.isa[13]:
                self._flag((count, 4, 2), count, "IEA", "IEA02", "control_number", "IEA02 does not equal ISA13")
        self.envelope.sort(key=lambda item: item[0])
        problems.extend(problem for _, problem in self.envelope)
        problems.sort(key=lambda p: p.segment_position)
        self.problem_total = len(problems)
        return ConformanceReport(ok=not problems, segment_count=count, member_count=self.members,
                                 transaction_sets=self.st_count, problems=tuple(problems[:cap]))

    def _report_codes(self, problems: list[Problem]) -> None:
        cap = self.max_problems
        for kind in _CODE_RULES:
            invalid = self.invalid[kind]
            for key in sorted(invalid):
                failing, rows = invalid[key]
                for ref in failing:
                    for row in rows[: max(1, cap - len(problems))]:
                        problems.append(_problem(row + 1, _NAMES[kind], ref, "invalid_code",
                                                 f"{ref} is missing or not in its code list"))
                    if len(problems) >= cap:
                        return

    def _report_maintenance(self, problems: list[Problem]) -> None:
        cap = self.max_problems
        for row in self.term_no_end:
            if len(problems) >= cap:
                return
            problems.append(_problem(row + 1, "HD", "HD01", "term_without_end_date",
                                     "HD01 024 (cancellation) needs a DTP*349 benefit end date"))
        for i, code in enumerate(_INS03):
            for row in self.no_coverage[i]:
                if len(problems) >= cap:
                    return
                problems.append(_problem(row + 1, "INS", "INS03", "coverage_missing",
                                         f"INS03 {code} needs at least one Loop 2300 (HD)"))
            for row in self.mismatch[i]:
                if len(problems) >= cap:
                    return
                problems.append(_problem(row + 1, "HD", "HD01", "maintenance_mismatch",
                                         f"HD01 does not fit the member's INS03 {code}"))

    def _report_separators(self, problems: list[Problem]) -> None:
        room = max(0, self.max_problems - len(problems))
        found: list[int] = []
        for hits in self.separator_hits:
            found.extend(hits[:max(0, 2 * room - len(found))])
        for hit in sorted(found)[:room]:
            placed = self.placed.get(hit)
            if placed is None:  # after the last terminator, as is every later one
                break
            pos0, seg, element = placed
            which = "component (ISA16)" if self.data[hit] == ord(self.d.component) else "repetition (ISA11)"
            problems.append(_problem(pos0 + 1, seg, f"{seg}{element:02d}", "delimiter_in_data",
                                     f"a {which} separator inside a data element"))


def _separator_hits(data: Payload, d: Delimiters, found: list[list[int]], most: int, lo: int, hi: int) -> list[int]:
    """The offsets in [lo, hi) of the component (ISA16) and the repetition (ISA11) separator where it is not
    INS06's own, each appended to its list in ``found`` while that holds fewer than ``most``; returns the
    new ones. X12 has no escape, so either one in a name or an address would be read as structure.
    bytes.find, not a mask: a clean window (the usual case) costs two memchr scans."""
    new: list[int] = []
    for char, hits in zip(dict.fromkeys((d.component, d.repetition)), found, strict=True):
        needle = char.encode("ascii")
        at = data.find(needle, lo, hi) if len(hits) < most else -1
        while at >= 0 and len(hits) < most:
            if not (char == d.component and _medicare_composite(data, at, d)):
                hits.append(at)
                new.append(at)
            at = data.find(needle, at + 1, hi)
    return new


class _OrderWalk:
    """The order of the segments, walked over the windows' tokens: the header, members one at a time, SE,
    and the envelope around them (the guide's grammar, :func:`_grammar`).

    A member holds one INS, at its start, and nothing else in the grammar holds one, so the tokens up to
    the last INS seen can be matched whatever follows; those from it are carried to the next window. A
    part is cut at its INSs into pieces, each a member and the set or group boundaries after it; the
    distinct pieces (a file's members have few shapes) are matched once each by a regular expression
    (the member atomic, so it takes exactly the walk's match). Only a part that does not match is walked
    member by member to find where (figures in benchmarks/README.md).
    """

    def __init__(self, header_re: re.Pattern[str], member_re: re.Pattern[str]) -> None:
        self.header_re, self.member_re = header_re, member_re
        h, m = f"(?>{header_re.pattern})", f"(?>{member_re.pattern})"
        between = f"(?:s(?:gG)?{h})*+"  # SE, and GE GS, then the next set's header: as often as they come
        self.head = {False: re.compile(f"AG{h}{between}"), True: re.compile(f"AG{h}{between}sgz")}
        self.piece = {False: re.compile(f"{m}{between}"), True: re.compile(f"{m}{between}sgz")}
        self.shapes: dict[str, bool] = {}  # piece (without its INS) -> it matches
        self.opening = True
        self.carry, self.carry_at = "", 0
        self.carry_codes = np.zeros(0, dtype=np.int64)
        self.error: tuple[int, str, int] | None = None  # (position, its token, its key) of the first misplaced

    def feed(self, seq: str, codes: np.ndarray, at: int, *, final: bool) -> None:
        if self.error is not None:
            return
        buf = self.carry + seq
        base = self.carry_at if self.carry else at
        keys = np.concatenate((self.carry_codes, codes)) if self.carry else codes
        cut = len(buf) if final else buf.rfind("I")
        if cut <= 0:
            self.carry, self.carry_at, self.carry_codes = buf, base, keys
            return
        part = buf[:cut]
        self.carry, self.carry_at, self.carry_codes = buf[cut:], base + cut, keys[cut:]
        if not self._parses(part, final=final):
            pos = self._misplaced(part, final=final)
            if pos is not None:
                token = part[pos] if pos < len(part) else ("" if final else "I")
                self.error = (base + pos, token, int(keys[min(pos, len(buf) - 1)]))
        self.opening = False

    def _parses(self, part: str, *, final: bool) -> bool:
        """Whether ``part`` (the file's start if opening, else from an INS; up to an INS unless final) is in
        the grammar: the header, members and the envelope between them."""
        head, *pieces = part.split("I")
        if self.opening:
            if not self.head[final and not pieces].fullmatch(head):
                return False
        elif head:
            return False
        last = pieces.pop() if final and pieces else None
        shapes = self.shapes
        if len(shapes) > 1 << 16:  # a file of many shapes is a broken one: keep the cache bounded
            shapes.clear()
        for shape in set(pieces):
            ok = shapes.get(shape)
            if ok is None:
                ok = shapes[shape] = self.piece[False].fullmatch("I" + shape) is not None
            if not ok:
                return False
        return last is None or self.piece[True].fullmatch("I" + last) is not None

    def _misplaced(self, seq: str, *, final: bool) -> int | None:
        """Index of the first token the grammar cannot place in ``seq``; None when it all parses (``final``)
        or ends inside the member loop (not final: an INS follows it)."""
        pos, members = 0, not self.opening
        if self.opening:
            if not seq.startswith("AG"):
                return 0 if not seq.startswith("A") else 1
            pos = 2
        while True:
            if not members:
                m = self.header_re.match(seq, pos)
                if m is None:
                    # Point at the first header segment that is wrong, not at ST.
                    done = max((p.match(seq, pos) for p in _HEADER_STEPS), key=lambda x: x.end() if x else -1)
                    return done.end() if done else pos
                pos = m.end()
            members = False
            while (m := self.member_re.match(seq, pos)) is not None:
                pos = m.end()
            if pos == len(seq) and not final:
                return None
            if seq.startswith("s", pos):
                pos += 1
            else:
                return pos
            if seq.startswith("S", pos):
                continue
            if seq.startswith("g", pos):
                pos += 1
            else:
                return pos
            if seq.startswith("G", pos):
                pos += 1
                continue
            return None if final and pos == len(seq) - 1 and seq[pos] == "z" else pos


def _medicare_composite(data: Payload, at: int, d: Delimiters) -> bool:
    """Whether the component separator at ``at`` is INS06's own (the Medicare status composite: a plan
    code, the separator, a one-digit eligibility reason), the one composite the 834 we write has."""
    e = ord(d.element)
    # A separator that is the file's last byte has no reason after it: not a composite, a finding.
    if at < 2 or at + 1 >= len(data) or data[at - 2] != e or chr(data[at - 1]) not in "ABCDE" \
            or chr(data[at + 1]) not in "012":
        return False
    if at + 2 < len(data) and data[at + 2] not in (e, ord(d.segment)):
        return False
    start = data.rfind(d.segment.encode("ascii"), 0, at) + 1
    segment = bytes(data[start:at]).lstrip(b"\r\n")
    return segment.startswith(b"INS" + bytes([e])) and segment.count(bytes([e])) == 6


def sample_families(every: int, count: int) -> Iterable[int]:
    """Family indexes of a deterministic sample: every ``every``-th family, starting with the first."""
    return range(0, count, max(1, every))


def _segment_starts(data: Payload, term: int, segment_ends: SegmentEnds | None = None) -> np.ndarray:
    """Offsets of every segment after the first: after a terminator and the suffix ("", LF or CRLF)."""
    return _starts_after(np.frombuffer(data, dtype=np.uint8), _ends_of(data, term, segment_ends))


def _starts_after(arr: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """:func:`_segment_starts` for the terminators at ``ends``."""
    starts = ends + 1
    for _ in range(2):
        starts = starts[starts < len(arr)]
        byte = arr[starts]
        starts = starts + ((byte == 0x0A) | (byte == 0x0D))
    return starts[starts < len(arr)]


def _starting_with(data: Payload, starts: np.ndarray, tag: bytes) -> np.ndarray:
    """The segment offsets among ``starts`` whose bytes begin with ``tag``."""
    return _starting_with_each(data, starts, (tag,))[0]


def _starting_with_each(data: Payload, starts: np.ndarray, tags: tuple[bytes, ...]) -> list[np.ndarray]:
    """For each tag, :func:`_starting_with`: the offsets among ``starts`` whose bytes begin with it.

    Tags of up to 8 bytes are compared as masked 64-bit words, all against one word read at each offset
    (one gather per segment instead of one per tag byte; figures in benchmarks/README.md).
    """
    arr = np.frombuffer(data, dtype=np.uint8)
    n = len(arr)
    wordwise = n >= 8 and all(0 < len(tag) <= 8 for tag in tags)
    word = (np.ndarray(shape=(n - 7,), dtype="<u8", buffer=arr, strides=(1,))[np.minimum(starts, n - 8)]
            if wordwise and len(tags) > 0 else None)
    # The last few offsets (within 8 bytes of the end) were read from earlier: compared bytewise.
    late = np.flatnonzero(starts > n - 8).tolist() if word is not None else []
    out: list[np.ndarray] = []
    for tag in tags:
        if word is None:
            kept = starts[starts + len(tag) <= n]
            hit = np.ones(len(kept), dtype=bool)
            for k, byte in enumerate(tag):
                hit &= arr[kept + k] == byte
            out.append(kept[hit])
            continue
        mask = np.uint64((1 << (8 * len(tag))) - 1)
        found: np.ndarray = (word & mask) == np.uint64(int.from_bytes(tag, "little"))
        for row in late:
            at = int(starts[row])
            found[row] = at + len(tag) <= n and data[at:at + len(tag)] == tag
        out.append(starts[found])
    return out


def _index(data: Payload, sub: bytes, start: int) -> int:
    """``bytes.index`` for bytes or a map (a map has ``find``, not ``index``), with its ValueError."""
    at = data.find(sub, start)
    if at < 0:
        raise ValueError("subsection not found")
    return at


@dataclass(frozen=True)
class _Cut:
    """Where :func:`pyx12_target` cuts an 834: the header, each checked family's slice, SE's parts, the trailer."""

    head: bytes  # ISA through the last header segment (of the first set, in a split file)
    spans: tuple[tuple[int, int], ...]  # each checked family's [start, end) in the file, in file order
    element: bytes
    terminator: bytes
    st_at: int  # the first ST's offset, where SE01's count starts
    st02: bytes
    rest: bytes  # SE's terminator through IEA (GE01 1 in a split file)
    se_inside: re.Pattern[bytes] | None  # a split file: where a family's slice runs over into the next set


@dataclass(frozen=True)
class Pyx12Target:
    """What pyx12 checks of an 834: the whole file, or a deterministic sample of its families.

    :meth:`pieces` gives it as one conformant 834 (``pieces(1)``: what :func:`sample_834` returns) or as
    up to ``count`` disjoint ones that hold the same families between them, for pyx12 to read on several
    cores. ``size`` is about the target's bytes as one piece, for choosing how to run it.
    """

    data: Payload
    sampled: bool
    size: int
    cut: _Cut | None  # None: the file is checked only whole (too short or too odd to cut, or a split file)

    def pieces(self, count: int = 1) -> list[Payload]:
        """The target as ``count`` 834s (fewer if it holds fewer families): each its envelope and header,
        a run of consecutive checked families (the k-th of ``count`` equal shares, in file order) and a
        fresh SE. ``count`` 1 of a file checked whole is ``data`` itself (a map if given one); a cut is
        always bytes."""
        cut = self.cut
        if cut is None or (count <= 1 and not self.sampled):
            return [self.data]
        data, e, t = self.data, cut.element, cut.terminator
        # The families come from all over a map, and each read maps a large block of it: drop what is
        # behind the family being read, so that the cut holds a few blocks of the file, not most of it.
        release = release_pages(data)

        def whole_set(start: int, end: int) -> bytes:
            release(start)
            chunk = data[start:end]
            # A split file: a family's slice may run over SE into the next set's ST..N1; drop that part.
            found = cut.se_inside.search(chunk) if cut.se_inside is not None else None
            return chunk if found is None else chunk[:found.start(1)]

        spans = cut.spans
        share = max(1, min(count, len(spans)))
        out: list[Payload] = []
        for k in range(share):
            part = spans[k * len(spans) // share:(k + 1) * len(spans) // share]
            body = cut.head + b"".join(whole_set(start, end) for start, end in part)
            seg_count = body[cut.st_at:].count(t) + 1  # ST through SE inclusive
            out.append(body + b"SE" + e + str(seg_count).encode() + e + cut.st02 + cut.rest)
        release(len(data))
        return out


def pyx12_target(data: Payload, *, max_members: int = 5_000,
                 segment_ends: SegmentEnds | None = None) -> Pyx12Target:
    """What pyx12 is to check of ``data``: all of it up to ``max_members`` members, else every k-th family.

    Cut from the rendered bytes themselves (not re-rendered), so the gate samples exactly what is sent;
    deterministic. GE and IEA are kept (one transaction set, one group: the sample of a file split into
    several sets is cut into the first set's envelope, GE01 1). A split file that is checked whole is
    never cut: its every set's own envelope is pyx12's to read. Raises ValueError or IndexError for a
    sampled file too broken to cut, as :func:`sample_834` always has. ``segment_ends``: as for
    :func:`check_834`.
    """
    if len(data) < 106:
        return Pyx12Target(data, False, len(data), None)
    e, t = data[3:4], data[105:106]
    sep, term = re.escape(e), re.escape(t)

    def segment_starts(tag: bytes, within: bytes) -> list[int]:
        return [m.start(1) for m in re.finditer(rb"(?:" + term + rb")\s*(" + tag + rb")", within)]

    # Members, families and sets by array over the segment starts, not regex scans and a loop over the
    # members (benchmarks/README.md); a window at a time, keeping the family and set starts only (the
    # members are counted): 8 bytes a family, not a segment.
    arr = np.frombuffer(data, dtype=np.uint8)
    members, heads, sets = 0, [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    for ends in _windows(data, arr, t[0], CHECK_WINDOW_BYTES, segment_ends):
        ins, st, subscribers = _starting_with_each(data, _starts_after(arr, ends),
                                                   (b"INS" + e, b"ST" + e, b"INS" + e + b"Y" + e))
        members += len(ins)
        sets.append(st)
        heads.append(subscribers)
    del arr
    sampled = members > max_members
    whole = Pyx12Target(data, False, len(data), None)
    families = np.concatenate(heads)  # the subscribers' INS: where each family starts
    st_at: list[int] = np.concatenate(sets).tolist()
    if not sampled and len(st_at) != 1:
        return whole
    tail = segment_starts(b"SE" + sep, data[int(families[-1]):]) if len(families) else []
    if not len(families) or not st_at or not tail:
        return whole
    try:
        se_at = int(families[-1]) + tail[0]
        every = max(1, -(-members // max_members))
        bounds = np.append(families, se_at)
        spans = tuple((int(bounds[i]), int(bounds[i + 1])) for i in sample_families(every, len(families)))
        se_end = _index(data, t, se_at)
        st02 = data[st_at[0]:_index(data, t, st_at[0])].split(e)[2]
    except (ValueError, IndexError):
        if sampled:
            raise
        return whole  # checked whole, as it always was: pyx12 and the structural check say what is wrong
    rest = data[se_end:]
    se_inside = None
    if len(st_at) > 1:
        rest = re.sub(rb"(GE" + sep + rb")\d+", rb"\g<1>1", rest, count=1)
        se_inside = re.compile(rb"(?:" + term + rb")\s*(SE" + sep + rb")")
    head = data[:int(families[0])]
    if se_inside is not None and (found := se_inside.search(head)) is not None:
        head = head[:found.start(1)]
    size = len(head) + sum(end - start for start, end in spans) + len(rest) + 16
    return Pyx12Target(data, sampled, size, _Cut(head, spans, e, t, st_at[0], st02, rest, se_inside))


@overload
def sample_834(data: bytes, *, max_members: int = ...,
               segment_ends: SegmentEnds | None = ...) -> tuple[bytes, bool]: ...


@overload
def sample_834(data: Payload, *, max_members: int = ...,
               segment_ends: SegmentEnds | None = ...) -> tuple[Payload, bool]: ...


def sample_834(data: Payload, *, max_members: int = 5_000,
               segment_ends: SegmentEnds | None = None) -> tuple[Payload, bool]:
    """:func:`pyx12_target` as one conformant 834: its envelope and header, every k-th family, a fresh SE.

    Returns (bytes, sampled?); a file with at most ``max_members`` members comes back whole (``data``
    itself, a map if given one; a sample is always bytes).
    """
    target = pyx12_target(data, max_members=max_members, segment_ends=segment_ends)
    return target.pieces(1)[0], target.sampled


__all__ = ["ConformanceReport", "Payload", "Problem", "Pyx12Target", "Pyx12Verdict", "SegmentEnds", "check_834",
           "find_segment_ends", "pyx12_target", "release_pages", "sample_834", "sample_families", "validate_with_pyx12"]
