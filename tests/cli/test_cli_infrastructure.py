"""Infrastructure errors on the command line: one line naming the setting, exit 4 when a retry may fix it
(the ledger's server is unreachable), 2 when only a settings change can (a URL of the wrong scheme, a data
directory that cannot be used); never a driver traceback, never exit 1 ("fix the census").

Run through the console-script entry point in a fresh interpreter, as ops and cron run it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import carrierfeeds
from carrierfeeds.outcomes import ExitCode

ROOT = Path(__file__).resolve().parents[2]
#: The package under test, wherever this interpreter imports it from.
SRC = Path(carrierfeeds.__file__).resolve().parents[1]


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cli(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARRIERFEEDS_")}
    env.update({"PYTHONPATH": str(SRC), "CARRIERFEEDS_FEEDS_DIR": str(ROOT / "feeds"),
                "CARRIERFEEDS_MAPPINGS_DIR": str(ROOT / "mappings"), "CARRIERFEEDS_SCHEMAS_DIR": str(ROOT / "schemas"),
                "CARRIERFEEDS_DATA_DIR": str(tmp_path / "var"), "CARRIERFEEDS_KEYS_DIR": str(tmp_path / "keys")})
    env.update({f"CARRIERFEEDS_{k.upper()}": v for k, v in settings.items()})
    return subprocess.run([sys.executable, "-c", "from carrierfeeds.cli import main; main()", *args],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize("command", [["audit", "verify"], ["run", "acme-sunrise-medical", "--date", "2026-11-20"]])
def test_an_unreachable_ledger_is_one_line_and_exit_4(tmp_path: Path, command: list[str]) -> None:
    port = _closed_port()
    proc = _cli(tmp_path, *command, ledger_url=f"postgresql+psycopg://postgres:s3cret@127.0.0.1:{port}/test")
    line = _one_line(proc)
    assert proc.returncode == ExitCode.TRANSIENT
    assert line == (f"error: CARRIERFEEDS_LEDGER_URL: PostgreSQL at 127.0.0.1:{port} is unreachable "
                    "(connection refused); retry later")
    assert "s3cret" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("command", [["audit", "verify"], ["run", "acme-sunrise-medical", "--date", "2026-11-20"]])
def test_a_postgres_scheme_url_is_a_configuration_error(tmp_path: Path, command: list[str]) -> None:
    proc = _cli(tmp_path, *command, ledger_url="postgres://postgres:s3cret@127.0.0.1:5432/test")
    line = _one_line(proc)
    assert proc.returncode == ExitCode.USAGE
    assert line.startswith("error: CARRIERFEEDS_LEDGER_URL: scheme 'postgres' is not supported")
    assert "postgresql+psycopg://" in line and "s3cret" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("command", [["audit", "verify"], ["hold", "list"],
                                     ["run", "acme-sunrise-medical", "--date", "2026-11-20"]])
def test_an_unusable_data_dir_is_a_configuration_error(tmp_path: Path, command: list[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    proc = _cli(tmp_path, *command, data_dir=str(blocker / "var"))
    line = _one_line(proc)
    assert proc.returncode == ExitCode.USAGE
    assert line == f"error: CARRIERFEEDS_DATA_DIR: {blocker / 'var'} is not a usable data directory (not a directory)"
