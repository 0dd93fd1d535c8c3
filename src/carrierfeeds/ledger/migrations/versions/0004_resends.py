"""Forced resends: the new control numbers a resend was given and the delivery it replaces; hash-chained.

A forced resend is a new transmission with its own ISA13/GS06/ST02. ``interchanges`` holds a run's
first numbers (one row per run); each resend adds one row here, numbered within the run, naming the
delivery it replaces. A new table rather than new columns: every existing row's hash covers exactly
the columns it was written with, so the chained tables keep their shape.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "resends",
        sa.Column("resend_id", sa.String(32), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("replaces_delivery_id", sa.String(32), nullable=False),
        sa.Column("sender_id", sa.String(64), nullable=False),
        sa.Column("receiver_id", sa.String(64), nullable=False),
        sa.Column("isa13", sa.Integer(), nullable=False),
        sa.Column("gs06", sa.Integer(), nullable=False),
        sa.Column("st02", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("row_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("resend_id", name="pk_resends"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], name="fk_resends_run_id_runs"),
        sa.ForeignKeyConstraint(["replaces_delivery_id"], ["deliveries.delivery_id"],
                                name="fk_resends_replaces_delivery_id_deliveries"),
        sa.UniqueConstraint("seq", name="uq_resends_seq"),
        sa.UniqueConstraint("run_id", "number", name="uq_resends_run_id_number"),
    )
    op.create_index("ix_resends_run_id", "resends", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_resends_run_id", table_name="resends")
    op.drop_table("resends")
