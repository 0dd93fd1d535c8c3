"""A census read straight from an employer's HR database: one read-only query, streamed into a private CSV.

The URL (with its password) comes from a connection, never from YAML, and never appears in a message.
The query runs in a read-only transaction (PostgreSQL ``SET TRANSACTION READ ONLY``, SQLite
``query_only``) that is rolled back, so even a data-modifying CTE cannot change the employer's data.
A transaction only guards its own connection: ``dblink_exec`` (or a foreign table) opens another. So on
PostgreSQL the login itself must be read-only, checked before every query and by ``feeds check``
(:func:`read_only_login_problems`): not a superuser, ``default_transaction_read_only`` on, no table it
may write or owns, no function that opens another connection (dblink) it may execute, no server-file
or server-program role. A login that fails any of these is refused (fail closed).
The CSV is written with the census schema's delimiter and encoding, so :func:`read_census` reads it
exactly as it would an employer's file: row 1 is the query's column names, row n+1 its n-th result row.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

from carrierfeeds.config import CensusSchema
from carrierfeeds.errors import ConfigError, DataError, PermanentError, Refused, TransientError

log = logging.getLogger(__name__)

_BATCH = 5_000
_ENCODINGS = {"utf-8-sig": "utf-8", "auto": "utf-8"}
#: Functions that open a connection of their own, outside the read-only transaction.
_OTHER_CONNECTIONS = ("dblink", "dblink_exec", "dblink_connect", "dblink_connect_u", "dblink_send_query",
                      "dblink_open")
#: Checks of a PostgreSQL login, each a query returning a count (0: fine) and what a non-zero count means.
_LOGIN_CHECKS: tuple[tuple[str, str], ...] = (
    ("SELECT count(*) FROM pg_roles WHERE rolname = current_user AND (rolsuper OR rolbypassrls)",
     "the login is a superuser (or bypasses row security)"),
    ("SELECT CASE WHEN current_setting('default_transaction_read_only') = 'on' THEN 0 ELSE 1 END",
     "the login's default_transaction_read_only is off (ALTER ROLE ... SET default_transaction_read_only = on)"),
    ("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
     "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname <> 'information_schema' "
     "AND left(n.nspname, 3) <> 'pg_' "
     "AND (pg_has_role(c.relowner, 'USAGE') OR has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE'))",
     "the login owns or may write {n} table(s)"),
    ("SELECT count(*) FROM pg_proc WHERE proname IN ({names}) AND has_function_privilege(oid, 'EXECUTE')",
     "the login may run {n} function(s) that open another connection (dblink): REVOKE EXECUTE"),
    ("SELECT count(*) FROM pg_roles r WHERE r.rolname IN ('pg_write_server_files', 'pg_execute_server_program') "
     "AND pg_has_role(r.oid, 'USAGE')",
     "the login may write server files or run server programs"),
)


def query_to_csv(url: str, query: str, dst: Path, schema: CensusSchema, *, name: str,
                 timeout_s: float = 300.0) -> int:
    """Run ``query`` at ``url`` and write its rows to ``dst`` (0600) as the schema's CSV; returns rows.

    Errors: ConfigError (a malformed URL, a missing driver, a query the database rejects), TransientError
    (cannot connect), PermanentError (anything else the database refuses), DataError (the result passes
    the size cap, holds binary values or characters the schema's encoding cannot hold).
    """
    import sqlalchemy as sa
    from sqlalchemy import exc as sa_exc
    from sqlalchemy.pool import NullPool

    if schema.format != "csv":
        raise ConfigError("a SQL census source needs a census schema with format csv",
                          field="census.schema_id")
    if schema.header_row != 1:  # the query's column names are written on row 1
        raise ConfigError("a SQL census source needs a census schema with header_row 1",
                          field="census.schema_id")
    try:
        engine = sa.create_engine(url, poolclass=NullPool)
    except (sa_exc.ArgumentError, ValueError, ImportError) as exc:
        raise ConfigError(f"the connection's database URL cannot be used ({type(exc).__name__})",
                          field="url") from None
    encoding = _ENCODINGS.get(schema.encoding, schema.encoding)
    try:
        conn = engine.connect()
    except sa_exc.DBAPIError as exc:
        engine.dispose()
        raise TransientError(f"cannot reach the HR database ({type(exc.orig).__name__})",
                             details={"cause": type(exc.orig).__name__}) from None
    dst.unlink(missing_ok=True)
    fd = os.open(dst, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    rows = 0
    try:
        with os.fdopen(fd, "wb") as raw, conn:
            _read_only(conn, engine.dialect.name, timeout_s)
            result = conn.execution_options(stream_results=True, yield_per=_BATCH).execute(sa.text(query))
            header = [str(k) for k in result.keys()]  # noqa: SIM118 (a Result, not a dict)
            text = io.TextIOWrapper(raw, encoding=encoding, errors="strict", newline="")
            writer = csv.writer(text, delimiter=schema.delimiter, lineterminator="\n")
            _write(writer, header, name, 1, header, encoding)
            for batch in result.partitions():
                for record in batch:
                    rows += 1
                    cells = [_text(v, schema, name, rows + 1, header[i]) for i, v in enumerate(record)]
                    _write(writer, cells, name, rows + 1, header, encoding)
                text.flush()
                if raw.tell() > schema.max_bytes:
                    raise DataError(f"query result passes the census size cap of {schema.max_bytes} bytes",
                                    file=name, row=rows + 1, rule="too_large",
                                    details={"max_bytes": schema.max_bytes})
            text.flush()
            text.detach()
            conn.rollback()
    except sa_exc.DBAPIError as exc:
        dst.unlink(missing_ok=True)
        cause = type(exc.orig).__name__
        if exc.connection_invalidated:
            raise TransientError(f"lost the HR database connection ({cause})", details={"cause": cause}) from None
        if isinstance(exc, sa_exc.ProgrammingError) or (
                isinstance(exc, sa_exc.OperationalError) and engine.dialect.name == "sqlite"):
            # SQLite reports a missing table or a syntax error as "operational". The database's message
            # can quote data: keep the driver's error class only.
            raise ConfigError(f"the HR database rejected the census query ({cause})",
                              field="census.source.query") from None
        raise PermanentError(f"the HR database refused the census query ({cause})",
                             details={"cause": cause}) from None
    except BaseException:
        dst.unlink(missing_ok=True)
        raise
    finally:
        engine.dispose()
    log.info("%s: wrote %d rows from the SQL source", name, rows)
    return rows


def read_only_login_problems(url: str) -> list[str]:
    """What keeps the login at ``url`` from being read-only (empty: it is). PostgreSQL is checked in its
    catalog; SQLite is read-only per connection (``query_only``); another database cannot be checked and
    says so. ConfigError for an unusable URL, TransientError when the database cannot be reached."""
    import sqlalchemy as sa
    from sqlalchemy import exc as sa_exc
    from sqlalchemy.pool import NullPool

    try:
        engine = sa.create_engine(url, poolclass=NullPool)
    except (sa_exc.ArgumentError, ValueError, ImportError) as exc:
        raise ConfigError(f"the connection's database URL cannot be used ({type(exc).__name__})",
                          field="url") from None
    try:
        if engine.dialect.name == "sqlite":
            return []
        if engine.dialect.name != "postgresql":
            return [f"read-only cannot be checked on {engine.dialect.name}; only its grants make it so"]
        with engine.connect() as conn:
            return _login_problems(conn)
    except sa_exc.DBAPIError as exc:
        raise TransientError(f"cannot reach the HR database ({type(exc.orig).__name__})",
                             details={"cause": type(exc.orig).__name__}) from None
    finally:
        engine.dispose()


def _login_problems(conn: Any) -> list[str]:
    names = ", ".join(f"'{n}'" for n in _OTHER_CONNECTIONS)
    problems = []
    for query, meaning in _LOGIN_CHECKS:
        n = int(conn.exec_driver_sql(query.replace("{names}", names)).scalar_one())
        if n:
            problems.append(meaning.replace("{n}", str(n)))
    conn.rollback()
    return problems


def _read_only(conn: Any, dialect: str, timeout_s: float) -> None:
    if dialect == "postgresql":
        problems = _login_problems(conn)
        if problems:
            raise Refused("the HR database login is not read-only: " + "; ".join(problems),
                          details={"problems": len(problems)})
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int(timeout_s * 1000)}")
    elif dialect == "sqlite":
        conn.exec_driver_sql("PRAGMA query_only = ON")
    else:
        # Other databases: the connection's own grants must make it read-only; say we relied on that.
        log.warning("SQL source on %s: read-only is up to the database user's grants", dialect)


def _write(writer: Any, cells: list[str], name: str, row: int, header: list[str], encoding: str) -> None:
    try:
        writer.writerow(cells)
    except UnicodeEncodeError:
        bad = next((i for i, c in enumerate(cells) if not _encodes(c, encoding)), None)
        raise DataError(f"a value has characters {encoding} cannot hold; declare utf-8 in the census schema",
                        file=name, row=row, column=None if bad is None else header[bad],
                        rule="encoding") from None


def _encodes(cell: str, encoding: str) -> bool:
    try:
        cell.encode(encoding)
    except UnicodeEncodeError:
        return False
    return True


def _text(value: Any, schema: CensusSchema, name: str, row: int, column: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, datetime):
        return value.strftime(schema.date_format) if value.time() == time(0) else value.isoformat()
    if isinstance(value, date):
        return value.strftime(schema.date_format)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, bytes | bytearray | memoryview):
        raise DataError("column holds binary values; select text", file=name, row=row, column=column,
                        rule="binary_value")
    return str(value)
