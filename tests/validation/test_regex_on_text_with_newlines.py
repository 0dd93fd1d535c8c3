"""Regex rules on text holding newlines match what pandas matches over the whole column.

pandas runs Python's re over every value of a column once one holds a newline and the pattern has
``$``; :func:`carrierfeeds.validation.masks.contains` sends only the texts holding a newline to Python's re
when the pattern is one RE2 and re read alike without newlines. These tests hold it to pandas' own
call on the same distinct values (what GX asks), on open-ended patterns and texts (hypothesis).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carrierfeeds.validation.masks import contains, same_without_newlines

ATOM = st.sampled_from(["a", "0", "9", "\u00fc", ".", " ", "[0-9]", "[^a]", "[a-c\u00fc]", "[^0-9\n]", "\\.",
                        "(?:a|0)", "(0|[1-9])", "(?:)"])
REPEAT = st.sampled_from(["", "", "*", "+", "?", "{2}", "{1,3}", "*?", "{0,}"])
PIECE = st.tuples(ATOM, REPEAT).map("".join)
PATTERN = st.tuples(st.sampled_from(["", "^", "\\A"]), st.lists(PIECE, max_size=4).map("".join),
                    st.sampled_from(["", "$", "\\Z", "|a$", "$|^0"])).map("".join)
pytestmark = pytest.mark.filterwarnings("ignore:This pattern is interpreted as a regular expression")
TEXT = st.text(alphabet=st.sampled_from(["a", "0", "9", "5", "\u00fc", " ", ".", "\n", "b"]), max_size=5)


def _arrow(values: list[str]) -> pd.Series:
    return pd.Series(values, dtype=pd.StringDtype("pyarrow", na_value=np.nan))


@settings(max_examples=300, deadline=None)
@given(pattern=PATTERN, values=st.lists(TEXT, max_size=25, unique=True))
def test_contains_is_pandas_on_the_whole_column_and_pythons_re_where_a_newline_is(
        pattern: str, values: list[str]) -> None:
    assert same_without_newlines(pattern)
    distinct = _arrow(values)
    found = contains(distinct, pattern)
    assert found.dtype == bool
    assert found.tolist() == np.asarray(distinct.str.contains(pattern), dtype=bool).tolist()
    # both engines read these patterns alike, so it is also Python's re on every text
    search = re.compile(pattern).search
    assert found.tolist() == [search(v) is not None for v in values]


@pytest.mark.parametrize("pattern", [
    "a(?=0)", "(?<!a)0", "(a)\\1", "\\d", "\\w+", "\\s", "\\bx", "(?i)a", "(?i:a)b", "(?m)^a$", "[[:digit:]]",
    "a{1001}", "a{2,1001}", "\\u00fc", "\\x41", "\\0", "\\t", "(?P<x>a)(?P=x)", "(",
])
# Python's re warns that "[[:digit:]]" may one day read as a nested set: that ambiguity is why it goes whole.
@pytest.mark.filterwarnings("ignore:Possible nested set:FutureWarning")
def test_patterns_the_engines_may_read_apart_go_to_pandas_whole(pattern: str) -> None:
    assert not same_without_newlines(pattern)


@pytest.mark.parametrize("pattern", ["\\d$", "(?i)^a$", "[[:digit:]]$"])
def test_a_pattern_left_to_pandas_still_matches_as_pandas_does(pattern: str) -> None:
    distinct = _arrow(["1", "1\n", "A", "a\n", "\u0661", ":", "", "x"])
    with pytest.warns(FutureWarning) if "[[" in pattern else _nothing():
        expected = np.asarray(distinct.str.contains(pattern), dtype=bool).tolist()
    with pytest.warns(FutureWarning) if "[[" in pattern else _nothing():
        assert contains(distinct, pattern).tolist() == expected


def test_python_text_and_text_without_newlines_go_to_pandas_whole() -> None:
    for distinct in (pd.Series(["1", "1\n", ""], dtype=pd.StringDtype("python", na_value=np.nan)),
                     _arrow(["1", "12", ""])):
        assert contains(distinct, "^[0-9]$").tolist() == [True, distinct[1] == "1\n", False]


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None
