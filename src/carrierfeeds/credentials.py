"""Connections by id (SFTP, SQL, webhook, SMTP): a Protocol, and the keys directory's files checked at load.

Code that reaches a server takes one :class:`Connections` object: :class:`KeysDirConnections` under the
CLI (``<keys_dir>/<connection_id>.json``, secrets referenced by path only), ``AirflowConnections`` (in
``carrierfeeds.airflow``) under Airflow, :class:`StaticConnections` for endpoints already in hand.

The Airflow connection equivalent (built by ``carrierfeeds.airflow``) maps the same way:

    =====================  ===============================================================
    SftpEndpoint field     keys-dir JSON                  Airflow connection
    =====================  ===============================================================
    host                   "host"                         host
    port                   "port" (default 22)            port (default 22)
    username               "login"                        login
    private_key_path       "key_file" (relative)          extra "key_file" (path), or extra
                                                          "private_key" (PEM text, written 0600
                                                          into the run's private folder)
    known_hosts            "known_hosts_file" (relative)  extra "known_hosts" (text) or extra
                                                          "host_key" ("ssh-ed25519 AAAA...")
    *_timeout              "connect_timeout", ...          extra "connect_timeout", ...
    =====================  ===============================================================

``no_host_key_check`` or an empty known_hosts is refused on both paths: we fail closed.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from paramiko.hostkeys import HostKeyEntry, HostKeys
from paramiko.ssh_exception import SSHException

from carrierfeeds.errors import ConfigError

_REQUIRED = ("host", "login", "key_file", "known_hosts_file")
_TIMEOUTS = ("connect_timeout", "banner_timeout", "auth_timeout", "op_timeout")
_ALLOWED = {*_REQUIRED, "port", *_TIMEOUTS, "comment"}
_T = TypeVar("_T")


@dataclass(frozen=True)
class SftpEndpoint:
    """Where and how to reach one carrier's SFTP server; ``known_hosts`` is the pinned host key text."""

    host: str
    port: int
    username: str
    private_key_path: Path
    known_hosts: str
    connect_timeout: float = 10.0
    banner_timeout: float = 15.0
    auth_timeout: float = 15.0
    op_timeout: float = 60.0

    @property
    def host_key_name(self) -> str:
        """The name the host is looked up by in known_hosts: ``host`` or ``[host]:port``."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def parse_known_hosts(text: str) -> HostKeys:
    """known_hosts text as paramiko HostKeys (hashed names and ``[host]:port`` forms kept as written)."""
    keys = HostKeys()
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        entry = HostKeyEntry.from_line(line)
        if entry is None or entry.key is None:
            continue
        for name in entry.hostnames:
            keys.add(name, entry.key.get_name(), entry.key)
    return keys


def known_hosts_names(text: str, host: str) -> bool:
    """Whether known_hosts ``text`` pins a key for ``host`` (``name`` or ``[name]:port``; hashed entries
    too), the way paramiko looks a host up. Marker lines (``@cert-authority``, ``@revoked``) and lines
    that do not parse pin nothing: paramiko would not use them either."""
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith(("#", "@")):
            continue
        try:
            entry = HostKeyEntry.from_line(line, number)
        except (SSHException, ValueError):
            continue
        for name in entry.hostnames if entry is not None else []:
            if name == host or (name.startswith("|1|")
                                and HostKeys.hash_host(host, name.split("|")[2]) == name):
                return True
    return False


def check_private_key_file(path: Path, *, source: str, field: str) -> None:
    """The client key must be a regular file readable by its owner only (mode 0600 or 0400)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"private key file {path} does not exist", file=source, field=field) from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"private key {path} is not a regular file", file=source, field=field)
    if st.st_mode & 0o077:
        raise ConfigError(f"private key {path} is readable by group or others "
                          f"(mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it", file=source, field=field)


def _number(data: dict[str, Any], name: str, default: float, source: str, *, integer: bool = False) -> Any:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0 \
            or (integer and not isinstance(value, int)):
        kind = "a positive integer" if integer else "a positive number of seconds"
        raise ConfigError(f"expected {kind}", file=source, field=name)
    return value


