"""The staging store: a run's artifacts between tasks, in a local folder or at any fsspec URL, every one
sealed to its run.

Artifacts live under ``<root>/<feed_id>/<interval_start>/<name>.enc``; names are plain, PHI-free file
names. Every artifact, PHI or not, is sealed with AES-256-GCM in 1 MiB chunks (the STREAM construction: a
per-object key from HKDF-SHA256 over a random salt, a chunk counter and a last-chunk flag in every nonce,
the run and the name (``<feed_id>/<interval_start>/<name>``) as associated data), so a truncated,
reordered, edited, swapped or moved object fails to open instead of yielding wrong data; memory stays
bounded by one chunk whatever the file size. That covers the PHI-free ones too (the run's state, the gpg
ciphertext): whoever can write a shared store but does not hold the key can neither read member data nor
steer a worker with a forged state or a swapped ciphertext. An object in the clear (``<name>`` without
``.enc``: written by a version before sealing, or by someone else) is refused with
:class:`StagingUnsealed`, never read.

A local root is the default (folders 0700, files 0600, writes atomic by rename). Workers on different
machines share an object store or network filesystem by URL (``s3://bucket/staging``, ``gs://...``,
``file:///mnt/shared/staging``): the same paths, written through fsspec, as Airflow's
``ObjectStoragePath`` does. The key is 32 random bytes: a 0600 file under the keys directory for the
CLI, or (base64) an Airflow Variable or secrets-backend entry shared by every worker.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import hashlib
import logging
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import IO, Any

import fsspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from carrierfeeds.errors import ConfigError, DataError, Refused, TransientError
from carrierfeeds.files import create_key_file, read_key_file

log = logging.getLogger(__name__)

KEY_FILE_NAME = "staging.key"
KEY_BYTES = 32
CHUNK = 1 << 20
ENCRYPTED_SUFFIX = ".enc"
_MAGIC = b"CFSTG\x00\x01\x00"  # format version 1
_SALT_BYTES = 16
_TAG_BYTES = 16
_HKDF_INFO = b"carrierfeeds staging v1"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}$")
_FEED = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class StagingFull(TransientError):
    """The store (or the disk under it) is full: the object was not stored; a retry may succeed."""

    code = "staging_full"


class StagingTampered(Refused):
    """A staged object does not decrypt: wrong key, or truncated, edited or moved since it was written."""

    code = "staging_tampered"


class StagingUnsealed(Refused):
    """A staged object is in the clear: written before objects were sealed, or by someone without the key."""

    code = "staging_unsealed"


class ArtifactNameRefused(Refused):
    """A name that would leave the run's folder (a path, ``..``, a hidden name) or a local copy that is
    not a regular file of its own (a symlink)."""

    code = "artifact_name_refused"


def check_artifact_name(name: str) -> str:
    """``name`` if it is a plain artifact name (no separator, no leading dot, no ``.enc``); else refused."""
    if not isinstance(name, str) or not _NAME.match(name) or name.endswith(ENCRYPTED_SUFFIX):
        raise ArtifactNameRefused("an artifact name must be a plain file name of the run's own folder "
                                  "(no path, no '..', no leading '.')",
                                  details={"length": len(name) if isinstance(name, str) else None})
    return name


@dataclass(frozen=True, repr=False)
class StagingKey:
    """The store's 32-byte master key; ``repr`` never shows it."""

    secret: bytes

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_BYTES:
            raise ConfigError(f"a staging key is {KEY_BYTES} bytes", field="staging key")

    def __repr__(self) -> str:
        return f"StagingKey(id={self.key_id})"

    @property
    def key_id(self) -> str:
        """A PHI-free, secret-free name for the key (to tell keys apart in logs)."""
        return hashlib.sha256(b"carrierfeeds staging key id" + self.secret).hexdigest()[:16]

    @classmethod
    def generate(cls) -> StagingKey:
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def from_text(cls, text: str, *, source: str = "staging key") -> StagingKey:
        """From base64 text (an Airflow Variable, a secrets-backend entry, an environment variable)."""
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError("not base64", field=source) from None
        if len(raw) != KEY_BYTES:
            raise ConfigError(f"decodes to {len(raw)} bytes, expected {KEY_BYTES}", field=source)
        return cls(raw)

    def as_text(self) -> str:
        return base64.b64encode(self.secret).decode("ascii")

    @classmethod
    def from_file(cls, path: Path) -> StagingKey:
        """Read a key file; refused unless only its owner can read it."""
        raw = read_key_file(path, what="staging key", error=ConfigError)
        if raw is None:
            raise ConfigError("staging key file not found", file=str(path))
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise ConfigError("not base64", file=str(path)) from None
        return cls.from_text(text, source=str(path))

    @classmethod
    def load_or_create(cls, path: Path) -> StagingKey:
        """The key at ``path``, made (0600, never overwriting) the first time."""
        if not path.exists():
            key = cls.generate()
            if create_key_file(path, (key.as_text() + "\n").encode("ascii"), what="staging key"):
                log.info("staging key %s created in %s", key.key_id, path.parent)
                return key
        return cls.from_file(path)  # an existing key, or the one another process made first


