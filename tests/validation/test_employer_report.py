"""The employers' validation report: their own headers, the codes (never personal values) that failed, a
per-rule summary, a date format that may swap day and month, a title row above the headers, and
``validate`` finding what a run's build (the flat file's code tables) would refuse."""

from __future__ import annotations

import csv
import json
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import openpyxl
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from carrierfeeds.census.generate import generate_census, write_census_csv
from carrierfeeds.cli import app

ROOT = Path(__file__).resolve().parents[2]
FEED = "acme-sunrise-medical"
DAY = date(2026, 11, 20)
runner = CliRunner()
#: Canaries: a person's details that must never reach any output, whatever rule fails on them.
NAME, LAST, SSN, STREET = "Quillonius", "Zebrastripe", "987-65-4329", "77 Canaryplace Lane"
HEADERS = {"coverage_level": "Coverage Tier", "plan_code": "Plan", "first_name": "First Name",
           "relationship": "Relationship To Employee"}


def _config(tmp_path: Path, schema: dict[str, Any] | None = None,
            mapping: tuple[str, dict[str, Any]] | None = None) -> dict[str, str]:
    conf = tmp_path / "conf"
    for folder in ("feeds", "mappings", "schemas"):
        shutil.copytree(ROOT / folder, conf / folder)
    if schema:
        path = conf / "schemas" / "census-v1.yaml"
        path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **schema}))
    if mapping:
        path = conf / "mappings" / f"{mapping[0]}.yaml"
        path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **mapping[1]}))
    (tmp_path / "keys").mkdir(exist_ok=True, mode=0o700)
    return {"CARRIERFEEDS_FEEDS_DIR": str(conf / "feeds"), "CARRIERFEEDS_MAPPINGS_DIR": str(conf / "mappings"),
            "CARRIERFEEDS_SCHEMAS_DIR": str(conf / "schemas"), "CARRIERFEEDS_DATA_DIR": str(tmp_path / "var"),
            "CARRIERFEEDS_KEYS_DIR": str(tmp_path / "keys")}


def _write(frame: pd.DataFrame, path: Path, *, headers: dict[str, str] | None = None,
           title: str | None = None) -> Path:
    write_census_csv(frame.rename(columns=headers or {}), path)
    if title is not None:
        path.write_text(f"{title}\n\n" + path.read_text())
    return path


def _validate(env: dict[str, str], census: Path, *extra: str, feed: str = FEED) -> tuple[int, str]:
    result = runner.invoke(app, ["validate", feed, "--census", str(census), "--date", DAY.isoformat(), *extra],
                           env=env)
    return result.exit_code, result.output


def _everything(tmp_path: Path, env: dict[str, str], census: Path) -> tuple[int, dict[str, Any], str]:
    """validate --json, its plain output and its CSV and HTML reports: every output the employer sees."""
    code, out = _validate(env, census, "--json", "--report", str(tmp_path / "report"))
    _, text = _validate(env, census)
    report = tmp_path / "report"
    return code, json.loads(out), "\n".join([out, text, (report / "validation.csv").read_text(),
                                             (report / "validation.html").read_text()])


def _canaried() -> pd.DataFrame:
    frame = generate_census(40, 3, as_of=DAY)
    frame.loc[:, "first_name"] = NAME
    frame.loc[:, "last_name"] = LAST
    frame.loc[:, "address1"] = STREET
    return frame


def test_findings_name_the_employers_header_and_show_unmapped_codes_but_never_personal_values(
        tmp_path: Path) -> None:
    env = _config(tmp_path, schema={"columns": HEADERS})
    frame = _canaried()
    frame.loc[3, "coverage_level"] = "Emp+Kids"  # an employer tier the schema does not map
    frame.loc[5, "plan_code"] = "DEN-BASIC"  # a plan no mapping lists
    frame.loc[7, "ssn"] = SSN[:-1]  # personal fields that fail: never shown
    frame.loc[8, "dob"] = "1981-02-30"
    frame.loc[9, "first_name"] = NAME + "!"
    code, data, everything = _everything(tmp_path, env, _write(frame, tmp_path / "census.csv", headers=HEADERS))
    assert code == 1
    by_column = {f["column"]: f for f in data["findings"]}
    assert by_column["coverage_level"]["header"] == "Coverage Tier"
    assert by_column["coverage_level"]["value"] == "Emp+Kids" and by_column["plan_code"]["value"] == "DEN-BASIC"
    assert "Coverage Tier (coverage_level)" in everything and "Plan (plan_code)" in everything
    assert "Emp+Kids" in everything and "DEN-BASIC" in everything
    assert {"ssn", "dob"} <= set(by_column) and all(
        "value" not in f for f in data["findings"] if f["column"] not in ("coverage_level", "plan_code"))
    for canary in (NAME, LAST, SSN, SSN[:-1], STREET, "1981-02-30", "02/30/1981"):
        assert canary not in everything, canary


