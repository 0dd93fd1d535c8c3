"""Validate a canonical census (GX suite + cross-row rules) into a PHI-free report, and apply a policy.

Findings name a row number (as the employer sees it), a member token, a column and a rule, with a plain
English message; never a cell value. Great Expectations results carry cell values, so they are reduced
to (row numbers, column, rule) inside :func:`_run_gx` and nothing else of them leaves it.

The GX suite file is what users edit and stays the source of truth. Its common expectation types (column
exists, not null, matches / does not match a regex, in a set, pair A >= B) are evaluated as vectorised
masks with GX's own pandas semantics, without importing GX (2-3 s a process) or letting it copy and hash
the whole frame; any other type or option in the suite runs through GX itself. A test runs both ways on
dirty censuses and requires the same findings (tests/test_validation_vectorised.py).
"""

from __future__ import annotations

import csv
import gc
import html
import json
import logging
import os
import re
import time
import warnings as warnings_module
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from carrierfeeds.census.columns import RELATIONSHIP_CODES, ROW_NUMBER
from carrierfeeds.census.tokens import MemberTokenizer
from carrierfeeds.config import CarrierMapping, CensusSchema, PlanCatalogue, ValidationPolicy
from carrierfeeds.errors import ConfigError
from carrierfeeds.threads import in_order, thread_count
from carrierfeeds.x12.sanitize import TextRule, fold_column

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Row number used for findings about the file as a whole (a missing column): the header row.
HEADER_ROW = 1
_ISO_RE = r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"
_DATE_COLUMNS = ("dob", "hire_date", "coverage_start", "coverage_end")
_IDENTITY = ("dob", "first_name", "last_name", "ssn")


@dataclass(frozen=True)
class Finding:
    """One rule one row broke: where and which rule, never the value."""

    row: int
    member_token: str
    column: str
    rule: str
    message: str


@dataclass(frozen=True)
class ValidationReport:
    """Everything validation found in one census file; safe to log, store and send to the employer."""

    source_name: str
    rows: int
    members: int
    families: int
    failed_rows: int
    failed_families: int
    findings: tuple[Finding, ...]
    rule_counts: dict[str, int] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    #: Rows left out on purpose, by reason (``plan_not_authorized``: a plan some carrier mapping knows
    #: that this feed is not authorised to send); not findings, and never a reason to hold a row back.
    excluded: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (``--json``)."""
        return {
            "source_name": self.source_name, "ok": self.ok, "rows": self.rows, "members": self.members,
            "families": self.families, "failed_rows": self.failed_rows,
            "failed_families": self.failed_families, "rule_counts": dict(self.rule_counts),
            "excluded": dict(self.excluded), "warnings": list(self.warnings),
            "findings": [{"row": f.row, "member_token": f.member_token, "column": f.column, "rule": f.rule,
                          "message": f.message} for f in self.findings],
        }

    def write_csv(self, path: Path) -> None:
        """One line per finding: row, member_token, column, rule, message."""
        with _private_open(path) as fh:
            writer = csv.writer(fh)
            writer.writerow(["row", "member_token", "column", "rule", "message"])
            writer.writerows((f.row, f.member_token, f.column, f.rule, f.message) for f in self.findings)

    def write_html(self, path: Path) -> None:
        """A page for the employer: summary counts, counts by rule, and every finding by row."""
        e = html.escape
        summary = [("File", self.source_name), ("Rows", self.rows), ("Members", self.members),
                   ("Families", self.families), ("Rows with findings", self.failed_rows),
                   ("Families with findings", self.failed_families), ("Findings", len(self.findings)),
                   ("Result", "passed" if self.ok else "failed")]
        parts = [
            "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
            f"<title>Census validation: {e(self.source_name)}</title>",
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}"
            "td,th{border:1px solid #bbb;padding:.3em .6em;text-align:left}th{background:#eee}"
            ".failed{color:#a00}.passed{color:#070}</style></head><body>",
            f"<h1>Census validation: {e(self.source_name)}</h1>",
            "<p>Rows are numbered as in a spreadsheet: the header is row 1, the first member row is row 2. "
            "This report never shows the values themselves; open the file at the row and column named.</p>",
            "<h2>Summary</h2><table>",
            *(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in summary), "</table>",
        ]
        if self.warnings:
            parts += ["<h2>Warnings</h2><ul>", *(f"<li>{e(w)}</li>" for w in self.warnings), "</ul>"]
        if self.excluded:
            parts += ["<h2>Rows left out (expected, not findings)</h2><table><tr><th>Reason</th><th>Rows</th></tr>",
                      *(f"<tr><td>{e(r)}</td><td>{n}</td></tr>" for r, n in self.excluded.items()),
                      "</table>"]
        if self.rule_counts:
            parts += ["<h2>Findings by rule</h2><table><tr><th>Rule</th><th>Findings</th></tr>",
                      *(f"<tr><td>{e(r)}</td><td>{n}</td></tr>" for r, n in self.rule_counts.items()),
                      "</table>"]
        parts += ["<h2>Findings by row</h2>"]
        if self.findings:
            parts += ["<table><tr><th>Row</th><th>Member token</th><th>Column</th><th>Rule</th>"
                      "<th>What to fix</th></tr>",
                      *(f"<tr><td>{f.row}</td><td>{e(f.member_token)}</td><td>{e(f.column)}</td>"
                        f"<td>{e(f.rule)}</td><td>{e(f.message)}</td></tr>" for f in self.findings),
                      "</table>"]
        else:
            parts += ['<p class="passed">No findings.</p>']
        parts += ["</body></html>"]
        with _private_open(path) as fh:
            fh.write("\n".join(parts) + "\n")


@dataclass(frozen=True)
class PolicyOutcome:
    """What a feed's validation policy made of a report.

    ``accepted`` holds the rows of the families that go on (empty when rejected); the held-back counts
    are the families and members not in ``accepted``.
    """

    accepted: pd.DataFrame
    held_back_families: int
    held_back_members: int
    rejected: bool
    reason: str | None
    #: Positions in the census of the ``accepted`` rows, in order; None when every row is accepted.
    rows: np.ndarray | None = None


@dataclass(frozen=True)
class ColumnCodes:
    """A census column as validation factorised it: per census row a code into ``distinct``, the
    column's distinct texts in order of first appearance (equal text, equal code). Kept so that a
    later stage need not hash the column again; a subset of the rows may use only some of ``distinct``.

    Holds PHI (the distinct texts): never logged or stored beside the report."""

    codes: np.ndarray
    distinct: pd.Series


@dataclass(frozen=True)
class _Raw:
    """Rows breaking one rule on one column, before tokens are attached."""

    rows: np.ndarray
    column: str
    rule: str
    message: str


@dataclass(frozen=True)
class _Coded:
    """A text column as one code per row into its distinct values: equal text, equal code."""

    codes: np.ndarray  # one int per row
    uniques: pd.Series  # the distinct texts (str), in order of first appearance
    blank: int  # the code of "" (a blank or missing cell); -1 when the column has none

    def spread(self, flags: np.ndarray) -> np.ndarray:
        """Per-distinct-value ``flags`` as per-row flags."""
        per_row: np.ndarray = flags[self.codes]
        return per_row


class _Columns:
    """The census's columns as text, each factorised at most once and shared by every rule reading it.

    Most rules are functions of a cell's text alone, so they run once per distinct value and are spread
    back by code: a census repeats its dates, codes and names (25k distinct dates of birth in 2.3M rows).
    At 1M members the suite and the cross-row rules factorised or scanned the same columns 2-4 times each.
    """

    def __init__(self, census: pd.DataFrame) -> None:
        self._census = census
        self._text: dict[str, pd.Series] = {}
        self._coded: dict[str, _Coded] = {}
        self._in: dict[tuple[str, str], np.ndarray] = {}  # codes_in results of the joint encoding

    def encode(self, names: Iterable[str], *, workers: int, joint: tuple[str, str] | None = None) -> None:
        """Encode the columns ``names`` (and ``joint``, the ``(name, of)`` of a later :meth:`codes_in`)
        ahead of the rules, on up to ``workers`` threads; the rules then read what they would have made.

        pyarrow's hashing releases the GIL, so the encodings overlap (16 columns, 0.05-1.3 s each at 1M
        members). Each result is a function of its column alone and is stored in the order of ``names``,
        whatever order the threads finish in. A column whose encoding raises is left as it was: the rule
        that first reads it encodes it again and raises there, as without this step.
        """
        census = self._census
        if joint is not None and (joint[0] == joint[1] or any(
                c not in census.columns or c in self._coded for c in joint)):
            joint = None
        wanted = [c for c in dict.fromkeys(names) if c in census.columns and c not in self._coded
                  and (joint is None or c not in joint)]
        calls: list[Callable[[], Any]] = []
        if joint is not None:  # the longest encoding first: the others fill the threads around it
            calls.append(partial(_encode_pair, census[joint[1]], census[joint[0]]))
        calls += [partial(_encode_one, census[c]) for c in wanted]
        results = _in_order(calls, workers)
        if joint is not None:
            pair = results.pop(0)
            if not isinstance(pair, Exception):
                name, of = joint
                (self._text[of], self._coded[of]), (self._text[name], self._coded[name]), in_of = pair
                if in_of is not None:
                    self._in[joint] = in_of
        for column, result in zip(wanted, results, strict=True):
            if not isinstance(result, Exception):
                self._text[column], self._coded[column] = result

    def shared(self) -> dict[str, ColumnCodes]:
        """The columns encoded so far whose codes are those of the census's own text: ``str`` columns
        without a missing value (``_text`` fills a missing one with "", so its codes would be of
        another text than the cell's)."""
        census = self._census
        return {name: ColumnCodes(codes=coded.codes, distinct=coded.uniques) for name, coded in self._coded.items()
                if census[name].dtype == "str" and not census[name].hasnans}

    def blank(self, name: str) -> np.ndarray:
        """Per row: is the cell blank or missing? By code when the column is encoded already."""
        if name in self._coded:
            coded = self._coded[name]
            return coded.codes == coded.blank if coded.blank >= 0 else np.zeros(len(coded.codes), dtype=bool)
        return np.asarray(self.text(name) == "", dtype=bool)

    def text(self, name: str) -> pd.Series:
        if name not in self._text:
            self._text[name] = _text(self._census[name])
        return self._text[name]

    def coded(self, name: str) -> _Coded:
        if name not in self._coded:
            self._coded[name] = _coded(*_factorize(self.text(name)))
        return self._coded[name]

    def codes_in(self, name: str, of: str) -> np.ndarray:
        """Per row, the code in column ``of`` of the text of ``name`` (-1 where ``of`` has no such text).

        Both columns get factorised on the way. Arrow text is encoded in one dictionary, ``of`` first:
        its codes are then its own, and ``name``'s texts already in it need no second hash table
        (subscriber ids are member ids: 0.7 s against 1.0 s for two encodings and a look-up, 1M members).
        """
        if (name, of) in self._in:
            return self._in[(name, of)]
        if name not in self._coded and of not in self._coded and name != of:
            joint = _encode_joint(self.text(of), self.text(name))
            if joint is not None:
                self._coded[of], self._coded[name], self._in[(name, of)] = joint
                return self._in[(name, of)]
        return self.coded(name).spread(_index_in(self.coded(name).uniques, self.coded(of).uniques))


def _encode_one(series: pd.Series) -> tuple[pd.Series, _Coded]:
    """A column as text and as codes (what :meth:`_Columns.text` and :meth:`_Columns.coded` make)."""
    text = _text(series)
    return text, _coded(*_factorize(text))


def _encode_pair(of: pd.Series, name: pd.Series) -> tuple[tuple[pd.Series, _Coded], tuple[pd.Series, _Coded],
                                                          np.ndarray | None]:
    """Columns ``of`` and ``name`` as text and codes, with ``name``'s codes in ``of`` when they are encoded
    in one dictionary (:func:`_encode_joint`); ``None`` for those when each is encoded alone."""
    of_text, name_text = _text(of), _text(name)
    joint = _encode_joint(of_text, name_text)
    if joint is None:
        return (of_text, _coded(*_factorize(of_text))), (name_text, _coded(*_factorize(name_text))), None
    return (of_text, joint[0]), (name_text, joint[1]), joint[2]


def _encode_joint(first: pd.Series, second: pd.Series) -> tuple[_Coded, _Coded, np.ndarray] | None:
    """``first`` and ``second`` (Arrow text of one type) encoded in one dictionary, ``first`` first: their
    codes, and per row of ``second`` its code in ``first`` (-1: not there); ``None`` for other text."""
    if (not isinstance(first.array, pd.arrays.ArrowStringArray)
            or not isinstance(second.array, pd.arrays.ArrowStringArray) or first.dtype != second.dtype):
        return None
    import pyarrow as pa

    values = [pa.array(first), pa.array(second)]
    if values[0].type != values[1].type:
        return None
    chunks = [c for v in values for c in (v.chunks if isinstance(v, pa.ChunkedArray) else [v])]
    encoded = pa.chunked_array(chunks, type=values[0].type).combine_chunks().dictionary_encode()
    codes = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int32)
    head, tail = codes[: len(first)], codes[len(first):]
    width = int(head.max()) + 1 if len(head) else 0  # ``first`` comes first: its codes are 0 .. width-1

    def distinct(positions: Any) -> pd.Series:
        values = encoded.dictionary.take(positions) if positions is not None else encoded.dictionary[:width]
        return pd.Series(values.to_pandas(types_mapper={values.type: first.dtype}.get))

    own, joint = pd.factorize(tail)  # ``second``'s own codes, in order of first appearance
    joint = np.asarray(joint, dtype=np.int64)
    in_first: np.ndarray = np.where(joint < width, joint, -1)[own]
    return (_coded(head, distinct(None)), _coded(np.asarray(own, dtype=np.int32), distinct(pa.array(joint))),
            in_first)


