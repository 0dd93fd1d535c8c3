"""PHI-free JSON notices POSTed to a webhook: the target from a feed's URL or a connection, the payload ours.

A failure notice names the feed, the DAG, run and task, the stage, our error code and our message
(PHI-free by construction, see :mod:`carrierfeeds.errors`). Any other exception is reported by its type
name only: its text may hold anything. The URL comes from the feed's ``notify`` block, directly or
through a connection id resolved by a :class:`~carrierfeeds.credentials.Connections` (HTTP provider
conventions), so a secret token never sits in YAML. Airflow's notifier class, which sends these for a
failed task, lives in :mod:`carrierfeeds.airflow`; this module never imports Airflow.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from carrierfeeds.credentials import Connections, WebhookTarget
from carrierfeeds.errors import ConfigError, TransientError

log = logging.getLogger(__name__)

#: Codes for failures that are not ours: a timeout, or an unknown exception (by type name only).
TIMEOUT_CODE = "timeout"
INTERNAL_CODE = "internal"


def failure_summary(exception: BaseException | None) -> tuple[str | None, str, str]:
    """(stage, error code, PHI-free message) for the exception a task failed with.

    Our stage failures carry ``carrierfeeds_stage``/``carrierfeeds_code``/``carrierfeeds_message``
    (set by :class:`carrierfeeds.airflow.FeedStageFailed`); anything else is named by type only.
    """
    if exception is None:
        return None, INTERNAL_CODE, "no exception recorded"
    code = getattr(exception, "carrierfeeds_code", None)
    if code is not None:
        return (getattr(exception, "carrierfeeds_stage", None), str(code),
                str(getattr(exception, "carrierfeeds_message", ""))[:500])
    # A task of several stages tags what escapes it with the stage it was in (our stage names only).
    stage = getattr(exception, "carrierfeeds_stage", None)
    name = type(exception).__name__
    if "Timeout" in name:
        return stage, TIMEOUT_CODE, f"{name}: the task ran past its execution timeout"
    return stage, INTERNAL_CODE, name


def failure_payload(context: Mapping[str, Any], *, feed_id: str | None, event: str = "failure") -> dict[str, Any]:
    """A failed task's notice from its Airflow-style context: ids, stage, code and our message; never a
    value from the data. ``feed_id`` is None for the housekeeping DAG."""
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    stage, code, message = failure_summary(context.get("exception"))
    task_id = getattr(ti, "task_id", None)
    logical = context.get("logical_date")
    return {
        "event": event,
        "feed_id": feed_id,
        "dag_id": getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", None),
        "run_id": context.get("run_id") or getattr(dag_run, "run_id", None),
        "task_id": task_id,
        "try_number": getattr(ti, "try_number", None),
        "stage": stage or task_id,
        "error_code": code,
        "message": message,
        "logical_date": logical.isoformat() if logical is not None else None,
    }


def webhook_target(connections: Connections, *, url: str | None = None,
                   connection_id: str | None = None) -> WebhookTarget:
    """The target a ``notify`` block names: exactly one of ``url`` and ``connection_id``."""
    if (url is None) == (connection_id is None):
        raise ConfigError("a webhook notice needs exactly one of url and connection_id", field="notify")
    if connection_id is not None:
        return connections.webhook(connection_id)
    return WebhookTarget(str(url))


def send_webhook(target: WebhookTarget, payload: Mapping[str, Any], *, sender: str, event: str,
                 timeout: float = 10.0) -> None:
    """POST ``payload`` as JSON; an unreachable or refusing webhook is a TransientError naming its host."""
    body = json.dumps(payload, sort_keys=True).encode("utf-8")
    parsed = urllib.parse.urlsplit(target.url)
    if parsed.scheme not in ("http", "https"):
        raise ConfigError(f"webhook URL scheme {parsed.scheme!r} is not http or https", field="notify")
    request = urllib.request.Request(target.url, data=body, method="POST", headers={  # noqa: S310 - scheme checked
        "Content-Type": "application/json", "User-Agent": "carrierfeeds-notify", **target.headers})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status = response.status
    except OSError as exc:
        # The host only: a URL may carry a token in its path or query.
        raise TransientError(f"webhook at {parsed.hostname} did not accept the notice: "
                             f"{type(exc).__name__}") from None
    log.info("%s: %s notice sent to %s (HTTP %s)", sender, event, parsed.hostname, status)
