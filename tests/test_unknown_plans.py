"""A plan no carrier knows is a finding, not a silent loss of coverage.

A census plan code that no mapping in the mappings folder lists and the feed does not authorise (a typo
such as DEN-BASIC for DEN-STD, or a plan the employer renamed that the schema's ``plan_codes`` does not
list) is a validation finding (row, plan_code, unknown_plan) under the feed's policy, in ``validate``,
``preview`` and a run alike; a plan some mapping knows but this feed does not authorise is an expected
exclusion, counted by reason. ``feeds check`` refuses a ``plan_codes`` target no mapping lists.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
from typer.testing import CliRunner

from carrierfeeds.census.generate import generate_census, write_census_csv
from carrierfeeds.census.readers import read_census
from carrierfeeds.census.tokens import MemberTokenizer
from carrierfeeds.cli import app
from carrierfeeds.config import CensusSchema, ValidationPolicy
from carrierfeeds.settings import Settings, load_bundle
from carrierfeeds.validation import ValidationReport, apply_policy, validate_census

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = Settings(feeds_dir=ROOT / "feeds", mappings_dir=ROOT / "mappings", schemas_dir=ROOT / "schemas")
MEDICAL = "acme-sunrise-medical"  # authorised MED-PPO, MED-HDHP, DEN-STD; its mapping also lists VIS-STD
VISION = "acme-clearview-vision"  # authorised VIS-STD only; policy quarantine
DAY = date(2026, 11, 20)
TOKENIZER = MemberTokenizer(b"p" * 32)
runner = CliRunner()


def _census(members: int = 60, seed: int = 5) -> pd.DataFrame:
    frame = generate_census(members, seed, as_of=DAY)
    frame["row_number"] = range(2, len(frame) + 2)
    return frame


def _typo(frame: pd.DataFrame) -> tuple[pd.DataFrame, set[int], str]:
    """One family's dental rows spelt DEN-BASIC (no mapping lists it): the rows and the family."""
    dental = frame[frame["plan_code"] == "DEN-STD"]
    family = str(dental["subscriber_id"].iloc[0])
    hit = (frame["subscriber_id"] == family) & (frame["plan_code"] == "DEN-STD")
    frame = frame.copy()
    frame.loc[hit, "plan_code"] = "DEN-BASIC"
    assert hit.any()
    return frame, set(frame.loc[hit, "row_number"]), family


def _validate(frame: pd.DataFrame, feed_id: str = MEDICAL, settings: Settings = SHIPPED,
              schema: CensusSchema | None = None) -> ValidationReport:
    from carrierfeeds.settings import plan_catalogue

    bundle = load_bundle(settings, feed_id)
    return validate_census(frame, bundle.suite_path, schema or bundle.schema, TOKENIZER, as_of=DAY,
                           source_name="census_plans.csv", plans=plan_catalogue(settings, bundle))


def _unknown(report: ValidationReport) -> set[tuple[int, str, str]]:
    return {(f.row, f.column, f.rule) for f in report.findings if f.rule == "unknown_plan"}


def test_a_plan_code_no_mapping_knows_is_a_finding_under_the_feeds_policy() -> None:
    frame, rows, family = _typo(_census())
    report = _validate(frame)
    assert _unknown(report) == {(r, "plan_code", "unknown_plan") for r in rows}
    assert report.rule_counts == {"unknown_plan": len(rows)}
    finding = next(f for f in report.findings if f.rule == "unknown_plan")
    assert "DEN-BASIC" not in finding.message and finding.member_token.startswith("m_")
    # Known but not authorised for this carrier: left out as expected, counted by reason, no finding.
    assert report.excluded == {"plan_not_authorized": int((frame["plan_code"] == "VIS-STD").sum())} != {}
    # reject: the whole file; quarantine: that family only, everyone else goes on.
    assert apply_policy(frame, report, ValidationPolicy(policy="reject")).rejected
    kept = apply_policy(frame, report, ValidationPolicy(policy="quarantine"))
    assert not kept.rejected and kept.held_back_families == 1
    assert family not in set(kept.accepted["subscriber_id"]) and "DEN-BASIC" not in set(kept.accepted["plan_code"])


