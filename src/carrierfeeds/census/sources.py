"""Where a feed's census comes from: the newest new file in a local folder or an employer's SFTP drop, or a
SQL query, fetched under the size and archive rules and remembered by sha256 once accepted.

    fetch_census(source, ...) -> CensusPick     a private copy for the run to stage (the original is kept)
    census_from_file(path, ...) -> CensusPick   an explicit file (``--census PATH``): always processed
    accept_census(source, pick, ...)            once its run has an outcome: record its sha256 in the
                                                feed's census index; move an SFTP file to processed_dir

A file is processed once: the newest matching file is picked, and when its sha256 is already in the
feed's index (``<data_dir>/census-index/<feed_id>.json``) there is nothing new (:class:`NoNewCensus`)
unless ``force``. Older files than the newest are never picked: a newer census supersedes them, and
sending an older one after a newer was accepted would roll members back; for the same reason, once an
SFTP census was accepted (and moved to the processed folder), a file in the drop older than it is not
new either. A file the same run already accepted is new to that run (a retry of the run re-reads it).

A local file is opened once: the folder as a directory descriptor, the file by name relative to it with
``O_NOFOLLOW`` (a symbolic link, a FIFO, a device or a folder put in its place after the listing is
refused), and its size check, hash and private copy all come from that one descriptor (hashed first, and
copied only when new, the copy hashing as the first read did), so what is hashed is what is staged, and
never a file the name was pointed at in between.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import hashlib
import json
import logging
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from carrierfeeds.census.archive import check_size, inspect_zip, sniff_file
from carrierfeeds.config import CensusSchema, LocalSource, SftpSource, SqlSource
from carrierfeeds.credentials import Connections, KeysDirConnections, load_sql_url
from carrierfeeds.errors import CarrierFeedsError, ConfigError, DataError, TransientError
from carrierfeeds.files import open_private, sha256_file
from carrierfeeds.hardening import loggable

log = logging.getLogger(__name__)

CensusKind = Literal["local", "sftp", "sql"]
INDEX_DIR = "census-index"
_CHUNK = 1 << 20
#: A census name is opened for reading only, never through a symbolic link, and without blocking on a
#: FIFO (whose open would otherwise wait for a writer); the descriptor is then checked to be a regular file.
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_OPEN_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


#: How a person processes an already processed census again, in a NoNewCensus message.
_FORCE = "Run `carrierfeeds run FEED --force-census` (under Airflow: the DAG param force_census)"


class NoNewCensus(DataError):
    """The newest census matching the source was already processed; nothing new to send (``--force-census``)."""

    code = "no_new_census"


@dataclass(frozen=True)
class CensusPick:
    """The census a run should stage.

    ``path``: the run's private file in ``work_dir`` (a copy of a local file, a download or a query
    result), for the stage to move into place; ``name``: the employer's file name, for messages
    and the ledger (for SQL: ``<connection_id>.sql.csv``); ``sha256`` and ``size`` of ``path``;
    ``kind``: the source kind; ``remote_name``: the name on the SFTP server; ``reprocessed``: True when
    ``force`` picked a file the index already holds; ``mtime``: the file's modification time (seconds)
    where the source has one. For a local file ``path`` is the run's private copy read through one
    descriptor, ``origin`` the employer's file it was read from and ``origin_stat`` that file's (device,
    inode, size, mtime in ns) as read, so staging can tell a file still being written
    (:func:`confirm_unchanged`).
    """

    path: Path
    name: str
    sha256: str
    size: int
    kind: CensusKind
    remote_name: str | None = None
    reprocessed: bool = False
    mtime: int | None = None
    origin: str | None = None
    origin_stat: tuple[int, int, int, int] | None = None

    def as_state(self) -> dict[str, Any]:
        """JSON-friendly, PHI-free: what a later stage (maybe in another process) needs to accept it."""
        data = asdict(self)
        data["path"] = str(self.path)
        return data

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> CensusPick:
        origin_stat = state.get("origin_stat")
        return cls(**{**state, "path": Path(state["path"]),
                      "origin_stat": tuple(origin_stat) if origin_stat is not None else None})


# ------------------------------------------------------------------------------------------- index
class CensusIndex:
    """The census files a feed has accepted, by sha256: ``<data_dir>/census-index/<feed_id>.json``."""

    def __init__(self, data_dir: Path, feed_id: str) -> None:
        if "/" in feed_id or feed_id.startswith("."):
            raise ConfigError("feed id must be a plain name", field="feed_id")
        self.folder = Path(data_dir) / INDEX_DIR
        self.path = self.folder / f"{feed_id}.json"
        self.feed_id = feed_id

    def entries(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except json.JSONDecodeError:
            # Fail closed: a damaged index must not make every old file look new.
            raise ConfigError("census index is not valid JSON; restore it from backup",
                              file=str(self.path)) from None
        entries: dict[str, dict[str, Any]] = data.get("processed", {})
        return entries

    def seen(self, sha256: str) -> bool:
        return sha256 in self.entries()

    def accepted_by(self, sha256: str) -> str | None:
        """The run that accepted ``sha256`` (None when not recorded, or recorded without a run)."""
        run_id = self.entries().get(sha256, {}).get("run_id")
        return str(run_id) if run_id else None

    def newest_mtime(self, kind: str) -> int | None:
        """The latest modification time among accepted files of ``kind`` (None when none recorded one)."""
        times = [int(e["mtime"]) for e in self.entries().values() if e.get("kind") == kind and "mtime" in e]
        return max(times, default=None)

    def record(self, sha256: str, *, name: str, kind: str, run_id: str | None, at: datetime,
               mtime: int | None = None) -> None:
        """Remember ``sha256`` as processed (idempotent: the first record of a hash is kept)."""
        if at.tzinfo is None:
            raise ValueError("at must be timezone-aware")
        with self._locked():
            entries = self.entries()
            if sha256 in entries:
                return
            entries[sha256] = {"name": name, "kind": kind, "run_id": run_id, "recorded_at": at.isoformat()}
            if mtime is not None:
                entries[sha256]["mtime"] = int(mtime)
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text(json.dumps({"feed_id": self.feed_id, "processed": entries}, indent=1,
                                      sort_keys=True) + "\n")
            tmp.replace(self.path)
        log.info("census index %s: recorded %s (%s)", self.feed_id, sha256[:12], kind)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        with (self.folder / f".{self.feed_id}.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------------------- fetching
def pick_census(source: LocalSource | SftpSource | SqlSource, data_dir: Path) -> Path:
    """The newest regular file in a local source folder matching the pattern (by modification time).

    Kept for callers that only know local folders; :func:`fetch_census` handles every source kind and
    the processed-once rule.
    """
    if not isinstance(source, LocalSource):
        raise ConfigError(f"a {source.kind} census source is fetched with fetch_census, not pick_census",
                          field="census.source.kind")
    folder = _local_folder(source, data_dir)
    with _open_folder(folder) as folder_fd:
        return folder / _newest_local(folder_fd, folder, source.pattern)


def fetch_census(source: LocalSource | SftpSource | SqlSource, *, feed_id: str, schema: CensusSchema,
                 data_dir: Path, keys_dir: Path, work_dir: Path, force: bool = False,
                 connections: Connections | None = None, run_id: str | None = None,
                 tee: Writable | None = None) -> CensusPick:
    """The census a run of ``feed_id`` should read, checked against the size cap and archive rules.

    ``work_dir`` is the run's private folder (downloads and query results land there, mode 0600).
    ``tee``: for a local source (:func:`tees`), every block of the private copy is also written there, in
    the one pass that copies and hashes it (the stage's sealed copy); other sources ignore it.
    ``connections`` resolves the source's connection id (Airflow connections); by default the keys
    directory's ``<id>.json`` files. Raises :class:`NoNewCensus` when the newest file was already
    accepted (by a run other than ``run_id``) and ``force`` is false; DataError for a file over the cap or
    breaking an archive rule.
    """
    index = CensusIndex(data_dir, feed_id)
    if isinstance(source, LocalSource):
        folder = _local_folder(source, data_dir)
        with _open_folder(folder) as folder_fd:
            name = _newest_local(folder_fd, folder, source.pattern)
            with _open_local(folder_fd, name, origin=folder / name, schema=schema) as opened:
                # Hashed first: a file already processed is never copied (the usual night, no new file).
                reprocessed = _check_new(index, opened.digest, opened.name, force, run_id)
                pick = replace(_copy_opened(opened, work_dir, schema.max_bytes, tee), reprocessed=reprocessed)
        try:
            _check_archive(pick.path, schema, pick.name)
        except CarrierFeedsError:
            pick.path.unlink(missing_ok=True)
            raise
    elif isinstance(source, SftpSource):
        pick = _fetch_sftp(source, schema, index, work_dir, force,
                           connections or KeysDirConnections(keys_dir), run_id)
    else:
        from carrierfeeds.census.sql_source import query_to_csv

        url = (connections or KeysDirConnections(keys_dir)).sql_url(source.connection_id)
        dst = _private_dir(work_dir) / "sql-census.csv"
        query_to_csv(url, source.query, dst, schema, name=f"{source.connection_id}.sql.csv")
        # A query's result is this interval's census by definition: no processed-once check.
        pick = CensusPick(path=dst, name=f"{source.connection_id}.sql.csv", sha256=sha256_file(dst),
                          size=dst.stat().st_size, kind="sql")
    log.info("feed %s: census %s from %s source (%d bytes, sha256 %s%s)", feed_id, pick.name, pick.kind,
             pick.size, pick.sha256[:12], ", reprocessed" if pick.reprocessed else "")
    return pick


def census_from_file(path: Path, *, feed_id: str, schema: CensusSchema, data_dir: Path,
                     work_dir: Path, tee: Writable | None = None) -> CensusPick:
    """An explicitly named census file (``--census PATH``): always processed, even when already accepted
    (``reprocessed`` then says so), but still under the size cap and the archive rules. Read once,
    through one descriptor, into a private copy in ``work_dir`` (the named file itself is never a link),
    hashed and written to ``tee`` (if given) in the same pass. Not hashed before it is copied, as a local
    source's file is: it is processed whatever its hash, so the one read is checked against the
    descriptor's identity, size and modification time before and after it, as that first read is."""
    path = Path(path)
    name = loggable(path.name)
    try:
        folder_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        raise DataError("census file not found (or not a regular file)", file=name, rule="no_census") from None
    try:
        with _open_local(folder_fd, path.name, origin=path.absolute(), schema=schema, hashed=False,
                         missing=DataError("census file not found (or not a regular file)", file=name,
                                           rule="no_census")) as opened:
            pick = _copy_opened(opened, work_dir, schema.max_bytes, tee)
    finally:
        os.close(folder_fd)
    try:
        _check_archive(pick.path, schema, name)
    except CarrierFeedsError:
        pick.path.unlink(missing_ok=True)
        raise
    reprocessed = CensusIndex(data_dir, feed_id).seen(pick.sha256)
    if reprocessed:
        log.warning("%s: an explicitly named census that was already processed (sha256 %s)", name,
                    pick.sha256[:12])
    return replace(pick, reprocessed=reprocessed)


def confirm_unchanged(pick: CensusPick) -> None:
    """TransientError when the employer's file a local pick was read from is no longer the file read (its
    identity, size or modification time moved on: still being written). Only looks, never reads."""
    if pick.origin is None or pick.origin_stat is None:
        return
    try:
        st = os.stat(pick.origin, follow_symlinks=False)
        now: tuple[int, int, int, int] | None = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:
        now = None
    if now != pick.origin_stat:
        raise TransientError(f"{pick.name}: the census changed while it was staged (still being written?)",
                             details={"sha256": pick.sha256})


def accept_census(source: LocalSource | SftpSource | SqlSource, pick: CensusPick, *, feed_id: str,
                  data_dir: Path, keys_dir: Path, run_id: str | None, at: datetime,
                  connections: Connections | None = None) -> str | None:
    """Once ``pick``'s run has an outcome (delivered, handed over, or nothing to send): remember its
    sha256; for an SFTP drop with ``processed_dir``, move the file there on the server. Returns the
    file's new remote path, or None."""
    if pick.kind != "sql":
        CensusIndex(data_dir, feed_id).record(pick.sha256, name=pick.name, kind=pick.kind, run_id=run_id,
                                              at=at, mtime=pick.mtime)
    if isinstance(source, SftpSource) and source.processed_dir and pick.remote_name:
        from carrierfeeds.census.sftp_source import SftpCensusDrop

        endpoint = (connections or KeysDirConnections(keys_dir)).sftp_endpoint(source.connection_id)
        drop = SftpCensusDrop(endpoint, source.remote_dir, source.pattern)
        return drop.move(pick.remote_name, source.processed_dir, sha256=pick.sha256)
    return None


def _local_folder(source: LocalSource, data_dir: Path) -> Path:
    folder = (data_dir / source.path).resolve()
    if not folder.is_dir():
        raise ConfigError(f"census folder {folder} does not exist", field="census.source.path")
    return folder


@contextlib.contextmanager
def _open_folder(folder: Path) -> Iterator[int]:
    """The census folder as a directory descriptor every file is listed and opened relative to."""
    try:
        fd = os.open(folder, _OPEN_FOLDER)
    except OSError as exc:
        reason = errno.errorcode.get(exc.errno or 0, "error")
        raise ConfigError(f"census folder {folder} cannot be opened as a folder ({reason})",
                          field="census.source.path") from None
    try:
        yield fd
    finally:
        os.close(fd)


def _newest_local(folder_fd: int, folder: Path, pattern: str) -> str:
    """The name of the newest regular file in the folder matching ``pattern`` (by modification time)."""
    candidates: list[tuple[int, str]] = []
    for name in os.listdir(folder_fd):
        if name.startswith(".") or not fnmatch.fnmatchcase(name, pattern):
            continue
        try:
            st = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue  # gone since the listing
        if stat.S_ISREG(st.st_mode):
            candidates.append((st.st_mtime_ns, name))
    if not candidates:
        raise DataError(f"no file matching {pattern!r} in {folder}", file=str(folder), rule="no_census")
    return max(candidates)[1]


@dataclass(frozen=True)
class _Opened:
    """A local census opened once: its descriptor, escaped name, origin, stat as opened and sha256."""

    fd: int
    name: str
    origin: Path
    stat: os.stat_result
    sha256: str | None  # None: not hashed when opened (the copy is)

    @property
    def digest(self) -> str:
        """The sha256 it was opened with (only a file opened ``hashed`` has one)."""
        if self.sha256 is None:
            raise RuntimeError("this census was opened without hashing it")
        return self.sha256

    @property
    def ident(self) -> tuple[int, int, int, int]:
        return (self.stat.st_dev, self.stat.st_ino, self.stat.st_size, self.stat.st_mtime_ns)


@contextlib.contextmanager
def _open_local(folder_fd: int, raw_name: str, *, origin: Path, schema: CensusSchema, hashed: bool = True,
                missing: CarrierFeedsError | None = None) -> Iterator[_Opened]:
    """Open ``raw_name`` once (relative to ``folder_fd``, never through a link), check the descriptor is
    a regular file under the cap and hash it (unless not ``hashed``); closed when the block ends. The name
    it carries (for messages, logs and the ledger) has control characters escaped."""
    name = loggable(raw_name)
    try:
        fd = os.open(raw_name, _OPEN_FILE, dir_fd=folder_fd)
    except FileNotFoundError:
        raise missing or TransientError(f"{name}: the census disappeared while it was picked; try again",
                                        details={"file": name}) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DataError("the census name is a symbolic link; refused (only regular files are read)",
                            file=name, rule="not_regular_file") from None
        raise DataError(f"the census cannot be opened ({errno.errorcode.get(exc.errno or 0, 'error')})",
                        file=name, rule="unreadable") from None
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise DataError("the census is not a regular file (a folder, FIFO or device); refused", file=name,
                            rule="not_regular_file")
        check_size(before.st_size, schema.max_bytes, name=name)
        os.set_blocking(fd, True)
        digest = _read_fd(fd, name, schema.max_bytes, before) if hashed else None
        yield _Opened(fd=fd, name=name, origin=origin, stat=before, sha256=digest)
    finally:
        os.close(fd)


def _read_fd(fd: int, name: str, max_bytes: int, before: os.stat_result, out: Any = None) -> str:
    """The sha256 of the file at ``fd`` read from its start (each block also written to ``out``);
    TransientError when it is not the file ``before`` describes by the end (still being written)."""
    os.lseek(fd, 0, os.SEEK_SET)
    digest, size = hashlib.sha256(), 0
    while chunk := os.read(fd, _CHUNK):
        size += len(chunk)
        check_size(size, max_bytes, name=name)
        digest.update(chunk)
        if out is not None:
            out.write(chunk)
    after = os.fstat(fd)
    if (after.st_dev, after.st_ino, after.st_size, after.st_mtime_ns) != \
            (before.st_dev, before.st_ino, before.st_size, before.st_mtime_ns) or size != before.st_size:
        raise TransientError(f"{name}: the census changed while it was read (still being written?)",
                             details={"file": name})
    return digest.hexdigest()


def _copy_opened(opened: _Opened, work_dir: Path, max_bytes: int, tee: Writable | None = None) -> CensusPick:
    """The run's private copy of an opened census, read again through the same descriptor: a census is
    only copied once it is known to be wanted, and the copy must hash as the first read did (if there
    was one). Each block also goes to ``tee``, if given."""
    dst = _private_dir(work_dir) / "local-census.copy"
    with open_private(dst) as out:
        digest = _read_fd(opened.fd, opened.name, max_bytes, opened.stat, out if tee is None else _Both(out, tee))
        if opened.sha256 is not None and digest != opened.sha256:
            raise TransientError(f"{opened.name}: the census changed while it was read (still being written?)",
                                 details={"file": opened.name})
    return CensusPick(path=dst, name=opened.name, sha256=digest, size=opened.stat.st_size, kind="local",
                      mtime=int(opened.stat.st_mtime), origin=str(opened.origin), origin_stat=opened.ident)


class Writable(Protocol):
    """Where a census's blocks can also go as they are copied (the staging store's writer)."""

    def write(self, data: bytes, /) -> Any: ...


class _Both:
    """Each block written to the private copy, then to the tee."""

    def __init__(self, copy: Writable, tee: Writable) -> None:
        self.copy, self.tee = copy, tee

    def write(self, block: bytes) -> None:
        self.copy.write(block)
        self.tee.write(block)


def tees(source: LocalSource | SftpSource | SqlSource | None) -> bool:
    """Whether :func:`fetch_census` (a local source) or :func:`census_from_file` (``None``) writes the
    census's blocks to a tee as it copies them; an SFTP download or a query result is written first."""
    return source is None or isinstance(source, LocalSource)


def _check_new(index: CensusIndex, digest: str, name: str, force: bool, run_id: str | None = None) -> bool:
    if not index.seen(digest):
        return False
    if run_id is not None and index.accepted_by(digest) == run_id:
        # This very run accepted it before (a retry or rerun of the same interval): still its census.
        log.info("%s: accepted earlier by this run (sha256 %s); reading it again", name, digest[:12])
        return False
    if not force:
        raise NoNewCensus("the newest census was already processed (same sha256); nothing new to send. "
                          f"{_FORCE} to process it again", file=name, rule="already_processed",
                          details={"sha256": digest})
    log.warning("%s: processing an already processed census again (forced; sha256 %s)", name, digest[:12])
    return True


def _check_archive(path: Path, schema: CensusSchema, name: str) -> None:
    """Refuse early, before staging: an archive the schema does not allow, or a zip breaking the rules."""
    kind = sniff_file(path)
    if kind is None or (kind in ("zip", "ole") and schema.format == "xlsx"):
        return  # an XLSX is a zip; the reader checks it as a container
    if kind == "zip" and schema.allow_zip:
        inspect_zip(path, name=name, max_bytes=schema.max_bytes)
        return
    raise DataError(f"file is a {kind} archive and the census schema does not allow it", file=name,
                    rule="archive", details={"format": kind})


def _fetch_sftp(source: SftpSource, schema: CensusSchema, index: CensusIndex, work_dir: Path, force: bool,
                connections: Connections, run_id: str | None = None) -> CensusPick:
    from carrierfeeds.census.sftp_source import SftpCensusDrop

    endpoint = connections.sftp_endpoint(source.connection_id)
    drop = SftpCensusDrop(endpoint, source.remote_dir, source.pattern)
    files = drop.list_files()
    if not files:
        raise DataError(f"no file matching {source.pattern!r} in the SFTP drop", file=source.remote_dir,
                        rule="no_census")
    newest = files[0]
    accepted_mtime = index.newest_mtime("sftp")
    if accepted_mtime is not None and newest.mtime < accepted_mtime and not force:
        # The accepted census was moved out of the drop; what is left is older and superseded by it.
        raise NoNewCensus("the newest file in the SFTP drop is older than the census last accepted; nothing "
                          f"new to send. {_FORCE} to process it anyway", file=newest.name,
                          rule="older_than_accepted")
    check_size(newest.size, schema.max_bytes, name=newest.name)
    # The local name never comes from the server: a remote name is not trusted as a path.
    dst = _private_dir(work_dir) / "sftp-census.download"
    try:
        drop.fetch(newest, dst, max_bytes=schema.max_bytes)
        digest = sha256_file(dst)
        reprocessed = _check_new(index, digest, newest.name, force, run_id)
        _check_archive(dst, schema, newest.name)
    except CarrierFeedsError:
        dst.unlink(missing_ok=True)
        raise
    return CensusPick(path=dst, name=newest.name, sha256=digest, size=dst.stat().st_size, kind="sftp",
                      remote_name=newest.name, reprocessed=reprocessed, mtime=newest.mtime)


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


__all__ = ["CensusIndex", "CensusPick", "NoNewCensus", "Writable", "accept_census", "census_from_file",
           "confirm_unchanged", "fetch_census", "load_sql_url", "pick_census", "sha256_file", "tees"]
