"""Retention: employee-level files go N days after an employer's contract ends, ledger metadata after
N years; a legal hold on the employer or the feed blocks both; every purge is itself audited, by count.

Employee-level data is whatever a run leaves behind for one feed:

- under the data directory, one folder per feed: ``staging/<feed_id>/`` (the local staging store),
  ``reports/<feed_id>/`` (validation reports), ``snapshots/<feed_id>/`` (change-mode snapshots) and
  ``scratch/<feed_id>/`` (plaintext a crashed process did not get to wipe);
- ``staging_store``: the feed's folder in a staging store at ``Settings.staging_url`` (an fsspec URL:
  ``s3://...``, ``file:///mnt/shared/...``) when that is not the local ``staging/`` folder;
- ``outbox``: the files a manual feed placed in its hand-off outbox (``delivery.outbox``, relative to
  the data directory): encrypted 834s, flat files or fallback PDFs. An outbox may be shared, so only the
  names the ledger recorded for the feed's manual deliveries go (and their ``_resend<n>`` copies), never
  the folder or anyone else's file. A hand-off still pending (never confirmed) is purged too: after the
  contract ended plus the retention period nobody may hand it over any more; the audit event counts
  those files as ``pending_handoffs`` so the auditor sees the hand-off never happened;
- ``carrier_inbox``: the same, by name, for a ``delivery: {kind: local}`` carrier inbox under the data
  directory; ``test_inbox`` for a local test endpoint (``delivery.test``), where a feed in testing sends;
- ``census_drop``: every file in a local census source's drop folder (``census.source.path``), the ones
  a run read and the ones it never picked, once every feed reading that folder is due (until then the
  folder is reported as ``shared`` and kept). The folder must be a folder of its own under the data
  directory, never the data directory itself or one of the project's folders;
- ``census_index``: ``census-index/<feed_id>.json`` (hashes and names of the files it accepted);
- ``ack_archive``: the carrier's acknowledgment files kept under ``acks/<source_id>/`` (decrypted and
  redacted) whose every matched row answers a delivery of a feed being purged;
- ``ack_inbox``: the same acknowledgment files as the carrier left them in its mapping's local
  acknowledgment folder under the data directory, by the name the ledger recorded and only while the
  content still has the recorded sha256 (the folder is the carrier's, shared by all its feeds).

Census copies, accepted census files, SFTP and SQL source downloads and decrypted files all live in a
run's staging or scratch folder, so they go with those. ``tests/test_retention_places.py`` derives the
places from real runs (it walks the data directory) rather than from this list.

Fallback PDFs are written in the run's scratch folder, kept (gpg-encrypted) in the staging store and
placed in the outbox; there is no separate fallback folder. A feed's data goes once its employer's
``contract_end`` plus ``retention_days`` (``Settings.employee_data_retention_days``, default 90) is
before ``as_of``. Folders of a feed no feed file describes are kept and reported: nobody can say whose
they are or whether a hold applies. Before anything is removed an audit event records its kind, feed,
employer and how many files and bytes it held (never a name or a byte of its content).

Ledger metadata, and how the hash chain survives its purge
---------------------------------------------------------
The ledger is one hash chain across every audit table, so deleting a row breaks the link of the row
after it. A purge therefore appends a *checkpoint* row (``purge_checkpoints``, itself chained) in the
same transaction as the deletes. The checkpoint lists every gap the purge cut out of the chain as
``(first seq, last seq, prev_hash into the gap, row_hash of the gap's last row)``. ``verify_chain``
walks from genesis as before and steps over a missing stretch of seqs only where some checkpoint
recorded exactly that gap, starting at the hash the walk holds; the live row after it must then link
to the gap's recorded last hash. So every row still in the ledger is verified, and a row deleted
outside a purge (or a checkpoint edited or removed) shows as a broken link, as before.

Why gaps rather than the simpler "checkpoint = hash of the last purged row; verify from there": a
prefix cut is blocked by the oldest row anyone must keep. A legal hold on one employer, or a run whose
acknowledgment came late, would then keep every other employer's rows forever. Gaps let the purge take
exactly the rows that are due. Checkpoints are never purged: they hold seqs, hashes and counts only.

What a ledger purge removes (older than the cut-off, ``as_of`` minus ``retention_years``,
``Settings.ledger_retention_years``, default 7):
whole runs (the run, its events, control numbers, deliveries, outcomes, and any later table keyed by
run or delivery) once the newest of their rows is older than the cut-off; audit events by their own
time, except those about a held employer or feed or about a run or delivery still kept; an employer's
authorisation once a newer one had replaced it before the cut-off (until then it is the authority a
retained delivery was sent under). A hold (``Employer.legal_hold`` in the feed file, or one recorded
with ``carrierfeeds hold set``) keeps every row of the held employer's feeds.

Purges are idempotent: a second run finds nothing due and writes nothing. Deleting ledger rows needs
DELETE rights the pipeline's least-privilege role does not have: run ``carrierfeeds purge`` (or the
housekeeping DAG) with the ledger owner's credentials.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from carrierfeeds.config import Feed
from carrierfeeds.errors import ConfigError, Refused
from carrierfeeds.ledger import Ledger
from carrierfeeds.ledger.anchor import AnchorLog
from carrierfeeds.ledger.records import LedgerPurge
from carrierfeeds.settings import DEFAULT_EMPLOYEE_DATA_RETENTION_DAYS, DEFAULT_LEDGER_RETENTION_YEARS, Settings

log = logging.getLogger(__name__)

#: Folders under the data directory that hold employee-level data, one sub-folder per feed.
EMPLOYEE_DATA_KINDS: tuple[str, ...] = ("staging", "reports", "snapshots", "scratch")
#: A feed's files in its manual hand-off outbox.
OUTBOX = "outbox"
#: A feed's files in a ``delivery: {kind: local}`` carrier inbox under the data directory.
CARRIER_INBOX = "carrier_inbox"
#: The same for a local test endpoint (``delivery.test: {kind: local}``), where a feed in testing sends.
TEST_INBOX = "test_inbox"
#: The inbox kinds: files named by the ledger's deliveries through them.
_INBOXES = (OUTBOX, CARRIER_INBOX, TEST_INBOX)
#: A feed's folder in a staging store at ``staging_url`` (not the local ``staging/`` folder).
STAGING_STORE = "staging_store"
#: Every file in a local census source's drop folder (picked or not), once every feed reading it is due.
CENSUS_DROP = "census_drop"
#: A feed's census index (``census-index/<feed_id>.json``: hashes and names of the files it accepted).
CENSUS_INDEX = "census_index"
#: Acknowledgment files archived under ``acks/<source_id>/`` that answer only this feed's deliveries.
ACK_ARCHIVE = "ack_archive"
#: The same files as the carrier left them in a local acknowledgment folder under the data directory.
ACK_INBOX = "ack_inbox"
#: Top-level names under the data directory that are the project's own, never an employer's drop folder.
_OWN_FOLDERS = frozenset({*EMPLOYEE_DATA_KINDS, "census-index", "acks", "anchors", "keys", "gnupg"})


class PurgeRefused(Refused):
    """A purge would touch something it cannot vouch for (a symlinked folder, an unreadable feed file)."""

    code = "purge_refused"


@dataclass(frozen=True)
class FeedParty:
    """What retention needs to know about a feed: whose data it is and until when it may be kept."""

    feed_id: str
    employer_id: str
    carrier_id: str
    contract_end: date | None = None
    legal_hold: bool = False
    #: A manual feed's hand-off outbox, relative to the data directory.
    outbox: str | None = None
    #: A local census source's drop folder, relative to the data directory.
    census_drop: str | None = None
    #: A ``delivery: {kind: local}`` carrier inbox, relative to the data directory.
    inbox: str | None = None
    #: A local test endpoint (``delivery.test: {kind: local}``), relative to the data directory.
    test_inbox: str | None = None
    #: The carrier mapping's id (the source id its acknowledgments are recorded under) and its local
    #: acknowledgment folder, relative to the data directory (None when acknowledgments come by SFTP).
    mapping_id: str | None = None
    ack_inbox: str | None = None
    #: An aggregated carrier file's own party (its id is the aggregation mapping's): the (feed id,
    #: employer id) of every employer in the file. Its data falls due with the first of them whose
    #: contract ended (the file holds that employer's members) and is kept while any of them is held.
    employer_feeds: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_feed(cls, feed: Feed) -> FeedParty:
        outbox = feed.delivery.outbox if feed.delivery.kind == "manual" else None
        inbox = feed.delivery.path if feed.delivery.kind == "local" else None
        drop = feed.census.source.path if feed.census.source.kind == "local" else None
        test = getattr(feed.delivery, "test", None)
        return cls(feed_id=feed.feed_id, employer_id=feed.employer.id, carrier_id=feed.carrier.id,
                   contract_end=feed.employer.contract_end, legal_hold=feed.employer.legal_hold, outbox=outbox,
                   census_drop=drop, inbox=inbox, test_inbox=test.path if test is not None and test.kind == "local"
                   else None)


@dataclass(frozen=True)
class Holds:
    """Holds in force: employers and feeds (a held employer's feeds are in ``feeds`` too)."""

    employers: frozenset[str] = frozenset()
    feeds: frozenset[str] = frozenset()

    def blocks(self, feed_id: str, employer_id: str | None = None) -> bool:
        return feed_id in self.feeds or (employer_id is not None and employer_id in self.employers)


@dataclass(frozen=True)
class PurgeItem:
    """One folder of employee-level data: its kind, whose it is, how much it holds, and its fate."""

    kind: str
    feed_id: str
    employer_id: str | None
    files: int
    bytes: int
    # "purge", "held" (due but a hold blocks it), "unknown_feed" (kept: no feed file), "shared" (a census
    # drop folder another feed still reads, that is not due yet)
    action: str
    due: date | None = None
    pending_handoffs: int = 0  # outbox files of hand-offs nobody confirmed


@dataclass(frozen=True)
class EmployeeDataPurge:
    """The employee-data side of a purge: what went (or, dry, would go) and what was kept and why."""

    items: tuple[PurgeItem, ...]
    dry_run: bool

    @property
    def purged(self) -> tuple[PurgeItem, ...]:
        return tuple(i for i in self.items if i.action == "purge")

    @property
    def kept(self) -> tuple[PurgeItem, ...]:
        return tuple(i for i in self.items if i.action != "purge")


@dataclass(frozen=True)
class PurgeReport:
    """Both sides of one purge, PHI-free: printed by ``carrierfeeds purge``, returned to Airflow."""

    as_of: date
    dry_run: bool
    employee_data: EmployeeDataPurge
    ledger: LedgerPurge
    ledger_cutoff: datetime
    holds: Holds = field(default_factory=Holds)

    def as_dict(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(), "dry_run": self.dry_run,
            "employee_data": [asdict(i) for i in self.employee_data.items],
            "ledger": {"cutoff": self.ledger_cutoff.isoformat(), "rows": self.ledger.rows,
                       "counts": dict(self.ledger.counts), "gaps": len(self.ledger.gaps),
                       "checkpoint_seq": self.ledger.checkpoint_seq},
            "holds": {"employers": sorted(self.holds.employers), "feeds": sorted(self.holds.feeds)},
        }


# ------------------------------------------------------------------------------------------ holds
def resolve_holds(ledger: Ledger, parties: Iterable[FeedParty]) -> Holds:
    """Holds from feed files (``employer.legal_hold``) and the ledger, with each held employer's feeds
    (known from feed files and from the authorisations the ledger recorded)."""
    parties = list(parties)
    employers = {p.employer_id for p in parties if p.legal_hold}
    feeds: set[str] = set()
    for hold in ledger.legal_holds():
        (employers if hold.object_type == "employer" else feeds).add(hold.object_id)
    feeds |= {p.feed_id for p in parties if p.employer_id in employers}
    feeds |= {a.feed_id for a in ledger.authorisations() if a.employer_id in employers}
    return Holds(employers=frozenset(employers), feeds=frozenset(feeds))


def set_hold(ledger: Ledger, *, employer_id: str | None = None, feed_id: str | None = None, held: bool,
             reason: str, actor: str, now: datetime) -> None:
    """Place or lift a legal hold on exactly one employer or feed; audited with its reason."""
    if (employer_id is None) == (feed_id is None):
        raise ConfigError("name exactly one of an employer or a feed")
    object_type, object_id = ("employer", employer_id) if employer_id is not None else ("feed", feed_id)
    ledger.set_legal_hold(object_type=object_type, object_id=str(object_id), held=held, actor=actor,
                          reason=reason, now=now)


# --------------------------------------------------------------------------------- employee data
def _folder_size(path: Path) -> tuple[int, int]:
    files = size = 0
    for p in path.rglob("*"):
        if p.is_file() and not p.is_symlink():
            files += 1
            size += p.stat().st_size
    return files, size


def _due(party: FeedParty, as_of: date, retention_days: int) -> date | None:
    """The day the party's data fell due, or None while it may still be kept."""
    if party.contract_end is None:
        return None
    due = party.contract_end + timedelta(days=retention_days)
    return due if due < as_of else None


def _resend_of(name: str, original: str) -> bool:
    """``name`` is a ``_resend<n>`` copy of ``original`` (see ``run.delivery.resend_name``)."""
    stem, dot, extensions = original.partition(".")
    head, sep, tail = name.partition("_resend")
    number, _, rest = tail.partition(".") if dot else (tail, "", "")
    return head == stem and bool(sep) and number.isdigit() and rest == extensions


def outbox_files(ledger: Ledger, data_dir: Path, party: FeedParty, *,
                 kind: str = OUTBOX) -> tuple[list[Path], int]:
    """The feed's files in its hand-off outbox (``kind`` OUTBOX) or local carrier inbox (CARRIER_INBOX),
    by the names the ledger recorded for its deliveries through it, and how many of those deliveries are
    still pending a person's hand-off. The folder may be shared: nobody else's file is ever listed."""
    folder, transport = {OUTBOX: (party.outbox, "manual"), CARRIER_INBOX: (party.inbox, "local"),
                         TEST_INBOX: (party.test_inbox, "local:test")}[kind]
    if folder is None:
        return [], 0
    outbox = data_dir / folder
    try:
        st = os.lstat(outbox)
    except FileNotFoundError:
        return [], 0
    if not stat.S_ISDIR(st.st_mode):
        raise PurgeRefused(f"the {kind} of feed {party.feed_id} is not a plain directory",
                           details={"kind": kind, "feed_id": party.feed_id})
    names: dict[str, str] = {}  # file name -> delivery status
    for d in ledger.deliveries(feed_id=party.feed_id):
        if d.transport != transport:
            continue
        names[d.file_name] = d.status
        if d.remote_path:
            names[Path(d.remote_path).name] = d.status
    found, pending = [], 0
    for entry in sorted(outbox.iterdir()):
        owner = next((n for n in names if entry.name == n or _resend_of(entry.name, n)), None)
        if owner is None:
            continue
        if entry.is_symlink() or not entry.is_file():
            raise PurgeRefused(f"an entry of the {kind} of feed {party.feed_id} is not a regular file",
                               details={"kind": kind, "feed_id": party.feed_id})
        found.append(entry)
        pending += names[owner] == "pending_handoff"
    return found, pending


def _held(holds: Holds, party: FeedParty) -> bool:
    """A hold on the party, or (an aggregated file) on any employer or employer feed in it."""
    return holds.blocks(party.feed_id, party.employer_id) or any(
        holds.blocks(feed_id, employer_id) for feed_id, employer_id in party.employer_feeds)


def _purged_feeds(due: Iterable[FeedParty], holds: Holds) -> set[str]:
    return {p.feed_id for p in due if not _held(holds, p)}


def _drop_folder(data_dir: Path, relative: str, feed_id: str) -> Path:
    """A census drop folder, refused when it is not strictly inside the data directory or would take
    the project's own folders (staging, keys, anchors...) with it."""
    root = data_dir.resolve()
    folder = (data_dir / relative).resolve()
    if folder == root or root not in folder.parents or folder.relative_to(root).parts[0] in _OWN_FOLDERS:
        raise PurgeRefused(f"the census drop folder of feed {feed_id} is not a folder of its own under the "
                           "data directory; refusing to purge it", details={"kind": CENSUS_DROP, "feed_id": feed_id})
    return folder


def drop_files(folder: Path) -> list[Path]:
    """Every file in a census drop folder and below it (symbolic links as links: removed, never followed)."""
    if not folder.is_dir() or folder.is_symlink():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_symlink() or p.is_file())


