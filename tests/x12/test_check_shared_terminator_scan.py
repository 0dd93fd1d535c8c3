"""One terminator scan shared by the structural check and the sample (``segment_ends``) gives exactly what
each gives scanning for itself: on good files, split sets and CRLF, on any byte-level damage (problems,
counts, samples and errors alike), and a scan of other bytes or of another terminator is not used."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import x12_helpers as h
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carrierfeeds.x12.check import SegmentEnds, check_834, find_segment_ends, sample_834
from carrierfeeds.x12.envelope import Delimiters

_CRLF = h.CRLF
_file = h.family_file


def _outcomes(data: bytes, ends: SegmentEnds | None, delimiters: Delimiters | None = None) -> list[object]:
    out: list[object] = []
    for call in (lambda: check_834(data, delimiters=delimiters, segment_ends=ends),
                 lambda: check_834(data, delimiters=delimiters, require_dmg=False, segment_ends=ends),
                 lambda: sample_834(data, max_members=1, segment_ends=ends),
                 lambda: sample_834(data, max_members=2, segment_ends=ends)):
        try:
            out.append(call())
        except (ValueError, IndexError) as error:
            out.append((type(error), str(error)))
    return out


@pytest.mark.parametrize(("delimiters", "cap"), [(Delimiters(), None), (Delimiters(suffix=""), None),
                                                 (_CRLF, None), (Delimiters(), 4)])
def test_shared_scan_gives_each_own_scans_result(delimiters: Delimiters, cap: int | None) -> None:
    data = _file(delimiters, cap)
    ends = find_segment_ends(data)
    assert ends is not None and ends.terminator == ord("~") and ends.size == len(data)
    assert _outcomes(data, ends) == _outcomes(data, None)
    assert _outcomes(data, ends, delimiters) == _outcomes(data, None, delimiters)
    assert sample_834(data, max_members=1, segment_ends=ends)[1]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.integers(0, 2_000), st.sampled_from(["insert", "delete", "replace"]),
                                st.sampled_from([b"~", b"\n", b"\r", b"*", b":", b"A", b"9", b"\xe9", b""])),
                      max_size=4),
       crlf=st.booleans())
def test_shared_scan_gives_each_own_scans_result_on_damaged_files(edits: list[tuple[int, str, bytes]],
                                                                  crlf: bool) -> None:
    data = h.damaged(_file(_CRLF if crlf else Delimiters()), edits)
    ends = find_segment_ends(data)
    assert _outcomes(data, ends) == _outcomes(data, None)
    assert _outcomes(data, ends, Delimiters()) == _outcomes(data, None, Delimiters())


def test_a_scan_of_other_bytes_or_for_another_terminator_is_not_used() -> None:
    data = _file()
    ends = find_segment_ends(data)
    assert ends is not None
    other = find_segment_ends(_file(cap=4))
    assert other is not None and other.size != len(data)
    tilde_as_other = dataclasses.replace(ends, terminator=ord("!"), offsets=np.empty(0, dtype=np.int64))
    for stale in (other, tilde_as_other):
        assert _outcomes(data, stale) == _outcomes(data, None)
    # Delimiters given to the check whose terminator is not ISA's: it scans for its own.
    hash_ended = Delimiters(segment="#")
    assert check_834(data, delimiters=hash_ended, segment_ends=ends) == check_834(data, delimiters=hash_ended)


def test_a_file_too_short_for_an_isa_has_no_scan() -> None:
    assert find_segment_ends(b"ISA*00~") is None
    assert _outcomes(b"ISA*00~", None) == _outcomes(b"ISA*00~", find_segment_ends(b"ISA*00~"))
