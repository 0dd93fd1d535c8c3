"""Run a suite: its common expectation types as vectorised masks with GX's pandas semantics, the rest via GX."""

from __future__ import annotations

import re
import warnings as warnings_module
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from carrierfeeds.census.columns import ROW_NUMBER
from carrierfeeds.errors import ConfigError
from carrierfeeds.validation.columns import CodedColumn, EncodedColumns, blank_as_missing
from carrierfeeds.validation.findings import RuleRows
from carrierfeeds.validation.gx import run_gx
from carrierfeeds.validation.report import HEADER_ROW
from carrierfeeds.validation.suite import PAIR_IGNORE, describe, load_suite, suite_fast, vectorisable


def run_suite(census: pd.DataFrame, suite_path: Path, *, engine: str = "auto",
               columns: EncodedColumns | None = None) -> tuple[list[RuleRows], list[str]]:
    """Run the suite file and reduce each failed expectation to rows, column, rule.

    The suite file is the source of truth and stays a GX suite. ``engine="auto"`` evaluates the
    expectation types in :data:`VECTORISED` as masks (GX's pandas semantics: blanks are missing, value
    rules skip missing cells) and hands the rest, if any, to GX; ``engine="gx"`` runs all of it through
    GX (the reference the masks are tested against). Either way only rows, column and rule come out.
    ``columns`` shares the census's factorised columns with the cross-row rules.
    """
    data = load_suite(suite_path)
    expectations = data.get("expectations")
    if engine != "auto" or not suite_fast(data) or not isinstance(expectations, list):
        return run_gx(census, data, suite_path)
    fast = [e for e in expectations if vectorisable(e)]
    slow = [e for e in expectations if not vectorisable(e)]
    raws: list[RuleRows] = []
    warnings: list[str] = []
    if slow:
        raws, warnings = run_gx(census, {**data, "expectations": slow}, suite_path)
    if columns is None:
        columns = EncodedColumns(census)
    rn = census[ROW_NUMBER].to_numpy(dtype=np.int64)
    with warnings_module.catch_warnings():
        # pandas warns when a regex has a capturing group (the SSN repeated-digit back-reference needs one)
        warnings_module.filterwarnings("ignore", message="This pattern is interpreted as a regular")
        for expectation in fast:
            kind, kwargs = expectation["type"], expectation["kwargs"]
            cols, column, rule, message = describe(kind, kwargs, expectation.get("meta"))
            absent = [c for c in cols if c not in census.columns]
            if kind == "expect_column_to_exist":
                if absent:
                    raws.append(RuleRows(rows=np.array([HEADER_ROW], dtype=np.int64), column=column, rule=rule,
                                     message=message))
                continue
            if absent:
                # the column's absence is reported once, by expect_column_to_exist, not by every rule on it
                warnings.append(f"{kind} on {absent} skipped: column not in the census")
                continue
            try:
                rows = unexpected_rows(kind, kwargs, columns, rn)
            except Exception:  # a bad regex or value: GX reports it as an expectation that could not run
                raise ConfigError(f"expectation {kind} on {cols} could not run", file=suite_path.name) from None
            if len(rows):
                raws.append(RuleRows(rows=rows, column=column, rule=rule, message=message))
    return raws, warnings


def unexpected_rows(kind: str, kwargs: dict[str, Any], columns: EncodedColumns, rn: np.ndarray) -> np.ndarray:
    """Row numbers an expectation of :data:`VECTORISED` finds unexpected: GX's pandas metric, as masks.

    Column-map rules look at non-missing cells only (GX filters missing ones out first, except for the
    not-null rule); the pair rule drops rows per ``ignore_row_if`` and compares the text as GX does.
    Set and regex rules make the same pandas call GX does, once per distinct value of the column, and
    are spread back by code. pandas picks pyarrow's RE2 or Python's re (look-arounds, back-references,
    ``$`` on text holding a newline) from the pattern and the characters present, which the distinct
    values share with the cells, so no rule scans every cell for newlines just to decide.
    """
    if kind == "expect_column_pair_values_a_to_be_greater_than_b":
        return unordered_rows(columns.coded(kwargs["column_A"]), columns.coded(kwargs["column_B"]),
                               kwargs.get("ignore_row_if", PAIR_IGNORE[0]), bool(kwargs.get("or_equal")), rn)
    if kind == "expect_column_values_to_not_be_null":
        missing: np.ndarray = rn[columns.blank(kwargs["column"])]
        return missing
    coded = columns.coded(kwargs["column"])
    distinct = coded.uniques
    ok: pd.Series | np.ndarray
    if kind == "expect_column_values_to_be_in_set":
        ok = distinct.isin(kwargs["value_set"])
    else:
        ok = contains(distinct, kwargs["regex"])
        if kind == "expect_column_values_to_not_match_regex":
            ok = ~ok
    failing = ~np.asarray(ok, dtype=bool)
    if coded.blank >= 0:
        failing[coded.blank] = False  # a missing cell is the not-null rule's business
    if not failing.any():
        return np.zeros(0, dtype=np.int64)  # every distinct value passes: no row to look at
    unexpected: np.ndarray = rn[coded.spread(failing)]
    return unexpected