def census_index_files(data_dir: Path, feed_id: str) -> list[Path]:
    """The feed's census index, its lock and any half-written copy."""
    from carrierfeeds.census.sources import INDEX_DIR

    folder = data_dir / INDEX_DIR
    names = (f"{feed_id}.json", f".{feed_id}.lock", f".{feed_id}.json.tmp")
    return [folder / n for n in names if (folder / n).is_file()]


def ack_files(ledger: Ledger, data_dir: Path, party: FeedParty, purged_feeds: set[str], *,
              kind: str = ACK_ARCHIVE) -> list[Path]:
    """Acknowledgment files whose every matched row is about a delivery of ``party``'s feed and of no
    feed outside ``purged_feeds`` (a file that also answers a kept feed stays): ACK_ARCHIVE, our archived
    copies (``acks/<source_id>/<sha256>...``); ACK_INBOX, the carrier's own file in the mapping's local
    acknowledgment folder, by the name recorded and only while its content still has the recorded hash."""
    owner = {d.delivery_id: d.feed_id for d in ledger.deliveries()}
    files: dict[tuple[str, str], tuple[set[str], set[str]]] = {}
    for row in ledger.acknowledgments(matched=True):
        feeds, names = files.setdefault((row.source_id, row.file_sha256), (set(), set()))
        feeds.add(owner.get(row.delivery_id or "", ""))
        names.add(row.file_name)
    found: list[Path] = []
    for (source_id, sha), (feeds, names) in sorted(files.items()):
        if party.feed_id not in feeds or not feeds <= purged_feeds:
            continue
        if kind == ACK_ARCHIVE:
            folder = data_dir / "acks" / source_id
            if folder.is_dir() and not folder.is_symlink():
                found += sorted(p for p in folder.glob(f"{sha}*") if p.is_file() and not p.is_symlink())
        elif party.ack_inbox is not None and source_id == party.mapping_id:
            for name in sorted(names):
                path = data_dir / party.ack_inbox / name
                if path.is_file() and not path.is_symlink() and _sha256(path) == sha:
                    found.append(path)
    return found


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _store_location(staging_url: str | None, data_dir: Path) -> tuple[Any, str] | None:
    """(fsspec filesystem, root) of a staging store other than the local ``staging/`` folder."""
    if not staging_url:
        return None
    import fsspec

    fs, root = fsspec.core.url_to_fs(staging_url)
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if ("file" in protocols or "local" in protocols) and \
            Path(root).resolve() == (data_dir / "staging").resolve():
        return None  # the same folder the "staging" kind covers
    return fs, str(root).rstrip("/")


