"""Long commands show their progress on a terminal (stderr, a pty here) and print none when piped; the
progress names steps, never data (a canary name in the census never shows)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import threading
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from carrierfeeds.census.generate import generate_census, write_census_csv

ROOT = Path(__file__).resolve().parents[2]
FEED = "acme-sunrise-medical"
DAY = date(2026, 11, 20)
CANARY = "Quillonius"
ENTRY = "import sys; sys.argv[0] = 'carrierfeeds'; from carrierfeeds.cli import main; main()"


def _env(tmp_path: Path) -> dict[str, str]:
    keys = tmp_path / "keys"
    keys.mkdir(exist_ok=True, mode=0o700)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "TERM": "xterm-256color", "COLUMNS": "120",
            "CARRIERFEEDS_FEEDS_DIR": str(ROOT / "feeds"), "CARRIERFEEDS_MAPPINGS_DIR": str(ROOT / "mappings"),
            "CARRIERFEEDS_SCHEMAS_DIR": str(ROOT / "schemas"), "CARRIERFEEDS_DATA_DIR": str(tmp_path / "var"),
            "CARRIERFEEDS_KEYS_DIR": str(keys)}


def _on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal and stdout piped: (exit code, stdout, the terminal)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", ENTRY, *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    seen = bytearray()

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not chunk:
                return
            seen.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    out, _ = proc.communicate(timeout=300)
    reader.join(timeout=60)
    os.close(master)
    return proc.returncode, out.decode(), seen.decode(errors="replace")


def _piped(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", ENTRY, *args], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, env=env, timeout=300, check=False)


def test_generate_census_shows_progress_on_a_terminal_and_none_when_piped(tmp_path: Path) -> None:
    env = _env(tmp_path)
    args = ["generate-census", "--members", "3000", "--seed", "4", "--out", str(tmp_path / "c.csv")]
    code, out, terminal = _on_a_terminal(args, env)
    assert code == 0, terminal
    assert "generate-census 3000 people" in terminal and "\x1b[" in terminal  # drawn with terminal codes
    assert "wrote" in out and "\x1b" not in out  # the result on stdout stays plain
    piped = _piped(args, env)
    assert piped.returncode == 0 and piped.stderr == "", piped.stderr
    assert piped.stdout.startswith("wrote ")


def test_validate_shows_its_steps_on_a_terminal_never_data_and_nothing_when_piped(tmp_path: Path) -> None:
    frame = generate_census(400, 3, as_of=DAY)
    frame.loc[:, "first_name"] = CANARY
    census = tmp_path / "census_20261120.csv"
    write_census_csv(frame, census)
    env = _env(tmp_path)
    args = ["validate", FEED, "--census", str(census), "--date", DAY.isoformat()]
    code, out, terminal = _on_a_terminal(args, env)
    assert code == 0, terminal + out
    assert f"validate {FEED}" in terminal and "\x1b[" in terminal
    assert CANARY not in terminal and CANARY not in out
    assert "policy reject: accepted" in out
    piped = _piped(args, env)
    assert piped.returncode == 0 and piped.stderr == "", piped.stderr
    assert piped.stdout == out  # the same report, and nothing else, when nobody watches


def test_a_runs_stages_and_a_previews_steps_are_told_to_the_listener(tmp_path: Path) -> None:
    from carrierfeeds import progress
    from carrierfeeds.run.preview import preview_files
    from carrierfeeds.settings import Settings, load_bundle

    settings = Settings(feeds_dir=ROOT / "feeds", mappings_dir=ROOT / "mappings", schemas_dir=ROOT / "schemas",
                        data_dir=tmp_path / "var")
    census = tmp_path / "census.csv"
    write_census_csv(generate_census(50, 2, as_of=DAY), census)
    out = tmp_path / "out"
    out.mkdir(mode=0o700)
    heard: list[Any] = []
    with progress.listening(heard.append):
        result = preview_files(settings, load_bundle(settings, FEED), census, out, as_of=DAY, full=True,
                               now=datetime(2026, 11, 20, 12, tzinfo=UTC))
    assert result["status"] in ("ok", "nothing_to_send", "conformance_failed")
    assert heard == ["read census", "validate", "build", "render", "conformance"]
    progress.step("nobody listens")  # outside the block: nothing to tell, nothing raised
    assert heard[-1] == "conformance"


def test_demo_asks_at_a_terminal_before_deleting_a_previous_demo_and_no_keeps_it(tmp_path: Path) -> None:
    from carrierfeeds.demo import MARKER

    previous = tmp_path / "demo"
    previous.mkdir()
    (previous / MARKER).write_text("made by `carrierfeeds demo`\n")
    (previous / "ledger.sqlite").write_bytes(b"the previous demo's ledger")
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", ENTRY, "demo", "--workdir", str(previous)], stdin=slave,
                            stdout=subprocess.PIPE, stderr=slave, env=_env(tmp_path))
    os.close(slave)
    asked = bytearray()
    while b"start again?" not in asked:
        asked.extend(os.read(master, 4096))
    os.write(master, b"n\n")
    out, _ = proc.communicate(timeout=60)
    os.close(master)
    assert proc.returncode == 2, out
    assert "holds a previous demo" in asked.decode(errors="replace")
    assert (previous / "ledger.sqlite").read_bytes() == b"the previous demo's ledger"
