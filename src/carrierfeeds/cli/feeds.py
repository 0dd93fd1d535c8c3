"""`carrierfeeds feeds`: load and check every feed's configuration before a run does."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from carrierfeeds.cli.common import _emit, app
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

    Unless --config-only: every connection a feed names (SFTP delivery, SFTP or SQL census source) must
    be defined in the keys directory (``<keys_dir>/<connection_id>.json``, checked as a run loads it),
    and the recipient and signer keys it pins must be in the gpg home, neither expired nor revoked
    (``keys check`` says more). Under Airflow the connections are Airflow's: check them there.

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
        checked = deployment.check(bundle.feed) if deployment is not None else []
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

    def check(self, feed: Any) -> list[dict[str, Any]]:
        from carrierfeeds.config import SftpDelivery, SftpSource, SqlSource

        checked = []
        if isinstance(feed.delivery, SftpDelivery):
            checked.append(self._sftp("delivery", feed.delivery.connection_id, feed.delivery.remote_dir))
        source = feed.census.source
        if isinstance(source, SftpSource):
            checked.append(self._sftp("census", source.connection_id, source.remote_dir))
        elif isinstance(source, SqlSource):
            checked.append(self._sql(source.connection_id))
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