def _store_size(fs: Any, where: str) -> tuple[int, int]:
    sizes = [int(info.get("size") or 0) for info in fs.find(where, detail=True).values()
             if info.get("type") != "directory"]
    return len(sizes), sum(sizes)


def plan_employee_data_purge(data_dir: Path, parties: Sequence[FeedParty], holds: Holds, *, as_of: date,
                             retention_days: int = DEFAULT_EMPLOYEE_DATA_RETENTION_DAYS,
                             ledger: Ledger | None = None,
                             staging_url: str | None = None) -> EmployeeDataPurge:
    """Everything of the employee-data kinds, with what a purge on ``as_of`` does to it. Outbox files
    are known from the ledger's deliveries, so without ``ledger`` no outbox is looked at."""
    if retention_days < 0:
        raise ConfigError("retention days must not be negative", field="employee_data_retention_days")
    by_feed = {p.feed_id: p for p in parties}
    items: list[PurgeItem] = []

    def decide(kind: str, feed_id: str, files: int, size: int, pending: int = 0) -> None:
        party = by_feed.get(feed_id)
        if party is None:
            items.append(PurgeItem(kind, feed_id, None, files, size, "unknown_feed"))
            return
        due = _due(party, as_of, retention_days)
        if due is None:
            return
        action = "held" if _held(holds, party) else "purge"
        items.append(PurgeItem(kind, party.feed_id, party.employer_id, files, size, action, due, pending))

    for kind in EMPLOYEE_DATA_KINDS:
        root = data_dir / kind
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            if folder.is_symlink():
                raise PurgeRefused(f"{kind}/{folder.name} is a symbolic link; refusing to purge through it",
                                   details={"kind": kind, "feed_id": folder.name})
            if not folder.is_dir() or folder.name.startswith("."):
                continue
            decide(kind, folder.name, *_folder_size(folder))
    store = _store_location(staging_url, data_dir)
    if store is not None:
        fs, store_root = store
        # Only feeds a feed file describes: an object store has no symlinks, but may hold other things.
        for party in parties:
            where = f"{store_root}/{party.feed_id}"
            if _due(party, as_of, retention_days) is not None and fs.exists(where):
                decide(STAGING_STORE, party.feed_id, *_store_size(fs, where))
    def size(paths: Sequence[Path]) -> int:
        return sum(p.lstat().st_size for p in paths)

    due = [p for p in parties if _due(p, as_of, retention_days) is not None]
    index_dir = data_dir / "census-index"
    if index_dir.is_dir():
        for entry in sorted(index_dir.glob("*.json")):
            if (found := census_index_files(data_dir, entry.stem)):
                decide(CENSUS_INDEX, entry.stem, len(found), size(found))
    # A drop folder goes once every feed reading it is due; until then it is reported as shared.
    drops: dict[Path, list[FeedParty]] = {}
    for party in parties:
        if party.census_drop is not None:
            drops.setdefault(_drop_folder(data_dir, party.census_drop, party.feed_id), []).append(party)
    for folder, readers in sorted(drops.items()):
        mine = sorted((p for p in readers if p in due), key=lambda p: p.feed_id)
        found = drop_files(folder)
        if not mine or not found:
            continue
        first = mine[0]
        if len(mine) < len(readers):
            items.append(PurgeItem(CENSUS_DROP, first.feed_id, first.employer_id, len(found), size(found),
                                   "shared", _due(first, as_of, retention_days)))
            continue
        if any(_held(holds, p) for p in readers):
            items.append(PurgeItem(CENSUS_DROP, first.feed_id, first.employer_id, len(found), size(found),
                                   "held", _due(first, as_of, retention_days)))
            continue
        decide(CENSUS_DROP, first.feed_id, len(found), size(found))
    if ledger is not None:
        purged_feeds = _purged_feeds(due, holds)
        for party in due:
            for kind in _INBOXES:
                found, pending = outbox_files(ledger, data_dir, party, kind=kind)
                if found:
                    decide(kind, party.feed_id, len(found), size(found), pending)
            for kind in (ACK_ARCHIVE, ACK_INBOX):
                # A held feed's files are listed (and kept) as long as no kept feed shares them.
                acks = ack_files(ledger, data_dir, party, purged_feeds | {party.feed_id}, kind=kind)
                if acks:
                    decide(kind, party.feed_id, len(acks), size(acks))
    return EmployeeDataPurge(items=tuple(items), dry_run=True)


