"""validate_census + apply_policy on the shipped suite (evaluated as masks, not by GX): rules, no PHI, policies."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from carrierfeeds.census.generate import generate_census, write_census_csv
from carrierfeeds.census.readers import read_census
from carrierfeeds.census.tokens import MemberTokenizer
from carrierfeeds.config import ValidationPolicy, load_schema
from carrierfeeds.errors import CensusRejected, ConfigError
from carrierfeeds.validation import ValidationReport, apply_policy, validate_census

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = load_schema(ROOT / "schemas" / "census-v1.yaml")
SUITE = ROOT / "schemas" / SCHEMA.suite
DAY = date(2026, 11, 20)
TOKENIZER = MemberTokenizer(b"t" * 32)
CANARY_SSN, CANARY_NAME, CANARY_DOB = "666123457", "Zebediah", "2031-02-03"


def _validate(frame: pd.DataFrame, suite: Path = SUITE) -> ValidationReport:
    return validate_census(frame, suite, SCHEMA, TOKENIZER, as_of=DAY, source_name="census_test.csv")


def _base(members: int = 80, seed: int = 3) -> pd.DataFrame:
    frame = generate_census(members, seed, as_of=DAY)
    frame["row_number"] = range(2, len(frame) + 2)
    return frame


@dataclass
class Planted:
    frame: pd.DataFrame
    expected: list[tuple[int, str, str]]  # (row, column, rule)
    report: ValidationReport


@pytest.fixture(scope="module")
def planted() -> Planted:
    """A census with one planted failure per rule, each on its own member, validated once."""
    frame = _base()
    firsts = frame.drop_duplicates("member_id")
    multi = frame["member_id"].duplicated(keep=False)
    ee = [i for i in firsts.index[firsts["relationship"] == "EE"] if multi[i]]
    deps = [i for i in firsts.index[firsts["relationship"] != "EE"] if multi[i]]
    kids = [i for i in firsts.index[firsts["relationship"] == "CH"] if multi[i] and i not in deps[:8]]
    expected: list[tuple[int, str, str]] = []

    def plant(i: int, column: str, value: str, rule: str, report_column: str | None = None) -> None:
        frame.loc[i, column] = value
        expected.append((i + 2, report_column or column, rule))

    plant(ee[0], "ssn", CANARY_SSN, "ssn_format")
    plant(ee[1], "ssn", "111111111", "ssn_repeated_digit")
    plant(ee[2], "dob", "1990-13-01", "date_format")
    plant(ee[3], "dob", "2023-02-30", "real_date")
    plant(ee[4], "gender", "X", "gender_code")
    plant(ee[5], "coverage_level", "XYZ", "coverage_level_code")
    plant(ee[6], "state", "ZZ", "state_code")
    plant(ee[7], "zip", "1234", "zip_format")
    plant(ee[8], "employment_status", "XX", "employment_status_code")
    plant(ee[9], "coverage_end", "2019-12-31", "coverage_end_after_start")
    plant(ee[10], "last_name", "", "required_value")
    plant(ee[11], "phone", "123", "phone_format")
    plant(ee[12], "dob", CANARY_DOB, "dob_plausible")
    plant(ee[13], "last_name", CANARY_NAME, "same_person_fields")
    plant(ee[14], "subscriber_id", "E7777777", "subscriber_id_self")
    plant(deps[0], "relationship", "ZZ", "relationship_code")
    plant(deps[1], "subscriber_id", "E9999999", "subscriber_present")
    plant(deps[2], "coverage_start", "2019-06-01", "dependent_starts_before_subscriber")
    plant(deps[3], "plan_code", "VIS-GOLD", "dependent_plan_not_elected")
    plant(kids[0], "dob", "1990-01-01", "dependent_age_limit", "coverage_end")
    # the same SSN on two members: both members' rows are flagged
    other = ee[15]
    frame.loc[frame["member_id"] == frame.loc[other, "member_id"], "ssn"] = frame.loc[ee[16], "ssn"]
    expected += [(other + 2, "ssn", "ssn_unique"), (ee[16] + 2, "ssn", "ssn_unique")]
    # an exact duplicate (member_id, plan_code) row at the end of the file
    dup = frame.loc[[ee[17]]].assign(row_number=len(frame) + 2)
    frame = pd.concat([frame, dup], ignore_index=True)
    expected += [(ee[17] + 2, "plan_code", "unique_member_plan"), (len(frame) + 1, "plan_code",
                                                                      "unique_member_plan")]
    return Planted(frame=frame, expected=expected, report=_validate(frame))


def test_generated_census_passes_with_zero_findings(tmp_path: Path) -> None:
    census = generate_census(400, 17, as_of=DAY)
    path = tmp_path / "census.csv"
    write_census_csv(census, path)
    report = _validate(read_census(path, SCHEMA))
    assert report.ok, report.rule_counts
    assert report.members == 400 and report.rows == len(census) and report.failed_families == 0
    assert report.families == census["subscriber_id"].nunique() and report.warnings == ()


def test_every_rule_has_a_finding_at_the_right_row_and_column(planted: Planted) -> None:
    got = {(f.row, f.column, f.rule) for f in planted.report.findings}
    missing = [e for e in planted.expected if e not in got]
    assert not missing
    rules = {r for _, _, r in planted.expected}
    assert len(rules) == 22 and rules <= set(planted.report.rule_counts)


def test_findings_are_sorted_tokenised_and_counted(planted: Planted) -> None:
    report, frame = planted.report, planted.frame
    rows = [f.row for f in report.findings]
    assert rows == sorted(rows)
    ids = dict(zip(frame["row_number"], frame["member_id"], strict=True))
    for f in report.findings:
        assert f.member_token == TOKENIZER.token(ids[f.row])
        assert f.message and f.member_token.startswith("m_")
    failing_rows = set(rows)
    assert report.failed_rows == len(failing_rows)
    failing_families = frame.loc[frame["row_number"].isin(failing_rows), "subscriber_id"].nunique()
    assert report.failed_families == failing_families
    assert sum(report.rule_counts.values()) == len(report.findings)
    assert not report.ok


def test_no_phi_in_report_files_json_exceptions_or_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                        planted: Planted) -> None:
    caplog.set_level(logging.DEBUG)
    report = _validate(planted.frame)
    outcome = apply_policy(planted.frame, report, ValidationPolicy(policy="reject"))
    report.write_csv(tmp_path / "v.csv")
    report.write_html(tmp_path / "v.html")
    error = CensusRejected(f"census rejected: {outcome.reason}", file=report.source_name,
                           details={"failed_rows": report.failed_rows})
    haystacks = {"json": json.dumps(report.to_dict()), "csv": (tmp_path / "v.csv").read_text(),
                 "html": (tmp_path / "v.html").read_text(), "logs": caplog.text, "repr": repr(report),
                 "error": str(error.as_dict()), "outcome": str(outcome.reason)}
    assert "ssn_format" in haystacks["csv"] and "<table>" in haystacks["html"]
    member_ids = set(planted.frame["member_id"])
    for name, text in haystacks.items():
        for canary in (CANARY_SSN, CANARY_NAME, CANARY_DOB):
            assert canary not in text, (name, canary)
        assert not any(m in text for m in member_ids), name


def test_html_escapes_source_name(planted: Planted, tmp_path: Path) -> None:
    report = validate_census(planted.frame.iloc[:5], SUITE, SCHEMA, TOKENIZER, as_of=DAY,
                             source_name="<script>x</script>.csv")
    report.write_html(tmp_path / "r.html")
    text = (tmp_path / "r.html").read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert oct((tmp_path / "r.html").stat().st_mode & 0o777) == "0o600"


def test_missing_required_column_is_a_header_finding_and_rejects_every_policy() -> None:
    frame = _base(20).drop(columns=["coverage_level"])
    report = _validate(frame)
    assert (1, "coverage_level", "required_column") in {(f.row, f.column, f.rule) for f in report.findings}
    assert any("coverage_level" in w for w in report.warnings)
    for policy in ("reject", "quarantine", "threshold"):
        outcome = apply_policy(frame, report, ValidationPolicy(policy=policy, threshold_pct=100))
        assert outcome.rejected and outcome.accepted.empty


def test_a_user_added_expectation_is_honoured(tmp_path: Path) -> None:
    suite = json.loads(SUITE.read_text())
    suite["expectations"].append({"type": "expect_column_values_to_be_in_set",
                                  "kwargs": {"column": "plan_code", "value_set": ["MED-PPO", "MED-HDHP"]}})
    path = tmp_path / "custom.suite.json"
    path.write_text(json.dumps(suite))
    frame = _base(30)
    report = _validate(frame, path)
    flagged = {f.row for f in report.findings if f.rule == "expect_column_values_to_be_in_set"}
    assert flagged == set(frame.loc[~frame["plan_code"].str.startswith("MED"), "row_number"])
    assert flagged and all(f.column == "plan_code" for f in report.findings)


@pytest.mark.parametrize("content", ["{not json", '["a list"]',
                                     '{"name": "x", "expectations": [{"type": 1}]}'])
def test_a_broken_suite_file_is_a_config_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "broken.suite.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=r"broken\.suite\.json"):
        _validate(_base(5), path)


def test_policy_reject(planted: Planted) -> None:
    outcome = apply_policy(planted.frame, planted.report, ValidationPolicy(policy="reject"))
    assert outcome.rejected and outcome.reason and outcome.accepted.empty
    assert outcome.held_back_families == planted.report.families


def test_policy_quarantine_keeps_passing_families_only(planted: Planted) -> None:
    frame, report = planted.frame, planted.report
    outcome = apply_policy(frame, report, ValidationPolicy(policy="quarantine"))
    assert not outcome.rejected and outcome.reason is None
    failing = set(frame.loc[frame["row_number"].isin({f.row for f in report.findings}), "subscriber_id"])
    assert outcome.held_back_families == len(failing) == report.failed_families
    assert not set(outcome.accepted["subscriber_id"]) & failing
    kept = frame[~frame["subscriber_id"].isin(failing)]
    pd.testing.assert_frame_equal(outcome.accepted, kept)
    assert outcome.held_back_members == frame.loc[frame["subscriber_id"].isin(failing), "member_id"].nunique()



def test_policy_names_the_member_ids_it_held_back(planted: Planted) -> None:
    """The ids a change file carries over: on held-back rows, on no accepted row, never blank."""
    frame, report = planted.frame.copy(), planted.report
    failing = set(frame.loc[frame["row_number"].isin({f.row for f in report.findings}), "subscriber_id"])
    held_rows, kept_rows = frame.index[frame["subscriber_id"].isin(failing)], frame.index[
        ~frame["subscriber_id"].isin(failing)]
    shared = frame.loc[held_rows[0], "member_id"]
    frame.loc[kept_rows[-1], "member_id"] = shared  # one id in a held-back and in an accepted family
    frame.loc[held_rows[-1], "member_id"] = ""
    outcome = apply_policy(frame, report, ValidationPolicy(policy="quarantine"))
    expected = set(frame["member_id"]) - set(outcome.accepted["member_id"]) - {""}
    assert outcome.held_back_member_ids == expected and shared not in expected and expected
    rejected = apply_policy(frame, report, ValidationPolicy(policy="reject"))
    assert rejected.held_back_member_ids == set(frame["member_id"]) - {""}
    clean = _base(10)
    assert apply_policy(clean, _validate(clean), ValidationPolicy(policy="reject")).held_back_member_ids == set()

def test_policy_threshold(planted: Planted) -> None:
    report = planted.report
    pct = report.failed_families / report.families * 100
    below = apply_policy(planted.frame, report, ValidationPolicy(policy="threshold", threshold_pct=pct + 1))
    assert not below.rejected and below.held_back_families == report.failed_families
    above = apply_policy(planted.frame, report, ValidationPolicy(policy="threshold", threshold_pct=pct - 1))
    assert above.rejected and "threshold" in (above.reason or "")


def test_quarantine_with_every_family_failing_is_rejected() -> None:
    frame = _base(3, seed=1)
    frame["gender"] = "X"
    outcome = apply_policy(frame, _validate(frame), ValidationPolicy(policy="quarantine"))
    assert outcome.rejected and outcome.accepted.empty


def test_clean_report_accepts_everything() -> None:
    frame = _base(10)
    outcome = apply_policy(frame, _validate(frame), ValidationPolicy(policy="reject"))
    assert not outcome.rejected and outcome.accepted is frame and outcome.held_back_members == 0


@pytest.mark.parametrize(("column", "value", "rule"), [
    ("ssn", "\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19", "ssn_format"),  # full-width 123456789
    ("ssn", "12345\u0666789", "ssn_format"),                     # one Arabic-Indic digit among ASCII
    ("zip", "\u0661\u0662\u0663\u0664\u0665", "zip_format"),     # Arabic-Indic 12345
    ("zip", "1234\u0e55", "zip_format"),                         # a Thai five
    ("phone", "555\u0967\u0968\u0969\u096a\u096b\u096c\u096d", "phone_format"),  # Devanagari digits
    ("dob", "\uff11\uff19\uff19\uff10-01-01", "date_format"),   # full-width year
])
def test_non_ascii_digits_are_not_digits(column: str, value: str, rule: str) -> None:
    # Python's re (which runs the look-around SSN rule) takes \d as any Unicode digit; an 834 takes ASCII.
    frame = _base(10)
    i = int(frame.index[frame["relationship"] == "EE"][0])
    frame.loc[i, column] = value
    report = _validate(frame)
    assert (i + 2, column, rule) in {(f.row, f.column, f.rule) for f in report.findings}


def _family_with_dependents(frame: pd.DataFrame, at_least: int = 2) -> tuple[str, str, list[int]]:
    """(subscriber id, a plan, the dependents' row indexes in that plan) of a family with enough dependents."""
    deps = frame[frame["relationship"] != "EE"]
    for (sid, plan), rows in deps.groupby(["subscriber_id", "plan_code"]).groups.items():
        sub = frame[(frame["member_id"] == sid) & (frame["plan_code"] == plan)]
        if len(rows) >= at_least and len(sub) == 1:
            return str(sid), str(plan), [int(i) for i in rows]
    raise AssertionError("the generated census has no such family")


def _rule(report: ValidationReport, rule: str) -> set[tuple[int, str]]:
    return {(f.row, f.column) for f in report.findings if f.rule == rule}


@pytest.mark.parametrize("how", ["another_employee_filed_under_the_family", "a_dependent_marked_employee"])
def test_one_subscriber_per_family_names_each_employee_row_of_the_family(how: str) -> None:
    frame = _base(60)
    sid, _, dep_rows = _family_with_dependents(frame, at_least=1)
    if how == "another_employee_filed_under_the_family":
        other = frame.loc[(frame["relationship"] == "EE") & (frame["member_id"] != sid), "member_id"].iloc[-1]
        frame.loc[frame["member_id"] == other, "subscriber_id"] = sid
    else:
        moved = frame.loc[dep_rows[0], "member_id"]
        frame.loc[frame["member_id"] == moved, "relationship"] = "EE"
    employees = frame.index[(frame["subscriber_id"] == sid) & (frame["relationship"] == "EE")]
    assert frame.loc[employees, "member_id"].nunique() == 2
    report = _validate(frame)
    assert _rule(report, "one_subscriber_per_family") == {(int(i) + 2, "relationship") for i in employees}


def test_dependent_ends_after_subscriber_names_the_dependent_row_and_coverage_end() -> None:
    frame = _base(60)
    sid, plan, deps = _family_with_dependents(frame, at_least=2)
    sub = frame.index[(frame["member_id"] == sid) & (frame["plan_code"] == plan)][0]
    frame.loc[sub, "coverage_end"] = "2030-06-30"
    frame.loc[deps, "coverage_end"] = "2030-06-30"   # ending with the subscriber: fine
    frame.loc[deps[0], "coverage_end"] = "2030-07-01"  # a day after
    frame.loc[deps[1], "coverage_end"] = ""            # open while the subscriber's ends
    report = _validate(frame)
    assert _rule(report, "dependent_ends_after_subscriber") == {(deps[0] + 2, "coverage_end"),
                                                                 (deps[1] + 2, "coverage_end")}
