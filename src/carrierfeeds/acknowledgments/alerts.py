"""Alert: something ops must look at, PHI-free; :func:`emit_alert` is the one place one is logged."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alert:
    """Something ops must look at, PHI-free: ``kind`` is rejected, partial, accepted_with_errors,
    unmatched, unreadable, undecryptable, fetch_failed, record_failed, overdue, set_aside (a file over a
    byte cap, not read), deferred (warning: files past the per-poll cap wait), snapshot_reverted
    (warning: the next run resends the rejected changes), snapshot_superseded (error: a later run
    already advanced past the rejected one; send a full file) or snapshot_revert_failed (error: the
    store could not be read; retried next poll); ``errors`` are positions and codes (each with its
    meaning in words)."""

    kind: str
    severity: Literal["error", "warning"]
    message: str
    source_id: str | None = None
    file_name: str | None = None
    file_sha256: str | None = None
    delivery_id: str | None = None
    feed_id: str | None = None
    isa13: int | None = None
    control_number: int | None = None
    errors: tuple[Mapping[str, Any], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["errors"] = [dict(e) for e in self.errors]
        return data


def emit_alert(alert: Alert) -> Alert:
    """Log the alert as one structured line (JSON of ids, positions and codes) and return it."""
    level = logging.ERROR if alert.severity == "error" else logging.WARNING
    log.log(level, "ack alert %s: %s", alert.kind, json.dumps(alert.as_dict(), sort_keys=True, default=str),
            extra={"carrierfeeds_alert": alert.as_dict()})
    return alert