def purge_employee_data(ledger: Ledger, data_dir: Path, parties: Sequence[FeedParty], holds: Holds, *,
                        as_of: date, now: datetime, actor: str,
                        retention_days: int = DEFAULT_EMPLOYEE_DATA_RETENTION_DAYS,
                        staging_url: str | None = None, dry_run: bool = False) -> EmployeeDataPurge:
    """Remove what is due; each item is audited (kind, feed, employer, counts) before it goes."""
    plan = plan_employee_data_purge(data_dir, parties, holds, as_of=as_of, retention_days=retention_days,
                                    ledger=ledger, staging_url=staging_url)
    if dry_run:
        return plan
    by_feed: Mapping[str, FeedParty] = {p.feed_id: p for p in parties}
    for item in plan.purged:
        # Audit first: a crash after it leaves a record and data the next purge finishes.
        detail: dict[str, Any] = {"kind": item.kind, "employer_id": item.employer_id, "files": item.files,
                                  "bytes": item.bytes, "due": item.due.isoformat() if item.due else None,
                                  "retention_days": retention_days}
        if item.kind == OUTBOX:
            detail["pending_handoffs"] = item.pending_handoffs
        ledger.audit(actor=actor, action="purge_employee_data", object_type="feed", object_id=item.feed_id,
                     now=now, detail=detail)
        party = by_feed[item.feed_id]
        if item.kind in _INBOXES:
            for path in outbox_files(ledger, data_dir, party, kind=item.kind)[0]:
                path.unlink(missing_ok=True)
        elif item.kind == CENSUS_DROP and party.census_drop is not None:
            folder = _drop_folder(data_dir, party.census_drop, party.feed_id)
            for path in drop_files(folder):
                path.unlink(missing_ok=True)
            for sub in sorted((p for p in folder.rglob("*") if p.is_dir() and not p.is_symlink()),
                              key=lambda p: len(p.parts), reverse=True):
                sub.rmdir()
        elif item.kind == CENSUS_INDEX:
            for path in census_index_files(data_dir, item.feed_id):
                path.unlink(missing_ok=True)
        elif item.kind in (ACK_ARCHIVE, ACK_INBOX):
            due = [p for p in parties if _due(p, as_of, retention_days) is not None]
            for path in ack_files(ledger, data_dir, party, _purged_feeds(due, holds), kind=item.kind):
                path.unlink(missing_ok=True)
        elif item.kind == STAGING_STORE:
            store = _store_location(staging_url, data_dir)
            if store is not None:  # always: planned from the same URL
                store[0].rm(f"{store[1]}/{item.feed_id}", recursive=True)
        else:
            shutil.rmtree(data_dir / item.kind / item.feed_id)
        log.info("purged %s of feed %s (employer %s): %d files", item.kind, item.feed_id, item.employer_id,
                 item.files)
    return EmployeeDataPurge(items=plan.items, dry_run=False)


