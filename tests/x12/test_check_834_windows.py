"""The structural check reads the 834 in windows and gives the whole-file check's report, finding for
finding: on every golden file, on generated files of 1k-100k members, and on a corpus of broken files
with a finding of every kind, at window sizes from one segment up, so that windows end inside members,
sets and groups. The oracle is the check as it was before windows (``check_834_reference``, a copy kept
under tests/). Its memory is a function of the window, not of the file."""

from __future__ import annotations

import functools
import re
import tracemalloc
from collections.abc import Callable

import check_834_reference as reference
import numpy as np
import pytest
import x12_helpers as h
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carrierfeeds.x12.check import (
    CHECK_WINDOW_BYTES,
    ConformanceReport,
    _grammar,
    _OrderWalk,
    _Scan,
    _significant,
    check_834,
    find_segment_ends,
)
from carrierfeeds.x12.envelope import Delimiters

#: Every rule the structural check reports; the broken corpus below must hold each one.
EVERY_RULE = frozenset({
    "isa_missing", "isa_length", "isa_delimiters", "segment_terminator", "character_set", "empty_segment",
    "unexpected_segment", "invalid_code", "term_without_end_date", "coverage_missing", "maintenance_mismatch",
    "delimiter_in_data", "segment_order", "se_count", "control_number", "transaction_set", "st_se_pairs",
    "duplicate_control_number", "ge_count", "functional_group", "gs_ge_pairs", "iea_missing", "iea_count",
})


def _outcome(call: Callable[[], ConformanceReport]) -> object:
    try:
        return call()
    except (ValueError, IndexError) as error:  # the reference's own failures on a file too broken to read
        return type(error)


def _same(data: bytes, windows: tuple[int, ...], **kwargs: object) -> ConformanceReport:
    """The windowed check's report at each window size equals the whole-file check's; returns it."""
    want = _outcome(lambda: reference.check_834(data, **kwargs))  # type: ignore[arg-type]
    for window in windows:
        got = _outcome(lambda w=window: check_834(data, window_bytes=w, **kwargs))  # type: ignore[misc,arg-type]
        assert got == want, f"window {window}: {got} != {want}"
    return want  # type: ignore[return-value]


@functools.cache
def generated(members: int, cap: int | None = None) -> bytes:
    """The demo feed's 834 for the project's synthetic census of ``members`` (``cap`` members a set)."""
    from carrierfeeds.census.generate import generate_census
    from carrierfeeds.x12.render import render_834_bytes

    frame = generate_census(members, 1, as_of=h.AS_OF)
    frame["row_number"] = range(2, len(frame) + 2)
    m = h.validated(max_members_per_transaction=cap) if cap else h.mapping()
    return render_834_bytes(h.enrollment(frame, m), h.header(m), h.CONTROL)


# -- golden and generated files ---------------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted(h.FIXTURES.glob("*.834")), ids=lambda p: p.name)
def test_every_golden_834_gives_the_whole_file_report_at_any_window(path: object) -> None:
    data = path.read_bytes()  # type: ignore[attr-defined]
    windows = (1, 2, 13, 97, 1024, CHECK_WINDOW_BYTES)
    assert _same(data, windows).ok
    _same(data, windows, require_dmg=False)
    _same(data, (1, 13), max_problems=0)


@pytest.mark.parametrize(("members", "cap", "windows"), [
    (1_000, None, (211, 4093, 1 << 16, CHECK_WINDOW_BYTES)),
    (1_000, 97, (211, 4093, CHECK_WINDOW_BYTES)),
    (10_000, None, (4093, 1 << 16, CHECK_WINDOW_BYTES)),
    pytest.param(100_000, None, (1 << 16, 1 << 20, CHECK_WINDOW_BYTES), marks=pytest.mark.slow),
])
def test_generated_834s_give_the_whole_file_report(members: int, cap: int | None, windows: tuple[int, ...]) -> None:
    data = generated(members, cap)
    report = _same(data, windows)
    assert report.ok and report.member_count == members
    # The terminator scan the gate shares gives the same windows' report as the check's own scan.
    assert check_834(data, segment_ends=find_segment_ends(data), window_bytes=4093) == report


# -- a corpus of broken files -----------------------------------------------------------------------------