def contains(distinct: pd.Series, regex: str) -> np.ndarray:
    """``distinct.str.contains(regex)``: per text, does ``regex`` match in it (as GX asks pandas).

    pandas runs Python's re over every value once one of them holds a newline and the pattern has
    ``$`` (Python's ``$`` also matches before a trailing newline, RE2's does not), an order of magnitude
    slower than RE2 (figures in benchmarks/README.md). Where both engines read the
    pattern alike on text without a newline (:func:`same_without_newlines`), only the texts holding a
    newline go to Python's re, as pandas' own fallback calls it (``search``), and the rest to pandas.
    """
    if isinstance(distinct.array, pd.arrays.ArrowStringArray) and same_without_newlines(regex):
        newline = np.asarray(distinct.str.contains("\n", regex=False), dtype=bool)
        if newline.any():
            found = np.empty(len(distinct), dtype=bool)
            found[~newline] = np.asarray(distinct[~newline].str.contains(regex), dtype=bool)
            search = re.compile(regex).search
            found[newline] = [search(text) is not None for text in distinct[newline].tolist()]
            return found
    return np.asarray(distinct.str.contains(regex), dtype=bool)


def same_without_newlines(regex: str) -> bool:
    """Whether Python's re and RE2 match ``regex`` alike on any text without a newline: it is made only
    of literals, ``.``, classes of literals and ranges, groups without flags, alternation, repeats RE2
    takes (at most 1000) and the anchors ``^``, ``$``, ``\\A``, ``\\Z``. No look-arounds, back-references,
    escapes of letters or digits (``\\d``, ``\\b``: Unicode-aware in Python only; ``\\u``: Python only),
    inline flags or ``[:`` (a POSIX class to RE2, plain characters to Python)."""
    from re import _parser  # type: ignore[attr-defined]  # the parser re itself uses; pandas reads it too

    try:
        parsed = _parser.parse(regex)
    except re.error:
        return False
    if "[:" in regex or parsed.state.flags & ~re.UNICODE:
        return False
    if any(c.isalnum() and c not in "AZ" for c in re.findall(r"\\(.)", regex, flags=re.DOTALL)):
        return False  # an escape of a letter or digit (\d, \u00fc, \0): the engines may read it apart
    anchors = {_parser.AT_BEGINNING, _parser.AT_END, _parser.AT_BEGINNING_STRING, _parser.AT_END_STRING}

    def plain(nodes: Any) -> bool:
        for op, arg in nodes:
            if op in (_parser.LITERAL, _parser.NOT_LITERAL, _parser.ANY):
                continue
            if op == _parser.IN:
                if not all(o in (_parser.LITERAL, _parser.RANGE, _parser.NEGATE) for o, _ in arg):
                    return False
            elif op in (_parser.MAX_REPEAT, _parser.MIN_REPEAT):
                low, high, inner = arg
                if low > 1000 or (high != _parser.MAXREPEAT and high > 1000) or not plain(inner):
                    return False
            elif op == _parser.SUBPATTERN:
                _, add_flags, del_flags, inner = arg
                if add_flags or del_flags or not plain(inner):
                    return False
            elif op == _parser.BRANCH:
                if not all(plain(branch) for branch in arg[1]):
                    return False
            elif not (op == _parser.AT and arg in anchors):
                return False
        return True

    return plain(parsed)


def unordered_rows(a: CodedColumn, b: CodedColumn, ignore: str, or_equal: bool, rn: np.ndarray) -> np.ndarray:
    """Rows where text ``a`` is not above (or equal to) text ``b``, GX's pandas comparison of the two
    blank-as-missing columns, made once per distinct (a, b) pair of texts and spread back."""
    a_missing, b_missing = a.codes == a.blank, b.codes == b.blank
    if ignore == "either_value_is_missing":
        keep = ~(a_missing | b_missing)
    elif ignore == "both_values_are_missing":
        keep = ~(a_missing & b_missing)
    else:
        keep = np.ones(len(a.codes), dtype=bool)
    if not keep.any():
        return np.zeros(0, dtype=np.int64)
    pairs = a.codes[keep].astype(np.int64) * len(b.uniques) + b.codes[keep]
    if len(a.uniques) * len(b.uniques) <= 4 * len(pairs) + 1024:  # few possible pairs: a table of them
        present = np.flatnonzero(np.bincount(pairs, minlength=len(a.uniques) * len(b.uniques)))
    else:
        present = np.sort(pd.unique(pairs))
    left = blank_as_missing(a.uniques.iloc[present // len(b.uniques)].reset_index(drop=True))
    right = blank_as_missing(b.uniques.iloc[present % len(b.uniques)].reset_index(drop=True))
    ordered = np.asarray((left >= right) if or_equal else (left > right), dtype=bool)
    at = np.searchsorted(present, pairs)  # every pair is present
    bad: np.ndarray = rn[keep][~ordered[at]]
    return bad

