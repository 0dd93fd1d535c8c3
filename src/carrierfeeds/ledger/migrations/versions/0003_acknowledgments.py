"""Carriers' TA1/999 acknowledgments, matched to deliveries (or kept unmatched); hash-chained.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "acknowledgments",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("file_sha256", sa.String(64), nullable=False),
        sa.Column("unit", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.String(128), nullable=False),
        sa.Column("file_name", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("sender_id", sa.String(64), nullable=True),
        sa.Column("receiver_id", sa.String(64), nullable=True),
        sa.Column("control_number", sa.Integer(), nullable=True),
        sa.Column("isa13", sa.Integer(), nullable=True),
        sa.Column("delivery_id", sa.String(32), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("sets_accepted", sa.Integer(), nullable=False),
        sa.Column("sets_rejected", sa.Integer(), nullable=False),
        sa.Column("segment_errors", sa.Integer(), nullable=False),
        sa.Column("element_errors", sa.Integer(), nullable=False),
        sa.Column("codes", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("row_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_acknowledgments"),
        sa.ForeignKeyConstraint(["delivery_id"], ["deliveries.delivery_id"],
                                name="fk_acknowledgments_delivery_id_deliveries"),
        sa.UniqueConstraint("seq", name="uq_acknowledgments_seq"),
        sa.UniqueConstraint("file_sha256", "unit", name="uq_acknowledgments_file_sha256_unit"),
    )
    op.create_index("ix_acknowledgments_file_sha256", "acknowledgments", ["file_sha256"])
    op.create_index("ix_acknowledgments_delivery_id", "acknowledgments", ["delivery_id"])


def downgrade() -> None:
    op.drop_index("ix_acknowledgments_delivery_id", table_name="acknowledgments")
    op.drop_index("ix_acknowledgments_file_sha256", table_name="acknowledgments")
    op.drop_table("acknowledgments")
