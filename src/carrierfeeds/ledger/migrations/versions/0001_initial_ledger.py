"""Initial ledger: hash-chained audit tables, control-number counters and the chain head.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENESIS = "0" * 64
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _chain(table: str) -> list[sa.Column[object] | sa.UniqueConstraint]:
    return [
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("row_hash", sa.String(64), nullable=False),
        sa.UniqueConstraint("seq", name=f"uq_{table}_seq"),
    ]


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("feed_id", sa.String(128), nullable=False),
        sa.Column("interval_start", sa.Date(), nullable=False),
        sa.Column("interval_end", sa.Date(), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        *_chain("runs"),
        sa.PrimaryKeyConstraint("run_id", name="pk_runs"),
        sa.UniqueConstraint("feed_id", "interval_start", "interval_end",
                            name="uq_runs_feed_id_interval_start_interval_end"),
    )
    op.create_table(
        "run_events",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("stage", sa.String(64), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(128), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("at", _ts(), nullable=False),
        *_chain("run_events"),
        sa.PrimaryKeyConstraint("id", name="pk_run_events"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], name="fk_run_events_run_id_runs"),
    )
    op.create_index("ix_run_events_run_id", "run_events", ["run_id"])
    op.create_table(
        "interchanges",
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("sender_id", sa.String(64), nullable=False),
        sa.Column("receiver_id", sa.String(64), nullable=False),
        sa.Column("isa13", sa.Integer(), nullable=False),
        sa.Column("gs06", sa.Integer(), nullable=False),
        sa.Column("st02", sa.Integer(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        *_chain("interchanges"),
        sa.PrimaryKeyConstraint("run_id", name="pk_interchanges"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], name="fk_interchanges_run_id_runs"),
    )
    op.create_table(
        "deliveries",
        sa.Column("delivery_id", sa.String(32), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("feed_id", sa.String(128), nullable=False),
        sa.Column("interval_start", sa.Date(), nullable=False),
        sa.Column("payload_sha256", sa.String(64), nullable=False),
        sa.Column("file_name", sa.String(255), nullable=False),
        sa.Column("isa13", sa.Integer(), nullable=False),
        sa.Column("gs06", sa.Integer(), nullable=False),
        sa.Column("st02", sa.Integer(), nullable=False),
        sa.Column("recipient_fingerprint", sa.String(128), nullable=False),
        sa.Column("member_counts", sa.Text(), nullable=False),
        sa.Column("transport", sa.String(32), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        *_chain("deliveries"),
        sa.PrimaryKeyConstraint("delivery_id", name="pk_deliveries"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], name="fk_deliveries_run_id_runs"),
        sa.UniqueConstraint("feed_id", "interval_start", "payload_sha256",
                            name="uq_deliveries_feed_id_interval_start_payload_sha256"),
    )
    op.create_index("ix_deliveries_run_id", "deliveries", ["run_id"])
    op.create_table(
        "delivery_outcomes",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("delivery_id", sa.String(32), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("ciphertext_sha256", sa.String(64), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("remote_path", sa.String(1024), nullable=True),
        sa.Column("host_key_fingerprint", sa.String(128), nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", _ts(), nullable=False),
        *_chain("delivery_outcomes"),
        sa.PrimaryKeyConstraint("id", name="pk_delivery_outcomes"),
        sa.ForeignKeyConstraint(["delivery_id"], ["deliveries.delivery_id"],
                                name="fk_delivery_outcomes_delivery_id_deliveries"),
    )
    op.create_index("ix_delivery_outcomes_delivery_id", "delivery_outcomes", ["delivery_id"])
    op.create_table(
        "audit_events",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("object_type", sa.String(64), nullable=False),
        sa.Column("object_id", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("at", _ts(), nullable=False),
        *_chain("audit_events"),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
    )
    op.create_table(
        "control_counters",
        sa.Column("sender_id", sa.String(64), nullable=False),
        sa.Column("receiver_id", sa.String(64), nullable=False),
        sa.Column("last_control", sa.Integer(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("sender_id", "receiver_id", name="pk_control_counters"),
    )
    head = op.create_table(
        "chain_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("row_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_chain_head"),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "row_hash": GENESIS}])


def downgrade() -> None:
    for table in ("chain_head", "control_counters", "audit_events", "delivery_outcomes", "deliveries",
                  "interchanges", "run_events", "runs"):
        op.drop_table(table)
