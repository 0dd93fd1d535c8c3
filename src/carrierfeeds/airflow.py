"""The only module that imports Airflow: one DAG per feed file, its stages grouped into tasks.

Tasks pass references (feed id and interval) and counts through XCom, never data. Each task opens the
run for its (feed, interval) and calls its stage functions in turn (:data:`TASK_DESIGNS`: one task per
feed by default), so a retried or cleared task finds the work earlier tasks and tries left in the
staging folder and the ledger; a retry skips the stages of its task that already succeeded in the open
run and records them as skipped. Every stage still records its own start and outcome in the ledger, runs
inside a log group of its own in the task log and has its outcome in the task's XCom.
Faults we know to be permanent (bad config, rejected census, refused key or host, failed conformance)
fail the task without retries. A feed with a ``notify`` block gets a PHI-free webhook notice when a
task fails for good. One housekeeping DAG polls carriers' acknowledgments, runs the retention purge
and verifies the ledger's hash chain; its failures go to the webhook connection the Airflow Variable
``carrierfeeds_housekeeping_webhook`` names.

Credentials reach the library through one :class:`AirflowConnections` (connections and Variables), the
Airflow counterpart of the CLI's :class:`~carrierfeeds.credentials.KeysDirConnections`.

Why one module: it is the project's single Airflow boundary (the layer contract in pyproject.toml keeps
every other module free of Airflow imports), so the feed DAGs, the housekeeping DAG, the connections
adapter and the failure notifier stay together where that boundary is visible at a glance.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from airflow.sdk import DAG, BaseHook, Param, get_parsing_context, task
from airflow.sdk.bases.notifier import BaseNotifier
from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException, AirflowSkipException

from carrierfeeds import run
from carrierfeeds.config import Feed, load_feed
from carrierfeeds.credentials import (
    SftpEndpoint,
    SmtpTarget,
    WebhookTarget,
    known_hosts_names,
    smtp_from_fields,
    smtp_not_defined,
    webhook_from_fields,
    webhook_not_defined,
)
from carrierfeeds.errors import CarrierFeedsError, ConfigError
from carrierfeeds.hardening import disable_core_dumps
from carrierfeeds.outcomes import NOTHING_NEW, RunStatus, status_for
from carrierfeeds.run.context import Stage
from carrierfeeds.run.delivery import make_transport
from carrierfeeds.settings import Settings, dag_id_for, feed_paths, load_bundle, open_ledger, private_dir

log = logging.getLogger(__name__)

HOUSEKEEPING_DAG_ID = "carrierfeeds_housekeeping"
HOUSEKEEPING_SCHEDULE = "30 3 * * *"
#: A task's execution timeout (the stages it runs together).
STAGE_TIMEOUT = timedelta(minutes=60)
HOUSEKEEPING_TIMEOUT = timedelta(minutes=30)
RETRIES = 3
#: How a feed's stages are grouped into Airflow tasks: task id -> the stages it runs in turn. Fewer
#: tasks pay Airflow's fixed cost per task (a process, the DAG's parse, imports, a heartbeat, the
#: scheduler's hand-over to the next task) fewer times; each still retries on its own and skips its
#: stages that already succeeded. "feed" (the default): one task runs every stage, each in a log group
#: of its own, its XCom holding every stage's outcome. "three": the census in, the file made and gated,
#: the file out, a box each in the UI; with many feeds on the LocalExecutor it needs a small default
#: pool (parallelism + 2) or every feed's first task runs before any feed's last. "stages": one task per
#: stage. Why "feed" is the default: benchmarks/README.md ("The nightly window: task designs").
TASK_DESIGNS: dict[str, tuple[tuple[str, tuple[Stage, ...]], ...]] = {
    "three": (("intake", ("stage_census", "validate")), ("build", ("build", "conformance")),
              ("deliver", ("encrypt", "deliver", "confirm"))),
    "feed": (("run", tuple(run.STAGES)),),
    "stages": tuple((stage, (stage,)) for stage in run.STAGES),
}
DEFAULT_TASK_DESIGN = "feed"
#: The environment variable that picks a design from TASK_DESIGNS (read where the DAGs are built).
TASK_DESIGN_ENV = "CARRIERFEEDS_AIRFLOW_TASKS"
#: The staging store's key (base64 of 32 bytes), shared by every worker through Variables or a secrets backend.
#: Its name holds "secret", so Airflow's secrets masker hides the value in task logs, the UI and the API.
STAGING_KEY_VARIABLE = "carrierfeeds_staging_secret_key"
#: The Variable's earlier name, which Airflow does not treat as sensitive: still read (the value then
#: masked by hand), with a DeprecationWarning, when the new name is not set.
LEGACY_STAGING_KEY_VARIABLE = "carrierfeeds_staging_key"
#: The id of the HTTP connection the housekeeping DAG's failure notices go to (unset: none are sent).
HOUSEKEEPING_WEBHOOK_VARIABLE = "carrierfeeds_housekeeping_webhook"


class FeedStageFailed(AirflowFailException):
    """A stage failed for good: no retries; carries our PHI-free code and message for notifiers."""

    def __init__(self, stage: str, code: str, message: str) -> None:
        super().__init__(f"{stage}: {code}: {message}")
        self.carrierfeeds_stage = stage
        self.carrierfeeds_code = code
        self.carrierfeeds_message = message


def _utcnow() -> datetime:
    return datetime.now(UTC)


def interval_day(feed: Feed, context: Any) -> date:
    """The feed day a DAG run covers: its logical date in the feed's time zone (never the clock)."""
    moment = context.get("logical_date") or context["dag_run"].run_after
    return moment.astimezone(ZoneInfo(feed.timezone)).date()  # type: ignore[no-any-return]


