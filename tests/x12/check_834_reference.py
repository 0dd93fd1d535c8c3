"""The structural check as it was before it ran over windows (main @0a18f95, x12/check.py): the oracle
the windowed :func:`carrierfeeds.x12.check.check_834` must agree with, finding for finding.

A verbatim copy of the whole-file check (arrays over every segment), kept here unchanged so that a change
to the module under test cannot change its own oracle. Only what the check needs is copied; its report
type is the module's own, so reports compare equal field by field.
"""


from __future__ import annotations

import logging
import mmap
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from carrierfeeds.x12.check import ConformanceReport
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
from carrierfeeds.x12.verdicts import Problem

log = logging.getLogger(__name__)

#: An 834's bytes, in memory or mapped read-only (``files.read_mapped``). Everything here reads it by
#: slices (bytes either way), ``find``, ``np.frombuffer`` and ``re``, which a map supports like bytes.
Payload = bytes | mmap.mmap


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
    # member without coverage (a demographic change); _check_maintenance demands coverage where the
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
    distinct keys are few, so only they are sorted. Exact: codes are combined word by word, no hash
    of the key is trusted.
    """
    import pandas as pd

    rows, width = mat.shape
    padded = -(-width // 8) * 8
    wide = np.zeros((rows, padded), dtype=np.uint8)
    wide[:, :width] = mat
    words = wide.view(np.uint64)
    codes = np.zeros(rows, dtype=np.int64)
    for j in range(words.shape[1]):
        column, _ = pd.factorize(words[:, j])
        combined = codes * (int(column.max()) + 1 if rows else 1) + column
        codes, _ = pd.factorize(combined)
    count = int(codes.max()) + 1 if rows else 0
    first = np.empty(count, dtype=np.int64)
    first[codes[::-1]] = np.arange(rows - 1, -1, -1, dtype=np.int64)  # each key's first row
    keys = np.ascontiguousarray(mat).view(f"S{width}").ravel()
    distinct = keys[first]
    order = np.argsort(distinct, kind="stable")
    rank = np.empty(count, dtype=np.int64)
    rank[order] = np.arange(count, dtype=np.int64)
    inverse: np.ndarray = rank[codes]
    return distinct[order], inverse


def _unique_words(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(keys, return_inverse=True)`` for uint64 keys, hashing the many and sorting the few."""
    import pandas as pd

    codes, distinct = pd.factorize(keys)
    distinct = np.asarray(distinct, dtype=np.uint64)
    order = np.argsort(distinct, kind="stable")
    rank = np.empty(len(distinct), dtype=np.int64)
    rank[order] = np.arange(len(distinct), dtype=np.int64)
    inverse: np.ndarray = rank[np.asarray(codes, dtype=np.int64)]
    return distinct[order], inverse


def _classify(mat: np.ndarray, sep: int) -> tuple[np.ndarray, dict[int, bytes], np.ndarray]:
    """Token char (as its ASCII byte) per segment from its 8-byte key; distinct keys are few, so Python
    sees each once."""
    keys = np.ascontiguousarray(mat[:, :8]).view(np.uint64).ravel()
    uniq, inverse = _unique_words(keys)
    sepb = bytes([sep])
    table = np.empty(len(uniq), dtype=np.uint8)
    ids: dict[int, bytes] = {}
    for i, key_int in enumerate(uniq.tolist()):
        key = int(key_int).to_bytes(8, "little").rstrip(b"\x00")
        parts = key.split(sepb)
        seg_id = parts[0]
        ids[i] = seg_id
        name = seg_id + (parts[1] if seg_id in _QUALIFIED and len(parts) > 1 else b"")
        table[i] = ord(_TOKENS.get(name, "?") if seg_id else "!")
    return table[inverse], ids, inverse


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


def _terminators(data: Payload, terminator: int) -> np.ndarray:
    return np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == terminator)


def find_segment_ends(data: Payload) -> SegmentEnds | None:
    """The offsets of the segment terminator ISA declares (its byte 106), for :func:`check_834` and
    :func:`sample_834` to share; None for a file too short to hold an ISA (neither would use them)."""
    if len(data) < 106:
        return None
    return SegmentEnds(data[105], len(data), _terminators(data, data[105]))


