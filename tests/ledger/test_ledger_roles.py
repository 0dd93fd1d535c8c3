"""PostgreSQL least privilege: the application role runs the ledger but cannot rewrite the audit trail."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from ledger_helpers import JAN, Clock, payload, start

from carrierfeeds.ledger import Ledger, app_role_sql, grant_app_role
from carrierfeeds.ledger.models import AUDIT_TABLES


def test_shipped_roles_sql_matches_the_generator() -> None:
    shipped = Path(__file__).resolve().parents[2] / "src/carrierfeeds/ledger/roles.sql"
    assert shipped.read_text() == app_role_sql()


@pytest.fixture
def app_ledger(pg_database: str) -> Iterator[tuple[Ledger, sa.Engine]]:
    """The ledger migrated by its owner, then used through a fresh least-privilege role."""
    owner = Ledger.open(pg_database)
    owner.upgrade()
    role = f"cf_app_{uuid.uuid4().hex[:10]}"
    grant_app_role(owner.engine, role)
    app_engine = sa.create_engine(pg_database, connect_args={"options": f"-c role={role}"})
    app = Ledger(app_engine)
    try:
        yield app, owner.engine
    finally:
        app.close()
        with owner.engine.begin() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
            conn.exec_driver_sql(f"DROP ROLE {role}")
        owner.close()


@pytest.mark.postgres
def test_app_role_runs_the_pipeline_but_cannot_update_or_delete(app_ledger: tuple[Ledger, sa.Engine],
                                                                clock: Clock) -> None:
    app, owner = app_ledger
    with app.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT current_user")).scalar_one().startswith("cf_app_")
    app.upgrade()  # at head: a no-op the role is allowed to do
    run = start(app, clock)
    app.record_stage(run.run_id, "validate", "succeeded", now=clock(), detail={"members": 2})
    ic = app.allocate_control_numbers(run_id=run.run_id, sender_id="S", receiver_id="R", now=clock())
    d = app.record_delivery_intent(
        run_id=run.run_id, feed_id="acme-medical", interval_start=JAN[0], payload_sha256=payload(1),
        file_name="f.pgp", isa13=ic.isa13, gs06=ic.gs06, st02=ic.st02, recipient_fingerprint="ABCDEF",
        member_counts={"members": 2}, transport="sftp", now=clock())
    app.record_delivery_outcome(d.delivery_id, status="delivered", now=clock(), size=5)
    app.audit(actor="ops", action="note", object_type="run", object_id=run.run_id, now=clock())
    app.finish_run(run.run_id, "delivered", now=clock())
    assert app.verify_chain().ok

    for table in AUDIT_TABLES:
        for statement in (f"UPDATE {table} SET row_hash = row_hash",  # noqa: S608
                          f"DELETE FROM {table}",  # noqa: S608
                          f"TRUNCATE {table} CASCADE"):
            with pytest.raises(sa.exc.ProgrammingError, match="permission denied"), \
                    app.engine.begin() as conn:
                conn.execute(sa.text(statement))
    for statement in ("DROP TABLE chain_head", "ALTER TABLE runs ADD COLUMN x int",
                      "DELETE FROM chain_head", "DELETE FROM control_counters"):
        with pytest.raises(sa.exc.ProgrammingError), app.engine.begin() as conn:
            conn.execute(sa.text(statement))
    with owner.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM run_events")).scalar_one() == 3
    assert app.verify_chain().ok
