"""Validation on shared codes finds what the pandas formulation found, on gaps, chunks and odd text.

The rules run once per distinct value of a column, factorised once and shared by the suite and the
cross-row rules (:class:`carrierfeeds.validation.columns.EncodedColumns`). These tests hold each piece to a plain
pandas reference: the code helpers on open-ended input (hypothesis), the cross-row rules and the suite
on censuses with real gaps (NaN, not only blanks), object columns and Arrow text split into many chunks
(as a large CSV reads), and the report's counts and the policy's outcome against ``nunique``/``isin``.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.validation.test_masks_match_great_expectations import (
    SCHEMA,
    SUITE,
    _both,
    _dirty,
    _family_mess,
    _key,
    _reference_cross_row_rules,
    _suite_with,
)

from carrierfeeds.census.columns import ROW_NUMBER
from carrierfeeds.census.tokens import MemberTokenizer
from carrierfeeds.config import ValidationPolicy
from carrierfeeds.validation import apply_policy, validate_census
from carrierfeeds.validation.columns import EncodedColumns, factorize, index_in
from carrierfeeds.validation.masks import run_suite, unordered_rows
from carrierfeeds.validation.rules import _repeated, _varies, cross_row_rules

DAY = date(2026, 11, 20)
TOKENIZER = MemberTokenizer(b"c" * 32)
TEXT = st.text(alphabet=st.sampled_from(["a", "B", "0", "9", " ", "\n", "\u00fc", "\uff11", "-", "\u0661"]),
               max_size=3)


# ------------------------------------------------------------------------------------------- helpers
def _arrow_text(chunks: list[list[str]]) -> pd.Series:
    """Text as the readers make it (pandas' ``str``, Arrow-backed), in the chunks given."""
    values = pa.chunked_array(chunks, type=pa.large_string())
    return pd.Series(pd.arrays.ArrowStringArray(values, dtype=pd.StringDtype("pyarrow", na_value=np.nan)))


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(st.integers(0, 6), max_size=40), data=st.data())
def test_varies_is_more_than_one_distinct_value_per_key(keys: list[int], data: st.DataObject) -> None:
    values = data.draw(st.lists(st.integers(0, 3), min_size=len(keys), max_size=len(keys)))
    key, value = np.array(keys, dtype=np.int32), np.array(values, dtype=np.int32)
    expected = pd.Series(value).groupby(key).transform("nunique").to_numpy() > 1 if len(key) else np.zeros(0, bool)
    assert _varies(key, value).tolist() == list(expected)
    # the same with a sort shared between calls, stable or not
    assert _varies(key, value, np.argsort(key, kind="stable")).tolist() == list(expected)
    assert _varies(key, value, np.argsort(key, kind="quicksort")).tolist() == list(expected)


@pytest.mark.parametrize("width", [3, 10**9])  # few possible pairs: counted directly; many: factorised
def test_repeated_is_pandas_duplicated_keep_false(width: int) -> None:
    rng = np.random.default_rng(width % 97)
    a = rng.integers(0, 50, size=400).astype(np.int32)
    b = rng.integers(0, 3, size=400).astype(np.int64)
    b[0] = width - 1  # sets the pair-key width
    expected = pd.DataFrame({"a": a, "b": b}).duplicated(keep=False).to_numpy()
    assert _repeated(a, b).tolist() == expected.tolist()
    assert _repeated(a[:0], b[:0]).tolist() == []


@settings(max_examples=150, deadline=None)
@given(values=st.lists(TEXT, max_size=30), chunk=st.integers(1, 7))
def test_factorize_matches_pandas_on_chunked_arrow_text_and_python_text(values: list[str], chunk: int) -> None:
    chunks = [values[i:i + chunk] for i in range(0, len(values), chunk)] or [[]]
    arrow = _arrow_text(chunks)
    python = pd.Series(values, dtype=pd.StringDtype("python", na_value=np.nan))
    for series in (arrow, python):
        codes, distinct = factorize(series)
        ref_codes, ref_uniques = pd.factorize(series, use_na_sentinel=False)
        assert codes.tolist() == ref_codes.tolist()
        assert distinct.tolist() == list(ref_uniques) and distinct.dtype == series.dtype
        assert distinct.iloc[codes].tolist() == values