def sftp_endpoint_from_connection(connection_id: str, scratch: Path) -> SftpEndpoint:
    """Build an SftpEndpoint from an Airflow connection (SFTP provider conventions).

    host, port, login; extras: ``key_file`` (path) or ``private_key`` (PEM text, written 0600 into the
    run's private folder), and the pinned host key as ``host_key`` ("ssh-ed25519 AAAA...") or
    ``known_hosts`` (known_hosts text). ``no_host_key_check`` is refused: we fail closed.
    """
    from carrierfeeds.credentials import check_private_key_file

    conn = BaseHook.get_connection(connection_id)
    extra = conn.extra_dejson
    if str(extra.get("no_host_key_check", "false")).lower() == "true":
        raise ConfigError("no_host_key_check is not allowed: pin the carrier's host key",
                          file=f"airflow connection {connection_id}", field="extra.no_host_key_check")
    if not conn.host or not conn.login:
        raise ConfigError("the connection needs a host and a login", file=f"airflow connection {connection_id}",
                          field="host" if not conn.host else "login")
    port = int(conn.port or 22)
    host = conn.host if port == 22 else f"[{conn.host}]:{port}"
    if extra.get("known_hosts"):
        known_hosts = str(extra["known_hosts"])
        if not known_hosts_names(known_hosts, host):
            # RejectPolicy would refuse it at connect time anyway; say so now, naming the field.
            raise ConfigError(f"known_hosts pins no key for {host}", file=f"airflow connection {connection_id}",
                              field="extra.known_hosts")
    elif extra.get("host_key"):
        known_hosts = f"{host} {extra['host_key']}\n"
    else:
        raise ConfigError("no pinned host key (extra host_key or known_hosts)",
                          file=f"airflow connection {connection_id}", field="extra.host_key")
    source = f"airflow connection {connection_id}"
    if extra.get("key_file"):
        key_path = Path(extra["key_file"])
    elif extra.get("private_key"):
        fd, name = tempfile.mkstemp(prefix=".sftp-key-", dir=scratch)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(str(extra["private_key"]))
        key_path = Path(name)
    else:
        raise ConfigError("no client key (extra key_file or private_key)", file=source, field="extra.key_file")
    check_private_key_file(key_path, source=source, field="extra.key_file")
    timeouts = {name: float(extra[name]) for name in
                ("connect_timeout", "banner_timeout", "auth_timeout", "op_timeout") if name in extra}
    return SftpEndpoint(host=conn.host, port=port, username=conn.login, private_key_path=key_path,
                        known_hosts=known_hosts, **timeouts)


def sql_url_from_connection(connection_id: str) -> str:
    """The SQLAlchemy URL of an Airflow connection for a SQL census source.

    Built from the connection's fields (conn_type, host, port, login, password, schema = the database),
    with the SQLAlchemy driver for its type (``postgres`` -> ``postgresql+psycopg``); the extra
    ``sqlalchemy_scheme`` overrides the driver. For SQLite, host (or schema) is the database file.
    """
    import sqlalchemy as sa

    conn = BaseHook.get_connection(connection_id)
    source = f"airflow connection {connection_id}"
    conn_type = str(conn.conn_type or "").lower()
    scheme = str(conn.extra_dejson.get("sqlalchemy_scheme") or SQL_DRIVERS.get(conn_type, conn_type))
    if not scheme:
        raise ConfigError("the connection has no type", file=source, field="conn_type")
    if scheme.startswith("sqlite"):
        database = conn.host or conn.schema
        if not database:
            raise ConfigError("a SQLite connection needs the database file as host", file=source, field="host")
        return sa.URL.create(scheme, database=database).render_as_string(hide_password=False)
    if not conn.host:
        raise ConfigError("the connection needs a host", file=source, field="host")
    url = sa.URL.create(scheme, username=conn.login or None, password=conn.password or None, host=conn.host,
                        port=int(conn.port) if conn.port else None, database=conn.schema or None)
    return url.render_as_string(hide_password=False)


#: Airflow connection types and the SQLAlchemy driver a SQL census source uses for them.
#: Others: the extra ``sqlalchemy_scheme``, or the connection type used as the scheme as it is.
SQL_DRIVERS = {"postgres": "postgresql+psycopg", "postgresql": "postgresql+psycopg", "sqlite": "sqlite"}


