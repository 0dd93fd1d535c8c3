"""What every part of the ``Ledger`` shares: its engine, the chain-locked write transaction, reads."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from carrierfeeds.ledger import models as m
from carrierfeeds.ledger.chain import row_hash
from carrierfeeds.ledger.records import LedgerError


@dataclass
class Tx:
    """A write transaction holding the chain head lock; appends extend the chain in memory first."""

    conn: Connection
    seq: int
    head: str
    appended: int = field(default=0)

    def append(self, table: sa.Table, values: Mapping[str, Any]) -> int:
        seq = self.seq + 1
        content = m.row_content(table, values)
        digest = row_hash(table.name, seq, content, self.head)
        self.conn.execute(sa.insert(table).values(**content, seq=seq, prev_hash=self.head, row_hash=digest))
        self.seq, self.head = seq, digest
        self.appended += 1
        return seq


class LedgerBase:
    """The engine and the two ways in: ``_write`` (holds the chain head lock) and ``_read``."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @property
    def engine(self) -> Engine:
        return self._engine

    @contextmanager
    def _write(self) -> Iterator[Tx]:
        with self._engine.begin() as conn:
            row = conn.execute(sa.select(m.chain_head.c.seq, m.chain_head.c.row_hash)
                               .where(m.chain_head.c.id == 1).with_for_update()).one_or_none()
            if row is None:
                raise LedgerError("the ledger has no chain head: run upgrade() first")
            tx = Tx(conn, int(row.seq), str(row.row_hash))
            yield tx
            if tx.appended:
                conn.execute(sa.update(m.chain_head).where(m.chain_head.c.id == 1)
                             .values(seq=tx.seq, row_hash=tx.head))

    @contextmanager
    def _read(self, *, snapshot: bool = False) -> Iterator[Connection]:
        with self._engine.connect() as conn:
            opts: dict[str, Any] = {"sqlite_begin": "DEFERRED"}
            if snapshot and conn.dialect.name == "postgresql":
                opts["isolation_level"] = "REPEATABLE READ"
            conn = conn.execution_options(**opts)
            with conn.begin():
                yield conn