@dataclass(frozen=True)
class StagedArtifact:
    """One stored artifact: its plain ``name``, its location, whether encrypted, and sizes and hash.

    ``sha256`` and ``plain_bytes`` are of the plaintext (``sha256`` None where the writer was told not to
    hash: AES-GCM already refuses a changed object); ``stored_bytes`` is what the store holds.
    """

    name: str
    location: str
    encrypted: bool
    plain_bytes: int
    stored_bytes: int
    sha256: str | None


class StagingStore:
    """Artifacts of runs keyed by (feed id, interval start) under one root folder or URL."""

    def __init__(self, root: str | Path, key: StagingKey, *,
                 storage_options: Mapping[str, Any] | None = None) -> None:
        self.url = str(root)
        self.key = key
        fs, path = fsspec.core.url_to_fs(self.url, **dict(storage_options or {}))
        self.fs: Any = fs
        self.root: str = str(path).rstrip("/")
        protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
        self.local = "file" in protocols or "local" in protocols
        if self.local:
            _private_dir(Path(self.root))

    def __repr__(self) -> str:
        return f"StagingStore({self.url!r}, key={self.key.key_id})"

    # ------------------------------------------------------------------------------ paths
    def run_location(self, feed_id: str, interval_start: date) -> str:
        if not _FEED.match(feed_id):
            raise ConfigError(f"not a feed id: {feed_id!r}", field="feed_id")
        return f"{self.root}/{feed_id}/{interval_start.isoformat()}"

    def _location(self, feed_id: str, interval_start: date, name: str) -> str:
        if not _NAME.match(name) or name.endswith(ENCRYPTED_SUFFIX):
            raise ConfigError(f"not a plain artifact name: {name!r}", field="name")
        return f"{self.run_location(feed_id, interval_start)}/{name}"

    def _run_dir(self, feed_id: str, interval_start: date) -> str:
        where = self.run_location(feed_id, interval_start)
        if self.local:
            _private_dir(Path(self.root) / feed_id)
            _private_dir(Path(where))
        else:
            self.fs.makedirs(where, exist_ok=True)
        return where

    # ------------------------------------------------------------------------------ writes
    def put_file(self, feed_id: str, interval_start: date, name: str, source: Path, *,
                 phi: bool = True, sha256: bool = True) -> StagedArtifact:
        """Store ``source`` as ``name`` for the run, sealed (``phi`` and ``sha256``: as for
        :meth:`open_writer`)."""
        with source.open("rb") as fh:
            return self._put(feed_id, interval_start, name, fh, phi=phi, sha256=sha256)

    def put_bytes(self, feed_id: str, interval_start: date, name: str, data: bytes, *,
                  phi: bool = True) -> StagedArtifact:
        import io

        return self._put(feed_id, interval_start, name, io.BytesIO(data), phi=phi)

    def _put(self, feed_id: str, interval_start: date, name: str, source: IO[bytes], *,
             phi: bool, sha256: bool = True) -> StagedArtifact:
        with self.open_writer(feed_id, interval_start, name, phi=phi, sha256=sha256) as writer:
            for block in iter(lambda: source.read(CHUNK), b""):
                writer.write(block)
        return writer.artifact

    @contextlib.contextmanager
    def open_writer(self, feed_id: str, interval_start: date, name: str, *, phi: bool = True,
                    sha256: bool = True) -> Iterator[ArtifactWriter]:
        """Put an artifact from blocks as they are made: ``write`` them to the yielded writer.

        ``phi`` says whether the artifact holds member data; every artifact is sealed either way (see the
        module docstring), so it does not change how the object is stored.

        The object appears complete when the block ends without an exception, or not at all; the stored
        form is the one ``put_file`` gives the same bytes. ``writer.sha256`` and ``writer.plain_bytes``
        (of the plaintext so far) can be checked inside the block, which raises to abandon the object;
        ``writer.artifact`` is the stored artifact afterwards. One pass over the data: a caller that
        also writes the blocks elsewhere (a tee) reads them from memory once and hashes them once here.
        ``sha256=False`` skips the hash (it costs twice the encryption) for a caller that needs none.
        """
        location = self._location(feed_id, interval_start, name)
        self._run_dir(feed_id, interval_start)
        target, other = location + ENCRYPTED_SUFFIX, location
        tmp = f"{target}.tmp-{secrets.token_hex(4)}" if self.local else target
        try:
            with self.fs.open(tmp, "wb") as out:
                if self.local:
                    os.chmod(tmp, 0o600)
                writer = ArtifactWriter(out, _Encryptor(self.key, _aad(feed_id, interval_start, name), out),
                                        hashed=sha256)
                try:
                    yield writer
                    writer.close()
                except BaseException:
                    if not self.local and hasattr(out, "discard"):
                        out.discard()  # a buffered remote object is never committed part-written
                    raise
            if self.local:
                os.replace(tmp, target)
        except BaseException as exc:
            if self.local and os.path.exists(tmp):
                os.unlink(tmp)
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StagingFull(f"no space left to stage {name}; nothing was stored",
                                  details={"errno": exc.errno, "name": name}) from exc
            raise
        if self.fs.exists(other):
            self.fs.rm(other)  # one artifact, one form: an unsealed object beside it is never left to refuse
        writer._artifact = StagedArtifact(name=name, location=target, encrypted=True, plain_bytes=writer.plain_bytes,
                                         stored_bytes=int(self.fs.size(target)),
                                         sha256=writer.sha256 if sha256 else None)

    # ------------------------------------------------------------------------------- reads
    def exists(self, feed_id: str, interval_start: date, name: str) -> bool:
        location = self._location(feed_id, interval_start, name)
        return bool(self.fs.exists(location + ENCRYPTED_SUFFIX) or self.fs.exists(location))

    def get_file(self, feed_id: str, interval_start: date, name: str, dest: Path, *,
                 sha256: bool = True) -> StagedArtifact:
        """Write the artifact's plaintext to ``dest`` (0600, atomic); a tampered object is refused.

        ``sha256=False``: the artifact's ``sha256`` is None, not computed (decryption checks every chunk).
        """
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp-{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                artifact = self._get(feed_id, interval_start, name, out, sha256=sha256)
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return artifact

    def get_bytes(self, feed_id: str, interval_start: date, name: str) -> bytes:
        import io

        buffer = io.BytesIO()
        self._get(feed_id, interval_start, name, buffer)
        return buffer.getvalue()

    def _get(self, feed_id: str, interval_start: date, name: str, out: IO[bytes], *,
             sha256: bool = True) -> StagedArtifact:
        location = self._location(feed_id, interval_start, name)
        digest: Any = hashlib.sha256() if sha256 else _NoDigest()
        if self.fs.exists(location + ENCRYPTED_SUFFIX):
            target, encrypted = location + ENCRYPTED_SUFFIX, True
            with self.fs.open(target, "rb") as fh:
                plain = _decrypt_stream(self.key, _aad(feed_id, interval_start, name), fh, out, digest)
        elif self.fs.exists(location):
            raise StagingUnsealed(
                f"{name} of {feed_id} {interval_start.isoformat()} is in the staging store unsealed (written "
                "by a carrierfeeds before staged objects were sealed, or by someone without the key); "
                "refused. If an older version started this run, remove the run's staging folder "
                f"({feed_id}/{interval_start.isoformat()}) and run it again (--force-census if its census "
                "was already accepted): the ledger keeps its control numbers and deliveries, so nothing "
                "is sent twice", details={"name": name, "feed_id": feed_id,
                                          "interval_start": interval_start.isoformat()})
        else:
            raise DataError("artifact not in the staging store", file=name,
                            details={"feed_id": feed_id, "interval_start": interval_start.isoformat()})
        return StagedArtifact(name=name, location=target, encrypted=encrypted, plain_bytes=plain,
                              stored_bytes=int(self.fs.size(target)), sha256=digest.hexdigest() if sha256 else None)

    def names(self, feed_id: str, interval_start: date) -> list[str]:
        """The plain names of the run's artifacts (encrypted ones without their suffix)."""
        where = self.run_location(feed_id, interval_start)
        if not self.fs.exists(where):
            return []
        out = set()
        for entry in self.fs.ls(where, detail=False):
            base = str(entry).rstrip("/").rsplit("/", 1)[-1]
            if ".tmp-" in base:
                continue
            out.add(base[: -len(ENCRYPTED_SUFFIX)] if base.endswith(ENCRYPTED_SUFFIX) else base)
        return sorted(out)

    # ------------------------------------------------------------------------------ removal
    def remove(self, feed_id: str, interval_start: date, name: str) -> bool:
        """Remove one artifact (either stored form); whether there was one."""
        location = self._location(feed_id, interval_start, name)
        found = False
        for target in (location + ENCRYPTED_SUFFIX, location):
            if self.fs.exists(target):
                self.fs.rm(target)
                found = True
        return found

    def remove_run(self, feed_id: str, interval_start: date, *, keep: tuple[str, ...] = ()) -> int:
        """Remove the run's artifacts except ``keep``; the folder goes too when nothing is kept.

        Returns how many artifacts were removed.
        """
        where = self.run_location(feed_id, interval_start)
        if not self.fs.exists(where):
            return 0
        removed = 0
        for entry in self.fs.ls(where, detail=False):
            base = str(entry).rstrip("/").rsplit("/", 1)[-1]
            plain = base[: -len(ENCRYPTED_SUFFIX)] if base.endswith(ENCRYPTED_SUFFIX) else base
            if plain in keep:
                continue
            self.fs.rm(str(entry), recursive=True)
            removed += 1
        if not keep:
            with contextlib.suppress(FileNotFoundError):  # object stores have no folders once empty
                self.fs.rm(where, recursive=True)
        log.info("staging: removed %d artifact(s) of feed %s interval %s", removed, feed_id, interval_start)
        return removed


def open_store(url: str | Path, key: StagingKey, **storage_options: Any) -> StagingStore:
    """A store at a local path or fsspec URL (``s3://...`` needs that filesystem's package, e.g. s3fs)."""
    return StagingStore(url, key, storage_options=storage_options)


# ----------------------------------------------------------------------------------- encryption
def _aad(feed_id: str, interval_start: date, name: str) -> bytes:
    # The logical path, not the URL: a store can move (copied bucket), an object cannot change runs.
    return f"{feed_id}/{interval_start.isoformat()}/{name}".encode()


def _object_key(key: StagingKey, salt: bytes) -> AESGCM:
    derived = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=_HKDF_INFO).derive(key.secret)
    return AESGCM(derived)


