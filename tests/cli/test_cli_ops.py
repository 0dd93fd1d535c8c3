"""The ops command line never misleads: version, unknown ids, exit codes that match the words printed."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

import carrierfeeds
from carrierfeeds.cli import app
from carrierfeeds.config import load_feed
from carrierfeeds.outcomes import ExitCode

runner = CliRunner()
ENV = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
ROOT = Path(__file__).resolve().parents[2]


def test_version_prints_the_package_version_and_exits_0() -> None:
    result = runner.invoke(app, ["--version"], env=ENV)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"carrierfeeds {carrierfeeds.__version__}"


def test_hold_on_an_unknown_employer_or_feed_is_a_usage_error_with_did_you_mean(tmp_path: Path) -> None:
    env = {**ENV, "CARRIERFEEDS_FEEDS_DIR": str(ROOT / "feeds"), "CARRIERFEEDS_DATA_DIR": str(tmp_path / "var"),
           "CARRIERFEEDS_LEDGER_URL": f"sqlite:///{tmp_path / 'ledger.sqlite'}"}
    employer = load_feed(ROOT / "feeds" / "acme-sunrise-medical.yaml").employer.id
    typo = employer[:-1] + ("x" if employer[-1] != "x" else "y")
    refused = runner.invoke(app, ["hold", "set", "--employer", typo, "--reason", "matter 7"], env=env)
    assert refused.exit_code == ExitCode.USAGE, refused.output
    assert f"no employer {typo!r}" in refused.output and f"did you mean {employer!r}?" in refused.output
    feed = runner.invoke(app, ["hold", "set", "--feed", "acme-sunrise-medicl", "--reason", "matter 7"], env=env)
    assert feed.exit_code == ExitCode.USAGE and "did you mean 'acme-sunrise-medical'?" in feed.output
    nothing = runner.invoke(app, ["hold", "list", "--json"], env=env)
    assert json.loads(nothing.output)["holds"] == [], "a refused hold records nothing"
    placed = runner.invoke(app, ["hold", "set", "--employer", employer, "--reason", "matter 7"], env=env)
    assert placed.exit_code == 0, placed.output
    # a hold in force stays clearable once its feed files are gone
    cleared = runner.invoke(app, ["hold", "clear", "--employer", employer, "--reason", "closed"],
                            env={**env, "CARRIERFEEDS_FEEDS_DIR": str(tmp_path / "empty")})
    assert cleared.exit_code == 0, cleared.output
