"""Failure notifications through Airflow's notifier mechanism: a PHI-free JSON POST to a webhook.

The payload names the feed, the DAG, run and task, the stage, our error code and our message (PHI-free
by construction, see :mod:`carrierfeeds.errors`). Any other exception is reported by its type name only:
its text may hold anything. The URL comes from the feed's ``notify`` block, directly or through an
Airflow connection (HTTP provider conventions: ``schema`` is the scheme, ``host``, ``port``, extra
``endpoint`` for the path; ``login``/``password`` become basic auth), so a secret token never sits in
YAML. The housekeeping DAG, which has no feed file, names its connection in an Airflow Variable read
when a notice is sent; with the Variable unset it logs that no notice went out.
"""

from __future__ import annotations

import base64
import json
import logging
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.bases.notifier import BaseNotifier

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
    name = type(exception).__name__
    if "Timeout" in name:
        return None, TIMEOUT_CODE, f"{name}: the task ran past its execution timeout"
    return None, INTERNAL_CODE, name


def _url_from_connection(connection_id: str) -> tuple[str, dict[str, str]]:
    conn = BaseHook.get_connection(connection_id)
    extra = conn.extra_dejson or {}
    host = str(conn.host or "")
    if not host:
        raise ConfigError("webhook connection has no host", file=f"airflow connection {connection_id}",
                          field="host")
    if "://" in host:
        base = host.rstrip("/")
    else:
        scheme = conn.schema or "https"
        base = f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")
    endpoint = str(extra.get("endpoint", "")).lstrip("/")
    headers: dict[str, str] = {}
    if conn.login:
        token = base64.b64encode(f"{conn.login}:{conn.password or ''}".encode()).decode("ascii")
        headers["Authorization"] = f"Basic {token}"
    return (f"{base}/{endpoint}" if endpoint else base), headers


class WebhookNotifier(BaseNotifier):
    """POST a PHI-free JSON failure notice for one feed; usable as any ``on_*_callback``.

    Exactly one of ``url``, ``connection_id`` and ``connection_variable`` (an Airflow Variable holding
    a connection id) is given. The URL is resolved when a notice is sent, in the process that sends it,
    so DAG parsing never reads a connection or a Variable. ``feed_id`` is None for the housekeeping DAG.
    """

    template_fields = ()

    def __init__(self, *, feed_id: str | None, url: str | None = None, connection_id: str | None = None,
                 connection_variable: str | None = None, event: str = "failure", timeout: float = 10.0) -> None:
        super().__init__()
        if sum(v is not None for v in (url, connection_id, connection_variable)) != 1:
            raise ConfigError("a webhook notifier needs exactly one of url, connection_id and "
                              "connection_variable", field="notify")
        self.feed_id = feed_id
        self.url = url
        self.connection_id = connection_id
        self.connection_variable = connection_variable
        self.event = event
        self.timeout = timeout

    def payload(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """What is sent: ids, stage, code and our message; never a value from the data."""
        ti = context.get("ti") or context.get("task_instance")
        dag_run = context.get("dag_run")
        stage, code, message = failure_summary(context.get("exception"))
        task_id = getattr(ti, "task_id", None)
        logical = context.get("logical_date")
        return {
            "event": self.event,
            "feed_id": self.feed_id,
            "dag_id": getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", None),
            "run_id": context.get("run_id") or getattr(dag_run, "run_id", None),
            "task_id": task_id,
            "try_number": getattr(ti, "try_number", None),
            "stage": stage or task_id,
            "error_code": code,
            "message": message,
            "logical_date": logical.isoformat() if logical is not None else None,
        }

    def resolve(self) -> tuple[str, dict[str, str]] | None:
        """URL and headers to POST to; None when the Variable naming the connection is unset."""
        if self.connection_variable is not None:
            from airflow.sdk import Variable

            connection_id = Variable.get(self.connection_variable, default=None)
            return _url_from_connection(str(connection_id).strip()) if connection_id else None
        if self.connection_id is not None:
            return _url_from_connection(self.connection_id)
        return str(self.url), {}

    def notify(self, context: Mapping[str, Any]) -> None:
        body = json.dumps(self.payload(context), sort_keys=True).encode("utf-8")
        target = self.resolve()
        if target is None:
            log.warning("%s notice not sent: Airflow Variable %s names no webhook connection", self.event,
                        self.connection_variable)
            return
        url, headers = target
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https"):
            raise ConfigError(f"webhook URL scheme {parsed.scheme!r} is not http or https", field="notify")
        request = urllib.request.Request(url, data=body, method="POST", headers={  # noqa: S310 - scheme checked
            "Content-Type": "application/json", "User-Agent": "carrierfeeds-notify", **headers})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                status = response.status
        except OSError as exc:
            # The host only: a URL may carry a token in its path or query.
            raise TransientError(f"webhook at {parsed.hostname} did not accept the notice: "
                                 f"{type(exc).__name__}") from None
        log.info("%s: %s notice sent to %s (HTTP %s)", self.feed_id or "housekeeping", self.event, parsed.hostname,
                 status)