@dataclass(frozen=True)
class AirflowConnections:
    """:class:`~carrierfeeds.credentials.Connections` from Airflow connections and Variables, looked up
    when asked (never at DAG parse). ``scratch`` gives the private folder a PEM key from a connection's
    extra is written to (0600); without it such a connection is refused."""

    scratch: Callable[[], Path] | None = None

    def sftp_endpoint(self, connection_id: str) -> SftpEndpoint:
        if self.scratch is None:
            raise ConfigError("no private folder for the connection's key", file=f"airflow connection "
                              f"{connection_id}", field="extra.private_key")
        return sftp_endpoint_from_connection(connection_id, self.scratch())

    def sql_url(self, connection_id: str) -> str:
        return sql_url_from_connection(connection_id)

    def webhook(self, connection_id: str) -> WebhookTarget:
        """HTTP provider conventions: ``schema`` is the scheme, ``host``, ``port``, extra ``endpoint`` for
        the path; ``login``/``password`` become basic auth."""
        try:
            conn = BaseHook.get_connection(connection_id)
        except AirflowNotFoundException:
            raise webhook_not_defined(connection_id) from None
        extra = conn.extra_dejson or {}
        return webhook_from_fields(connection_id, host=conn.host, schema=conn.schema, port=conn.port,
                                   login=conn.login, password=conn.password, endpoint=extra.get("endpoint"))

    def smtp(self, connection_id: str) -> SmtpTarget:
        """Host, port, login, password; extra ``security`` (starttls, ssl, none), else the SMTP provider's
        ``disable_ssl``/``disable_tls`` (SSL unless disabled, then STARTTLS unless disabled)."""
        try:
            conn = BaseHook.get_connection(connection_id)
        except AirflowNotFoundException:
            raise smtp_not_defined(connection_id) from None
        extra = conn.extra_dejson or {}
        security = extra.get("security") or ("ssl" if not extra.get("disable_ssl") else
                                             "starttls" if not extra.get("disable_tls") else "none")
        return smtp_from_fields(connection_id, host=conn.host, port=conn.port, login=conn.login,
                                password=conn.password, security=str(security),
                                source=f"airflow connection {connection_id}")

    def secret(self, name: str) -> str | None:
        from airflow.sdk import Variable

        value = Variable.get(name, default=None)
        return None if value is None else str(value)


def staging_store(settings: Settings, url: str | Path | None = None) -> Any:
    """The staging store a task uses: ``url`` (default the local staging folder), key from the Airflow
    Variable ``carrierfeeds_staging_secret_key`` (or, deprecated, ``carrierfeeds_staging_key``), else
    ``<keys_dir>/staging.key`` (made on first use).

    A store workers share by URL needs the Variable: a key file made on one machine would not be on the
    others, so a remote URL without it is refused rather than given a key only this worker knows.
    """
    from airflow.sdk import Variable

    from carrierfeeds.staging import KEY_FILE_NAME, StagingKey, StagingStore

    name = STAGING_KEY_VARIABLE
    text = Variable.get(name, default=None)
    if not text:
        text = Variable.get(LEGACY_STAGING_KEY_VARIABLE, default=None)
        if text:
            from airflow.sdk.log import mask_secret

            name = LEGACY_STAGING_KEY_VARIABLE
            mask_secret(str(text))  # Airflow masks a Variable by its name; this one's name is not sensitive
            warnings.warn(f"the Airflow Variable {LEGACY_STAGING_KEY_VARIABLE} is deprecated: rename it "
                          f"{STAGING_KEY_VARIABLE}, a name Airflow masks", DeprecationWarning, stacklevel=2)
            log.warning("staging key read from the deprecated Variable %s; rename it %s",
                        LEGACY_STAGING_KEY_VARIABLE, STAGING_KEY_VARIABLE)
    target = url if url is not None else settings.staging_dir
    if text:
        return StagingStore(target, StagingKey.from_text(str(text), source=f"airflow variable {name}"))
    import fsspec

    fs, _ = fsspec.core.url_to_fs(str(target))
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if "file" not in protocols and "local" not in protocols:
        raise ConfigError(f"a shared staging store needs the Airflow Variable {STAGING_KEY_VARIABLE}",
                          field=STAGING_KEY_VARIABLE)
    return StagingStore(target, StagingKey.load_or_create(settings.resolved_keys_dir / KEY_FILE_NAME))


def retries_left(context: Any) -> bool:
    """Whether Airflow will run this task again if it fails now (its own rule: retries and max_tries)."""
    ti = context["ti"]
    max_tries = getattr(ti, "max_tries", None)
    if max_tries is None:
        max_tries = getattr(getattr(ti, "task", None), "retries", RETRIES)
    return bool(max_tries) and int(ti.try_number) <= int(max_tries or 0)


def _finished_stages(ctx: run.RunContext) -> set[str]:
    """The stages that succeeded in the open run (since its last recorded end) and have not failed or
    started again since."""
    last: dict[str, str] = {}
    for event in ctx.ledger.run_events(ctx.run_id):
        if event.kind == "run_finished":
            last.clear()
        elif event.kind == "stage" and event.stage is not None:
            last[event.stage] = event.status
    return {stage for stage, status in last.items() if status == "succeeded"}