@settings(max_examples=150, deadline=None)
@given(values=st.lists(TEXT, max_size=20), of=st.lists(TEXT, max_size=20, unique=True))
def test_index_in_is_the_position_or_minus_one(values: list[str], of: list[str]) -> None:
    found = index_in(pd.Series(values, dtype="str"), pd.Series(of, dtype="str"))
    assert found.tolist() == [of.index(v) if v in of else -1 for v in values]


@settings(max_examples=100, deadline=None)
@given(members=st.lists(TEXT, max_size=20), chunk=st.integers(1, 5),
       path=st.sampled_from(["joint", "cached", "python"]), data=st.data())
def test_codes_in_is_the_code_of_the_same_text_and_leaves_both_columns_factorised(
        members: list[str], chunk: int, path: str, data: st.DataObject) -> None:
    # subscriber ids: mostly member ids, some not
    subscriber = st.one_of(TEXT, st.sampled_from(members)) if members else TEXT
    subscribers = data.draw(st.lists(subscriber, min_size=len(members), max_size=len(members)))

    def text(values: list[str]) -> pd.Series:
        if path == "python":
            return pd.Series(values, dtype=pd.StringDtype("python", na_value=np.nan))
        chunks = [values[i:i + chunk] for i in range(0, len(values), chunk)] or [[]]
        return _arrow_text(chunks)

    frame = pd.DataFrame({"m": text(members), "s": text(subscribers)})
    columns = EncodedColumns(frame)
    if path == "cached":
        columns.coded("s")  # factorised already: the look-up, not the joint encoding
    found = columns.codes_in("s", of="m")
    m, s = columns.coded("m"), columns.coded("s")
    assert found.tolist() == [m.uniques.tolist().index(v) if v in members else -1 for v in subscribers]
    for coded, values, series in ((m, members, frame["m"]), (s, subscribers, frame["s"])):
        ref_codes, ref_uniques = pd.factorize(series, use_na_sentinel=False)
        assert coded.codes.tolist() == ref_codes.tolist() and coded.uniques.tolist() == list(ref_uniques)
        assert coded.uniques.dtype == series.dtype
        assert coded.blank == (list(ref_uniques).index("") if "" in values else -1)


def _reference_unordered(a: pd.Series, b: pd.Series, ignore: str, or_equal: bool, rn: np.ndarray) -> np.ndarray:
    """The pair rule as the masks first ran it: pandas comparing the blank-as-missing columns."""
    a, b = a.where(a != ""), b.where(b != "")
    if ignore == "either_value_is_missing":
        keep = (a.notna() & b.notna()).to_numpy()
    elif ignore == "both_values_are_missing":
        keep = ~(a.isna() & b.isna()).to_numpy()
    else:
        keep = np.ones(len(a), dtype=bool)
    ordered = (a[keep] >= b[keep]) if or_equal else (a[keep] > b[keep])
    bad: np.ndarray = rn[keep][~np.asarray(ordered, dtype=bool)]
    return bad


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(st.tuples(TEXT, TEXT), max_size=40), repeat=st.integers(1, 30),
       ignore=st.sampled_from(["either_value_is_missing", "both_values_are_missing", "neither"]),
       or_equal=st.booleans())
