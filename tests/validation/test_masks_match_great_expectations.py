"""The suite's expectations evaluated as vectorised masks find exactly what Great Expectations finds.

Each test runs the same suite file over the same census twice, once through the masks (the default)
and once through real GX (``engine="gx"``), and compares rows, column, rule and message of every failed
expectation, and the warnings. The censuses are dirty on purpose: blanks, codes in the wrong case,
Unicode digits, newlines and whitespace inside cells, impossible and reversed dates.
"""

from __future__ import annotations

import calendar
import json
import logging
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from carrierfeeds.census.columns import ROW_NUMBER
from carrierfeeds.census.generate import generate_census
from carrierfeeds.config import CensusSchema, load_schema
from carrierfeeds.errors import ConfigError
from carrierfeeds.validation import check_suite
from carrierfeeds.validation.findings import RuleRows
from carrierfeeds.validation.masks import run_suite
from carrierfeeds.validation.policy import _isin
from carrierfeeds.validation.rules import _AGE_LIMIT_ENDS, _IDENTITY, _ISO_RE, cross_row_rules

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = load_schema(ROOT / "schemas" / "census-v1.yaml")
SUITE = ROOT / "schemas" / SCHEMA.suite
DAY = date(2026, 11, 20)

#: Values planted at random into the suite's columns: each breaks, or nearly breaks, some rule.
NASTY = ["", " ", "x", "M", "m", "EE", "ee", "FAM", "FAMILY", "CA", "ca", "ZZ", "000123456", "666123457",
         "123456789", "1234567890", "111111111", "12345678", "123-45-6789", "123456789\n", "\n123456789",
         "\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19",
         "\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669",
         "2020-01-01", "2020-13-01", "2020-02-30", "1999-12-31", "2031-01-01",
         "20200101", "01/02/2020", "2020-01-01 ", "12345", "123456789", "1234", "FT", "ft", "RT", "XX",
         "5551234567", "555-123-4567", "null", "NaN", "None", "ü", "(?!)", "\\1"]


def _dirty(members: int, seed: int, share: float = 0.08) -> pd.DataFrame:
    frame = generate_census(members, seed, as_of=DAY)
    frame["row_number"] = np.arange(2, len(frame) + 2, dtype=np.int64)
    rng = np.random.default_rng(seed)
    columns = [c for c in frame.columns if c != "row_number"]
    for n, column in enumerate(columns):
        hit = rng.random(len(frame)) < share
        frame.loc[hit, column] = rng.choice(NASTY, size=int(hit.sum()))
        # ...and every nasty value at least once in every column, on rows that differ from column to column
        rows = (np.arange(len(NASTY)) * 7 + n) % len(frame)
        frame.loc[frame.index[rows], column] = NASTY[: len(rows)]
    return frame


def _key(raws: list[RuleRows]) -> set[tuple[str, str, str, tuple[int, ...]]]:
    return {(r.column, r.rule, r.message, tuple(sorted(int(x) for x in r.rows))) for r in raws}


def _both(frame: pd.DataFrame, suite: Path) -> tuple[Any, Any]:
    fast, fast_warnings = run_suite(frame, suite)
    ref, ref_warnings = run_suite(frame, suite, engine="gx")
    return (_key(fast), sorted(fast_warnings)), (_key(ref), sorted(ref_warnings))


def _suite_with(tmp_path: Path, extra: list[dict[str, Any]], *, drop_types: tuple[str, ...] = ()) -> Path:
    suite = json.loads(SUITE.read_text())
    suite["expectations"] = [e for e in suite["expectations"] if e["type"] not in drop_types] + extra
    path = tmp_path / "custom.suite.json"
    path.write_text(json.dumps(suite))
    return path


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_shipped_suite_as_masks_finds_exactly_what_gx_finds(seed: int) -> None:
    frame = _dirty(300, seed)
    fast, ref = _both(frame, SUITE)
    assert fast == ref
    # The census is dirty enough that nearly every rule of the suite fires (so the comparison says something).
    rules = {rule for _, rule, _, _ in fast[0]}
    assert {"required_value", "ssn_format", "ssn_repeated_digit", "date_format", "gender_code",
            "relationship_code", "coverage_level_code", "state_code", "zip_format", "phone_format",
            "employment_status_code", "coverage_end_after_start"} <= rules


