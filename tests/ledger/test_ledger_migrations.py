"""Migrations: from an empty database to head, idempotent, and the head matches the models."""

from __future__ import annotations

import threading
from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from carrierfeeds.ledger import GENESIS, MIGRATIONS, Ledger
from carrierfeeds.ledger.models import AUDIT_TABLES, metadata


def _head() -> str | None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg).get_current_head()


def test_upgrade_from_empty_creates_every_table_and_a_genesis_head(ledger_url: str) -> None:
    ledger = Ledger.open(ledger_url)
    try:
        assert not sa.inspect(ledger.engine).get_table_names()
        ledger.upgrade()
        tables = set(sa.inspect(ledger.engine).get_table_names())
        assert tables == {*metadata.tables, "alembic_version"}
        with ledger.engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == _head()
            assert conn.execute(sa.text("SELECT seq, row_hash FROM chain_head")).all() == [(0, GENESIS)]
        verdict = ledger.verify_chain()
        assert verdict.ok and verdict.rows_checked == 0
    finally:
        ledger.close()


def test_upgrade_twice_is_a_no_op(ledger: Ledger, raw: sa.Engine) -> None:
    with raw.connect() as conn:
        before = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    ledger.upgrade()
    Ledger.open(str(raw.url.render_as_string(hide_password=False))).upgrade()
    with raw.connect() as conn:
        after = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
        assert after == before == [(_head(),)]
        assert conn.execute(sa.text("SELECT seq FROM chain_head")).scalar_one() == 0


def test_migrated_schema_matches_the_models(ledger: Ledger) -> None:
    """The `alembic check` comparison: autogenerate finds nothing to add, drop or alter."""
    with ledger.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        diffs = compare_metadata(ctx, metadata)
    assert diffs == []


def test_concurrent_first_upgrades_both_succeed(ledger_url: str) -> None:
    """Two workers opening a brand-new ledger at once: one migrates, the other finds it at head."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def worker() -> None:
        ledger = Ledger.open(ledger_url)
        try:
            barrier.wait()
            ledger.upgrade()
        except BaseException as exc:  # collected and asserted on below
            errors.append(exc)
        finally:
            ledger.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ledger = Ledger.open(ledger_url)
    try:
        assert set(AUDIT_TABLES) <= set(sa.inspect(ledger.engine).get_table_names())
        assert ledger.verify_chain().ok
    finally:
        ledger.close()


def test_migrations_ship_inside_the_package() -> None:
    """An installed carrierfeeds upgrades a database without the repository checkout."""
    import carrierfeeds.ledger

    package = Path(carrierfeeds.ledger.__file__).resolve().parent
    assert package / "migrations" == MIGRATIONS
    assert {p.name for p in MIGRATIONS.iterdir()} >= {"env.py", "script.py.mako", "versions"}
    assert any(MIGRATIONS.glob("versions/0001_*.py"))