def test_the_pair_rule_by_distinct_pairs_is_the_pandas_comparison(rows: list[tuple[str, str]], repeat: int,
                                                                  ignore: str, or_equal: bool) -> None:
    # repeated rows make few distinct pairs among many rows (a table of pairs); few rows, a sorted list
    rows = rows * repeat
    frame = pd.DataFrame({"a": pd.Series([r[0] for r in rows], dtype="str"),
                          "b": pd.Series([r[1] for r in rows], dtype="str")})
    rn = np.arange(2, len(frame) + 2, dtype=np.int64)
    columns = EncodedColumns(frame)
    found = unordered_rows(columns.coded("a"), columns.coded("b"), ignore, or_equal, rn)
    assert found.tolist() == _reference_unordered(frame["a"], frame["b"], ignore, or_equal, rn).tolist()


def test_pair_rules_on_few_and_on_many_distinct_pairs_find_what_gx_finds(tmp_path: Path) -> None:
    frame = _dirty(200, 11)
    frame["coverage_end"] = np.where(np.arange(len(frame)) % 3 == 0, "", frame["coverage_end"].to_numpy())
    frame["gender_b"] = frame["gender"]  # 3 x 3 texts: a table of pairs
    extra = [{"type": "expect_column_pair_values_a_to_be_greater_than_b",
              "kwargs": {"column_A": a, "column_B": b, "ignore_row_if": ignore, "or_equal": or_equal},
              "meta": {"rule": f"{a}_{b}_{ignore}_{or_equal}"}}
             for a, b in (("ssn", "zip"), ("gender", "gender_b"), ("coverage_end", "coverage_start"))
             for ignore in ("either_value_is_missing", "both_values_are_missing", "neither")
             for or_equal in (True, False)]
    fast, ref = _both(frame, _suite_with(tmp_path, extra))
    assert fast == ref
    assert {"ssn_zip_neither_True", "gender_gender_b_neither_False"} <= {rule for _, rule, _, _ in fast[0]}


def test_a_blank_code_is_found_only_when_the_column_has_blanks() -> None:
    frame = pd.DataFrame({"a": pd.Series(["x", "", "y", ""], dtype="str"),
                          "b": pd.Series(["x", "y", "x", "z"], dtype="str"),
                          "c": pd.Series(["x", None, "", 3], dtype=object)})
    columns = EncodedColumns(frame)
    assert columns.coded("a").blank == 1 and columns.coded("b").blank == -1
    c = columns.coded("c")  # a gap and a blank are the same missing text
    assert c.codes[1] == c.codes[2] == c.blank and c.uniques.tolist() == ["x", "", "3"]
    assert columns.coded("a") is columns.coded("a")  # factorised once