def test_a_renamed_plan_the_schemas_plan_codes_does_not_list_is_a_finding(tmp_path: Path) -> None:
    bundle = load_bundle(SHIPPED, MEDICAL)
    schema = CensusSchema.model_validate({**bundle.schema.model_dump(), "plan_codes": {"Gold PPO 2026": "MED-PPO"}})
    frame = _census()
    renamed_family = str(frame.loc[frame["plan_code"] == "MED-PPO", "subscriber_id"].iloc[0])
    ppo = frame["plan_code"] == "MED-PPO"
    frame.loc[ppo, "plan_code"] = "Gold PPO 2026"
    renamed = ppo & (frame["subscriber_id"] == renamed_family)
    frame.loc[renamed, "plan_code"] = "Gold PPO 2027"
    assert renamed.any() and (ppo & ~renamed).any()
    path = tmp_path / "census.csv"
    write_census_csv(frame.drop(columns="row_number"), path)
    census = read_census(path, schema)
    report = _validate(census, schema=schema)
    assert _unknown(report) == {(r, "plan_code", "unknown_plan") for r in frame.loc[renamed, "row_number"]}


def test_another_carriers_plan_is_an_exclusion_and_the_catalogue_is_every_mapping(tmp_path: Path) -> None:
    frame = _census()
    report = _validate(frame, VISION)  # MED-PPO, MED-HDHP, DEN-STD: Sunrise's mapping lists them
    assert report.ok, report.rule_counts
    assert report.excluded == {"plan_not_authorized": int((frame["plan_code"] != "VIS-STD").sum())}
    # With only the vision carrier's mapping in the folder, nothing here knows the medical plans.
    alone = tmp_path / "mappings"
    alone.mkdir()
    shutil.copy(ROOT / "mappings" / "clearview-csv.yaml", alone)
    only_vision = SHIPPED.model_copy(update={"mappings_dir": alone})
    assert _unknown(_validate(frame, VISION, only_vision)) == {
        (int(r), "plan_code", "unknown_plan") for r in frame.loc[frame["plan_code"] != "VIS-STD", "row_number"]}


def test_plans_not_sent_are_known_and_left_out() -> None:
    from carrierfeeds.config import PlanCatalogue

    bundle = load_bundle(SHIPPED, MEDICAL)
    schema = CensusSchema.model_validate({**bundle.schema.model_dump(), "plans_not_sent": ["DEN-BASIC"]})
    frame, rows, _ = _typo(_census())
    catalogue = PlanCatalogue.for_feed(bundle.feed, schema, [bundle.mapping])
    report = validate_census(frame, bundle.suite_path, schema, TOKENIZER, as_of=DAY, source_name="c.csv",
                             plans=catalogue)
    assert report.ok, report.rule_counts
    vision = int((frame["plan_code"] == "VIS-STD").sum())
    assert report.excluded == {"plan_not_authorized": vision + len(rows)}


# ------------------------------------------------------------------------------ the command line
def _cli_env(settings: Settings) -> dict[str, str]:
    values = {"FEEDS_DIR": settings.feeds_dir, "MAPPINGS_DIR": settings.mappings_dir,
              "SCHEMAS_DIR": settings.schemas_dir, "DATA_DIR": settings.data_dir, "KEYS_DIR": settings.keys_dir,
              "GNUPG_HOME": settings.gnupg_home, "LEDGER_URL": settings.ledger_url}
    return {f"CARRIERFEEDS_{k}": str(v) for k, v in values.items() if v is not None}


def _cli_ws(tmp_path: Path) -> dict[str, str]:
    settings = SHIPPED.model_copy(update={"data_dir": tmp_path / "var", "keys_dir": tmp_path / "keys"})
    (tmp_path / "keys").mkdir(mode=0o700)
    return _cli_env(settings)