def _workers(workers: int | None) -> int:
    """Threads for encoding columns: ``workers``, or the CPUs this process may use (at most 4)."""
    return thread_count(workers)


def _in_order(calls: list[Callable[[], _T]], workers: int) -> list[_T | Exception]:
    """Each of ``calls``' results (or the exception it raised), in the order of ``calls``, made on up to
    ``workers`` threads."""
    return in_order([partial(_outcome, call) for call in calls], workers, name="validation")


def _outcome(call: Callable[[], _T]) -> _T | Exception:
    try:
        return call()
    except Exception as exc:  # kept, not handled: the rule that reads the column raises it again
        return exc


def _coded(codes: np.ndarray, distinct: pd.Series) -> _Coded:
    blank = np.flatnonzero(np.asarray(distinct == "", dtype=bool))
    return _Coded(codes=codes, uniques=distinct, blank=int(blank[0]) if len(blank) else -1)


def _factorize(text: pd.Series) -> tuple[np.ndarray, pd.Series]:
    """(codes, distinct values) of a text column without gaps, in order of first appearance.

    Arrow-backed text is encoded by pyarrow over its chunks joined into one array: the int32 indices
    come out as they are, where pandas' factorize unifies one dictionary per chunk (a 433 MB CSV reads
    as ~400 chunks) and widens the indices to int64 (0.46 s against 0.70 s for the SSNs at 1M members).
    """
    if isinstance(text.array, pd.arrays.ArrowStringArray):
        import pyarrow as pa

        values = pa.array(text)
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        encoded = values.dictionary_encode()
        distinct = pd.Series(encoded.dictionary.to_pandas(types_mapper={encoded.dictionary.type: text.dtype}.get))
        return np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int32), distinct
    codes, uniques = pd.factorize(text, use_na_sentinel=False)
    return np.asarray(codes, dtype=np.int64), pd.Series(uniques)


