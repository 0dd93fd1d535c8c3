"""The build's fast paths for Categorical columns (the accepted census's dictionaries, see
carrierfeeds.census.accepted): the same census as plain text and as Categorical columns (codes into
distinct texts, some used by no row, in any order) gives an equal 834 view, equal counts and the same
errors; fold_column, _digits and _Distinct equal their plain-text results on any text."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.enrollment.test_enrollment_build import AS_OF, BAD_VALUES, _family
from tests.enrollment.test_enrollment_rules_match_definitions import CELLS, DIGITY, RULES, _assert_same
from tests.test_accepted_file import FEED, MAPPING
from tests.test_accepted_file import assert_same_enrollment as _assert_same_enrollment

from carrierfeeds.census.generate import generate_census
from carrierfeeds.enrollment import _digits, _Distinct, build_enrollment
from carrierfeeds.errors import DataError
from carrierfeeds.x12.sanitize import TextRule, dictionary_of, fold_column


def _categorical(values: pd.Series, unused: tuple[str, ...] = (), seed: int = 0) -> pd.Series:
    """``values`` as a Categorical over its distinct texts plus ``unused`` ones, in a shuffled order (the
    build must not read meaning into a category's position or count a category no row carries)."""
    present = [v for v in pd.unique(values) if isinstance(v, str)]
    categories = list(dict.fromkeys([*present, *unused]))
    np.random.default_rng(seed).shuffle(categories)
    return pd.Series(pd.Categorical(values, categories=categories), index=values.index, name=values.name)


def _as_categorical(frame: pd.DataFrame, unused: tuple[str, ...] = ("zz unused", "", "Ünused*")) -> pd.DataFrame:
    return pd.DataFrame({c: (s if c == "row_number" else _categorical(s, unused, seed=i))
                         for i, (c, s) in enumerate(frame.items())})


def _dirty_census(members: int = 120, seed: int = 5) -> pd.DataFrame:
    """A generated census with values the character rule folds (case, accents, delimiters, padding),
    empty and missing cells, and plans the carrier is not authorised for."""
    census = generate_census(members, seed, as_of=AS_OF)
    census.loc[::7, "last_name"] = "o'brien*smith"
    census.loc[::11, "first_name"] = "  Zoë  "
    census.loc[::13, "address1"] = "12 Łódź ~ Rd"
    census.loc[::5, "address2"] = ""
    census.loc[::17, "city"] = None
    census.loc[::19, "middle_initial"] = None
    census.loc[::23, "state"] = "il"
    census.loc[::29, "zip"] = "6270-1"
    census.loc[::31, "gender"] = "female"
    census.loc[::37, "ssn"] = " 900-11-2222 "
    census.loc[::3, "department"] = "R&D | Ops"
    return census


@pytest.mark.parametrize("workers", [1, 4])
def test_categorical_census_builds_the_same_view_and_counts(workers: int) -> None:
    census = _dirty_census()
    want = build_enrollment(census, FEED, MAPPING, as_of=AS_OF, workers=workers)
    got = build_enrollment(_as_categorical(census), FEED, MAPPING, as_of=AS_OF, workers=workers)
    assert want.normalised and want.sanitized and want.excluded  # the census exercises the rules
    _assert_same_enrollment(got, want)


def test_categorical_family_with_odd_values_builds_the_same() -> None:
    frame = _family()
    frame.loc[0, "first_name"] = "O\u0301la\r\n\x00"
    frame.loc[0, "zip"] = "not a zip"
    frame.loc[0, "state"] = "Illinois"
    frame.loc[1, "employment_status"] = None
    _assert_same_enrollment(build_enrollment(_as_categorical(frame), FEED, MAPPING, as_of=AS_OF),
                            build_enrollment(frame, FEED, MAPPING, as_of=AS_OF))


@pytest.mark.parametrize(("column", "value", "rule"), [*BAD_VALUES, ("member_id", "*", "empty_identifier")])
def test_categorical_census_raises_the_same_errors(column: str, value: str, rule: str) -> None:
    frame = _family()
    frame.loc[3, column] = value
    errors = []
    for census in (frame, _as_categorical(frame)):
        with pytest.raises(DataError) as info:
            build_enrollment(census, FEED, MAPPING, as_of=AS_OF)
        errors.append((info.value.row, info.value.column, info.value.rule, str(info.value)))
    assert errors[0] == errors[1] and errors[0][:3] == (5, column, rule)


def test_a_bad_value_only_in_an_unused_category_is_no_error() -> None:
    frame = _family()
    want = build_enrollment(frame, FEED, MAPPING, as_of=AS_OF)
    got = build_enrollment(_as_categorical(frame, unused=("XX", "03/09/1984", "ZZZ", "~*^:")), FEED, MAPPING,
                           as_of=AS_OF)
    _assert_same_enrollment(got, want)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cells=CELLS, rule=st.sampled_from(RULES), max_length=st.one_of(st.none(), st.integers(1, 12)),
       unused=st.lists(st.text(max_size=6), max_size=4), data=st.data())
def test_fold_column_of_a_categorical_equals_fold_column_of_its_text(
        cells: list[str | None], rule: TextRule, max_length: int | None, unused: list[str],
        data: st.DataObject) -> None:
    values = pd.Series(cells, dtype="str")
    order = data.draw(st.one_of(st.none(), st.lists(st.integers(0, max(len(cells) - 1, 0)), max_size=50)
                                .map(lambda xs: np.array(xs if cells else [], dtype=np.int64))))
    _assert_same(fold_column(_categorical(values, tuple(unused)), max_length, rule, order=order),
                 fold_column(values, max_length, rule, order=order))


@settings(max_examples=150, deadline=None)
@given(cells=DIGITY, unused=st.lists(st.text(max_size=10), max_size=3), data=st.data())
def test_digits_and_distinct_of_a_categorical_equal_those_of_its_text(
        cells: list[str | None], unused: list[str], data: st.DataObject) -> None:
    values = pd.Series(cells, dtype="str")
    coded = _categorical(values, tuple(unused))
    order = np.array(data.draw(st.lists(st.integers(0, len(cells) - 1), max_size=40)) if cells else [],
                     dtype=np.int64)
    for lengths in ((9,), (5, 9)):
        assert _digits(coded, order, lengths).tolist() == _digits(values, order, lengths).tolist()
    plain, fast = _Distinct(values, order), _Distinct(coded, order)
    assert fast.values.iloc[fast.codes].tolist() == plain.values.iloc[plain.codes].tolist()


def test_dictionary_of_plain_text_is_none_and_missing_is_empty_text() -> None:
    assert dictionary_of(pd.Series(["a", None], dtype="str")) is None
    parts = dictionary_of(pd.Series(pd.Categorical(["b", None, "a"], categories=["a", "b"])))
    assert parts is not None
    dictionary, codes = parts
    assert pa.array(dictionary).take(pa.array(codes)).to_pylist() == ["b", "", "a"]
