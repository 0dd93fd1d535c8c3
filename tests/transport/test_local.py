"""LocalTransport: the same atomic, never-overwrite hand-off into a folder on this machine."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from carrierfeeds.errors import PermanentError, Refused
from carrierfeeds.transport.base import RemoteFile, RemoteFileExists, Transport
from carrierfeeds.transport.local import LocalTransport

NAME = "ACME_834_20260301_000000001.x12.pgp"


def test_delivers_complete_file_and_creates_inbox(tmp_path: Path, make_payload: Callable[..., Path]) -> None:
    local = make_payload(1_500_000)
    inbox = tmp_path / "carrier" / "inbox"
    transport = LocalTransport(inbox)
    assert isinstance(transport, Transport)
    assert transport.stat(NAME) is None

    receipt = transport.deliver(local, NAME)

    assert receipt.remote_path == str(inbox / NAME)
    assert receipt.size == 1_500_000 and receipt.attempts == 1 and receipt.host_key_fingerprint is None
    assert [p.name for p in inbox.iterdir()] == [NAME]
    assert (inbox / NAME).read_bytes() == local.read_bytes()
    assert stat.S_IMODE((inbox / NAME).stat().st_mode) == 0o600
    assert stat.S_IMODE(inbox.stat().st_mode) == 0o700
    assert transport.stat(NAME) == RemoteFile(NAME, 1_500_000)


def test_never_overwrites(tmp_path: Path, make_payload: Callable[..., Path]) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / NAME).write_bytes(b"delivered yesterday")
    with pytest.raises(RemoteFileExists) as caught:
        LocalTransport(inbox).deliver(make_payload(100), NAME)
    assert isinstance(caught.value, PermanentError)
    assert (inbox / NAME).read_bytes() == b"delivered yesterday"
    assert [p.name for p in inbox.iterdir()] == [NAME]


def test_stale_temp_file_is_replaced(tmp_path: Path, make_payload: Callable[..., Path]) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / f".{NAME}.part").write_bytes(b"half" * 10_000)
    local = make_payload(5_000)
    LocalTransport(inbox).deliver(local, NAME)
    assert [p.name for p in inbox.iterdir()] == [NAME]
    assert (inbox / NAME).read_bytes() == local.read_bytes()


@pytest.mark.parametrize("bad", ["", "a/b", "../up", "..", ".hidden", "x\x00y"])
def test_remote_name_must_be_plain(tmp_path: Path, bad: str, make_payload: Callable[..., Path]) -> None:
    inbox = tmp_path / "inbox"
    with pytest.raises(Refused):
        LocalTransport(inbox).deliver(make_payload(10), bad)
    with pytest.raises(Refused):
        LocalTransport(inbox).stat(bad)
    assert not inbox.exists() or list(inbox.iterdir()) == []
