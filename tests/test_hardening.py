"""Process hardening: the CLI and Airflow task processes cannot dump core, file names from
outside reach logs and messages with control characters escaped, and a GNUPGHOME owned by another user
is refused even at mode 0700. Real processes, the real filesystem, the real gpg home check."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from carrierfeeds.acknowledgments import LocalAckInbox, collect_acks
from carrierfeeds.census.sources import fetch_census
from carrierfeeds.config import LocalSource, load_schema
from carrierfeeds.crypto import Keyring
from carrierfeeds.errors import ConfigError, DataError
from carrierfeeds.hardening import loggable
from carrierfeeds.ledger import Ledger

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = load_schema(ROOT / "schemas" / "census-v1.yaml")
FORGED = "census_20261120\n2026-12-06 INFO carrierfeeds: delivered everything.csv"
PROBE = """
    import json, resource, sys
    from carrierfeeds.hardening import dumpable
    {call}
    print("RESULT " + json.dumps({{"core": list(resource.getrlimit(resource.RLIMIT_CORE)),
                                  "dumpable": dumpable()}}))
"""


def _probe(call: str, env: dict[str, str] | None = None) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(PROBE.format(call=call))], cwd=ROOT,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=600)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, proc.stdout[-2000:] + proc.stderr[-2000:]
    return dict(json.loads(line[-1][len("RESULT "):]))


def test_the_cli_process_cannot_dump_core() -> None:
    out = _probe("from carrierfeeds import cli\n"
                 "    sys.argv = ['carrierfeeds', '--help']\n"
                 "    try:\n        cli.main()\n    except SystemExit:\n        pass")
    assert out["core"] == [0, 0]
    assert out["dumpable"] in (False, None)


@pytest.mark.slow
@pytest.mark.airflow
def test_an_airflow_task_process_cannot_dump_core(tmp_path: Path) -> None:
    home = tmp_path / "airflow-home"
    home.mkdir()
    env = {"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
           "CARRIERFEEDS_FEEDS_DIR": str(tmp_path / "no-feeds"), "CARRIERFEEDS_DATA_DIR": str(tmp_path / "var")}
    # The task entry point itself, on a feed that does not exist: it fails, after hardening the process.
    out = _probe("from carrierfeeds import airflow as cf\n"
                 "    try:\n        cf._run_stage('no-such-feed', 'stage_census', {'params': {}, 'run_id': 'r'})\n"
                 "    except BaseException:\n        pass", env)
    assert out["core"] == [0, 0] and out["dumpable"] in (False, None)


def test_loggable_escapes_every_control_character() -> None:
    assert loggable("census_20261120.csv") == "census_20261120.csv"
    assert loggable(FORGED) == FORGED.replace("\n", "\\n")
    for bad in ("\r", "\t", "\x1b[2J", "\x7f", "\x85", "\u2028", "\u2029", "\x00"):
        shown = loggable(f"a{bad}b")
        assert shown.isprintable() and bad not in shown
    assert loggable("a\\nb") == "a\\\\nb"  # a literal backslash-n is not mistaken for an escaped newline


def test_a_census_name_with_a_newline_is_escaped_in_logs_and_messages(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    inbound = tmp_path / "data" / "inbound"
    inbound.mkdir(parents=True)
    (inbound / (FORGED)).write_bytes(b"member_id\nE1\n" * 100)
    caplog.set_level(logging.DEBUG)
    pick = fetch_census(LocalSource(path="inbound", pattern="census_*"), feed_id="acme-test", schema=SCHEMA,
                        data_dir=tmp_path / "data", keys_dir=tmp_path / "keys", work_dir=tmp_path / "work")
    assert pick.name == loggable(FORGED) and "\n" not in pick.name
    assert caplog.records and all("\n" not in r.getMessage() for r in caplog.records)
    with pytest.raises(DataError) as info:
        fetch_census(LocalSource(path="inbound", pattern="census_*"), feed_id="acme-test",
                     schema=SCHEMA.model_copy(update={"max_bytes": 10}), data_dir=tmp_path / "data",
                     keys_dir=tmp_path / "keys", work_dir=tmp_path / "work")
    assert "\n" not in str(info.value) and info.value.file == loggable(FORGED)


def test_an_ack_file_name_with_control_characters_is_not_read_and_shown_escaped(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    inbox = tmp_path / "outbox"
    inbox.mkdir()
    (inbox / "TA1\nforged.x12").write_bytes(b"ISA*junk")
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'l.sqlite'}")
    ledger.upgrade()
    try:
        caplog.set_level(logging.DEBUG)
        report = collect_acks(ledger, LocalAckInbox(inbox), source_id="sunrise-health",
                              now=datetime(2026, 12, 6, tzinfo=UTC))
    finally:
        ledger.close()
    (outcome,) = report.files
    assert (outcome.file_name, outcome.outcome, outcome.error_code) == ("TA1\\nforged.x12", "failed", "unsafe_name")
    assert all("\n" not in a.message and "\n" not in (a.file_name or "") for a in report.alerts)
    assert all("\n" not in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the folder to another user")
def test_a_gnupghome_owned_by_another_user_is_refused_even_at_0700(tmp_path: Path) -> None:
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    os.chmod(home, 0o700)
    Keyring(home)  # ours, 0700: fine
    os.chown(home, 65534, 65534)
    with pytest.raises(ConfigError) as info:
        Keyring(home)
    assert "owned by" in str(info.value) and "65534" in str(info.value)