def _nth(data: bytes, pattern: bytes, fraction: float) -> re.Match[bytes]:
    """The match of ``pattern`` about ``fraction`` of the way through the file (deep inside a window run)."""
    found = list(re.finditer(pattern, data, flags=re.M))
    assert found, pattern
    return found[min(len(found) - 1, int(len(found) * fraction))]


def _replace_at(data: bytes, match: re.Match[bytes], new: bytes) -> bytes:
    return data[:match.start()] + new + data[match.end():]


def _edit(data: bytes, pattern: bytes, fraction: float, new: Callable[[re.Match[bytes]], bytes]) -> bytes:
    found = _nth(data, pattern, fraction)
    return _replace_at(data, found, new(found))


def _member_without_coverage(data: bytes) -> bytes:
    """A member's Loop 2300s (HD and its dates) removed: an INS03 030 member without coverage."""
    starts = [m.start() for m in re.finditer(rb"^INS\*", data, flags=re.M)]
    lo, hi = starts[len(starts) * 3 // 5], starts[len(starts) * 3 // 5 + 1]
    kept = [line for line in data[lo:hi].split(b"\n") if not line.startswith((b"HD*", b"DTP*348", b"DTP*349"))]
    return data[:lo] + b"\n".join(kept) + data[hi:]


def _duplicate_st02(data: bytes) -> bytes:
    """A late set's ST02 (and SE02) repeats the first set's, in the same group."""
    st = _nth(data, rb"^ST\*834\*(\d+)\*", 0.7)
    number = st.group(1)
    first = re.search(rb"^ST\*834\*(\d+)\*", data, flags=re.M)
    assert first is not None
    se = re.compile(rb"^SE\*(\d+)\*" + number + rb"~", re.M).search(data, st.end())
    assert se is not None
    data = data[:se.start()] + se.group(0).replace(number, first.group(1)) + data[se.end():]
    return data[:st.start()] + st.group(0).replace(number, first.group(1)) + data[st.end():]


_BROKEN: dict[str, Callable[[bytes], bytes]] = {
    "se_count": lambda d: _replace_at(d, _nth(d, rb"^SE\*\d+", 0.8), b"SE*7"),
    "se02": lambda d: _edit(d, rb"^SE\*\d+\*\d+", 0.5, lambda m: m.group(0)[:-1] + b"9"),
    "transaction_set": lambda d: _replace_at(d, _nth(d, rb"^ST\*834", 0.6), b"ST*835"),
    "duplicate_st02": _duplicate_st02,
    "set_without_se": lambda d: _replace_at(d, _nth(d, rb"^SE\*.*\n", 0.5), b""),
    "ge_count": lambda d: d.replace(b"\nGE*", b"\nGE*9", 1),
    "ge02_and_gs01": lambda d: d.replace(b"\nGE*", b"\nGS*BE*X~\nGE*", 1).replace(b"GS*BE*", b"GS*XX*", 1),
    "group_without_ge": lambda d: re.sub(rb"\nGE\*[^~]*~", b"", d, count=1),
    "iea": lambda d: d.replace(b"\nIEA*1*", b"\nIEA*2*").replace(b"000000042~\n", b"000000043~\n"),
    "iea_missing": lambda d: re.sub(rb"\nIEA\*[^~]*~\n", b"\n", d),
    "two_ieas": lambda d: d + re.search(rb"IEA\*[^~]*~\n", d).group(0),  # type: ignore[union-attr]
    "invalid_codes_everywhere": lambda d: d.replace(b"INS*Y*18*030", b"INS*Y*18*777").replace(b"HD*030**",
                                                                                              b"HD*030**XX"),
    "invalid_code_once": lambda d: _replace_at(d, _nth(d, rb"^INS\*N\*\d\d\*030", 0.9), b"INS*N*99*030"),
    "hd024_without_end": lambda d: _replace_at(d, _nth(d, rb"^HD\*030", 0.55), b"HD*024"),
    "hd024_last_in_window": lambda d: _replace_at(d, _nth(d, rb"^HD\*030", 0.999), b"HD*024"),
    "member_without_coverage": _member_without_coverage,
    "separator_in_a_street": lambda d: _replace_at(d, _nth(d, rb"^N3\*\d+ ", 0.65), b"N3*1:2^ "),
    "separators_everywhere": lambda d: d.replace(b"\nN4*", b"\nN4*:"),
    "empty_segment": lambda d: _replace_at(d, _nth(d, rb"^DMG\*", 0.4), b"~\nDMG*"),
    "unexpected_segment": lambda d: _replace_at(d, _nth(d, rb"^DMG\*", 0.4), b"ZZZ*1~\nDMG*"),
    "missing_dmg": lambda d: _replace_at(d, _nth(d, rb"^DMG\*[^~]*~\n", 0.75), b""),
    "out_of_order": lambda d: _edit(d, rb"^(N3\*[^~]*~\n)(N4\*[^~]*~\n)", 0.3, lambda m: m.group(2) + m.group(1)),
    "non_ascii": lambda d: _replace_at(d, _nth(d, rb"^NM1\*IL\*1\*", 0.85), b"NM1*IL*1*\xc3\xa9"),
    "no_suffix": lambda d: _replace_at(d, _nth(d, rb"~\n(?=N4)", 0.45), b"~"),
    "trailing_text": lambda d: d + b"TRAILING",
    # Cut after a Medicare plan code and its component separator, as INS06's composite starts: the
    # separator is the file's last byte (this once raised IndexError instead of reporting).
    "ends_in_a_composite_separator": lambda d: d[:_nth(d, rb"^INS\*N\*", 0.5).start()] + b"INS*N*19*030*XN*A:",
    "isa_missing": lambda d: d[:50],
    "isa_length": lambda d: b"ISA*00" + d[3:],
    "isa_delimiters": lambda d: d[:104] + b"\xff" + d[105:],
    "everything": lambda d: _BROKEN["separators_everywhere"](_BROKEN["invalid_codes_everywhere"](
        _BROKEN["empty_segment"](_BROKEN["hd024_without_end"](_BROKEN["se_count"](d))))),
}


#: Damage that needs several transaction sets: only on the file split into sets of 13 members.
_SPLIT_ONLY = {"duplicate_st02"}


@pytest.mark.parametrize(("name", "cap"), [(name, cap) for name in sorted(_BROKEN) for cap in (None, 13)
                                           if cap or name not in _SPLIT_ONLY])
def test_broken_files_give_the_whole_file_report(name: str, cap: int | None) -> None:
    data = _BROKEN[name](generated(120, cap))
    windows = (53, 997, 1 << 16, CHECK_WINDOW_BYTES)
    report = _same(data, windows)
    assert isinstance(report, ConformanceReport) and not report.ok
    _same(data, (211,), max_problems=3)
    _same(data, (997,), require_dmg=False, max_problems=1)


def test_the_broken_corpus_holds_every_rule_and_more_than_a_page_of_problems() -> None:
    seen: set[str] = set()
    for name, breaker in _BROKEN.items():
        for cap in (None, 13) if name not in _SPLIT_ONLY else (13,):
            report = reference.check_834(breaker(generated(120, cap)))
            seen |= {p.code for p in report.problems}
            if name == "everything":
                assert len(report.problems) == 100  # capped: which 100 survive is part of the oracle
    assert seen == EVERY_RULE


# -- any damage, with windows of a segment or a few -----------------------------------------------------

_CHUNKS = [b"~", b"\n", b"\r", b"*", b":", b"^", b"A", b"9", b"\xe9", b"", b"I", b"HD*024", b"INS*Y*18*030",
           b"ST*834*0001", b"GS*", b"GE*1*42~", b"SE*", b"IEA*1*", b"~\n~", b"DTP*349*D8*20261231~"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.integers(0, 4_000), st.sampled_from(["insert", "delete", "replace"]),
                                st.sampled_from(_CHUNKS)), max_size=5),
       base=st.sampled_from(["plain", "crlf", "split", "bare"]), window=st.integers(1, 300),
       require_dmg=st.booleans(), max_problems=st.sampled_from([0, 1, 3, 100]))
