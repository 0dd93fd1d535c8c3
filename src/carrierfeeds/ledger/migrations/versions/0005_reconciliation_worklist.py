"""Reconciliation worklist: comparisons, discrepancies and their status events; hash-chained.

New tables only: every existing row's hash covers exactly the columns it was written with. Statuses and
last-seen times are events, not updates, so the application role keeps INSERT and SELECT alone.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _chain(table: str) -> list[Any]:
    return [
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("row_hash", sa.String(64), nullable=False),
        sa.UniqueConstraint("seq", name=f"uq_{table}_seq"),
    ]


def upgrade() -> None:
    op.create_table(
        "reconciliations",
        sa.Column("comparison_id", sa.String(32), nullable=False),
        sa.Column("feed_id", sa.String(128), nullable=False),
        sa.Column("file_sha256", sa.String(64), nullable=False),
        sa.Column("file_name", sa.String(255), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("counts", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        *_chain("reconciliations"),
        sa.PrimaryKeyConstraint("comparison_id", name="pk_reconciliations"),
    )
    op.create_index("ix_reconciliations_feed_id", "reconciliations", ["feed_id"])
    op.create_table(
        "discrepancies",
        sa.Column("discrepancy_id", sa.String(32), nullable=False),
        sa.Column("feed_id", sa.String(128), nullable=False),
        sa.Column("key_sha256", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("member_token", sa.String(64), nullable=False),
        sa.Column("field", sa.String(64), nullable=False),
        sa.Column("coverage_line", sa.String(16), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("comparison_id", sa.String(32), nullable=False),
        *_chain("discrepancies"),
        sa.PrimaryKeyConstraint("discrepancy_id", name="pk_discrepancies"),
        sa.ForeignKeyConstraint(["comparison_id"], ["reconciliations.comparison_id"],
                                name="fk_discrepancies_comparison_id_reconciliations"),
        sa.UniqueConstraint("feed_id", "key_sha256", name="uq_discrepancies_feed_id_key_sha256"),
    )
    op.create_table(
        "discrepancy_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("discrepancy_id", sa.String(32), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("comparison_id", sa.String(32), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        *_chain("discrepancy_events"),
        sa.PrimaryKeyConstraint("id", name="pk_discrepancy_events"),
        sa.ForeignKeyConstraint(["discrepancy_id"], ["discrepancies.discrepancy_id"],
                                name="fk_discrepancy_events_discrepancy_id_discrepancies"),
        sa.ForeignKeyConstraint(["comparison_id"], ["reconciliations.comparison_id"],
                                name="fk_discrepancy_events_comparison_id_reconciliations"),
    )
    op.create_index("ix_discrepancy_events_discrepancy_id", "discrepancy_events", ["discrepancy_id"])


def downgrade() -> None:
    op.drop_index("ix_discrepancy_events_discrepancy_id", table_name="discrepancy_events")
    op.drop_table("discrepancy_events")
    op.drop_table("discrepancies")
    op.drop_index("ix_reconciliations_feed_id", table_name="reconciliations")
    op.drop_table("reconciliations")
