"""A large ciphertext through a throttling relay to the real sshd: the uploading process's memory stays
bounded (its peak RSS grows by a fixed allowance, not with the file), and the file lands whole, once.

The upload runs in its own process (``upload_probe.py``) so its peak RSS (VmHWM) is its alone; the
payload is random bytes standing in for gpg output (incompressible, like a real ciphertext).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from faultkit import HERE, child_env
from relay import Relay, running_relay

from carrierfeeds.testing.sshd import Sshd
from carrierfeeds.transport.base import temp_name

log = logging.getLogger(__name__)

MB = 1024 * 1024
NAME = "CARRIERFEEDS_SUNRISEHP_000000042_20261119.834.pgp"
#: Peak-RSS growth allowed to the uploading process, whatever the file size: paramiko's buffers and our
#: one read chunk. Below the smaller file's size, so a transfer that held the file (or the
#: unacknowledged part of a pipelined upload) in memory fails either case.
GROWTH_CAP_MB = 32


def _random_file(path: Path, size: int) -> str:
    """``size`` random bytes at ``path`` written a chunk at a time; returns their sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as fh:
        left = size
        while left:
            chunk = os.urandom(min(left, 4 * MB))
            fh.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(4 * MB):
            digest.update(chunk)
    return digest.hexdigest()


def _upload_through_relay(sshd: Sshd, inbox: Path, tmp_path: Path, size: int, rate: float,
                          cut_after: int | None = None) -> dict[str, Any]:
    local = tmp_path / "payload.pgp"
    sent_sha = _random_file(local, size)
    try:
        reset_at = Relay.first_after(cut_after) if cut_after is not None else None
        with running_relay((sshd.host, sshd.port), rate=rate, reset_at=reset_at) as relay:
            spec = {"host": "127.0.0.1", "port": relay.port, "username": sshd.username,
                    "private_key_path": str(sshd.client_key_path),
                    "known_hosts": relay.known_hosts(sshd.host_public_key_line),
                    "remote_dir": str(inbox), "local": str(local), "remote_name": NAME,
                    "retries": 1 if cut_after is None else 2}
            spec_path = tmp_path / "spec.json"
            spec_path.write_text(json.dumps(spec))
            done = subprocess.run([sys.executable, str(HERE / "upload_probe.py"), str(spec_path)],
                                  env=child_env(), capture_output=True, text=True, timeout=600, check=False)
            assert done.returncode == 0, done.stderr[-3000:]
            result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
            result["relay"] = relay.stats
        arrived = sorted(p.name for p in inbox.iterdir())
        assert arrived == [NAME], arrived  # one final file, no temp file beside it
        assert temp_name(NAME) not in arrived
        assert (inbox / NAME).stat().st_size == size
        assert _sha256(inbox / NAME) == sent_sha
        return result
    finally:
        # Hundreds of MB each: never left for pytest's kept temp folders.
        local.unlink(missing_ok=True)
        for p in inbox.iterdir():
            p.unlink()


def _check_bounded(result: dict[str, Any], size: int, *, connections: int = 1) -> None:
    growth_mb = (result["hwm_after_kb"] - result["hwm_before_kb"]) / 1024
    log.info("%d MB through the relay: peak RSS %.1f MB before, %.1f MB after (+%.1f MB); %d throttle waits",
             size // MB, result["hwm_before_kb"] / 1024, result["hwm_after_kb"] / 1024, growth_mb,
             result["relay"].throttle_waits)
    assert result["size"] == size and result["attempts"] == connections
    assert result["relay"].connections == connections and result["relay"].resets == connections - 1
    assert result["relay"].bytes_up >= size  # every byte went through the throttled relay
    assert growth_mb < GROWTH_CAP_MB, (
        f"uploading {size // MB} MB raised the peak RSS by {growth_mb:.1f} MB "
        f"(from {result['hwm_before_kb'] // 1024} MB)")


def test_50mb_through_a_throttling_relay_keeps_the_uploader_memory_bounded(
        sshd_server: Sshd, inbox: Path, tmp_path: Path) -> None:
    size = 50 * MB
    result = _upload_through_relay(sshd_server, inbox, tmp_path, size, rate=12 * MB)
    _check_bounded(result, size)


def test_a_transfer_cut_half_way_is_sent_again_whole_once_and_in_bounded_memory(
        sshd_server: Sshd, inbox: Path, tmp_path: Path) -> None:
    size = 50 * MB
    result = _upload_through_relay(sshd_server, inbox, tmp_path, size, rate=12 * MB, cut_after=size // 2)
    assert result["relay"].reset_offsets == [size // 2]
    _check_bounded(result, size, connections=2)  # and one whole file, no temp file (checked on upload)


@pytest.mark.slow
def test_500mb_through_a_throttling_relay_keeps_the_uploader_memory_bounded(
        sshd_server: Sshd, inbox: Path, tmp_path: Path) -> None:
    size = 500 * MB
    result = _upload_through_relay(sshd_server, inbox, tmp_path, size, rate=12 * MB)
    _check_bounded(result, size)
