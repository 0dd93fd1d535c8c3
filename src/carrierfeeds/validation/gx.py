"""The Great Expectations adapter, the only module importing GX: build and check a suite, run it to rows."""

from __future__ import annotations

import difflib
import logging
import os
import re
import warnings as warnings_module
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from carrierfeeds.census.columns import ROW_NUMBER
from carrierfeeds.errors import ConfigError
from carrierfeeds.validation.columns import blank_as_missing
from carrierfeeds.validation.findings import RuleRows
from carrierfeeds.validation.report import HEADER_ROW
from carrierfeeds.validation.suite import describe, load_suite


def check_suite(suite_path: Path) -> int:
    """Build the suite file with Great Expectations itself and compile its regexes; the expectation count.

    A run evaluates the common expectation types as masks and may never hand the suite to GX, so an edit
    GX would refuse (an unknown type, a kwarg the type does not take, ``mostly`` above 1, ``meta`` that is
    not an object) would otherwise pass unnoticed until the suite or GX changes. ``feeds check`` calls
    this to catch it before any run. Raises one :class:`ConfigError` naming the file and listing every
    expectation refused (``details["problems"]``), not only the first.
    """
    data = load_suite(suite_path)
    problems: list[tuple[int, str]] = []
    built = 0
    try:
        built = len(build_gx_suite(data, suite_path).expectations)
    except ConfigError as exc:
        problems += getattr(exc, "numbered", None) or [(0, exc.details.get("reason") or exc.message)]
    for number, expectation in enumerate(_expectations(data), start=1):
        kwargs = expectation.get("kwargs") if isinstance(expectation, dict) else None
        regex = kwargs.get("regex") if isinstance(kwargs, dict) else None
        if isinstance(regex, str):
            try:
                re.compile(regex)
            except re.error as exc:
                problems.append((number, f"expectation {number} ({expectation.get('type')}) has a regex that "
                                         f"does not compile: {exc.msg} at position {exc.pos}"))
    if problems:
        raise _refused(suite_path, sorted(problems))
    return built


def _expectations(data: dict[str, Any]) -> list[Any]:
    given = data.get("expectations")
    return given if isinstance(given, list) else []


def _refused(suite_path: Path, problems: list[tuple[int, str]]) -> ConfigError:
    """One error for every refused expectation: "N problem(s): ...; ..." with the list in ``details``."""
    texts = [text for _, text in problems]
    head = "not a valid Great Expectations suite: " if len(texts) == 1 else f"{len(texts)} problems: "
    error = ConfigError(head + " | ".join(texts), file=str(suite_path), details={"problems": texts})
    error.numbered = problems  # type: ignore[attr-defined]  # check_suite adds its regex problems to these
    return error


