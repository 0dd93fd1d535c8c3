"""The webhook alert when a feed's open discrepancies pass its threshold: counts and ids only."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from carrierfeeds.config import Feed
from carrierfeeds.credentials import Connections

log = logging.getLogger(__name__)


def alert_payload(feed_id: str, *, open_count: int, threshold: int, comparison_id: str,
                  by_kind: Mapping[str, int]) -> dict[str, Any]:
    """What the webhook receives: never a member token, only counts by kind."""
    return {"event": "reconciliation_threshold", "feed_id": feed_id, "open": open_count, "threshold": threshold,
            "comparison_id": comparison_id, "by_kind": dict(sorted(by_kind.items()))}


def needs_alert(feed: Feed, open_count: int) -> bool:
    spec = feed.reconciliation
    return spec is not None and spec.alert_threshold is not None and open_count > spec.alert_threshold


def send_alert(feed: Feed, payload: Mapping[str, Any], *, connections: Connections) -> bool:
    """POST ``payload`` to the feed's notify webhook (a URL, or a connection ``connections`` resolves);
    False when the feed names no webhook (the CLI still reports the threshold)."""
    if feed.notify is None:
        log.warning("feed %s: open discrepancies past the threshold, but the feed has no notify webhook",
                    feed.feed_id)
        return False
    from carrierfeeds.notify import send_webhook, webhook_target

    target = webhook_target(connections, url=feed.notify.webhook_url, connection_id=feed.notify.webhook_connection_id)
    send_webhook(target, payload, sender=feed.feed_id, event="reconciliation")
    return True
