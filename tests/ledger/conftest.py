"""Ledger fixtures: an upgraded ledger on SQLite and PostgreSQL, a fixed clock and raw SQL access."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from ledger_helpers import Clock

from carrierfeeds.ledger import Ledger


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    """An empty, upgraded ledger on each backend (``ledger_url`` comes from tests/conftest.py)."""
    opened = Ledger.open(ledger_url)
    opened.upgrade()
    yield opened
    opened.close()


@pytest.fixture
def raw(ledger: Ledger) -> sa.Engine:
    """The same database without the ledger in between: how a tamperer (or an auditor) sees it."""
    return ledger.engine


@pytest.fixture
def clock() -> Clock:
    return Clock()