class _QuietRefusals(logging.Filter):
    """GX logs a whole traceback for each expectation it cannot build, then drops it; ``build_gx_suite``
    reports every one of them in one error instead, so that log record is left out."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Could not add expectation")


_QUIET = _QuietRefusals()


def build_gx_suite(data: dict[str, Any], suite_path: Path) -> Any:
    """The suite ``data`` as GX's ExpectationSuite, or a ConfigError listing every expectation GX refuses
    or drops (GX drops one it cannot build, an unknown type say, instead of refusing the suite)."""
    os.environ["GX_ANALYTICS_ENABLED"] = "False"  # must be set before GX is imported: no network calls
    from great_expectations.core import ExpectationSuite

    gx_log = logging.getLogger("great_expectations.core.expectation_suite")
    if _QUIET not in gx_log.filters:
        gx_log.addFilter(_QUIET)
    given = _expectations(data)
    try:
        suite = ExpectationSuite(**data)
    except Exception as exc:  # GX raises many types for a malformed suite; all mean "fix the file"
        problems = _refused_one_by_one(ExpectationSuite, given)
        if not problems:  # the suite itself, not one expectation (its name, meta...)
            reason = f"not a valid Great Expectations suite: {_first_line(exc)}"
            raise ConfigError(reason, file=str(suite_path), details={"reason": reason}) from None
        raise _refused(suite_path, problems) from None
    if len(suite.expectations) != len(given):
        # A rule silently off: fail closed, naming every expectation GX would not build.
        raise _refused(suite_path, _refused_one_by_one(ExpectationSuite, given) or [
            (0, f"Great Expectations could not build {len(given) - len(suite.expectations)} expectation(s)")])
    return suite


def _refused_one_by_one(suite_class: Any, expectations: list[Any]) -> list[tuple[int, str]]:
    """Each expectation GX refuses or drops when built alone, in the project's words: its number, type
    and why (an unknown type with the nearest known one, a kwarg the type does not take, a required one
    missing, a value out of range)."""
    from great_expectations.expectations.registry import (
        get_expectation_impl,
        list_registered_expectation_implementations,
    )

    known = list_registered_expectation_implementations()
    problems: list[tuple[int, str]] = []
    for number, expectation in enumerate(expectations, start=1):
        kind = expectation.get("type") if isinstance(expectation, dict) else None
        where = f"expectation {number} ({kind})" if kind else f"expectation {number}"
        if not isinstance(expectation, dict):
            problems.append((number, f"{where} is not an object"))
            continue
        if not isinstance(kind, str) or not kind:
            problems.append((number, f"{where} has no type"))
            continue
        if kind not in known:
            close = difflib.get_close_matches(kind, known, n=1)
            problems.append((number, f"{where}: not an expectation type Great Expectations knows"
                                     + (f"; did you mean {close[0]!r}?" if close else "")))
            continue
        try:
            built = suite_class(name="check", expectations=[expectation]).expectations
        except Exception as exc:  # the same refusal as the whole suite's, now pinned to one expectation
            fields = sorted(getattr(get_expectation_impl(kind), "__fields__", {}))
            problems.append((number, f"{where}: " + "; ".join(_field_problems(exc, fields))))
            continue
        if not built:
            problems.append((number, f"{where}: Great Expectations could not build it"))
    return problems


def _field_problems(exc: Exception, fields: list[str]) -> list[str]:
    """GX's (pydantic's) complaint about one expectation, one phrase per field, in the project's words."""
    errors = getattr(exc, "errors", None)
    found: dict[str, str] = {}
    for error in errors() if callable(errors) else []:
        field = ".".join(str(p) for p in error.get("loc") or ()) or "(expectation)"
        kind, msg = str(error.get("type", "")), str(error.get("msg", ""))
        if field in found:
            continue  # the first complaint per field (a union type adds one per member)
        if kind.endswith(".missing"):
            found[field] = f"{field} is required"
        elif kind.endswith(".extra"):
            close = difflib.get_close_matches(field, fields, n=1)
            found[field] = f"{field} is not an option of this type" + (
                f"; did you mean {close[0]!r}?" if close else "")
        elif kind.endswith("type_error.dict"):
            found[field] = f"{field} must be an object"
        elif kind.endswith((".not_le", ".not_lt", ".not_ge", ".not_gt")):
            words = {"le": "at most", "lt": "below", "ge": "at least", "gt": "above"}[kind.rsplit("_", 1)[1]]
            found[field] = f"{field} must be {words} {(error.get('ctx') or {}).get('limit_value')}"
        elif kind.endswith("any_str.min_length"):
            found[field] = f"{field} must not be blank"
        else:
            found[field] = f"{field}: {msg}"
    return list(found.values()) or [_first_line(exc)]


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def run_gx(census: pd.DataFrame, data: dict[str, Any], suite_path: Path) -> tuple[list[RuleRows], list[str]]:
    """The GX adapter: run the suite ``data`` (read from ``suite_path``) through Great Expectations."""
    suite = build_gx_suite(data, suite_path)  # sets GX_ANALYTICS_ENABLED before GX is imported
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    suite_name = suite_path.name

    # GX sees empty cells as missing, so not-null catches blanks and value rules skip optional blanks
    frame = pd.DataFrame({c: (s if c == ROW_NUMBER else blank_as_missing(s)) for c, s in census.items()})
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

    raws: list[RuleRows] = []
    warnings: list[str] = []
    for item in result.results:
        config = item.expectation_config
        if config is None:
            raise ConfigError("a suite result carried no expectation", file=suite_name)
        kwargs = dict(config.kwargs)
        columns, column, rule, message = describe(config.type, kwargs, config.meta)
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
        raws.append(RuleRows(rows=rows, column=column, rule=rule, message=message))
    return raws, warnings


def _raised(info: Any) -> bool:
    """Whether a GX result's ``exception_info`` records an exception: GX 1.x keys it by metric, one dict
    per metric that failed to compute (a bad regex, say), or gives one dict for the expectation."""
    if not isinstance(info, dict):
        return False
    if info.get("raised_exception"):
        return True
    return any(isinstance(v, dict) and v.get("raised_exception") for v in info.values())

