"""The morning board over a real ledger (SQLite and PostgreSQL) and real feed folders, and
``carrierfeeds status`` piped and as JSON: every feed's row, what needs attention, no PHI."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from carrierfeeds.ledger import Ledger
from carrierfeeds.ledger.anchor import AnchorLog
from carrierfeeds.ops.status import load_board, next_run_after
from carrierfeeds.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
NY = ZoneInfo("America/New_York")
SUNRISE, NORTHWIND, CLEARVIEW = "acme-sunrise-medical", "acme-northwind-dental", "acme-clearview-vision"


def _workspace(tmp_path: Path, ledger_url: str) -> Settings:
    """The shipped feeds with a window on Sunrise, acknowledgments expected from Sunrise, and one
    feed file that does not load."""
    for name in ("mappings", "schemas"):
        shutil.copytree(ROOT / name, tmp_path / name)
    (tmp_path / "feeds").mkdir()
    for feed_id in (SUNRISE, NORTHWIND, CLEARVIEW):  # the board under test knows these three; more ship as examples
        shutil.copy(ROOT / "feeds" / f"{feed_id}.yaml", tmp_path / "feeds")
    feed = tmp_path / "feeds" / f"{SUNRISE}.yaml"
    window = "  expected: {by: '01:30', days: [mon, tue, wed, thu, fri]}\n"
    feed.write_text(feed.read_text().replace("  schema_id: census-v1\n", "  schema_id: census-v1\n" + window))
    mapping = tmp_path / "mappings" / "sunrise-health.yaml"
    mapping.write_text(mapping.read_text()
                       + "acks: {source: {kind: local, path: acks/sunrise}}\nack_window_hours: 24\n")
    (tmp_path / "feeds" / "acme-typo.yaml").write_text("feed_id: acme-typo\nemployr: {}\n")
    return Settings(feeds_dir=tmp_path / "feeds", mappings_dir=tmp_path / "mappings",
                    schemas_dir=tmp_path / "schemas", data_dir=tmp_path / "var", ledger_url=ledger_url)


def _run(ledger: Ledger, feed_id: str, day: date, status: str, at: datetime, *,
         delivery: str | None = None, transport: str = "sftp") -> None:
    run = ledger.start_run(feed_id=feed_id, interval_start=day, interval_end=day + timedelta(days=1),
                           actor="test", now=at)
    if delivery is not None:
        numbers = ledger.allocate_control_numbers(run_id=run.run_id, sender_id="S", receiver_id=feed_id[:10],
                                                  now=at)
        intent = ledger.record_delivery_intent(
            run_id=run.run_id, feed_id=feed_id, interval_start=day, payload_sha256=f"{day.day:02d}".ljust(64, "c"),
            file_name=f"{feed_id}-{day}.834.pgp", isa13=numbers.isa13, gs06=numbers.gs06, st02=numbers.st02,
            recipient_fingerprint="A" * 40, member_counts={"members": 3}, transport=transport, now=at)
        ledger.record_delivery_outcome(intent.delivery_id, status=delivery, now=at + timedelta(minutes=5))
    ledger.finish_run(run.run_id, status, now=at + timedelta(minutes=6))


def _fill(settings: Settings, ledger: Ledger, monday: date) -> None:
    """Runs in several outcomes: delivered (its 999 never came), no new census, a pending hand-off,
    a rejected census."""
    from carrierfeeds.census.sources import CensusIndex

    at = datetime.combine(monday, datetime.min.time(), tzinfo=NY) + timedelta(hours=2)
    _run(ledger, SUNRISE, monday, "delivered", at, delivery="delivered")
    _run(ledger, SUNRISE, monday + timedelta(days=1), "no_new_census", at + timedelta(days=1))
    _run(ledger, NORTHWIND, monday, "pending_handoff", at, delivery="pending_handoff", transport="manual")
    _run(ledger, CLEARVIEW, monday, "rejected", at)
    CensusIndex(settings.data_dir, SUNRISE).record("b" * 64, name="census_monday.csv", kind="local", run_id=None,
                                                   at=at, mtime=int((at - timedelta(hours=1)).timestamp()))
    anchors = AnchorLog.for_settings(settings)
    anchors.anchor_head(ledger, reason="audit-verify", now=at)
    _run(ledger, CLEARVIEW, monday - timedelta(days=7), "delivered", at - timedelta(days=7))  # older: not the last
    anchors.anchor_head(ledger, reason="run:abc", now=at + timedelta(minutes=7))


def test_board_over_a_real_ledger(tmp_path: Path, ledger_url: str) -> None:
    settings = _workspace(tmp_path, ledger_url)
    ledger = Ledger.open(ledger_url)
    ledger.upgrade()
    monday = date(2026, 12, 7)
    _fill(settings, ledger, monday)
    now = datetime(2026, 12, 8, 9, 0, tzinfo=NY)  # Tuesday 09:00: Sunrise's census is late

    board = load_board(settings, ledger, now=now)
    rows = {r.feed_id: r for r in board.rows}
    assert list(rows) == [CLEARVIEW, NORTHWIND, SUNRISE]
    sunrise, northwind, clearview = rows[SUNRISE], rows[NORTHWIND], rows[CLEARVIEW]
    assert (sunrise.employer_name, sunrise.carrier_name) == ("ACME WIDGETS INC", "Sunrise Health Plan")
    assert sunrise.last_run is not None and sunrise.last_run.status == "no_new_census"
    assert sunrise.last_run.interval_start == monday + timedelta(days=1)
    assert sunrise.census.state == "late" and sunrise.census.window == monday + timedelta(days=1)
    assert (sunrise.acks_pending, sunrise.acks_overdue) == (0, 1)  # sent Monday 02:05, 24 h window
    assert sunrise.attention == ("census_late", "acks_overdue")
    assert sunrise.next_run == datetime(2026, 12, 9, 2, 0, tzinfo=NY)  # "0 2 * * *" in New York
    assert northwind.handoffs_pending == 1 and northwind.last_run.status == "pending_handoff"  # type: ignore[union-attr]
    assert northwind.census.state == "not_expected" and northwind.attention == ()
    assert clearview.last_run.status == "rejected" and clearview.attention == ("run_rejected",)  # type: ignore[union-attr]
    assert [b.file for b in board.broken] == ["acme-typo.yaml"]
    assert board.chain.verified_by == "audit-verify" and board.chain.anchors == 2
    assert board.chain.anchor_seq is not None and board.chain.verified_seq is not None
    assert board.chain.anchor_seq > board.chain.verified_seq
    assert board.needs_attention

    data = board.as_dict()
    assert json.loads(json.dumps(data)) == data  # JSON as it is
    assert data["feeds"][2]["census"]["state"] == "late"
    assert data["chain"]["last_verification"]["by"] == "audit-verify"

    # Before Tuesday's window the same ledger is on time, and the board wrote nothing.
    head = ledger.chain_head()
    calm = load_board(settings, ledger, now=datetime(2026, 12, 8, 1, 0, tzinfo=NY))
    assert {r.feed_id: r.census.state for r in calm.rows}[SUNRISE] == "on_time"
    assert ledger.chain_head() == head
    ledger.close()


def test_next_run_follows_the_schedule_in_the_feeds_zone() -> None:
    now = datetime(2026, 11, 1, 5, 0, tzinfo=UTC)  # 01:00 EDT, the night New York falls back
    assert next_run_after("0 2 * * *", "America/New_York", now) == datetime(2026, 11, 1, 7, 0, tzinfo=UTC)
    assert next_run_after("@daily", "UTC", now) == datetime(2026, 11, 2, tzinfo=UTC)
    assert next_run_after("@quarterly", "UTC", now) == datetime(2027, 1, 1, tzinfo=UTC)
    assert next_run_after(None, "UTC", now) is None and next_run_after("@once", "UTC", now) is None


def _env(settings: Settings) -> dict[str, str]:
    return {"CARRIERFEEDS_FEEDS_DIR": str(settings.feeds_dir), "CARRIERFEEDS_MAPPINGS_DIR": str(settings.mappings_dir),
            "CARRIERFEEDS_SCHEMAS_DIR": str(settings.schemas_dir), "CARRIERFEEDS_DATA_DIR": str(settings.data_dir),
            "CARRIERFEEDS_LEDGER_URL": str(settings.ledger_url)}


def test_status_command_piped_and_json_with_no_phi(tmp_path: Path) -> None:
    from carrierfeeds.census.generate import generate_census, write_census_csv
    from carrierfeeds.cli import app

    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    settings = _workspace(tmp_path, url)
    ledger = Ledger.open(url)
    ledger.upgrade()
    today = datetime.now(UTC).astimezone(NY).date()
    _fill(settings, ledger, today - timedelta(days=3))
    ledger.close()
    # A census waiting in Sunrise's drop folder: its contents must never reach the board.
    census = generate_census(5, 7, as_of=today)
    inbound = settings.data_dir / "inbound" / "acme"
    inbound.mkdir(parents=True)
    write_census_csv(census, inbound / "census_today.csv")
    canaries = [str(census["ssn"].iloc[0]), str(census["last_name"].iloc[0]), str(census["first_name"].iloc[0])]

    runner = CliRunner()
    piped = runner.invoke(app, ["status"], env=_env(settings))
    as_json = runner.invoke(app, ["status", "--json"], env=_env(settings))
    assert piped.exit_code == 1, piped.output  # a rejected run, an overdue 999, a feed file that does not load
    assert as_json.exit_code == 1, as_json.output
    lines = piped.output.splitlines()
    assert lines[1].split()[:3] == ["feed", "employer", "carrier"]
    assert "\x1b[" not in piped.output  # no colour codes when piped
    assert any(line.startswith(CLEARVIEW) and "run_rejected" in line for line in lines)
    assert any("acme-typo.yaml does not load" in line for line in lines)
    assert any(line.startswith("ledger chain: last verified") for line in lines)
    data: dict[str, Any] = json.loads(as_json.output)
    assert [f["feed_id"] for f in data["feeds"]] == [CLEARVIEW, NORTHWIND, SUNRISE]
    assert data["needs_attention"] is True and data["broken_feeds"][0]["file"] == "acme-typo.yaml"
    sunrise = data["feeds"][2]
    assert sunrise["census"]["last_arrival"] is not None  # the waiting file's time, not its contents
    for text in (piped.output, as_json.output):
        for canary in canaries:
            assert canary not in text


@pytest.mark.parametrize("bad", ["sqlite:///no/such/dir/ledger.sqlite"])
def test_status_on_an_unusable_ledger_is_one_line_and_exit_2(tmp_path: Path, bad: str) -> None:
    from carrierfeeds.cli import app

    settings = Settings(feeds_dir=ROOT / "feeds", mappings_dir=ROOT / "mappings", schemas_dir=ROOT / "schemas",
                        data_dir=tmp_path / "var", ledger_url=bad)
    result = CliRunner().invoke(app, ["status"], env=_env(settings))
    assert result.exit_code in (2, 4), result.output
    assert "Traceback" not in result.output


def test_terminal_table_is_coloured_and_names_are_text_not_markup() -> None:
    from rich.console import Console

    from carrierfeeds.cli.status import print_rich
    from carrierfeeds.config import Feed, load_feed
    from carrierfeeds.ops.status import ChainStatus, FeedFacts, build_board

    data = load_feed(ROOT / "feeds" / f"{SUNRISE}.yaml").model_dump(mode="json")
    data["employer"]["name"] = "ACME [bold]WIDGETS"
    data["census"]["expected"] = {"by": "01:30"}
    feed = Feed.model_validate(data)
    now = datetime(2026, 12, 8, 9, 0, tzinfo=NY)
    board = build_board([FeedFacts(feed=feed)], now=now, chain=ChainStatus())
    console = Console(record=True, force_terminal=True, width=200, color_system="standard")
    print_rich(board, console)
    text = console.export_text(styles=False, clear=False)
    styled = console.export_text(styles=True)
    assert "ACME [bold]WIDGETS" in text
    assert "census_missing" in text and "\x1b[" in styled  # a feed that never sent a census, in red
    assert "never verified" in text
