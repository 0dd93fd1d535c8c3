"""Census arrival against a feed's expected window: judge it (pure), then record and alert once per window.

A feed's ``census.expected`` says a new census is due by ``by`` (wall time in the feed's time zone) on
each of ``days``. At ``now`` the window judged is the latest expected day whose deadline has passed
(strictly: a census stamped exactly at ``by`` is on time, and ``now`` exactly at ``by`` is not yet
late). A census counts for that day when it arrived after the previous expected day's deadline:

    on_time       one arrived by the deadline
    arrived_late  none by the deadline, one after it (a delivery late against the schedule)
    late          nothing yet, the deadline's day is still today in the feed's time zone, and the
                  expected day before it had its census
    missing       nothing, and a whole expected day has passed without one (the deadline's day has
                  ended, or the expected day before it also went without; a feed never sent one)

A wall time that a DST change skips is taken as the same number of minutes after the change (02:30 on
a spring-forward day is 03:30); one that occurs twice is its first occurrence, so the earlier deadline
holds. The arrival time of a census is its file's modification time as recorded in the feed's census
index (else when it was accepted), or the modification time of a newer file waiting in a local drop
folder. A late, missing or late-arriving census becomes one ledger audit event (object ``feed``) and
one webhook notice per window and state: a rerun of the check finds the event and sends nothing again,
and a notice that did not go out is retried by the next check (``census_alert_sent`` marks the ones
that did).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

from carrierfeeds.config import WEEKDAYS, ArrivalWindow, Feed, LocalSource
from carrierfeeds.credentials import Connections, KeysDirConnections
from carrierfeeds.errors import CarrierFeedsError, ConfigError, TransientError

if TYPE_CHECKING:
    from carrierfeeds.ledger.store import Ledger
    from carrierfeeds.settings import FeedBundle, Settings

log = logging.getLogger(__name__)

ArrivalState = Literal["not_expected", "on_time", "arrived_late", "late", "missing"]
#: States that need a person: recorded in the ledger and sent to the feed's webhook.
ALERT_STATES: frozenset[str] = frozenset({"late", "missing", "arrived_late"})
#: Ledger audit action per alerting state (object_type ``feed``, object_id the feed id).
ACTIONS: dict[str, str] = {"late": "census_late", "missing": "census_missing", "arrived_late": "census_arrived_late"}
ALERT_SENT = "census_alert_sent"
ACTOR = "carrierfeeds:census-arrival"


@dataclass(frozen=True)
class ArrivalVerdict:
    """Where a feed's census stands against its window at ``checked_at``; PHI-free (times and ids only)."""

    feed_id: str
    state: ArrivalState
    checked_at: datetime
    window: date | None = None
    deadline: datetime | None = None
    last_arrival: datetime | None = None

    @property
    def needs_attention(self) -> bool:
        return self.state in ("late", "missing")

    def as_dict(self) -> dict[str, Any]:
        return {"feed_id": self.feed_id, "state": self.state, "checked_at": self.checked_at.isoformat(),
                "window": self.window.isoformat() if self.window else None,
                "deadline": self.deadline.isoformat() if self.deadline else None,
                "last_arrival": self.last_arrival.isoformat() if self.last_arrival else None}


@dataclass(frozen=True)
class ArrivalCheck:
    """What one check did: its verdict, whether it wrote the ledger event now, whether it sent a notice."""

    verdict: ArrivalVerdict
    recorded: bool = False
    alert_sent: bool = False


def deadline_on(day: date, window: ArrivalWindow, zone: ZoneInfo) -> datetime:
    """The instant ``window.by`` on ``day`` in ``zone`` (UTC), DST gaps and folds as the module says."""
    hour, minute = (int(p) for p in window.by.split(":"))
    wall = datetime.combine(day, time(hour, minute), tzinfo=zone)  # fold=0: the first of two, or past a gap
    return wall.astimezone(UTC)


def _expected(day: date, window: ArrivalWindow) -> bool:
    return WEEKDAYS[day.weekday()] in window.days


def _expected_before(day: date, window: ArrivalWindow) -> date:
    return next(d for d in (day - timedelta(days=i) for i in range(1, 8)) if _expected(d, window))