def _ends_of(data: Payload, terminator: int, ends: SegmentEnds | None) -> np.ndarray:
    return _terminators(data, terminator) if ends is None else ends.of(data, terminator)


def check_834(data: Payload, *, delimiters: Delimiters | None = None, require_dmg: bool = True,
              max_problems: int = 100, segment_ends: SegmentEnds | None = None) -> ConformanceReport:
    """Check the whole 834 structurally; ``require_dmg`` demands a DMG for every member.

    ``segment_ends`` (from :func:`find_segment_ends` on the same bytes) saves the scan for terminators;
    it is used only when it holds the terminator this check reads (ISA's, or ``delimiters``').
    """
    problems: list[Problem] = []
    d = _isa(data, delimiters, problems)
    if d is None:
        return ConformanceReport(False, 0, 0, 0, tuple(problems))
    arr = np.frombuffer(data, dtype=np.uint8)
    term, sep = ord(d.segment), ord(d.element)
    ends = _ends_of(data, term, segment_ends)
    skip = len(d.suffix)
    starts = np.concatenate(([0], ends[:-1] + 1 + skip)).astype(np.int64)
    tail = data[int(ends[-1]) + 1:] if len(ends) else data[:]  # bytes: a map has no strip
    if tail.strip(b"\r\n") or (skip and len(ends) > 1 and not np.all(
            arr[np.minimum(ends[:-1] + 1, len(arr) - 1)] == ord(d.suffix[0]))):
        problems.append(_problem(len(ends), "", "", "segment_terminator",
                                 "text after the last terminator, or a terminator without the suffix"))
    if len(arr) and int(arr.max()) > 126:  # a reduction: no mask the size of the file
        first = int(np.flatnonzero(arr > 126)[0])
        problems.append(_problem(int(np.searchsorted(ends, first)) + 1, "", "", "character_set",
                                 "byte outside the ASCII character set"))
    count = len(ends)
    mat = _keys(arr, starts, ends, sep, 8)
    tok, ids, inverse = _classify(mat, sep)
    # One str over the token bytes, not a join of one one-char str per segment.
    seq = tok.tobytes().decode("ascii")

    def seg_name(pos0: int) -> str:
        return ids[int(inverse[pos0])].decode("ascii", "replace")[:3]

    for bad in re.finditer(r"!", seq):
        problems.append(_problem(bad.start() + 1, "", "", "empty_segment", "empty segment"))
        if len(problems) >= max_problems:
            break
    for bad in re.finditer(r"\?", seq):
        if len(problems) >= max_problems:
            break
        problems.append(_problem(bad.start() + 1, seg_name(bad.start()), "", "unexpected_segment",
                                 "segment id or qualifier not used in this 834"))

    def segment(pos0: int) -> list[str]:
        return _elements(data[int(starts[pos0]):int(ends[pos0])], d.element.encode())

    # Code values: distinct fixed-width prefixes are few, so each is parsed once in Python. INS01-05 fit
    # in 18 bytes; HD04 is free text, so HD takes the whole (bounded) segment.
    kinds = {"I": _kind(data, tok, "I", starts, ends, d.element, 18),
             "H": _kind(data, tok, "H", starts, ends, d.element, 96)}
    _check_codes(kinds, problems, max_problems)

    _check_maintenance(tok, kinds, d.element, problems, max_problems)
    _check_separators_in_data(data, arr, starts, ends, d, seg_name, problems, max_problems)

    # Order of required segments.
    header_re, member_re = _grammar(require_dmg)
    if "!" not in seq and "?" not in seq:
        pos = _walk(seq, header_re, member_re)
        if pos is not None:
            at = seq[pos] if pos < len(seq) else ""
            message = ("the member loop starting here lacks a required segment (INS, REF*0F, NM1*IL, "
                       "DMG, HD, DTP*348), repeats one, or has one out of order" if at == "I" else
                       "segment out of order, or a required segment missing before it")
            problems.append(_problem(pos + 1, seg_name(min(pos, len(seq) - 1)), "", "segment_order",
                                     message))

    # Envelope control numbers and counts.
    st_at = [m.start() for m in re.finditer("S", seq)]
    se_at = [m.start() for m in re.finditer("s", seq)]
    gs_at = [m.start() for m in re.finditer("G", seq)]
    ge_at = [m.start() for m in re.finditer("g", seq)]
    iea_at = [m.start() for m in re.finditer("z", seq)]
    isa = segment(0)
    for st, se in zip(st_at, se_at, strict=False):
        st_el, se_el = segment(st), segment(se)
        if len(se_el) < 3 or not se_el[1].isdigit() or int(se_el[1]) != se - st + 1:
            problems.append(_problem(se + 1, "SE", "SE01", "se_count",
                                     f"SE01 does not equal the {se - st + 1} segments from ST to SE"))
        if len(st_el) < 3 or len(se_el) < 3 or st_el[2] != se_el[2]:
            problems.append(_problem(se + 1, "SE", "SE02", "control_number", "SE02 does not equal ST02"))
        if len(st_el) < 4 or st_el[1] != "834" or st_el[3] != "005010X220A1":
            problems.append(_problem(st + 1, "ST", "ST01", "transaction_set",
                                     "ST is not an 834 005010X220A1"))
    if len(st_at) != len(se_at) or not st_at:
        problems.append(_problem(count, "SE", "", "st_se_pairs", "every ST needs one SE"))
    for gs, ge in zip(gs_at, ge_at, strict=False):
        gs_el, ge_el = segment(gs), segment(ge)
        sets = sum(1 for s in st_at if gs < s < ge)
        seen: set[str] = set()
        for st in (s for s in st_at if gs < s < ge):
            st_el = segment(st)
            number = st_el[2] if len(st_el) > 2 else ""
            if number in seen:
                problems.append(_problem(st + 1, "ST", "ST02", "duplicate_control_number",
                                         "ST02 repeats an earlier transaction set's in this group"))
            seen.add(number)
        if len(ge_el) < 3 or ge_el[1] != str(sets):
            problems.append(_problem(ge + 1, "GE", "GE01", "ge_count",
                                     f"GE01 does not equal the {sets} transaction set(s) in the group"))
        if len(gs_el) < 7 or len(ge_el) < 3 or gs_el[6] != ge_el[2]:
            problems.append(_problem(ge + 1, "GE", "GE02", "control_number", "GE02 does not equal GS06"))
        if len(gs_el) < 2 or gs_el[1] != "BE":
            problems.append(_problem(gs + 1, "GS", "GS01", "functional_group", "GS01 is not BE"))
    if len(gs_at) != len(ge_at) or not gs_at:
        problems.append(_problem(count, "GE", "", "gs_ge_pairs", "every GS needs one GE"))
    if len(iea_at) != 1 or iea_at[0] != count - 1:
        problems.append(_problem(count, "IEA", "", "iea_missing", "the file must end with one IEA"))
    else:
        iea = segment(iea_at[0])
        if len(iea) < 3 or iea[1] != str(len(gs_at)):
            problems.append(_problem(count, "IEA", "IEA01", "iea_count",
                                     f"IEA01 does not equal the {len(gs_at)} group(s)"))
        if len(iea) < 3 or iea[2] != isa[13]:
            problems.append(_problem(count, "IEA", "IEA02", "control_number", "IEA02 does not equal ISA13"))

    problems.sort(key=lambda p: p.segment_position)
    members = seq.count("I")
    report = ConformanceReport(ok=not problems, segment_count=count, member_count=members,
                               transaction_sets=len(st_at), problems=tuple(problems[:max_problems]))
    log.info("check_834: %d segments, %d members, %d problem(s)", count, members, len(problems))
    return report