# ------------------------------------------------------------------------------------------ ledger
def ledger_cutoff(as_of: date, years: int = DEFAULT_LEDGER_RETENTION_YEARS) -> datetime:
    """Midnight UTC ``years`` before ``as_of`` (29 February falls back to the 28th)."""
    if years < 1:
        raise ConfigError("ledger retention must be at least one year", field="ledger_retention_years")
    try:
        day = as_of.replace(year=as_of.year - years)
    except ValueError:
        day = as_of.replace(year=as_of.year - years, day=28)
    return datetime.combine(day, time(0), tzinfo=UTC)


def run_purge(ledger: Ledger, data_dir: Path, parties: Sequence[FeedParty], *, as_of: date, now: datetime,
              actor: str, dry_run: bool = False, retention_days: int = DEFAULT_EMPLOYEE_DATA_RETENTION_DAYS,
              retention_years: int = DEFAULT_LEDGER_RETENTION_YEARS,
              staging_url: str | None = None, anchors: AnchorLog | None = None) -> PurgeReport:
    """The whole purge (employee data, then ledger metadata). With ``anchors``, the ledger purge's gaps
    are signed into the anchor log before it commits and the head is anchored after it."""
    holds = resolve_holds(ledger, parties)
    cutoff = ledger_cutoff(as_of, retention_years)
    employee = purge_employee_data(ledger, data_dir, parties, holds, as_of=as_of, now=now, actor=actor,
                                   retention_days=retention_days, staging_url=staging_url, dry_run=dry_run)
    sign = None if anchors is None else (lambda purge: anchors.sign_purge(purge, now=now))
    meta = ledger.purge_metadata(cutoff=cutoff, held_feeds=holds.feeds, held_employers=holds.employers,
                                 actor=actor, now=now, dry_run=dry_run, before_commit=sign)
    if anchors is not None and not dry_run:
        anchors.anchor_head(ledger, reason="purge", now=now)
    return PurgeReport(as_of=as_of, dry_run=dry_run, employee_data=employee, ledger=meta,
                       ledger_cutoff=cutoff, holds=holds)