# ---------------------------------------------------------------------------------------------- validate
def validate_census(census: pd.DataFrame, suite_path: Path, schema: CensusSchema,
                    tokenizer: MemberTokenizer, *, as_of: date, source_name: str,
                    workers: int | None = None, plans: PlanCatalogue | None = None,
                    carrier: CarrierRules | None = None) -> ValidationReport:
    """Run the suite at ``suite_path`` and the cross-row rules over ``census``; collect every finding.

    ``plans`` (the feed's :class:`~carrierfeeds.config.PlanCatalogue`; every feed run, ``validate`` and
    ``preview`` pass it) adds the plan rule: a plan code no carrier mapping knows and the feed does not
    authorise is a finding (``unknown_plan``), a known one the feed does not authorise is counted in
    ``excluded``. Without it plan codes are not judged.

    ``carrier``: what the feed's carrier mapping makes of the rows (:class:`CarrierRules`); with it the
    report also holds every row the build would refuse, so a census validation accepts is never refused
    by the build. The columns the rules read are encoded on ``workers`` threads first (default: the CPUs
    this process may use, at most 4); the report and any error do not depend on ``workers``."""
    report, _ = validate_census_coded(census, suite_path, schema, tokenizer, as_of=as_of,
                                      source_name=source_name, workers=workers, plans=plans, carrier=carrier)
    return report


def validate_census_coded(census: pd.DataFrame, suite_path: Path, schema: CensusSchema,
                          tokenizer: MemberTokenizer, *, as_of: date, source_name: str,
                          workers: int | None = None, plans: PlanCatalogue | None = None,
                          carrier: CarrierRules | None = None,
                          ) -> tuple[ValidationReport, dict[str, ColumnCodes]]:
    """:func:`validate_census`, and the columns it factorised on the way (see :class:`ColumnCodes`) by
    name: the pipeline writes the accepted rows' low-cardinality columns as Arrow dictionaries from them
    instead of hashing them again (:mod:`carrierfeeds.census.accepted`)."""
    warnings: list[str] = []
    if ROW_NUMBER not in census.columns:
        census = census.assign(**{ROW_NUMBER: np.arange(2, len(census) + 2, dtype=np.int64)})
        warnings.append("the census had no row numbers; rows are numbered from 2 in frame order")
    columns = _Columns(census)
    started = time.perf_counter()
    cross_row = all(c in census.columns for c in _CROSS_ROW_COLUMNS)
    columns.encode([*_encoded_by_suite(_load_suite(suite_path)),
                    *((*_CROSS_ROW_COLUMNS, "hire_date") if cross_row else ())],
                   workers=_workers(workers), joint=("subscriber_id", "member_id") if cross_row else None)
    raws, suite_warnings = _run_suite(census, suite_path, columns=columns)
    warnings += suite_warnings
    gx_s = time.perf_counter() - started
    started = time.perf_counter()
    raws += _cross_row_rules(census, schema, as_of, columns=columns)
    excluded: dict[str, int] = {}
    if plans is not None and "plan_code" in census.columns:
        plan_raws, excluded = _plan_rule(columns.coded("plan_code"), plans,
                                         census[ROW_NUMBER].to_numpy(dtype=np.int64))
        raws += plan_raws
    raws += _build_rules(census, columns, carrier, raws)
    cross_s = time.perf_counter() - started

    empty = pd.Series("", index=census.index, dtype="str")
    row_numbers = census[ROW_NUMBER].to_numpy(dtype=np.int64)

    findings, rows, rule_counts = _to_findings(
        raws, row_numbers, columns.coded("member_id") if "member_id" in census.columns else None, tokenizer)
    failed_mask = np.isin(row_numbers, np.unique(rows[rows != HEADER_ROW]))
    # distinct member ids (not blank) and families, from the codes the rules already made
    if "member_id" in census.columns:
        member_codes = columns.coded("member_id")
        members = len(member_codes.uniques) - (member_codes.blank >= 0)
    else:
        members = 0
    if "subscriber_id" in census.columns:
        family_codes = columns.coded("subscriber_id")
        families = len(family_codes.uniques)
        failed_families = int(np.count_nonzero(np.bincount(family_codes.codes[failed_mask],
                                                           minlength=families)))
    else:
        families, failed_families = int(empty.nunique()), int(empty[failed_mask].nunique())
    report = ValidationReport(
        source_name=source_name, rows=len(census), members=members, families=families,
        failed_rows=int(failed_mask.sum()), failed_families=failed_families, findings=tuple(findings),
        rule_counts=rule_counts, warnings=tuple(warnings), excluded=excluded)
    log.info("%s: validated %d rows (suite %.2fs, cross-row %.2fs): %d findings in %d rows, %d families",
             source_name, report.rows, gx_s, cross_s, len(findings), report.failed_rows,
             report.failed_families)
    return report, columns.shared()


def _text(series: pd.Series) -> pd.Series:
    if series.dtype == "str" and not series.hasnans:
        return series  # already text without gaps (what the readers produce): no copy
    return series.astype("str").fillna("")


def _blank_as_missing(series: pd.Series) -> pd.Series:
    text = _text(series)
    return text.where(text != "")


#: Expectation types evaluated as vectorised masks over the census, with Great Expectations' own pandas
#: semantics (the same pandas calls on the same blank-as-missing columns), and the kwargs each may carry.
#: Anything else in a suite (another type, ``mostly``, ``row_condition``, suite parameters...) runs
#: through GX itself. GX costs ~2-3 s to import, copies and hashes the whole frame, and evaluates each
#: expectation through its metric graph: 6-20x the masks' time on the same checks.
_VECTORISED: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "expect_column_to_exist": (frozenset({"column"}), frozenset()),
    "expect_column_values_to_not_be_null": (frozenset({"column"}), frozenset()),
    "expect_column_values_to_match_regex": (frozenset({"column", "regex"}), frozenset()),
    "expect_column_values_to_not_match_regex": (frozenset({"column", "regex"}), frozenset()),
    "expect_column_values_to_be_in_set": (frozenset({"column", "value_set"}), frozenset()),
    "expect_column_pair_values_a_to_be_greater_than_b": (frozenset({"column_A", "column_B"}),
                                                         frozenset({"or_equal", "ignore_row_if"})),
}
#: Keys an expectation object may hold for the vectorised path (``meta`` names the rule and message).
_EXPECTATION_KEYS = frozenset({"type", "kwargs", "meta", "id", "notes", "description"})
_SUITE_KEYS = frozenset({"name", "expectations", "meta", "suite_parameters"})
_PAIR_IGNORE = ("both_values_are_missing", "either_value_is_missing", "neither")


def _load_suite(suite_path: Path) -> dict[str, Any]:
    try:
        data = json.loads(suite_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("suite file not found", file=str(suite_path)) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not valid JSON at line {exc.lineno}, column {exc.colno}",
                          file=str(suite_path)) from None
    if not isinstance(data, dict):
        raise ConfigError("expected an ExpectationSuite object", file=str(suite_path))
    return {k: v for k, v in data.items() if k not in ("id", "notes")}


def _suite_fast(data: dict[str, Any]) -> bool:
    """Whether the suite ``data`` may run as masks (its vectorisable expectations; GX runs the rest)."""
    return (set(data) <= _SUITE_KEYS and isinstance(data.get("name"), str)
            and isinstance(data.get("expectations"), list) and not data.get("suite_parameters")
            and isinstance(data.get("meta", {}), dict))


def _encoded_by_suite(data: dict[str, Any]) -> list[str]:
    """The columns the suite ``data``'s masks read as codes (every rule but not-null and column-exists)."""
    if not _suite_fast(data):
        return []
    columns: list[str] = []
    for expectation in data["expectations"]:
        if _vectorisable(expectation) and expectation["type"] not in (
                "expect_column_to_exist", "expect_column_values_to_not_be_null"):
            columns += _describe(expectation["type"], expectation["kwargs"], None)[0]
    return columns


