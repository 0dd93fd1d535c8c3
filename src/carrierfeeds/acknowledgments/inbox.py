"""Where acknowledgment files are picked up (a local folder, the carrier's SFTP folder), capped per source.

Intake is capped per source (the mapping's ``acks`` spec, :class:`AckLimits`): bytes per file as
received, bytes of an encrypted file's plaintext (OpenPGP compresses), and new files per poll.
:func:`carrier_ack_settings` gathers each carrier mapping's ``acks`` spec and window with its feeds.
"""

from __future__ import annotations

import fnmatch
import os
import stat as stat_mod
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from carrierfeeds.config import AckSpec, LocalAckSource
from carrierfeeds.errors import CarrierFeedsError, ConfigError, DataError, PermanentError
from carrierfeeds.transport.base import check_remote_name
from carrierfeeds.transport.sftp import SftpTransport

if TYPE_CHECKING:
    from carrierfeeds.credentials import Connections, SftpEndpoint
    from carrierfeeds.settings import Settings

#: Bigger than any real acknowledgment; a file past it is not read into memory.
MAX_ACK_BYTES = 64 * 1024 * 1024
#: New files read from one source in one poll, by default; the rest wait for the next poll.
MAX_ACK_FILES = 500
_CHUNK = 1 << 20


@dataclass(frozen=True)
class AckLimits:
    """Caps on one poll of one source (from the mapping's ``acks`` spec; see the module docstring)."""

    max_file_bytes: int = MAX_ACK_BYTES
    max_decompressed_bytes: int = MAX_ACK_BYTES
    max_files_per_poll: int = MAX_ACK_FILES

    @classmethod
    def of(cls, spec: AckSpec) -> AckLimits:
        return cls(max_file_bytes=spec.max_file_bytes, max_decompressed_bytes=spec.max_decompressed_bytes,
                   max_files_per_poll=spec.max_files_per_poll)


class AckInbox(Protocol):
    """Where acknowledgment files are picked up: list plain file names, fetch one into a local path."""

    def list_names(self) -> list[str]: ...

    def fetch(self, name: str, dst: Path, *, max_bytes: int = MAX_ACK_BYTES) -> None:
        """Copy ``name`` to ``dst``; DataError (rule ``too_large``) past ``max_bytes``, counted as read."""
        ...


def _too_large(name: str, max_bytes: int, size: int | None = None) -> DataError:
    return DataError(f"acknowledgment file is larger than the {max_bytes}-byte cap", file=name, rule="too_large",
                     details={"max_bytes": max_bytes, "bytes": size})


def _copy_capped(read: Callable[[int], bytes], out: Any, *, name: str, max_bytes: int) -> None:
    """Copy through ``read`` until it returns b""; a size or length header can lie, so bytes are counted."""
    total = 0
    while chunk := read(_CHUNK):
        total += len(chunk)
        if total > max_bytes:
            raise _too_large(name, max_bytes)
        out.write(chunk)


def _wanted(name: str, pattern: str) -> bool:
    # Leading dots are temp files (ours and most carriers' upload conventions): never half a file.
    return not name.startswith(".") and not name.endswith(".part") and fnmatch.fnmatchcase(name, pattern)


def create_private(dst: Path) -> int:
    """A new owner-only file at ``dst`` (any file already there is removed), open for writing."""
    dst.unlink(missing_ok=True)
    return os.open(dst, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)