_HEADER_STEPS = tuple(re.compile(p) for p in ("S", "SB", "SBo?", "SBo?a?", "SBo?a?q{0,3}", "SBo?a?q{0,3}P"))


def _whole_file(header_re: re.Pattern[str], member_re: re.Pattern[str]) -> re.Pattern[str]:
    """:func:`_first_misplaced`'s grammar as one regular expression: each header and member atomic and
    the members possessive, so it takes exactly the walk's matches and never backtracks into them."""
    sets = f"(?>{header_re.pattern})(?>{member_re.pattern})*+s"
    return re.compile(f"AG{sets}(?:{sets})*+g(?:G{sets}(?:{sets})*+g)*+z")


def _walk(seq: str, header_re: re.Pattern[str], member_re: re.Pattern[str]) -> int | None:
    """Index of the first segment the grammar cannot place, or None when the whole file parses.

    A file that parses (the usual case) is matched by one regular expression in C, faster than a Python
    loop over the members (benchmarks/README.md); only a file that does not is walked member by member
    to find where.
    """
    if _whole_file(header_re, member_re).fullmatch(seq):
        return None
    return _first_misplaced(seq, header_re, member_re)


def _first_misplaced(seq: str, header_re: re.Pattern[str], member_re: re.Pattern[str]) -> int | None:
    """The walk behind :func:`_walk`: header, members one at a time, SE, and the envelope around them."""
    if not seq.startswith("AG"):
        return 0 if not seq.startswith("A") else 1
    pos = 2
    while True:
        m = header_re.match(seq, pos)
        if m is None:
            # Point at the first header segment that is wrong, not at ST.
            done = max((p.match(seq, pos) for p in _HEADER_STEPS), key=lambda x: x.end() if x else -1)
            return done.end() if done else pos
        pos = m.end()
        while (m := member_re.match(seq, pos)) is not None:
            pos = m.end()
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
        return None if pos == len(seq) - 1 and seq[pos] == "z" else pos


