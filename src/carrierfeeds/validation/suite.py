"""Read a GX suite file, and decide which of its expectations run as masks (the rest go to GX)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from carrierfeeds.errors import ConfigError

#: Expectation types evaluated as vectorised masks over the census, with Great Expectations' own pandas
#: semantics (the same pandas calls on the same blank-as-missing columns), and the kwargs each may carry.
#: Anything else in a suite (another type, ``mostly``, ``row_condition``, suite parameters...) runs
#: through GX itself: GX is slow to import, copies and hashes the whole frame, and evaluates each
#: expectation through its metric graph (figures in benchmarks/README.md).
VECTORISED: dict[str, tuple[frozenset[str], frozenset[str]]] = {
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
PAIR_IGNORE = ("both_values_are_missing", "either_value_is_missing", "neither")


def load_suite(suite_path: Path) -> dict[str, Any]:
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


def suite_fast(data: dict[str, Any]) -> bool:
    """Whether the suite ``data`` may run as masks (its vectorisable expectations; GX runs the rest)."""
    return (set(data) <= _SUITE_KEYS and isinstance(data.get("name"), str)
            and isinstance(data.get("expectations"), list) and not data.get("suite_parameters")
            and isinstance(data.get("meta", {}), dict))


def encoded_by_suite(data: dict[str, Any]) -> list[str]:
    """The columns the suite ``data``'s masks read as codes (every rule but not-null and column-exists)."""
    if not suite_fast(data):
        return []
    columns: list[str] = []
    for expectation in data["expectations"]:
        if vectorisable(expectation) and expectation["type"] not in (
                "expect_column_to_exist", "expect_column_values_to_not_be_null"):
            columns += describe(expectation["type"], expectation["kwargs"], None)[0]
    return columns


def vectorisable(expectation: Any) -> bool:
    """True when ``expectation`` is one the masks evaluate exactly as GX would (types checked strictly;
    anything unusual goes to GX, which also reports a malformed expectation as GX does)."""
    if not isinstance(expectation, dict) or not set(expectation) <= _EXPECTATION_KEYS:
        return False
    kind, kwargs, meta = expectation.get("type"), expectation.get("kwargs"), expectation.get("meta")
    if not isinstance(kind, str) or kind not in VECTORISED or not isinstance(kwargs, dict):
        return False
    if meta is not None and not isinstance(meta, dict):
        return False
    if not all(isinstance(expectation.get(k), (str, type(None))) for k in ("id", "description")):
        return False
    notes = expectation.get("notes")
    if not (notes is None or isinstance(notes, str) or (isinstance(notes, list)
                                                          and all(isinstance(n, str) for n in notes))):
        return False
    required, optional = VECTORISED[kind]
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
    return kwargs.get("ignore_row_if", PAIR_IGNORE[0]) in PAIR_IGNORE


def describe(kind: str, kwargs: dict[str, Any], meta: dict[str, Any] | None) -> tuple[list[str], str, str, str]:
    """(columns the expectation reads, the column findings name, rule, message)."""
    columns = [kwargs[k] for k in ("column", "column_A", "column_B") if isinstance(kwargs.get(k), str)]
    columns += [str(c) for c in kwargs.get("column_list") or []]
    # a pair rule is reported on its first column (coverage_end for "end not before start")
    column = columns[0] if columns and "column_list" not in kwargs else ",".join(columns)
    meta = dict(meta or {})
    rule = str(meta.get("rule") or kind)
    message = str(meta.get("message") or f"fails the rule {kind}")
    return columns, column, rule, message