def _vectorisable(expectation: Any) -> bool:
    """True when ``expectation`` is one the masks evaluate exactly as GX would (types checked strictly;
    anything unusual goes to GX, which also reports a malformed expectation as GX does)."""
    if not isinstance(expectation, dict) or not set(expectation) <= _EXPECTATION_KEYS:
        return False
    kind, kwargs, meta = expectation.get("type"), expectation.get("kwargs"), expectation.get("meta")
    if not isinstance(kind, str) or kind not in _VECTORISED or not isinstance(kwargs, dict):
        return False
    if meta is not None and not isinstance(meta, dict):
        return False
    if not all(isinstance(expectation.get(k), (str, type(None))) for k in ("id", "description")):
        return False
    notes = expectation.get("notes")
    if not (notes is None or isinstance(notes, str) or (isinstance(notes, list)
                                                          and all(isinstance(n, str) for n in notes))):
        return False
    required, optional = _VECTORISED[kind]
    if not required <= set(kwargs) <= required | optional:
        return False
    if not all(isinstance(kwargs[k], str) for k in ("column", "column_A", "column_B", "regex") if k in kwargs):
        return False
    if not all(kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs):
        return False  # GX refuses a blank column name; the masks would skip the rule as "not in the census"
    if "value_set" in kwargs and not (isinstance(kwargs["value_set"], list) and all(
            isinstance(v, str) for v in kwargs["value_set"])):
        return False
    if kwargs.get("or_equal") not in (None, True, False):
        return False
    return kwargs.get("ignore_row_if", _PAIR_IGNORE[0]) in _PAIR_IGNORE


def _describe(kind: str, kwargs: dict[str, Any], meta: dict[str, Any] | None) -> tuple[list[str], str, str, str]:
    """(columns the expectation reads, the column findings name, rule, message)."""
    columns = [kwargs[k] for k in ("column", "column_A", "column_B") if isinstance(kwargs.get(k), str)]
    columns += [str(c) for c in kwargs.get("column_list") or []]
    # a pair rule is reported on its first column (coverage_end for "end not before start")
    column = columns[0] if columns and "column_list" not in kwargs else ",".join(columns)
    meta = dict(meta or {})
    rule = str(meta.get("rule") or kind)
    message = str(meta.get("message") or f"fails the rule {kind}")
    return columns, column, rule, message


def _run_suite(census: pd.DataFrame, suite_path: Path, *, engine: str = "auto",
               columns: _Columns | None = None) -> tuple[list[_Raw], list[str]]:
    """Run the suite file and reduce each failed expectation to rows, column, rule.

    The suite file is the source of truth and stays a GX suite. ``engine="auto"`` evaluates the
    expectation types in :data:`_VECTORISED` as masks (GX's pandas semantics: blanks are missing, value
    rules skip missing cells) and hands the rest, if any, to GX; ``engine="gx"`` runs all of it through
    GX (the reference the masks are tested against). Either way only rows, column and rule come out.
    ``columns`` shares the census's factorised columns with the cross-row rules.
    """
    data = _load_suite(suite_path)
    expectations = data.get("expectations")
    if engine != "auto" or not _suite_fast(data) or not isinstance(expectations, list):
        return _run_gx(census, data, suite_path)
    fast = [e for e in expectations if _vectorisable(e)]
    slow = [e for e in expectations if not _vectorisable(e)]
    raws: list[_Raw] = []
    warnings: list[str] = []
    if slow:
        raws, warnings = _run_gx(census, {**data, "expectations": slow}, suite_path)
    if columns is None:
        columns = _Columns(census)
    rn = census[ROW_NUMBER].to_numpy(dtype=np.int64)
    with warnings_module.catch_warnings():
        # pandas warns when a regex has a capturing group (the SSN repeated-digit back-reference needs one)
        warnings_module.filterwarnings("ignore", message="This pattern is interpreted as a regular")
        for expectation in fast:
            kind, kwargs = expectation["type"], expectation["kwargs"]
            cols, column, rule, message = _describe(kind, kwargs, expectation.get("meta"))
            absent = [c for c in cols if c not in census.columns]
            if kind == "expect_column_to_exist":
                if absent:
                    raws.append(_Raw(rows=np.array([HEADER_ROW], dtype=np.int64), column=column, rule=rule,
                                     message=message))
                continue
            if absent:
                # the column's absence is reported once, by expect_column_to_exist, not by every rule on it
                warnings.append(f"{kind} on {absent} skipped: column not in the census")
                continue
            try:
                rows = _unexpected_rows(kind, kwargs, columns, rn)
            except Exception:  # a bad regex or value: GX reports it as an expectation that could not run
                raise ConfigError(f"expectation {kind} on {cols} could not run", file=suite_path.name) from None
            if len(rows):
                raws.append(_Raw(rows=rows, column=column, rule=rule, message=message))
    return raws, warnings


def _unexpected_rows(kind: str, kwargs: dict[str, Any], columns: _Columns, rn: np.ndarray) -> np.ndarray:
    """Row numbers an expectation of :data:`_VECTORISED` finds unexpected: GX's pandas metric, as masks.

    Column-map rules look at non-missing cells only (GX filters missing ones out first, except for the
    not-null rule); the pair rule drops rows per ``ignore_row_if`` and compares the text as GX does.
    Set and regex rules make the same pandas call GX does, once per distinct value of the column, and
    are spread back by code. pandas picks pyarrow's RE2 or Python's re (look-arounds, back-references,
    ``$`` on text holding a newline) from the pattern and the characters present, which the distinct
    values share with the cells; before, each rule scanned all 2.3M cells for newlines just to decide.
    """
    if kind == "expect_column_pair_values_a_to_be_greater_than_b":
        return _unordered_rows(columns.coded(kwargs["column_A"]), columns.coded(kwargs["column_B"]),
                               kwargs.get("ignore_row_if", _PAIR_IGNORE[0]), bool(kwargs.get("or_equal")), rn)
    if kind == "expect_column_values_to_not_be_null":
        missing: np.ndarray = rn[columns.blank(kwargs["column"])]
        return missing
    coded = columns.coded(kwargs["column"])
    distinct = coded.uniques
    ok: pd.Series | np.ndarray
    if kind == "expect_column_values_to_be_in_set":
        ok = distinct.isin(kwargs["value_set"])
    else:
        ok = _contains(distinct, kwargs["regex"])
        if kind == "expect_column_values_to_not_match_regex":
            ok = ~ok
    failing = ~np.asarray(ok, dtype=bool)
    if coded.blank >= 0:
        failing[coded.blank] = False  # a missing cell is the not-null rule's business
    if not failing.any():
        return np.zeros(0, dtype=np.int64)  # every distinct value passes: no row to look at
    unexpected: np.ndarray = rn[coded.spread(failing)]
    return unexpected


def _contains(distinct: pd.Series, regex: str) -> np.ndarray:
    """``distinct.str.contains(regex)``: per text, does ``regex`` match in it (as GX asks pandas).

    pandas runs Python's re over every value once one of them holds a newline and the pattern has
    ``$`` (Python's ``$`` also matches before a trailing newline, RE2's does not): 5.4 s for the 2M
    distinct SSNs and dates of a dirtied 1M census against ~0.4 s by RE2. Where both engines read the
    pattern alike on text without a newline (:func:`_same_without_newlines`), only the texts holding a
    newline go to Python's re, as pandas' own fallback calls it (``search``), and the rest to pandas.
    """
    if isinstance(distinct.array, pd.arrays.ArrowStringArray) and _same_without_newlines(regex):
        newline = np.asarray(distinct.str.contains("\n", regex=False), dtype=bool)
        if newline.any():
            found = np.empty(len(distinct), dtype=bool)
            found[~newline] = np.asarray(distinct[~newline].str.contains(regex), dtype=bool)
            search = re.compile(regex).search
            found[newline] = [search(text) is not None for text in distinct[newline].tolist()]
            return found
    return np.asarray(distinct.str.contains(regex), dtype=bool)


def _same_without_newlines(regex: str) -> bool:
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