_CODE_RULES: dict[str, list[tuple[int, str, frozenset[str]]]] = {
    "I": [(1, "INS01", values(SubscriberIndicator)), (2, "INS02", values(IndividualRelationship)),
          (3, "INS03", values(MaintenanceType)), (4, "INS04", values(MaintenanceReason)),
          (5, "INS05", values(BenefitStatus))],
    "H": [(1, "HD01", values(MaintenanceType)), (3, "HD03", values(InsuranceLine)),
          (5, "HD05", values(CoverageLevel))],
}


class _Kind(NamedTuple):
    """The segments of one token kind with their leading bytes, each distinct key parsed once."""

    rows: np.ndarray  # segment indexes (0-based positions)
    keys: np.ndarray  # rows x width, as _keys gives them
    parts: list[list[str]]  # each distinct key split into elements
    inverse: np.ndarray  # for each row, the index of its key in parts


def _kind(data: Payload, tok: np.ndarray, kind: str, starts: np.ndarray, ends: np.ndarray, sep: str,
          width: int) -> _Kind:
    """The ``kind`` segments' first ``width`` bytes, cut to the longest such segment: the N x width key
    matrix is the gate's biggest allocation (one row per HD segment). Read once for the code check and
    the maintenance check, which share it."""
    rows = np.flatnonzero(tok == ord(kind))
    if not len(rows):
        return _Kind(rows, np.zeros((0, width), dtype=np.uint8), [], np.zeros(0, dtype=np.int64))
    width = max(1, min(width, int((ends[rows] - starts[rows]).max())))
    keys = _keys(np.frombuffer(data, dtype=np.uint8), starts[rows], ends[rows], 0, width)
    uniq, inverse = _unique_rows(keys)
    return _Kind(rows, keys, [k.decode("ascii", "replace").split(sep) for k in uniq.tolist()], inverse)


def _check_codes(kinds: dict[str, _Kind], problems: list[Problem], max_problems: int) -> None:
    for kind, rules in _CODE_RULES.items():
        rows, _, uniq_parts, inverse = kinds[kind]
        for i, parts in enumerate(uniq_parts):
            for index, ref, allowed in rules:
                value = parts[index] if index < len(parts) else ""
                if value not in allowed:
                    hits = rows[inverse == i][: max(1, max_problems - len(problems))]
                    for row in hits.tolist():
                        problems.append(_problem(row + 1, _NAMES[kind], ref, "invalid_code",
                                                 f"{ref} is missing or not in its code list"))
                    if len(problems) >= max_problems:
                        return


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


