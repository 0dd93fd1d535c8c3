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
import html
import json
import logging
import os
import re
import time
import warnings as warnings_module
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from carrierfeeds.census.columns import ROW_NUMBER
from carrierfeeds.census.tokens import MemberTokenizer
from carrierfeeds.config import CensusSchema, ValidationPolicy
from carrierfeeds.errors import ConfigError

log = logging.getLogger(__name__)

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

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (``--json``)."""
        return {
            "source_name": self.source_name, "ok": self.ok, "rows": self.rows, "members": self.members,
            "families": self.families, "failed_rows": self.failed_rows,
            "failed_families": self.failed_families, "rule_counts": dict(self.rule_counts),
            "warnings": list(self.warnings),
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


@dataclass(frozen=True)
class _Raw:
    """Rows breaking one rule on one column, before tokens are attached."""

    rows: np.ndarray
    column: str
    rule: str
    message: str


# ---------------------------------------------------------------------------------------------- validate
def validate_census(census: pd.DataFrame, suite_path: Path, schema: CensusSchema,
                    tokenizer: MemberTokenizer, *, as_of: date, source_name: str) -> ValidationReport:
    """Run the suite at ``suite_path`` and the cross-row rules over ``census``; collect every finding."""
    warnings: list[str] = []
    if ROW_NUMBER not in census.columns:
        census = census.assign(**{ROW_NUMBER: np.arange(2, len(census) + 2, dtype=np.int64)})
        warnings.append("the census had no row numbers; rows are numbered from 2 in frame order")
    started = time.perf_counter()
    raws, suite_warnings = _run_suite(census, suite_path)
    warnings += suite_warnings
    gx_s = time.perf_counter() - started
    started = time.perf_counter()
    raws += _cross_row_rules(census, schema, as_of)
    cross_s = time.perf_counter() - started

    text = {c: _text(census[c]) for c in ("member_id", "subscriber_id") if c in census.columns}
    empty = pd.Series("", index=census.index, dtype="str")
    member_id = text.get("member_id", empty)
    family = text.get("subscriber_id", empty)
    row_numbers = census[ROW_NUMBER].to_numpy(dtype=np.int64)

    findings = _to_findings(raws, row_numbers, member_id, tokenizer)
    failed = np.unique(np.array([f.row for f in findings if f.row != HEADER_ROW], dtype=np.int64))
    failed_mask = np.isin(row_numbers, failed)
    rule_counts: dict[str, int] = {}
    for f in findings:
        rule_counts[f.rule] = rule_counts.get(f.rule, 0) + 1
    report = ValidationReport(
        source_name=source_name, rows=len(census), members=int(member_id[member_id != ""].nunique()),
        families=int(family.nunique()), failed_rows=int(failed_mask.sum()),
        failed_families=int(family[failed_mask].nunique()), findings=tuple(findings),
        rule_counts=dict(sorted(rule_counts.items())), warnings=tuple(warnings))
    log.info("%s: validated %d rows (suite %.2fs, cross-row %.2fs): %d findings in %d rows, %d families",
             source_name, report.rows, gx_s, cross_s, len(findings), report.failed_rows,
             report.failed_families)
    return report


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


def _run_suite(census: pd.DataFrame, suite_path: Path, *, engine: str = "auto") -> tuple[list[_Raw], list[str]]:
    """Run the suite file and reduce each failed expectation to rows, column, rule.

    The suite file is the source of truth and stays a GX suite. ``engine="auto"`` evaluates the
    expectation types in :data:`_VECTORISED` as masks (GX's pandas semantics: blanks are missing, value
    rules skip missing cells) and hands the rest, if any, to GX; ``engine="gx"`` runs all of it through
    GX (the reference the masks are tested against). Either way only rows, column and rule come out.
    """
    data = _load_suite(suite_path)
    expectations = data.get("expectations")
    suite_fast = (engine == "auto" and set(data) <= _SUITE_KEYS and isinstance(data.get("name"), str)
                  and isinstance(expectations, list) and not data.get("suite_parameters")
                  and isinstance(data.get("meta", {}), dict))
    if not suite_fast or not isinstance(expectations, list):
        return _run_gx(census, data, suite_path)
    fast = [e for e in expectations if _vectorisable(e)]
    slow = [e for e in expectations if not _vectorisable(e)]
    raws: list[_Raw] = []
    warnings: list[str] = []
    if slow:
        raws, warnings = _run_gx(census, {**data, "expectations": slow}, suite_path)
    columns: dict[str, pd.Series] = {}

    def column_of(name: str) -> pd.Series:
        if name not in columns:
            columns[name] = _blank_as_missing(census[name])
        return columns[name]

    factorised: dict[str, tuple[np.ndarray, pd.Series]] = {}

    def distinct_of(name: str) -> tuple[np.ndarray, pd.Series]:
        # A column's distinct values (missing cells code -1), for rules Python's re must run.
        if name not in factorised:
            codes, uniques = pd.factorize(column_of(name))
            factorised[name] = (np.asarray(codes, dtype=np.int64), pd.Series(uniques))
        return factorised[name]

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
                rows = _unexpected_rows(kind, kwargs, column_of, rn, distinct_of)
            except Exception:  # a bad regex or value: GX reports it as an expectation that could not run
                raise ConfigError(f"expectation {kind} on {cols} could not run", file=suite_path.name) from None
            if len(rows):
                raws.append(_Raw(rows=rows, column=column, rule=rule, message=message))
    return raws, warnings


def _unexpected_rows(kind: str, kwargs: dict[str, Any], column_of: Callable[[str], pd.Series],
                     rn: np.ndarray, distinct_of: Callable[[str], tuple[np.ndarray, pd.Series]]) -> np.ndarray:
    """Row numbers an expectation of :data:`_VECTORISED` finds unexpected: GX's pandas metric, as masks.

    Column-map rules look at non-missing cells only (GX filters missing ones out first, except for the
    not-null rule); the pair rule drops rows per ``ignore_row_if`` and compares the text as GX does.
    A regex RE2 cannot run (look-arounds, back-references) goes to Python's re once per distinct value
    (``distinct_of``: codes, -1 for missing, and the distinct values) and is spread back by code; every
    other rule runs as an Arrow kernel over the column (faster than factorising first, measured).
    """
    if kind == "expect_column_pair_values_a_to_be_greater_than_b":
        a, b = column_of(kwargs["column_A"]), column_of(kwargs["column_B"])
        ignore = kwargs.get("ignore_row_if", _PAIR_IGNORE[0])
        if ignore == "either_value_is_missing":
            keep = (a.notna() & b.notna()).to_numpy()
        elif ignore == "both_values_are_missing":
            keep = ~(a.isna() & b.isna()).to_numpy()
        else:
            keep = np.ones(len(a), dtype=bool)
        a, b = a[keep], b[keep]
        ordered = (a >= b) if kwargs.get("or_equal") else (a > b)
        bad: np.ndarray = rn[keep][~np.asarray(ordered, dtype=bool)]
        return bad
    series = column_of(kwargs["column"])
    missing = series.isna().to_numpy()
    if kind == "expect_column_values_to_not_be_null":
        return rn[missing]
    values = series[~missing]
    ok: pd.Series | np.ndarray
    if kind == "expect_column_values_to_be_in_set":
        ok = values.isin(kwargs["value_set"])
    else:
        text, regex = values.astype(str), kwargs["regex"]
        python_re = getattr(text.array, "_needs_python_regex", None)
        if python_re is not None and python_re(regex):
            # pandas runs Python's re cell by cell for a pattern pyarrow's RE2 cannot (look-arounds,
            # back-references): run the same call once per distinct value instead.
            codes, uniques = distinct_of(kwargs["column"])
            matched = np.asarray(uniques.astype(str).str.contains(regex), dtype=bool)
            ok = matched[codes[~missing]]
        else:
            ok = text.str.contains(regex)
        if kind == "expect_column_values_to_not_match_regex":
            ok = ~ok
    unexpected: np.ndarray = rn[~missing][~np.asarray(ok, dtype=bool)]
    return unexpected


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


def _cross_row_rules(census: pd.DataFrame, schema: CensusSchema, as_of: date) -> list[_Raw]:
    """Rules across rows and families, vectorised in pandas."""
    need = ("member_id", "subscriber_id", "relationship", "plan_code", "coverage_start", "coverage_end",
            "dob", "first_name", "last_name", "ssn")
    if any(c not in census.columns for c in need):
        return []  # the suite's required-column findings already fail the file
    rn = census[ROW_NUMBER].to_numpy(dtype=np.int64)
    col = {c: _text(census[c]) for c in need}
    mid, sid, rel, plan = col["member_id"], col["subscriber_id"], col["relationship"], col["plan_code"]
    out: list[_Raw] = []

    def add(mask: pd.Series | np.ndarray, column: str, rule: str, message: str) -> None:
        m = np.asarray(mask, dtype=bool)
        if m.any():
            out.append(_Raw(rows=rn[m], column=column, rule=rule, message=message))

    dates = {c: _parse_iso(col[c]) for c in ("dob", "coverage_start", "coverage_end")}
    for c in ("dob", "coverage_start", "coverage_end"):
        add(col[c].str.match(_ISO_RE) & dates[c].isna(), c, "real_date",
            "date does not exist in the calendar")
    if "hire_date" in census.columns:
        hire = _text(census["hire_date"])
        add(hire.str.match(_ISO_RE) & _parse_iso(hire).isna(), "hire_date", "real_date",
            "date does not exist in the calendar")

    is_ee = rel == "EE"
    ee_ids = mid[is_ee & (mid != "")]
    add(~is_ee & (sid != "") & ~_isin(sid, ee_ids), "subscriber_id", "subscriber_present",
        "subscriber_id names no employee (EE) row in this file")
    add(is_ee & (mid != "") & (sid != "") & (mid != sid), "subscriber_id", "subscriber_id_self",
        "on an employee's rows subscriber_id must equal member_id")
    # Pair rules work on integer codes of the text (equal text, equal code): each column is hashed once,
    # not once per pandas duplicated()/drop_duplicates() over a pair of string columns.
    code = {c: _codes(col[c]) for c in ("member_id", "subscriber_id", "plan_code", *_IDENTITY)}
    mc = code["member_id"]
    ee = is_ee.to_numpy(dtype=bool)
    has_mid = (mid != "").to_numpy(dtype=bool)
    add(_within(ee, _varies(code["subscriber_id"][ee], mc[ee])), "relationship", "one_subscriber_per_family",
        "a family (subscriber_id) must have exactly one employee (EE)")
    add(_repeated(mc, code["plan_code"]) & has_mid & (plan != "").to_numpy(dtype=bool),
        "plan_code", "unique_member_plan", "the same member_id appears twice for the same plan_code")
    for c in _IDENTITY:
        add(_varies(mc, code[c]) & has_mid, c, "same_person_fields",
            f"the same member_id has different {c} values on different rows")

    # a dependent's coverage must sit inside the subscriber's coverage in the same plan
    subs = pd.DataFrame({"sid": mid, "plan": plan, "s_start": dates["coverage_start"],
                         "s_end": dates["coverage_end"]})[is_ee & (mid == sid)]
    subs = subs.drop_duplicates(["sid", "plan"])
    deps = pd.DataFrame({"pos": np.arange(len(census)), "sid": sid, "plan": plan,
                         "start": dates["coverage_start"], "end": dates["coverage_end"]})[
        ~is_ee & _isin(sid, ee_ids)]
    joined = deps.merge(subs, how="left", on=["sid", "plan"], indicator=True)
    in_plan = (joined["_merge"] == "both").to_numpy()
    pos = joined["pos"].to_numpy()

    def add_pos(mask: np.ndarray, column: str, rule: str, message: str) -> None:
        full = np.zeros(len(census), dtype=bool)
        full[pos[mask]] = True
        add(full, column, rule, message)

    add_pos(~in_plan, "plan_code", "dependent_plan_not_elected",
            "a dependent is enrolled in a plan the subscriber has not elected")
    add_pos(in_plan & (joined["start"] < joined["s_start"]).to_numpy(), "coverage_start",
            "dependent_starts_before_subscriber", "a dependent's coverage starts before the subscriber's")
    ends_after = joined["s_end"].notna() & (joined["end"].isna() | (joined["end"] > joined["s_end"]))
    add_pos(in_plan & ends_after.to_numpy(), "coverage_end", "dependent_ends_after_subscriber",
            "a dependent's coverage ends after the subscriber's (or is open while the subscriber's ended)")

    day = pd.Timestamp(as_of)
    limit = schema.dependent_age_limit
    cutoff = pd.Timestamp(_years_before(as_of, limit))
    open_cover = dates["coverage_end"].isna() | (dates["coverage_end"] >= day)
    add((rel == "CH") & (dates["dob"] <= cutoff) & open_cover, "dob", "dependent_age_limit",
        f"child has reached the dependent age limit ({limit}) on the reference date while still covered")
    add(dates["dob"].notna() & ((dates["dob"] > day) | (dates["dob"] < pd.Timestamp("1900-01-01"))), "dob",
        "dob_plausible", "date of birth is in the future or before 1900")

    has_ssn = (col["ssn"] != "").to_numpy(dtype=bool)
    add(_within(has_ssn, _varies(code["ssn"][has_ssn], mc[has_ssn])), "ssn", "ssn_unique",
        "the same SSN appears on more than one member_id")
    return out


def _codes(series: pd.Series) -> np.ndarray:
    """Integer codes of a text column: equal text, equal code (pyarrow's hash, one pass)."""
    codes, _ = pd.factorize(series, use_na_sentinel=False)
    return np.asarray(codes, dtype=np.int64)


def _pair_keys(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One int64 per (a, b) code pair, equal exactly when both codes are."""
    width = int(b.max()) + 1 if len(b) else 1
    keys: np.ndarray = a * width + b
    return keys


def _varies(key: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Per row: does its ``key`` code occur with more than one distinct ``value`` code?"""
    if not len(key):
        return np.zeros(0, dtype=bool)
    width = int(value.max()) + 1
    # pandas' hash table, not np.unique (numpy 2's hash unique took 0.6 s on 2.3M int64 keys, measured)
    distinct = pd.unique(_pair_keys(key, value)) // width  # the key of each distinct (key, value) pair
    counts = np.bincount(distinct, minlength=int(key.max()) + 1)
    varies: np.ndarray = counts[key] > 1
    return varies


def _repeated(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row: does its (a, b) pair occur on more than one row (pandas' duplicated(keep=False))?"""
    if not len(a):
        return np.zeros(0, dtype=bool)
    codes, _ = pd.factorize(_pair_keys(a, b))
    repeated: np.ndarray = np.bincount(codes)[codes] > 1
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


def _parse_iso(series: pd.Series) -> pd.Series:
    """ISO dates (NaT for blanks and non-dates), each distinct text parsed once (a census repeats its dates)."""
    codes, uniques = pd.factorize(series, use_na_sentinel=False)
    distinct = pd.Series(uniques)
    parsed = pd.to_datetime(distinct.where(distinct != ""), format="%Y-%m-%d", errors="coerce")
    return pd.Series(parsed.to_numpy()[codes], index=series.index, dtype=parsed.dtype)


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February in a year that has none
        return day.replace(year=day.year - years, day=28)


def _to_findings(raws: Iterable[_Raw], row_numbers: np.ndarray, member_id: pd.Series,
                 tokenizer: MemberTokenizer) -> list[Finding]:
    parts = [pd.DataFrame({"row": r.rows, "column": r.column, "rule": r.rule, "message": r.message})
             for r in raws if len(r.rows)]
    if not parts:
        return []
    table = pd.concat(parts, ignore_index=True).drop_duplicates(["row", "column", "rule"])
    table = table.sort_values(["row", "column", "rule"], kind="stable").reset_index(drop=True)
    by_row = pd.Series(member_id.to_numpy(), index=row_numbers)
    by_row = by_row[~by_row.index.duplicated()]
    ids = by_row.reindex(table["row"].to_numpy()).fillna("")
    tokens = tokenizer.tokens(pd.Series(ids.to_numpy(), dtype="str"))
    tokens = tokens.where(pd.Series(ids.to_numpy() != "", dtype=bool), "")
    return [Finding(row=int(r), member_token=str(t), column=str(c), rule=str(u), message=str(m))
            for r, t, c, u, m in zip(table["row"].to_numpy(), tokens.to_numpy(), table["column"].to_numpy(),
                                     table["rule"].to_numpy(), table["message"].to_numpy(), strict=True)]


# ------------------------------------------------------------------------------------------------ policy
def apply_policy(census: pd.DataFrame, report: ValidationReport, policy: ValidationPolicy) -> PolicyOutcome:
    """Decide what goes on: everything, the passing families (quarantine), or nothing (rejected)."""
    family = _text(census["subscriber_id"]) if "subscriber_id" in census.columns else pd.Series(
        "", index=census.index, dtype="str")
    member = _text(census["member_id"]) if "member_id" in census.columns else family
    total_families, total_members = int(family.nunique()), int(member[member != ""].nunique())

    def rejected(reason: str) -> PolicyOutcome:
        return PolicyOutcome(accepted=census.iloc[0:0].copy(), held_back_families=total_families,
                             held_back_members=total_members, rejected=True, reason=reason)

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
    bad = family.isin(failing).to_numpy()
    accepted = census.loc[~bad]
    if accepted.empty:
        return rejected("every family failed validation; nothing left to send")
    held_members = member[bad]
    return PolicyOutcome(accepted=accepted, held_back_families=len(failing),
                         held_back_members=int(held_members[held_members != ""].nunique()),
                         rejected=False, reason=None)


def _private_open(path: Path) -> Any:
    """Open ``path`` for writing text, created owner-only (reports sit next to PHI in run folders)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    return open(fd, "w", encoding="utf-8", newline="")  # the caller closes it