def test_a_code_column_holding_personal_values_shows_none_of_them(tmp_path: Path) -> None:
    """A column shifted in the file puts SSNs, dates or names under the plan header: nothing of it shows."""
    env = _config(tmp_path)
    frame = _canaried()
    frame.loc[:, "plan_code"] = [f"{NAME}{i}" for i in range(len(frame))]  # many distinct: not codes here
    frame.loc[2, "relationship"] = SSN
    frame.loc[4, "coverage_level"] = "1981-02-03"
    code, data, everything = _everything(tmp_path, env, _write(frame, tmp_path / "census.csv"))
    assert code == 1 and {"plan_code", "relationship", "coverage_level"} <= {f["column"] for f in data["findings"]}
    assert not any("value" in f for f in data["findings"])
    for canary in (NAME, SSN, "1981-02-03"):
        assert canary not in everything, canary


def test_a_surname_under_a_code_header_is_never_shown_even_when_it_looks_like_a_code(tmp_path: Path) -> None:
    """A small file where a shifted row puts a family's surname under the tier header: few distinct values and
    code-shaped, but the same text is someone's last name in this census, so it is not shown; a real
    unmapped tier in the same column still is."""
    env = _config(tmp_path)
    frame = _canaried()
    frame.loc[3, "last_name"] = "Harrowgate"
    frame.loc[3, "coverage_level"] = "HARROWGATE"  # the surname, shifted under Coverage Tier
    frame.loc[6, "coverage_level"] = "EMPKIDS"  # an employer tier the schema does not map
    code, data, everything = _everything(tmp_path, env, _write(frame, tmp_path / "census.csv"))
    assert code == 1
    values = {f["row"]: f.get("value") for f in data["findings"] if f["column"] == "coverage_level"}
    assert len(values) == 2 and sorted(values.values(), key=str) == ["EMPKIDS", None], values
    assert "HARROWGATE" not in everything and "Harrowgate" not in everything

def test_validate_prints_a_summary_per_rule(tmp_path: Path) -> None:
    env = _config(tmp_path, schema={"columns": HEADERS})
    frame = _canaried()
    for row in (2, 4, 6):
        frame.loc[row, "gender"] = "Q"
    frame.loc[10, "coverage_level"] = "GOLD"
    code, text = _validate(env, _write(frame, tmp_path / "census.csv", headers=HEADERS))
    assert code == 1
    lines = text.splitlines()
    summary = lines[lines.index("by rule:") + 1:lines.index("by rule:") + 3]
    assert summary[0].split()[:2] == ["gender_code", "3"] and "gender" in summary[0]
    assert summary[1].split()[:2] == ["coverage_level_code", "1"] and "Coverage Tier (coverage_level)" in summary[1]


def _dated(frame: pd.DataFrame, fmt: str) -> pd.DataFrame:
    out = frame.copy()
    for column in ("dob", "coverage_start", "coverage_end", "hire_date"):
        parsed = pd.to_datetime(out[column].where(out[column] != ""), format="%Y-%m-%d")
        out[column] = parsed.dt.strftime(fmt).fillna("")
    return out


def test_a_date_format_with_day_and_month_swapped_is_called_out_by_column_and_row_count(tmp_path: Path) -> None:
    env = _config(tmp_path, schema={"date_format": "%m/%d/%Y"})
    frame = _canaried()
    census = _write(_dated(frame, "%d/%m/%Y"), tmp_path / "census.csv")  # the file is day first
    _, data, everything = _everything(tmp_path, env, census)
    warnings = [w for w in data["warnings"] if "column 'dob' (dob)" in w]
    assert len(warnings) == 1 and "census.csv" in warnings[0] and "swapped" in warnings[0]
    assert "row(s) are dates only with day and month swapped ('%d/%m/%Y')" in warnings[0]
    assert "warning:" in everything
    for value in frame["dob"]:
        assert pd.Timestamp(value).strftime("%d/%m/%Y") not in everything

    # the right format: no warning
    env_right = _config(tmp_path / "right2", schema={"date_format": "%d/%m/%Y"})
    _, out = _validate(env_right, census, "--json")
    assert not [w for w in json.loads(out)["warnings"] if "date_format" in w or "swapped" in w]