def _nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def _chunks(source: IO[bytes], size: int) -> Iterator[tuple[bytes, bool]]:
    """Blocks of ``size`` bytes with a flag on the last one (an empty source yields one empty block)."""
    current = source.read(size)
    while True:
        following = source.read(size)
        yield current, not following
        if not following:
            return
        current = following


class _NoDigest:
    """Stands in for a hash nobody asked for."""

    def update(self, data: bytes) -> None:
        pass


class ArtifactWriter:
    """The plaintext side of an artifact being put (see :meth:`StagingStore.open_writer`)."""

    def __init__(self, out: IO[bytes], encryptor: _Encryptor | None, *, hashed: bool = True) -> None:
        self._out = out
        self._encryptor = encryptor
        self._digest = hashlib.sha256() if hashed else None
        self.plain_bytes = 0
        self._artifact: StagedArtifact | None = None
        self._closed = False

    @property
    def artifact(self) -> StagedArtifact:
        """The stored artifact, once the writer's block has ended."""
        if self._artifact is None:
            raise ValueError("the artifact is not stored yet")
        return self._artifact

    @property
    def sha256(self) -> str:
        """The sha256 (hex) of the plaintext written so far."""
        if self._digest is None:
            raise ValueError("this writer was opened without a hash")
        return self._digest.hexdigest()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise ValueError("the artifact is already stored")
        if self._digest is not None:
            self._digest.update(data)
        self.plain_bytes += len(data)
        if self._encryptor is not None:
            self._encryptor.write(data)
        else:
            self._out.write(data)

    def close(self) -> None:
        if not self._closed and self._encryptor is not None:
            self._encryptor.close()
        self._closed = True


