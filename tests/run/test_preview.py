"""``carrierfeeds preview``: the files tonight's run would send, written privately, with nothing sent,
recorded, allocated or advanced; and the flat-file feed end to end (census -> CSV -> gpg -> sshd)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import stat
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from carrierfeeds.cli import app
from carrierfeeds.config import SftpDelivery
from carrierfeeds.run.context import RunRef
from carrierfeeds.run.stages import run_feed
from carrierfeeds.settings import open_ledger

ROOT = Path(__file__).resolve().parents[2]
FEED = "acme-clearview-vision"
CONNECTION = "clearview_sftp"
DAY1, DAY2 = date(2026, 11, 19), date(2026, 11, 20)  # a Thursday and a Friday: not the full-file Sunday


def _clock() -> datetime:
    return datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def _env(settings: Any) -> dict[str, str]:
    values = {"FEEDS_DIR": settings.feeds_dir, "MAPPINGS_DIR": settings.mappings_dir,
              "SCHEMAS_DIR": settings.schemas_dir, "DATA_DIR": settings.data_dir, "KEYS_DIR": settings.keys_dir,
              "GNUPG_HOME": settings.gnupg_home, "LEDGER_URL": settings.ledger_url}
    return {f"CARRIERFEEDS_{k}": str(v) for k, v in values.items() if v is not None}


def _preview(settings: Any, census: Path, out: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(app, ["preview", FEED, "--census", str(census), "--out", str(out), "--json",
                                      *extra], env=_env(settings))
    return result.exit_code, json.loads(result.stdout)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _census(members: int, seed: int, day: date) -> pd.DataFrame:
    from carrierfeeds.census.generate import generate_census

    return generate_census(members, seed, as_of=day)


def _write(frame: pd.DataFrame, path: Path) -> Path:
    from carrierfeeds.census.generate import write_census_csv

    write_census_csv(frame, path)
    return path


def _vision(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["plan_code"] == "VIS-STD"]


def _deliveries(settings: Any) -> list[Any]:
    ledger = open_ledger(settings)
    try:
        return list(ledger.deliveries(feed_id=FEED))
    finally:
        ledger.close()


@pytest.fixture
def workspace(tmp_path: Path, demo_keys: Any, sshd_server: Any, ledger_url: str) -> Any:
    from carrierfeeds.demo import prepare_workspace

    inbox = sshd_server.root / uuid.uuid4().hex[:10]
    inbox.mkdir()
    keys_dir = tmp_path / "keys"
    sshd_server.write_keys_dir(keys_dir, CONNECTION)
    ws = prepare_workspace(tmp_path / "ws", keys=demo_keys, keys_dir=keys_dir, config_root=ROOT,
                           ledger_url=ledger_url, feed_id=FEED,
                           delivery=SftpDelivery(connection_id=CONNECTION, remote_dir=str(inbox)))
    return ws, inbox


@pytest.mark.slow
def test_flatfile_feed_end_to_end_then_preview_sends_and_advances_nothing(
        workspace: Any, demo_keys: Any, tmp_path: Path) -> None:
    ws, inbox = workspace
    settings = ws.settings
    day1 = _census(40, 21, DAY1)
    _write(day1, ws.inbound / "census_20261119.csv")

    # The real run: a full roster (no snapshot yet) as CSV, encrypted, over SFTP, ledgered.
    first = run_feed(settings, RunRef.for_day(FEED, DAY1), clock=_clock, actor="test")
    assert first.status == "delivered", first.error
    arrived = sorted(inbox.iterdir())
    assert [p.name for p in arrived] == [first.file_name]
    assert first.file_name.startswith("CLEARVIEW_ACME_20261119_") and first.file_name.endswith(".csv.pgp")
    plain = tmp_path / "carrier.csv"
    decrypted = demo_keys.carrier.decrypt_file(arrived[0], plain)
    assert decrypted.valid_signature
    data = plain.read_bytes()
    assert hashlib.sha256(data).hexdigest() == first.payload_sha256
    rows = list(csv.reader(io.StringIO(data.decode("ascii"), newline="")))
    vision = _vision(day1)
    assert rows[0][0] == "Action" and len(rows) - 1 == len(vision)
    assert {r[0] for r in rows[1:]} == {"F"} and {r[3] for r in rows[1:]} == set(vision["member_id"])
    for ssn in day1["ssn"]:  # not on Clearview's allowlist
        if ssn:
            assert ssn.encode() not in data

    snapshot = settings.data_dir / "snapshots" / FEED / "current.snap"
    snap_bytes = snapshot.read_bytes()
    before = _deliveries(settings)
    assert len(before) == 1

    # Day 2: one vision member leaves the census, one family joins; preview what tonight would send.
    leaver = str(vision.iloc[-1]["subscriber_id"])
    day2 = day1[day1["subscriber_id"] != leaver]
    joiner = _census(3, 99, DAY2)
    joiner = joiner[joiner["relationship"] == "EE"].head(1).assign(
        member_id="E9999999", subscriber_id="E9999999", plan_code="VIS-STD", coverage_level="EMP",
        coverage_start="2026-12-01", coverage_end="", employment_status="FT")
    census2 = _write(pd.concat([day2, joiner], ignore_index=True), tmp_path / "census_day2.csv")
    out = tmp_path / "preview"
    code, report = _preview(settings, census2, out, "--date", DAY2.isoformat())
    assert code == 0, report
    assert report["preview"] is True and report["sent"] is False and report["snapshot_advanced"] is False
    assert report["full_file"] is False
    [entry] = report["files"]
    assert entry["members_by_type"].get("021") == 1
    assert entry["members_by_type"].get("024", 0) >= 1
    assert entry["conformance"]["verdict"] == "passed"
    assert entry["control_numbers"]["placeholder"] is True
    assert entry["control_numbers"]["isa13"] == first.isa13 + 1  # the ledger's next number, not taken
    written = out / entry["name"]
    assert _mode(out) == 0o700 and _mode(written) == 0o600
    assert sorted(p.name for p in out.iterdir()) == [entry["name"]]
    assert hashlib.sha256(written.read_bytes()).hexdigest() == entry["sha256"]
    changed = list(csv.reader(io.StringIO(written.read_text(), newline="")))[1:]
    assert entry["records"] == len(changed) >= entry["members"] >= 2
    assert ("A", "E9999999") in {(r[0], r[3]) for r in changed}
    assert any(r[0] == "T" and r[2] == leaver for r in changed)

    # Nothing sent, nothing recorded, nothing advanced, no control number consumed.
    assert sorted(p.name for p in inbox.iterdir()) == [first.file_name]
    assert snapshot.read_bytes() == snap_bytes
    assert not list((settings.data_dir / "snapshots" / FEED).glob("pending/*.snap"))
    after = _deliveries(settings)
    assert [(d.delivery_id, d.status) for d in after] == [(d.delivery_id, d.status) for d in before]
    ledger = open_ledger(settings)
    assert [r.run_id for r in ledger.list_runs(feed_id=FEED)] == [first.run_id]
    assert ledger.verify_chain().ok
    ledger.close()
    again, second = _preview(settings, census2, out, "--date", DAY2.isoformat())
    assert again == 0 and second["files"][0]["control_numbers"]["isa13"] == first.isa13 + 1
    assert second["files"][0]["sha256"] == entry["sha256"]  # the same inputs, the same file

    # --full: the whole roster (030) against the same untouched snapshot.
    code, full = _preview(settings, census2, tmp_path / "preview-full", "--date", DAY2.isoformat(), "--full")
    assert code == 0 and full["full_file"] is True
    assert set(full["files"][0]["members_by_type"]) == {"030"}
    assert snapshot.read_bytes() == snap_bytes

    # The real run for day 2 sends exactly what the preview showed (same bytes but for the number).
    second_run = run_feed(settings, RunRef.for_day(FEED, DAY2), clock=_clock, actor="test",
                          census_path=census2)
    assert second_run.status == "delivered", second_run.error
    assert second_run.isa13 == first.isa13 + 1
    assert second_run.payload_sha256 == entry["sha256"]


# --------------------------------------------------------------------------- fast: no sshd, no gpg
@pytest.fixture
def local_ws(tmp_path: Path) -> Any:
    """The shipped config with an empty data directory and no ledger at all (SQLite path unused)."""
    from carrierfeeds.settings import Settings

    return Settings(feeds_dir=ROOT / "feeds", mappings_dir=ROOT / "mappings", schemas_dir=ROOT / "schemas",
                    data_dir=tmp_path / "var", keys_dir=tmp_path / "keys")


def test_preview_of_each_format_creates_no_ledger_no_keys_and_reports_json(local_ws: Any, tmp_path: Path) -> None:
    frame = _census(30, 4, DAY2)
    canary = "Zebediah"
    frame.loc[frame.index[0], "first_name"] = canary
    census = _write(frame, tmp_path / "census.csv")
    for feed, fmt, size_key in ((FEED, "flatfile-csv", "records"), ("acme-sunrise-medical", "x12-834", "segments"),
                                ("acme-northwind-dental", "pdf", "pages")):
        out = tmp_path / f"out-{feed}"
        result = CliRunner().invoke(app, ["preview", feed, "--census", str(census), "--out", str(out), "--json",
                                          "--date", DAY2.isoformat()], env=_env(local_ws))
        assert result.exit_code == 0, result.stdout
        report = json.loads(result.stdout)
        [entry] = report["files"]
        assert entry["format"] == fmt and entry[size_key] and entry[size_key] > 0
        assert entry["control_numbers"] == {**entry["control_numbers"], "isa13": 1, "gs06": 1, "st02": 1,
                                            "placeholder": True}
        assert entry["conformance"]["verdict"] == "passed"
        assert set(entry["members_by_type"]) == {"030"} and entry["members"] > 0
        assert canary not in result.stdout  # the account is PHI-free; the file itself holds the data
        assert _mode(out) == 0o700 and _mode(out / entry["name"]) == 0o600
    assert not (tmp_path / "var").exists()  # no ledger, no snapshot, no staging, nothing
    assert not (tmp_path / "keys").exists()  # no token or snapshot key minted


def test_preview_refuses_a_shared_out_folder_and_a_rejected_census(local_ws: Any, tmp_path: Path) -> None:
    census = _write(_census(10, 5, DAY2), tmp_path / "census.csv")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    result = CliRunner().invoke(app, ["preview", FEED, "--census", str(census), "--out", str(shared),
                                      "--date", DAY2.isoformat()], env=_env(local_ws))
    assert result.exit_code == 2 and list(shared.iterdir()) == []

    bad = pd.read_csv(census, dtype=str, keep_default_na=False)
    bad["dob"] = "not a date"
    _write(bad, census)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["preview", "acme-sunrise-medical", "--census", str(census), "--out",
                                      str(out), "--json", "--date", DAY2.isoformat()], env=_env(local_ws))
    assert result.exit_code == 1
    assert json.loads(result.stdout)["code"] == "census_rejected"
    assert not out.exists() or list(out.iterdir()) == []


def test_preview_help_describes_the_contract() -> None:
    result = CliRunner().invoke(app, ["preview", "--help"])
    assert result.exit_code == 0
    for phrase in ("--census", "--out", "--full", "--json", "Nothing is sent"):
        assert phrase in result.stdout