def read_connection_file(keys_dir: Path, connection_id: str, *, required: tuple[str, ...],
                         allowed: set[str], owner_only: bool = False) -> tuple[dict[str, Any], str]:
    """``<keys_dir>/<connection_id>.json`` as a dict, and its path for messages.

    Every problem is a ConfigError naming the file and the field: an id that is not a plain name, a
    missing or malformed file, unknown fields, a required field that is not a non-empty string, and with
    ``owner_only`` a file that group or others can read (it holds a password).
    """
    path = Path(keys_dir) / f"{connection_id}.json"
    source = str(path)
    if "/" in connection_id or connection_id.startswith("."):
        raise ConfigError("connection id must be a plain name", file=source, field="connection_id")
    try:
        mode = path.stat().st_mode
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no credentials for connection {connection_id!r} in {keys_dir}",
                          file=source) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not valid JSON (line {exc.lineno}, column {exc.colno})", file=source) from None
    if owner_only and mode & 0o077:
        raise ConfigError(f"readable by group or others (mode {stat.S_IMODE(mode):04o}); it holds a password: "
                          "chmod 600 it", file=source)
    if not isinstance(data, dict):
        raise ConfigError("expected a JSON object", file=source)
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"unknown field(s) {unknown}; allowed: {sorted(allowed)}", file=source,
                          field=unknown[0])
    for name in required:
        if not isinstance(data.get(name), str) or not data[name].strip():
            raise ConfigError("required, a non-empty string", file=source, field=name)
    return data, source


def load_sftp_endpoint(keys_dir: Path, connection_id: str) -> SftpEndpoint:
    """Read ``<keys_dir>/<connection_id>.json``; every problem is a ConfigError naming file and field."""
    data, source = read_connection_file(keys_dir, connection_id, required=_REQUIRED, allowed=_ALLOWED)
    port = _number(data, "port", 22, source, integer=True)
    if port > 65535:
        raise ConfigError("expected a TCP port 1..65535", file=source, field="port")
    timeouts = {name: float(_number(data, name, getattr(SftpEndpoint, name), source)) for name in _TIMEOUTS}

    key_path = (Path(keys_dir) / data["key_file"]).resolve()
    check_private_key_file(key_path, source=source, field="key_file")
    kh_path = Path(keys_dir) / data["known_hosts_file"]
    try:
        known_hosts = kh_path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"known_hosts file {kh_path} does not exist", file=source,
                          field="known_hosts_file") from None
    endpoint = SftpEndpoint(host=data["host"], port=port, username=data["login"], private_key_path=key_path,
                            known_hosts=known_hosts, **timeouts)
    if parse_known_hosts(known_hosts).lookup(endpoint.host_key_name) is None:
        # Without a pinned key every connection would be refused; say so now, naming the fix.
        raise ConfigError(f"{kh_path} has no host key for {endpoint.host_key_name}; pin it (see "
                          "sftp_keys.example/README.md)", file=source, field="known_hosts_file")
    return endpoint


def load_sql_url(keys_dir: Path, connection_id: str) -> str:
    """The SQLAlchemy URL in ``<keys_dir>/<connection_id>.json`` (``{"url": ...}``, owner-only file)."""
    data, _ = read_connection_file(keys_dir, connection_id, required=("url",), allowed={"url", "comment"},
                                   owner_only=True)
    return str(data["url"]).strip()


