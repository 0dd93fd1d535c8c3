"""What reconciliation asks of the SFTP server (real OpenSSH sshd): a file's SHA-256 by reading it back
(OpenSSH offers no check-file), and whether an upload still sits under its temp name."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from carrierfeeds.testing.sshd import Sshd
from carrierfeeds.transport.base import temp_name
from carrierfeeds.transport.sftp import SftpTransport

NAME = "ACME_834_20260301_000000001.x12.pgp"


def test_sha256_reads_the_remote_file_back_and_tells_a_same_size_foreign_file_apart(
        sshd_server: Sshd, inbox: Path, make_payload: Callable[..., Path]) -> None:
    local = make_payload(2 * 1024 * 1024 + 3)
    transport = SftpTransport(sshd_server.endpoint(), str(inbox))
    assert transport.sha256(NAME) is None
    transport.deliver(local, NAME)
    assert transport.sha256(NAME) == hashlib.sha256(local.read_bytes()).hexdigest()
    foreign = bytes(b ^ 1 for b in local.read_bytes())
    (inbox / NAME).write_bytes(foreign)
    assert transport.sha256(NAME) == hashlib.sha256(foreign).hexdigest() != hashlib.sha256(
        local.read_bytes()).hexdigest()


def test_temp_exists_sees_only_the_temp_name(sshd_server: Sshd, inbox: Path) -> None:
    transport = SftpTransport(sshd_server.endpoint(), str(inbox))
    assert transport.temp_exists(NAME) is False
    (inbox / NAME).write_bytes(b"final")
    assert transport.temp_exists(NAME) is False
    (inbox / temp_name(NAME)).write_bytes(b"half")
    assert transport.temp_exists(NAME) is True