def test_validate_and_preview_refuse_an_unknown_plan_naming_row_column_rule(tmp_path: Path) -> None:
    env = _cli_ws(tmp_path)
    typo, rows, _ = _typo(_census())
    bad = tmp_path / "bad.csv"
    write_census_csv(typo.drop(columns="row_number"), bad)
    result = runner.invoke(app, ["validate", MEDICAL, "--census", str(bad), "--date", DAY.isoformat(), "--json",
                                 "--report", str(tmp_path / "bad-report")], env=env)
    assert result.exit_code == 1, result.output
    data = json.loads(result.output)
    assert data["rejected"] and {(f["row"], f["column"], f["rule"]) for f in data["findings"]} == {
        (r, "plan_code", "unknown_plan") for r in rows}
    listed = list(csv.reader(io.StringIO((tmp_path / "bad-report" / "validation.csv").read_text())))[1:]
    assert {(int(r[0]), r[2], r[3]) for r in listed} == {(r, "plan_code", "unknown_plan") for r in rows}
    # a plan code is not PHI: the report shows the code the schema's plan_codes did not map (issue 21)
    assert {f["value"] for f in data["findings"]} == {"DEN-BASIC"}
    assert "DEN-BASIC" in (tmp_path / "bad-report" / "validation.html").read_text()

    preview = runner.invoke(app, ["preview", MEDICAL, "--census", str(bad), "--out", str(tmp_path / "p2"),
                                  "--date", DAY.isoformat(), "--json"], env=env)
    assert preview.exit_code == 1, preview.output
    assert json.loads(preview.stdout)["code"] == "census_rejected"