def test_a_file_whose_every_date_reads_both_ways_is_called_unconfirmable(tmp_path: Path) -> None:
    env = _config(tmp_path, schema={"date_format": "%m/%d/%Y"})
    frame = _canaried()
    for column in ("dob", "hire_date", "coverage_start"):
        frame[column] = frame[column].where(frame[column] == "", frame[column].str.slice(0, 8) + "05")
    frame["coverage_end"] = ""
    _, out = _validate(env, _write(_dated(frame, "%m/%d/%Y"), tmp_path / "census.csv"), "--json")
    warnings = [w for w in json.loads(out)["warnings"] if "confirms" in w]
    assert len(warnings) == 1 and "column 'dob' (dob)" in warnings[0] and "census.csv" in warnings[0]


def test_a_title_row_above_the_headers_keeps_the_files_row_numbers(tmp_path: Path) -> None:
    env = _config(tmp_path, schema={"header_row": 3, "columns": HEADERS})
    frame = _canaried()
    frame.loc[4, "gender"] = "Q"  # the fifth member row: file row 3 + 5 = 8
    census = _write(frame, tmp_path / "census.csv", headers=HEADERS, title="Acme census, November")
    code, out = _validate(env, census, "--json")
    data = json.loads(out)
    assert code == 1 and [(f["row"], f["column"]) for f in data["findings"]] == [(8, "gender")]
    assert data["rows"] == len(frame) and data["header_row"] == 3
    assert csv.reader([census.read_text().splitlines()[7]]).__next__()[
        list(frame.columns).index("gender")] == "Q"

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["Acme census, November"])
    sheet.append([])
    renamed = frame.rename(columns=HEADERS)
    sheet.append(list(renamed.columns))
    for record in renamed.itertuples(index=False):
        sheet.append(list(record))
    book.save(tmp_path / "census.xlsx")
    env_x = _config(tmp_path / "x", schema={"header_row": 3, "columns": HEADERS, "format": "xlsx"})
    code, out = _validate(env_x, tmp_path / "census.xlsx", "--json")
    assert code == 1 and [(f["row"], f["column"]) for f in json.loads(out)["findings"]] == [(8, "gender")]

    # without header_row the title is taken for the header: refused, naming the row
    code, out = _validate(_config(tmp_path / "plain", schema={"columns": HEADERS}), census, "--json")
    assert code == 1 and json.loads(out)["row"] == 1 and "header_row" in json.loads(out)["message"]


def test_a_sql_source_refuses_a_schema_with_a_title_row(tmp_path: Path) -> None:
    """The query's column names are the CSV's row 1: a header_row above 1 would skip them."""
    from carrierfeeds.census.sql_source import query_to_csv
    from carrierfeeds.config import CensusSchema
    from carrierfeeds.errors import ConfigError

    schema = CensusSchema(schema_id="titled", suite="census-v1.suite.json", header_row=3)
    with pytest.raises(ConfigError, match="header_row 1"):
        query_to_csv("sqlite://", "SELECT 1", tmp_path / "census.csv", schema, name="acme-hr")
    with pytest.raises(ValueError, match="header_row applies to csv and xlsx"):
        CensusSchema.model_validate({"schema_id": "fw", "suite": "s.json", "format": "fixed_width", "header_row": 2,
                                     "fixed_width": {"fields": [{"column": "member_id", "start": 1, "width": 9}]}})


def test_validate_refuses_what_the_flat_files_code_table_would_refuse_in_the_run(tmp_path: Path) -> None:
    """A code table keyed in another case than the build's values ("Emp" for HD05 EMP): the render refuses
    it, so validate must find it first, by row; a quarantined family then leaves the rest to go."""
    layout = yaml.safe_load((ROOT / "mappings" / "clearview-csv.yaml").read_text())["flatfile"]
    for column in layout["columns"]:
        if column.get("field") == "hd05":
            column["codes"] = {"Emp": "1", "ESP": "2", "ECH": "3", "FAM": "4"}
    env = _config(tmp_path, mapping=("clearview-csv", {"flatfile": layout}))
    frame = generate_census(40, 3, as_of=DAY)
    census = _write(frame, tmp_path / "census_20261120.csv")
    code, out = _validate(env, census, "--json", feed="acme-clearview-vision")
    data = json.loads(out)
    sent = frame["plan_code"].eq("VIS-STD") & frame["coverage_level"].eq("EMP")
    assert sorted(f["row"] for f in data["findings"]) == sorted(int(i) + 2 for i in frame.index[sent])
    assert {(f["column"], f["rule"], f.get("value")) for f in data["findings"]} == {
        ("coverage_level", "layout_code", "EMP")}
    result = runner.invoke(app, ["preview", "acme-clearview-vision", "--census", str(census), "--date",
                                 DAY.isoformat(), "--out", str(tmp_path / "preview"), "--json"], env=env)
    assert result.exit_code == 0, result.output  # the run's build and render take what validation accepted

    # an 834 feed of the same mapping's carrier ignores the flat-file layout
    env_834 = _config(tmp_path / "834", mapping=("sunrise-health", {"flatfile": layout}))
    code, out = _validate(env_834, _write(frame, tmp_path / "c834.csv"))
    assert code == 0, out