def purge_with_settings(settings: Settings, ledger: Ledger, *, as_of: date, now: datetime, actor: str,
                        dry_run: bool = False, retention_days: int | None = None,
                        retention_years: int | None = None) -> PurgeReport:
    """The purge ``carrierfeeds purge`` and the housekeeping DAG run: the settings' data directory,
    feeds, staging store and retention periods; a period passed here (a CLI flag) overrides its setting."""
    return run_purge(
        ledger, settings.data_dir, parties_from_feeds_dir(settings.feeds_dir, settings.mappings_dir),
        as_of=as_of, now=now, actor=actor, dry_run=dry_run, staging_url=settings.staging_url,
        anchors=AnchorLog.for_settings(settings),
        retention_days=settings.employee_data_retention_days if retention_days is None else retention_days,
        retention_years=settings.ledger_retention_years if retention_years is None else retention_years)


def parties_from_feeds_dir(feeds_dir: Path, mappings_dir: Path | None = None) -> list[FeedParty]:
    """Every feed file's parties; one unreadable feed file stops the purge (its hold is unknown). With
    ``mappings_dir``, each carrier mapping's local acknowledgment folder too (an unreadable mapping stops
    the purge as well: its acknowledgment files could not be told apart), and one party per aggregation
    mapping for its file's own folders (see ``FeedParty.employer_feeds``)."""
    from carrierfeeds.config import LocalAckSource, load_feed, load_mapping

    parties = []
    aggregates: dict[str, list[FeedParty]] = {}
    for path in sorted(feeds_dir.glob("*.yaml")):
        try:
            feed = load_feed(path)
        except ConfigError as exc:
            raise ConfigError("cannot purge while a feed file is unreadable (its legal hold is unknown): "
                              + exc.message, details={"file": str(path)}) from None
        party = FeedParty.from_feed(feed)
        if mappings_dir is not None:
            mapping = load_mapping(mappings_dir / f"{feed.mapping_id}.yaml")
            source = mapping.acks.source if mapping.acks is not None else None
            party = replace(party, mapping_id=mapping.mapping_id,
                            ack_inbox=source.path if isinstance(source, LocalAckSource) else None)
            if mapping.aggregation is not None:
                aggregates.setdefault(mapping.mapping_id, []).append(party)
        parties.append(party)
    return parties + [aggregate_party(mapping_id, employers) for mapping_id, employers in sorted(aggregates.items())]


def aggregate_party(mapping_id: str, employers: Sequence[FeedParty]) -> FeedParty:
    """An aggregated carrier file's party: its employers' shared delivery folders, the earliest contract
    end among them (named by that employer's id) and a legal hold if any employer's feed file has one."""
    ended = sorted((p for p in employers if p.contract_end is not None), key=lambda p: (p.contract_end, p.feed_id))
    first = ended[0] if ended else employers[0]
    return replace(first, feed_id=mapping_id, census_drop=None, contract_end=first.contract_end if ended else None,
                   legal_hold=any(p.legal_hold for p in employers),
                   employer_feeds=tuple((p.feed_id, p.employer_id) for p in employers))