def judge_arrival(feed_id: str, window: ArrivalWindow | None, timezone: str, *, now: datetime,
                  arrivals: Iterable[datetime]) -> ArrivalVerdict:
    """The verdict at ``now`` (aware) given when each census arrived (aware; any order)."""
    times = sorted(arrivals)
    if now.tzinfo is None or any(t.tzinfo is None for t in times):
        raise ValueError("now and every arrival must be timezone-aware")
    last = times[-1] if times else None
    if window is None:
        return ArrivalVerdict(feed_id, "not_expected", now, last_arrival=last)
    zone = ZoneInfo(timezone)
    today = now.astimezone(zone).date()
    # Seven days back always holds an expected day (days is never empty); the previous one is within 7 more.
    passed = [d for d in (today - timedelta(days=i) for i in range(8))
              if _expected(d, window) and deadline_on(d, window, zone) < now]
    day = passed[0]
    previous = _expected_before(day, window)
    deadline, opened = deadline_on(day, window, zone), deadline_on(previous, window, zone)
    state: ArrivalState
    if any(opened < t <= deadline for t in times):
        state = "on_time"
    elif any(t > deadline for t in times):
        state = "arrived_late"
    elif day == today and any(t > deadline_on(_expected_before(previous, window), window, zone) for t in times):
        state = "late"
    else:
        # The window's day has ended, or the expected day before it already went without a census.
        state = "missing"
    return ArrivalVerdict(feed_id, state, now, window=day, deadline=deadline, last_arrival=last)


# -------------------------------------------------------------------------------------------- inputs
def _from_timestamp(value: float) -> datetime:
    return datetime.fromtimestamp(value, tz=UTC)


def census_arrivals(settings: Settings, feed: Feed) -> list[datetime]:
    """When each of the feed's censuses arrived: its recorded file time in the census index (else when
    it was accepted), and the newest file waiting in a local drop folder. Reads times only, never a file."""
    from carrierfeeds.census.sources import CensusIndex

    times: list[datetime] = []
    for entry in CensusIndex(settings.data_dir, feed.feed_id).entries().values():
        if "mtime" in entry:
            times.append(_from_timestamp(int(entry["mtime"])))
        elif entry.get("recorded_at"):
            times.append(datetime.fromisoformat(str(entry["recorded_at"])))
    source = feed.census.source
    if isinstance(source, LocalSource):
        waiting = _newest_local_file(settings.data_dir / source.path, source.pattern)
        if waiting is not None:
            times.append(waiting)
    return sorted(times)


def _newest_local_file(folder: Path, pattern: str) -> datetime | None:
    import fnmatch

    try:
        entries = list(os.scandir(folder))
    except OSError:
        return None
    newest: float | None = None
    for entry in entries:
        if not fnmatch.fnmatchcase(entry.name, pattern):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and (newest is None or st.st_mtime > newest):
            newest = st.st_mtime
    return None if newest is None else _from_timestamp(newest)


def arrival_for(settings: Settings, feed: Feed, *, now: datetime) -> ArrivalVerdict:
    """The feed's verdict at ``now`` from its census index and drop folder (reads only)."""
    return judge_arrival(feed.feed_id, feed.census.expected, feed.timezone, now=now,
                         arrivals=census_arrivals(settings, feed))


# ------------------------------------------------------------------------------------ record, alert
def _events_for(ledger: Ledger, feed_id: str, action: str, window: date) -> list[Any]:
    return [e for e in ledger.audit_events(action=action, object_type="feed", object_ids=[feed_id])
            if e.detail.get("window") == window.isoformat()]


def check_census_arrival(settings: Settings, bundle: FeedBundle, now: datetime, *,
                         ledger: Ledger | None = None, connections: Connections | None = None) -> ArrivalCheck:
    """Judge the feed's census at ``now``; when late, missing or late-arriving, write the ledger event
    and send the webhook notice, each once per (window, state). Called when a run ends
    ``no_new_census`` and by housekeeping; a notice that fails is logged and retried next time.
    ``connections`` resolves a webhook connection id (default: the CLI's, see ``KeysDirConnections``)."""
    feed = bundle.feed
    if feed.census.expected is None:  # nothing to judge: no folder or index is read
        return ArrivalCheck(ArrivalVerdict(feed.feed_id, "not_expected", now))
    verdict = arrival_for(settings, feed, now=now)
    if verdict.state not in ALERT_STATES or verdict.window is None:
        return ArrivalCheck(verdict)
    own = ledger is None
    if ledger is None:
        from carrierfeeds.settings import open_ledger

        ledger = open_ledger(settings)
    try:
        return _record_and_alert(ledger, feed, verdict, now,
                                 connections or KeysDirConnections(settings.resolved_keys_dir))
    finally:
        if own:
            ledger.close()


def check_quietly(settings: Settings, bundle: FeedBundle, now: datetime, *, ledger: Ledger,
                  connections: Connections | None = None) -> ArrivalCheck | None:
    """:func:`check_census_arrival` for a run that ended ``no_new_census``: a failure of the check is
    logged, never raised, so the run's recorded outcome stands."""
    try:
        return check_census_arrival(settings, bundle, now, ledger=ledger, connections=connections)
    except CarrierFeedsError as exc:
        log.error("feed %s: census arrival not checked (%s): %s", bundle.feed.feed_id, exc.code, exc.message)
        return None


