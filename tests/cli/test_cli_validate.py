"""``carrierfeeds validate FEED --census PATH``: exit 0 passes, 1 rejected, 2 usage/config; --json without values."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from carrierfeeds.census.generate import generate_census, write_census_csv
from carrierfeeds.cli import app

ROOT = Path(__file__).resolve().parents[2]
FEED = "acme-sunrise-medical"
DAY = date(2026, 11, 20)
CANARY = "Quillonius"
runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"CARRIERFEEDS_FEEDS_DIR": str(ROOT / "feeds"), "CARRIERFEEDS_MAPPINGS_DIR": str(ROOT / "mappings"),
            "CARRIERFEEDS_SCHEMAS_DIR": str(ROOT / "schemas"), "CARRIERFEEDS_DATA_DIR": str(tmp_path / "var"),
            "CARRIERFEEDS_KEYS_DIR": str(tmp_path / "keys")}


def _census(tmp_path: Path, *, bad_rows: int = 0) -> Path:
    frame = generate_census(40, 3, as_of=DAY)
    frame.loc[:, "first_name"] = CANARY
    for i in range(bad_rows):
        frame.loc[2 + 3 * i, "gender"] = "Q"
    path = tmp_path / "census_20261120.csv"
    (tmp_path / "keys").mkdir(exist_ok=True, mode=0o700)
    write_census_csv(frame, path)
    return path


def _validate(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["validate", *args], env=env)
    return result.exit_code, result.output


def test_a_clean_census_passes_with_exit_0_and_writes_the_report(tmp_path: Path, env: dict[str, str]) -> None:
    census = _census(tmp_path)
    code, out = _validate(env, FEED, "--census", str(census), "--date", DAY.isoformat(),
                          "--report", str(tmp_path / "report"), "--json")
    assert code == 0, out
    data = json.loads(out)
    assert (data["rejected"], data["failed_rows"], data["findings"], data["policy"]) == (False, 0, [], "reject")
    assert data["rows"] == len(census.read_text().splitlines()) - 1
    assert (tmp_path / "report" / "validation.csv").exists() and (tmp_path / "report" / "validation.html").exists()


def test_failing_rows_exit_1_and_json_lists_them_without_values(tmp_path: Path, env: dict[str, str]) -> None:
    census = _census(tmp_path, bad_rows=3)
    code, out = _validate(env, FEED, "--census", str(census), "--date", DAY.isoformat(), "--json",
                          "--report", str(tmp_path / "report"))
    assert code == 1, out
    data = json.loads(out)
    assert data["rejected"] is True and data["failed_rows"] == 3
    assert sorted(f["row"] for f in data["findings"]) == [4, 7, 10]
    assert {(f["column"], f["rule"]) for f in data["findings"]} == {("gender", "gender_code")}
    assert all(f["member_token"] for f in data["findings"])
    assert CANARY not in out and '"Q"' not in out
    assert CANARY not in (tmp_path / "report" / "validation.csv").read_text()

    code, text = _validate(env, FEED, "--census", str(census), "--date", DAY.isoformat())
    assert code == 1 and "REJECTED" in text and CANARY not in text


def test_a_structurally_broken_census_exits_1_naming_file_and_row(tmp_path: Path, env: dict[str, str]) -> None:
    census = _census(tmp_path)
    lines = census.read_text().splitlines()
    census.write_text("\n".join([*lines[:5], "", *lines[5:]]) + "\n")
    code, out = _validate(env, FEED, "--census", str(census), "--date", DAY.isoformat(), "--json")
    assert code == 1, out
    data = json.loads(out)
    assert (data["file"], data["row"], data["rule"]) == (census.name, 6, "blank_line")
    assert CANARY not in out

    empty = tmp_path / "empty.csv"
    empty.write_text("")
    code, out = _validate(env, FEED, "--census", str(empty), "--json")
    assert code == 1 and json.loads(out)["rule"] == "empty_file"


def test_usage_and_configuration_errors_exit_2(tmp_path: Path, env: dict[str, str]) -> None:
    census = _census(tmp_path)
    code, out = _validate(env, "acme-sunrise-medicl", "--census", str(census), "--json")
    assert code == 2 and "did you mean" in json.loads(out)["message"]
    code, _ = _validate(env, FEED)  # --census is required
    assert code == 2
    code, _ = _validate(env, FEED, "--census", str(tmp_path / "missing.csv"))
    assert code == 2
    code, _ = _validate(env, FEED, "--census", str(census), "--date", "20-11-2026")
    assert code == 2
    broken = dict(env, CARRIERFEEDS_SCHEMAS_DIR=str(tmp_path / "no-schemas"))
    code, out = _validate(broken, FEED, "--census", str(census), "--json")
    assert code == 2 and "census-v1.yaml" in json.loads(out)["message"]


def test_overlapping_periods_on_a_line_exit_1_naming_rows_column_and_rule(tmp_path: Path, env: dict[str, str]) -> None:
    """Two periods of one member on one insurance line that overlap (the old plan still open when the new
    one starts) are refused by ``validate`` exactly as a run would refuse them; a plan change written as
    two periods that meet (old ends the day before the new starts) passes."""
    frame = generate_census(40, 3, as_of=DAY)
    authorised = frame["plan_code"].isin(["MED-PPO", "MED-HDHP"]) & (frame["coverage_end"] == "")
    at = frame.index[authorised & (frame["relationship"] == "EE")
                     & ~frame["subscriber_id"].isin(frame.loc[frame["relationship"] != "EE", "subscriber_id"])][0]
    old = frame.loc[at].copy()
    new = old.copy()
    new["plan_code"] = "MED-HDHP" if old["plan_code"] == "MED-PPO" else "MED-PPO"
    new["coverage_start"] = "2026-11-01"
    frame.loc[at, "coverage_end"] = "2026-10-31"
    path = tmp_path / "census_20261120.csv"
    (tmp_path / "keys").mkdir(exist_ok=True, mode=0o700)
    write_census_csv(pd.concat([frame, new.to_frame().T], ignore_index=True), path)
    code, out = _validate(env, FEED, "--census", str(path), "--date", DAY.isoformat(), "--json")
    assert code == 0, out

    frame.loc[at, "coverage_end"] = "2026-11-15"  # the old plan still runs when the new one starts
    write_census_csv(pd.concat([frame, new.to_frame().T], ignore_index=True), path)
    code, out = _validate(env, FEED, "--census", str(path), "--date", DAY.isoformat(), "--json")
    assert code == 1, out
    found = {(f["row"], f["column"], f["rule"]) for f in json.loads(out)["findings"]}
    assert found == {(int(at) + 2, "coverage_start", "overlapping_coverage"),
                     (len(frame) + 2, "coverage_start", "overlapping_coverage")}
