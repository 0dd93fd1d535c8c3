"""Employer authorisations of carriers, and purge checkpoints for retention; both hash-chained.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

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
        "authorisations",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("feed_id", sa.String(128), nullable=False),
        sa.Column("employer_id", sa.String(128), nullable=False),
        sa.Column("carrier_id", sa.String(128), nullable=False),
        sa.Column("plans", sa.Text(), nullable=False),
        sa.Column("effective_from", sa.Date(), nullable=False),
        sa.Column("effective_to", sa.Date(), nullable=True),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("recorded_by", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", _ts(), nullable=False),
        *_chain("authorisations"),
        sa.PrimaryKeyConstraint("id", name="pk_authorisations"),
    )
    op.create_index("ix_authorisations_feed_id", "authorisations", ["feed_id"])
    op.create_table(
        "purge_checkpoints",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("cutoff", _ts(), nullable=False),
        sa.Column("purged_rows", sa.BigInteger(), nullable=False),
        sa.Column("gaps", sa.Text(), nullable=False),
        sa.Column("counts", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("at", _ts(), nullable=False),
        *_chain("purge_checkpoints"),
        sa.PrimaryKeyConstraint("id", name="pk_purge_checkpoints"),
    )


def downgrade() -> None:
    op.drop_index("ix_authorisations_feed_id", table_name="authorisations")
    for table in ("purge_checkpoints", "authorisations"):
        op.drop_table(table)
