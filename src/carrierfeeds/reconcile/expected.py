"""What the carrier should hold: the roster of the snapshot it was last sent (changes sent but not yet
acknowledged included), with the members those unacknowledged changes touch named separately."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Final

import pandas as pd

from carrierfeeds.census.tokens import MemberTokenizer
from carrierfeeds.changes import SnapshotStore
from carrierfeeds.reconcile.roster import ROSTER_VIEW_COLUMNS, Roster, empty_roster, roster_from_view

log = logging.getLogger(__name__)

#: Acknowledgment statuses that say the carrier took a file in.
ACCEPTED: Final[frozenset[str]] = frozenset({"accepted", "accepted_with_errors"})


@dataclass(frozen=True)
class ExpectedRoster:
    """The roster the carrier should hold, the run whose snapshot it is, and the members whose latest
    change went out in a file the carrier has not (yet) accepted: a difference there may only be late."""

    roster: Roster
    snapshot_run_id: str | None
    awaiting_ack: frozenset[str]


def expected_roster(store: SnapshotStore, ledger: Any, *, feed_id: str, tokenizer: MemberTokenizer) -> ExpectedRoster:
    """The expected roster of ``feed_id`` from its confirmed snapshot and the ledger's acknowledgments.

    The snapshot advances when a file is delivered, so it already holds every change sent; a run whose
    deliveries have no accepted acknowledgment marks the members it changed (against the snapshot it
    diffed from) as awaiting.
    """
    info = store.info(feed_id)
    frame = store.load(feed_id, columns=ROSTER_VIEW_COLUMNS)
    if info is None or frame is None:
        log.info("feed %s: no confirmed snapshot; the carrier should hold nobody", feed_id)
        return ExpectedRoster(empty_roster("snapshot"), None, frozenset())
    roster = roster_from_view(frame, tokenizer, source=f"snapshot:{info.run_id}")
    sent = [d for d in ledger.deliveries(feed_id=feed_id) if d.run_id == info.run_id]
    accepted = bool(sent) and any(a.status in ACCEPTED for a in ledger.acknowledgments(
        delivery_ids=[d.delivery_id for d in sent]))
    awaiting: frozenset[str] = frozenset()
    if sent and not accepted:
        base = store.load_base(feed_id, info.run_id)
        awaiting = _changed_members(roster, roster_from_view(base, tokenizer, source="base")
                                    if base is not None else empty_roster("base"))
    log.info("feed %s: expected roster of run %s, %d members, %d awaiting acknowledgment", feed_id,
             info.run_id, roster.members, len(awaiting))
    return ExpectedRoster(roster, info.run_id, awaiting)


def _changed_members(now: Roster, before: Roster) -> frozenset[str]:
    """Members with any roster row that is not in the other roster (added, changed or removed)."""
    both = pd.concat([now.table, before.table], ignore_index=True)
    once = both[~both.duplicated(keep=False)]
    return frozenset(once["member_token"].tolist())
