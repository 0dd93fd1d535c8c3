"""The ledger's tables: append-only, hash-chained audit tables and two small mutable bookkeeping tables.

Audit tables (``runs``, ``run_events``, ``interchanges``, ``deliveries``, ``delivery_outcomes``,
``audit_events``) are only ever INSERTed into; an outcome is a new row, never an UPDATE of its intent,
so a least-privilege role with INSERT and SELECT alone can run the pipeline. Each audit row carries
``seq`` (its place in the one global chain), ``prev_hash`` and ``row_hash``. The bookkeeping tables
(``control_counters``, ``chain_head``) are the only ones the application role may UPDATE.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

metadata = sa.MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
})

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC instant on every backend: refuses naive input, returns aware UTC values.

    PostgreSQL stores ``timestamptz``; SQLite has no zone, so the value is stored as UTC wall time and
    the zone is put back on the way out. Either way the ledger reads back exactly what it hashed.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("the ledger stores timezone-aware datetimes only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _chain_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("seq", sa.BigInteger(), nullable=False, unique=True),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("row_hash", sa.String(64), nullable=False),
    ]


runs = sa.Table(
    "runs", metadata,
    sa.Column("run_id", sa.String(32), primary_key=True),
    sa.Column("feed_id", sa.String(128), nullable=False),
    sa.Column("interval_start", sa.Date(), nullable=False),
    sa.Column("interval_end", sa.Date(), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    *_chain_columns(),
    sa.UniqueConstraint("feed_id", "interval_start", "interval_end"),
)

run_events = sa.Table(
    "run_events", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.run_id"), nullable=False, index=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("stage", sa.String(64), nullable=True),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("actor", sa.String(128), nullable=True),
    sa.Column("detail", sa.Text(), nullable=False),
    sa.Column("error_code", sa.String(64), nullable=True),
    sa.Column("message", sa.Text(), nullable=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    *_chain_columns(),
)

interchanges = sa.Table(
    "interchanges", metadata,
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.run_id"), primary_key=True),
    sa.Column("sender_id", sa.String(64), nullable=False),
    sa.Column("receiver_id", sa.String(64), nullable=False),
    sa.Column("isa13", sa.Integer(), nullable=False),
    sa.Column("gs06", sa.Integer(), nullable=False),
    sa.Column("st02", sa.Integer(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    *_chain_columns(),
)

deliveries = sa.Table(
    "deliveries", metadata,
    sa.Column("delivery_id", sa.String(32), primary_key=True),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.run_id"), nullable=False, index=True),
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
    sa.Column("created_at", UTCDateTime(), nullable=False),
    *_chain_columns(),
    sa.UniqueConstraint("feed_id", "interval_start", "payload_sha256"),
)

delivery_outcomes = sa.Table(
    "delivery_outcomes", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("delivery_id", sa.String(32), sa.ForeignKey("deliveries.delivery_id"), nullable=False,
              index=True),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("ciphertext_sha256", sa.String(64), nullable=True),
    sa.Column("size", sa.BigInteger(), nullable=True),
    sa.Column("remote_path", sa.String(1024), nullable=True),
    sa.Column("host_key_fingerprint", sa.String(128), nullable=True),
    sa.Column("error_code", sa.String(64), nullable=True),
    sa.Column("message", sa.Text(), nullable=True),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("reason", sa.Text(), nullable=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    *_chain_columns(),
)

audit_events = sa.Table(
    "audit_events", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("object_type", sa.String(64), nullable=False),
    sa.Column("object_id", sa.String(128), nullable=False),
    sa.Column("reason", sa.Text(), nullable=True),
    sa.Column("detail", sa.Text(), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    *_chain_columns(),
)

control_counters = sa.Table(
    "control_counters", metadata,
    sa.Column("sender_id", sa.String(64), primary_key=True),
    sa.Column("receiver_id", sa.String(64), primary_key=True),
    sa.Column("last_control", sa.Integer(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

chain_head = sa.Table(
    "chain_head", metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger(), nullable=False),
    sa.Column("row_hash", sa.String(64), nullable=False),
)

#: Every hash-chained table, and the column naming a row in a verdict.
AUDIT_TABLES: dict[str, tuple[sa.Table, str]] = {
    "runs": (runs, "run_id"),
    "run_events": (run_events, "id"),
    "interchanges": (interchanges, "run_id"),
    "deliveries": (deliveries, "delivery_id"),
    "delivery_outcomes": (delivery_outcomes, "id"),
    "audit_events": (audit_events, "id"),
}
#: The tables the application role may UPDATE: counters and the chain head, nothing auditable.
BOOKKEEPING_TABLES: tuple[sa.Table, ...] = (control_counters, chain_head)
CHAIN_FIELDS = ("seq", "prev_hash", "row_hash")


def hashed_columns(table: sa.Table) -> list[str]:
    """The content a row's hash covers: every column but the chain fields (hashed on their own) and
    the surrogate ``id`` the database assigns after the hash is made."""
    return [c.name for c in table.columns
            if c.name not in CHAIN_FIELDS and not (c.name == "id" and c.autoincrement is True)]


#: Nullable columns added to a table after rows were written: a row's hash covers one only when the row
#: holds a value in it, so every row written before the column existed keeps the hash it was chained with.
LATE_COLUMNS: dict[str, frozenset[str]] = {}


def row_content(table: sa.Table, values: Any) -> dict[str, Any]:
    """The content a row's hash covers, from a mapping of its values (see ``LATE_COLUMNS``)."""
    late = LATE_COLUMNS.get(table.name, frozenset())
    return {c: values.get(c) for c in hashed_columns(table) if c not in late or values.get(c) is not None}