def _run_stages(feed_id: str, task_id: str, stages: tuple[Stage, ...], context: Any) -> dict[str, Any]:
    """Run ``stages`` in turn for the DAG run's (feed, day). A retry of a task of several stages skips
    those that already succeeded in the open run (each recorded as ``skipped``); a permanent failure of
    any of them ends the run, named by that stage."""
    disable_core_dumps()  # a task process holds the census, the staging key and gpg's passphrase
    settings = Settings()
    # Ops' switches for a triggered run (booleans only: nothing from the census ever goes into params).
    params = context.get("params") or {}
    ctx: run.RunContext | None = None
    stage: str = stages[0]
    try:
        # Inside the try: a broken mapping, schema or suite, or a missing staging key, is a ConfigError
        # like any other and fails at once, named by its code, not retried.
        bundle = load_bundle(settings, feed_id)
        ref = run.RunRef.for_day(feed_id, interval_day(bundle.feed, context))
        store = staging_store(settings, settings.staging_url)
        # Connections from Airflow; a PEM key from a connection's extra goes into the run's private folder.
        connections = AirflowConnections(scratch=lambda: private_dir(run.scratch_dir_for(settings, ref)))
        ctx = run.open_run(settings, ref, clock=_utcnow, actor=f"airflow:{context['run_id']}",
                           bundle=bundle, store=store, ephemeral=True, connections=connections)
        done = _finished_stages(ctx) if int(context["ti"].try_number) > 1 else set()
        outcomes: dict[str, dict[str, Any]] = {}
        for stage in stages:
            outcomes[stage] = _run_stage_in_log_group(ctx, stage, params, done)
        # The task's XCom: what each stage did, PHI-free (statuses, counts, ids, hashes, seconds).
        return {"feed_id": feed_id, "run_id": ctx.run_id, "interval_start": ref.interval_start.isoformat(),
                "task_id": task_id, "stages": outcomes}
    except CarrierFeedsError as exc:
        if exc.retriable and retries_left(context):
            raise  # Airflow retries with backoff; the run stays open
        if ctx is not None:
            run.end_run(ctx, exc)
            run.anchor_run(ctx)
        if status_for(exc) in NOTHING_NEW:
            # No changes, or no new census: the later stages are skipped, not failed.
            raise AirflowSkipException(f"{stage}: {exc.code}: {exc.message}") from None
        # Our messages are PHI-free by construction; they are what ops see in the task log.
        raise FeedStageFailed(stage, exc.code, exc.message) from None
    except BaseException as exc:
        # Not ours (a bug, a library's own exception) or AirflowTaskTimeout: Airflow retries it, but
        # after the last try nothing else would close the run or clear its staged member data.
        if ctx is not None:
            if retries_left(context):
                run.wipe_scratch(ctx)  # the retry re-reads the staging store; no plaintext waits for it
            else:
                _abandon_run(ctx, stage, exc)
        # The failure notice names the stage, not only the task (one task may run every stage).
        exc.carrierfeeds_stage = stage  # type: ignore[attr-defined]
        raise
    finally:
        if ctx is not None:
            ctx.ledger.close()


def _run_stage(feed_id: str, stage: Stage, context: Any) -> dict[str, Any]:
    """One stage as a task of its own (the "stages" design)."""
    return _run_stages(feed_id, stage, (stage,), context)


#: The task log's collapsible sections: Airflow's UI folds the lines between these markers under the
#: group's name (the convention of its own "Pre Execute" group), so a task running several stages reads
#: as one section per stage.
LOG_GROUP = "::group::"
LOG_GROUP_END = "::endgroup::"


def _run_stage_in_log_group(ctx: run.RunContext, stage: Stage, params: Mapping[str, Any],
                            done: set[str]) -> dict[str, Any]:
    """Run one stage of a task inside its own log group and return its outcome for the task's XCom.

    The outcome line is logged after the group ends, so the folded log still shows every stage's status
    and seconds. A stage that succeeded in an earlier try is recorded ``skipped`` and not run again.
    """
    if stage in done:
        ctx.ledger.record_stage(ctx.run_id, stage, "skipped", now=ctx.now(), detail={"reason": "succeeded_earlier"})
        log.info("stage %s skipped: succeeded in an earlier try of run %s", stage, ctx.run_id)
        return {"status": "skipped", "reason": "succeeded_earlier"}
    with stage_log_group(stage, ctx.run_id) as timing:
        result = STAGE_CALLS[stage](ctx, params)
    return {"status": "succeeded", "seconds": timing["seconds"], "result": result}


@contextlib.contextmanager
def stage_log_group(stage: str, run_id: str) -> Iterator[dict[str, float]]:
    """The lines logged inside the block folded under ``stage`` in the task log, then one line with the
    stage's outcome (our error code, or an exception's type: never its text) and seconds, which the
    yielded dict also gets."""
    log.info("%s%s", LOG_GROUP, stage)  # the group's name in the UI: the stage's
    started = time.monotonic()
    timing = {"seconds": 0.0}
    outcome = "failed"
    try:
        yield timing
        outcome = "succeeded"
    except CarrierFeedsError as exc:
        # Our codes only; the message stays with the exception (and the ledger), as before.
        outcome = f"skipped ({exc.code})" if status_for(exc) in NOTHING_NEW else f"failed ({exc.code})"
        raise
    except BaseException as exc:
        outcome = f"failed ({type(exc).__name__})"  # by type only: its text may hold anything
        raise
    finally:
        timing["seconds"] = round(time.monotonic() - started, 3)
        log.info(LOG_GROUP_END)
        log.info("stage %s %s in %.1f s (run %s)", stage, outcome, timing["seconds"], run_id)


