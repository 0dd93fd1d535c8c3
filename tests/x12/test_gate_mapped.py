"""The gate reads the 834 through a read-only memory map (files.read_mapped): the terminator scan, the
sample and the structural check give exactly what they give on bytes, on good files and on any
byte-level damage; and the map is closed when the block ends, without hiding an exception."""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import x12_helpers as h
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carrierfeeds.files import read_mapped
from carrierfeeds.x12.check import ConformanceReport, Payload, check_834, find_segment_ends, sample_834
from carrierfeeds.x12.envelope import Delimiters

_CRLF = h.CRLF
_file = h.family_file


def _plain(value: object) -> object:
    """A sample that came back whole is the input itself (a map, given one): compared by its bytes."""
    return value[:] if isinstance(value, mmap.mmap) else value


def _outcomes(data: Payload, delimiters: Delimiters | None = None) -> list[object]:
    """Everything the gate computes from the file: the scan, both checks, samples and their errors."""
    ends = find_segment_ends(data)
    out: list[object] = [None if ends is None else (ends.terminator, ends.size, ends.offsets.tolist())]
    for call in (lambda: check_834(data, delimiters=delimiters, segment_ends=ends),
                 lambda: check_834(data, delimiters=delimiters),
                 lambda: check_834(data, delimiters=delimiters, require_dmg=False, segment_ends=ends),
                 lambda: check_834(data, max_problems=3, segment_ends=ends),
                 lambda: sample_834(data, max_members=1, segment_ends=ends),
                 lambda: sample_834(data, max_members=2),
                 lambda: sample_834(data, max_members=10_000, segment_ends=ends)):
        try:
            result = call()
            out.append(tuple(_plain(v) for v in result) if isinstance(result, tuple) else result)
        except (ValueError, IndexError) as error:
            out.append((type(error), str(error)))
    return out


@contextmanager
def _mapped(tmp_path: Path, data: bytes) -> Iterator[Payload]:
    path = tmp_path / "payload.834"
    path.write_bytes(data)
    with read_mapped(path) as view:
        yield view


@pytest.mark.parametrize(("delimiters", "cap"), [(Delimiters(), None), (Delimiters(suffix=""), None),
                                                 (_CRLF, None), (Delimiters(), 4)])
def test_a_map_gives_the_reports_bytes_give(tmp_path: Path, delimiters: Delimiters, cap: int | None) -> None:
    data = _file(delimiters, cap)
    with _mapped(tmp_path, data) as view:
        assert isinstance(view, mmap.mmap)
        mapped = _outcomes(view, delimiters)
    assert mapped == _outcomes(data, delimiters)
    report, cut = mapped[1], mapped[5]
    assert isinstance(report, ConformanceReport) and report.ok  # a sound file
    assert isinstance(cut, tuple) and cut[1]  # and one the sample cuts


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, 2_000), st.sampled_from(["insert", "delete", "replace"]),
                                st.sampled_from([b"~", b"\n", b"\r", b"*", b":", b"^", b"A", b"9", b"\xe9",
                                                 b"SE*", b"INS*Y*", b""])),
                      max_size=4),
       crlf=st.booleans(), cut=st.one_of(st.none(), st.integers(0, 3_000)))
def test_a_map_gives_the_reports_bytes_give_on_damaged_files(tmp_path: Path, edits: list[tuple[int, str, bytes]],
                                                             crlf: bool, cut: int | None) -> None:
    data = h.damaged(_file(_CRLF if crlf else Delimiters()), edits)
    if cut is not None:
        data = data[:cut]  # a truncated file: no IEA, perhaps no whole ISA
    with _mapped(tmp_path, data) as view:
        mapped = _outcomes(view) + _outcomes(view, Delimiters())
    assert mapped == _outcomes(data) + _outcomes(data, Delimiters())


def test_a_missing_terminator_after_the_last_segment_is_the_same_error_on_a_map(tmp_path: Path) -> None:
    """The sample looks for SE's terminator with find on a map (a map has no index): the same ValueError."""
    data = _file()
    se = data.rindex(b"SE*")
    broken = data[:se] + data[se:].replace(b"~", b"")
    with _mapped(tmp_path, broken) as view:
        mapped = _outcomes(view)
    assert mapped == _outcomes(broken)


def test_an_empty_file_reads_as_empty_bytes(tmp_path: Path) -> None:
    path = tmp_path / "empty.834"
    path.write_bytes(b"")
    with read_mapped(path) as view:
        assert view == b""
        assert not check_834(view).ok


def test_the_map_is_closed_when_the_block_ends(tmp_path: Path) -> None:
    path = tmp_path / "payload.834"
    path.write_bytes(_file())
    with read_mapped(path) as view:
        assert isinstance(view, mmap.mmap)
        assert check_834(view).ok  # the check's arrays over the map are gone when it returns
    assert view.closed


def test_an_array_still_over_the_map_at_the_end_is_a_bug_raised(tmp_path: Path) -> None:
    path = tmp_path / "payload.834"
    path.write_bytes(_file())
    with pytest.raises(BufferError), read_mapped(path) as view:
        held = np.frombuffer(view, dtype=np.uint8)
    del held
    assert isinstance(view, mmap.mmap)
    view.close()


def test_an_exception_with_an_array_over_the_map_is_not_hidden(tmp_path: Path) -> None:
    """An exception's traceback may hold the check's arrays over the map: the map then cannot close, and
    the stage's own error must still be the one raised."""
    path = tmp_path / "payload.834"
    path.write_bytes(_file())
    with pytest.raises(RuntimeError, match="the check's own error"), read_mapped(path) as view:
        held = np.frombuffer(view, dtype=np.uint8)
        raise RuntimeError("the check's own error")
    assert isinstance(view, mmap.mmap) and not view.closed
    del held
    view.close()
    assert view.closed


def test_an_exception_without_a_view_closes_the_map(tmp_path: Path) -> None:
    path = tmp_path / "payload.834"
    path.write_bytes(_file())
    with pytest.raises(RuntimeError), read_mapped(path) as view:
        raise RuntimeError("refused")
    assert isinstance(view, mmap.mmap) and view.closed