@dataclass(frozen=True)
class WebhookTarget:
    """Where a notice is POSTed: the URL and any headers (basic auth from the connection's login)."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)


def webhook_from_fields(connection_id: str, *, host: str | None, schema: str | None, port: int | None,
                        login: str | None, password: str | None, endpoint: str | None) -> WebhookTarget:
    """A webhook from HTTP connection fields (HTTP provider conventions: ``schema`` is the scheme, ``host``,
    ``port``, extra ``endpoint`` for the path; ``login``/``password`` become basic auth)."""
    host = str(host or "")
    if not host:
        raise ConfigError("webhook connection has no host", file=f"airflow connection {connection_id}",
                          field="host")
    if "://" in host:
        base = host.rstrip("/")
    else:
        scheme = schema or "https"
        base = f"{scheme}://{host}" + (f":{port}" if port else "")
    path = str(endpoint or "").lstrip("/")
    headers: dict[str, str] = {}
    if login:
        token = base64.b64encode(f"{login}:{password or ''}".encode()).decode("ascii")
        headers["Authorization"] = f"Basic {token}"
    return WebhookTarget(f"{base}/{path}" if path else base, headers)


#: How an SMTP connection protects its session: STARTTLS on a plain port, TLS from the start, or none
#: (a relay on the same host; refused with a login, which would cross the network in the clear).
SMTP_SECURITY = ("starttls", "ssl", "none")


@dataclass(frozen=True)
class SmtpTarget:
    """The mail server the per-file notice is sent through (``smtplib``), from an SMTP connection."""

    host: str
    port: int
    security: str = "starttls"
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 30.0


def smtp_from_fields(connection_id: str, *, host: str | None, port: int | None, login: str | None,
                     password: str | None, security: str | None, source: str | None = None) -> SmtpTarget:
    """An SMTP target from connection fields; ``security`` one of starttls (default), ssl, none."""
    source = source or f"connection {connection_id}"
    if not host:
        raise ConfigError("SMTP connection has no host", file=source, field="host")
    security = security or "starttls"
    if security not in SMTP_SECURITY:
        raise ConfigError(f"security {security!r} is not one of {list(SMTP_SECURITY)}", file=source,
                          field="security")
    if security == "none" and login:
        raise ConfigError("a login over an SMTP session without TLS would send the password in the clear; "
                          "use starttls or ssl", file=source, field="security")
    default = 465 if security == "ssl" else 587 if security == "starttls" else 25
    port = int(port or default)
    if not 0 < port < 65536:
        raise ConfigError("expected a TCP port 1..65535", file=source, field="port")
    return SmtpTarget(host=str(host), port=port, security=security, login=login or None,
                      password=password or None)


def load_smtp_target(keys_dir: Path, connection_id: str) -> SmtpTarget:
    """``<keys_dir>/<connection_id>.json``: ``{"host", "port", "security", "login", "password"}``, owner-only
    like a SQL connection's (it may hold a password)."""
    data, source = read_connection_file(keys_dir, connection_id, required=("host",),
                                        allowed={"host", "port", "security", "login", "password", "comment"},
                                        owner_only=True)
    port = _number(data, "port", 0, source, integer=True) if "port" in data else None
    return smtp_from_fields(connection_id, host=data["host"].strip(), port=int(port) if port else None,
                            login=data.get("login"), password=data.get("password"),
                            security=data.get("security"), source=source)


def smtp_not_defined(connection_id: str) -> ConfigError:
    """The error for an SMTP connection id that resolves to nothing."""
    return ConfigError(f"SMTP connection {connection_id!r} is not defined",
                       field="notice.send.email.connection_id")


def webhook_not_defined(connection_id: str) -> ConfigError:
    """The error for a webhook connection id that resolves to nothing."""
    return ConfigError(f"webhook connection {connection_id!r} is not defined", field="notify.webhook_connection_id")