def _abandon_run(ctx: run.RunContext, stage: str, exc: BaseException) -> None:
    """The last try failed with something not ours: record the run as failed and clear its plaintext.

    Like :func:`run.end_run` for a permanent error: the staging store keeps only the PHI-free state
    and the gpg ciphertext. The exception is named by type only: its text may hold anything.
    """
    from carrierfeeds.notify import TIMEOUT_CODE

    name = type(exc).__name__
    code = TIMEOUT_CODE if "Timeout" in name else "internal"
    ctx.ledger.finish_run(ctx.run_id, RunStatus.FAILED, now=ctx.now(), error_code=code, message=f"{stage}: {name}")
    removed = run.purge_plaintext(ctx)
    log.error("feed %s run %s: %s failed on its last try (%s); run closed, %d staged artifact(s) removed",
              ctx.feed_id, ctx.run_id, stage, code, removed)


def _confirm(ctx: run.RunContext, params: Mapping[str, Any]) -> dict[str, Any]:
    result = run.confirm(ctx).as_dict()
    run.anchor_run(ctx)  # the run's last stage: its ledger head is anchored outside the database
    return result


#: What each task calls, with ops' switches from the DAG run's params (booleans only).
STAGE_CALLS: dict[str, Callable[[run.RunContext, Mapping[str, Any]], dict[str, Any]]] = {
    "stage_census": lambda ctx, params: run.stage_census(ctx, force=bool(params.get("force_census", False))),
    "validate": lambda ctx, params: run.validate(ctx),
    "build": lambda ctx, params: run.build(ctx, full_file=bool(params.get("full_file", False))),
    "conformance": lambda ctx, params: run.conformance(ctx),
    "encrypt": lambda ctx, params: run.encrypt(ctx),
    # The transport is made first, so a bad connection fails the task before its intent row is written.
    "deliver": lambda ctx, params: run.deliver(ctx, transport=make_transport(ctx)),
    "confirm": _confirm,
}


class WebhookNotifier(BaseNotifier):
    """POST a PHI-free JSON failure notice (:func:`carrierfeeds.notify.failure_payload`); usable as any
    ``on_*_callback``.

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
        from carrierfeeds.notify import failure_payload

        return failure_payload(context, feed_id=self.feed_id, event=self.event)

    def resolve(self) -> WebhookTarget | None:
        """Where to POST; None when the Variable naming the connection is unset."""
        from carrierfeeds.notify import webhook_target

        connections = AirflowConnections()
        if self.connection_variable is not None:
            connection_id = connections.secret(self.connection_variable)
            return connections.webhook(connection_id.strip()) if connection_id else None
        return webhook_target(connections, url=self.url, connection_id=self.connection_id)

    def notify(self, context: Mapping[str, Any]) -> None:
        from carrierfeeds.notify import send_webhook

        payload = self.payload(context)
        target = self.resolve()
        if target is None:
            log.warning("%s notice not sent: Airflow Variable %s names no webhook connection", self.event,
                        self.connection_variable)
            return
        send_webhook(target, payload, sender=self.feed_id or "housekeeping", event=self.event, timeout=self.timeout)


def notifiers_for(feed: Feed) -> list[Any]:
    """The feed's failure notifiers (empty without a ``notify`` block)."""
    if feed.notify is None:
        return []
    return [WebhookNotifier(feed_id=feed.feed_id, url=feed.notify.webhook_url,
                            connection_id=feed.notify.webhook_connection_id)]


def task_defaults(on_failure: Any) -> dict[str, Any]:
    """Every feed task's retries, backoff and timeout (a feed's and an aggregated file's DAG alike); later
    stages weighted first, so a pool lets a started feed finish before the next one starts."""
    return {
        "retries": RETRIES,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=30),
        "execution_timeout": STAGE_TIMEOUT,
        "weight_rule": "upstream",
        **({"on_failure_callback": on_failure} if on_failure else {}),
    }


def build_feed_dag(feed: Feed, design: str | None = None) -> DAG:
    """One DAG for one feed: schedule and time zone from the feed, its stages grouped into tasks as
    ``design`` (a key of :data:`TASK_DESIGNS`; default :func:`task_design`) says.

    ``weight_rule="upstream"`` (designs of several tasks): a later task of a feed outranks an earlier
    one of any feed, so when many feeds start at once the slots go to finishing feeds first; with the
    LocalExecutor only once a pool keeps its queue short (it runs what it was handed first in, first out).
    """
    import pendulum

    design = task_design(design)
    on_failure = notifiers_for(feed)

    with DAG(
        dag_id=dag_id_for(feed.feed_id),
        description=f"{feed.employer.name} to {feed.carrier.name}",
        doc_md=feed.description or None,
        schedule=feed.schedule,
        start_date=pendulum.datetime(2024, 1, 1, tz=feed.timezone),
        catchup=False,
        max_active_runs=1,
        tags=[f"employer:{feed.employer.id}", f"carrier:{feed.carrier.id}", "carrierfeeds"],
        params={
            "force_census": Param(False, type="boolean",
                                  description="process the newest census although it was already processed"),
            "full_file": Param(False, type="boolean",
                               description="changes-mode feeds: send the full audit file (030) this time"),
        },
        default_args=task_defaults(on_failure),
    ) as dag:
        previous = None
        for task_id, stages in TASK_DESIGNS[design]:
            op = task(task_id=task_id)(_bind(feed.feed_id, task_id, stages))()
            if previous is not None:
                previous >> op
            previous = op
    return dag


