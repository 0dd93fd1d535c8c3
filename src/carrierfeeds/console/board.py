"""The console's board: the rows :func:`carrierfeeds.ops.status.load_board` builds, read the cheap way.

``load_board`` (the CLI's ``status``) folds every delivery of the ledger to count a few per feed, and
parses every feed file on each call; over a large ledger that takes seconds. :class:`BoardLoader` asks
the ledger only what the board shows: open reconciliation items per feed, and each feed's newest run
and the deliveries awaiting an acknowledgment or a hand-off, both kept between boards and updated from
the rows appended since the last one (:class:`~carrierfeeds.console.queries.BoardRuns`,
:class:`~carrierfeeds.console.queries.BoardDeliveries`, on the indexes of migration 0009). Each feed
file stays parsed until the file changes. The rows are built by the same pure
:func:`~carrierfeeds.ops.status.build_board`, so the board is the one ``load_board`` gives (tests
compare them on SQLite and PostgreSQL).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from carrierfeeds.console.queries import BoardDeliveries, BoardRuns
from carrierfeeds.errors import ConfigError

if TYPE_CHECKING:
    from carrierfeeds.config import Feed
    from carrierfeeds.ledger.store import Ledger
    from carrierfeeds.ops.status import Board
    from carrierfeeds.settings import Settings


@dataclass(frozen=True)
class ConsoleBoard:
    """The board, plus what only the console shows: open reconciliation items per feed."""

    board: Board
    reconciliation_open: Mapping[str, int] = field(default_factory=dict)


_Version = tuple[int, int, int, int, int]


def _version(path: Path) -> _Version:
    st = path.stat()
    # An editor's atomic replace changes the inode; an in-place edit the ctime, even within mtime's resolution.
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size


class BoardLoader:
    """Builds the console's board over ``settings``; hold one for the life of the app (it keeps each
    feed file parsed, keyed by its inode, times and size, and re-reads a file that changed)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._feeds: dict[Path, tuple[_Version, Feed | ConfigError]] = {}
        self._deliveries = BoardDeliveries()
        self._runs = BoardRuns()

    def _feed(self, path: Path) -> Feed:
        from carrierfeeds.config import load_feed

        try:
            version = _version(path)
        except OSError:
            return load_feed(path)  # gone since the folder was listed: the loader's own error
        with self._lock:
            known = self._feeds.get(path)
        if known is None or known[0] != version:
            try:
                loaded: Feed | ConfigError = load_feed(path)
            except ConfigError as exc:
                loaded = exc
            known = (version, loaded)
            with self._lock:
                self._feeds[path] = known
        if isinstance(known[1], ConfigError):
            raise known[1].with_traceback(None)
        return known[1]

    def load(self, ledger: Ledger, *, now: datetime) -> ConsoleBoard:
        """The board at ``now``; reads only."""
        from carrierfeeds.acknowledgments import DEFAULT_WINDOW
        from carrierfeeds.config import ConfigCache
        from carrierfeeds.console.queries import open_reconciliation
        from carrierfeeds.errors import CarrierFeedsError
        from carrierfeeds.ledger.anchor import AnchorLog
        from carrierfeeds.ledger.lifecycle import histories
        from carrierfeeds.ledger.notices import unsent_by_feed
        from carrierfeeds.ops.arrival import census_arrivals
        from carrierfeeds.ops.status import BrokenFeed, FeedFacts, _last_run, build_board, chain_status
        from carrierfeeds.settings import bundle_from_feed, feed_paths

        settings = self._settings
        feeds: list[Feed] = []
        broken: list[BrokenFeed] = []
        windows: dict[str, timedelta] = {}
        no_source: set[str] = set()
        shared = ConfigCache()  # mappings and schemas: a handful, parsed once a board
        live = set()
        for path in feed_paths(settings):
            live.add(path)
            try:
                feed = self._feed(path)
                bundle = bundle_from_feed(settings, feed, path, cache=shared)
            except ConfigError as exc:
                broken.append(BrokenFeed(file=path.name, message=exc.message))
                continue
            feeds.append(feed)
            windows[feed.feed_id] = timedelta(hours=bundle.mapping.ack_window_hours)
            if bundle.mapping.acks is None:
                no_source.add(feed.feed_id)
        with self._lock:
            for gone in set(self._feeds) - live:
                del self._feeds[gone]

        with self._lock:  # one refresh at a time: the delivery state is shared between builds
            self._deliveries.refresh(ledger)
            acks_pending, acks_overdue, handoffs = self._deliveries.counts(
                now=now, windows=windows, default_window=DEFAULT_WINDOW, no_source=no_source)
            self._runs.refresh(ledger)
            latest = self._runs.latest()
        reconciliation = open_reconciliation(ledger)
        lifecycles = histories(ledger)  # a few rows a feed: read whole
        unsent = unsent_by_feed(ledger)  # per-file notices not sent: one grouped query
        facts = []
        for feed in feeds:
            try:
                arrivals = tuple(census_arrivals(settings, feed))
            except ConfigError as exc:  # a damaged census index: the feed is shown, its census is not judged
                broken.append(BrokenFeed(file=f"{feed.feed_id}: census index", message=exc.message))
                arrivals = ()
            newest = latest.get(feed.feed_id)
            fid = feed.feed_id
            facts.append(FeedFacts(feed=feed, last_run=None if newest is None else _last_run(*newest),
                                   census_arrivals=arrivals, acks_pending=acks_pending.get(fid, 0),
                                   acks_overdue=acks_overdue.get(fid, 0), handoffs_pending=handoffs.get(fid, 0),
                                   notices_unsent=unsent.get(fid, 0), lifecycle=tuple(lifecycles.get(fid, ()))))
        try:
            heads, _ = AnchorLog.for_settings(settings).read()
            chain = chain_status(heads)
        except CarrierFeedsError as exc:
            chain = chain_status((), problem=exc.message)
        board = build_board(facts, now=now.astimezone(UTC), chain=chain, broken=broken)
        shown = {f.feed_id for f in feeds}
        return ConsoleBoard(board=board, reconciliation_open={k: v for k, v in reconciliation.items() if k in shown})
