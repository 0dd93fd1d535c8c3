"""The morning board: one PHI-free row per feed, built as data (pure) and loaded from the ledger and folders.

:func:`build_board` takes what :func:`load_board` read (feeds, runs, census arrival times,
acknowledgment states, pending hand-offs, per-file notices not sent, anchors) and returns a
:class:`Board`; the CLI renders it as a table or JSON, and the console renders the same rows as HTML. A
row needs attention when its census is late or missing, an acknowledgment is overdue, its last run ended
rejected, refused or failed, or a delivered file's notice to the carrier is not sent (failed, or cut off
while sending: ``carrierfeeds notice resend``); a feed file that does not load needs attention too.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from carrierfeeds.config import Feed
from carrierfeeds.ops.arrival import ArrivalVerdict, judge_arrival

if TYPE_CHECKING:
    from carrierfeeds.acknowledgments import DeliveryAckStatus
    from carrierfeeds.ledger.anchor import HeadAnchor
    from carrierfeeds.ledger.records import DeliveryRecord, RunEvent, RunRecord
    from carrierfeeds.ledger.store import Ledger
    from carrierfeeds.settings import Settings

log = logging.getLogger(__name__)

#: Run outcomes a person must look at: the census was refused by validation, a check said no, or it failed.
ATTENTION_RUN_STATUSES = frozenset({"rejected", "refused", "failed"})
#: Airflow's presets as cron, in the feed's time zone (Airflow's ``cron_presets``).
_PRESETS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *",
            "@quarterly": "0 0 1 */3 *", "@yearly": "0 0 1 1 *"}
#: Anchor reasons written after a run rather than by a verification of the whole chain.
_RUN_ANCHOR_PREFIX = "run:"


def _iso(value: date | datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class LastRun:
    """A feed's most recently started run and how it ended (``running`` while it has not)."""

    run_id: str
    interval_start: date
    status: str
    started_at: datetime
    finished_at: datetime | None = None


@dataclass(frozen=True)
class FeedRow:
    """One feed on the board: ids and names from its config, counts and states from the ledger."""

    feed_id: str
    employer_id: str
    employer_name: str
    carrier_id: str
    carrier_name: str
    schedule: str | None
    timezone: str
    last_run: LastRun | None
    next_run: datetime | None
    census: ArrivalVerdict
    acks_pending: int = 0
    acks_overdue: int = 0
    handoffs_pending: int = 0
    #: Per-file notices (delivery, channel) whose latest state is not ``sent`` (``run.notices``).
    notices_unsent: int = 0
    #: The feed's lifecycle (``carrierfeeds.lifecycle``): state, go-live date, history (oldest first).
    lifecycle: str = "unmanaged"
    go_live: date | None = None
    lifecycle_history: tuple[dict[str, Any], ...] = ()

    @property
    def attention(self) -> tuple[str, ...]:
        """Why this row needs a person, as short codes (empty: nothing)."""
        why = []
        if self.census.needs_attention:
            why.append(f"census_{self.census.state}")
        if self.acks_overdue:
            why.append("acks_overdue")
        if self.last_run is not None and self.last_run.status in ATTENTION_RUN_STATUSES:
            why.append(f"run_{self.last_run.status}")
        if self.notices_unsent:
            why.append("notice_unsent")
        return tuple(why)

    def as_dict(self) -> dict[str, Any]:
        last = self.last_run
        return {
            "feed_id": self.feed_id,
            "employer": {"id": self.employer_id, "name": self.employer_name},
            "carrier": {"id": self.carrier_id, "name": self.carrier_name},
            "schedule": self.schedule, "timezone": self.timezone,
            "last_run": None if last is None else {
                "run_id": last.run_id, "interval_start": _iso(last.interval_start), "status": last.status,
                "started_at": _iso(last.started_at), "finished_at": _iso(last.finished_at)},
            "next_run": _iso(self.next_run),
            "census": {"state": self.census.state, "window": _iso(self.census.window),
                       "deadline": _iso(self.census.deadline), "last_arrival": _iso(self.census.last_arrival)},
            "acknowledgments": {"pending": self.acks_pending, "overdue": self.acks_overdue},
            "handoffs_pending": self.handoffs_pending,
            "notices_unsent": self.notices_unsent,
            "lifecycle": {"state": self.lifecycle, "go_live": _iso(self.go_live),
                          "history": list(self.lifecycle_history)},
            "attention": list(self.attention),
        }


@dataclass(frozen=True)
class BrokenFeed:
    """A feed file that does not load (or names a mapping or schema that does not): PHI-free message."""

    file: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "message": self.message}