def _record_and_alert(ledger: Ledger, feed: Feed, verdict: ArrivalVerdict, now: datetime,
                      connections: Connections) -> ArrivalCheck:
    window, deadline = verdict.window, verdict.deadline
    if window is None or deadline is None:
        return ArrivalCheck(verdict)
    action = ACTIONS[verdict.state]
    detail = {"window": window.isoformat(), "deadline": deadline.isoformat(),
              "last_arrival": verdict.last_arrival.isoformat() if verdict.last_arrival else None,
              "employer_id": feed.employer.id, "carrier_id": feed.carrier.id}
    recorded = False
    if not _events_for(ledger, feed.feed_id, action, window):
        ledger.audit(actor=ACTOR, action=action, object_type="feed", object_id=feed.feed_id, now=now,
                     detail=detail)
        recorded = True
        log.warning("feed %s: census %s for %s (due %s)", feed.feed_id, verdict.state, window,
                    deadline.isoformat())
    if feed.notify is None:
        return ArrivalCheck(verdict, recorded=recorded)
    sent = [e for e in _events_for(ledger, feed.feed_id, ALERT_SENT, window) if e.detail.get("state") == verdict.state]
    if sent:
        return ArrivalCheck(verdict, recorded=recorded)
    try:
        send_arrival_notice(feed, verdict, connections)
    except CarrierFeedsError as exc:
        # The event stands; the next check (a run, housekeeping) tries the notice again.
        log.error("feed %s: census %s notice not sent: %s", feed.feed_id, verdict.state, exc.message)
        return ArrivalCheck(verdict, recorded=recorded)
    ledger.audit(actor=ACTOR, action=ALERT_SENT, object_type="feed", object_id=feed.feed_id, now=now,
                 detail={"window": window.isoformat(), "state": verdict.state})
    return ArrivalCheck(verdict, recorded=recorded, alert_sent=True)


def arrival_notice(feed: Feed, verdict: ArrivalVerdict) -> dict[str, Any]:
    """The webhook body: ids, state and times; never anything read from a census."""
    words = {"late": "no new census yet, its window has passed",
             "missing": "no new census for a whole expected day",
             "arrived_late": "the census arrived after its window"}
    return {"event": ACTIONS[verdict.state], "feed_id": feed.feed_id, "employer_id": feed.employer.id,
            "carrier_id": feed.carrier.id, "state": verdict.state,
            "window": verdict.window.isoformat() if verdict.window else None,
            "deadline": verdict.deadline.isoformat() if verdict.deadline else None,
            "last_arrival": verdict.last_arrival.isoformat() if verdict.last_arrival else None,
            "timezone": feed.timezone, "message": f"feed {feed.feed_id}: {words[verdict.state]}"}


def send_arrival_notice(feed: Feed, verdict: ArrivalVerdict, connections: Connections) -> None:
    """POST the notice to the feed's webhook through :mod:`carrierfeeds.notify` (URL or connection)."""
    if feed.notify is None:
        return
    from carrierfeeds.notify import send_webhook, webhook_target

    try:
        target = webhook_target(connections, url=feed.notify.webhook_url,
                                connection_id=feed.notify.webhook_connection_id)
        send_webhook(target, arrival_notice(feed, verdict), sender=feed.feed_id, event=ACTIONS[verdict.state])
    except OSError as exc:  # a connection lookup's own I/O
        raise TransientError(f"census notice for {feed.feed_id} not sent: {type(exc).__name__}") from None


def check_all_arrivals(settings: Settings, ledger: Ledger, *, now: datetime,
                       connections: Connections | None = None) -> list[ArrivalCheck]:
    """Housekeeping: check every feed that declares a window; a feed that does not load is skipped
    (``feeds check`` reports it), and one feed's failure does not stop the others."""
    from carrierfeeds.settings import feed_paths, load_bundle

    checks = []
    for path in feed_paths(settings):
        try:
            bundle = load_bundle(settings, path.stem)
        except ConfigError as exc:
            log.error("census arrival: feed file %s skipped: %s", path.name, exc.message)
            continue
        if bundle.feed.census.expected is None:
            continue
        try:
            checks.append(check_census_arrival(settings, bundle, now, ledger=ledger, connections=connections))
        except CarrierFeedsError as exc:
            if exc.retriable:
                raise
            log.error("census arrival: feed %s not checked: %s", bundle.feed.feed_id, exc.message)
    return checks
