"""The census suite's SSN rules are written for RE2 (no look-arounds or back-references, so they run as
Arrow kernels, not Python's re cell by cell) and mean exactly the SSA rules they stand for."""

from __future__ import annotations

import json
import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

SUITE = Path(__file__).resolve().parents[2] / "schemas" / "census-v1.suite.json"
#: The rules as the SSA states them, in Python's re (look-arounds and a back-reference).
FORMAT = re.compile(r"^(?!000|666|9[0-9][0-9])[0-9]{3}(?!00)[0-9]{2}(?!0000)[0-9]{4}$")
REPEATED = re.compile(r"^([0-9])\1{8}$")


def _regex(rule: str) -> re.Pattern[str]:
    for expectation in json.loads(SUITE.read_text())["expectations"]:
        if expectation.get("meta", {}).get("rule") == rule:
            return re.compile(expectation["kwargs"]["regex"])
    raise AssertionError(f"no expectation with rule {rule}")


def test_ssn_format_equals_the_area_group_serial_rules_on_every_part() -> None:
    suite = _regex("ssn_format")
    # The pattern is three fixed-width parts in sequence, so checking each part in full checks it all.
    for area in range(1000):
        ssn = f"{area:03d}121234"
        assert bool(suite.match(ssn)) == bool(FORMAT.match(ssn)), ssn
    for group in range(100):
        ssn = f"123{group:02d}1234"
        assert bool(suite.match(ssn)) == bool(FORMAT.match(ssn)), ssn
    for serial in range(10_000):
        ssn = f"12312{serial:04d}"
        assert bool(suite.match(ssn)) == bool(FORMAT.match(ssn)), ssn


@given(st.text(alphabet="0123456789-9 a\uff10", max_size=12))
def test_ssn_rules_agree_with_the_look_around_forms_on_any_text(text: str) -> None:
    assert bool(_regex("ssn_format").search(text)) == bool(FORMAT.search(text))
    assert bool(_regex("ssn_repeated_digit").search(text)) == bool(REPEATED.search(text))


def test_the_ssn_rules_need_no_python_regex() -> None:
    for rule in ("ssn_format", "ssn_repeated_digit"):
        pattern = _regex(rule).pattern
        assert "(?!" not in pattern and "(?=" not in pattern and "\\1" not in pattern, rule
