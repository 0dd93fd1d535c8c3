"""PostgreSQL least privilege: an application role that may add to the audit tables but never rewrite them.

The role gets INSERT and SELECT on every hash-chained audit table, UPDATE only on the bookkeeping
tables (control-number counters and the chain head), SELECT on ``alembic_version`` (so ``upgrade()``
at head is a no-op for it) and the sequences behind surrogate ids. Schema changes stay with the
owner that ran the migrations. ``roles.sql`` beside this module is the same script for the default
role name, for a DBA to read and run with psql.
"""

from __future__ import annotations

import re

import sqlalchemy as sa

from carrierfeeds.ledger.models import AUDIT_TABLES, BOOKKEEPING_TABLES
from carrierfeeds.ledger.records import LedgerError

DEFAULT_APP_ROLE = "carrierfeeds_app"
_IDENT = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def app_role_statements(role: str = DEFAULT_APP_ROLE, *, schema: str = "public") -> list[str]:
    """The SQL statements that create (if missing, NOLOGIN) and grant the application role."""
    for name, value in (("role", role), ("schema", schema)):
        if not _IDENT.fullmatch(value):
            raise LedgerError(f"{name} must be a lowercase SQL identifier", details={"field": name})
    audit = ", ".join(f"{schema}.{t}" for t in AUDIT_TABLES)
    books = ", ".join(f"{schema}.{t.name}" for t in BOOKKEEPING_TABLES)
    return [
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{role}') "
        f"THEN CREATE ROLE {role} NOLOGIN; END IF; END $$",
        f"GRANT USAGE ON SCHEMA {schema} TO {role}",
        f"REVOKE ALL ON {audit}, {books}, {schema}.alembic_version FROM {role}",
        f"GRANT SELECT, INSERT ON {audit} TO {role}",
        f"GRANT SELECT, INSERT, UPDATE ON {books} TO {role}",
        f"GRANT SELECT ON {schema}.alembic_version TO {role}",
        f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {role}",
    ]


def app_role_sql(role: str = DEFAULT_APP_ROLE, *, schema: str = "public") -> str:
    """The statements as one psql script."""
    head = (f"-- carrierfeeds ledger: least-privilege application role {role!r} (schema {schema}).\n"
            "-- Run as the owner of the ledger tables after `carrierfeeds db upgrade`; give the role\n"
            "-- LOGIN and a password, or grant it to the login role the pipeline uses.\n")
    return head + "".join(f"{s};\n" for s in app_role_statements(role, schema=schema))


def grant_app_role(engine: sa.Engine, role: str = DEFAULT_APP_ROLE, *, schema: str = "public") -> None:
    """Create and grant the application role on a PostgreSQL ledger that is already upgraded."""
    if engine.dialect.name != "postgresql":
        raise LedgerError("roles exist on PostgreSQL only", details={"dialect": engine.dialect.name})
    with engine.begin() as conn:
        for statement in app_role_statements(role, schema=schema):
            conn.exec_driver_sql(statement)
