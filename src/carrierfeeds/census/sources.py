"""Where a feed's census comes from: the newest new file in a local folder or an employer's SFTP drop, or a
SQL query, fetched under the size and archive rules and remembered by sha256 once accepted.

    fetch_census(source, ...) -> CensusPick     a local file for the run to stage (the original is kept)
    census_from_file(path, ...) -> CensusPick   an explicit file (``--census PATH``): always processed
    accept_census(source, pick, ...)            once its run has an outcome: record its sha256 in the
                                                feed's census index; move an SFTP file to processed_dir

A file is processed once: the newest matching file is picked, and when its sha256 is already in the
feed's index (``<data_dir>/census-index/<feed_id>.json``) there is nothing new (:class:`NoNewCensus`)
unless ``force``. Older files than the newest are never picked: a newer census supersedes them, and
sending an older one after a newer was accepted would roll members back; for the same reason, once an
SFTP census was accepted (and moved to the processed folder), a file in the drop older than it is not
new either. A file the same run already accepted is new to that run (a retry of the run re-reads it).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from carrierfeeds.census.archive import check_size, inspect_zip, sniff_file
from carrierfeeds.config import CensusSchema, LocalSource, SftpSource, SqlSource
from carrierfeeds.credentials import SftpEndpoint, load_sftp_endpoint, read_connection_file
from carrierfeeds.errors import CarrierFeedsError, ConfigError, DataError
from carrierfeeds.files import sha256_file

log = logging.getLogger(__name__)

CensusKind = Literal["local", "sftp", "sql"]
EndpointFor = Callable[[str], SftpEndpoint]
SqlUrlFor = Callable[[str], str]
INDEX_DIR = "census-index"


class NoNewCensus(DataError):
    """The newest census matching the source was already processed; nothing new to send (use force)."""

    code = "no_new_census"


@dataclass(frozen=True)
class CensusPick:
    """The census a run should stage.

    ``path``: a local file to copy into the run (the employer's own file for a local source, a private
    download or query result in ``work_dir`` otherwise); ``name``: the employer's file name, for messages
    and the ledger (for SQL: ``<connection_id>.sql.csv``); ``sha256`` and ``size`` of ``path``;
    ``kind``: the source kind; ``remote_name``: the name on the SFTP server; ``reprocessed``: True when
    ``force`` picked a file the index already holds; ``mtime``: the file's modification time (seconds)
    where the source has one.
    """

    path: Path
    name: str
    sha256: str
    size: int
    kind: CensusKind
    remote_name: str | None = None
    reprocessed: bool = False
    mtime: int | None = None

    def as_state(self) -> dict[str, Any]:
        """JSON-friendly, PHI-free: what a later stage (maybe in another process) needs to accept it."""
        data = asdict(self)
        data["path"] = str(self.path)
        return data

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> CensusPick:
        return cls(**{**state, "path": Path(state["path"])})


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
    return _newest_local(source, data_dir)


def fetch_census(source: LocalSource | SftpSource | SqlSource, *, feed_id: str, schema: CensusSchema,
                 data_dir: Path, keys_dir: Path, work_dir: Path, force: bool = False,
                 endpoint_for: EndpointFor | None = None, sql_url_for: SqlUrlFor | None = None,
                 run_id: str | None = None) -> CensusPick:
    """The census a run of ``feed_id`` should read, checked against the size cap and archive rules.

    ``work_dir`` is the run's private folder (downloads and query results land there, mode 0600).
    ``endpoint_for`` / ``sql_url_for`` resolve a connection id (Airflow connections); by default the
    keys directory's ``<id>.json`` files. Raises :class:`NoNewCensus` when the newest file was already
    accepted (by a run other than ``run_id``) and ``force`` is false; DataError for a file over the cap or
    breaking an archive rule.
    """
    index = CensusIndex(data_dir, feed_id)
    if isinstance(source, LocalSource):
        path = _newest_local(source, data_dir)
        st = path.stat()
        check_size(st.st_size, schema.max_bytes, name=path.name)
        digest = sha256_file(path)
        reprocessed = _check_new(index, digest, path.name, force, run_id)
        _check_archive(path, schema, path.name)
        pick = CensusPick(path=path, name=path.name, sha256=digest, size=st.st_size, kind="local",
                          reprocessed=reprocessed, mtime=int(st.st_mtime))
    elif isinstance(source, SftpSource):
        pick = _fetch_sftp(source, schema, index, keys_dir, work_dir, force, endpoint_for, run_id)
    else:
        from carrierfeeds.census.sql_source import query_to_csv

        url = (sql_url_for or (lambda cid: load_sql_url(keys_dir, cid)))(source.connection_id)
        dst = _private_dir(work_dir) / "sql-census.csv"
        query_to_csv(url, source.query, dst, schema, name=f"{source.connection_id}.sql.csv")
        # A query's result is this interval's census by definition: no processed-once check.
        pick = CensusPick(path=dst, name=f"{source.connection_id}.sql.csv", sha256=sha256_file(dst),
                          size=dst.stat().st_size, kind="sql")
    log.info("feed %s: census %s from %s source (%d bytes, sha256 %s%s)", feed_id, pick.name, pick.kind,
             pick.size, pick.sha256[:12], ", reprocessed" if pick.reprocessed else "")
    return pick


def census_from_file(path: Path, *, feed_id: str, schema: CensusSchema, data_dir: Path) -> CensusPick:
    """An explicitly named census file (``--census PATH``): always processed, even when already accepted
    (``reprocessed`` then says so), but still under the size cap and the archive rules."""
    name = path.name
    if path.is_symlink() or not path.is_file():
        raise DataError("census file not found (or not a regular file)", file=name, rule="no_census")
    st = path.stat()
    check_size(st.st_size, schema.max_bytes, name=name)
    digest = sha256_file(path)
    _check_archive(path, schema, name)
    reprocessed = CensusIndex(data_dir, feed_id).seen(digest)
    if reprocessed:
        log.warning("%s: an explicitly named census that was already processed (sha256 %s)", name, digest[:12])
    return CensusPick(path=path, name=name, sha256=digest, size=st.st_size, kind="local", reprocessed=reprocessed,
                      mtime=int(st.st_mtime))


def accept_census(source: LocalSource | SftpSource | SqlSource, pick: CensusPick, *, feed_id: str,
                  data_dir: Path, keys_dir: Path, run_id: str | None, at: datetime,
                  endpoint_for: EndpointFor | None = None) -> str | None:
    """Once ``pick``'s run has an outcome (delivered, handed over, or nothing to send): remember its
    sha256; for an SFTP drop with ``processed_dir``, move the file there on the server. Returns the
    file's new remote path, or None."""
    if pick.kind != "sql":
        CensusIndex(data_dir, feed_id).record(pick.sha256, name=pick.name, kind=pick.kind, run_id=run_id,
                                              at=at, mtime=pick.mtime)
    if isinstance(source, SftpSource) and source.processed_dir and pick.remote_name:
        from carrierfeeds.census.sftp_source import SftpCensusDrop

        endpoint = (endpoint_for or (lambda cid: load_sftp_endpoint(keys_dir, cid)))(source.connection_id)
        drop = SftpCensusDrop(endpoint, source.remote_dir, source.pattern)
        return drop.move(pick.remote_name, source.processed_dir, sha256=pick.sha256)
    return None


