"""The Great Expectations adapter, the only module importing GX: build and check a suite, run it to rows."""

from __future__ import annotations

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
    this to catch it before any run. Raises :class:`ConfigError` naming the file.
    """
    data = load_suite(suite_path)
    suite = build_gx_suite(data, suite_path)
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


def build_gx_suite(data: dict[str, Any], suite_path: Path) -> Any:
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