@dataclass(frozen=True)
class ChainStatus:
    """The ledger chain's last verification (an anchor written by ``audit verify``, an audit report or
    housekeeping) and its newest anchor of any kind; ``problem`` when the anchor file could not be read."""

    verified_at: str | None = None
    verified_seq: int | None = None
    verified_by: str | None = None
    anchor_seq: int | None = None
    anchor_head: str | None = None
    anchor_at: str | None = None
    anchors: int = 0
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"last_verification": None if self.verified_at is None else {
                    "at": self.verified_at, "seq": self.verified_seq, "by": self.verified_by},
                "anchor": None if self.anchor_seq is None else {
                    "seq": self.anchor_seq, "head": self.anchor_head, "at": self.anchor_at},
                "anchors": self.anchors, "problem": self.problem}


@dataclass(frozen=True)
class Board:
    """Every feed's row, the feeds that do not load, and the chain's status, as of ``generated_at``."""

    generated_at: datetime
    rows: tuple[FeedRow, ...]
    chain: ChainStatus
    broken: tuple[BrokenFeed, ...] = field(default=())

    @property
    def needs_attention(self) -> bool:
        return bool(self.broken) or self.chain.problem is not None or any(r.attention for r in self.rows)

    def as_dict(self) -> dict[str, Any]:
        return {"generated_at": self.generated_at.isoformat(), "needs_attention": self.needs_attention,
                "feeds": [r.as_dict() for r in self.rows], "broken_feeds": [b.as_dict() for b in self.broken],
                "chain": self.chain.as_dict()}


# ------------------------------------------------------------------------------------- pure parts
@functools.lru_cache(maxsize=1024)  # a board asks once per feed; feeds share a few schedules and zones
def next_run_after(schedule: str | None, timezone: str, now: datetime) -> datetime | None:
    """The next time the feed's schedule fires after ``now`` (aware, in the feed's time zone); None for
    manual runs and ``@once``."""
    if schedule is None or schedule == "@once":
        return None
    from croniter import croniter  # type: ignore[import-untyped]  # Airflow's own cron parser

    start = now.astimezone(ZoneInfo(timezone))
    fired: datetime = croniter(_PRESETS.get(schedule, schedule), start).get_next(datetime)
    return fired


def chain_status(heads: Sequence[HeadAnchor], problem: str | None = None) -> ChainStatus:
    """The last verification and newest anchor among ``heads`` (in file order)."""
    if problem is not None or not heads:
        return ChainStatus(problem=problem)
    newest = heads[-1]
    verified = [h for h in heads if not h.reason.startswith(_RUN_ANCHOR_PREFIX)]
    last = verified[-1] if verified else None
    return ChainStatus(verified_at=last.at if last else None, verified_seq=last.seq if last else None,
                       verified_by=last.reason if last else None, anchor_seq=newest.seq, anchor_head=newest.head,
                       anchor_at=newest.at, anchors=len(heads))


@dataclass(frozen=True)
class FeedFacts:
    """What the loader read about one feed, the input of :func:`build_board`."""

    feed: Feed
    last_run: LastRun | None = None
    census_arrivals: tuple[datetime, ...] = ()
    acks_pending: int = 0
    acks_overdue: int = 0
    handoffs_pending: int = 0
    notices_unsent: int = 0
    #: The feed's lifecycle rows (``ledger.lifecycle.LifecycleEvent``), oldest first.
    lifecycle: tuple[Any, ...] = ()


def build_board(facts: Iterable[FeedFacts], *, now: datetime, chain: ChainStatus,
                broken: Iterable[BrokenFeed] = ()) -> Board:
    """The board at ``now`` from facts already read; rows in feed id order."""
    from carrierfeeds.lifecycle import fold

    rows = []
    for f in sorted(facts, key=lambda x: x.feed.feed_id):
        feed = f.feed
        life = fold(feed, f.lifecycle)
        rows.append(FeedRow(
            feed_id=feed.feed_id, employer_id=feed.employer.id, employer_name=feed.employer.name,
            carrier_id=feed.carrier.id, carrier_name=feed.carrier.name, schedule=feed.schedule,
            timezone=feed.timezone, last_run=f.last_run, next_run=next_run_after(feed.schedule, feed.timezone, now),
            census=judge_arrival(feed.feed_id, feed.census.expected, feed.timezone, now=now,
                                 arrivals=f.census_arrivals),
            acks_pending=f.acks_pending, acks_overdue=f.acks_overdue, handoffs_pending=f.handoffs_pending,
            notices_unsent=f.notices_unsent, lifecycle=life.state, go_live=life.go_live,
            lifecycle_history=tuple(e.as_dict() for e in life.history)))
    return Board(generated_at=now, rows=tuple(rows), chain=chain,
                 broken=tuple(sorted(broken, key=lambda b: b.file)))


