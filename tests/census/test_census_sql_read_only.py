"""A SQL census source's login must be read-only: a read-only transaction guards only its own
connection, and ``dblink_exec`` opens another. Real PostgreSQL: a login that could write is refused before
its query runs (and by ``feeds check``); a read-only login cannot write through dblink or a function."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from carrierfeeds.census.sql_source import query_to_csv, read_only_login_problems
from carrierfeeds.cli import app
from carrierfeeds.config import load_schema
from carrierfeeds.errors import ConfigError, PermanentError, Refused
from carrierfeeds.testing.postgres import read_only_login

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = load_schema(ROOT / "schemas" / "census-v1.yaml")
pytestmark = pytest.mark.postgres


def _admin(url: str, *statements: str) -> None:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
    engine.dispose()


def _rows(url: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        n = int(conn.execute(sa.text("SELECT count(*) FROM hr_census")).scalar_one())
    engine.dispose()
    return n


@pytest.fixture
def hr_db(pg_database: str) -> str:
    """The HR database: a table of three rows, dblink installed, a SECURITY DEFINER function that deletes."""
    _admin(pg_database,
           "CREATE TABLE hr_census (member_id text, first_name text)",
           "INSERT INTO hr_census VALUES ('E1', 'Ann'), ('E2', 'Bob'), ('E3', 'Cy')",
           "CREATE EXTENSION IF NOT EXISTS dblink",
           "CREATE FUNCTION wipe() RETURNS bigint LANGUAGE sql SECURITY DEFINER AS "
           "'WITH gone AS (DELETE FROM hr_census RETURNING 1) SELECT count(*) FROM gone'")
    return pg_database


def _dblink_delete(db_url: str, user: str = "postgres") -> str:
    u = sa.make_url(db_url)
    conninfo = f"host={u.host} port={u.port or 5432} dbname={u.database} user={user}"
    return f"SELECT dblink_exec('{conninfo}', 'DELETE FROM hr_census') AS member_id"  # noqa: S608 (test data)


def test_a_login_that_can_write_is_refused_before_a_dblink_write_runs(hr_db: str, tmp_path: Path) -> None:
    with pytest.raises(Refused) as info:
        query_to_csv(hr_db, _dblink_delete(hr_db), tmp_path / "out.csv", SCHEMA, name="hr.sql.csv")
    assert "superuser" in str(info.value) and "default_transaction_read_only" in str(info.value)
    assert _rows(hr_db) == 3, "the dblink DELETE must never have run"
    assert not (tmp_path / "out.csv").exists()


def test_a_read_only_login_cannot_write_through_dblink_or_a_function(hr_db: str, tmp_path: Path) -> None:
    _admin(hr_db, *(f"REVOKE EXECUTE ON FUNCTION {f} FROM PUBLIC" for f in (
        "dblink_exec(text, text)", "dblink_exec(text)", "dblink_exec(text, boolean)",
        "dblink_exec(text, text, boolean)", "dblink(text, text)", "dblink(text)", "dblink(text, boolean)",
        "dblink(text, text, boolean)", "dblink_connect(text)", "dblink_connect(text, text)",
        "dblink_connect_u(text)", "dblink_connect_u(text, text)", "dblink_send_query(text, text)",
        "dblink_open(text, text)", "dblink_open(text, text, boolean)", "dblink_open(text, text, text)",
        "dblink_open(text, text, text, boolean)")))
    with read_only_login(hr_db) as url:
        assert read_only_login_problems(url) == []
        for query in (_dblink_delete(hr_db), _dblink_delete(hr_db, user=sa.make_url(url).username or ""),
                      "SELECT wipe()::text AS member_id"):
            # refused by the database: permission denied (ConfigError) or a read-only transaction
            with pytest.raises((ConfigError, PermanentError)):
                query_to_csv(url, query, tmp_path / "out.csv", SCHEMA, name="hr.sql.csv")
        assert query_to_csv(url, "SELECT member_id, first_name FROM hr_census", tmp_path / "out.csv", SCHEMA,
                            name="hr.sql.csv") == 3
    assert _rows(hr_db) == 3


def test_read_only_login_problems_name_each_way_to_write(hr_db: str) -> None:
    superuser = read_only_login_problems(hr_db)
    assert any("superuser" in p for p in superuser) and any("default_transaction_read_only" in p for p in superuser)
    assert any("owns or may write" in p for p in superuser)
    assert any("dblink" in p for p in superuser)
    with read_only_login(hr_db) as url:
        role = sa.make_url(url).username
        problems = read_only_login_problems(url)  # dblink is executable by PUBLIC here
        assert len(problems) == 1 and "dblink" in problems[0]
        _admin(hr_db, f'GRANT INSERT ON hr_census TO "{role}"')
        assert any("owns or may write 1 table(s)" in p for p in read_only_login_problems(url))


def test_feeds_check_fails_a_sql_source_whose_login_can_write(hr_db: str, tmp_path: Path) -> None:
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    feed = (ROOT / "feeds" / "acme-sunrise-medical.yaml").read_text().replace(
        'source: {kind: local, path: inbound/acme, pattern: "census_*.csv"}',
        'source: {kind: sql, connection_id: acme-hr, query: "SELECT member_id FROM hr_census"}')
    assert "kind: sql" in feed
    (feeds / "acme-sunrise-medical.yaml").write_text(feed)
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    fd = os.open(keys / "acme-hr.json", os.O_CREAT | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"url": hr_db}, fh)
    env = {"CARRIERFEEDS_FEEDS_DIR": str(feeds), "CARRIERFEEDS_MAPPINGS_DIR": str(ROOT / "mappings"),
           "CARRIERFEEDS_SCHEMAS_DIR": str(ROOT / "schemas"), "CARRIERFEEDS_KEYS_DIR": str(keys),
           "CARRIERFEEDS_DATA_DIR": str(tmp_path / "data")}
    result = CliRunner().invoke(app, ["feeds", "check", "--json"], env=env)
    assert result.exit_code == 2, result.output
    (entry,) = json.loads(result.output)["feeds"]
    assert not entry["ok"] and "not read-only" in entry["error"] and "superuser" in entry["error"]
