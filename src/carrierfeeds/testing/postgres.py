"""A read-only PostgreSQL login for tests and the demo: what an employer's HR database should give us."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator


@contextlib.contextmanager
def read_only_login(db_url: str) -> Iterator[str]:
    """A new login role on the database at ``db_url`` (an admin's URL), as a URL: may read the public
    schema's tables (and those the admin creates from now on), writes nothing, opens no other connection
    by itself, ``default_transaction_read_only`` on. Dropped with everything granted to it afterwards."""
    import sqlalchemy as sa

    role = f"cf_ro_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(db_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE ROLE "{role}" LOGIN')
        conn.exec_driver_sql(f'ALTER ROLE "{role}" SET default_transaction_read_only = on')
        conn.exec_driver_sql(f'GRANT USAGE ON SCHEMA public TO "{role}"')
        conn.exec_driver_sql(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"')
        conn.exec_driver_sql(f'ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO "{role}"')
    url = sa.make_url(db_url).set(username=role, password=None).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP OWNED BY "{role}"')  # its grants and default privileges here
            conn.exec_driver_sql(f'DROP ROLE "{role}"')
        engine.dispose()


__all__ = ["read_only_login"]
