"""The chunk writer's byte checks (one Arrow look-up per column, the exact checks only when a column fails
it) refuse and accept what the definitions say: a delimiter in any cell of a chunk names that chunk's
first such column, written or not; otherwise the file is the per-row reference writer's, or refused
under ``character_set`` exactly when the reference writer refuses it; delimiters inside the character
set, non-ASCII and control characters, in written and in unwritten cells; and the look-up itself
(:func:`~carrierfeeds.x12.sanitize.bytes_outside`) equals a translate over the values."""

from __future__ import annotations

import dataclasses
import functools

import pyarrow as pa
import pytest
import x12_helpers as h
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carrierfeeds.enrollment import Enrollment
from carrierfeeds.errors import ConformanceFailed
from carrierfeeds.x12.envelope import Delimiters
from carrierfeeds.x12.render import _TEXT_COLUMNS, render_834, render_834_naive
from carrierfeeds.x12.sanitize import bytes_outside

#: Cells that do not decide the file's structure (member starts, families, Loop 2300).
CELLS = ("employment_status", "last_name", "first_name", "middle_initial", "ssn", "dob", "gender", "address1",
         "address2", "city", "state", "zip", "hd04", "hd05", "coverage_end")
#: Cells the two writers agree on when empty (an empty last element is written by the chunk writer
#: only where the view never has one: gender, hd05, first_name).
MAY_BE_EMPTY = ("employment_status", "middle_initial", "ssn", "dob", "address1", "address2", "city", "state",
                "zip", "coverage_end")
#: Basic and extended characters, every default and custom delimiter, CR, LF, tab, non-ASCII.
ALPHABET = "AZ09 !\"&'()+,-./;?=az%@#$_[]*:^~|>{\r\n\t\x00\x7féŁ漢\U0001f600"
_DELIMITERS = [Delimiters(), Delimiters(element="|", component=">", repetition="{", segment="~", suffix="\r\n"),
               # Every separator is in the basic character set: only the exact checks can tell.
               Delimiters(element="!", component="&", repetition="(", segment="?", suffix="")]


@functools.cache
def _family() -> Enrollment:
    return h.enrollment()


def _enrollment() -> Enrollment:
    """The family file's view, a copy each test may write to (built once: building is most of the time)."""
    base = _family()
    return dataclasses.replace(base, table=base.table.copy())


def _expected(enrollment: Enrollment, delimiters: Delimiters) -> tuple[str, object]:
    """("bytes", the file) or ("delimiter", the first column holding one) or ("charset", None)."""
    table = enrollment.table
    for column in _TEXT_COLUMNS:
        if column in table.columns and any(ch in value for value in table[column].fillna("")
                                           for ch in delimiters.reserved):
            return "delimiter", column
    try:
        return "bytes", render_834_naive(enrollment, h.header(), h.CONTROL, delimiters)
    except ConformanceFailed as failed:
        assert failed.details["rule"] == "character_set"
        return "charset", None


def _outcome(enrollment: Enrollment, delimiters: Delimiters, chunk: int, workers: int) -> tuple[str, object]:
    try:
        return "bytes", b"".join(render_834(enrollment, h.header(), h.CONTROL, delimiters, chunk_members=chunk,
                                            workers=workers))
    except ConformanceFailed as failed:
        if "column" in failed.details:
            return "delimiter", failed.details["column"]
        assert failed.details == {"rule": "character_set", "charset": "basic"}
        return "charset", None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cells=st.lists(st.tuples(st.integers(0, 9), st.sampled_from(CELLS), st.text(ALPHABET, max_size=4)),
                      max_size=4),
       delimiters=st.sampled_from(_DELIMITERS), workers=st.sampled_from([1, 2]))
def test_checks_decide_as_the_definitions(cells: list[tuple[int, str, str]], delimiters: Delimiters,
                                          workers: int) -> None:
    enrollment = _enrollment()
    for row, column, value in cells:
        enrollment.table.loc[row, column] = value if value or column in MAY_BE_EMPTY else "A"
    # One chunk: the delimiter error names the file's first column holding one.
    assert _outcome(enrollment, delimiters, 50_000, workers) == _expected(enrollment, delimiters)
    # Chunk by chunk (column arrays sliced at an offset): the same, but for a delimiter, which a chunk
    # before the one holding it may pre-empt with a character-set refusal.
    kind, _ = _expected(enrollment, delimiters)
    if kind != "delimiter":
        assert _outcome(enrollment, delimiters, 1, workers) == _expected(enrollment, delimiters)


@pytest.mark.parametrize(("column", "value", "kind"), [
    ("address2", "Ł", "bytes"),  # not written: no address1 on that row
    ("address2", "*", "delimiter"),  # not written, but a delimiter anywhere is refused
    ("last_name", "é", "charset"),
    ("last_name", "!", "bytes"),  # in the basic set and no delimiter of the defaults
    ("city", "\x00", "bytes"),  # not written either (N4 goes with N3)
    ("first_name", "\x00", "charset"),
])
def test_unwritten_cells_are_refused_only_for_delimiters(column: str, value: str, kind: str) -> None:
    enrollment = _enrollment()
    enrollment.table.loc[0, "address1"] = ""
    enrollment.table.loc[0, column] = value
    assert _outcome(enrollment, Delimiters(), 50_000, 1)[0] == kind == _expected(enrollment, Delimiters())[0]


def test_custom_delimiter_inside_the_character_set_is_refused_by_column() -> None:
    enrollment = _enrollment()
    enrollment.table.loc[3, "city"] = "WHAT?"
    assert _outcome(enrollment, _DELIMITERS[2], 50_000, 1) == ("delimiter", "city")
    assert _outcome(enrollment, Delimiters(), 50_000, 1)[0] == "bytes"


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.text(ALPHABET, max_size=5), max_size=12), cut=st.tuples(st.integers(0, 12),
                                                                                   st.integers(0, 12)),
       allowed=st.sets(st.sampled_from(ALPHABET[:40])))
def test_bytes_outside_equals_a_translate_over_the_values(values: list[str], cut: tuple[int, int],
                                                          allowed: set[str]) -> None:
    lo, hi = sorted(cut)
    arr = pa.array(values, pa.large_string()).slice(lo, hi - lo)
    table = "".join(sorted(allowed)).encode("ascii")
    want = bool("".join(values[lo:hi]).encode("utf-8").translate(None, table))
    assert bytes_outside(arr, table) == want
