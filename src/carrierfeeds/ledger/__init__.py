"""The delivery ledger: SQLAlchemy models, hash chain, control numbers, Alembic migrations."""

from __future__ import annotations

from carrierfeeds.ledger import lifecycle as lifecycle  # its table joins AUDIT_TABLES and the chain
from carrierfeeds.ledger import notices as notices  # its table joins AUDIT_TABLES and the chain
from carrierfeeds.ledger import worklist as worklist  # its tables join AUDIT_TABLES and the chain
from carrierfeeds.ledger.chain import GENESIS, BrokenLink, ChainVerdict, canonical_json, sha256_hex
from carrierfeeds.ledger.records import (
    AckKind,
    AckStatus,
    DeliveryRecord,
    DeliveryStatus,
    Interchange,
    LedgerError,
    RunEvent,
    RunRecord,
    RunStatus,
    StageStatus,
    UnknownRecord,
    UnsafeLedgerValue,
    scrub_detail,
)
from carrierfeeds.ledger.roles import DEFAULT_APP_ROLE, app_role_sql, app_role_statements, grant_app_role
from carrierfeeds.ledger.store import MIGRATIONS, Ledger

__all__ = [
    "DEFAULT_APP_ROLE",
    "GENESIS",
    "MIGRATIONS",
    "AckKind",
    "AckStatus",
    "BrokenLink",
    "ChainVerdict",
    "DeliveryRecord",
    "DeliveryStatus",
    "Interchange",
    "Ledger",
    "LedgerError",
    "RunEvent",
    "RunRecord",
    "RunStatus",
    "StageStatus",
    "UnknownRecord",
    "UnsafeLedgerValue",
    "app_role_sql",
    "app_role_statements",
    "canonical_json",
    "grant_app_role",
    "scrub_detail",
    "sha256_hex",
]