def test_a_clean_census_passes_both_ways() -> None:
    frame = generate_census(200, 5, as_of=DAY)
    frame["row_number"] = np.arange(2, len(frame) + 2, dtype=np.int64)
    fast, ref = _both(frame, SUITE)
    assert fast == ref == (set(), [])


def test_missing_columns_are_reported_and_skipped_the_same_way() -> None:
    frame = _dirty(100, 4).drop(columns=["coverage_level", "zip", "coverage_start"])
    fast, ref = _both(frame, SUITE)
    assert fast == ref
    assert any(rule == "required_column" and rows == (1,) for _, rule, _, rows in fast[0])
    assert any("zip" in w for w in fast[1]) and any("coverage_start" in w for w in fast[1])


def test_user_added_expectations_mix_masks_and_gx(tmp_path: Path) -> None:
    """Pair rules with every ignore_row_if, a strict pair, sets and regexes the masks evaluate, and types or
    options they leave to GX (mostly, uniqueness, lengths): all together in one suite."""
    extra: list[dict[str, Any]] = [
        {"type": "expect_column_pair_values_a_to_be_greater_than_b",
         "kwargs": {"column_A": "coverage_end", "column_B": "coverage_start"}, "meta": {"rule": "pair_default"}},
        {"type": "expect_column_pair_values_a_to_be_greater_than_b",
         "kwargs": {"column_A": "coverage_start", "column_B": "dob", "ignore_row_if": "neither",
                    "or_equal": False}},
        {"type": "expect_column_pair_values_a_to_be_greater_than_b",
         "kwargs": {"column_A": "hire_date", "column_B": "dob", "ignore_row_if": "both_values_are_missing",
                    "or_equal": True}},
        {"type": "expect_column_values_to_be_in_set",
         "kwargs": {"column": "plan_code", "value_set": ["MED-PPO", "MED-HDHP", "DEN-BASIC"]}},
        {"type": "expect_column_values_to_not_match_regex", "kwargs": {"column": "last_name", "regex": "[0-9]"},
         "meta": {"rule": "no_digits_in_names", "message": "a name holds a digit"}},
        {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "first_name", "regex": "^[A-Z]"},
         "description": "capitalised"},
        # patterns RE2 cannot run: Python's re, once per distinct value
        {"type": "expect_column_values_to_match_regex",
         "kwargs": {"column": "ssn", "regex": "^(?!000|666|9[0-9][0-9])[0-9]{3}(?!00)[0-9]{2}(?!0000)[0-9]{4}$"},
         "meta": {"rule": "ssn_look_ahead"}},
        {"type": "expect_column_values_to_not_match_regex", "kwargs": {"column": "ssn", "regex": "^([0-9])\\1{8}$"},
         "meta": {"rule": "ssn_back_reference"}},
        # left to GX: an option the masks do not evaluate, and types they do not know
        {"type": "expect_column_values_to_be_in_set",
         "kwargs": {"column": "state", "value_set": ["CA", "NY", "TX"], "mostly": 0.5}},
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "ssn"}, "meta": {"rule": "ssn_once"}},
        {"type": "expect_column_value_lengths_to_be_between",
         "kwargs": {"column": "zip", "min_value": 5, "max_value": 9}},
    ]
    path = _suite_with(tmp_path, extra)
    frame = _dirty(250, 6)
    fast, ref = _both(frame, path)
    assert fast == ref
    rules = {rule for _, rule, _, _ in fast[0]}
    assert {"pair_default", "no_digits_in_names", "ssn_once", "expect_column_values_to_be_in_set", "ssn_look_ahead",
            "expect_column_value_lengths_to_be_between"} <= rules