# ---------------------------------------------------------------------- rules on gaps and on chunks
def _with_gaps(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Real gaps (None) in some columns, left as object columns, as a caller's own frame may have them."""
    frame = frame.copy()
    rng = np.random.default_rng(seed)
    for c in ("member_id", "subscriber_id", "ssn", "dob", "zip", "relationship", "coverage_end", "plan_code"):
        frame[c] = frame[c].astype(object)
        frame.loc[rng.random(len(frame)) < 0.03, c] = None
    return frame


def _chunked(frame: pd.DataFrame, tmp_path: Path) -> pd.DataFrame:
    """The same census as Arrow text in chunks of 37 rows (a large CSV reads as hundreds of chunks)."""
    path = tmp_path / "chunked.arrow"
    frame.reset_index(drop=True).to_feather(path, chunksize=37)
    chunked = pd.read_feather(path)
    assert chunked["ssn"].array._pa_array.num_chunks > 1
    return chunked


@pytest.mark.parametrize("seed", [1, 2])
def test_cross_row_rules_on_gaps_and_on_chunks_find_what_the_pandas_pairs_found(seed: int, tmp_path: Path) -> None:
    for frame in (_with_gaps(_family_mess(300, seed), seed), _chunked(_family_mess(300, seed), tmp_path)):
        found = _key(cross_row_rules(frame, SCHEMA, DAY))
        assert found == _key(_reference_cross_row_rules(frame, SCHEMA, DAY))
        assert {"same_person_fields", "unique_member_plan", "ssn_unique", "subscriber_present",
                "dependent_plan_not_elected", "real_date"} <= {rule for _, rule, _, _ in found}


def test_cross_row_rules_when_no_row_is_an_employee_or_every_cell_is_blank() -> None:
    frame = _family_mess(60, 5)
    no_ee = frame.assign(relationship="CH")
    blank = frame.assign(**{c: "" for c in frame.columns if c != ROW_NUMBER})
    for census in (no_ee, blank):
        assert _key(cross_row_rules(census, SCHEMA, DAY)) == _key(_reference_cross_row_rules(census, SCHEMA, DAY))


def test_the_suite_on_gaps_and_on_chunks_finds_what_gx_finds(tmp_path: Path) -> None:
    frame = _dirty(150, 7)
    frame.loc[frame.index[::5], "phone"] = ""  # a column with blanks next to one (hire_date) with none below
    frame["hire_date"] = frame["hire_date"].where(frame["hire_date"] != "", "2020-01-01")
    for census in (_with_gaps(frame, 7), _chunked(frame, tmp_path)):
        fast, _ = run_suite(census, SUITE)
        ref, _ = run_suite(census, SUITE, engine="gx")
        assert _key(fast) == _key(ref)


def test_a_column_whose_distinct_values_all_pass_finds_nothing_and_all_blank_is_not_null_only() -> None:
    frame = _dirty(60, 8)
    frame["zip"] = "12345"
    frame["phone"] = ""
    rules = {(r.column, r.rule) for r in run_suite(frame, SUITE)[0]}
    assert ("zip", "zip_format") not in rules and ("phone", "phone_format") not in rules


# -------------------------------------------------------------------------- report counts and policy
def _reference_counts(frame: pd.DataFrame, failed_rows: set[int]) -> tuple[int, int, int, int]:
    text = {c: frame[c].astype("str").fillna("") if c in frame.columns else pd.Series("", index=frame.index)
            for c in ("member_id", "subscriber_id")}
    member, family = text["member_id"], text["subscriber_id"]
    failed = frame[ROW_NUMBER].isin(failed_rows).to_numpy()
    return (int(member[member != ""].nunique()), int(family.nunique()), int(failed.sum()),
            int(family[failed].nunique()))


@pytest.mark.parametrize("drop", [(), ("subscriber_id",), ("member_id",)])
def test_report_counts_are_pandas_nunique_of_the_text(drop: tuple[str, ...]) -> None:
    frame = _with_gaps(_family_mess(200, 3), 3).drop(columns=list(drop))
    report = validate_census(frame, SUITE, SCHEMA, TOKENIZER, as_of=DAY, source_name="gaps.csv")
    failed = {f.row for f in report.findings if f.row != 1}
    assert (report.members, report.families, report.failed_rows, report.failed_families) == _reference_counts(
        frame, failed)


def test_quarantine_holds_back_exactly_the_failing_families() -> None:
    frame = _family_mess(200, 4)
    report = validate_census(frame, SUITE, SCHEMA, TOKENIZER, as_of=DAY, source_name="q.csv")
    outcome = apply_policy(frame, report, ValidationPolicy(policy="quarantine"))
    family = frame["subscriber_id"].astype("str").fillna("")
    failing = set(family[frame[ROW_NUMBER].isin({f.row for f in report.findings})])
    bad = family.isin(failing)
    assert not outcome.rejected and outcome.accepted.equals(frame.loc[~bad])
    assert outcome.held_back_families == len(failing)
    held = frame["member_id"][bad]
    assert outcome.held_back_members == held[held != ""].nunique()
    rejected = apply_policy(frame, report, ValidationPolicy(policy="reject"))
    assert rejected.rejected and rejected.accepted.empty
    assert (rejected.held_back_families, rejected.held_back_members) == (
        family.nunique(), frame["member_id"][frame["member_id"] != ""].nunique())
