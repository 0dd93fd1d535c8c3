"""Feed lifecycle: one hash-chained row per change of a feed's state (testing, certified, production,
suspended), with actor, the carrier's reference and the go-live date.

A new table only: every existing row's hash covers exactly the columns it was written with.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "feed_lifecycle",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("feed_id", sa.String(128), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("reference", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("go_live", sa.Date(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("row_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_feed_lifecycle"),
        sa.UniqueConstraint("seq", name="uq_feed_lifecycle_seq"),
    )
    op.create_index("ix_feed_lifecycle_feed_id", "feed_lifecycle", ["feed_id"])


def downgrade() -> None:
    op.drop_index("ix_feed_lifecycle_feed_id", table_name="feed_lifecycle")
    op.drop_table("feed_lifecycle")