def webhook_from_airflow_env(connection_id: str, text: str) -> WebhookTarget:
    """A webhook from an ``AIRFLOW_CONN_<ID>`` value: JSON (``{"host": ..., "extra": {...}}``) or a URI
    (``http://login:password@host:port/schema?endpoint=...``)."""
    if text.startswith("{"):
        try:
            conn = json.loads(text)
        except json.JSONDecodeError:
            raise ConfigError("not valid JSON", file=f"airflow connection {connection_id}") from None
        extra = conn.get("extra") or {}
        if isinstance(extra, str):
            extra = json.loads(extra or "{}")
        return webhook_from_fields(connection_id, host=conn.get("host"), schema=conn.get("schema"),
                                   port=conn.get("port"), login=conn.get("login"), password=conn.get("password"),
                                   endpoint=extra.get("endpoint"))
    parts = urllib.parse.urlsplit(text)
    query = dict(urllib.parse.parse_qsl(parts.query))
    unquote = urllib.parse.unquote
    return webhook_from_fields(connection_id, host=unquote(parts.hostname or ""),
                               schema=unquote(parts.path.lstrip("/")) or None, port=parts.port,
                               login=unquote(parts.username) if parts.username else None,
                               password=unquote(parts.password) if parts.password else None,
                               endpoint=query.get("endpoint"))


class Connections(Protocol):
    """Credentials by connection id; every problem is a ConfigError naming where the connection lives."""

    def sftp_endpoint(self, connection_id: str) -> SftpEndpoint:
        """The SFTP server a census source, delivery or carrier outbox names."""
        ...

    def sql_url(self, connection_id: str) -> str:
        """The SQLAlchemy URL of a SQL census source."""
        ...

    def webhook(self, connection_id: str) -> WebhookTarget:
        """Where a feed's notices go."""
        ...

    def smtp(self, connection_id: str) -> SmtpTarget:
        """The mail server a carrier's per-file notice is e-mailed through."""
        ...

    def secret(self, name: str) -> str | None:
        """A named value set by the deployment (an Airflow Variable); None when unset."""
        ...


@dataclass(frozen=True)
class KeysDirConnections:
    """The CLI's connections: ``<keys_dir>/<connection_id>.json`` files for SFTP and SQL.

    A webhook id resolves through an ``AIRFLOW_CONN_<ID>`` environment variable (Airflow's JSON or URI
    form), read here without importing Airflow. Named secrets are an Airflow deployment's: here there
    are none.
    """

    keys_dir: Path

    def sftp_endpoint(self, connection_id: str) -> SftpEndpoint:
        return load_sftp_endpoint(self.keys_dir, connection_id)

    def sql_url(self, connection_id: str) -> str:
        return load_sql_url(self.keys_dir, connection_id)

    def webhook(self, connection_id: str) -> WebhookTarget:
        text = os.environ.get(f"AIRFLOW_CONN_{connection_id.upper()}", "").strip()
        if not text:
            raise webhook_not_defined(connection_id)
        return webhook_from_airflow_env(connection_id, text)

    def smtp(self, connection_id: str) -> SmtpTarget:
        return load_smtp_target(self.keys_dir, connection_id)

    def secret(self, name: str) -> str | None:
        return None


@dataclass(frozen=True)
class StaticConnections:
    """Connections already in hand, by id (an embedding application, a test with a live server)."""

    sftp: Mapping[str, SftpEndpoint] = field(default_factory=dict)
    sql: Mapping[str, str] = field(default_factory=dict)
    webhooks: Mapping[str, WebhookTarget] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)
    smtps: Mapping[str, SmtpTarget] = field(default_factory=dict)

    def sftp_endpoint(self, connection_id: str) -> SftpEndpoint:
        return _lookup(self.sftp, connection_id)

    def sql_url(self, connection_id: str) -> str:
        return _lookup(self.sql, connection_id)

    def webhook(self, connection_id: str) -> WebhookTarget:
        if connection_id not in self.webhooks:
            raise webhook_not_defined(connection_id)
        return self.webhooks[connection_id]

    def smtp(self, connection_id: str) -> SmtpTarget:
        if connection_id not in self.smtps:
            raise smtp_not_defined(connection_id)
        return self.smtps[connection_id]

    def secret(self, name: str) -> str | None:
        return self.secrets.get(name)


def _lookup(table: Mapping[str, _T], connection_id: str) -> _T:
    if connection_id not in table:
        raise ConfigError(f"no credentials for connection {connection_id!r}", field="connection_id")
    return table[connection_id]