class _Encryptor:
    """The STREAM construction over blocks of any size: re-cut into ``CHUNK``-byte chunks, the last one
    flagged, exactly as ``_chunks`` cuts a file (so the stored form does not depend on how it was fed)."""

    def __init__(self, key: StagingKey, aad: bytes, out: IO[bytes]) -> None:
        salt = secrets.token_bytes(_SALT_BYTES)
        self._header = _MAGIC + salt
        self._associated = self._header + aad
        self._aead = _object_key(key, salt)
        self._out = out
        self._counter = 0
        self._pending = bytearray()
        out.write(self._header)

    def _seal(self, block: bytes | bytearray | memoryview, last: bool) -> None:
        self._out.write(self._aead.encrypt(_nonce(self._counter, last), block, self._associated))
        self._counter += 1

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        pending = self._pending
        if pending:
            room = CHUNK - len(pending)
            if len(view) <= room:
                pending += view  # a full chunk waits: it is the last one if nothing follows
                return
            pending += view[:room]
            view = view[room:]
            self._seal(pending, last=False)
            pending.clear()
        while len(view) > CHUNK:
            self._seal(view[:CHUNK], last=False)
            view = view[CHUNK:]
        pending += view

    def close(self) -> None:
        self._seal(self._pending, last=True)  # an empty object is one empty, flagged chunk
        self._pending = bytearray()


def _decrypt_stream(key: StagingKey, aad: bytes, source: IO[bytes], out: IO[bytes], digest: Any) -> int:
    header = source.read(len(_MAGIC) + _SALT_BYTES)
    if len(header) != len(_MAGIC) + _SALT_BYTES or not header.startswith(_MAGIC):
        raise StagingTampered("staged object has no valid header")
    aead = _object_key(key, header[len(_MAGIC):])
    total = 0
    for counter, (block, last) in enumerate(_chunks(source, CHUNK + _TAG_BYTES)):
        try:
            plain = aead.decrypt(_nonce(counter, last), block, header + aad)
        except InvalidTag:
            raise StagingTampered("staged object does not decrypt (wrong key, or truncated, edited or moved)",
                                  details={"chunk": counter}) from None
        digest.update(plain)
        total += len(plain)
        out.write(plain)
    return total


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path