# ------------------------------------------------------------ authorisations and retention (0002)
authorisations = sa.Table(
    "authorisations", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("feed_id", sa.String(128), nullable=False, index=True),
    sa.Column("employer_id", sa.String(128), nullable=False),
    sa.Column("carrier_id", sa.String(128), nullable=False),
    sa.Column("plans", sa.Text(), nullable=False),
    sa.Column("effective_from", sa.Date(), nullable=False),
    sa.Column("effective_to", sa.Date(), nullable=True),
    sa.Column("content_sha256", sa.String(64), nullable=False),
    sa.Column("recorded_by", sa.String(128), nullable=False),
    sa.Column("reason", sa.Text(), nullable=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    *_chain_columns(),
)

# One row per ledger purge: the chain links it removed, as contiguous gaps, so the walk can step over
# them (see carrierfeeds.retention). Never purged itself.
purge_checkpoints = sa.Table(
    "purge_checkpoints", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("cutoff", UTCDateTime(), nullable=False),
    sa.Column("purged_rows", sa.BigInteger(), nullable=False),
    sa.Column("gaps", sa.Text(), nullable=False),
    sa.Column("counts", sa.Text(), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    *_chain_columns(),
)

AUDIT_TABLES.update({
    "authorisations": (authorisations, "id"),
    "purge_checkpoints": (purge_checkpoints, "id"),
})


# ----------------------------------------------------------------- carriers' acknowledgments (0003)
# One row per acknowledgment unit read from a carrier's file (a TA1, or one 999's AK1..AK9 group), or
# one "unreadable" row for a file that held none, so every file is processed exactly once (by its
# sha256 as received). ``delivery_id`` is null when the acknowledgment matched no delivery: kept and
# reported, never dropped. ``codes`` is compact JSON of positions and codes only (never IK404 data).
acknowledgments = sa.Table(
    "acknowledgments", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("file_sha256", sa.String(64), nullable=False, index=True),
    sa.Column("unit", sa.Integer(), nullable=False),
    sa.Column("source_id", sa.String(128), nullable=False),
    sa.Column("file_name", sa.String(255), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("sender_id", sa.String(64), nullable=True),
    sa.Column("receiver_id", sa.String(64), nullable=True),
    sa.Column("control_number", sa.Integer(), nullable=True),
    sa.Column("isa13", sa.Integer(), nullable=True),
    sa.Column("delivery_id", sa.String(32), sa.ForeignKey("deliveries.delivery_id"), nullable=True,
              index=True),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("sets_accepted", sa.Integer(), nullable=False),
    sa.Column("sets_rejected", sa.Integer(), nullable=False),
    sa.Column("segment_errors", sa.Integer(), nullable=False),
    sa.Column("element_errors", sa.Integer(), nullable=False),
    sa.Column("codes", sa.Text(), nullable=False),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    *_chain_columns(),
    sa.UniqueConstraint("file_sha256", "unit"),
)

AUDIT_TABLES.update({"acknowledgments": (acknowledgments, "id")})


# ------------------------------------------------------------------------------ forced resends (0004)
# A forced resend is a new transmission: its own ISA13/GS06/ST02 (from the pair's counter, like a run's
# first numbers in ``interchanges``), numbered 1, 2, ... within the run, naming the delivery it replaces.
# Its delivery row is the one of the same run carrying these control numbers.
resends = sa.Table(
    "resends", metadata,
    sa.Column("resend_id", sa.String(32), primary_key=True),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.run_id"), nullable=False, index=True),
    sa.Column("number", sa.Integer(), nullable=False),
    sa.Column("replaces_delivery_id", sa.String(32), sa.ForeignKey("deliveries.delivery_id"), nullable=False),
    sa.Column("sender_id", sa.String(64), nullable=False),
    sa.Column("receiver_id", sa.String(64), nullable=False),
    sa.Column("isa13", sa.Integer(), nullable=False),
    sa.Column("gs06", sa.Integer(), nullable=False),
    sa.Column("st02", sa.Integer(), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    *_chain_columns(),
    sa.UniqueConstraint("run_id", "number"),
)

AUDIT_TABLES.update({"resends": (resends, "resend_id")})


# ------------------------------------------------------------ disclosures and hand-off receipts (0007)
# What each delivery disclosed: the fields (the carrier's allowlist in effect and the census fields the
# rendered file actually carries) and the sha256 of the feed, mapping, schema and suite files it ran under.
disclosures = sa.Table(
    "disclosures", metadata,
    sa.Column("delivery_id", sa.String(32), sa.ForeignKey("deliveries.delivery_id"), primary_key=True),
    sa.Column("allowlist", sa.Text(), nullable=False),
    sa.Column("fields", sa.Text(), nullable=False),
    sa.Column("feed_sha256", sa.String(64), nullable=False),
    sa.Column("mapping_sha256", sa.String(64), nullable=False),
    sa.Column("schema_sha256", sa.String(64), nullable=False),
    sa.Column("suite_sha256", sa.String(64), nullable=False),
    sa.Column("members", sa.Integer(), nullable=False),
    #: The member index's shape: its tokens are split into 2**bits buckets by their leading bits.
    sa.Column("index_bits", sa.Integer(), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    *_chain_columns(),
)

# Which members a delivery carried, by member token only (never a member id): one row per non-empty
# bucket, each a base64 run of sorted 9-byte entries (the token's 8 bytes, the member's INS03 code index).
# A token is looked up in one bucket per delivery (see ledger.disclosures): a large file is read one bucket at a time.
disclosed_members = sa.Table(
    "disclosed_members", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("delivery_id", sa.String(32), sa.ForeignKey("deliveries.delivery_id"), nullable=False,
              index=True),
    sa.Column("bits", sa.Integer(), nullable=False),
    sa.Column("bucket", sa.Integer(), nullable=False),
    sa.Column("entries", sa.Text(), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    *_chain_columns(),
    sa.Index("ix_disclosed_members_bits_bucket", "bits", "bucket"),
)

authorisations.append_column(sa.Column("reference", sa.String(200), nullable=True))
delivery_outcomes.append_column(sa.Column("received_by", sa.String(128), nullable=True))
LATE_COLUMNS.update({"authorisations": frozenset({"reference"}),
                     "delivery_outcomes": frozenset({"received_by"})})

AUDIT_TABLES.update({"disclosures": (disclosures, "delivery_id"),
                     "disclosed_members": (disclosed_members, "id")})
