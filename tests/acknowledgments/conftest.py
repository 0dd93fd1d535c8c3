"""Acknowledgment fixtures: an upgraded ledger on SQLite and PostgreSQL, and the carrier's outbox folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from carrierfeeds.ledger import Ledger


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    """The ledger on SQLite and on PostgreSQL (``ledger_url`` comes from tests/conftest.py): matching and
    status are SQL."""
    opened = Ledger.open(ledger_url)
    opened.upgrade()
    yield opened
    opened.close()


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    """The folder a carrier drops its acknowledgments in."""
    folder = tmp_path / "carrier-outbox"
    folder.mkdir()
    return folder
