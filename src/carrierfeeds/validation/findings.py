"""Rows that broke a rule, turned into sorted, de-duplicated, tokenised findings (never a cell value)."""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd

from carrierfeeds.census.tokens import MemberTokenizer
from carrierfeeds.validation.columns import CodedColumn
from carrierfeeds.validation.report import Finding


@dataclass(frozen=True)
class RuleRows:
    """Rows breaking one rule on one column, before tokens are attached."""

    rows: np.ndarray
    column: str
    rule: str
    message: str


@contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for the block (as it was after): for building many objects that
    hold no cycles, which each collection pass would otherwise walk again."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def to_findings(raws: Iterable[RuleRows], row_numbers: np.ndarray, member_id: CodedColumn | None,
                 tokenizer: MemberTokenizer) -> tuple[list[Finding], np.ndarray, dict[str, int]]:
    """The findings, sorted by row, column and rule, one per (row, column, rule) (the first raw's message);
    with their row numbers and the count of findings per rule (by rule name).

    Built on integer keys (row x (column, rule) pair) rather than a frame of findings sorted on its
    text: each raw's column, rule and message are Python objects shared by its findings, and each
    distinct member id among them is tokenised once. ``member_id`` gives each finding's token: the id
    on the first census row with its row number ("" when there is none or it is blank).
    """
    raws = [r for r in raws if len(r.rows)]
    if not raws:
        return [], np.zeros(0, dtype=np.int64), {}
    pairs = sorted({(r.column, r.rule) for r in raws})
    rank = {pair: i for i, pair in enumerate(pairs)}
    rules = sorted({r.rule for r in raws})
    raw_of = np.repeat(np.arange(len(raws)), [len(r.rows) for r in raws])
    rows = np.concatenate([np.asarray(r.rows, dtype=np.int64) for r in raws])
    keys = rows * len(pairs) + np.array([rank[(r.column, r.rule)] for r in raws], dtype=np.int64)[raw_of]
    _, first = np.unique(keys, return_index=True)  # sorted by (row, column, rule); the first raw of each
    rows, raw_of = rows[first], raw_of[first]

    tokens: list[str] = [""] * len(rows)
    if member_id is not None and len(row_numbers):
        numbers, at_row = np.unique(row_numbers, return_index=True)  # the first row with each number
        at = np.minimum(np.searchsorted(numbers, rows), len(numbers) - 1)
        codes = np.where(numbers[at] == rows, member_id.codes[at_row[at]], -1)
        codes[codes == member_id.blank] = -1
        spread, distinct = pd.factorize(codes)
        named = distinct >= 0
        ids = member_id.uniques.iloc[distinct[named]].reset_index(drop=True)
        hashed = np.array(["", *tokenizer.tokens(pd.Series(ids, dtype="str")).tolist()], dtype=object)
        tokens = hashed[np.cumsum(named) * named][spread].tolist()

    def per_raw(values: list[str]) -> list[str]:
        taken: list[str] = np.array(values, dtype=object)[raw_of].tolist()
        return taken

    rule_ids = np.array([rules.index(r.rule) for r in raws], dtype=np.int64)[raw_of]
    counts = np.bincount(rule_ids, minlength=len(rules))
    with _gc_paused():  # many new objects, no cycles among them: the collector would walk them for nothing
        findings = list(map(Finding, rows.tolist(), tokens, per_raw([r.column for r in raws]),
                            per_raw([r.rule for r in raws]), per_raw([r.message for r in raws])))
    return findings, rows, {rule: int(n) for rule, n in zip(rules, counts, strict=True) if n}