def test_the_shipped_suite_runs_without_importing_great_expectations() -> None:
    """GX is slow to import in every process (every Airflow task is a fresh one); the masks need none."""
    code = (
        "import sys\n"
        "from datetime import date\n"
        "from pathlib import Path\n"
        "from carrierfeeds.census.generate import generate_census\n"
        "from carrierfeeds.validation.masks import run_suite\n"
        "frame = generate_census(50, 1, as_of=date(2026, 11, 20))\n"
        "frame['row_number'] = range(2, len(frame) + 2)\n"
        f"raws, _ = run_suite(frame, Path({str(SUITE)!r}))\n"
        "print(len(raws), 'great_expectations' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    assert out == ["0", "False"]


def test_a_suite_with_an_unknown_expectation_still_goes_through_gx_and_fails_as_a_config_error(
        tmp_path: Path) -> None:
    path = _suite_with(tmp_path, [{"type": "expect_column_values_to_be_purple", "kwargs": {"column": "ssn"}}])
    with pytest.raises(ConfigError, match=r"expectation 1 \(expect_column_values_to_be_purple\): not an "
                                          r"expectation type Great Expectations knows") as caught:
        run_suite(_dirty(20, 1), path)
    assert caught.value.file is not None and caught.value.file.endswith("custom.suite.json")


def test_a_bad_regex_is_a_config_error_both_ways(tmp_path: Path) -> None:
    path = _suite_with(tmp_path, [{"type": "expect_column_values_to_match_regex",
                                   "kwargs": {"column": "zip", "regex": "([0-9]"}}])
    for engine in ("auto", "gx"):
        with pytest.raises(ConfigError, match=r"could not run"):
            run_suite(_dirty(20, 1), path, engine=engine)


# ------------------------------------------------------------------------------------ cross-row rules
def _reference_text(series: pd.Series) -> pd.Series:
    return series.astype("str").fillna("")


def _reference_parse_iso(series: pd.Series) -> pd.Series:
    return pd.to_datetime(series.where(series != ""), format="%Y-%m-%d", errors="coerce")


def _reference_cross_row_rules(census: pd.DataFrame, schema: CensusSchema, as_of: date) -> list[RuleRows]:
    """The cross-row rules as first written (pandas duplicated/drop_duplicates over string pairs)."""
    need = ("member_id", "subscriber_id", "relationship", "plan_code", "coverage_start", "coverage_end",
            "dob", "first_name", "last_name", "ssn")
    if any(c not in census.columns for c in need):
        return []  # the suite's required-column findings already fail the file
    rn = census[ROW_NUMBER].to_numpy(dtype=np.int64)
    col = {c: _reference_text(census[c]) for c in need}
    mid, sid, rel, plan = col["member_id"], col["subscriber_id"], col["relationship"], col["plan_code"]
    out: list[RuleRows] = []

    def add(mask: pd.Series | np.ndarray, column: str, rule: str, message: str) -> None:
        m = np.asarray(mask, dtype=bool)
        if m.any():
            out.append(RuleRows(rows=rn[m], column=column, rule=rule, message=message))

    dates = {c: _reference_parse_iso(col[c]) for c in ("dob", "coverage_start", "coverage_end")}
    for c in ("dob", "coverage_start", "coverage_end"):
        add(col[c].str.match(_ISO_RE) & dates[c].isna(), c, "real_date",
            "date does not exist in the calendar")
    if "hire_date" in census.columns:
        hire = _reference_text(census["hire_date"])
        add(hire.str.match(_ISO_RE) & _reference_parse_iso(hire).isna(), "hire_date", "real_date",
            "date does not exist in the calendar")

    is_ee = rel == "EE"
    ee_ids = mid[is_ee & (mid != "")]
    add(~is_ee & (sid != "") & ~_isin(sid, ee_ids), "subscriber_id", "subscriber_present",
        "subscriber_id names no employee (EE) row in this file")
    add(is_ee & (mid != "") & (sid != "") & (mid != sid), "subscriber_id", "subscriber_id_self",
        "on an employee's rows subscriber_id must equal member_id")
    ee_pairs = pd.DataFrame({"sid": sid[is_ee], "mid": mid[is_ee]}).drop_duplicates()
    multi = ee_pairs["sid"][ee_pairs["sid"].duplicated()]
    add(is_ee & _isin(sid, multi), "relationship", "one_subscriber_per_family",
        "a family (subscriber_id) must have exactly one employee (EE)")
    add(pd.DataFrame({"m": mid, "p": plan, "s": col["coverage_start"]}).duplicated(keep=False) & (mid != "")
        & (plan != ""), "plan_code", "unique_member_plan",
        "the same member_id appears twice for the same plan_code and coverage_start")
    for c in _IDENTITY:
        pairs = pd.DataFrame({"m": mid, "v": col[c]}).drop_duplicates()
        varying = pairs["m"][pairs["m"].duplicated()]
        add(_isin(mid, varying) & (mid != ""), c, "same_person_fields",
            f"the same member_id has different {c} values on different rows")

    # a dependent's coverage must sit inside the subscriber's coverage in the same plan: against the
    # subscriber's period of that plan that started last on or before the dependent's (else the first)
    subs = pd.DataFrame({"sid": mid, "plan": plan, "s_start": dates["coverage_start"],
                         "s_end": dates["coverage_end"], "s_pos": np.arange(len(census))})[is_ee & (mid == sid)]
    deps = pd.DataFrame({"pos": np.arange(len(census)), "sid": sid, "plan": plan,
                         "start": dates["coverage_start"], "end": dates["coverage_end"]})[
        ~is_ee & _isin(sid, ee_ids)]
    periods: dict[tuple[str, str], list[tuple[float, int, pd.Timestamp, pd.Timestamp]]] = {}
    for r in subs.itertuples():
        day = -1.0 if pd.isna(r.s_start) else r.s_start.value
        periods.setdefault((r.sid, r.plan), []).append((day, r.s_pos, r.s_start, r.s_end))
    picked: list[dict[str, object]] = []
    for r in deps.itertuples():
        choices = sorted(periods.get((r.sid, r.plan), []))
        day = -1.0 if pd.isna(r.start) else r.start.value
        fit = [c for c in choices if c[0] <= day]
        chosen = fit[-1] if fit else (choices[0] if choices else None)
        picked.append({"pos": r.pos, "start": r.start, "end": r.end, "in_plan": chosen is not None,
                       "s_start": chosen[2] if chosen else pd.NaT, "s_end": chosen[3] if chosen else pd.NaT})
    joined = pd.DataFrame(picked, columns=["pos", "start", "end", "in_plan", "s_start", "s_end"])
    for c in ("start", "end", "s_start", "s_end"):
        joined[c] = pd.to_datetime(joined[c])
    in_plan = joined["in_plan"].to_numpy(dtype=bool)
    pos = joined["pos"].to_numpy(dtype=np.int64)

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
    add((rel == "CH") & _reference_past_age_limit(dates["dob"], dates["coverage_end"], limit,
                                                  schema.dependent_coverage_ends, as_of),
        "coverage_end", "dependent_age_limit",
        f"child's coverage runs past the dependent age limit ({limit}): it must end by "
        f"{_AGE_LIMIT_ENDS[schema.dependent_coverage_ends]} (schema setting dependent_coverage_ends), "
        "and have an end date once that birthday is reached")
    add(dates["dob"].notna() & ((dates["dob"] > day) | (dates["dob"] < pd.Timestamp("1900-01-01"))), "dob",
        "dob_plausible", "date of birth is in the future or before 1900")

    ssn = col["ssn"]
    pairs = pd.DataFrame({"s": ssn, "m": mid})[ssn != ""].drop_duplicates()
    shared = pairs["s"][pairs["s"].duplicated()]
    add(_isin(ssn, shared) & (ssn != ""), "ssn", "ssn_unique",
        "the same SSN appears on more than one member_id")
    return out


def _reference_past_age_limit(dob: pd.Series, end: pd.Series, limit: int, ends: str, as_of: date) -> np.ndarray:
    """The age-limit rule row by row in plain dates: the birthday reaching ``limit``, the last day coverage
    may run then (``ends``), and whether the row's coverage runs past it."""
    out = np.zeros(len(dob), dtype=bool)
    for i, (born, stop) in enumerate(zip(dob, end, strict=True)):
        if pd.isna(born) or born.date() > as_of:
            continue
        b = born.date()
        birthday = date(b.year + limit, b.month, min(b.day, calendar.monthrange(b.year + limit, b.month)[1]))
        allowed = {"birthday": birthday,
                   "end_of_month": birthday.replace(day=calendar.monthrange(birthday.year, birthday.month)[1]),
                   "end_of_year": date(birthday.year, 12, 31)}[ends]
        out[i] = birthday <= as_of if pd.isna(stop) else stop.date() > allowed
    return out


def _family_mess(members: int, seed: int) -> pd.DataFrame:
    """A census with the cross-row rules broken at random: members copied onto other rows with one field
    changed, subscribers' ids moved, a second employee in a family, SSNs shared, dependents' plans and
    dates off, on top of the random nasty cells of :func:`_dirty`."""
    frame = _dirty(members, seed, share=0.03)
    rng = np.random.default_rng(seed + 100)
    n = len(frame)
    copies = frame.iloc[rng.integers(0, n, size=n // 10)].copy()
    for column in ("first_name", "last_name", "dob", "ssn", "plan_code", "coverage_start", "coverage_end",
                   "relationship", "subscriber_id"):
        change = rng.random(len(copies)) < 0.3
        copies.loc[change, column] = frame[column].to_numpy()[rng.integers(0, n, size=int(change.sum()))]
    frame = pd.concat([frame, copies], ignore_index=True)
    frame[ROW_NUMBER] = np.arange(2, len(frame) + 2, dtype=np.int64)
    return frame


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_cross_row_rules_by_codes_find_exactly_what_the_pandas_pairs_found(seed: int) -> None:
    frame = _family_mess(400, seed)
    new = _key(cross_row_rules(frame, SCHEMA, DAY))
    assert new == _key(_reference_cross_row_rules(frame, SCHEMA, DAY))
    rules = {rule for _, rule, _, _ in new}
    assert {"same_person_fields", "unique_member_plan", "one_subscriber_per_family", "ssn_unique",
            "subscriber_present", "dependent_plan_not_elected", "real_date"} <= rules


def test_cross_row_rules_on_a_clean_and_an_empty_census() -> None:
    frame = generate_census(150, 9, as_of=DAY)
    frame[ROW_NUMBER] = np.arange(2, len(frame) + 2, dtype=np.int64)
    assert _key(cross_row_rules(frame, SCHEMA, DAY)) == _key(_reference_cross_row_rules(frame, SCHEMA, DAY))
    empty = frame.iloc[0:0]
    assert cross_row_rules(empty, SCHEMA, DAY) == _reference_cross_row_rules(empty, SCHEMA, DAY) == []


# --------------------------------------------------------------------- feeds check builds the suite in GX
#: Suite edits Great Expectations refuses, with what the refusal must say.
REFUSED = {
    "mostly_above_1": ({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "ssn", "mostly": 2}},
                       r"expectation 1 \(expect_column_values_to_not_be_null\): mostly must be at most 1"),
    "unknown_kwarg": ({"type": "expect_column_values_to_match_regex",
                       "kwargs": {"column": "zip", "regex": "^[0-9]{5}$", "colour": "red"}},
                      r"expectation 1 \(expect_column_values_to_match_regex\): colour is not an option of this type"),
    "misspelt_kwarg": ({"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "zip", "valueset": []}},
                       r"value_set is required; valueset is not an option of this type; did you mean 'value_set'\?"),
    "meta_not_an_object": ({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "ssn"},
                            "meta": ["rule"]}, r"\): meta must be an object"),
    "blank_column": ({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": ""}},
                     r"expectation 1 \(expect_column_values_to_not_be_null\): column must not be blank"),
    "unknown_type": ({"type": "expect_column_values_to_be_purple", "kwargs": {"column": "ssn"}},
                     r"expectation 1 \(expect_column_values_to_be_purple\): not an expectation type Great "
                     r"Expectations knows"),
    "bad_regex": ({"type": "expect_column_values_to_match_regex", "kwargs": {"column": "zip", "regex": "([0-9]"}},
                  r"expectation 1 \(expect_column_values_to_match_regex\) has a regex that does not compile"),
}


def _only(tmp_path: Path, expectation: dict[str, Any]) -> Path:
    path = tmp_path / "custom.suite.json"
    path.write_text(json.dumps({"name": "custom", "expectations": [expectation]}))
    return path


def test_check_suite_builds_the_shipped_suite_in_gx() -> None:
    assert check_suite(SUITE) == len(json.loads(SUITE.read_text())["expectations"])


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_check_suite_refuses_what_gx_refuses_naming_the_expectation(tmp_path: Path, case: str) -> None:
    expectation, message = REFUSED[case]
    with pytest.raises(ConfigError, match=message) as caught:
        check_suite(_only(tmp_path, expectation))
    assert caught.value.file is not None and caught.value.file.endswith("custom.suite.json")


def test_feeds_check_catches_a_suite_edit_gx_would_refuse_before_any_run(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from carrierfeeds.cli import app

    schemas = tmp_path / "schemas"
    schemas.mkdir()
    for shipped in (ROOT / "schemas").iterdir():
        (schemas / shipped.name).write_bytes(shipped.read_bytes())
    suite = json.loads(SUITE.read_text())
    # not null on member_id, now on a blank column name: the masks would skip it as a column not in the
    # census (a rule silently off); GX refuses it
    (number,) = [i for i, e in enumerate(suite["expectations"], start=1)
                 if e["type"] == "expect_column_values_to_not_be_null" and e["kwargs"]["column"] == "member_id"]
    suite["expectations"][number - 1]["kwargs"]["column"] = ""
    (schemas / SUITE.name).write_text(json.dumps(suite))
    env = {"CARRIERFEEDS_FEEDS_DIR": str(ROOT / "feeds"), "CARRIERFEEDS_MAPPINGS_DIR": str(ROOT / "mappings")}
    runner = CliRunner()
    broken = runner.invoke(app, ["feeds", "check", "--config-only", "--json"],
                           env={**env, "CARRIERFEEDS_SCHEMAS_DIR": str(schemas)})
    assert broken.exit_code == 2, broken.output
    data = json.loads(broken.output)
    using = [f for f in data["feeds"] if not f["ok"]]
    assert using and all(SUITE.name in f["error"] and f"expectation {number} " in f["error"]
                         and "column must not be blank" in f["error"] for f in using)
    shipped = runner.invoke(app, ["feeds", "check", "--config-only", "--json"],
                            env={**env, "CARRIERFEEDS_SCHEMAS_DIR": str(ROOT / "schemas")})
    assert shipped.exit_code == 0, shipped.output


def test_a_blank_column_name_fails_the_run_too_rather_than_skipping_the_rule(tmp_path: Path) -> None:
    path = _suite_with(tmp_path, [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": ""}}])
    with pytest.raises(ConfigError, match=r"column must not be blank"):
        run_suite(_dirty(20, 1), path)


def test_every_refused_expectation_is_listed_once_without_gx_tracebacks(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    """Two typos in a suite: one error listing both (and a bad regex), not GX's traceback per typo and
    only the first of them."""
    suite = json.loads(SUITE.read_text())
    typos = [2, 4]
    for number in typos:
        suite["expectations"][number - 1]["type"] += "x"
    suite["expectations"].append({"type": "expect_column_values_to_match_regex",
                                  "kwargs": {"column": "zip", "regex": "([0-9]"}})
    path = tmp_path / "custom.suite.json"
    path.write_text(json.dumps(suite))
    with caplog.at_level(logging.DEBUG), pytest.raises(ConfigError) as caught:
        check_suite(path)
    problems = caught.value.details["problems"]
    assert [p.split(" (")[0] for p in problems] == [
        "expectation 2", "expectation 4", f"expectation {len(suite['expectations'])}"]
    assert all("did you mean" in p for p in problems[:2]) and "does not compile" in problems[2]
    assert caught.value.message.startswith(f"{path}: 3 problems: ")
    assert "Traceback" not in capfd.readouterr().err
    assert not [r for r in caplog.records if r.name.startswith("great_expectations")]
    with pytest.raises(ConfigError) as at_run:  # a run that hands the suite to GX says the same
        run_suite(_dirty(20, 1), path, engine="gx")
    assert at_run.value.details["problems"] == problems[:2]
