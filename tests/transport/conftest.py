"""Transport fixtures on real parts: the session sshd (tests/conftest.py), a read-only sshd, payloads."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from carrierfeeds.testing.sshd import Sshd, running_sshd, write_ed25519_key


@pytest.fixture
def inbox(sshd_server: Sshd) -> Path:
    """A fresh, empty folder on the loopback server for one test (absolute remote_dir)."""
    path = sshd_server.root / uuid.uuid4().hex[:12]
    path.mkdir()
    return path


@pytest.fixture(scope="module")
def read_only_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """An sshd whose SFTP refuses every write with "permission denied" (works when tests run as root)."""
    with running_sshd(tmp_path_factory.mktemp("sshd-ro"), read_only=True) as server:
        yield server


@pytest.fixture
def make_payload(tmp_path: Path) -> Callable[[int], Path]:
    """A synthetic random payload of ``size`` bytes (stands in for ciphertext)."""

    def make(size: int, name: str = "payload.pgp") -> Path:
        path = tmp_path / "outgoing" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(os.urandom(size))
        return path

    return make


@pytest.fixture
def stranger_key(tmp_path: Path) -> Path:
    """A client key the server does not authorise."""
    path = tmp_path / "stranger_ed25519"
    write_ed25519_key(path)
    return path
