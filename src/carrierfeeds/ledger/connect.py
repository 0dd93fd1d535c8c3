"""Opening a ledger database: engines for SQLite and PostgreSQL, and one clear error when it cannot be reached."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from carrierfeeds.errors import CarrierFeedsError, ConfigError, TransientError


def engine_for(url: str, *, setting: str) -> Engine:
    """An engine for ``sqlite:///path`` or ``postgresql+psycopg://...``; see ``Ledger.open``."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise ConfigError("not a database URL; expected sqlite:///path or "
                          "postgresql+psycopg://user@host:port/database", field=setting) from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(f"scheme {parsed.drivername.split('+')[0]!r} is not supported; expected sqlite:///path "
                          "or postgresql+psycopg://user@host:port/database", field=setting)
    try:
        if backend == "sqlite":
            # The driver's own transaction handling is switched off so every transaction can start
            # with BEGIN IMMEDIATE (writers) and wait on the lock rather than fail on upgrade.
            engine = sa.create_engine(parsed, connect_args={"timeout": 60})
            event.listen(engine, "connect", _sqlite_connect)
            event.listen(engine, "begin", _sqlite_begin)
        else:
            # Without a connect timeout a firewalled host hangs a run for the kernel's TCP timeout.
            args = {} if "connect_timeout" in parsed.query else {"connect_timeout": PG_CONNECT_TIMEOUT}
            engine = sa.create_engine(parsed, pool_pre_ping=True, connect_args=args)
    except (sa.exc.NoSuchModuleError, ImportError):
        raise ConfigError(f"driver {parsed.drivername!r} is not installed; use postgresql+psycopg://...",
                          field=setting) from None
    return engine


#: Seconds PostgreSQL gets to accept a connection (unless the URL sets ``connect_timeout``).
PG_CONNECT_TIMEOUT = 10

#: What a PostgreSQL driver says, lowercased, and whether a retry may fix it: (needle, reason, retry).
_PG_FAILURES = (
    ("connection refused", "connection refused", True),
    ("timeout expired", "timed out", True),
    ("timed out", "timed out", True),
    ("could not translate host name", "host name not found", True),
    ("name or service not known", "host name not found", True),
    ("no route to host", "no route to host", True),
    ("network is unreachable", "network unreachable", True),
    ("the database system is starting up", "server starting up", True),
    ("the database system is shutting down", "server shutting down", True),
    ("too many connections", "too many connections", True),
    ("server closed the connection", "server closed the connection", True),
    ("password authentication failed", "login refused: password authentication failed", False),
    ("no pg_hba.conf entry", "login refused by pg_hba.conf", False),
    ("does not exist", "the role or database does not exist", False),
)


def connect_failure(url: str, exc: BaseException, *, setting: str) -> CarrierFeedsError:
    """Our error for a ledger the driver could not reach or use: TransientError when a retry may fix it
    (server down, refused, timed out), ConfigError when only a settings change can (wrong login, no such
    database, an SQLite file that cannot be opened). One line naming ``setting``, host and port, never
    the password or the driver's own text (which may quote the URL)."""
    parsed = sa.make_url(url)
    text = str(getattr(exc, "orig", None) or exc).lower()
    if parsed.get_backend_name() == "sqlite":
        return ConfigError(f"SQLite ledger file cannot be opened ({type(getattr(exc, 'orig', exc)).__name__})",
                           field=setting, details={"setting": setting})
    where = f"PostgreSQL at {parsed.host or 'localhost'}:{parsed.port or 5432}"
    for needle, reason, retry in _PG_FAILURES:
        if needle in text:
            if retry:
                return TransientError(f"{setting}: {where} is unreachable ({reason}); retry later",
                                      details={"setting": setting, "reason": reason})
            return ConfigError(f"{where}: {reason}", field=setting, details={"setting": setting})
    return TransientError(f"{setting}: {where} is unreachable ({type(exc).__name__}); retry later",
                          details={"setting": setting})


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    # WAL is a property of the database file. Switching to it needs a moment of exclusive access,
    # which SQLite does not wait for (the busy timeout does not apply), so two processes opening a
    # brand-new ledger at once can see "database is locked" here: retry briefly.
    for attempt in range(50):
        try:
            if cur.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cur.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError:
            if attempt == 49:
                raise
            time.sleep(0.05 * (1 + attempt % 5))
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
    conn.exec_driver_sql("BEGIN IMMEDIATE" if mode == "IMMEDIATE" else "BEGIN DEFERRED")
