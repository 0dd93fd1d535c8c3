"""Columns encoded ahead of the rules, on one thread or several, give the report the rules alone give.

:meth:`carrierfeeds.validation.columns.EncodedColumns.encode` factorises the columns the suite and the cross-row rules
read on a small thread pool before they run. These tests hold it to the lazy encoding each rule does
on first use: the same text, codes, distinct values and joint codes per column (hypothesis, on Arrow
text in chunks, Python text and object columns with gaps), the same report from ``validate_census``
whatever the thread count, and the same error, raised where it was, when a column cannot be encoded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.validation.test_masks_match_great_expectations import SCHEMA, SUITE, _dirty, _family_mess
from tests.validation.test_shared_codes_match_pandas import DAY, TEXT, TOKENIZER, _arrow_text, _chunked, _with_gaps

from carrierfeeds.errors import ConfigError
from carrierfeeds.threads import in_order_outcomes, thread_count
from carrierfeeds.validation import validate_census
from carrierfeeds.validation.columns import EncodedColumns


def _column(values: list[str | None], kind: str, chunk: int) -> pd.Series:
    if kind == "arrow":
        text = [v or "" for v in values]
        return _arrow_text([text[i:i + chunk] for i in range(0, len(text), chunk)] or [[]])
    if kind == "python":
        return pd.Series([v or "" for v in values], dtype=pd.StringDtype("python", na_value=np.nan))
    return pd.Series(values, dtype=object)  # gaps (None) as a caller's own frame may have them


def _same(ahead: EncodedColumns, lazy: EncodedColumns, name: str) -> None:
    a, b = ahead.coded(name), lazy.coded(name)
    assert a.codes.tolist() == b.codes.tolist() and a.codes.dtype == b.codes.dtype
    assert a.uniques.tolist() == b.uniques.tolist() and a.uniques.dtype == b.uniques.dtype
    assert a.blank == b.blank
    assert ahead.text(name).tolist() == lazy.text(name).tolist()
    assert ahead.blank(name).tolist() == lazy.blank(name).tolist() == (lazy.text(name) == "").tolist()


@settings(max_examples=100, deadline=None)
@given(rows=st.lists(st.tuples(st.one_of(TEXT, st.none()), st.one_of(TEXT, st.none()), TEXT), max_size=30),
       kinds=st.tuples(*[st.sampled_from(["arrow", "python", "object"])] * 3), chunk=st.integers(1, 7),
       workers=st.sampled_from([1, 2, 4]), joint=st.booleans())
def test_columns_encoded_ahead_are_the_ones_each_rule_would_have_made(
        rows: list[tuple[str | None, str | None, str]], kinds: tuple[str, str, str], chunk: int, workers: int,
        joint: bool) -> None:
    # subscriber ids mostly repeat member ids, as in a census
    members = [m for m, _, _ in rows]
    subscribers = [members[i // 2] if i % 3 else s for i, (_, s, _) in enumerate(rows)]
    frame = pd.DataFrame({"m": _column(members, kinds[0], chunk), "s": _column(subscribers, kinds[1], chunk),
                          "x": _column([x for _, _, x in rows], kinds[2], chunk)})
    ahead, lazy = EncodedColumns(frame), EncodedColumns(frame)
    ahead.encode(["x", "m", "absent", "x"], workers=workers, joint=("s", "m") if joint else None)
    assert ahead.codes_in("s", of="m").tolist() == lazy.codes_in("s", of="m").tolist()
    for name in ("m", "s", "x"):
        _same(ahead, lazy, name)


def test_encoding_skips_columns_already_encoded_or_absent_and_a_joint_pair_of_one_column() -> None:
    frame = pd.DataFrame({"a": pd.Series(["x", "", "x"], dtype="str"), "b": pd.Series(["y", "x", ""], dtype="str")})
    columns = EncodedColumns(frame)
    first = columns.coded("a")
    columns.encode(["a", "b", "c"], workers=2, joint=("a", "a"))
    assert columns.coded("a") is first  # not encoded a second time
    columns.encode([], workers=2, joint=("b", "c"))  # a pair with an absent column: nothing to do
    assert columns.coded("b").uniques.tolist() == ["y", "x", ""]
    assert columns.codes_in("b", of="a").tolist() == [-1, 0, 1]


def test_results_come_in_call_order_with_each_error_in_its_place() -> None:
    def boom() -> int:
        raise ValueError("column 3")

    calls = [lambda: 1, lambda: 2, boom, lambda: 4]
    for workers in (1, 2, 4):
        results = in_order_outcomes(calls, workers, name="test")
        assert results[:2] == [1, 2] and results[3] == 4
        assert isinstance(results[2], ValueError) and str(results[2]) == "column 3"
    assert thread_count(3) == 3 and thread_count(0) == 1 and 1 <= thread_count(None) <= 4


@pytest.mark.parametrize("seed", [1, 2])
def test_the_report_is_the_same_on_one_thread_and_on_many(seed: int, tmp_path: Path) -> None:
    frame = _family_mess(300, seed)
    dirty = _dirty(150, seed)
    for census in (frame, _with_gaps(frame, seed), _chunked(frame, tmp_path), dirty,
                   frame.drop(columns=["member_id"]), frame.drop(columns=["hire_date"])):
        reports = [validate_census(census, SUITE, SCHEMA, TOKENIZER, as_of=DAY, source_name="t.csv", workers=w)
                   for w in (1, 2, 4)]
        assert reports[0].findings and reports[0] == reports[1] == reports[2]


class _Unprintable:
    """A cell no rule can read as text."""

    def __str__(self) -> str:
        raise RuntimeError("cannot be text")


@pytest.mark.parametrize("column, rule", [("state", "expect_column_values_to_be_in_set"),
                                          ("first_name", "expect_column_values_to_not_be_null")])
def test_a_column_that_cannot_be_encoded_fails_where_it_did_whatever_the_thread_count(column: str,
                                                                                      rule: str) -> None:
    # the suite's rule that first reads the column reports it as an expectation that could not run
    frame = _family_mess(60, 3)
    frame[column] = frame[column].astype(object)
    frame.loc[frame.index[[5, 40]], column] = _Unprintable()
    for workers in (1, 3):
        with pytest.raises(ConfigError, match=rf"{rule} on \['{column}'\] could not run"):
            validate_census(frame, SUITE, SCHEMA, TOKENIZER, as_of=DAY, source_name="t.csv", workers=workers)
