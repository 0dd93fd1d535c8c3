"""Indexes for the console board's questions: each feed's newest run, each delivery's latest outcome,
deliveries still awaiting an acknowledgment, hand-offs still pending.

Indexes only: no column or row changes, so every row's hash stays as written. The board asks these per
feed instead of folding every delivery of the ledger (``carrierfeeds.console.queries``).

Revision ID: 0009
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: name -> (table, columns); the same indexes are declared in ``carrierfeeds.ledger.models``.
INDEXES = {
    "ix_runs_feed_id_created_at": ("runs", ["feed_id", "created_at"]),
    "ix_delivery_outcomes_delivery_id_seq": ("delivery_outcomes", ["delivery_id", "seq"]),
    "ix_delivery_outcomes_status_delivery_id": ("delivery_outcomes", ["status", "delivery_id"]),
    "ix_acknowledgments_delivery_id_kind": ("acknowledgments", ["delivery_id", "kind"]),
}


def upgrade() -> None:
    for name, (table, columns) in INDEXES.items():
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, (table, _) in reversed(INDEXES.items()):
        op.drop_index(name, table_name=table)
