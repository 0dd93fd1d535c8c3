"""Findings built on integer keys are the ones the frame of findings gave: same order, tokens and counts.

:func:`carrierfeeds.validation.findings.to_findings` sorts and de-duplicates the rules' rows by an integer key
and tokenises each distinct member id once. The reference here is the pandas formulation it replaced
(a frame of every finding, ``drop_duplicates`` and a stable sort on row, column and rule, member ids
looked up by row number), run on open-ended input (hypothesis): rows repeated within and across rules,
the same (column, rule) with two messages, the header row, rows the census does not have, repeated row
numbers, blank, missing and non-ASCII member ids, column and rule names that sort by code point.
"""

from __future__ import annotations

import gc

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from carrierfeeds.census.tokens import MemberTokenizer
from carrierfeeds.validation import HEADER_ROW, Finding
from carrierfeeds.validation.columns import EncodedColumns
from carrierfeeds.validation.findings import RuleRows, _gc_paused, to_findings

TOKENIZER = MemberTokenizer(b"f" * 32)
NAMES = st.sampled_from(["ssn", "dob", "Dob", "dob_", "\u00fcber", "a,b", "z"])


def _reference(raws: list[RuleRows], row_numbers: np.ndarray, member_id: pd.Series) -> list[Finding]:
    """The findings as validation built them before: one frame, de-duplicated and sorted by pandas."""
    parts = [pd.DataFrame({"row": r.rows, "column": r.column, "rule": r.rule, "message": r.message})
             for r in raws if len(r.rows)]
    if not parts:
        return []
    table = pd.concat(parts, ignore_index=True).drop_duplicates(["row", "column", "rule"])
    table = table.sort_values(["row", "column", "rule"], kind="stable").reset_index(drop=True)
    by_row = pd.Series(member_id.to_numpy(), index=row_numbers)
    by_row = by_row[~by_row.index.duplicated()]
    ids = by_row.reindex(table["row"].to_numpy()).fillna("")
    tokens = TOKENIZER.tokens(pd.Series(ids.to_numpy(), dtype="str"))
    tokens = tokens.where(pd.Series(ids.to_numpy() != "", dtype=bool), "")
    return [Finding(row=int(r), member_token=str(t), column=str(c), rule=str(u), message=str(m))
            for r, t, c, u, m in zip(table["row"].to_numpy(), tokens.to_numpy(), table["column"].to_numpy(),
                                     table["rule"].to_numpy(), table["message"].to_numpy(), strict=True)]


RAW = st.tuples(st.lists(st.integers(0, 12), max_size=12), NAMES, NAMES, st.sampled_from(["one", "two"]))


@settings(max_examples=200, deadline=None)
@given(raws=st.lists(RAW, max_size=8), numbers=st.lists(st.integers(2, 10), max_size=12),
       ids=st.data(), kind=st.sampled_from(["str", "object"]))
def test_findings_by_integer_keys_are_the_frame_of_findings(
        raws: list[tuple[list[int], str, str, str]], numbers: list[int], ids: st.DataObject, kind: str) -> None:
    member = ids.draw(st.lists(st.one_of(st.sampled_from(["", "E1", "E2", "\u00e91", "E 3"]), st.none()),
                               min_size=len(numbers), max_size=len(numbers)))
    census = pd.DataFrame({"member_id": pd.Series(member, dtype=object)})
    if kind == "str":
        census["member_id"] = census["member_id"].fillna("").astype("str")
    columns = EncodedColumns(census)
    row_numbers = np.array(numbers, dtype=np.int64)
    given_raws = [RuleRows(rows=np.array([HEADER_ROW if r == 0 else r for r in rows], dtype=np.int64), column=c,
                       rule=u, message=m) for rows, c, u, m in raws]
    findings, rows, counts = to_findings(given_raws, row_numbers, columns.coded("member_id"), TOKENIZER)
    expected = _reference(given_raws, row_numbers, columns.text("member_id"))
    assert findings == expected
    assert rows.tolist() == [f.row for f in expected]
    assert counts == dict(sorted(pd.Series([f.rule for f in expected], dtype=object).value_counts().items()))
    # without a member_id column every token is blank
    blank, _, _ = to_findings(given_raws, row_numbers, None, TOKENIZER)
    assert blank == [Finding(f.row, "", f.column, f.rule, f.message) for f in expected]


def test_the_collector_is_paused_only_inside_the_block_and_left_as_it_was() -> None:
    assert gc.isenabled()
    with _gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with _gc_paused():
            pass
        assert not gc.isenabled()  # a caller that had it off keeps it off
    finally:
        gc.enable()