def _check_separators_in_data(data: Payload, arr: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                              d: Delimiters, seg_name: Any, problems: list[Problem], max_problems: int) -> None:
    """No component (ISA16) or repetition (ISA11) separator after the ISA except INS06's (the Medicare
    composite): the 834 segments we write have no other composite or repeating element, and X12 has no
    escape, so either one in a name or an address would be read as structure. Reported by segment
    position and element, never by value."""
    # bytes.find, not a mask per separator: a clean file (the usual case) costs two memchr scans and no
    # allocation (two boolean masks the size of the file would be the gate's memory peak).
    found: list[int] = []
    room = max(0, max_problems - len(problems))
    for char in dict.fromkeys((d.component, d.repetition)):
        needle = char.encode("ascii")
        at = data.find(needle, 106)  # the ISA declares both separators itself
        while at >= 0 and len(found) < 2 * room:
            if not (char == d.component and _medicare_composite(data, at, d)):
                found.append(at)
            at = data.find(needle, at + 1)
    if not found:
        return
    hits = np.array(sorted(found), dtype=np.int64)
    seps = np.flatnonzero(arr == ord(d.element))
    for hit in hits[: max(0, max_problems - len(problems))].tolist():
        pos0 = int(np.searchsorted(ends, hit))
        if pos0 >= len(starts):
            break
        start = int(starts[pos0])
        element = int(np.searchsorted(seps, hit) - np.searchsorted(seps, start))
        seg = seg_name(pos0)
        which = "component (ISA16)" if arr[hit] == ord(d.component) else "repetition (ISA11)"
        problems.append(_problem(pos0 + 1, seg, f"{seg}{element:02d}", "delimiter_in_data",
                                 f"a {which} separator inside a data element"))


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


def _element(parts: list[list[str]], inverse: np.ndarray, index: int) -> np.ndarray:
    """Element ``index`` of each row's key (parsed once per distinct key), as str."""
    parsed = [(p[index] if index < len(p) else "") for p in parts]
    return np.asarray(parsed, dtype=object)[inverse] if len(inverse) else np.asarray([], dtype=object)


def _check_maintenance(tok: np.ndarray, kinds: dict[str, _Kind], sep: str, problems: list[Problem],
                       max_problems: int) -> None:
    """INS03 against its HD01s: which coverage maintenance each member type allows, coverage required
    for adds, terms, reinstatements and audit members, and DTP*349 (benefit end) on every HD*024."""
    ins, hd = kinds["I"], kinds["H"]
    ins_rows, hd_rows = ins.rows, hd.rows
    if not len(ins_rows):
        return
    # INS03 from the INS keys (18 bytes or the longest INS: the same keys once NUL-padded); HD01 from
    # the HD keys' first 8 bytes (the wider key would read past an HD01 of 6+ bytes).
    ins03 = _element(ins.parts, ins.inverse, 3)
    hd8, hd8_inverse = _unique_rows(hd.keys[:, :8])
    hd01 = _element([k.decode("ascii", "replace").split(sep) for k in hd8.tolist()], hd8_inverse, 1)
    owner = np.searchsorted(ins_rows, hd_rows, side="right") - 1  # member index of each HD
    valid_hd = owner >= 0
    # DTP*349 follows HD and DTP*348 (grammar Hbe?), so it sits two segments after its HD.
    after = np.minimum(hd_rows + 2, len(tok) - 1)
    has_end = (hd_rows + 2 < len(tok)) & (tok[after] == ord("e"))
    for pos in hd_rows[(hd01 == _TERM) & ~has_end].tolist():
        if len(problems) >= max_problems:
            return
        problems.append(_problem(pos + 1, "HD", "HD01", "term_without_end_date",
                                 "HD01 024 (cancellation) needs a DTP*349 benefit end date"))
    counts = np.bincount(owner[valid_hd], minlength=len(ins_rows))
    for code, (allowed, needs_coverage) in _HD_FOR_INS.items():
        members = ins03 == code
        if not members.any():
            continue
        if needs_coverage:
            for pos in ins_rows[members & (counts == 0)].tolist():
                if len(problems) >= max_problems:
                    return
                problems.append(_problem(pos + 1, "INS", "INS03", "coverage_missing",
                                         f"INS03 {code} needs at least one Loop 2300 (HD)"))
        bad = valid_hd & members[np.maximum(owner, 0)] & ~np.isin(hd01, list(allowed))
        for pos in hd_rows[bad].tolist():
            if len(problems) >= max_problems:
                return
            problems.append(_problem(pos + 1, "HD", "HD01", "maintenance_mismatch",
                                     f"HD01 does not fit the member's INS03 {code}"))
