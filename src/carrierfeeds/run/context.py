"""One run's identity and working context: RunRef, RunContext, the stage recorder, scratch folders.

A run is identified by (feed id, data interval). Every stage reads what earlier stages left in the run's
private staging folder and in the ledger, so any stage can be retried on its own, in another process.
Plaintext PHI lives only in that folder (mode 0700) and is removed when the run ends.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Literal

from pydantic import JsonValue

from carrierfeeds import progress
from carrierfeeds.credentials import Connections, KeysDirConnections
from carrierfeeds.errors import CarrierFeedsError
from carrierfeeds.files import open_private
from carrierfeeds.ledger import Ledger, scrub_detail
from carrierfeeds.run.state import (
    BuildState,
    CensusState,
    DeliveryState,
    EncryptState,
    GateState,
    RunState,
    ValidationState,
    merge_flat,
)
from carrierfeeds.settings import FeedBundle, Settings, load_bundle, open_ledger, open_store, private_dir
from carrierfeeds.staging import ArtifactWriter, StagingStore

log = logging.getLogger(__name__)


Stage = Literal["stage_census", "validate", "build", "conformance", "encrypt", "deliver", "confirm"]
STAGES: tuple[Stage, ...] = ("stage_census", "validate", "build", "conformance", "encrypt", "deliver",
                             "confirm")


@dataclass(frozen=True)
class RunRef:
    """What identifies a run between processes: the only thing XCom carries besides counts."""

    feed_id: str
    interval_start: date
    interval_end: date

    @classmethod
    def for_day(cls, feed_id: str, day: date) -> RunRef:
        return cls(feed_id, day, day + timedelta(days=1))

    def as_xcom(self) -> dict[str, str]:
        return {"feed_id": self.feed_id, "interval_start": self.interval_start.isoformat(),
                "interval_end": self.interval_end.isoformat()}


@dataclass
class RunContext:
    """Everything a stage needs; built once per process by :func:`open_run`."""

    settings: Settings
    bundle: FeedBundle
    ref: RunRef
    ledger: Ledger
    run_id: str
    clock: Callable[[], datetime]
    actor: str
    store: StagingStore
    #: Credentials for the census source, the delivery target and the carrier's servers.
    connections: Connections
    #: True where each stage may run in a different process (Airflow): plaintext scratch is wiped after
    #: every stage, and the next stage decrypts what it needs from the staging store.
    ephemeral: bool = False

    @property
    def feed_id(self) -> str:
        return self.ref.feed_id

    @property
    def run_dir(self) -> Path:
        """This process's private scratch folder for the run (plaintext lives only here, only briefly)."""
        return private_dir(scratch_dir_for(self.settings, self.ref))

    def now(self) -> datetime:
        return self.clock()

    def state(self) -> RunState:
        """What the run's stages have recorded so far (state.json in the staging store)."""
        return RunState.from_flat(self._flat_state())

    def _flat_state(self) -> dict[str, JsonValue]:
        if not self.store.exists(self.feed_id, self.ref.interval_start, STATE):
            return {}
        flat: dict[str, JsonValue] = json.loads(self.store.get_bytes(self.feed_id, self.ref.interval_start, STATE))
        return flat

    def save_state(self, *, census: CensusState | None = None, validated: ValidationState | None = None,
                   built: BuildState | None = None, gate: GateState | None = None,
                   encrypted: EncryptState | None = None, delivery: DeliveryState | None = None,
                   census_validated: bool | None = None, census_accepted: bool | None = None,
                   snapshot_staged: bool | None = None) -> RunState:
        """Write the given sections and flags over the recorded state (the rest stays as it was)."""
        flat = merge_flat(self._flat_state(), census, validated, built, gate, encrypted, delivery,
                          census_validated=census_validated, census_accepted=census_accepted,
                          snapshot_staged=snapshot_staged)
        self.store.put_bytes(self.feed_id, self.ref.interval_start, STATE,
                             json.dumps(flat, sort_keys=True, default=str).encode(), phi=False)
        return RunState.from_flat(flat)

    def keep(self, path: Path, *, phi: bool = True) -> None:
        """Put an artifact in the staging store (sealed to the run and name, PHI or not)."""
        # Not hashed: nothing here uses the hash, and AES-GCM refuses a changed object when it is fetched.
        self.store.put_file(self.feed_id, self.ref.interval_start, path.name, path, phi=phi, sha256=False)

    @contextmanager
    def keeping(self, path: Path, *, phi: bool = True, sha256: bool = True) -> Iterator[KeptFile]:
        """Write ``path`` in the run folder and put it in the staging store in one pass (what ``keep``
        does after the file is written, without reading it back). Both appear complete when the block
        ends without an exception, neither otherwise; a check inside the block may raise to abandon them."""
        with self.store.open_writer(self.feed_id, self.ref.interval_start, path.name, phi=phi,
                                    sha256=sha256) as staged, open_private(path) as local:
            yield KeptFile(local, staged)

    def fetch(self, name: str) -> Path:
        """An artifact an earlier stage kept, in this process's scratch folder (opened from the store if
        needed). The name is checked before anything is looked up: a plain name of the run's own folder,
        and a local copy only as a regular file there (never a symlink); else ArtifactNameRefused."""
        from carrierfeeds.staging import ArtifactNameRefused, check_artifact_name

        path = self.run_dir / check_artifact_name(name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            self.store.get_file(self.feed_id, self.ref.interval_start, name, path, sha256=False)
            return path
        if not stat.S_ISREG(st.st_mode):
            raise ArtifactNameRefused(f"{name} in the run's scratch folder is not a regular file (a symlink?)",
                                      details={"name": name})
        return path


class KeptFile:
    """A file being written to the run folder and the staging store at once (see ``RunContext.keeping``)."""

    def __init__(self, local: BinaryIO, staged: ArtifactWriter) -> None:
        self._local = local
        self._staged = staged

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._local.write(data)
        self._staged.write(data)
        return len(data)

    @property
    def sha256(self) -> str:
        """The sha256 (hex) of what was written so far (hashed once, by the staging writer)."""
        return self._staged.sha256

    @property
    def size(self) -> int:
        return self._staged.plain_bytes


STATE = "state.json"
#: The validated census rows a run goes on with (Arrow IPC), as the validate stage leaves them.
ACCEPTED = "accepted.arrow"
#: The member ids validation held back (JSON list, sealed as PHI), read by the diff in build.
HELD_BACK = "held_back_members.json"

def run_dir_for(settings: Settings, ref: RunRef) -> Path:
    """Where the local staging store keeps a run's artifacts (PHI encrypted, names without PHI)."""
    return settings.staging_dir / ref.feed_id / ref.interval_start.isoformat()


def scratch_dir_for(settings: Settings, ref: RunRef) -> Path:
    return settings.data_dir / "scratch" / ref.feed_id / ref.interval_start.isoformat()


def open_run(settings: Settings, ref: RunRef, *, clock: Callable[[], datetime], actor: str,
             ledger: Ledger | None = None, bundle: FeedBundle | None = None, store: StagingStore | None = None,
             ephemeral: bool = False, connections: Connections | None = None) -> RunContext:
    """Load the feed, open the ledger and staging store, and find or start the run for (feed, interval).

    ``connections`` resolves connection ids (Airflow's under Airflow); by default the keys directory."""
    bundle = bundle or load_bundle(settings, ref.feed_id)
    ledger = ledger or open_ledger(settings)
    store = store or open_store(settings)
    record = ledger.start_run(feed_id=ref.feed_id, interval_start=ref.interval_start,
                              interval_end=ref.interval_end, actor=actor, now=clock())
    return RunContext(settings=settings, bundle=bundle, ref=ref, ledger=ledger, run_id=record.run_id,
                      clock=clock, actor=actor, store=store,
                      connections=connections or KeysDirConnections(settings.resolved_keys_dir), ephemeral=ephemeral)


@contextmanager
def recorded_stage(ctx: RunContext, stage: Stage) -> Iterator[dict[str, Any]]:
    """Record a stage's start and outcome in the ledger; the yielded dict becomes its PHI-free detail."""
    detail: dict[str, Any] = {}
    progress.step(stage)
    # What the previous stage freed, now that its frames are gone (at its own end they were still alive).
    release_memory()
    ctx.ledger.record_stage(ctx.run_id, stage, "started", now=ctx.now())
    try:
        yield detail
    except CarrierFeedsError as exc:
        _end_of_stage(ctx)
        ctx.ledger.record_stage(ctx.run_id, stage, "failed", now=ctx.now(), detail=scrub_detail(exc.details),
                                error_code=exc.code, message=exc.message[:500])
        log.warning("feed %s run %s stage %s failed: %s", ctx.feed_id, ctx.run_id, stage, exc.code)
        raise
    except Exception as exc:
        _end_of_stage(ctx)
        # Unknown failures are recorded by type only: their text may hold anything.
        ctx.ledger.record_stage(ctx.run_id, stage, "failed", now=ctx.now(), error_code="internal",
                                message=type(exc).__name__)
        raise
    _end_of_stage(ctx)
    ctx.ledger.record_stage(ctx.run_id, stage, "succeeded", now=ctx.now(), detail=detail)
    log.info("feed %s run %s stage %s succeeded %s", ctx.feed_id, ctx.run_id, stage, detail)


def _end_of_stage(ctx: RunContext) -> None:
    if ctx.ephemeral:
        wipe_scratch(ctx)


def release_memory() -> None:
    """Hand freed memory back to the system between stages.

    Arrow's allocator (mimalloc) and glibc keep freed pages for reuse, so a one-process run would carry
    the census's high-water mark into every later stage.
    """
    import ctypes
    import sys

    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is not None:
        pyarrow.default_memory_pool().release_unused()
    if sys.platform.startswith("linux"):
        trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # the process's own libc; glibc only
        if trim is not None:
            trim(0)


def wipe_scratch(ctx: RunContext) -> int:
    """Remove this process's plaintext scratch for the run; returns how many entries went."""
    folder = scratch_dir_for(ctx.settings, ctx.ref)
    if not folder.exists():
        return 0
    count = sum(1 for _ in folder.iterdir())
    shutil.rmtree(folder)
    return count


