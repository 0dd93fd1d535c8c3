"""Retention takes every place the pipeline writes an employer's member data, and a legal hold keeps them all.

The places are not a hand list: real runs (an 834 feed and a changes-mode flat-file feed sharing one
employer's local drop folder, delivered to a local carrier inbox, the 834 feed in testing so to a local test
endpoint, the carrier's TA1 collected) fill
a data directory, and the test walks it. Every file there is member data unless it is the project's own
bookkeeping (keys, anchors, the ledger database, feed configuration). After the employer's contract end
plus the retention period ``carrierfeeds purge`` must leave none of them; under ``hold set`` it must leave
every one. A new place the pipeline starts writing fails this test until the purge knows it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from carrierfeeds.cli import app
from carrierfeeds.outcomes import ExitCode

ROOT = Path(__file__).resolve().parents[1]
FEEDS = ("acme-sunrise-medical", "acme-clearview-vision")
DAY = date(2026, 11, 20)
runner = CliRunner()

#: The project's own files under the data directory: no member data, kept by an employee-data purge.
BOOKKEEPING = ("feeds/", "anchors/", "ledger.sqlite")


def _files(data_dir: Path) -> dict[str, str]:
    """Every file under the data directory (relative path -> sha256), symbolic links included."""
    return {str(p.relative_to(data_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(data_dir.rglob("*")) if p.is_file() or p.is_symlink()}


def _member_data(files: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in files.items() if not k.startswith(BOOKKEEPING)}


def _place(path: str) -> str:
    """A file's place: its folder, with the run's day folder folded in (``staging/<feed>``, ``inbound/acme``)."""
    parts = Path(path).parts[:-1]
    return "/".join(p for p in parts[:2])


@pytest.fixture
def workspace(tmp_path: Path, demo_keys: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    from carrierfeeds.acknowledgments import poll_acks
    from carrierfeeds.census.generate import generate_census, write_census_csv
    from carrierfeeds.config import LocalDelivery, LocalEndpoint
    from carrierfeeds.demo import prepare_workspace
    from carrierfeeds.run.context import RunRef
    from carrierfeeds.run.stages import run_feed
    from carrierfeeds.settings import open_ledger

    data = tmp_path / "var"
    keys_dir = tmp_path / "keys"
    # The shipped configuration, the 834 carrier answering in a folder under the data directory.
    config = tmp_path / "config"
    for part in ("feeds", "mappings", "schemas"):
        shutil.copytree(ROOT / part, config / part)
    mapping = config / "mappings" / "sunrise-health.yaml"
    mapping.write_text(mapping.read_text() + "acks:\n  source:\n    kind: local\n    path: carrier-acks\n")
    spaces = [prepare_workspace(data, keys=demo_keys, keys_dir=keys_dir, config_root=config, feed_id=f,
                                delivery=LocalDelivery(path="carrier-inbox", test=LocalEndpoint(path="carrier-test")
                                                       if f == FEEDS[0] else None)) for f in FEEDS]
    settings = spaces[0].settings
    # The 834 feed is in testing: its file goes to the carrier's test endpoint, a place of its own.
    testing = settings.feeds_dir / f"{FEEDS[0]}.yaml"
    testing.write_text(testing.read_text() + "lifecycle: {initial: testing}\n")
    inbound = spaces[0].inbound
    # The employer drops two files; the newer is picked, the older is never read.
    write_census_csv(generate_census(30, 1, as_of=DAY), inbound / "census_20261119.csv")
    write_census_csv(generate_census(40, 2, as_of=DAY), inbound / "census_20261120.csv")
    sent = {}
    for feed_id in FEEDS:
        summary = run_feed(settings, RunRef.for_day(feed_id, DAY), clock=lambda: datetime.now(UTC), actor="test")
        assert summary.status == "delivered", summary.error
        sent[feed_id] = summary
    # The carrier answers the 834 with a TA1 in its folder, collected (and archived) as the housekeeping
    # DAG collects it.
    answers = data / "carrier-acks"
    answers.mkdir()
    isa13 = int(sent[FEEDS[0]].isa13)
    (answers / "ta1.x12").write_bytes(
        (f"ISA*00*          *00*          *ZZ*{'SUNRISEHP':<15}*ZZ*{'CARRIERFEEDS':<15}*261121*0900*^*00501*"
         f"000000900*0*T*:~\nTA1*{isa13:09d}*261121*0800*A*000~\nIEA*0*000000900~\n").encode())
    ledger = open_ledger(settings)
    result = poll_acks(settings, now=datetime.now(UTC), ledger=ledger)
    assert [r.count("recorded") for r in result.reports] == [1]
    ledger.close()
    for name, value in {"FEEDS_DIR": settings.feeds_dir, "MAPPINGS_DIR": settings.mappings_dir,
                        "SCHEMAS_DIR": settings.schemas_dir, "DATA_DIR": data, "KEYS_DIR": keys_dir,
                        "GNUPG_HOME": settings.gnupg_home}.items():
        monkeypatch.setenv(f"CARRIERFEEDS_{name}", str(value))
    # The contract ended: due 90 days later.
    for feed_id in FEEDS:
        path = settings.feeds_dir / f"{feed_id}.yaml"
        feed = yaml.safe_load(path.read_text())
        feed["employer"]["contract_end"] = "2026-12-01"
        path.write_text(yaml.safe_dump(feed, sort_keys=False))
    return {"data": data}


def test_purge_takes_every_place_a_run_wrote_member_data_and_a_hold_keeps_them(workspace: dict[str, Any]) -> None:
    data: Path = workspace["data"]
    # Every run anchored the ledger's head outside the database when it ended.
    anchors = [json.loads(line) for line in (data / "anchors" / "ledger-anchors.jsonl").read_text().splitlines()]
    assert [a["reason"].split(":")[0] for a in anchors] == ["run", "run"]
    before = _member_data(_files(data))
    places = {_place(p) for p in before}
    # What the runs really wrote (a floor, not the list the check below relies on).
    assert {"inbound/acme", "census-index", "carrier-inbox", "carrier-test", "carrier-acks", "acks/sunrise-health",
            *(f"{kind}/{f}" for kind in ("staging", "reports") for f in FEEDS),
            "snapshots/acme-clearview-vision"} <= places, places

    assert runner.invoke(app, ["hold", "set", "--employer", "acme", "--reason", "matter 7"]).exit_code == ExitCode.OK
    held = runner.invoke(app, ["purge", "--as-of", "2027-03-15", "--json"])
    assert held.exit_code == ExitCode.OK, held.output
    assert _member_data(_files(data)) == before  # every file, byte for byte

    assert runner.invoke(app, ["hold", "clear", "--employer", "acme", "--reason", "matter 7 closed"]).exit_code == 0
    too_early = runner.invoke(app, ["purge", "--as-of", "2027-02-28"])  # due on 2027-03-01
    assert too_early.exit_code == ExitCode.OK
    assert _member_data(_files(data)) == before

    purged = runner.invoke(app, ["purge", "--as-of", "2027-03-15"])
    assert purged.exit_code == ExitCode.OK, purged.output
    left = _member_data(_files(data))
    assert left == {}, sorted({_place(p) for p in left})
    # The purge's own records still verify, anchors included.
    verify = runner.invoke(app, ["audit", "verify"])
    assert verify.exit_code == ExitCode.OK, verify.output


def test_a_drop_folder_another_feed_still_reads_is_kept(workspace: dict[str, Any]) -> None:
    data: Path = workspace["data"]
    feeds_dir = data / "feeds"
    path = feeds_dir / f"{FEEDS[1]}.yaml"
    feed = yaml.safe_load(path.read_text())
    feed["employer"]["contract_end"] = None  # the vision contract goes on
    path.write_text(yaml.safe_dump(feed, sort_keys=False))
    drop = sorted((data / "inbound" / "acme").iterdir())
    result = runner.invoke(app, ["purge", "--as-of", "2027-03-15", "--json"])
    assert result.exit_code == ExitCode.OK, result.output
    assert sorted((data / "inbound" / "acme").iterdir()) == drop
    assert not (data / "staging" / FEEDS[0]).exists() and (data / "staging" / FEEDS[1]).exists()
    assert "kept (another feed reads it)" in runner.invoke(app, ["purge", "--as-of", "2027-03-15",
                                                                  "--dry-run"]).output
