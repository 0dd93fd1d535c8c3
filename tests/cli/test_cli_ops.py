"""The ops command line never misleads: version, unknown ids, exit codes that match the words printed."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

import carrierfeeds
from carrierfeeds import progress
from carrierfeeds.cli import app
from carrierfeeds.config import load_feed
from carrierfeeds.outcomes import ExitCode
from carrierfeeds.run.context import STAGES

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


def _ws_env(settings: Any) -> dict[str, str]:
    return {**ENV, "CARRIERFEEDS_FEEDS_DIR": str(settings.feeds_dir),
            "CARRIERFEEDS_MAPPINGS_DIR": str(settings.mappings_dir),
            "CARRIERFEEDS_SCHEMAS_DIR": str(settings.schemas_dir), "CARRIERFEEDS_DATA_DIR": str(settings.data_dir),
            "CARRIERFEEDS_KEYS_DIR": str(settings.keys_dir), "CARRIERFEEDS_GNUPG_HOME": str(settings.gnupg_home),
            "CARRIERFEEDS_LEDGER_URL": settings.resolved_ledger_url}


def test_run_lines_name_force_census_and_the_exit_code_a_refused_run_really_has(sftp_workspace: Any) -> None:
    ws = sftp_workspace
    env = _ws_env(ws.settings)
    ws.write_census(members=20, seed=3, as_of=date(2026, 11, 20))
    heard: list[str] = []
    with progress.listening(heard.append):  # what a terminal's progress bar is told
        first = runner.invoke(app, ["run", ws.feed.feed_id, "--date", "2026-11-20"], env=env)
    assert first.exit_code == 0 and "status: delivered\n" in first.output, first.output
    assert heard == list(STAGES)
    assert "delivered to: " in first.output
    again = runner.invoke(app, ["run", ws.feed.feed_id, "--date", "2026-11-21"], env=env)
    assert again.exit_code == 0 and "status: no_new_census\n" in again.output, again.output
    assert "--force-census" in again.output and "Use force" not in again.output
    # The carrier's connection file is gone: the run is refused by its configuration, which exits 2
    # (outcomes.py), and the status line says so instead of implying a security refusal (3).
    (ws.settings.keys_dir / f"{ws.feed.delivery.connection_id}.json").unlink()
    refused = runner.invoke(app, ["run", ws.feed.feed_id, "--date", "2026-11-22", "--force-census"], env=env)
    assert refused.exit_code == ExitCode.USAGE, refused.output
    assert "status: refused (exit 2: usage or configuration error)" in refused.output
    assert "delivered to" not in refused.output


def test_a_run_that_did_not_deliver_names_no_delivery() -> None:
    from carrierfeeds.cli.run import _summary_lines
    from carrierfeeds.run.stages import RunSummary

    def lines(status: str, error: dict[str, Any] | None = None) -> str:
        return "\n".join(_summary_lines(RunSummary(run_id="r1", feed_id="f", interval_start="2026-11-20",
                                                   status=status, remote_path="/inbox/f.834.pgp", error=error)))

    failed = lines("failed", {"code": "transient", "message": "connection reset"})
    assert "/inbox/f.834.pgp" not in failed and "status: failed (exit 4: transient)" in failed
    assert "status: failed\n" in lines("failed", {"code": "remote_file_exists", "message": "taken"}) + "\n"
    assert "delivered to: /inbox/f.834.pgp" in lines("delivered")
    assert "delivered earlier to: /inbox/f.834.pgp" in lines("already_delivered")
    assert "status: refused\n" in lines("refused", {"code": "host_key_refused", "message": "changed"}) + "\n"


def test_demo_keeps_a_previous_demo_without_reset_and_never_touches_other_folders(tmp_path: Path) -> None:
    from carrierfeeds.demo import MARKER

    previous = tmp_path / "demo"
    previous.mkdir()
    (previous / MARKER).write_text("made by `carrierfeeds demo`\n")
    (previous / "ledger.sqlite").write_bytes(b"the previous demo's ledger")
    kept = runner.invoke(app, ["demo", "--workdir", str(previous)], env=ENV)  # not a terminal: nobody to ask
    assert kept.exit_code == ExitCode.USAGE, kept.output
    assert "holds a previous demo" in kept.output and "--reset" in kept.output
    assert (previous / "ledger.sqlite").read_bytes() == b"the previous demo's ledger"
    other = tmp_path / "work"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    refused = runner.invoke(app, ["demo", "--workdir", str(other), "--reset"], env=ENV)
    assert refused.exit_code == ExitCode.USAGE and "not made by the demo" in refused.output
    assert (other / "notes.txt").read_text() == "mine"
