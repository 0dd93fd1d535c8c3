"""A feed's census against its expected window: the verdict (zones, weekdays, DST, exactly at ``by``),
the config that declares it, and the ledger event and webhook notice sent once per window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from carrierfeeds.config import ArrivalWindow, Feed, load_feed
from carrierfeeds.errors import ConfigError
from carrierfeeds.ledger import Ledger
from carrierfeeds.ops.arrival import check_census_arrival, judge_arrival
from carrierfeeds.settings import FeedBundle, Settings
from carrierfeeds.testing.webhook import WebhookReceiver

ROOT = Path(__file__).resolve().parents[2]
NY = ZoneInfo("America/New_York")
WEEKDAYS = ArrivalWindow(by="01:30", days=("mon", "tue", "wed", "thu", "fri"))


def ny(*args: int) -> datetime:
    return datetime(*args, tzinfo=NY)  # type: ignore[misc]


def state(now: datetime, last: datetime | None, window: ArrivalWindow = WEEKDAYS, tz: str = "America/New_York") -> str:
    return judge_arrival("f", window, tz, now=now, arrivals=[] if last is None else [last]).state


# ----------------------------------------------------------------------------------------- verdict
def test_exactly_at_by_is_on_time_and_a_moment_later_is_late() -> None:
    # Monday 2026-12-07; at 01:30 sharp Friday's window is still the one judged, and Friday's census came.
    friday = ny(2026, 12, 4, 0, 50)
    assert state(ny(2026, 12, 7, 1, 30), friday) == "on_time"
    assert state(ny(2026, 12, 7, 1, 30, 0) + timedelta(microseconds=1), friday) == "late"
    # A census stamped exactly at by is on time; one a second later arrived late.
    assert state(ny(2026, 12, 7, 9, 0), ny(2026, 12, 7, 1, 30)) == "on_time"
    assert state(ny(2026, 12, 7, 9, 0), ny(2026, 12, 7, 1, 30, 1)) == "arrived_late"


def test_weekdays_only_the_weekend_is_quiet_and_monday_is_judged() -> None:
    friday = ny(2026, 12, 4, 1, 0)
    assert state(ny(2026, 12, 5, 12, 0), friday) == "on_time"    # Saturday: Friday's window judged
    assert state(ny(2026, 12, 6, 23, 59), friday) == "on_time"   # Sunday night
    # A file sent on Sunday counts for Monday (after Friday's deadline, before Monday's).
    assert state(ny(2026, 12, 7, 2, 0), ny(2026, 12, 6, 18, 0)) == "on_time"


def test_late_today_becomes_missing_once_the_day_has_passed() -> None:
    monday = ny(2026, 12, 7, 1, 0)
    assert state(ny(2026, 12, 8, 1, 29), monday) == "on_time"    # Tuesday before its deadline
    assert state(ny(2026, 12, 8, 8, 0), monday) == "late"        # Tuesday's window passed, still Tuesday
    assert state(ny(2026, 12, 8, 23, 59), monday) == "late"
    assert state(ny(2026, 12, 9, 0, 0), monday) == "missing"     # Tuesday ended without one
    # Wednesday past its own deadline, Tuesday already missed: still missing, not merely late.
    assert state(ny(2026, 12, 9, 8, 0), monday) == "missing"
    assert state(ny(2026, 12, 9, 8, 0), None) == "missing"       # a feed that never sent one


def test_the_window_is_in_the_feeds_time_zone() -> None:
    daily = ArrivalWindow(by="01:30")
    now = datetime(2026, 12, 8, 7, 0, tzinfo=UTC)  # 02:00 in New York, 16:00 in Tokyo, 23:00 (7th) in Los Angeles
    last = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)  # 22:00 (6th) in New York, 12:00 in Tokyo, 19:00 (6th) in LA
    assert state(now, last, daily, "America/New_York") == "late"  # it was the 7th's census; the 8th's is due
    assert state(now, last, daily, "Asia/Tokyo") == "on_time"      # it counts for the 8th (due 01:30 JST)
    assert state(now, last, daily, "America/Los_Angeles") == "on_time"  # the 7th's, on time
    assert state(datetime(2026, 12, 8, 9, 31, tzinfo=UTC), last, daily, "America/Los_Angeles") == "late"


def test_dst_fall_back_the_first_of_two_0130s_is_the_deadline() -> None:
    daily = ArrivalWindow(by="01:30")
    last = datetime(2026, 10, 31, 5, 0, tzinfo=UTC)  # 31 October's census, on time
    # 2026-11-01 01:30 happens twice in New York: 05:30 UTC (EDT), then 06:30 UTC (EST).
    assert state(datetime(2026, 11, 1, 5, 30, tzinfo=UTC), last, daily) == "on_time"
    assert state(datetime(2026, 11, 1, 5, 31, tzinfo=UTC), last, daily) == "late"
    assert state(datetime(2026, 11, 1, 6, 15, tzinfo=UTC), last, daily) == "late"   # 01:15 EST, second pass
    verdict = judge_arrival("f", daily, "America/New_York", now=datetime(2026, 11, 1, 7, 0, tzinfo=UTC),
                            arrivals=[last])
    assert verdict.deadline == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)


def test_dst_spring_forward_a_skipped_time_falls_after_the_change() -> None:
    window = ArrivalWindow(by="02:30")  # 2026-03-08 02:30 does not exist in New York: 03:30 EDT = 07:30 UTC
    last = datetime(2026, 3, 7, 7, 0, tzinfo=UTC)
    assert state(datetime(2026, 3, 8, 7, 30, tzinfo=UTC), last, window) == "on_time"
    assert state(datetime(2026, 3, 8, 7, 31, tzinfo=UTC), last, window) == "late"


def test_no_window_is_never_judged() -> None:
    assert judge_arrival("f", None, "UTC", now=datetime(2026, 12, 8, tzinfo=UTC), arrivals=()).state \
        == "not_expected"


# ------------------------------------------------------------------------------------------ config
def _feed_data(**census: Any) -> dict[str, Any]:
    feed = load_feed(ROOT / "feeds" / "acme-sunrise-medical.yaml")
    data = feed.model_dump(mode="json")
    data["census"].update(census)
    return data


def test_config_reads_the_window_unquoted_and_refuses_typos(tmp_path: Path) -> None:
    import yaml

    text = (ROOT / "feeds" / "acme-sunrise-medical.yaml").read_text()
    text = text.replace("  schema_id: census-v1\n",
                        "  schema_id: census-v1\n  expected: {by: 01:30, days: [mon, fri]}\n")
    path = tmp_path / "acme-sunrise-medical.yaml"
    path.write_text(text)
    assert load_feed(path).census.expected == ArrivalWindow(by="01:30", days=("mon", "fri"))
    assert Feed.model_validate(_feed_data()).census.expected is None  # off by default

    for bad, said in (({"by": "1:30pm"}, "census.expected.by"), ({"by": "01:30", "days": ["mon", "fir"]},
                      "census.expected.days"), ({"by": "01:30", "dayz": ["mon"]}, "did you mean 'days'"),
                      ({"by": "01:30", "days": ["mon", "mon"]}, "names a day twice"),
                      ({"by": "24:00"}, "census.expected.by")):
        data = _feed_data(expected=bad)
        path.write_text(yaml.safe_dump(data))
        with pytest.raises(ConfigError) as caught:
            load_feed(path)
        assert said in caught.value.message, caught.value.message


# --------------------------------------------------------------------------------- record and alert


def _bundle(url: str) -> FeedBundle:
    data = _feed_data(expected={"by": "01:30", "days": ["mon", "tue", "wed", "thu", "fri"]})
    data["notify"] = {"webhook_url": url}
    feed = Feed.model_validate(data)
    return FeedBundle(feed=feed, mapping=None, schema=None, suite_path=Path("unused"))  # type: ignore[arg-type]


def _record_census(settings: Settings, at: datetime) -> None:
    import hashlib

    from carrierfeeds.census.sources import CensusIndex

    CensusIndex(settings.data_dir, "acme-sunrise-medical").record(
        hashlib.sha256(at.isoformat().encode()).hexdigest(), name="census_20261207.csv", kind="local",
        run_id=None, at=at, mtime=int(at.timestamp()))


def test_late_then_missing_each_recorded_and_sent_once(tmp_path: Path, webhook: WebhookReceiver) -> None:
    settings = Settings(data_dir=tmp_path / "var")
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    ledger.upgrade()
    bundle = _bundle(f"http://127.0.0.1:{webhook.server_address[1]}/hook")
    _record_census(settings, ny(2026, 12, 7, 1, 0))  # Monday's census, on time

    assert check_census_arrival(settings, bundle, ny(2026, 12, 7, 9, 0), ledger=ledger).verdict.state == "on_time"
    first = check_census_arrival(settings, bundle, ny(2026, 12, 8, 8, 0), ledger=ledger)
    again = check_census_arrival(settings, bundle, ny(2026, 12, 8, 9, 0), ledger=ledger)
    assert (first.verdict.state, first.recorded, first.alert_sent) == ("late", True, True)
    assert (again.verdict.state, again.recorded, again.alert_sent) == ("late", False, False)
    assert [n["event"] for n in webhook.bodies] == ["census_late"]
    notice = webhook.bodies[0]
    assert (notice["feed_id"], notice["state"], notice["window"]) == ("acme-sunrise-medical", "late", "2026-12-08")

    gone = check_census_arrival(settings, bundle, ny(2026, 12, 9, 0, 30), ledger=ledger)
    check_census_arrival(settings, bundle, ny(2026, 12, 9, 1, 0), ledger=ledger)
    assert (gone.verdict.state, gone.verdict.window.isoformat()) == ("missing", "2026-12-08")  # type: ignore[union-attr]
    assert [n["event"] for n in webhook.bodies] == ["census_late", "census_missing"]
    events = ledger.audit_events(object_type="feed", object_ids=["acme-sunrise-medical"])
    assert [e.action for e in events] == ["census_late", "census_alert_sent", "census_missing", "census_alert_sent"]
    assert all(e.detail["window"] == "2026-12-08" for e in events)
    assert ledger.verify_chain().ok
    ledger.close()


def test_a_notice_that_fails_is_retried_by_the_next_check_and_a_late_census_is_flagged(tmp_path: Path,
                                                                                     webhook: WebhookReceiver) -> None:
    settings = Settings(data_dir=tmp_path / "var")
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    ledger.upgrade()
    _record_census(settings, ny(2026, 12, 7, 1, 0))
    down = _bundle("http://127.0.0.1:9/closed")  # nothing listens on the discard port
    failed = check_census_arrival(settings, down, ny(2026, 12, 8, 8, 0), ledger=ledger)
    assert (failed.verdict.state, failed.recorded, failed.alert_sent) == ("late", True, False)
    up = _bundle(f"http://127.0.0.1:{webhook.server_address[1]}/hook")
    retried = check_census_arrival(settings, up, ny(2026, 12, 8, 8, 5), ledger=ledger)
    assert (retried.recorded, retried.alert_sent) == (False, True)
    assert len(webhook.bodies) == 1

    _record_census(settings, ny(2026, 12, 8, 10, 0))  # Tuesday's census, eight and a half hours late
    late = check_census_arrival(settings, up, ny(2026, 12, 8, 11, 0), ledger=ledger)
    assert (late.verdict.state, late.recorded, late.alert_sent) == ("arrived_late", True, True)
    assert webhook.bodies[-1]["event"] == "census_arrived_late"
    assert check_census_arrival(settings, up, ny(2026, 12, 9, 1, 0), ledger=ledger).alert_sent is False
    # Tuesday's late file arrived before Wednesday's deadline: Wednesday is on time.
    assert check_census_arrival(settings, up, ny(2026, 12, 9, 2, 0), ledger=ledger).verdict.state == "on_time"
    assert [n["event"] for n in webhook.bodies] == ["census_late", "census_arrived_late"]
    ledger.close()


def test_a_run_ending_no_new_census_past_the_window_is_not_silent(tmp_path: Path, webhook: WebhookReceiver) -> None:
    """The census already processed, the window passed: the run still ends no_new_census (exit 0), and
    the ledger and the webhook say the census is late, once however often the run is retried."""
    import os
    import shutil

    from carrierfeeds.census.sources import CensusIndex
    from carrierfeeds.files import sha256_file
    from carrierfeeds.run import RunRef, run_feed

    for name in ("feeds", "mappings", "schemas"):
        shutil.copytree(ROOT / name, tmp_path / name)
    feed_file = tmp_path / "feeds" / "acme-sunrise-medical.yaml"
    feed_file.write_text(feed_file.read_text().replace(
        "  schema_id: census-v1\n", "  schema_id: census-v1\n  expected: {by: '01:30'}\n")
        + f"notify: {{webhook_url: 'http://127.0.0.1:{webhook.server_address[1]}/hook'}}\n")
    settings = Settings(feeds_dir=tmp_path / "feeds", mappings_dir=tmp_path / "mappings",
                        schemas_dir=tmp_path / "schemas", data_dir=tmp_path / "var")
    inbound = settings.data_dir / "inbound" / "acme"
    inbound.mkdir(parents=True)
    census = inbound / "census_20261207.csv"
    census.write_text("member_id\n")
    monday = ny(2026, 12, 7, 1, 0)
    os.utime(census, (monday.timestamp(), monday.timestamp()))
    CensusIndex(settings.data_dir, "acme-sunrise-medical").record(
        sha256_file(census), name=census.name, kind="local", run_id=None, at=monday, mtime=int(monday.timestamp()))

    tuesday = ny(2026, 12, 8, 9, 0)
    ref = RunRef.for_day("acme-sunrise-medical", tuesday.date())
    for _ in range(2):
        summary = run_feed(settings, ref, clock=lambda: tuesday, actor="test")
        assert summary.status == "no_new_census"
    assert [n["event"] for n in webhook.bodies] == ["census_late"]
    ledger = Ledger.open(settings.resolved_ledger_url)
    actions = [e.action for e in ledger.audit_events(object_type="feed", object_ids=["acme-sunrise-medical"])]
    ledger.close()
    assert actions == ["census_late", "census_alert_sent"]


def test_housekeeping_checks_every_feed_with_a_window_and_skips_a_broken_file(tmp_path: Path) -> None:
    import shutil

    from carrierfeeds.ops.arrival import check_all_arrivals

    for name in ("feeds", "mappings", "schemas"):
        shutil.copytree(ROOT / name, tmp_path / name)
    feed_file = tmp_path / "feeds" / "acme-sunrise-medical.yaml"
    feed_file.write_text(feed_file.read_text().replace(
        "  schema_id: census-v1\n", "  schema_id: census-v1\n  expected: {by: '01:30', days: [mon]}\n"))
    (tmp_path / "feeds" / "broken.yaml").write_text("feed_id: [\n")
    settings = Settings(feeds_dir=tmp_path / "feeds", mappings_dir=tmp_path / "mappings",
                        schemas_dir=tmp_path / "schemas", data_dir=tmp_path / "var")
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    ledger.upgrade()
    checks = check_all_arrivals(settings, ledger, now=ny(2026, 12, 8, 9, 0))
    assert [(c.verdict.feed_id, c.verdict.state, c.recorded) for c in checks] == [
        ("acme-sunrise-medical", "missing", True)]  # no notify block: recorded, nothing to send
    assert [e.action for e in ledger.audit_events(object_type="feed")] == ["census_missing"]
    ledger.close()


def test_an_undefined_webhook_connection_is_logged_and_the_event_still_recorded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under the CLI a connection id resolves only through AIRFLOW_CONN_<ID>: without it the check says
    so in the log and keeps the event; nothing escapes into the run that called it."""
    monkeypatch.delenv("AIRFLOW_CONN_NO_SUCH_WEBHOOK", raising=False)
    settings = Settings(data_dir=tmp_path / "var")
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    ledger.upgrade()
    data = _feed_data(expected={"by": "01:30"})
    data["notify"] = {"webhook_connection_id": "no_such_webhook"}
    bundle = FeedBundle(feed=Feed.model_validate(data), mapping=None, schema=None,  # type: ignore[arg-type]
                        suite_path=Path("unused"))
    check = check_census_arrival(settings, bundle, ny(2026, 12, 8, 9, 0), ledger=ledger)
    assert (check.verdict.state, check.recorded, check.alert_sent) == ("missing", True, False)
    ledger.close()