def test_damaged_files_give_the_whole_file_report_at_tiny_windows(
        edits: list[tuple[int, str, bytes]], base: str, window: int, require_dmg: bool, max_problems: int) -> None:
    source = {"plain": h.family_file(), "crlf": h.family_file(h.CRLF), "split": h.family_file(cap=4),
              "bare": h.family_file(Delimiters(suffix=""))}[base]
    data = h.damaged(source, edits)
    _same(data, (1, window), require_dmg=require_dmg, max_problems=max_problems)


# -- the parts that carry state -------------------------------------------------------------------------

_WALK_ALPHABET = "AGSBoPYIFlcfxmhjkNp34DHbesgz"


@pytest.mark.parametrize("require_dmg", [True, False])
@settings(max_examples=400, deadline=None)
@given(seq=st.text(alphabet=_WALK_ALPHABET, min_size=1, max_size=60), cuts=st.lists(st.integers(1, 60), max_size=8),
       good=st.booleans())
def test_the_walk_over_windows_finds_what_the_whole_file_walk_finds(seq: str, cuts: list[int], good: bool,
                                                                     require_dmg: bool) -> None:
    if good:
        seq = "AGSBPY" + "IFNDHb" * (len(seq) % 5) + "sSBoPYIFN34DHbeHb" + "sgGSBPYs" * (len(cuts) % 2) + "gz"
    header_re, member_re = _grammar(require_dmg)
    want = reference._walk(seq, header_re, member_re)
    walk = _OrderWalk(header_re, member_re)
    keys = np.arange(len(seq), dtype=np.int64)
    bounds = sorted({c for c in cuts if c < len(seq)})
    for lo, hi in zip([0, *bounds], [*bounds, len(seq)], strict=True):
        walk.feed(seq[lo:hi], keys[lo:hi], lo, final=False)
    walk.feed("", keys[:0], len(seq), final=True)
    assert (None if walk.error is None else walk.error[0]) == want
    if walk.error is not None:
        pos, token, key = walk.error
        assert token == (seq[pos] if pos < len(seq) else "") and key == min(pos, len(seq) - 1)


