"""Disclosures: what each delivery disclosed (fields, config hashes, member tokens); authorisation
references; who received a manual hand-off.

Two new hash-chained tables, and two nullable columns on chained tables (``authorisations.reference``,
``delivery_outcomes.received_by``) that a row's hash covers only when the row holds a value in them
(``models.LATE_COLUMNS``), so every row written before keeps its hash.

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0005"
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
        "disclosures",
        sa.Column("delivery_id", sa.String(32), nullable=False),
        sa.Column("allowlist", sa.Text(), nullable=False),
        sa.Column("fields", sa.Text(), nullable=False),
        sa.Column("feed_sha256", sa.String(64), nullable=False),
        sa.Column("mapping_sha256", sa.String(64), nullable=False),
        sa.Column("schema_sha256", sa.String(64), nullable=False),
        sa.Column("suite_sha256", sa.String(64), nullable=False),
        sa.Column("members", sa.Integer(), nullable=False),
        sa.Column("index_bits", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        *_chain("disclosures"),
        sa.PrimaryKeyConstraint("delivery_id", name="pk_disclosures"),
        sa.ForeignKeyConstraint(["delivery_id"], ["deliveries.delivery_id"],
                                name="fk_disclosures_delivery_id_deliveries"),
    )
    op.create_table(
        "disclosed_members",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("delivery_id", sa.String(32), nullable=False),
        sa.Column("bits", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("entries", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        *_chain("disclosed_members"),
        sa.PrimaryKeyConstraint("id", name="pk_disclosed_members"),
        sa.ForeignKeyConstraint(["delivery_id"], ["deliveries.delivery_id"],
                                name="fk_disclosed_members_delivery_id_deliveries"),
    )
    op.create_index("ix_disclosed_members_delivery_id", "disclosed_members", ["delivery_id"])
    op.create_index("ix_disclosed_members_bits_bucket", "disclosed_members", ["bits", "bucket"])
    with op.batch_alter_table("authorisations") as batch:
        batch.add_column(sa.Column("reference", sa.String(200), nullable=True))
    with op.batch_alter_table("delivery_outcomes") as batch:
        batch.add_column(sa.Column("received_by", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("delivery_outcomes") as batch:
        batch.drop_column("received_by")
    with op.batch_alter_table("authorisations") as batch:
        batch.drop_column("reference")
    op.drop_index("ix_disclosed_members_bits_bucket", table_name="disclosed_members")
    op.drop_index("ix_disclosed_members_delivery_id", table_name="disclosed_members")
    op.drop_table("disclosed_members")
    op.drop_table("disclosures")
