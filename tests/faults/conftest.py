"""Fault-injection fixtures: a fresh inbox on the session sshd."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from carrierfeeds.testing.sshd import Sshd


@pytest.fixture
def inbox(sshd_server: Sshd) -> Path:
    """A fresh, empty folder on the loopback server for one test (absolute remote_dir)."""
    path = sshd_server.root / uuid.uuid4().hex[:12]
    path.mkdir()
    return path