class LocalAckInbox:
    """A local folder; files are read, never moved or deleted (the ledger remembers what was read)."""

    def __init__(self, folder: Path, pattern: str = "*") -> None:
        self.folder = Path(folder)
        self.pattern = pattern

    def list_names(self) -> list[str]:
        if not self.folder.is_dir():
            raise ConfigError("acknowledgment folder does not exist", file=str(self.folder))
        return sorted(p.name for p in self.folder.iterdir() if p.is_file() and _wanted(p.name, self.pattern))

    def fetch(self, name: str, dst: Path, *, max_bytes: int = MAX_ACK_BYTES) -> None:
        check_remote_name(name)
        try:
            # Opened once, never through a link, and checked on the descriptor that is read.
            fd = os.open(self.folder / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as fh:
                st = os.fstat(fh.fileno())
                if not stat_mod.S_ISREG(st.st_mode):
                    raise PermanentError(f"cannot read {name}: not a regular file")
                if st.st_size > max_bytes:
                    raise _too_large(name, max_bytes, st.st_size)
                os.set_blocking(fh.fileno(), True)
                with os.fdopen(create_private(dst), "wb") as out:
                    _copy_capped(fh.read, out, name=name, max_bytes=max_bytes)
        except OSError as exc:
            dst.unlink(missing_ok=True)
            raise PermanentError(f"cannot read {name}: {exc.strerror}", details={"errno": exc.errno}) from None
        except CarrierFeedsError:
            dst.unlink(missing_ok=True)
            raise


class SftpAckInbox(SftpTransport):
    """The carrier's SFTP response folder: same pinned host key check and retries as delivery."""

    def __init__(self, endpoint: SftpEndpoint, remote_dir: str, pattern: str = "*", **kwargs: Any) -> None:
        super().__init__(endpoint, remote_dir, **kwargs)
        self.pattern = pattern

    def list_names(self) -> list[str]:
        def op(session: Any) -> list[str]:
            return sorted(a.filename for a in session.sftp.listdir_attr(self.remote_dir)
                          if a.st_mode is not None and stat_mod.S_ISREG(a.st_mode)
                          and _wanted(a.filename, self.pattern))

        names, _ = self._with_retries(f"list {self.remote_dir}", op)
        return names

    def fetch(self, name: str, dst: Path, *, max_bytes: int = MAX_ACK_BYTES) -> None:
        check_remote_name(name)

        def op(session: Any) -> None:
            path = self._path(name)
            size = int(session.sftp.stat(path).st_size or 0)
            if size > max_bytes:
                raise _too_large(name, max_bytes, size)
            try:
                with os.fdopen(create_private(dst), "wb") as out, session.sftp.open(path, "rb") as fh:
                    if size:
                        fh.prefetch(size)  # pipelined reads up to the listed size; anything past it is counted too
                    _copy_capped(fh.read, out, name=name, max_bytes=max_bytes)
            except DataError:
                dst.unlink(missing_ok=True)
                raise

        self._with_retries(f"fetch {name}", op)


@dataclass(frozen=True)
class CarrierAcks:
    """One carrier's acknowledgment settings, gathered from its mapping and the feeds that use it."""

    source_id: str
    spec: AckSpec | None
    window: timedelta
    feed_ids: tuple[str, ...]


def carrier_ack_settings(settings: Settings, feed_ids: Collection[str] | None = None) -> list[CarrierAcks]:
    """Per carrier mapping: its ``acks`` spec (None: no source), its ``ack_window_hours`` window and
    its feeds (for an aggregation mapping, the mapping id too: its file's deliveries carry it)."""
    from carrierfeeds.config import load_feed
    from carrierfeeds.settings import bundle_from_feed, feed_paths

    grouped: dict[str, tuple[Any, list[str]]] = {}
    for path in feed_paths(settings):
        feed = load_feed(path)
        if feed_ids is not None and feed.feed_id not in feed_ids and feed.mapping_id not in feed_ids:
            continue
        bundle = bundle_from_feed(settings, feed, path)
        mapping, feeds = grouped.setdefault(bundle.mapping.mapping_id, (bundle.mapping, []))
        if mapping.aggregation is not None and mapping.mapping_id not in feeds:
            # An aggregator's file is delivered under the mapping id (run.aggregate_run): its window too.
            feeds.append(mapping.mapping_id)
        if feed_ids is None or feed.feed_id in feed_ids:
            feeds.append(feed.feed_id)
    out = []
    for mapping_id, (mapping, feeds) in sorted(grouped.items()):
        spec = mapping.acks
        hours = mapping.ack_window_hours
        out.append(CarrierAcks(source_id=mapping_id, spec=spec, window=timedelta(hours=hours),
                               feed_ids=tuple(feeds)))
    return out


def feeds_without_source(carriers: Iterable[CarrierAcks]) -> frozenset[str]:
    """Feed ids whose carrier mapping names no acknowledgment source."""
    return frozenset(f for c in carriers if c.spec is None for f in c.feed_ids)


def open_inbox(settings: Settings, spec: AckSpec, connections: Connections | None = None) -> AckInbox:
    """The inbox a spec names; SFTP credentials from ``connections`` (Airflow's) or the keys directory."""
    source = spec.source
    if isinstance(source, LocalAckSource):
        return LocalAckInbox(settings.data_dir / source.path, source.pattern)
    from carrierfeeds.credentials import KeysDirConnections

    endpoint = (connections or KeysDirConnections(settings.resolved_keys_dir)).sftp_endpoint(source.connection_id)
    return SftpAckInbox(endpoint, source.remote_dir, source.pattern)
