"""The loopback sshd kit itself: what it exposes, and that it always cleans up."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from carrierfeeds.testing.sshd import Sshd, running_sshd


def test_exposes_pinnable_server(sshd_server: Sshd) -> None:
    assert sshd_server.host == "127.0.0.1"
    assert re.fullmatch(rf"\[127\.0\.0\.1\]:{sshd_server.port} ssh-ed25519 AAAA\S+\n",
                        sshd_server.known_hosts_text)
    assert sshd_server.root.is_dir() and sshd_server.root.is_absolute()
    assert sshd_server.client_key_path.stat().st_mode & 0o077 == 0


def test_daemon_is_stopped_even_when_the_body_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), running_sshd(tmp_path / "sshd") as server:
        proc = server.process
        assert proc is not None and proc.poll() is None
        raise RuntimeError("boom")
    assert proc.poll() is not None
    assert server.process is None