def _bind(feed_id: str, task_id: str, stages: tuple[Stage, ...]) -> Callable[..., dict[str, Any]]:
    def run_stages(**context: Any) -> dict[str, Any]:
        return _run_stages(feed_id, task_id, stages, context)

    run_stages.__name__ = task_id
    run_stages.__doc__ = f"Stages {', '.join(stages)} of feed {feed_id!r}."
    return run_stages


def design_tasks(design: str | None = None) -> dict[str, tuple[Stage, ...]]:
    """A design's task ids in the order they run, each with the stages it runs in turn (``design``: a key
    of :data:`TASK_DESIGNS`, default :func:`task_design`)."""
    return dict(TASK_DESIGNS[task_design(design)])


def task_for_stage(stage: Stage, design: str | None = None) -> str:
    """The id of the task that runs ``stage`` in ``design`` (what to look at for that stage in the UI)."""
    for task_id, stages in TASK_DESIGNS[task_design(design)]:
        if stage in stages:
            return task_id
    raise ValueError(f"no task runs stage {stage!r}")


def task_design(name: str | None = None) -> str:
    """The task design to build (``name``, else the environment's :data:`TASK_DESIGN_ENV`, else the
    default); an unknown name is a ConfigError naming the variable."""
    chosen = name if name is not None else os.environ.get(TASK_DESIGN_ENV) or DEFAULT_TASK_DESIGN
    if chosen not in TASK_DESIGNS:
        raise ConfigError(f"unknown Airflow task design {chosen!r} (one of {', '.join(TASK_DESIGNS)})",
                          field=TASK_DESIGN_ENV)
    return chosen


def build_dags(settings: Settings | None = None) -> dict[str, DAG]:
    """Every feed's DAG (or only the one a task run needs), keyed by dag id, for a dags/ module.

    A feed file that does not load is logged by name and skipped, so one typo cannot hide every other
    feed; ``carrierfeeds feeds check`` and the DagBag test report it in full.
    """
    settings = settings or Settings()
    wanted = get_parsing_context().dag_id
    dags: dict[str, DAG] = {}
    if wanted is None or wanted == HOUSEKEEPING_DAG_ID:
        dags[HOUSEKEEPING_DAG_ID] = build_housekeeping_dag()
    aggregated = aggregated_feeds(settings)
    for path in feed_paths(settings):
        if wanted and wanted != dag_id_for(path.stem):
            continue
        if path.stem in aggregated:
            continue  # one employer of a carrier's aggregated file: that file's DAG runs it
        try:
            feed = load_feed(path)
        except ConfigError as exc:
            log.error("skipping feed file %s: %s", path.name, exc.message)
            continue
        dags[dag_id_for(feed.feed_id)] = build_feed_dag(feed)
    dags.update(build_aggregate_dags(settings, aggregated, wanted))
    return dags


# ------------------------------------------------------------------------------------ housekeeping
def _housekeeping_ledger(task_id: str, settings: Settings) -> Any:
    """The ledger for a housekeeping task: an unreachable server is raised for Airflow to retry, a bad
    URL or data dir fails the task at once, named by its setting."""
    try:
        return open_ledger(settings)
    except CarrierFeedsError as exc:
        if exc.retriable:
            raise
        raise FeedStageFailed(task_id, exc.code, exc.message) from None


def _poll_acknowledgments(**context: Any) -> dict[str, Any]:
    disable_core_dumps()
    from carrierfeeds.acknowledgments import poll_all

    settings = Settings()
    ledger = _housekeeping_ledger("poll_acknowledgments", settings)
    try:
        # SFTP credentials for the carriers' outboxes come from Airflow connections, like deliveries.
        with tempfile.TemporaryDirectory(prefix="cf-acks-") as scratch:
            counts: dict[str, Any] = poll_all(
                settings, ledger, now=_utcnow(),
                connections=AirflowConnections(scratch=lambda: Path(scratch)))
    except CarrierFeedsError as exc:
        if exc.retriable:
            raise
        raise FeedStageFailed("poll_acknowledgments", exc.code, exc.message) from None
    finally:
        ledger.close()
    return counts


def _retention_purge(**context: Any) -> dict[str, Any]:
    disable_core_dumps()
    from carrierfeeds.retention import purge_with_settings

    settings = Settings()
    as_of = context["dag_run"].run_after.astimezone(UTC).date()
    ledger = _housekeeping_ledger("retention_purge", settings)
    try:
        # Retention periods and the staging store come from the settings, as for `carrierfeeds purge`.
        report = purge_with_settings(settings, ledger, as_of=as_of, now=_utcnow(),
                                     actor=f"airflow:{context['run_id']}")
    except CarrierFeedsError as exc:
        if exc.retriable:
            raise
        raise FeedStageFailed("retention_purge", exc.code, exc.message) from None
    finally:
        ledger.close()
    summary = report.as_dict()
    # XCom gets counts only; the per-folder list stays in the ledger's audit events.
    result: dict[str, Any] = json.loads(json.dumps({
        "as_of": summary["as_of"], "ledger": summary["ledger"],
        "folders_purged": sum(1 for i in summary["employee_data"] if i["action"] == "purge"),
        "folders_kept": sum(1 for i in summary["employee_data"] if i["action"] != "purge"),
    }, default=str))
    return result