def test_validate_and_preview_count_expected_exclusions_by_reason(tmp_path: Path) -> None:
    env = _cli_ws(tmp_path)
    clean = _census().drop(columns="row_number")
    vision = int((clean["plan_code"] == "VIS-STD").sum())
    good = tmp_path / "good.csv"
    write_census_csv(clean, good)
    result = runner.invoke(app, ["validate", MEDICAL, "--census", str(good), "--date", DAY.isoformat(), "--json",
                                 "--report", str(tmp_path / "report")], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["excluded"] == {"plan_not_authorized": vision}
    html = (tmp_path / "report" / "validation.html").read_text()
    assert "plan_not_authorized" in html and "Rows left out" in html
    text = runner.invoke(app, ["validate", MEDICAL, "--census", str(good), "--date", DAY.isoformat()], env=env)
    assert f"left out as expected: plan_not_authorized {vision} row(s)" in text.output

    preview = runner.invoke(app, ["preview", MEDICAL, "--census", str(good), "--out", str(tmp_path / "p1"),
                                  "--date", DAY.isoformat(), "--json"], env=env)
    assert preview.exit_code == 0, preview.output
    assert json.loads(preview.stdout)["validation"]["excluded"] == {"plan_not_authorized": vision}


def test_a_run_rejects_an_unknown_plan_as_validate_does_and_counts_exclusions(
        tmp_path: Path, demo_keys: Any) -> None:
    from carrierfeeds.config import LocalDelivery
    from carrierfeeds.demo import prepare_workspace

    keys_dir = tmp_path / "keys"
    keys_dir.mkdir(mode=0o700)
    ws = prepare_workspace(tmp_path / "ws", keys=demo_keys, keys_dir=keys_dir, config_root=ROOT,
                           delivery=LocalDelivery(path="carrier-inbox"))
    env = _cli_env(ws.settings)

    typo, rows, _ = _typo(_census())
    bad = tmp_path / "bad.csv"
    write_census_csv(typo.drop(columns="row_number"), bad)
    result = runner.invoke(app, ["run", MEDICAL, "--census", str(bad), "--date", DAY.isoformat(), "--json"],
                           env=env)
    assert result.exit_code == 1, result.output
    assert json.loads(result.output)["status"] == "rejected"
    ran = (ws.settings.reports_dir / MEDICAL / DAY.isoformat() / "validation.csv").read_text()
    checked = runner.invoke(app, ["validate", MEDICAL, "--census", str(bad), "--date", DAY.isoformat(),
                                  "--report", str(tmp_path / "validated")], env=env)
    assert checked.exit_code == 1, checked.output
    # validate finds exactly what the run found
    assert (tmp_path / "validated" / "validation.csv").read_text() == ran
    assert {(int(r[0]), r[2], r[3]) for r in list(csv.reader(io.StringIO(ran)))[1:]} == {
        (r, "plan_code", "unknown_plan") for r in rows}

    clean = _census().drop(columns="row_number")
    good = tmp_path / "good.csv"
    write_census_csv(clean, good)
    nextday = date(2026, 11, 21)
    result = runner.invoke(app, ["run", MEDICAL, "--census", str(good), "--date", nextday.isoformat(), "--json"],
                           env=env)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["status"] == "delivered"
    assert summary["validation"]["excluded"] == {"plan_not_authorized": int((clean["plan_code"] == "VIS-STD").sum())}


def test_feeds_check_refuses_a_plan_codes_target_no_mapping_lists(tmp_path: Path) -> None:
    schemas = tmp_path / "schemas"
    shutil.copytree(ROOT / "schemas", schemas)
    path = schemas / "census-v1.yaml"
    path.write_text(path.read_text().replace("plan_codes: {}", 'plan_codes: {"Dental Basic": DEN-BASIC, '
                                                               '"Dental Standard": DEN-STD}'))
    env = {"CARRIERFEEDS_FEEDS_DIR": str(ROOT / "feeds"), "CARRIERFEEDS_MAPPINGS_DIR": str(ROOT / "mappings"),
           "CARRIERFEEDS_SCHEMAS_DIR": str(schemas)}
    result = runner.invoke(app, ["feeds", "check", "--config-only"], env=env)
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    at = lines.index(f"FAIL {path}")
    assert "plan_codes['Dental Basic'] maps to 'DEN-BASIC', which no mapping" in lines[at + 1]
    assert "Dental Standard" not in result.output
    data = json.loads(runner.invoke(app, ["feeds", "check", "--config-only", "--json"], env=env).output)
    assert not data["ok"] and all(f["ok"] for f in data["feeds"])
    assert [s["file"] for s in data["shared"]] == [str(path)]
    # A plan the employer runs elsewhere, declared as such, passes.
    path.write_text(path.read_text().replace("plans_not_sent: []", "plans_not_sent: [DEN-BASIC]"))
    assert runner.invoke(app, ["feeds", "check", "--config-only"], env=env).exit_code == 0


def test_the_shipped_config_passes_feeds_check_with_no_shared_problem() -> None:
    env = {"CARRIERFEEDS_FEEDS_DIR": str(ROOT / "feeds"), "CARRIERFEEDS_MAPPINGS_DIR": str(ROOT / "mappings"),
           "CARRIERFEEDS_SCHEMAS_DIR": str(ROOT / "schemas")}
    data = json.loads(runner.invoke(app, ["feeds", "check", "--config-only", "--json"], env=env).output)
    assert data["ok"] and data["shared"] == []


def test_a_mapping_that_does_not_load_fails_feeds_check_and_validate_closed(tmp_path: Path) -> None:
    """The catalogue reads every mapping: one that does not load could hide a plan, so plans are not
    judged without it (validate exits 2 naming it) and feeds check names it."""
    mappings = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", mappings)
    broken = mappings / "other-carrier.yaml"
    broken.write_text("mapping_id: other-carrier\ncarrier_name: Other\n")
    env = {"CARRIERFEEDS_FEEDS_DIR": str(ROOT / "feeds"), "CARRIERFEEDS_MAPPINGS_DIR": str(mappings),
           "CARRIERFEEDS_SCHEMAS_DIR": str(ROOT / "schemas")}
    data = json.loads(runner.invoke(app, ["feeds", "check", "--config-only", "--json"], env=env).output)
    assert not data["ok"] and [s["file"] for s in data["shared"]] == [str(broken)]
    census = tmp_path / "census.csv"
    write_census_csv(_census().drop(columns="row_number"), census)
    (tmp_path / "keys").mkdir(mode=0o700)
    result = runner.invoke(app, ["validate", MEDICAL, "--census", str(census), "--date", DAY.isoformat()],
                           env={**env, "CARRIERFEEDS_DATA_DIR": str(tmp_path / "var"),
                                "CARRIERFEEDS_KEYS_DIR": str(tmp_path / "keys")})
    assert result.exit_code == 2, result.output
    assert str(broken) in result.output
