"""`carrierfeeds feeds`: load and check every feed's configuration before a run does; a feed's lifecycle
(testing -> certified -> production, suspended: see ``carrierfeeds.lifecycle``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from carrierfeeds.cli.common import _emit, _fail, _parse_day, _utcnow, app
from carrierfeeds.errors import CarrierFeedsError, ConfigError, TransientError
from carrierfeeds.outcomes import ExitCode, exit_code_for
from carrierfeeds.settings import Settings, feed_paths

feeds_app = typer.Typer(help="Feed configuration.", no_args_is_help=True)
app.add_typer(feeds_app, name="feeds")


@feeds_app.command("check")
def feeds_check(
    as_json: Annotated[bool, typer.Option("--json", help="each file's verdict as JSON")] = False,
    config_only: Annotated[bool, typer.Option("--config-only", help="only the files: skip the connection files "
                                                                     "and the keyring (a checkout without "
                                                                     "secrets, in CI)")] = False,
    connect: Annotated[bool, typer.Option("--connect", help="also reach each SFTP server: its host key must be "
                                                            "the pinned one, the login must work and the folder "
                                                            "exist; nothing is uploaded")] = False,
) -> None:
    """Load every feed and the mapping, schema and suite each names, its connections and keys; report every problem.

    Each suite is built by Great Expectations itself (a run evaluates common expectation types as masks
    and may never hand the suite to GX), so an edit GX would refuse is caught here, before any run.
    Every mapping in the mappings folder must load (a run judges plan codes by all of them), and a
    schema's ``plan_codes`` may map only onto plans some mapping lists (or its ``plans_not_sent``):
    a target no mapping knows would make every row of that plan an ``unknown_plan`` finding.

    Unless --config-only: every connection a feed names (SFTP delivery, SFTP or SQL census source, its
    mapping's notice mail server) must be defined in the keys directory (``<keys_dir>/<connection_id>.json``,
    checked as a run loads it; a notice webhook as ``AIRFLOW_CONN_<ID>``, as the CLI reads it), and the
    recipient and signer keys it pins must be in the gpg home, neither expired nor revoked (``keys check``
    says more). Under Airflow the connections are Airflow's: check them there.

    Exit 0 when everything is ok; 2 on a configuration problem (a file, a connection file, a key);
    with --connect, 3 when a server's host key is not the pinned one, 5 when the login or the folder is
    refused, 4 when a server could not be reached (retry later).
    """
    from carrierfeeds.config import CensusSchema, load_feed, load_mapping
    from carrierfeeds.settings import bundle_from_feed
    from carrierfeeds.validation import check_suite

    settings = Settings()
    results: list[dict[str, Any]] = []
    shared: list[dict[str, Any]] = []  # problems of files feeds share: mappings, schemas
    known: set[str] = set()
    for mapping_path in sorted(settings.mappings_dir.glob("*.yaml")):
        try:
            loaded = load_mapping(mapping_path)
            known.update(loaded.plans)
            if loaded.aggregation is not None:  # its employers' feeds must share one file's key and target
                from carrierfeeds.run.aggregate import aggregate_bundles

                aggregate_bundles(settings, loaded.mapping_id, required=False)
        except ConfigError as exc:
            shared.append({"file": str(mapping_path), "ok": False, "error": exc.message})
    schemas: dict[str, CensusSchema] = {}
    suites: dict[Path, ConfigError | None] = {}  # feeds sharing a suite build it once
    deployment = None if config_only else _Deployment(settings, connect=connect)
    if deployment is not None and deployment.keyring_error is not None:
        shared.append({"file": str(settings.resolved_gnupg_home), "ok": False,
                       "error": deployment.keyring_error.message, "exit_code": int(ExitCode.USAGE)})
    for path in feed_paths(settings):
        try:
            bundle = bundle_from_feed(settings, load_feed(path), path)
            schemas.setdefault(bundle.schema.schema_id, bundle.schema)
            if bundle.suite_path not in suites:
                try:
                    check_suite(bundle.suite_path)
                    suites[bundle.suite_path] = None
                except ConfigError as exc:
                    suites[bundle.suite_path] = exc
            if (refused := suites[bundle.suite_path]) is not None:
                raise refused
            _check_sql_login(settings, bundle.feed.census.source)
        except (ConfigError, TransientError) as exc:
            results.append({"file": str(path), "ok": False, "error": exc.message,
                            "exit_code": int(exit_code_for(exc)),
                            **({"problems": exc.details["problems"], "where": exc.details.get("file")}
                               if exc.details.get("problems") else {})})
            continue
        checked = deployment.check(bundle.feed, bundle.mapping) if deployment is not None else []
        failed = [c for c in checked if not c["ok"]]
        results.append({"file": str(path), "ok": not failed,
                        **({"connections": checked} if checked else {}),
                        **({"error": "; ".join(c["error"] for c in failed),
                            "problems": [c["error"] for c in failed],
                            "exit_code": _worst([c["exit_code"] for c in failed])} if failed else {})})
    for schema_id, schema in sorted(schemas.items()):
        unknown = [(name, code) for name, code in schema.plan_codes.items()
                   if code not in known and code not in schema.plans_not_sent]
        if unknown:
            shared.append({"file": str(settings.schemas_dir / f"{schema_id}.yaml"), "ok": False, "error": "; ".join(
                f"plan_codes[{name!r}] maps to {code!r}, which no mapping in {settings.mappings_dir} lists "
                "(a typo? a plan the employer runs elsewhere goes in plans_not_sent)" for name, code in unknown)})
    ok = all(r["ok"] for r in results) and bool(results) and not shared
    lines = [f"{'ok  ' if r['ok'] else 'FAIL'} {r['file']}" + "".join(
             f"\n     {line}" for line in (_ok_lines(r) if r["ok"] else _error_lines(r)))
             for r in [*results, *shared]] or [f"no feeds in {settings.feeds_dir}"]
    _emit({"ok": ok, "feeds": results, "shared": shared}, as_json, lines)
    raise typer.Exit(ExitCode.OK if ok else _worst([r.get("exit_code", ExitCode.USAGE)
                                                    for r in [*results, *shared] if not r["ok"]]))


def _worst(codes: list[int]) -> ExitCode:
    """The exit code of several problems: a configuration problem first (fix it and check again), then
    a refusal, a permanent failure, a transient one."""
    for code in (ExitCode.USAGE, ExitCode.REFUSED, ExitCode.FAILED, ExitCode.TRANSIENT):
        if code in codes:
            return code
    return ExitCode.USAGE


def _ok_lines(result: dict[str, Any]) -> list[str]:
    return [f"{c['role']} connection {c['connection_id']}: " + (
        f"host key {c['host_key_fingerprint']} is the pinned one, login ok, {c['remote_dir']} there"
        if c.get("host_key_fingerprint") else "defined") for c in result.get("connections", [])
        if c["role"] != "key"]


class _Deployment:
    """What a run needs besides the files: each connection a feed names, defined in the keys directory
    (and with ``connect`` reached, nothing uploaded), and the keys it pins in the gpg home. Each
    connection is checked once however many feeds name it."""

    def __init__(self, settings: Settings, *, connect: bool) -> None:
        from carrierfeeds.crypto import Keyring

        self.settings, self.connect = settings, connect
        self.keyring: Any = None
        self.keyring_error: CarrierFeedsError | None = None
        try:
            self.keyring = Keyring(settings.resolved_gnupg_home)
        except CarrierFeedsError as exc:
            self.keyring_error = exc
        self._seen: dict[tuple[str, str, str], dict[str, Any]] = {}

    def check(self, feed: Any, mapping: Any = None) -> list[dict[str, Any]]:
        from carrierfeeds.config import SftpDelivery, SftpEndpoint, SftpSource, SqlSource

        checked = []
        if isinstance(feed.delivery, SftpDelivery):
            checked.append(self._sftp("delivery", feed.delivery.connection_id, feed.delivery.remote_dir))
        test = getattr(feed.delivery, "test", None)  # the carrier's test endpoint (carrierfeeds.lifecycle)
        if isinstance(test, SftpEndpoint):
            checked.append(self._sftp("test delivery", test.connection_id, test.remote_dir))
        source = feed.census.source
        if isinstance(source, SftpSource):
            checked.append(self._sftp("census", source.connection_id, source.remote_dir))
        elif isinstance(source, SqlSource):
            checked.append(self._sql(source.connection_id))
        send = mapping.notice.send if mapping is not None and mapping.notice is not None else None
        if send is not None:  # the carrier's notice (run.notices): its webhook and mail server
            checked += [self._notice(kind, channel.connection_id) for kind, channel in
                        (("webhook", send.webhook), ("smtp", send.email)) if channel is not None]
        if self.keyring is not None:
            checked += self._keys(feed)
        return checked

    def _sftp(self, role: str, connection_id: str, remote_dir: str) -> dict[str, Any]:
        from carrierfeeds.credentials import load_sftp_endpoint
        from carrierfeeds.transport.sftp import SftpTransport

        key = (role, connection_id, remote_dir)
        if key not in self._seen:
            entry: dict[str, Any] = {"role": role, "connection_id": connection_id, "remote_dir": remote_dir}
            try:
                endpoint = load_sftp_endpoint(self.settings.resolved_keys_dir, connection_id)
                if self.connect:  # one try: a check says what it found, a run retries
                    entry["host_key_fingerprint"] = SftpTransport(endpoint, remote_dir, retries=1).check_access()
                entry["ok"] = True
            except CarrierFeedsError as exc:
                entry.update(ok=False, error=f"{role} connection {connection_id}: {exc.message}",
                             exit_code=int(exit_code_for(exc)))
            self._seen[key] = entry
        return self._seen[key]

    def _notice(self, kind: str, connection_id: str) -> dict[str, Any]:
        from carrierfeeds.credentials import KeysDirConnections

        key = (f"notice {kind}", connection_id, "")
        if key not in self._seen:
            entry: dict[str, Any] = {"role": f"notice {kind}", "connection_id": connection_id}
            connections = KeysDirConnections(self.settings.resolved_keys_dir)
            try:
                connections.webhook(connection_id) if kind == "webhook" else connections.smtp(connection_id)
                entry["ok"] = True
            except CarrierFeedsError as exc:
                entry.update(ok=False, error=f"notice {kind} connection {connection_id}: {exc.message}",
                             exit_code=int(exit_code_for(exc)))
            self._seen[key] = entry
        return self._seen[key]

    def _sql(self, connection_id: str) -> dict[str, Any]:
        from carrierfeeds.census.sources import load_sql_url

        entry: dict[str, Any] = {"role": "census", "connection_id": connection_id}
        try:
            load_sql_url(self.settings.resolved_keys_dir, connection_id)
            entry["ok"] = True
        except CarrierFeedsError as exc:
            entry.update(ok=False, error=f"census connection {connection_id}: {exc.message}",
                         exit_code=int(exit_code_for(exc)))
        return entry

    def _keys(self, feed: Any) -> list[dict[str, Any]]:
        from carrierfeeds.cli.common import _utcnow, quiet_gpg_exit_codes

        spec, found = feed.encryption, []
        with quiet_gpg_exit_codes():
            for role, fpr in (("recipient", spec.recipient_fingerprint), ("signer", spec.signer_fingerprint)):
                info = self.keyring.inspect(fpr, now=_utcnow(), warning_days=spec.expiry_warning_days)
                entry: dict[str, Any] = {"role": "key", "connection_id": None, "key": role,
                                         "fingerprint": info.fingerprint, "status": info.status,
                                         "ok": info.status in ("ok", "expiring")}
                if not entry["ok"]:
                    entry.update(error=f"encryption.{role}_fingerprint {info.fingerprint}: {info.status} in the "
                                       f"gpg home {self.settings.resolved_gnupg_home} (see keys check)",
                                 exit_code=int(ExitCode.USAGE))
                found.append(entry)
        return found


def _error_lines(result: dict[str, Any]) -> list[str]:
    """A file's problems one per line: a list the loader gathered (every refused expectation, every
    bad field, every connection), else its one message."""
    problems = result.get("problems")
    if not problems or not isinstance(problems, list):
        return [result["error"]]
    where = result.get("where")
    if len(problems) == 1 and not where:
        return list(problems)
    return [(f"{where}: " if where else "") + f"{len(problems)} problem(s)", *(f"  - {p}" for p in problems)]


def _check_sql_login(settings: Settings, source: Any) -> None:
    """A SQL census source's login must be read-only (census.sql_source); checked where its connection
    file is in the keys directory (an Airflow connection is checked by the run itself, before its query)."""
    from carrierfeeds.census.sources import load_sql_url
    from carrierfeeds.census.sql_source import read_only_login_problems
    from carrierfeeds.config import SqlSource

    if not isinstance(source, SqlSource) or not (settings.resolved_keys_dir / f"{source.connection_id}.json").exists():
        return
    problems = read_only_login_problems(load_sql_url(settings.resolved_keys_dir, source.connection_id))
    if problems:
        raise ConfigError("the login is not read-only: " + "; ".join(problems),
                          field=f"census.source (connection {source.connection_id})")




# ------------------------------------------------------------------------------------------ lifecycle
def _lifecycle_lines(life: Any) -> list[str]:
    head = f"{life.feed_id}: {life.state}" + (f" (go-live {life.go_live.isoformat()})" if life.go_live else "") \
        + (f" (suspended from {life.suspended_from})" if life.suspended_from else "")
    rows = [f"  {e.at:%Y-%m-%d %H:%M}Z  {e.action:<9} -> {e.state:<10} by {e.actor}"
            + (f"  go-live {e.go_live.isoformat()}" if e.go_live else "")
            + (f"  ref: {e.reference}" if e.reference else "") + (f"  reason: {e.reason}" if e.reason else "")
            for e in life.history]
    return [head, *(rows or ["  no lifecycle rows: the feed's configured initial state applies"])]


def _lifecycle_change(feed_id: str, as_json: bool, change: Any) -> None:
    """Load the feed, apply ``change(ledger, feed)``, print where the feed stands; errors to exit codes."""
    from carrierfeeds.settings import load_bundle, open_ledger

    try:
        settings = Settings()
        feed = load_bundle(settings, feed_id).feed
        ledger = open_ledger(settings)
        life = change(ledger, feed)
    except CarrierFeedsError as exc:
        _fail(exc, as_json)
    _emit(life.as_dict(), as_json, _lifecycle_lines(life))


@feeds_app.command("lifecycle")
def feeds_lifecycle(
    feed_id: Annotated[str, typer.Argument(help="the feed id")],
    declare: Annotated[str | None, typer.Option(
        help="record where the feed stands: production (an existing live feed) or testing")] = None,
    by: Annotated[str | None, typer.Option(help="who declares it (with --declare), for the ledger")] = None,
    reference: Annotated[str | None, typer.Option(
        help="with --declare: the carrier's reference (contact, ticket, sign-off document)")] = None,
    reason: Annotated[str | None, typer.Option(help="with --declare: why (recorded in the ledger)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the state and history as JSON")] = False,
) -> None:
    """Show a feed's lifecycle state and history (testing, certified, production, suspended; unmanaged
    without a lifecycle block), or with --declare record where it stands. Exit code 3 when the ledger
    refuses the change (out of order), 2 on a usage or configuration error."""
    from carrierfeeds.lifecycle import current
    from carrierfeeds.lifecycle import declare as declare_state

    if declare is not None and not by:
        raise typer.BadParameter("--declare needs --by (who declares it)")
    if declare is None:
        _lifecycle_change(feed_id, as_json, current)
        return
    _lifecycle_change(feed_id, as_json, lambda ledger, feed: declare_state(
        ledger, feed, state=declare, by=str(by), reference=reference, reason=reason, now=_utcnow()))


@feeds_app.command("certify")
def feeds_certify(
    feed_id: Annotated[str, typer.Argument(help="the feed id")],
    approve: Annotated[bool, typer.Option("--approve", help="record the carrier's approval (testing -> "
                                          "certified)")] = False,
    by: Annotated[str, typer.Option(help="who records the approval, for the ledger")] = "",
    reference: Annotated[str, typer.Option(
        help="the carrier's reference: contact, ticket or sign-off document")] = "",
    go_live: Annotated[str | None, typer.Option(
        "--go-live", help="YYYY-MM-DD: the first run on or after it is the first production run (a full file)")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="the state and history as JSON")] = False,
) -> None:
    """Record the carrier's approval of a feed in testing: it becomes certified, and with --go-live moves to
    production on that date. Exit code 3 when the feed is not in testing (or certified, to set the date
    again) or has no test endpoint, 2 on a usage or configuration error."""
    from carrierfeeds.lifecycle import approve as approve_feed

    if not approve:
        raise typer.BadParameter("say --approve to record the carrier's approval (the certification packet is "
                                 "`carrierfeeds certify`)")
    if not by.strip() or not reference.strip():
        raise typer.BadParameter("--approve needs --by and --reference")
    day = _parse_day(go_live) if go_live else None
    _lifecycle_change(feed_id, as_json, lambda ledger, feed: approve_feed(
        ledger, feed, by=by, reference=reference, go_live=day, now=_utcnow()))


@feeds_app.command("suspend")
def feeds_suspend(
    feed_id: Annotated[str, typer.Argument(help="the feed id")],
    by: Annotated[str, typer.Option(help="who suspends it, for the ledger")],
    reason: Annotated[str, typer.Option(help="why (recorded in the ledger)")],
    as_json: Annotated[bool, typer.Option("--json", help="the state and history as JSON")] = False,
) -> None:
    """Suspend a feed: every run is refused (recorded, alerted) until it is resumed. Exit code 3 when it
    is already suspended."""
    from carrierfeeds.lifecycle import suspend

    _lifecycle_change(feed_id, as_json, lambda ledger, feed: suspend(ledger, feed, by=by, reason=reason,
                                                                     now=_utcnow()))


@feeds_app.command("resume")
def feeds_resume(
    feed_id: Annotated[str, typer.Argument(help="the feed id")],
    by: Annotated[str, typer.Option(help="who resumes it, for the ledger")],
    reason: Annotated[str | None, typer.Option(help="why (recorded in the ledger)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the state and history as JSON")] = False,
) -> None:
    """Resume a suspended feed in the state it was suspended from. Exit code 3 when it is not suspended."""
    from carrierfeeds.lifecycle import resume

    _lifecycle_change(feed_id, as_json, lambda ledger, feed: resume(ledger, feed, by=by, reason=reason,
                                                                    now=_utcnow()))