def _verify_ledger_chain(**context: Any) -> dict[str, Any]:
    disable_core_dumps()
    from carrierfeeds.ledger.anchor import AnchorLog, verify_ledger

    settings = Settings()
    ledger = _housekeeping_ledger("verify_ledger_chain", settings)
    try:
        # Checks the chain against every anchor, then anchors the head as it is now.
        result = verify_ledger(ledger, AnchorLog.for_settings(settings), now=_utcnow(),
                               reason=f"airflow:{context['run_id']}")
    except CarrierFeedsError as exc:
        raise FeedStageFailed("verify_ledger_chain", exc.code, exc.message) from None
    finally:
        ledger.close()
    verdict = result.chain
    if not verdict.ok:
        broken = verdict.first_broken.as_dict() if verdict.first_broken else {}
        raise FeedStageFailed("verify_ledger_chain", "ledger_chain_broken",
                              f"ledger chain broken at {json.dumps(broken, sort_keys=True)}")
    if not result.anchors.ok:
        raise FeedStageFailed("verify_ledger_chain", "ledger_anchor_mismatch", str(result.anchors))
    return {"rows_checked": verdict.rows_checked, "head_seq": verdict.head_seq,
            "anchors": result.anchors.anchors}


def _check_census_arrivals(**context: Any) -> dict[str, Any]:
    from carrierfeeds.ops.arrival import check_all_arrivals

    settings = Settings()
    ledger = _housekeeping_ledger("check_census_arrivals", settings)
    try:
        # Catches the feed whose run never came to say no_new_census (paused, failed before the census).
        checks = check_all_arrivals(settings, ledger, now=_utcnow(), connections=AirflowConnections())
    finally:
        ledger.close()
    # Counts only; each flagged feed is in the ledger (census_late, census_missing, census_arrived_late).
    return {"checked": len(checks), "flagged": sum(c.verdict.state in ("late", "missing", "arrived_late")
                                                   for c in checks)}


# ------------------------------------------------------------------------------ reconcile returns
def _reconcile_returns(**context: Any) -> dict[str, Any]:
    """Collect and compare every feed's new return files: the function `carrierfeeds reconcile collect` calls."""
    disable_core_dumps()
    from carrierfeeds.reconcile.collect import collect_all

    settings = Settings()
    ledger = _housekeeping_ledger("reconcile_returns", settings)
    try:
        with tempfile.TemporaryDirectory(prefix="cf-returns-") as scratch:
            return collect_all(settings, ledger, clock=_utcnow, actor=f"airflow:{context['run_id']}",
                               connections=AirflowConnections(scratch=lambda: Path(scratch)))
    except CarrierFeedsError as exc:
        if exc.retriable:
            raise
        raise FeedStageFailed("reconcile_returns", exc.code, exc.message) from None
    finally:
        ledger.close()


# --------------------------------------------------------------------- a carrier aggregator's file
# One DAG per aggregation mapping (dag id ``feed__<mapping id>``, like the aggregate's run's feed id),
# none for its employers' feeds. One task runs the aggregate's stages in turn (run.aggregate_run); a
# retry skips the aggregate's stages that succeeded in the open run, and delivery is exactly once by
# itself. Schedule and time zone are the employers' (one, checked by run.aggregate.aggregate_bundles).
AGGREGATE_TASK_ID = "aggregate"


def aggregated_feeds(settings: Settings) -> dict[str, str]:
    """Feed file stem -> mapping id, for every feed whose mapping is an aggregation (a feed or mapping
    that does not load is left to the feed's own DAG, which reports it as before)."""
    from carrierfeeds.config import load_mapping

    aggregations: dict[str, bool] = {}
    out: dict[str, str] = {}
    for path in feed_paths(settings):
        try:
            feed = load_feed(path)
            if feed.mapping_id not in aggregations:
                mapping = load_mapping(settings.mappings_dir / f"{feed.mapping_id}.yaml")
                aggregations[feed.mapping_id] = mapping.aggregation is not None
        except ConfigError:
            continue
        if aggregations[feed.mapping_id]:
            out[path.stem] = feed.mapping_id
    return out


def build_aggregate_dags(settings: Settings, aggregated: Mapping[str, str], wanted: str | None = None
                         ) -> dict[str, DAG]:
    """One DAG per aggregation mapping some feed names (only ``wanted`` when a task run names one)."""
    from carrierfeeds.run.aggregate import aggregate_bundles

    dags: dict[str, DAG] = {}
    for mapping_id in sorted(set(aggregated.values())):
        if wanted and wanted != dag_id_for(mapping_id):
            continue
        try:
            employers = [b.feed for b in aggregate_bundles(settings, mapping_id)]
        except ConfigError as exc:
            log.error("skipping aggregated carrier file %s: %s", mapping_id, exc.message)
            continue
        dags[dag_id_for(mapping_id)] = build_aggregate_dag(mapping_id, employers)
    return dags