_KEY_BYTES = [*b"*~:ISADTPREFHNM1QTY0F34830", 0, 0xE9]


@settings(max_examples=500, deadline=None)
@given(key=st.lists(st.sampled_from(_KEY_BYTES), max_size=8), sep=st.sampled_from([b"*", b"|", b"{"]))
def test_a_key_cut_to_its_id_and_qualifier_classifies_as_the_whole_key(key: list[int], sep: bytes) -> None:
    word = np.frombuffer(bytes(key).ljust(8, b"\0"), dtype=np.uint64)
    scan = _Scan(h.family_file(), Delimiters(element=sep.decode()), True, 100)
    assert scan._key(int(_significant(word, sep[0])[0])) == scan._key(int(word[0]))


def test_the_checks_memory_is_a_function_of_the_window_not_of_the_file() -> None:
    peaks = []
    for members in (5_000, 20_000):
        data = generated(members)
        check_834(data, window_bytes=1 << 16)  # imports and caches outside the measurement
        tracemalloc.start()
        try:
            check_834(data, window_bytes=1 << 16)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    # Four times the file, not four times the memory (the whole-file check's peak grew with it).
    assert peaks[1] < 1.25 * peaks[0] + (64 << 10), peaks
    assert peaks[1] < 4 << 20, peaks


def test_windows_are_cut_after_a_terminator_and_cover_every_segment() -> None:
    data = generated(300)
    ends = find_segment_ends(data)
    assert ends is not None
    from carrierfeeds.x12.check import _windows

    for window in (1, 53, 4093):
        got = list(_windows(data, np.frombuffer(data, dtype=np.uint8), ord("~"), window, None))
        assert np.array_equal(np.concatenate(got), ends.offsets)
        assert all(len(w) for w in got)
        assert len(got) >= len(data) // max(window, 240)
        shared = list(_windows(data, np.frombuffer(data, dtype=np.uint8), ord("~"), window, ends))
        assert [w.tolist() for w in shared] == [w.tolist() for w in got]



def test_pages_are_dropped_only_from_a_read_only_map_and_read_back_the_same(tmp_path: object) -> None:
    import mmap
    from pathlib import Path

    from carrierfeeds.files import read_mapped
    from carrierfeeds.x12.check import release_pages

    data = generated(300, 13)
    path = Path(str(tmp_path)) / "file.834"
    path.write_bytes(data)
    want = reference.check_834(data)
    with read_mapped(path) as mapped:
        release_pages(mapped)(len(mapped))
        assert check_834(mapped, window_bytes=4093) == want  # its windows drop pages behind them too
        assert mapped[:] == data
    # A writable map's pages would be lost (an anonymous one reads back as zeros): never dropped.
    writable = mmap.mmap(-1, len(data))
    try:
        writable.write(data)
        release_pages(writable)(len(data))
        assert writable[:] == data
    finally:
        writable.close()
