"""gpg beside the gate: the rendered file encrypted while it is checked, kept only on a pass.

Also the one way any ciphertext of a run is made (to the feed's pins) and kept (staging store, state)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carrierfeeds.config import EncryptionSpec
from carrierfeeds.errors import TransientError
from carrierfeeds.run.context import RunContext
from carrierfeeds.run.state import BuildState, EncryptState

if TYPE_CHECKING:
    from carrierfeeds.crypto import EncryptedFile

log = logging.getLogger(__name__)


def made_under(spec: EncryptionSpec) -> str:
    """The pins and options a ciphertext is made under; one made under others (a changed pin, armor or
    compression level) is not reused, it is made again."""
    return "|".join(str(v or "") for v in (spec.recipient_fingerprint, spec.recipient_encryption_subkey,
                                            spec.recipient_user_id, spec.signer_fingerprint, spec.armor,
                                            spec.compress_level))


def encrypt_to_pins(ctx: RunContext, plain: Path, out: Path, payload_sha256: str, *,
                     stop: threading.Event | None = None) -> EncryptedFile:
    """gpg over ``plain`` to the feed's pinned recipient, signed by ours; the bytes hashed as gpg reads
    them, so what is encrypted is what was gated (crypto.Keyring.encrypt_file)."""
    from carrierfeeds.crypto import Keyring

    spec = ctx.bundle.feed.encryption
    return Keyring(ctx.settings.resolved_gnupg_home).encrypt_file(
        plain, out, recipient=spec.recipient_fingerprint, signer=spec.signer_fingerprint, armor=spec.armor,
        compress_level=spec.compress_level, now=ctx.now(), warning_days=spec.expiry_warning_days,
        recipient_user_id=spec.recipient_user_id, recipient_encryption_subkey=spec.recipient_encryption_subkey,
        expect_sha256=payload_sha256, stop=stop)


def keep_ciphertext(ctx: RunContext, made: EncryptedFile, *, payload_sha256: str, ahead: bool) -> None:
    """Put a whole, checked ciphertext in the staging store and name it in the state; on any failure
    (a full store is a TransientError) neither happens and the local copy goes too, so a retry starts
    from nothing rather than from a ciphertext the state does not vouch for."""
    try:
        ctx.keep(made.path, phi=False)  # already encrypted to the recipient; a failed put stores nothing
    except BaseException:
        made.path.unlink(missing_ok=True)
        raise
    try:
        ctx.save_state(encrypted=EncryptState(
            cipher_name=made.path.name, ciphertext_sha256=made.sha256, cipher_bytes=made.size,
            encrypted_payload=payload_sha256, encrypted_under=made_under(ctx.bundle.feed.encryption),
            encrypted_ahead=ahead))
    except BaseException:
        made.path.unlink(missing_ok=True)
        try:
            ctx.store.remove(ctx.feed_id, ctx.ref.interval_start, made.path.name)
        except Exception as exc:  # the state does not name it, and the next encryption replaces it
            log.warning("feed %s run %s: an unkept ciphertext stays in the staging store (%s)", ctx.feed_id,
                        ctx.run_id, type(exc).__name__)
        raise


class EncryptionAhead:
    """gpg encrypting the rendered file (in its own process, fed by a thread) while the gate checks it.

    On a large file gpg and the gate each take seconds of CPU; one after the other they add up, side by
    side they share the cores. Fail closed:
    the ciphertext is kept (staging store, state) only by :meth:`commit`, once the gate has passed; on any
    other way out gpg is fed no more and its output removed, so a file the gate refuses is never
    encrypted as far as the run is concerned. The encrypt stage still checks the pinned key and the
    ciphertext's hash before it uses it. A failure here is never the stage's: the encrypt stage then
    encrypts itself and reports whatever stops it.
    """

    def __init__(self, ctx: RunContext, built: BuildState) -> None:
        self._ctx = ctx
        self._payload = built.payload_sha256
        self.cipher_name = built.file_name + ctx.bundle.feed.encryption.suffix
        self._out = ctx.run_dir / f".ahead.{self.cipher_name}"
        self._stop = threading.Event()
        self._made: EncryptedFile | None = None
        self._failure: str | None = None
        plain = ctx.fetch(built.file_name)  # here, not in the thread: the gate fetches the same file
        self._thread = threading.Thread(target=self._run, args=(plain,), name="encrypt-ahead", daemon=True)
        self._thread.start()

    def _run(self, plain: Path) -> None:
        try:
            self._made = encrypt_to_pins(self._ctx, plain, self._out, self._payload, stop=self._stop)
        except Exception as exc:  # reported by code or type only: never the stage's failure
            self._failure = getattr(exc, "code", None) or type(exc).__name__

    def settle(self) -> None:
        """Wait for gpg; if it did not succeed, remove what it wrote at once, so a full disk gpg ran into
        has its space back before the gate records its own state there."""
        self._thread.join()
        if self._made is None:
            self._out.unlink(missing_ok=True)

    def commit(self, detail: dict[str, Any]) -> None:
        """The gate passed: wait for gpg and keep what it made as the run's ciphertext."""
        self.settle()
        if self._made is None:
            log.warning("feed %s run %s: encrypting ahead did not succeed (%s); the encrypt stage encrypts",
                        self._ctx.feed_id, self._ctx.run_id, self._failure)
            detail.update(encrypted_ahead=False, encrypt_ahead_error=self._failure)
            return
        final = self._ctx.run_dir / self.cipher_name
        os.replace(self._out, final)
        made, self._made = self._made, None
        try:
            keep_ciphertext(self._ctx, replace(made, path=final), payload_sha256=self._payload, ahead=True)
        except TransientError as exc:  # e.g. a full staging store: the encrypt stage tries again itself
            log.warning("feed %s run %s: keeping the ciphertext made ahead failed (%s); the encrypt stage "
                        "encrypts", self._ctx.feed_id, self._ctx.run_id, exc.code)
            detail.update(encrypted_ahead=False, encrypt_ahead_error=exc.code)
            return
        detail.update(encrypted_ahead=True)

    def discard(self) -> None:
        """Stop feeding gpg, wait for it, remove anything it wrote (a no-op after commit)."""
        self._stop.set()
        self._thread.join()
        self._out.unlink(missing_ok=True)


class NoEncryptionAhead:
    def settle(self) -> None:
        return None

    def commit(self, detail: dict[str, Any]) -> None:
        return None


@contextmanager
def encryption_ahead(ctx: RunContext) -> Iterator[EncryptionAhead | NoEncryptionAhead]:
    """Encrypt ahead where it can pay: enabled, and no ciphertext of this payload made already."""
    state = ctx.state()
    built, made = state.built, state.encrypted
    if not ctx.settings.encrypt_ahead or built is None or \
            (made is not None and made.encrypted_payload == built.payload_sha256):
        yield NoEncryptionAhead()
        return
    ahead = EncryptionAhead(ctx, built)
    try:
        yield ahead
    finally:
        ahead.discard()