def build_aggregate_dag(mapping_id: str, employers: list[Feed]) -> DAG:
    """The DAG of one aggregated carrier file: one task running every stage of the aggregate."""
    import pendulum

    first = employers[0]
    on_failure = [n for feed in employers for n in notifiers_for(feed)]
    with DAG(
        dag_id=dag_id_for(mapping_id),
        description=f"{len(employers)} employers to {first.carrier.name} in one file",
        doc_md="Employers: " + ", ".join(f.feed_id for f in employers),
        schedule=first.schedule,
        start_date=pendulum.datetime(2024, 1, 1, tz=first.timezone),
        catchup=False,
        max_active_runs=1,
        tags=[f"carrier:{first.carrier.id}", "aggregate", "carrierfeeds",
              *(f"employer:{f.employer.id}" for f in employers)],
        params={
            "force_census": Param(False, type="boolean",
                                  description="process each newest census although it was already processed"),
            "full_file": Param(False, type="boolean",
                               description="changes-mode mappings: every employer's full file (030) this time"),
        },
        default_args=task_defaults(on_failure),
    ) as dag:
        def run_aggregate_task(**context: Any) -> dict[str, Any]:
            return _run_aggregate(mapping_id, context)

        run_aggregate_task.__name__ = AGGREGATE_TASK_ID
        run_aggregate_task.__doc__ = f"Every stage of carrier file {mapping_id!r}, its employers' and its own."
        task(task_id=AGGREGATE_TASK_ID)(run_aggregate_task)()
    return dag


def _run_aggregate(mapping_id: str, context: Any) -> dict[str, Any]:
    """The aggregate's task: open the aggregate's and the employers' runs for the DAG run's day and run
    the stages; errors end them as a feed task's do (retriable ones left open while retries remain)."""
    from carrierfeeds.run.aggregate import aggregate_bundles
    from carrierfeeds.run.aggregate_run import AggregateRun, aggregate_stages, end_aggregate, open_aggregate

    disable_core_dumps()
    settings = Settings()
    params = context.get("params") or {}
    agg: AggregateRun | None = None
    try:
        day = interval_day(aggregate_bundles(settings, mapping_id)[0].feed, context)
        ref = run.RunRef.for_day(mapping_id, day)
        connections = AirflowConnections(scratch=lambda: private_dir(run.scratch_dir_for(settings, ref)))
        agg = open_aggregate(settings, mapping_id, day, clock=_utcnow, actor=f"airflow:{context['run_id']}",
                             store=staging_store(settings, settings.staging_url), connections=connections,
                             ephemeral=True)
        done = _finished_stages(agg.ctx) if int(context["ti"].try_number) > 1 else set()
        run_id = agg.ctx.run_id
        summary = aggregate_stages(agg, transport=make_transport(agg.ctx), done=done,
                                   full_file=bool(params.get("full_file", False)),
                                   force_census=bool(params.get("force_census", False)),
                                   scope=lambda stage: stage_log_group(stage, run_id))
        run.anchor_run(agg.ctx)
        return summary.as_dict()
    except CarrierFeedsError as exc:
        if exc.retriable and retries_left(context):
            if agg is not None:  # the retry re-reads the staging store; no plaintext waits for it
                for ctx in (agg.ctx, *agg.employers):
                    run.wipe_scratch(ctx)
            raise  # Airflow retries with backoff; the runs stay open
        if agg is not None:
            end_aggregate(agg, exc)
            run.anchor_run(agg.ctx)
        if status_for(exc) in NOTHING_NEW:
            raise AirflowSkipException(f"{AGGREGATE_TASK_ID}: {exc.code}: {exc.message}") from None
        raise FeedStageFailed(AGGREGATE_TASK_ID, exc.code, exc.message) from None
    except BaseException as exc:
        if agg is not None:
            for ctx in (agg.ctx, *agg.employers):
                record = agg.ctx.ledger.get_run(ctx.run_id)
                if retries_left(context):
                    run.wipe_scratch(ctx)
                elif ctx is agg.ctx or (record is not None and record.status == RunStatus.RUNNING):
                    _abandon_run(ctx, AGGREGATE_TASK_ID, exc)
        raise
    finally:
        if agg is not None:
            agg.ctx.ledger.close()


def build_housekeeping_dag() -> DAG:
    """Daily: poll acknowledgments, purge what retention says is due, then verify the ledger chain; beside
    them, check every feed's census against its expected window."""
    import pendulum

    # No feed file to name a webhook: the connection id comes from a Variable, read only when a task fails.
    on_failure = WebhookNotifier(feed_id=None, connection_variable=HOUSEKEEPING_WEBHOOK_VARIABLE)

    with DAG(
        dag_id=HOUSEKEEPING_DAG_ID,
        description="carrierfeeds housekeeping: acknowledgments, retention purge, ledger chain check",
        doc_md=build_housekeeping_dag.__doc__,
        schedule=HOUSEKEEPING_SCHEDULE,
        start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        tags=["carrierfeeds", "housekeeping"],
        default_args={
            "retries": RETRIES,
            "retry_delay": timedelta(minutes=5),
            "retry_exponential_backoff": True,
            "max_retry_delay": timedelta(minutes=30),
            "execution_timeout": HOUSEKEEPING_TIMEOUT,
            "on_failure_callback": [on_failure],
        },
    ) as dag:
        acks = task(task_id="poll_acknowledgments")(_poll_acknowledgments)()
        # The purge and the chain check run even when the carriers' servers are down.
        purge = task(task_id="retention_purge", trigger_rule="all_done")(_retention_purge)()
        verify = task(task_id="verify_ledger_chain", trigger_rule="all_done")(_verify_ledger_chain)()
        acks >> purge >> verify
        task(task_id="check_census_arrivals", trigger_rule="all_done")(_check_census_arrivals)()
        task(task_id="reconcile_returns", trigger_rule="all_done")(_reconcile_returns)()
    return dag