def load_sql_url(keys_dir: Path, connection_id: str) -> str:
    """The SQLAlchemy URL in ``<keys_dir>/<connection_id>.json`` (``{"url": ...}``, owner-only file)."""
    data, _ = read_connection_file(keys_dir, connection_id, required=("url",), allowed={"url", "comment"},
                                   owner_only=True)
    return str(data["url"]).strip()


def _newest_local(source: LocalSource, data_dir: Path) -> Path:
    folder = (data_dir / source.path).resolve()
    if not folder.is_dir():
        raise ConfigError(f"census folder {folder} does not exist", field="census.source.path")
    candidates = [p for p in folder.glob(source.pattern)
                  if p.is_file() and not p.is_symlink() and not p.name.startswith(".")]
    if not candidates:
        raise DataError(f"no file matching {source.pattern!r} in {folder}", file=str(folder), rule="no_census")
    return max(candidates, key=lambda p: (p.stat().st_mtime_ns, p.name))


def _check_new(index: CensusIndex, digest: str, name: str, force: bool, run_id: str | None = None) -> bool:
    if not index.seen(digest):
        return False
    if run_id is not None and index.accepted_by(digest) == run_id:
        # This very run accepted it before (a retry or rerun of the same interval): still its census.
        log.info("%s: accepted earlier by this run (sha256 %s); reading it again", name, digest[:12])
        return False
    if not force:
        raise NoNewCensus("the newest census was already processed (same sha256); nothing new to send. "
                          "Use force to process it again", file=name, rule="already_processed",
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


def _fetch_sftp(source: SftpSource, schema: CensusSchema, index: CensusIndex, keys_dir: Path, work_dir: Path,
                force: bool, endpoint_for: EndpointFor | None, run_id: str | None = None) -> CensusPick:
    from carrierfeeds.census.sftp_source import SftpCensusDrop

    endpoint = (endpoint_for or (lambda cid: load_sftp_endpoint(keys_dir, cid)))(source.connection_id)
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
                          "new to send. Use force to process it anyway", file=newest.name,
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


__all__ = ["CensusIndex", "CensusPick", "NoNewCensus", "accept_census", "census_from_file", "fetch_census",
           "load_sql_url", "pick_census", "sha256_file"]
