"""A feed's test-to-production lifecycle: testing -> certified -> production, and suspended.

The ledger holds the history (``ledger.lifecycle``: one chained row per change, with actor, the
carrier's reference and the go-live date); this module holds the rules and what a run makes of them.

States and who moves them:

* ``testing``: files are built from the real census through every stage (the parallel run), carry
  ISA15 ``T`` and the mapping's ``test_marker`` before their file name, and go to ``delivery.test``,
  the carrier's test endpoint; a production file (ISA15 ``P``) is refused.
* ``certified``: the carrier approved (``feeds certify FEED --approve --by --reference [--go-live]``);
  still test files to the test endpoint, until the first run whose interval starts on or after the
  go-live date, which records ``went_live`` and is the first production run.
* ``production``: files carry the mapping's own ISA15 and go to ``delivery``. The first production file
  after going live is a full file (030, the full audit) whatever the mapping's mode: the carrier's
  production system has none of the members its test system received.
* ``suspended`` (``feeds suspend``): every run is refused until ``feeds resume`` puts the feed back in the
  state it was suspended from.

Where a feed stands before any row: its ``lifecycle.initial`` (``testing``, or ``production`` for an
existing live feed declared so), or, without a ``lifecycle`` block, ``unmanaged``: the feed runs as it
always did (the demo and every existing test-usage feed keep working unchanged), except that a
production file is refused, fail closed, until someone declares the feed's state. An existing live
deployment adds ``lifecycle: {initial: production}`` (or runs ``feeds lifecycle FEED --declare
production``) once, when it upgrades.

Control numbers: test and production files share the (sender, receiver) pair's one sequence. Every
interchange number then names exactly one file in the ledger, so a carrier's TA1/999 from either system
matches one delivery, and going live mints nothing and resets nothing; ISA13 only has to be unique and
increasing, and a carrier sees a jump at go-live, never a repeat.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Final, Literal

from carrierfeeds.errors import Refused
from carrierfeeds.ledger.lifecycle import LifecycleEvent, append_event, read_history
from carrierfeeds.ledger.records import SENT_STATUSES, LedgerError

if TYPE_CHECKING:
    from carrierfeeds.config import CarrierMapping, Feed
    from carrierfeeds.ledger import Ledger

log = logging.getLogger(__name__)

UNMANAGED: Final[str] = "unmanaged"
#: A delivery's ``transport`` in the ledger ends with this when it went to the carrier's test endpoint.
TEST_SUFFIX: Final[str] = ":test"
Endpoint = Literal["test", "production"]


class LifecycleRefused(Refused):
    """The feed's lifecycle state does not allow this: a production file before production, a suspended
    feed, a testing feed without a test endpoint, or a transition out of order."""

    code = "lifecycle"


@dataclass(frozen=True)
class FeedLifecycle:
    """Where a feed stands: its state, the approved go-live date, and its history (oldest first)."""

    feed_id: str
    state: str
    go_live: date | None = None
    suspended_from: str | None = None
    history: tuple[LifecycleEvent, ...] = field(default=())

    @property
    def went_live(self) -> LifecycleEvent | None:
        """The newest ``went_live`` row (the first production run's), if any."""
        return next((e for e in reversed(self.history) if e.action == "went_live"), None)

    def as_dict(self) -> dict[str, Any]:
        return {"feed_id": self.feed_id, "state": self.state,
                "go_live": self.go_live.isoformat() if self.go_live else None,
                "suspended_from": self.suspended_from, "history": [e.as_dict() for e in self.history]}


def initial_state(feed: Feed) -> str:
    """The state a feed is in before any lifecycle row: its config's, else unmanaged."""
    return feed.lifecycle.initial if feed.lifecycle is not None else UNMANAGED


def fold(feed: Feed, events: Sequence[LifecycleEvent]) -> FeedLifecycle:
    """The feed's lifecycle from its rows (pure): each row holds the state after it."""
    state, go_live, suspended_from = initial_state(feed), None, None
    for e in events:
        if e.action == "suspended":
            suspended_from = state
        elif e.action == "resumed":
            suspended_from = None
        if e.action in ("approved", "declared"):
            go_live = e.go_live
        state = e.state
    return FeedLifecycle(feed.feed_id, state, go_live, suspended_from, tuple(events))


def current(ledger: Ledger, feed: Feed) -> FeedLifecycle:
    """Where ``feed`` stands now, read from the ledger."""
    with ledger._read() as conn:
        return fold(feed, read_history(conn, feed.feed_id))


def has_test_endpoint(feed: Feed) -> bool:
    return getattr(feed.delivery, "test", None) is not None


# ------------------------------------------------------------------------------------- transitions
def approve(ledger: Ledger, feed: Feed, *, by: str, reference: str, now: datetime,
            go_live: date | None = None) -> FeedLifecycle:
    """Record the carrier's approval: testing -> certified (or a certified feed's go-live date set again)."""
    if not reference.strip():
        raise LifecycleRefused("the carrier's approval needs a reference (contact, ticket or sign-off "
                               "document)", details={"feed_id": feed.feed_id})
    return _transition(ledger, feed, action="approved", to="certified", allowed={"testing", "certified"},
                       by=by, now=now, reference=reference, go_live=go_live)


def suspend(ledger: Ledger, feed: Feed, *, by: str, reason: str, now: datetime) -> FeedLifecycle:
    """Stop every run of the feed (any state but suspended) until it is resumed."""
    if not reason.strip():
        raise LifecycleRefused("suspending a feed needs a reason", details={"feed_id": feed.feed_id})
    return _transition(ledger, feed, action="suspended", to="suspended",
                       allowed={"testing", "certified", "production", UNMANAGED}, by=by, now=now, reason=reason)


def resume(ledger: Ledger, feed: Feed, *, by: str, reason: str | None, now: datetime) -> FeedLifecycle:
    """Put a suspended feed back in the state it was suspended from."""
    return _transition(ledger, feed, action="resumed", to=None, allowed={"suspended"}, by=by, now=now,
                       reason=reason)


def declare(ledger: Ledger, feed: Feed, *, state: str, by: str, reference: str | None, reason: str | None,
            now: datetime) -> FeedLifecycle:
    """A person states where a feed stands (an existing live feed migrated to ``production``, or a feed put
    back to ``testing`` for a re-certification). Not out of ``suspended``: that is ``resume``."""
    if state not in ("testing", "production"):
        raise LifecycleRefused("a feed is declared testing or production only", details={"state": state})
    return _transition(ledger, feed, action="declared", to=state,
                       allowed={"testing", "certified", "production", UNMANAGED}, by=by, now=now,
                       reference=reference, reason=reason)


def _transition(ledger: Ledger, feed: Feed, *, action: str, to: str | None, allowed: set[str], by: str,
                now: datetime, reference: str | None = None, reason: str | None = None,
                go_live: date | None = None) -> FeedLifecycle:
    if (to == "testing" or (to == "certified" and action == "approved")) and not has_test_endpoint(feed):
        raise LifecycleRefused(f"feed {feed.feed_id} has no test endpoint (delivery.test): a feed in testing or "
                               "certified sends only there", details={"feed_id": feed.feed_id})
    with ledger._write() as tx:
        before = fold(feed, read_history(tx.conn, feed.feed_id))
        if before.state not in allowed:
            raise LifecycleRefused(f"feed {feed.feed_id} is {before.state}; cannot record {action}",
                                   details={"feed_id": feed.feed_id, "state": before.state, "action": action})
        state = to if to is not None else (before.suspended_from or initial_state(feed))
        try:
            append_event(tx, feed_id=feed.feed_id, action=action, state=state, actor=by, now=now,
                         reference=reference, reason=reason, go_live=go_live)
        except LedgerError as exc:
            raise LifecycleRefused(exc.message, details=exc.details) from exc
        after = fold(feed, read_history(tx.conn, feed.feed_id))
    return after


# ------------------------------------------------------------------------------------------ a run
@dataclass(frozen=True)
class RunLifecycle:
    """What a run's file is under the feed's lifecycle: where it goes, its ISA15, its name's marker."""

    state: str
    endpoint: Endpoint
    #: ISA15 for an 834 (None: the mapping's own).
    usage: str | None
    #: Put before the file name (test files only).
    marker: str = ""
    #: The first production file after going live: a full file whatever the mapping's mode.
    full_file: bool = False
    went_live: bool = False


def plan_run(ledger: Ledger, feed: Feed, mapping: CarrierMapping, *, day: date, run_id: str, actor: str,
             now: datetime) -> RunLifecycle:
    """Decide what the run of ``day`` sends, before any control number is taken; refuse (fail closed)
    when the lifecycle does not allow it. A certified feed whose go-live date has come goes live here
    (``went_live``, in the same transaction as the check, so two workers record it once)."""
    went = False
    with ledger._write() as tx:
        life = fold(feed, read_history(tx.conn, feed.feed_id))
        if life.state == "certified" and life.go_live is not None and day >= life.go_live:
            append_event(tx, feed_id=feed.feed_id, action="went_live", state="production", actor=actor, now=now,
                         go_live=life.go_live, reason=f"first run on or after the go-live date ({day.isoformat()})")
            life, went = fold(feed, read_history(tx.conn, feed.feed_id)), True
    if went:
        log.info("feed %s went live with the run of %s", feed.feed_id, day)
    return _plan(ledger, feed, mapping, life, run_id=run_id, went_live=went)


def preview_run(ledger: Ledger | None, feed: Feed, mapping: CarrierMapping, *, day: date) -> RunLifecycle:
    """What :func:`plan_run` would decide for ``day``, writing nothing (``carrierfeeds preview``): a certified
    feed whose go-live date has come previews its first production file. ``ledger`` None: no ledger yet."""
    life = current(ledger, feed) if ledger is not None else fold(feed, ())
    if life.state == "certified" and life.go_live is not None and day >= life.go_live:
        return RunLifecycle("production", "production", None, full_file=True, went_live=True)
    return _plan(ledger, feed, mapping, life, run_id="", went_live=False)


def _plan(ledger: Ledger | None, feed: Feed, mapping: CarrierMapping, life: FeedLifecycle, *, run_id: str,
          went_live: bool) -> RunLifecycle:
    details = {"feed_id": feed.feed_id, "state": life.state}
    if life.state == "suspended":
        raise LifecycleRefused(f"feed {feed.feed_id} is suspended; nothing is built or sent until it is resumed",
                               details=details)
    if life.state in ("testing", "certified"):
        if not has_test_endpoint(feed):
            raise LifecycleRefused(f"feed {feed.feed_id} is {life.state} but has no test endpoint (delivery.test)",
                                   details=details)
        return RunLifecycle(life.state, "test", "T", mapping.test_marker)
    if life.state == UNMANAGED:
        if feed.output.format == "x12-834" and mapping.envelope.usage == "P":
            raise LifecycleRefused(
                f"a production file (ISA15 P) for feed {feed.feed_id}, which is not in production: declare it "
                "(lifecycle: {initial: production} in the feed, or `carrierfeeds feeds lifecycle FEED --declare "
                "production`) or certify it", details={**details, "usage": "P"})
        return RunLifecycle(life.state, "production", None)
    full = False
    if (live := life.went_live) is not None and ledger is not None:
        full = not any(d.run_id != run_id and not d.transport.endswith(TEST_SUFFIX) and d.status in SENT_STATUSES
                       and d.created_at >= live.at for d in ledger.deliveries(feed_id=feed.feed_id))
    return RunLifecycle(life.state, "production", None, full_file=full, went_live=went_live)


def check_deliverable(ledger: Ledger, feed: Feed, *, endpoint: str | None, usage: str | None) -> None:
    """The deliver stage's last look: a suspended feed sends nothing, and a production file goes out only
    while the feed is in production (a suspension or a re-declaration since the build wins)."""
    life = current(ledger, feed)
    details = {"feed_id": feed.feed_id, "state": life.state}
    if life.state == "suspended":
        raise LifecycleRefused(f"feed {feed.feed_id} is suspended; the built file is not sent", details=details)
    if endpoint != "test" and usage == "P" and life.state != "production":
        raise LifecycleRefused(f"a production file (ISA15 P) for feed {feed.feed_id}, which is {life.state}",
                               details={**details, "usage": "P"})


def isa15(head: bytes) -> str | None:
    """ISA15 (usage indicator) of an 834 from its first bytes (the ISA segment is fixed-width: 106
    characters, the element separator its fourth); None when they are not an ISA segment."""
    if len(head) < 106 or not head.startswith(b"ISA"):
        return None
    elements = head[:106].decode("ascii", "replace").split(head[3:4].decode("ascii", "replace"))
    return elements[15] if len(elements) > 16 else None