def test_validate_refuses_a_relationship_the_carriers_mapping_does_not_take(tmp_path: Path) -> None:
    """A suite that allows domestic partners (DP) and a mapping whose relationship_codes do not list DP:
    the build refuses such a row, so validate must; the rest of the families go."""
    env = _config(tmp_path)
    suite_path = Path(env["CARRIERFEEDS_SCHEMAS_DIR"]) / "census-v1.suite.json"
    suite = json.loads(suite_path.read_text())
    for expectation in suite["expectations"]:
        if expectation["kwargs"].get("column") == "relationship" and "value_set" in expectation["kwargs"]:
            expectation["kwargs"]["value_set"].append("DP")
    suite_path.write_text(json.dumps(suite))
    frame = generate_census(40, 3, as_of=DAY)
    vision = frame.index[(frame["plan_code"] == "VIS-STD") & (frame["relationship"] == "SP")]
    frame.loc[vision[0], "relationship"] = "DP"
    census = _write(frame, tmp_path / "census_20261120.csv")
    code, out = _validate(env, census, "--json", feed="acme-clearview-vision")
    assert code == 0, out  # policy quarantine: the family waits, the rest go
    found = [(f["row"], f["column"], f["rule"], f.get("value")) for f in json.loads(out)["findings"]]
    assert found == [(int(vision[0]) + 2, "relationship", "relationship_code", "DP")], out
    assert "relationship_codes: EE, SP, CH" in json.loads(out)["findings"][0]["message"]
    result = runner.invoke(app, ["preview", "acme-clearview-vision", "--census", str(census), "--date",
                                 DAY.isoformat(), "--out", str(tmp_path / "preview"), "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["validation"]["held_back_members"] >= 2


def test_validate_fails_a_census_the_runs_build_would_refuse(tmp_path: Path) -> None:
    """A value only the build reads in its own form (here tobacco use, sent because the mapping asks for
    HLH): the run fails at build, whatever the policy, so validate fails too, naming row, column, rule."""
    mapping = yaml.safe_load((ROOT / "mappings" / "sunrise-health.yaml").read_text())
    env = _config(tmp_path, mapping=("sunrise-health", {"contact": {"tobacco_use": True},
                                                        "allowlist": [*mapping["allowlist"], "tobacco_use"]}))
    frame = generate_census(40, 3, as_of=DAY)
    sent = frame.index[frame["plan_code"] == "MED-PPO"]
    frame.loc[sent[1], "tobacco_use"] = "SOMETIMES"
    code, out = _validate(env, _write(frame, tmp_path / "census.csv"), "--json")
    data = json.loads(out)
    assert code == 1 and data["rejected"], out
    assert [(f["row"], f["column"], f["rule"]) for f in data["findings"]] == [
        (int(sent[1]) + 2, "tobacco_use", "tobacco_use")]
    assert data["findings"][0]["member_token"].startswith("m_") and "SOMETIMES" not in out
    assert "the run's build refuses" in data["findings"][0]["message"]
    frame.loc[sent[1], "tobacco_use"] = "n"
    code, out = _validate(env, _write(frame, tmp_path / "census.csv"), "--json")
    assert code == 0, out


@pytest.mark.parametrize("value", ["EMP", "Emp+Kids", "PPO 500", "Dental (basic)"])
def test_codes_look_like_codes(value: str) -> None:
    from carrierfeeds.validation.report import shows_as_code

    assert shows_as_code(value)


@pytest.mark.parametrize("value", [SSN, "987654329", "02/03/1981", "1981-02-03", "a@b.example", "x" * 41,
                                   "=HYPERLINK(1)"])
def test_personal_shapes_never_show(value: str) -> None:
    from carrierfeeds.validation.report import shows_as_code

    assert not shows_as_code(value)
