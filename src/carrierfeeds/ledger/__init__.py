"""The delivery ledger: SQLAlchemy models, hash chain, control numbers, Alembic migrations."""