# ------------------------------------------------------------------------------------------ loader
def _last_run(run: RunRecord, events: Sequence[RunEvent]) -> LastRun:
    """The board's view of a feed's newest run: its latest attempt's start and finish."""
    attempt = max((e.attempt for e in events), default=run.attempt)
    finished = [e.at for e in events if e.kind == "run_finished" and e.attempt == attempt]
    started = [e.at for e in events if e.kind == "run_attempt" and e.attempt == attempt]
    return LastRun(run_id=run.run_id, interval_start=run.interval_start, status=run.status,
                   started_at=started[-1] if started else run.started_at,
                   finished_at=finished[-1] if finished else None)


def _count_by_feed(records: Iterable[DeliveryRecord | DeliveryAckStatus]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in records:
        out[r.feed_id] = out.get(r.feed_id, 0) + 1
    return out


def load_board(settings: Settings, ledger: Ledger, *, now: datetime) -> Board:
    """Read every feed in the feeds folder, its runs, census arrival, acknowledgments and hand-offs,
    and the anchor file, and build the board at ``now``. Reads only: nothing is written anywhere."""
    from carrierfeeds.acknowledgments import DEFAULT_WINDOW
    from carrierfeeds.acknowledgments.status import ack_status_of
    from carrierfeeds.config import ConfigCache, load_feed
    from carrierfeeds.errors import CarrierFeedsError, ConfigError
    from carrierfeeds.ledger.anchor import AnchorLog
    from carrierfeeds.ledger.lifecycle import histories
    from carrierfeeds.ledger.notices import unsent_by_feed
    from carrierfeeds.ledger.records import DeliveryStatus
    from carrierfeeds.ops.arrival import census_arrivals
    from carrierfeeds.settings import bundle_from_feed, feed_paths

    feeds: list[Feed] = []
    broken: list[BrokenFeed] = []
    windows: dict[str, timedelta] = {}
    no_source: set[str] = set()
    shared = ConfigCache()  # a hundred feeds share one mapping: each file is parsed once a board
    for path in feed_paths(settings):
        try:
            feed = load_feed(path)
            bundle = bundle_from_feed(settings, feed, path, cache=shared)
        except ConfigError as exc:
            broken.append(BrokenFeed(file=path.name, message=exc.message))
            continue
        feeds.append(feed)
        windows[feed.feed_id] = timedelta(hours=bundle.mapping.ack_window_hours)
        if bundle.mapping.acks is None:
            no_source.add(feed.feed_id)

    # Every delivery folded once, for both the acknowledgment counts and the pending hand-offs.
    deliveries = ledger.deliveries()
    acks = ack_status_of(ledger, deliveries, now=now, windows=windows, default_window=DEFAULT_WINDOW,
                         no_source=no_source)
    pending = _count_by_feed(a for a in acks if a.status == "awaiting")
    overdue = _count_by_feed(a for a in acks if a.status == "overdue")
    handoffs = _count_by_feed(d for d in deliveries if d.status == DeliveryStatus.PENDING_HANDOFF)
    latest = ledger.latest_runs()
    lifecycles = histories(ledger)
    unsent = unsent_by_feed(ledger)

    facts = []
    for feed in feeds:
        try:
            arrivals = tuple(census_arrivals(settings, feed))
        except ConfigError as exc:  # a damaged census index: the feed is shown, its census is not judged
            broken.append(BrokenFeed(file=f"{feed.feed_id}: census index", message=exc.message))
            arrivals = ()
        newest = latest.get(feed.feed_id)
        facts.append(FeedFacts(feed=feed, last_run=None if newest is None else _last_run(*newest),
                               census_arrivals=arrivals,
                               acks_pending=pending.get(feed.feed_id, 0), acks_overdue=overdue.get(feed.feed_id, 0),
                               handoffs_pending=handoffs.get(feed.feed_id, 0),
                               notices_unsent=unsent.get(feed.feed_id, 0),
                               lifecycle=tuple(lifecycles.get(feed.feed_id, ()))))
    try:
        heads, _ = AnchorLog.for_settings(settings).read()
        chain = chain_status(heads)
    except CarrierFeedsError as exc:
        chain = chain_status((), problem=exc.message)
    return build_board(facts, now=now.astimezone(UTC), chain=chain, broken=broken)
