"""The build stage's fast paths equal the plain definitions they replace: the character rule by rows with
a whole-column clean test (fold_column), digit codes by row (SSN, zip), first-appearance codes by Arrow's
hash, subscriber counts from member codes; on any text, empty and missing cells and unicode included."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.enrollment.test_enrollment_build import AS_OF, ROOT

from carrierfeeds.census.generate import generate_census
from carrierfeeds.config import load_feed, load_mapping
from carrierfeeds.enrollment import _digits, _first_appearance, build_enrollment
from carrierfeeds.x12.sanitize import (
    RULE_OUTSIDE_SET,
    RULE_TRANSLITERATE,
    Folded,
    TextRule,
    _cased,
    _compiled,
    fold_column,
    fold_steps,
)

#: Clean text, near-clean text (case, spaces at the ends, double spaces) and every kind of trouble:
#: delimiters, controls, Unicode whitespace, letters NFKD leaves alone, letters whose Unicode upper case
#: is ASCII (dotless i, long s), CJK, emoji.
TEXT = st.text(alphabet=st.sampled_from([*"AZaz09 -.'&/;?=!%@#$_[]~*:^|\r\n\t\x0b\x0c\x1c\x1f\xa0\u2003",
                                         *"ÀéßøŁ\u0131\u017fµ\u212a漢😀", "\x00", "\x7f"]), max_size=12)
CELLS = st.lists(st.one_of(TEXT, st.sampled_from(["SMITH", "O'NEIL", " ANN LEE ", "ann  lee", "\u0131van", ""]),
                           st.none()), max_size=40)
RULES = [TextRule("basic", "upper"), TextRule("extended", "upper"), TextRule("extended", "as_is")]


def _reference_fold_column(values: pd.Series, max_length: int | None, rule: TextRule,
                           order: np.ndarray | None) -> Folded:
    """fold_column as it was: every distinct value factorised, cased and trimmed, tested by regex."""
    import pyarrow.compute as pc

    codes, uniques = pd.factorize(values.astype("str").fillna(""), use_na_sentinel=False)
    if order is not None:
        codes = codes[order]
    distinct = pd.Series(uniques, dtype="str")
    cased = (distinct.str.upper() if rule.case == "upper" else distinct).str.strip()
    clean = cased.str.fullmatch(_compiled(rule.charset).clean_pattern).fillna(False).to_numpy(dtype=bool)
    folded = pa.array(cased, from_pandas=True).cast(pa.large_string())
    changed, by_rule = 0, {}
    dirty = np.flatnonzero(~clean)
    if len(dirty):
        weights = np.bincount(codes, minlength=len(distinct))[dirty]
        originals = [str(v) for v in distinct.iloc[dirty].tolist()]
        steps = [fold_steps(v, rule) for v in originals]
        full = [s[0] for s in steps]
        flags = np.array([f != _cased(v, rule).strip() for f, v in zip(full, originals, strict=True)], dtype=bool)
        changed = int(weights[flags].sum())
        for name, index in ((RULE_TRANSLITERATE, 1), (RULE_OUTSIDE_SET, 2)):
            hit = np.array([bool(s[index]) for s in steps], dtype=bool)
            if hit.any():
                by_rule[name] = int(weights[hit].sum())
        mask = np.zeros(len(distinct), dtype=bool)
        mask[dirty] = True
        folded = pc.replace_with_mask(folded, pa.array(mask), pa.array(full, pa.large_string()))
    if max_length is not None:
        folded = pc.utf8_rtrim(pc.utf8_slice_codeunits(folded, 0, max_length), characters=" ")
    result = pc.take(folded, pa.array(codes))
    rows: pd.Index = values.index if order is None else pd.RangeIndex(len(codes))
    return Folded(pd.Series(result, index=rows, dtype="str"), changed, by_rule)


def _assert_same(got: Folded, want: Folded) -> None:
    assert got.values.tolist() == want.values.tolist()
    assert got.values.index.equals(want.values.index)
    assert str(got.values.dtype) == str(want.values.dtype)
    assert (got.changed, got.by_rule) == (want.changed, want.by_rule)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cells=CELLS, rule=st.sampled_from(RULES), max_length=st.one_of(st.none(), st.integers(1, 12)),
       data=st.data(), arrow=st.booleans())
def test_fold_column_equals_the_distinct_value_definition(cells: list[str | None], rule: TextRule,
                                                          max_length: int | None, data: st.DataObject,
                                                          arrow: bool) -> None:
    values = pd.Series(cells, dtype="str" if arrow else object)
    order = data.draw(st.one_of(st.none(), st.lists(st.integers(0, max(len(cells) - 1, 0)), max_size=50)
                                .map(lambda xs: np.array(xs if cells else [], dtype=np.int64))))
    _assert_same(fold_column(values, max_length, rule, order=order),
                 _reference_fold_column(values, max_length, rule, order))


@pytest.mark.parametrize("rule", RULES)
def test_fold_column_clean_and_dirty_columns_and_long_values(rule: TextRule) -> None:
    clean = pd.Series(["SMITH", "ANN LEE", "O'NEIL-JONES", "", None, "A" * 70], dtype="str")
    dirty = pd.Series(["smith", " ANN  LEE ", "Zoë", "\u0131van", "A*B", "\u2003X\u2003", None, "ab " * 30],
                      dtype="str")
    for values in (clean, dirty, pd.Series([], dtype="str")):
        for max_length in (None, 1, 5, 60):
            for order in (None, np.arange(len(values))[::-1].copy()):
                _assert_same(fold_column(values, max_length, rule, order=order),
                             _reference_fold_column(values, max_length, rule, order))


def _reference_digits(values: pd.Series, order: np.ndarray, pattern: str) -> list[str]:
    text = values.astype("str").fillna("").iloc[order].str.strip().str.replace("-", "", regex=False)
    return text.where(text.str.fullmatch(pattern), "").tolist()


DIGITY = st.lists(st.one_of(st.text(alphabet=st.sampled_from([*"0123456789- \t", "\u0661", "\uff10", "x", "\u2003"]),
                                    max_size=12), st.none()), max_size=30)


@settings(max_examples=200, deadline=None)
@given(cells=DIGITY, data=st.data())
def test_digit_codes_by_row_equal_the_regex_definition(cells: list[str | None], data: st.DataObject) -> None:
    values = pd.Series(cells, dtype="str")
    order = np.array(data.draw(st.lists(st.integers(0, len(cells) - 1), max_size=40)) if cells else [],
                     dtype=np.int64)
    assert _digits(values, order, (9,)).tolist() == _reference_digits(values, order, r"[0-9]{9}")
    assert _digits(values, order, (5, 9)).tolist() == _reference_digits(values, order, r"[0-9]{5}(?:[0-9]{4})?")


@given(st.lists(st.one_of(st.sampled_from(["A", "B", "a", "", " A"]), st.none(), st.text(max_size=3)), max_size=40))
def test_first_appearance_codes_are_factorize_codes(cells: list[str | None]) -> None:
    values = pd.Series(cells, dtype="str")
    want = pd.factorize(values.astype("str").fillna(""), use_na_sentinel=False)[0]
    assert _first_appearance(values).tolist() == want.tolist()


def test_build_counts_subscribers_as_distinct_subscriber_member_ids() -> None:
    feed = load_feed(ROOT / "feeds" / "acme-sunrise-medical.yaml")
    mapping = load_mapping(ROOT / "mappings" / "sunrise-health.yaml")
    census = generate_census(400, 11, as_of=AS_OF)
    # A subscriber listed twice, once in lower case: one member once folded, as the view holds it.
    extra = census[census["relationship"] == "EE"].head(1).copy()
    extra["member_id"] = extra["member_id"].str.lower()
    census = pd.concat([census, extra], ignore_index=True)
    enrollment = build_enrollment(census, feed, mapping, as_of=AS_OF)
    table = enrollment.table
    assert enrollment.subscriber_count == table.loc[table["ins01"] == "Y", "member_id"].nunique()
