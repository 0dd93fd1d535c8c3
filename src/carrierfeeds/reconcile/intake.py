"""Collect the carrier's return files from its SFTP outbox: each new file decrypted whole, or kept aside.

    collect_returns(source, ...)   list the outbox, fetch each new file under the cap, decrypt, verify

The carrier's side is only read: files are listed, stat'ed and read, never renamed or deleted (the
outbox is the carrier's; what we took is known by sha256 through ``seen``). The connection is the
house's pinned one (:class:`~carrierfeeds.census.sftp_source.SftpCensusDrop`): host key from the
endpoint's known_hosts, an unknown or changed key refused before authentication, never trust-on-first-use.

Every listed file ends as one :class:`ReturnFile`:

* ``collected``: the plaintext is in ``into`` (0600, named by its sha256), whole; the caller imports it.
* ``refused``: the file is over ``max_bytes`` (as listed, as read, or decrypted: OpenPGP compresses),
  does not decrypt with our key, or, when ``signed_by`` is set, is unsigned, signed by another key or by
  more keys than the pinned one. Nothing of it is in ``into``; it is kept aside in ``aside/`` next to
  ``into``: the ciphertext as received (``<sha256>.pgp``; none for a file over the cap, which is never
  downloaded) and ``<id>.reason.json`` (names, sizes, hashes, fingerprints, a reason code: no PHI). A
  refused file is refused again on every collection until the carrier replaces it or ops fix the keys.
* ``deferred``: the file could not be read this time (it changed while being read, a dropped connection
  after the retries); nothing kept, the next collection tries again.

Files already imported (``seen`` says yes for the ciphertext's or the plaintext's sha256) are skipped
and not listed in the result. Knowing a file by its hash means downloading it: a carrier that keeps its
old files in the outbox costs a download of each on every collection, unless the caller passes
``listed_before``, which skips a file by the listing alone (name, size and modification time as
recorded from an earlier ``ReturnFile``): cheaper, and trusting that the carrier never rewrites a file
in place within the same second at the same size.

A refused file never stops the others. An unpinned or changed host key, a pinned signer that is
missing, expired or revoked, or an outbox that cannot be listed raises, and then no plaintext of this
call is left in ``into``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from carrierfeeds.census.sftp_source import RemoteCensus, SftpCensusDrop
from carrierfeeds.credentials import Connections
from carrierfeeds.crypto import Keyring, normalize_fingerprint
from carrierfeeds.errors import (
    ConfigError,
    DataError,
    HostKeyRefused,
    KeyRefused,
    PermanentError,
    Refused,
    TransientError,
)
from carrierfeeds.files import open_private, sha256_and_size
from carrierfeeds.hardening import loggable

log = logging.getLogger(__name__)

ASIDE = "aside"
Outcome = Literal["collected", "refused", "deferred"]


class Reason(StrEnum):
    """Why a return file was not collected (``ReturnFile.reason``, and the reason file's ``reason``)."""

    TOO_LARGE = "too_large"
    """Over ``max_bytes`` as listed or while read: never downloaded whole, nothing kept but the reason."""
    DECOMPRESSED_TOO_LARGE = "decompressed_too_large"
    """Decrypts to more than ``max_bytes`` (gpg stopped writing there)."""
    UNDECRYPTABLE = "undecryptable"
    """Not an OpenPGP message encrypted to a key we hold, broken, or signed but not encrypted."""
    UNSIGNED = "unsigned"
    """``signed_by`` is set and the file carries no signature."""
    WRONG_SIGNER = "wrong_signer"
    """Signed by another key, or by the pinned key and another one too."""
    BAD_SIGNATURE = "bad_signature"
    """A signature that does not verify, or one by a key gpg finds expired or revoked."""
    NOT_REGULAR_FILE = "not_regular_file"
    """Listed as a regular file, found as something else when read."""
    FETCH_FAILED = "fetch_failed"
    """Deferred: the file changed while read, or the connection failed after the retries."""


@dataclass(frozen=True)
class ReturnSource:
    """Where the carrier leaves its return files and how they must arrive.

    ``connection``: connection id (keys directory or Airflow); ``remote_dir``: the carrier's outbox;
    ``pattern``: fnmatch of file names; ``signed_by``: the carrier's pinned signing key (full
    fingerprint) or None when it does not sign; ``max_bytes``: cap on a file as received and on its
    plaintext.
    """

    connection: str
    remote_dir: str
    pattern: str
    signed_by: str | None
    max_bytes: int


@dataclass(frozen=True)
class ReturnFile:
    """What became of one file in the outbox (module docstring). Hashes are hex SHA-256.

    ``path``: the plaintext when collected, the ciphertext kept aside when refused after download,
    else None. ``size``: the plaintext's bytes when collected, else the ciphertext's (as listed when it
    was never downloaded). ``signer_fingerprint``: the primary key of a valid signature, else None.
    ``remote_size`` and ``remote_mtime`` (seconds) are the listing's, for ``listed_before``.
    """

    remote_name: str
    outcome: Outcome
    path: Path | None
    ciphertext_sha256: str | None
    plaintext_sha256: str | None
    size: int
    signer_fingerprint: str | None
    collected_at: datetime
    remote_size: int
    remote_mtime: int
    reason: Reason | None = None
    reason_path: Path | None = None

    @property
    def collected(self) -> bool:
        return self.outcome == "collected"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly form (names, sizes, hashes, fingerprints, times: no PHI) for ``--json``."""
        return {"remote_name": loggable(self.remote_name), "outcome": self.outcome,
                "path": str(self.path) if self.path else None, "ciphertext_sha256": self.ciphertext_sha256,
                "plaintext_sha256": self.plaintext_sha256, "size": self.size,
                "signer_fingerprint": self.signer_fingerprint, "collected_at": self.collected_at.isoformat(),
                "remote_size": self.remote_size, "remote_mtime": self.remote_mtime,
                "reason": str(self.reason) if self.reason else None,
                "reason_path": str(self.reason_path) if self.reason_path else None}


def collect_returns(source: ReturnSource, *, connections: Connections, keyring: Keyring,
                    into: Path, seen: Callable[[str], bool], clock: Callable[[], datetime],
                    listed_before: Callable[[str, int, int], bool] | None = None,
                    retries: int = 3) -> list[ReturnFile]:
    """Every new file in the carrier's outbox, oldest first, collected into ``into`` or refused aside.

    ``connections`` resolves ``source.connection`` (keys directory under the CLI, Airflow connection
    under Airflow); ``keyring`` is the project's GNUPGHOME holding our secret key and the carrier's
    public key; ``into`` is a private folder (created 0700; refused if others may read it); ``seen``
    answers whether a sha256 was imported before; ``clock`` gives timezone-aware times;
    ``listed_before(name, size, mtime)``, when given, skips a listed file without downloading it.
    """
    if source.max_bytes < 1:
        raise ConfigError("expected a positive number of bytes", field="reconciliation.max_bytes")
    now = _aware(clock())
    signed_by = _usable_signer(keyring, source.signed_by, now=now)
    into = _private_dir(Path(into))
    aside = _private_dir(into.parent / ASIDE)
    outbox = SftpCensusDrop(connections.sftp_endpoint(source.connection), source.remote_dir, source.pattern,
                            retries=retries)
    results: list[ReturnFile] = []
    taken: set[str] = set()
    try:
        with outbox.connected():
            # Oldest first: the caller imports in the order the carrier wrote them.
            for remote in sorted(outbox.list_files(), key=lambda f: (f.mtime, f.name)):
                if listed_before is not None and listed_before(remote.name, remote.size, remote.mtime):
                    continue
                found = _collect_one(outbox, remote, source=source, signed_by=signed_by, keyring=keyring,
                                     into=into, aside=aside, seen=seen, taken=taken, clock=clock)
                if found is not None:
                    results.append(found)
    except BaseException:
        # All or nothing for the call's plaintext: a caller that gets no list must not find files to import.
        for done in results:
            if done.collected and done.path is not None:
                done.path.unlink(missing_ok=True)
        raise
    counts = {o: sum(r.outcome == o for r in results) for o in ("collected", "refused", "deferred")}
    log.info("return files from %s: %d collected, %d refused, %d deferred", source.connection,
             counts["collected"], counts["refused"], counts["deferred"])
    return results


def _aware(when: datetime) -> datetime:
    if when.tzinfo is None:
        raise ValueError("clock must return timezone-aware datetimes")
    return when


def _usable_signer(keyring: Keyring, signed_by: str | None, *, now: datetime) -> str | None:
    """The pinned signer's full fingerprint, checked usable at ``now`` before anything is fetched."""
    if signed_by is None:
        return None
    info = keyring.inspect(normalize_fingerprint(signed_by), now=now)
    # Judged by our clock as well as gpg's: a key past its expiry here signs nothing we accept.
    if info.status in ("missing", "expired", "revoked"):
        raise KeyRefused(f"the carrier's pinned signing key {info.fingerprint} is {info.status}; import a "
                         "current key and pin it (reconciliation.source.signed_by)",
                         details={"fingerprint": info.fingerprint, "status": info.status})
    return info.fingerprint


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.stat()
    if not stat.S_ISDIR(st.st_mode) or st.st_mode & 0o077 or st.st_uid != os.geteuid():
        raise ConfigError("must be a folder owned by this user that others cannot read (mode 0700)",
                          file=str(path))
    return path


def _collect_one(outbox: SftpCensusDrop, remote: RemoteCensus, *, source: ReturnSource, signed_by: str | None,
                 keyring: Keyring, into: Path, aside: Path, seen: Callable[[str], bool], taken: set[str],
                 clock: Callable[[], datetime]) -> ReturnFile | None:
    name = remote.name
    if remote.size > source.max_bytes:
        # The listing's size is enough to refuse: none of it is read.
        return _refuse(remote, Reason.TOO_LARGE, source=source, aside=aside, clock=clock, cipher=None)
    token = f"{os.getpid()}-{uuid.uuid4().hex}"
    download = into / f".incoming-{token}"
    decrypted = into / f".decrypted-{token}"
    try:
        try:
            outbox.fetch(remote, download, max_bytes=source.max_bytes)
        except HostKeyRefused:
            raise
        except DataError as exc:
            if exc.rule != "too_large":
                raise
            return _refuse(remote, Reason.TOO_LARGE, source=source, aside=aside, clock=clock, cipher=None)
        except Refused:
            return _refuse(remote, Reason.NOT_REGULAR_FILE, source=source, aside=aside, clock=clock, cipher=None)
        except (TransientError, PermanentError) as exc:
            log.warning("return file %s not collected this time (%s); the next collection tries again",
                        loggable(name), exc.code)
            return ReturnFile(remote_name=name, outcome="deferred", path=None, ciphertext_sha256=None,
                              plaintext_sha256=None, size=remote.size, signer_fingerprint=None,
                              collected_at=_aware(clock()), remote_size=remote.size, remote_mtime=remote.mtime,
                              reason=Reason.FETCH_FAILED)
        cipher_sha, cipher_size = sha256_and_size(download)
        if cipher_sha in taken or seen(cipher_sha):
            log.info("return file %s (sha256 %s) was imported before; skipped", loggable(name), cipher_sha[:12])
            return None
        cipher = (download, cipher_sha, cipher_size)
        try:
            plain = keyring.decrypt_file(download, decrypted, require_signer=signed_by,
                                         max_output=source.max_bytes)
        except DataError as exc:
            if exc.rule != Reason.DECOMPRESSED_TOO_LARGE:
                raise
            return _refuse(remote, Reason.DECOMPRESSED_TOO_LARGE, source=source, aside=aside, clock=clock,
                           cipher=cipher)
        except KeyRefused as exc:
            return _refuse(remote, _signature_reason(exc, signed_by), source=source, aside=aside, clock=clock,
                           cipher=cipher, detail={"gpg_status": exc.details.get("gpg_status"),
                                                  "signer": exc.details.get("signer"),
                                                  "signatures": exc.details.get("signatures")})
        taken.add(cipher_sha)
        if plain.sha256 in taken or seen(plain.sha256):
            # The carrier encrypted the same file again: new ciphertext, nothing new to import.
            log.info("return file %s decrypts to a file imported before (sha256 %s); skipped", loggable(name),
                     plain.sha256[:12])
            return None
        taken.add(plain.sha256)
        final = into / f"{plain.sha256}.plain"
        os.replace(decrypted, final)
        signer = plain.signer_fingerprint if plain.valid_signature else None
        log.info("collected return file %s: %d bytes encrypted (sha256 %s), %d plain (sha256 %s), signer %s",
                 loggable(name), cipher_size, cipher_sha[:12], plain.size, plain.sha256[:12], signer or "none")
        return ReturnFile(remote_name=name, outcome="collected", path=final, ciphertext_sha256=cipher_sha,
                          plaintext_sha256=plain.sha256, size=plain.size, signer_fingerprint=signer,
                          collected_at=_aware(clock()), remote_size=remote.size, remote_mtime=remote.mtime)
    finally:
        download.unlink(missing_ok=True)
        decrypted.unlink(missing_ok=True)


def _signature_reason(exc: KeyRefused, signed_by: str | None) -> Reason:
    """Which refusal a KeyRefused from ``decrypt_file`` is: decryption, or the signature check after it."""
    if signed_by is None or "expected_signer" not in exc.details:
        return Reason.UNDECRYPTABLE
    signatures = int(exc.details.get("signatures") or 0)
    signer = exc.details.get("signer")
    if signatures == 0:
        return Reason.UNSIGNED
    if signatures > 1 or (signer is not None and signer != signed_by):
        return Reason.WRONG_SIGNER
    return Reason.BAD_SIGNATURE


_MESSAGES = {
    Reason.TOO_LARGE: "over the reconciliation cap (reconciliation.max_bytes); not downloaded",
    Reason.DECOMPRESSED_TOO_LARGE: "decrypts to more than the reconciliation cap (reconciliation.max_bytes)",
    Reason.UNDECRYPTABLE: "does not decrypt with our key (not encrypted to it, broken, or not encrypted)",
    Reason.UNSIGNED: "not signed, and the carrier's signature is required (reconciliation.source.signed_by)",
    Reason.WRONG_SIGNER: "signed by a key other than (or as well as) the carrier's pinned signing key",
    Reason.BAD_SIGNATURE: "the carrier's signature does not verify (bad, or its key expired or revoked)",
    Reason.NOT_REGULAR_FILE: "no longer a regular file when read; not downloaded",
}


def _refuse(remote: RemoteCensus, reason: Reason, *, source: ReturnSource, aside: Path,
            clock: Callable[[], datetime], cipher: tuple[Path, str, int] | None,
            detail: dict[str, Any] | None = None) -> ReturnFile:
    """Keep ``remote`` aside: its ciphertext (when downloaded) and a PHI-free reason file, each once."""
    at = _aware(clock())
    if cipher is not None:
        download, sha, size = cipher
        ident = sha
        target = aside / f"{sha}.pgp"
        if not target.exists():
            tmp = aside / f".{sha}.pgp.tmp"
            shutil.move(download, tmp)  # the run's folder and aside/ are siblings: a rename, mostly
            tmp.replace(target)
        kept: Path | None = target
    else:
        kept, sha, size = None, None, remote.size
        # Never downloaded: known by what the listing said about it.
        ident = hashlib.sha256(f"{remote.name}\0{remote.size}\0{remote.mtime}".encode()).hexdigest()
    reason_path = aside / f"{ident}.reason.json"
    if not reason_path.exists():
        record = {"remote_name": loggable(remote.name), "remote_dir": source.remote_dir,
                  "connection": source.connection, "reason": str(reason), "message": _MESSAGES[reason],
                  "ciphertext_sha256": sha, "ciphertext_file": kept.name if kept else None, "bytes": size,
                  "listed_bytes": remote.size, "remote_mtime": remote.mtime, "max_bytes": source.max_bytes,
                  "signed_by": source.signed_by, "first_refused_at": at.isoformat(),
                  **{k: v for k, v in (detail or {}).items() if v is not None}}
        with open_private(reason_path) as fh:
            fh.write(json.dumps(record, indent=2, sort_keys=True).encode() + b"\n")
    log.warning("return file %s refused (%s): %s; kept aside as %s", loggable(remote.name), reason,
                _MESSAGES[reason], reason_path.name)
    return ReturnFile(remote_name=remote.name, outcome="refused", path=kept, ciphertext_sha256=sha, size=size,
                      plaintext_sha256=None, signer_fingerprint=None, collected_at=at, remote_size=remote.size,
                      remote_mtime=remote.mtime, reason=reason, reason_path=reason_path)


__all__ = ["Reason", "ReturnFile", "ReturnSource", "collect_returns"]
