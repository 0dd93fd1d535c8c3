"""Manual hand-off: the encrypted file waits in a private outbox (0700 dir, 0600 file) until a person
delivers it and confirms that in the ledger (``carrierfeeds handoff confirm``).

Placing a file is atomic and never overwrites (the same rules as a carrier inbox); the Receipt it
returns means "ready to hand off", not "received": the pipeline records outcome ``pending_handoff``.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from carrierfeeds.errors import PermanentError
from carrierfeeds.transport.base import Receipt, RemoteFile, check_remote_name
from carrierfeeds.transport.local import LocalTransport

log = logging.getLogger(__name__)

#: The ledger outcome a placed file gets, and the one a person's confirmation appends.
PENDING_HANDOFF = "pending_handoff"
HANDED_OFF = "handed_off"


class ManualTransport:
    """A private outbox folder on this machine; what lands there is handed over by a person."""

    name = "manual"

    def __init__(self, outbox: Path) -> None:
        self.outbox = Path(outbox)

    def _private_outbox(self) -> Path:
        """The outbox as a real directory with mode 0700 (created, or tightened if it was looser)."""
        self.outbox.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = os.lstat(self.outbox)
        if not stat.S_ISDIR(st.st_mode):
            # A symlink could point the outbox anywhere; fail closed rather than follow it.
            raise PermanentError("the hand-off outbox is not a plain directory",
                                 details={"outbox": self.outbox.name})
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(self.outbox, 0o700)
        return self.outbox

    def stat(self, remote_name: str) -> RemoteFile | None:
        check_remote_name(remote_name)
        try:
            st = (self.outbox / remote_name).stat()
        except FileNotFoundError:
            return None
        return RemoteFile(name=remote_name, size=st.st_size)

    def sha256(self, remote_name: str) -> str | None:
        """The SHA-256 of a placed file, or None when there is none (reconciliation)."""
        return LocalTransport(self.outbox).sha256(remote_name)

    def deliver(self, local: Path, remote_name: str, *, expect_sha256: str | None = None) -> Receipt:
        """Place ``local`` (already encrypted) in the outbox as ``remote_name``: complete or not at all,
        mode 0600, never over an existing file (RemoteFileExists); with ``expect_sha256`` only bytes that
        hash to it."""
        check_remote_name(remote_name)
        outbox = self._private_outbox()
        # LocalTransport writes a 0600 temp file, fsyncs it and links it into place without overwriting.
        receipt = LocalTransport(outbox).deliver(local, remote_name, expect_sha256=expect_sha256)
        placed = outbox / remote_name
        if stat.S_IMODE(placed.stat().st_mode) != 0o600:
            os.chmod(placed, 0o600)
        log.info("placed %s in the hand-off outbox (%d bytes); pending a person's hand-off", remote_name,
                 receipt.size)
        return Receipt(remote_path=str(placed), size=receipt.size, host_key_fingerprint=None, attempts=1)
