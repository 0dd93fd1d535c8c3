"""The dependent age limit is judged on coverage dates: a child whose coverage ends by
the day the schema's ``dependent_coverage_ends`` allows passes on every day before it ends; coverage that
runs past that day is a finding on the child's rows (column coverage_end, rule dependent_age_limit)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from carrierfeeds.census.generate import generate_census
from carrierfeeds.census.tokens import MemberTokenizer
from carrierfeeds.config import CensusSchema, ValidationPolicy, load_schema
from carrierfeeds.errors import ConfigError
from carrierfeeds.validation import ValidationReport, apply_policy, validate_census

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = load_schema(ROOT / "schemas" / "census-v1.yaml")
SUITE = ROOT / "schemas" / SCHEMA.suite
TOKENIZER = MemberTokenizer(b"a" * 32)
MADE = date(2026, 2, 1)  # the census's own day: every generated date lies before it
DOB = "2000-03-10"  # 26 on 2026-03-10
BIRTHDAY = date(2026, 3, 10)


def _census(end: str) -> tuple[pd.DataFrame, set[int]]:
    """A generated census with one child turned 26 on BIRTHDAY, covered (every row) until ``end``."""
    frame = generate_census(60, 11, as_of=MADE)
    frame["row_number"] = range(2, len(frame) + 2)
    ee_open = set(frame.loc[(frame["relationship"] == "EE") & (frame["coverage_end"] == ""), "member_id"])
    kids = frame[(frame["relationship"] == "CH") & frame["subscriber_id"].isin(ee_open)]
    early = kids.groupby("member_id")["coverage_start"].max() <= "2026-03-01"
    child = early[early].index[0]
    mine = frame["member_id"] == child
    frame.loc[mine, "dob"] = DOB
    frame.loc[mine, "coverage_end"] = end
    return frame, set(frame.loc[mine, "row_number"])


def _validate(frame: pd.DataFrame, day: date, schema: CensusSchema = SCHEMA) -> ValidationReport:
    return validate_census(frame, SUITE, schema, TOKENIZER, as_of=day, source_name="census_age.csv")


def _on(report: ValidationReport, rows: set[int]) -> set[tuple[int, str, str]]:
    return {(f.row, f.column, f.rule) for f in report.findings if f.row in rows}


def test_age_out_at_the_end_of_the_birthday_month_is_accepted_on_the_days_before_it_ends() -> None:
    frame, rows = _census("2026-03-31")
    for day in (date(2026, 2, 20), BIRTHDAY - timedelta(days=1), BIRTHDAY, date(2026, 3, 15),
                date(2026, 3, 31), date(2026, 4, 15)):
        report = _validate(frame, day)
        assert _on(report, rows) == set(), day
        # under reject, the age-out no longer blocks every other change of the file
        assert report.ok, (day, report.rule_counts)
        assert not apply_policy(frame, report, ValidationPolicy(policy="reject")).rejected
    assert SCHEMA.dependent_coverage_ends == "end_of_month"  # the shipped schema's setting


def test_coverage_past_the_allowed_end_is_refused_naming_row_column_and_rule() -> None:
    frame, rows = _census("2026-04-30")
    for day in (date(2026, 2, 20), date(2026, 3, 15), date(2026, 5, 15)):
        report = _validate(frame, day)
        assert _on(report, rows) == {(r, "coverage_end", "dependent_age_limit") for r in rows}, day
        finding = next(f for f in report.findings if f.row in rows)
        assert "dependent_coverage_ends" in finding.message and "last day of the month" in finding.message
        assert DOB not in finding.message and "2026" not in finding.message  # never a value
        assert apply_policy(frame, report, ValidationPolicy(policy="reject")).rejected


def test_open_coverage_is_refused_once_the_birthday_is_reached_and_not_before() -> None:
    frame, rows = _census("")
    assert _on(_validate(frame, BIRTHDAY - timedelta(days=1)), rows) == set()
    assert _on(_validate(frame, BIRTHDAY), rows) == {(r, "coverage_end", "dependent_age_limit") for r in rows}


@pytest.mark.parametrize(("setting", "last_allowed"), [
    ("birthday", date(2026, 3, 10)),
    ("end_of_month", date(2026, 3, 31)),
    ("end_of_year", date(2026, 12, 31)),
])
def test_each_setting_allows_coverage_up_to_its_own_last_day(setting: str, last_allowed: date) -> None:
    schema = CensusSchema.model_validate({**SCHEMA.model_dump(), "dependent_coverage_ends": setting})
    day = date(2026, 3, 5)  # before the birthday: a stated end is judged all the same
    ok, rows = _census(last_allowed.isoformat())
    assert _on(_validate(ok, day, schema), rows) == set()
    late, rows = _census((last_allowed + timedelta(days=1)).isoformat())
    assert _on(_validate(late, day, schema), rows) == {(r, "coverage_end", "dependent_age_limit") for r in rows}


def test_a_leap_day_birth_reaches_the_limit_on_28_february() -> None:
    schema = CensusSchema.model_validate({**SCHEMA.model_dump(), "dependent_coverage_ends": "birthday"})
    frame, rows = _census("2026-02-28")
    frame.loc[frame["row_number"].isin(rows), "dob"] = "2000-02-29"
    assert _on(_validate(frame, date(2026, 2, 20), schema), rows) == set()
    frame.loc[frame["row_number"].isin(rows), "coverage_end"] = "2026-03-01"
    assert _on(_validate(frame, date(2026, 2, 20), schema), rows) == {
        (r, "coverage_end", "dependent_age_limit") for r in rows}


def test_an_unknown_setting_is_refused_at_load_naming_the_field(tmp_path: Path) -> None:
    from carrierfeeds.config import load_schema as load

    path = tmp_path / "census-v1.yaml"
    text = (ROOT / "schemas" / "census-v1.yaml").read_text()
    path.write_text(text.replace("dependent_coverage_ends: end_of_month", "dependent_coverage_ends: end_of_mnth"))
    with pytest.raises(ConfigError, match=r"dependent_coverage_ends: must be one of 'birthday', 'end_of_month' "
                                          r"or 'end_of_year'; did you mean 'end_of_month'\?"):
        load(path)
