"""Notice sends: one hash-chained row per intent and per outcome of sending a delivery's per-file notice
to the carrier on a channel (webhook, e-mail), with the idempotency key the carrier sees.

A new table only: every existing row's hash covers exactly the columns it was written with.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notice_sends",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("delivery_id", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("idempotency_key", sa.String(64), nullable=False),
        sa.Column("notice_sha256", sa.String(64), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("row_hash", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(["delivery_id"], ["deliveries.delivery_id"],
                                name="fk_notice_sends_delivery_id_deliveries"),
        sa.PrimaryKeyConstraint("id", name="pk_notice_sends"),
        sa.UniqueConstraint("seq", name="uq_notice_sends_seq"),
    )
    op.create_index("ix_notice_sends_delivery_id", "notice_sends", ["delivery_id"])


def downgrade() -> None:
    op.drop_index("ix_notice_sends_delivery_id", table_name="notice_sends")
    op.drop_table("notice_sends")