def _unordered_rows(a: _Coded, b: _Coded, ignore: str, or_equal: bool, rn: np.ndarray) -> np.ndarray:
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
    left = _blank_as_missing(a.uniques.iloc[present // len(b.uniques)].reset_index(drop=True))
    right = _blank_as_missing(b.uniques.iloc[present % len(b.uniques)].reset_index(drop=True))
    ordered = np.asarray((left >= right) if or_equal else (left > right), dtype=bool)
    at = np.searchsorted(present, pairs)  # every pair is present
    bad: np.ndarray = rn[keep][~ordered[at]]
    return bad


def check_suite(suite_path: Path) -> int:
    """Build the suite file with Great Expectations itself and compile its regexes; the expectation count.

    A run evaluates the common expectation types as masks and may never hand the suite to GX, so an edit
    GX would refuse (an unknown type, a kwarg the type does not take, ``mostly`` above 1, ``meta`` that is
    not an object) would otherwise pass unnoticed until the suite or GX changes. ``feeds check`` calls
    this to catch it before any run. Raises :class:`ConfigError` naming the file.
    """
    data = _load_suite(suite_path)
    suite = _build_gx_suite(data, suite_path)
    for number, expectation in enumerate(data.get("expectations") or [], start=1):
        kwargs = expectation.get("kwargs") if isinstance(expectation, dict) else None
        regex = kwargs.get("regex") if isinstance(kwargs, dict) else None
        if isinstance(regex, str):
            try:
                re.compile(regex)
            except re.error as exc:
                raise ConfigError(f"expectation {number} ({expectation.get('type')}) has a regex that does "
                                  f"not compile: {exc.msg} at position {exc.pos}", file=str(suite_path)) from None
    return len(suite.expectations)


def _build_gx_suite(data: dict[str, Any], suite_path: Path) -> Any:
    """The suite ``data`` as GX's ExpectationSuite, or a ConfigError: GX's refusal, or an expectation
    GX dropped instead of refusing."""
    os.environ["GX_ANALYTICS_ENABLED"] = "False"  # must be set before GX is imported: no network calls
    from great_expectations.core import ExpectationSuite

    try:
        suite = ExpectationSuite(**data)
    except Exception as exc:  # GX raises many types for a malformed suite; all mean "fix the file"
        raise ConfigError(f"not a valid Great Expectations suite ({type(exc).__name__}"
                          f"{_first_refused(ExpectationSuite, data)})", file=str(suite_path)) from None
    given = data.get("expectations") or []
    if len(suite.expectations) != len(given):
        # GX logs an expectation it cannot build (an unknown type, say) and drops it: a rule silently
        # off. Fail closed instead, naming the type of the first one it dropped.
        built = [getattr(e, "expectation_type", None) for e in suite.expectations]
        first = next((i for i, g in enumerate(given) if i >= len(built) or not isinstance(g, dict)
                      or g.get("type") != built[i]), len(built))
        kind = given[first].get("type") if first < len(given) and isinstance(given[first], dict) else None
        raise ConfigError(f"Great Expectations could not build {len(given) - len(built)} expectation(s); "
                          f"the first has type {kind!r}", file=str(suite_path))
    return suite


def _first_refused(suite_class: Any, data: dict[str, Any]) -> str:
    """Which expectation GX refuses, built one by one (the suite's own error does not say): its number,
    type and the fields GX names; empty when none is refused alone."""
    expectations = data.get("expectations")
    for number, expectation in enumerate(expectations if isinstance(expectations, list) else [], start=1):
        try:
            suite_class(name="check", expectations=[expectation])
        except Exception as exc:  # the same refusal as the whole suite's, now pinned to one expectation
            errors = getattr(exc, "errors", None)
            fields = sorted({str(e["loc"][0]) for e in errors() if e.get("loc")}) if callable(errors) else []
            kind = expectation.get("type") if isinstance(expectation, dict) else None
            return f"; expectation {number} ({kind})" + (f", field(s) {fields}" if fields else "")
    return ""


def _run_gx(census: pd.DataFrame, data: dict[str, Any], suite_path: Path) -> tuple[list[_Raw], list[str]]:
    """The GX adapter: run the suite ``data`` (read from ``suite_path``) through Great Expectations."""
    suite = _build_gx_suite(data, suite_path)  # sets GX_ANALYTICS_ENABLED before GX is imported
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    suite_name = suite_path.name

    # GX sees empty cells as missing, so not-null catches blanks and value rules skip optional blanks
    frame = pd.DataFrame({c: (s if c == ROW_NUMBER else _blank_as_missing(s)) for c, s in census.items()})
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    suite = context.suites.add(suite)
    batch = (context.data_sources.add_pandas("census").add_dataframe_asset("census")
             .add_batch_definition_whole_dataframe("census")
             .get_batch(batch_parameters={"dataframe": frame}))
    with warnings_module.catch_warnings():
        # pandas warns when a regex has a capturing group (the SSN repeated-digit back-reference needs one)
        warnings_module.filterwarnings("ignore", message="This pattern is interpreted as a regular")
        result = batch.validate(suite, result_format={
            "result_format": "COMPLETE", "unexpected_index_column_names": [ROW_NUMBER],
            "return_unexpected_index_query": False, "partial_unexpected_count": 0})

    raws: list[_Raw] = []
    warnings: list[str] = []
    for item in result.results:
        config = item.expectation_config
        if config is None:
            raise ConfigError("a suite result carried no expectation", file=suite_name)
        kwargs = dict(config.kwargs)
        columns, column, rule, message = _describe(config.type, kwargs, config.meta)
        absent = [c for c in columns if c not in frame.columns]
        if absent and config.type != "expect_column_to_exist":
            # the column's absence is reported once, by expect_column_to_exist, not by every rule on it
            warnings.append(f"{config.type} on {absent} skipped: column not in the census")
            continue
        if _raised(item.exception_info):
            raise ConfigError(f"expectation {config.type} on {columns} could not run", file=suite_name)
        if item.success:
            continue
        res = item.result or {}
        index_list = res.get("unexpected_index_list")
        if index_list is None:
            rows = np.array([HEADER_ROW], dtype=np.int64)  # a table- or column-level rule: the file
        else:
            rows = np.fromiter((int(d[ROW_NUMBER]) for d in index_list), dtype=np.int64,
                               count=len(index_list))
        raws.append(_Raw(rows=rows, column=column, rule=rule, message=message))
    return raws, warnings


def _raised(info: Any) -> bool:
    """Whether a GX result's ``exception_info`` records an exception: GX 1.x keys it by metric, one dict
    per metric that failed to compute (a bad regex, say), or gives one dict for the expectation."""
    if not isinstance(info, dict):
        return False
    if info.get("raised_exception"):
        return True
    return any(isinstance(v, dict) and v.get("raised_exception") for v in info.values())


#: The columns the cross-row rules read (and encode), all or none; ``hire_date`` too when there.
_CROSS_ROW_COLUMNS = ("member_id", "subscriber_id", "relationship", "plan_code", "coverage_start",
                      "coverage_end", "dob", "first_name", "last_name", "ssn")


def _cross_row_rules(census: pd.DataFrame, schema: CensusSchema, as_of: date, *,
                     columns: _Columns | None = None) -> list[_Raw]:
    """Rules across rows and families, on integer codes of the text (equal text, equal code).

    Each column is factorised once (``columns``, shared with the suite); rules of one cell's text run
    once per distinct value; family and member rules compare codes after one sort by member.
    """
    if any(c not in census.columns for c in _CROSS_ROW_COLUMNS):
        return []  # the suite's required-column findings already fail the file
    if columns is None:
        columns = _Columns(census)
    rn = census[ROW_NUMBER].to_numpy(dtype=np.int64)
    out: list[_Raw] = []

    def add(mask: np.ndarray, column: str, rule: str, message: str) -> None:
        if mask.any():
            out.append(_Raw(rows=rn[mask], column=column, rule=rule, message=message))

    date_columns = ("dob", "coverage_start", "coverage_end", *(("hire_date",) if "hire_date" in census.columns
                                                              else ()))
    dates: dict[str, pd.Series] = {}  # per date column, its distinct texts parsed (NaT: blank or not a date)
    for c in date_columns:
        coded = columns.coded(c)
        dates[c] = _parse_iso(coded.uniques)
        not_real = np.asarray(coded.uniques.str.match(_ISO_RE) & dates[c].isna(), dtype=bool)
        add(coded.spread(not_real), c, "real_date", "date does not exist in the calendar")

    # subscriber_id as a member_id code (-1: the text is no member_id), so "names an employee's member_id"
    # and "equals member_id" are comparisons of codes
    sid_as_mid = columns.codes_in("subscriber_id", of="member_id")
    member, family, plan = columns.coded("member_id"), columns.coded("subscriber_id"), columns.coded("plan_code")
    relationship = columns.coded("relationship")
    mc = member.codes
    has_mid, has_sid, has_plan = mc != member.blank, family.codes != family.blank, plan.codes != plan.blank
    is_ee = relationship.spread(np.asarray(relationship.uniques == "EE", dtype=bool))
    is_ee_id = np.zeros(len(member.uniques) + 1, dtype=bool)  # [-1] (no member_id) stays False
    is_ee_id[mc[is_ee & has_mid]] = True
    names_ee = is_ee_id[sid_as_mid]
    add(~is_ee & has_sid & ~names_ee, "subscriber_id", "subscriber_present",
        "subscriber_id names no employee (EE) row in this file")
    add(is_ee & has_mid & has_sid & (mc != sid_as_mid), "subscriber_id", "subscriber_id_self",
        "on an employee's rows subscriber_id must equal member_id")
    add(_within(is_ee, _varies(family.codes[is_ee], mc[is_ee])), "relationship", "one_subscriber_per_family",
        "a family (subscriber_id) must have exactly one employee (EE)")
    # The same period of a plan twice; several periods of one plan (history, a rehire) are a supported
    # shape, and periods that overlap on an insurance line are overlapping_coverage (_build_rules).
    repeats = _repeated(mc, plan.codes) & has_mid & has_plan  # nearly always none: only those are looked at
    if repeats.any():
        again = np.flatnonzero(repeats)
        twice = _repeated(_pair_keys(mc[again], plan.codes[again]), columns.coded("coverage_start").codes[again])
        add(_at(len(census), again[twice]), "plan_code", "unique_member_plan",
            "the same member_id appears twice for the same plan_code and coverage_start")
    by_member = np.argsort(mc, kind="stable")  # one sort, shared by the four identity columns
    for c in _IDENTITY:
        add(_varies(mc, columns.coded(c).codes, by_member) & has_mid, c, "same_person_fields",
            f"the same member_id has different {c} values on different rows")

    # a dependent's coverage must sit inside the subscriber's coverage in the same plan: each dependent
    # row against the employee row (member_id == subscriber_id) with its subscriber and plan whose
    # period started last on or before the dependent's start (the first such row when none did), so
    # a subscriber with several periods of a plan (history, a rehire) is judged period by period
    width = len(plan.uniques)
    start, end = columns.coded("coverage_start"), columns.coded("coverage_end")
    start_u, end_u = dates["coverage_start"].to_numpy(), dates["coverage_end"].to_numpy()
    start_day = _day_numbers(start_u)[start.codes]  # -1 where not a date
    subs = np.flatnonzero(is_ee & (mc == sid_as_mid))
    sub_keys = mc[subs].astype(np.int64) * width + plan.codes[subs]
    by_key = np.lexsort((np.arange(len(subs)), start_day[subs], sub_keys))
    subs, sub_keys = subs[by_key], sub_keys[by_key]
    span = _DAY_SPAN
    deps = np.flatnonzero(~is_ee & names_ee)
    dep_keys = sid_as_mid[deps].astype(np.int64) * width + plan.codes[deps]
    latest = np.searchsorted(sub_keys * span + start_day[subs], dep_keys * span + start_day[deps], side="right") - 1
    first_of_key = np.searchsorted(sub_keys, dep_keys)
    fits = (latest >= 0) & (sub_keys[np.maximum(latest, 0)] == dep_keys) if len(subs) else np.zeros(
        len(deps), dtype=bool)
    at = np.where(fits, latest, np.minimum(first_of_key, max(len(subs) - 1, 0)))
    in_plan = sub_keys[at] == dep_keys if len(subs) else np.zeros(len(deps), dtype=bool)
    dep_start, dep_end = start_u[start.codes[deps[in_plan]]], end_u[end.codes[deps[in_plan]]]
    sub_start, sub_end = start_u[start.codes[subs[at[in_plan]]]], end_u[end.codes[subs[at[in_plan]]]]

    def add_rows(rows: np.ndarray, column: str, rule: str, message: str) -> None:
        add(_at(len(census), rows), column, rule, message)

    add_rows(deps[~in_plan], "plan_code", "dependent_plan_not_elected",
             "a dependent is enrolled in a plan the subscriber has not elected")
    add_rows(deps[in_plan][dep_start < sub_start], "coverage_start", "dependent_starts_before_subscriber",
             "a dependent's coverage starts before the subscriber's")
    ends_after = ~np.isnat(sub_end) & (np.isnat(dep_end) | (dep_end > sub_end))
    add_rows(deps[in_plan][ends_after], "coverage_end", "dependent_ends_after_subscriber",
             "a dependent's coverage ends after the subscriber's (or is open while the subscriber's ended)")

    day = pd.Timestamp(as_of)
    limit = schema.dependent_age_limit
    dob, dob_u, end_d = columns.coded("dob"), dates["dob"], dates["coverage_end"]
    is_ch = relationship.spread(np.asarray(relationship.uniques == "CH", dtype=bool))
    add(is_ch & _past_age_limit(dob, dob_u, end, end_d, limit, schema.dependent_coverage_ends, day),
        "coverage_end", "dependent_age_limit",
        f"child's coverage runs past the dependent age limit ({limit}): it must end by "
        f"{_AGE_LIMIT_ENDS[schema.dependent_coverage_ends]} (schema setting dependent_coverage_ends), "
        "and have an end date once that birthday is reached")
    implausible = dob_u.notna() & ((dob_u > day) | (dob_u < pd.Timestamp("1900-01-01")))
    add(dob.spread(np.asarray(implausible, dtype=bool)), "dob",
        "dob_plausible", "date of birth is in the future or before 1900")

    ssn = columns.coded("ssn")
    has_ssn = ssn.codes != ssn.blank
    add(_within(has_ssn, _varies(ssn.codes[has_ssn], mc[has_ssn])), "ssn", "ssn_unique",
        "the same SSN appears on more than one member_id")
    return out


#: How the age-limit message names the last day a child's coverage may run, per dependent_coverage_ends.
_AGE_LIMIT_ENDS = {"birthday": "the birthday that reaches the limit",
                   "end_of_month": "the last day of the month of the birthday that reaches the limit",
                   "end_of_year": "the last day of the year of the birthday that reaches the limit"}


def _past_age_limit(dob: _Coded, dob_u: pd.Series, end: _Coded, end_u: pd.Series, limit: int, ends: str,
                    day: pd.Timestamp) -> np.ndarray:
    """Per row: coverage that runs past the last day it may at the dependent age limit.

    Judged on the coverage's own dates, not the run's: coverage ending by the allowed day (the birthday,
    or the end of its month or year, per ``ends``) passes on every day before it ends. Coverage ending
    after that day is refused whenever it is stated; open coverage once the birthday is reached (the
    employer must send the end). Worked out per distinct date of birth, then per row of codes.
    """
    born = dob_u.where(dob_u <= day)  # a date of birth in the future is dob_plausible's business
    birthday = born + pd.DateOffset(years=limit)  # 29 February: 28 February in a common year
    if ends == "end_of_month":
        allowed = birthday + pd.offsets.MonthEnd(0)
    elif ends == "end_of_year":
        allowed = birthday + pd.offsets.YearEnd(0)
    else:
        allowed = birthday
    birthday_row, allowed_row = birthday.to_numpy()[dob.codes], allowed.to_numpy()[dob.codes]
    end_row = end_u.to_numpy()[end.codes]
    is_open = np.isnat(end_row)
    limited = ~np.isnat(birthday_row)
    late: np.ndarray = limited & np.where(is_open, birthday_row <= day.to_datetime64(), end_row > allowed_row)
    return late


def _plan_rule(plan: _Coded, plans: PlanCatalogue, rn: np.ndarray) -> tuple[list[_Raw], dict[str, int]]:
    """Plan codes judged per distinct code: unknown ones are findings, known but unauthorised ones are
    counted as expected exclusions. A blank code is the not-null rule's business."""
    codes = plan.uniques.str.strip()  # as build_enrollment reads them
    blank = np.asarray(codes == "", dtype=bool)
    known = np.asarray(codes.isin(sorted(plans.known)), dtype=bool) & ~blank
    authorised = np.asarray(codes.isin(sorted(plans.authorised)), dtype=bool)
    unknown = plan.spread(~known & ~blank)
    raws = [_Raw(rows=rn[unknown], column="plan_code", rule="unknown_plan",
                 message="plan code is listed by no carrier mapping and not authorised for this feed (a typo, "
                         "or an employer plan name the schema's plan_codes does not map)")] if unknown.any() else []
    left_out = int(np.count_nonzero(plan.spread(known & ~authorised)))
    return raws, ({"plan_not_authorized": left_out} if left_out else {})
#: Day numbers (days since 1970) of any census date fit below this, so key * span + day orders by key, then day.
_DAY_SPAN = 1 << 20


def _day_numbers(parsed: np.ndarray) -> np.ndarray:
    """Parsed dates (datetime64, NaT for blanks and non-dates) as days since 1970; -1 for NaT."""
    days = np.asarray(parsed, dtype="datetime64[D]").astype(np.int64)
    out: np.ndarray = np.where(np.isnat(parsed), -1, np.clip(days, 0, _DAY_SPAN - 2))
    return out


@dataclass(frozen=True)
class CarrierRules:
    """What the build will make of a census for one feed's carrier, so validation can refuse first
    whatever the build could not take (:func:`_build_rules`).

    ``lines``: each plan code the build maps (authorised for the feed and in the mapping) to its
    insurance line (HD03); ``coverage_levels``: the levels the mapping knows; ``names``: the text rule
    and lengths names are folded to; ``columns``: the census fields the carrier may see (the build drops
    the others before it reads them); ``hire_date``: whether the build reads hire dates.
    """

    lines: dict[str, str]
    coverage_levels: frozenset[str]
    names: TextRule
    last_name_max: int
    first_name_max: int
    columns: frozenset[str]
    hire_date: bool

    @classmethod
    def for_feed(cls, mapping: CarrierMapping, authorised_plans: Iterable[str]) -> CarrierRules:
        authorised = set(authorised_plans)
        limit = mapping.name_max_length
        return cls(lines={code: plan.insurance_line for code, plan in mapping.plans.items() if code in authorised},
                   coverage_levels=frozenset(mapping.coverage_levels),
                   names=TextRule(mapping.charset, mapping.name_case),
                   last_name_max=mapping.last_name_max_length or min(limit, 60),
                   first_name_max=mapping.first_name_max_length or min(limit, 35),
                   columns=frozenset(mapping.allowlist), hire_date="hire" in mapping.dates_sent)


#: Census fields the build cannot do without (enrollment.build_enrollment).
_BUILD_COLUMNS = ("member_id", "subscriber_id", "relationship", "last_name", "first_name", "plan_code",
                  "coverage_level", "coverage_start")
_BUILD_ISO = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


def _build_rules(census: pd.DataFrame, columns: _Columns, carrier: CarrierRules | None,
                 found: list[_Raw]) -> list[_Raw]:
    """The rows the build would refuse, as findings: a census validation accepts is never refused later.

    The build (enrollment.build_enrollment, then the diff) maps only the rows whose plan the carrier
    gets (``carrier.lines``; every row without ``carrier``) and refuses: a missing column it needs, an
    identifier that folds to nothing, a relationship other than EE/SP/CH, a name with nothing left
    after the carrier's text rule, a coverage level the mapping does not know, a date that is not
    YYYY-MM-DD, and two periods of one member on one insurance line that overlap (which period
    counts on the run day would be ambiguous). A cell the suite already flagged in the same column is
    not reported again.
    """
    rn = census[ROW_NUMBER].to_numpy(dtype=np.int64)
    missing = [c for c in _BUILD_COLUMNS if c not in census.columns]
    if missing:
        return [_Raw(rows=np.array([HEADER_ROW], dtype=np.int64), column=c, rule="required_column",
                     message="the build needs this column") for c in missing]

    def visible(column: str) -> bool:  # the build drops a column off the allowlist before reading it
        return column in census.columns and (carrier is None or column in carrier.columns)

    plan = columns.coded("plan_code")
    if carrier is not None:
        plan_line = plan.uniques.str.strip().map(carrier.lines)
        mapped = plan.spread(np.asarray(plan_line.notna(), dtype=bool))
    else:
        plan_line = plan.uniques.str.strip()
        mapped = np.ones(len(rn), dtype=bool)
    flagged: dict[str, set[int]] = {}
    for raw in found:
        flagged.setdefault(raw.column, set()).update(raw.rows.tolist())
    out: list[_Raw] = []

    def add(per_value: np.ndarray, coded: _Coded, column: str, rule: str, message: str) -> None:
        if not per_value.any():
            return  # no distinct value breaks the rule: no row to look at
        rows = rn[coded.spread(per_value) & mapped]
        already = flagged.get(column)
        if already:
            rows = rows[~np.isin(rows, np.fromiter(already, dtype=np.int64, count=len(already)))]
        if len(rows):
            out.append(_Raw(rows=rows, column=column, rule=rule, message=message))

    for c in ("member_id", "subscriber_id"):
        coded = columns.coded(c)
        empty = fold_column(coded.uniques, 50).values == ""
        add(np.asarray(empty, dtype=bool), coded, c, "empty_identifier", "has no usable identifier")
    relationship = columns.coded("relationship")
    add(~np.asarray(relationship.uniques.str.strip().str.upper().isin(RELATIONSHIP_CODES), dtype=bool),
        relationship, "relationship", "relationship_code", "relationship must be a canonical code (EE, SP, CH, ...)")
    if carrier is not None:
        for c, most in (("last_name", carrier.last_name_max), ("first_name", carrier.first_name_max)):
            if visible(c):
                coded = columns.coded(c)
                empty = fold_column(coded.uniques, most, carrier.names).values == ""
                add(np.asarray(empty, dtype=bool), coded, c, "empty_after_sanitize",
                    "nothing is left of the name after the carrier's character rule")
        if visible("coverage_level"):
            level = columns.coded("coverage_level")
            add(~np.asarray(level.uniques.str.strip().str.upper().isin(carrier.coverage_levels), dtype=bool),
                level, "coverage_level", "coverage_level", "coverage level the carrier's mapping does not know")
    dates = ["coverage_start", "coverage_end", "dob"]
    if carrier is None or carrier.hire_date:
        dates.append("hire_date")
    for c in dates:
        if not visible(c):
            continue
        coded = columns.coded(c)
        text = coded.uniques.str.strip()
        parsed = pd.to_datetime(text.where(text.str.match(_BUILD_ISO) & (text != "")), format="%Y-%m-%d",
                                errors="coerce")
        bad = np.asarray(parsed.isna() & ((text != "") | (c == "coverage_start")), dtype=bool)
        add(bad, coded, c, "iso_date", "not a date as YYYY-MM-DD" + (" (required)" if c == "coverage_start" else ""))
    out += _overlapping(census, columns, plan, plan_line, mapped, rn)
    return out


def _overlapping(census: pd.DataFrame, columns: _Columns, plan: _Coded, plan_line: pd.Series, mapped: np.ndarray,
                 rn: np.ndarray) -> list[_Raw]:
    """Rows of one member (subscriber_id, member_id) on one insurance line whose periods overlap."""
    line_codes = pd.factorize(plan_line.fillna(""), use_na_sentinel=False)[0][plan.codes]
    # Only rows whose member id holds the line more than once can overlap (nearly always none).
    several = mapped & _repeated(columns.coded("member_id").codes, line_codes)
    if not several.any():
        return []
    start = columns.coded("coverage_start")
    start_day = _day_numbers(_parse_iso(start.uniques.str.strip()).to_numpy())[start.codes]
    if "coverage_end" in census.columns:
        end = columns.coded("coverage_end")
        end_text = end.uniques.str.strip()
        end_day = np.where(np.asarray(end_text == "", dtype=bool), _DAY_SPAN - 1,
                           _day_numbers(_parse_iso(end_text).to_numpy()))[end.codes]
    else:
        end_day = np.full(len(rn), _DAY_SPAN - 1, dtype=np.int64)
    rows = np.flatnonzero(several & (start_day >= 0) & (end_day >= 0))
    if len(rows) < 2:
        return []
    member = _pair_keys(columns.coded("subscriber_id").codes, columns.coded("member_id").codes)
    keys = pd.factorize(_pair_keys(member, line_codes)[rows])[0].astype(np.int64)
    order = np.lexsort((start_day[rows], keys))
    keys, begins, ends = keys[order], start_day[rows][order], end_day[rows][order]
    # Sorted by key then start: a period overlaps an earlier one of its key when it starts on or before
    # the latest end so far within the key (key * span + end makes that running maximum reset per key).
    reach = np.maximum.accumulate(keys * _DAY_SPAN + ends)
    hits = np.zeros(len(keys), dtype=bool)
    hits[1:] = (keys[1:] == keys[:-1]) & (keys[1:] * _DAY_SPAN + begins[1:] <= reach[:-1])
    if not hits.any():
        return []
    overlapping = np.isin(keys, keys[hits])  # every period of a line with an overlap
    return [_Raw(rows=rn[rows[order][overlapping]], column="coverage_start", rule="overlapping_coverage",
                 message="two coverage periods of the member on the same insurance line overlap")]


def _at(n: int, positions: np.ndarray) -> np.ndarray:
    """A mask of ``n`` rows, True at ``positions``."""
    mask = np.zeros(n, dtype=bool)
    mask[positions] = True
    return mask


def _index_in(values: pd.Series, of: pd.Series) -> np.ndarray:
    """For each text in ``values``, its position in ``of`` (distinct texts), or -1 when it is not there."""
    import pyarrow as pa
    import pyarrow.compute as pc

    found = pc.index_in(pa.array(values).cast(pa.large_string()), value_set=pa.array(of).cast(pa.large_string()))
    return np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)


def _pair_keys(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One int64 per (a, b) code pair, equal exactly when both codes are."""
    width = int(b.max()) + 1 if len(b) else 1
    keys: np.ndarray = a.astype(np.int64) * width + b
    return keys


def _varies(key: np.ndarray, value: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
    """Per row: does its ``key`` code occur with more than one distinct ``value`` code?

    Sorted by key, a key varies when two neighbours in its run differ; ``order`` (an argsort of ``key``)
    is shared by calls with the same key. Measured at 1M members: 0.03 s a column after the sort, where
    pandas' hash unique of the (key, value) pairs took 0.17 s.
    """
    if not len(key):
        return np.zeros(0, dtype=bool)
    if order is None:
        order = np.argsort(key, kind="stable")
    keys, values = key[order], value[order]
    differs = (keys[1:] == keys[:-1]) & (values[1:] != values[:-1])
    flagged = np.zeros(int(key.max()) + 1, dtype=bool)
    flagged[keys[1:][differs]] = True
    varies: np.ndarray = flagged[key]
    return varies


def _repeated(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row: does its (a, b) pair occur on more than one row (pandas' duplicated(keep=False))?"""
    if not len(a):
        return np.zeros(0, dtype=bool)
    keys = _pair_keys(a, b)
    if int(keys.max()) < 4 * len(keys) + 1024:
        counts = np.bincount(keys)  # few enough possible pairs to count them directly
    else:
        keys, _ = pd.factorize(keys)
        counts = np.bincount(keys)
    repeated: np.ndarray = counts[keys] > 1
    return repeated


def _within(where: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """``flags`` computed on the rows ``where`` selects, spread back over every row (False elsewhere)."""
    full = np.zeros(len(where), dtype=bool)
    full[where] = flags
    return full


def _isin(series: pd.Series, values: pd.Series) -> np.ndarray:
    """``series.isin(values)`` by pyarrow's hash kernel; pandas' arrow-string ``isin`` boxes every value
    of ``values`` as a Python scalar first (1.4 s of 4.8 s validating 230k rows; 13.4 s against 1.2 s
    for 2.3M rows in a 1M-value set, measured)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    left = pa.array(series).cast(pa.large_string())
    right = pc.unique(pa.array(values).cast(pa.large_string()))
    return np.asarray(pc.is_in(left, value_set=right).to_numpy(zero_copy_only=False), dtype=bool)


def _parse_iso(distinct: pd.Series) -> pd.Series:
    """Distinct texts as ISO dates (NaT for blanks and non-dates)."""
    parsed: pd.Series = pd.to_datetime(distinct.where(distinct != ""), format="%Y-%m-%d", errors="coerce")
    return parsed


@contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for the block (as it was after): for building many objects that
    hold no cycles, which each collection pass would otherwise walk again (2.0 s against 4.5 s, 623k
    findings, measured)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _to_findings(raws: Iterable[_Raw], row_numbers: np.ndarray, member_id: _Coded | None,
                 tokenizer: MemberTokenizer) -> tuple[list[Finding], np.ndarray, dict[str, int]]:
    """The findings, sorted by row, column and rule, one per (row, column, rule) (the first raw's message);
    with their row numbers and the count of findings per rule (by rule name).

    Built on integer keys (row x (column, rule) pair) rather than a frame of 623k rows sorted on its
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
    with _gc_paused():  # 623k new objects, no cycles among them: the collector's passes were half the time
        findings = list(map(Finding, rows.tolist(), tokens, per_raw([r.column for r in raws]),
                            per_raw([r.rule for r in raws]), per_raw([r.message for r in raws])))
    return findings, rows, {rule: int(n) for rule, n in zip(rules, counts, strict=True) if n}


# ------------------------------------------------------------------------------------------------ policy
def apply_policy(census: pd.DataFrame, report: ValidationReport, policy: ValidationPolicy) -> PolicyOutcome:
    """Decide what goes on: everything, the passing families (quarantine), or nothing (rejected)."""
    family = _text(census["subscriber_id"]) if "subscriber_id" in census.columns else pd.Series(
        "", index=census.index, dtype="str")
    member = _text(census["member_id"]) if "member_id" in census.columns else family

    def rejected(reason: str) -> PolicyOutcome:
        # the totals only when everything is held back (0.4 s of hashing at 1M members otherwise)
        return PolicyOutcome(accepted=census.iloc[0:0].copy(), held_back_families=int(family.nunique()),
                             held_back_members=int(member[member != ""].nunique()), rejected=True,
                             reason=reason, rows=np.zeros(0, dtype=np.int64))

    if report.ok:
        return PolicyOutcome(accepted=census, held_back_families=0, held_back_members=0, rejected=False,
                             reason=None)
    rows = {f.row for f in report.findings}
    if HEADER_ROW in rows:
        return rejected("the file as a whole failed a rule (for example a missing column)")
    if policy.policy == "reject":
        return rejected(f"{len(report.findings)} finding(s) in {report.failed_rows} row(s); policy is reject")
    if policy.policy == "threshold" and report.families:
        pct = report.failed_families / report.families * 100
        if pct > policy.threshold_pct:
            return rejected(f"{pct:.2f}% of families failed, above the {policy.threshold_pct}% threshold")
    failing = family[census[ROW_NUMBER].isin(rows).to_numpy()].unique()
    bad = _isin(family, pd.Series(failing, dtype="str"))
    accepted = census.loc[~bad]
    if accepted.empty:
        return rejected("every family failed validation; nothing left to send")
    held_members = member[bad]
    return PolicyOutcome(accepted=accepted, held_back_families=len(failing),
                         held_back_members=int(held_members[held_members != ""].nunique()),
                         rejected=False, reason=None, rows=np.flatnonzero(~bad))


def _private_open(path: Path) -> Any:
    """Open ``path`` for writing text, created owner-only (reports sit next to PHI in run folders)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    return open(fd, "w", encoding="utf-8", newline="")  # the caller closes it
