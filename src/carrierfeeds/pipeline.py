"""The stage functions of one feed run, and ``run_feed`` composing them; CLI and Airflow call these.

A run is identified by (feed id, data interval). Every stage reads what earlier stages left in the run's
private staging folder and in the ledger, so any stage can be retried on its own, in another process.
Plaintext PHI lives only in that folder (mode 0700) and is removed when the run ends.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, cast

from carrierfeeds.errors import (
    CarrierFeedsError,
    CensusRejected,
    ConformanceFailed,
    NotAuthorized,
    PermanentError,
    Refused,
    TransientError,
)
from carrierfeeds.files import open_private, read_mapped, sha256_file, write_private
from carrierfeeds.ledger import Ledger, scrub_detail
from carrierfeeds.outcomes import status_for
from carrierfeeds.settings import FeedBundle, Settings, load_bundle, plan_catalogue
from carrierfeeds.staging import CHUNK, ArtifactWriter, StagingStore

if TYPE_CHECKING:
    from carrierfeeds.x12.check import ConformanceReport

log = logging.getLogger(__name__)

Stage = Literal["stage_census", "validate", "build", "conformance", "encrypt", "deliver", "confirm"]
STAGES: tuple[Stage, ...] = ("stage_census", "validate", "build", "conformance", "encrypt", "deliver",
                             "confirm")


#: Delivery outcomes after which the file is with the recipient (or in the hand-off outbox): never resend.
ON_RECIPIENTS_SIDE = ("delivered", "reconciled", "forced_resend", "pending_handoff", "handed_off")


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


@dataclass(frozen=True)
class RunSummary:
    """What a run did, PHI-free: printed by ``run --json``, returned to Airflow, shown by the demo."""

    run_id: str
    feed_id: str
    interval_start: str
    status: str
    members: int = 0
    subscribers: int = 0
    coverages: int = 0
    file_name: str | None = None
    payload_sha256: str | None = None
    ciphertext_sha256: str | None = None
    isa13: int | None = None
    remote_path: str | None = None
    validation: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    #: True where each stage may run in a different process (Airflow): plaintext scratch is wiped after
    #: every stage, and the next stage decrypts what it needs from the staging store.
    ephemeral: bool = False

    @property
    def feed_id(self) -> str:
        return self.ref.feed_id

    @property
    def run_dir(self) -> Path:
        """This process's private scratch folder for the run (plaintext lives only here, only briefly)."""
        return _private_dir(scratch_dir_for(self.settings, self.ref))

    def now(self) -> datetime:
        return self.clock()

    def state(self) -> dict[str, Any]:
        if not self.store.exists(self.feed_id, self.ref.interval_start, STATE):
            return {}
        state: dict[str, Any] = json.loads(self.store.get_bytes(self.feed_id, self.ref.interval_start, STATE))
        return state

    def save_state(self, **values: Any) -> dict[str, Any]:
        state = {**self.state(), **values}
        self.store.put_bytes(self.feed_id, self.ref.interval_start, STATE,
                             json.dumps(state, sort_keys=True, default=str).encode(), phi=False)
        return state

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
#: From this size of 834 up the gate starts pyx12's children before it reads the file (its size from
#: stat), so that their start is hidden behind the mapping, hashing and cutting of a large file (~1-2 s at
#: 1M members), and runs pyx12 in children whatever the target's size; with one CPU, in one child, beside
#: the structural check (~2.2 s at 240 MB, 1M members), as before pieces.
PYX12_CHILD_MIN_BYTES = 64 << 20
#: The most pyx12 pieces (and child processes) the gate runs at once.
PYX12_MAX_PIECES = 4
#: From this size of pyx12 target (the file, or its sample: ~240 bytes and ~10 segments a member) up, with
#: more than one CPU, the gate cuts the target into one piece per CPU and runs pyx12 on each in a child
#: process: each child's ~0.35 s start is then won back. The conformance stage on 2 shared CPUs, pyx12 in
#: this process against two pieces in children, wall (user+sys of both processes), median of 3, measured:
#: a 12-200-member target (3-48 kB) 0.18-0.47 s (0.2-0.5) against 0.30-0.62 s (0.5-0.8); 400 members
#: (96 kB) 0.63-0.73 s (0.6-0.7) against 0.74-1.03 s (0.9-1.3); 800 (190 kB) 1.36-1.58 s (1.3-1.5)
#: against 1.28-1.32 s (1.6-1.7); the 2,000-member file or sample (470-480 kB, 20,000 segments) 3.2-4.1 s
#: (3.2-4.0) against 2.5-3.3 s (3.9-4.8). So from ~1,000 members: the demo's and the tests' files (20-90 members)
#: stay in this process. A worker pool that already fills every CPU (many feeds at once) pins each worker
#: to one CPU (os.sched_setaffinity, taskset) to keep pyx12 in-process: the children cost CPU.
PYX12_PIECES_MIN_BYTES = 256 << 10


def run_dir_for(settings: Settings, ref: RunRef) -> Path:
    """Where the local staging store keeps a run's artifacts (PHI encrypted, names without PHI)."""
    return settings.staging_dir / ref.feed_id / ref.interval_start.isoformat()


def scratch_dir_for(settings: Settings, ref: RunRef) -> Path:
    return settings.data_dir / "scratch" / ref.feed_id / ref.interval_start.isoformat()


def open_store(settings: Settings) -> StagingStore:
    """The CLI's staging store: ``staging_url`` or the local staging folder; key file in the keys folder."""
    from carrierfeeds.staging import KEY_FILE_NAME, StagingKey

    key = StagingKey.load_or_create(_private_dir(settings.resolved_keys_dir) / KEY_FILE_NAME)
    return StagingStore(settings.staging_url or settings.staging_dir, key)


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path




def open_ledger(settings: Settings) -> Ledger:
    """The ledger, upgraded; an unusable data dir, a bad URL or an unreachable server is one error
    naming its setting (ConfigError: fix it; TransientError: retry later), never a driver traceback."""
    import sqlalchemy as sa

    from carrierfeeds.ledger.store import connect_failure
    from carrierfeeds.settings import require_data_dir

    require_data_dir(settings)
    setting = "CARRIERFEEDS_LEDGER_URL" if settings.ledger_url else "CARRIERFEEDS_DATA_DIR"
    ledger = Ledger.open(settings.resolved_ledger_url, setting=setting)
    try:
        ledger.upgrade()
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        ledger.close()
        raise connect_failure(settings.resolved_ledger_url, exc, setting=setting) from None
    return ledger


def open_run(settings: Settings, ref: RunRef, *, clock: Callable[[], datetime], actor: str,
             ledger: Ledger | None = None, bundle: FeedBundle | None = None, store: StagingStore | None = None,
             ephemeral: bool = False) -> RunContext:
    """Load the feed, open the ledger and staging store, and find or start the run for (feed, interval)."""
    bundle = bundle or load_bundle(settings, ref.feed_id)
    ledger = ledger or open_ledger(settings)
    store = store or open_store(settings)
    record = ledger.start_run(feed_id=ref.feed_id, interval_start=ref.interval_start,
                              interval_end=ref.interval_end, actor=actor, now=clock())
    return RunContext(settings=settings, bundle=bundle, ref=ref, ledger=ledger, run_id=record.run_id,
                      clock=clock, actor=actor, store=store, ephemeral=ephemeral)


@contextmanager
def _stage(ctx: RunContext, stage: Stage) -> Iterator[dict[str, Any]]:
    """Record a stage's start and outcome in the ledger; the yielded dict becomes its PHI-free detail."""
    detail: dict[str, Any] = {}
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
    the census's high-water mark into every later stage (1.7 GB floor at 1M members, measured).
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


# ------------------------------------------------------------------------------------------ stages
def stage_census(ctx: RunContext, census_path: Path | None = None, *, force: bool = False,
                 endpoint_for: Callable[[str], Any] | None = None,
                 sql_url_for: Callable[[str], str] | None = None) -> dict[str, Any]:
    """Fetch the feed's census (local folder, SFTP drop or SQL query; see ``census.sources``) into the
    run's private folder, under the size cap and archive rules. The employer's own file is never moved or
    changed here; an SFTP file moves to the processed folder only once validation accepts it.

    ``census_path`` is an explicit file: always processed. Otherwise a file another run already processed
    (recorded once that run had an outcome: see :func:`_accept_census`) raises
    :class:`~carrierfeeds.census.sources.NoNewCensus` (the run ends ``no_new_census``) unless ``force``.
    A rerun of a run whose census passed validation re-uses the staged copy while the staging store
    still holds it. ``endpoint_for`` / ``sql_url_for`` resolve connection ids (Airflow connections); by
    default the keys directory.
    """
    from carrierfeeds.census.sources import census_from_file, confirm_unchanged, fetch_census

    with _stage(ctx, "stage_census") as detail:
        state = ctx.state()
        if census_path is None and not force and (state.get("census_validated") or state.get("census_accepted")) \
                and ctx.store.exists(ctx.feed_id, ctx.ref.interval_start, "census.csv"):
            detail.update(census_sha256=state["census_sha256"], reused=True)
            return {"run_id": ctx.run_id, "census_sha256": state["census_sha256"], "reused": True}
        if census_path is not None:
            pick = census_from_file(Path(census_path), feed_id=ctx.feed_id, schema=ctx.bundle.schema,
                                    data_dir=ctx.settings.data_dir, work_dir=ctx.run_dir)
        else:
            pick = fetch_census(ctx.bundle.feed.census.source, feed_id=ctx.feed_id, schema=ctx.bundle.schema,
                                data_dir=ctx.settings.data_dir, keys_dir=ctx.settings.resolved_keys_dir,
                                work_dir=ctx.run_dir, force=force, endpoint_for=endpoint_for,
                                sql_url_for=sql_url_for, run_id=ctx.run_id)
        staged = ctx.run_dir / "census.csv"
        # Every pick is the run's own private file (a local file is copied and hashed through the one
        # descriptor it was opened with). The employer's file stays as it is, for reprocessing; one that
        # moved on since it was read (still being written) is caught before anything is kept.
        try:
            confirm_unchanged(pick)
        except TransientError:
            pick.path.unlink(missing_ok=True)
            raise
        tmp = staged.with_suffix(".tmp")
        os.replace(pick.path, tmp)
        os.chmod(tmp, 0o600)
        with tmp.open("rb") as source, ctx.store.open_writer(ctx.feed_id, ctx.ref.interval_start,
                                                             staged.name) as stored:
            for block in iter(lambda: source.read(CHUNK), b""):
                stored.write(block)
            digest = stored.sha256
            if digest != pick.sha256:
                tmp.unlink()
                raise _census_changed(pick)
        tmp.replace(staged)
        ctx.save_state(census_name=pick.name, census_sha256=digest, census_pick=pick.as_state(),
                       census_accepted=False, census_validated=False)
        detail.update(census_sha256=digest, bytes=pick.size, source=pick.kind, reprocessed=pick.reprocessed)
    return {"run_id": ctx.run_id, "census_sha256": digest}


def _census_changed(pick: Any) -> TransientError:
    return TransientError(f"{pick.name}: the census changed while it was staged (still being written?)",
                          details={"sha256": pick.sha256})


def _accept_census(ctx: RunContext, endpoint_for: Callable[[str], Any] | None) -> bool:
    """The run has its outcome (its file delivered or handed over, or nothing to send): record the staged
    census as processed and move an SFTP original to the processed folder. Idempotent.

    Returns whether a file was moved on the server. Only an outcome gets here: a census that validation
    rejected, or whose build, gate, encryption or delivery failed, stays unrecorded (and in the drop), so
    the rerun, or the next run, processes that same census again instead of finding "no new census" while
    the carrier never received it.
    """
    from carrierfeeds.census.sources import CensusPick, accept_census

    state = ctx.state()
    if "census_pick" not in state:
        return False  # staged before sources were tracked: nothing to record
    pick = CensusPick.from_state(state["census_pick"])
    moved = accept_census(ctx.bundle.feed.census.source, pick, feed_id=ctx.feed_id,
                          data_dir=ctx.settings.data_dir, keys_dir=ctx.settings.resolved_keys_dir,
                          run_id=ctx.run_id, at=ctx.now(), endpoint_for=endpoint_for)
    ctx.save_state(census_accepted=True)
    return moved is not None


def validate(ctx: RunContext) -> dict[str, Any]:
    """Read and validate the staged census; write the PHI-free report; apply the feed's policy.

    An accepted census is recorded as processed only when the run has an outcome (:func:`_accept_census`,
    from confirm or a build with nothing to send), not here.
    """
    from carrierfeeds.census.accepted import accepted_table, low_cardinality, write_accepted
    from carrierfeeds.census.readers import read_census
    from carrierfeeds.census.tokens import MemberTokenizer
    from carrierfeeds.validation import CarrierRules, apply_policy, validate_census_coded

    with _stage(ctx, "validate") as detail:
        state = ctx.state()
        source_name = state.get("census_name", "census.csv")
        # the run's own staged copy (0600, replaced by rename, never truncated): read mapped, not copied
        census = read_census(ctx.fetch("census.csv"), ctx.bundle.schema, display_name=source_name, private=True)
        tokenizer = MemberTokenizer.from_key_file(ctx.settings.resolved_token_key_file)
        # With the carrier's rules: whatever the build could not take is refused here, by row and rule.
        carrier = CarrierRules.for_feed(ctx.bundle.mapping, ctx.bundle.feed.authorization.plans)
        report, all_codes = validate_census_coded(census, ctx.bundle.suite_path, ctx.bundle.schema, tokenizer,
                                                  as_of=ctx.ref.interval_start, source_name=source_name,
                                                  plans=plan_catalogue(ctx.settings, ctx.bundle), carrier=carrier)
        codes = low_cardinality(all_codes, len(census))  # the member ids' and SSNs' codes go at once
        del all_codes
        report_dir = _private_dir(ctx.settings.reports_dir / ctx.feed_id / ctx.ref.interval_start.isoformat())
        report.write_csv(report_dir / "validation.csv")
        report.write_html(report_dir / "validation.html")
        outcome = apply_policy(census, report, ctx.bundle.feed.validation)
        counts = {"rows": report.rows, "members": report.members, "families": report.families,
                  "failed_rows": report.failed_rows, "failed_families": report.failed_families,
                  "findings": len(report.findings), "held_back_members": outcome.held_back_members}
        # Expected exclusions by reason (a plan this carrier is not authorised for): flat in the ledger,
        # by reason in the run's summary (run --json).
        detail.update(counts, **{f"excluded_{k}": v for k, v in report.excluded.items()})
        ctx.save_state(validation={**counts, "excluded": dict(report.excluded)}, report_dir=str(report_dir))
        if outcome.rejected:
            raise CensusRejected(
                f"census rejected under policy {ctx.bundle.feed.validation.policy!r}: "
                f"{report.failed_rows} failing rows in {report.failed_families} families; "
                f"see {report_dir / 'validation.html'}",
                file=source_name, details=counts)
        ctx.store.put_bytes(ctx.feed_id, ctx.ref.interval_start, HELD_BACK,
                            json.dumps(sorted(outcome.held_back_member_ids)).encode(), phi=True)
        # Arrow IPC, uncompressed, read memory-mapped by build. At 1M members (CPU, median of 3) write +
        # keep + read: LZ4 1.78 + 0.54 + 1.89 = 4.4 s, zstd-1 5.5 s, uncompressed 0.58 + 1.34 + 0.07 =
        # 2.1 s (705 MB instead of 261: AES is cheap, LZ4 both ways is not); Parquet was slower still.
        # Low-cardinality columns as dictionaries from validation's codes (carrierfeeds.census.accepted):
        # 196 MB instead of 705 at 1M members; write + keep + read + build, user + sys, median of 3:
        # 4.04 s -> 3.19 s (write 0.38 -> 1.10 s, as it builds the table; keep 1.01 -> 0.18 s; build
        # 2.62 -> 1.83 s).
        accepted = ctx.run_dir / ACCEPTED
        written = accepted.with_name(f".{ACCEPTED}.tmp")
        table = accepted_table(outcome.accepted, codes, outcome.rows)
        del codes
        write_accepted(written, table)
        del table
        os.chmod(written, 0o600)
        written.replace(accepted)
        ctx.keep(accepted)
        ctx.save_state(census_validated=True)
    return {"run_id": ctx.run_id, **counts}


def build(ctx: RunContext, *, full_file: bool = False, resend_reason: str | None = None,
          endpoint_for: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Map the accepted census through the carrier mapping and render the 834 into the run folder.

    In changes mode with nothing to send, that is the run's outcome: the census is recorded as processed
    (an SFTP original moved with ``endpoint_for``'s connection) before :class:`NoChanges` ends the run.

    With ``resend_reason`` (a person's forced resend) and the run's newest file already with the
    recipient, the file is rendered under new control numbers from the ledger (``Ledger.allocate_resend``),
    after checking that the census still renders, under the replaced file's numbers, exactly the file
    that was delivered: a resend sends the same members again, never a changed census. A resend that has
    not reached the recipient keeps its numbers, so its retry renders the same bytes. A flat file carries
    no control number in its content; its resend stays the delivered bytes under a ``_resend<n>`` name.
    """
    from carrierfeeds.census.accepted import read_accepted
    from carrierfeeds.changes import keeps_snapshot
    from carrierfeeds.enrollment import build_enrollment

    feed, mapping = ctx.bundle.feed, ctx.bundle.mapping
    with _stage(ctx, "build") as detail:
        # The authority every file is sent under; a no-op unless the feed's authorisation changed.
        ctx.ledger.record_authorisation(
            feed_id=feed.feed_id, employer_id=feed.employer.id, carrier_id=feed.carrier.id,
            plans=feed.authorization.plans, effective_from=feed.authorization.effective_from,
            effective_to=feed.authorization.effective_to, recorded_by=ctx.actor, now=ctx.now())
        if not feed.authorization.covers(ctx.ref.interval_start):
            raise NotAuthorized(f"employer {feed.employer.id} has not authorised carrier {feed.carrier.id} "
                                f"for {ctx.ref.interval_start.isoformat()}",
                                details={"feed_id": feed.feed_id})
        census = read_accepted(ctx.fetch(ACCEPTED))
        enrollment = build_enrollment(census, feed, mapping, as_of=ctx.ref.interval_start)
        action: str = mapping.full_file.bgn08
        change_counts: dict[str, Any] = {}
        if keeps_snapshot(mapping.mode, feed.validation.policy):
            enrollment, action, change_counts = _diff_for_run(
                ctx, census, enrollment, full_file=full_file or mapping.mode == "full", endpoint_for=endpoint_for)
        interchange = ctx.ledger.allocate_control_numbers(
            run_id=ctx.run_id, sender_id=mapping.envelope.sender_id,
            receiver_id=mapping.envelope.receiver_id, now=ctx.now())
        if resend_reason and feed.output.format != "flatfile":
            # Checked before numbers are minted, so a refused resend uses none.
            sent = ctx.ledger.find_delivery(feed_id=ctx.feed_id, interval_start=ctx.ref.interval_start)
            checked = sent.delivery_id if sent is not None and sent.status in ON_RECIPIENTS_SIDE else None
            if checked is not None:
                _require_same_members(ctx, enrollment, action, checked)
            resend = ctx.ledger.allocate_resend(
                run_id=ctx.run_id, sender_id=mapping.envelope.sender_id, receiver_id=mapping.envelope.receiver_id,
                actor=ctx.actor, reason=resend_reason, now=ctx.now())
            if resend is not None:
                if resend.replaces_delivery_id != checked:
                    _require_same_members(ctx, enrollment, action, resend.replaces_delivery_id)
                interchange = resend
        file_name, payload_sha256, size, flat_state = _render(ctx, enrollment, action, interchange)
        counts = {"members": enrollment.member_count, "subscribers": enrollment.subscriber_count,
                  "coverages": enrollment.coverage_count, **{f"excluded_{k}": v for k, v in
                                                             enrollment.excluded.items()}, **change_counts,
                  # The character rule's normalisations, by rule (never by value).
                  **{f"normalised_{k}": v for k, v in enrollment.normalised.items()}}
        detail.update(counts, isa13=interchange.isa13, payload_sha256=payload_sha256, bytes=size,
                      file_name=file_name,
                      **({"resend": interchange.resend, "replaces_delivery_id": interchange.replaces_delivery_id}
                         if interchange.resend else {}))
        ctx.save_state(file_name=file_name, payload_sha256=payload_sha256, payload_bytes=size,
                       isa13=interchange.isa13, gs06=interchange.gs06, st02=interchange.st02, counts=counts,
                       resend=interchange.resend, replaces_delivery_id=interchange.replaces_delivery_id,
                       resend_reason=resend_reason if interchange.resend else None, **flat_state)
    return {"run_id": ctx.run_id, "members": enrollment.member_count, "isa13": interchange.isa13}


def _render(ctx: RunContext, enrollment: Any, action: str, interchange: Any, *,
            keep: bool = True) -> tuple[str, str, int, dict[str, Any]]:
    """Render the feed's file under ``interchange``'s control numbers and allocation time: its name,
    sha256, size and any state it adds. Kept (run folder and staging store) unless ``keep`` is False,
    when only its hash is wanted (a flat file is always kept: its content carries no control number)."""
    from carrierfeeds.config import Party
    from carrierfeeds.x12.envelope import ControlNumbers, Delimiters, TransactionHeader
    from carrierfeeds.x12.render import render_834

    feed, mapping = ctx.bundle.feed, ctx.bundle.mapping
    flat_state: dict[str, Any] = {}
    if feed.output.format == "pdf":
        # Imported here: reportlab costs ~0.3 s to import, which an X12 or flat-file build never needs.
        from carrierfeeds.outputs.pdf import fallback_file_name, write_fallback_pdf

        # The same members and changes, printable, for a carrier that takes no electronic files.
        control_id = f"{interchange.isa13:09d}"
        file_name = fallback_file_name(feed, ctx.ref.interval_start, control_id)
        out = ctx.run_dir / (file_name if keep else f".check.{file_name}")
        doc = write_fallback_pdf(enrollment, out, feed=feed, interval_start=ctx.ref.interval_start,
                                 control_id=control_id, created=interchange.created_at)
        if keep:
            ctx.keep(out)  # the 834 and the flat file are kept as they are written
        else:
            out.unlink()
        return file_name, doc.sha256, doc.size, flat_state
    if feed.output.format == "flatfile":
        # The carrier's own CSV or fixed-width layout over the same view; the control number names it.
        from carrierfeeds.outputs.flatfile import flatfile_name, layout_for, render_flatfile

        layout = layout_for(mapping)
        file_name = flatfile_name(layout, feed_id=feed.feed_id, control=interchange.isa13,
                                  day=ctx.ref.interval_start, sender=mapping.envelope.sender_id,
                                  receiver=mapping.envelope.receiver_id)
        payload_sha256, size = _write_kept(ctx, ctx.run_dir / file_name, render_flatfile(enrollment, layout))
        flat_state["flatfile_records"] = len(enrollment.table)
        return file_name, payload_sha256, size, flat_state
    control = ControlNumbers(isa13=interchange.isa13, gs06=interchange.gs06, st02=interchange.st02)
    header = TransactionHeader(
        ids=mapping.envelope, created=interchange.created_at, reference=f"CF{interchange.isa13:09d}",
        sponsor=Party(name=feed.employer.name, id_qualifier="FI", id=feed.employer.tax_id),
        payer=mapping.payer, action=action, group_number=mapping.group_number)
    file_name = mapping.file_name.format(
        sender=mapping.envelope.sender_id.strip(), receiver=mapping.envelope.receiver_id.strip(),
        isa13=f"{interchange.isa13:09d}", date=ctx.ref.interval_start.strftime("%Y%m%d"), feed=feed.feed_id)
    chunks = render_834(enrollment, header, control, Delimiters())
    if keep:
        payload_sha256, size = _write_kept(ctx, ctx.run_dir / file_name, chunks)
        return file_name, payload_sha256, size, flat_state
    digest, size = hashlib.sha256(), 0
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
    return file_name, digest.hexdigest(), size, flat_state


def _require_same_members(ctx: RunContext, enrollment: Any, action: str, replaces: str | None) -> None:
    """Refuse a forced resend unless this census, rendered under the control numbers and time of the file
    it replaces, gives exactly that file's bytes (the renderer is deterministic: the payload hash decides)."""
    replaced = next((d for d in ctx.ledger.deliveries(feed_id=ctx.feed_id) if d.delivery_id == replaces), None)
    earlier = next((x for x in ctx.ledger.transmissions(ctx.run_id) if replaced is not None
                    and x.isa13 == replaced.isa13), None)
    if replaced is None or earlier is None:
        raise Refused("the delivery a forced resend replaces is not in the ledger",
                      details={"delivery_id": replaces})
    _, payload_sha256, _, _ = _render(ctx, enrollment, action, earlier, keep=False)
    if payload_sha256 != replaced.payload_sha256:
        raise Refused(
            f"a forced resend sends the delivered members again under new control numbers, but the census, "
            f"mapping or options (--full-file) of {ctx.ref.interval_start} no longer render the delivered file "
            f"(interchange {replaced.isa13}); a changed census belongs to the next interval",
            details={"delivery_id": replaced.delivery_id, "isa13": replaced.isa13})


def _write_kept(ctx: RunContext, path: Path, chunks: Iterator[bytes]) -> tuple[str, int]:
    """The rendered file written privately and atomically and kept in the staging store in one pass (its
    chunks encrypted from memory, hashed once); its sha256 and size."""
    with ctx.keeping(path) as out:
        for chunk in chunks:
            out.write(chunk)
    return out.sha256, out.size


def _diff_for_run(ctx: RunContext, census: Any, enrollment: Any, *, full_file: bool = False,
                  endpoint_for: Callable[[str], Any] | None = None) -> tuple[Any, str, dict[str, Any]]:
    """Diff against the last confirmed snapshot, stage the next one (advanced by confirm): the changes
    mode's change file, or a full file that carries over the families validation held back."""
    from carrierfeeds.changes import NoChanges, diff_against_snapshot, is_full_file_day

    mapping = ctx.bundle.mapping
    store = snapshot_store(ctx)
    base = store.load_base(ctx.feed_id, ctx.run_id)
    # The members of families validation held back, as its policy named them: carried over untouched.
    held = json.loads(ctx.store.get_bytes(ctx.feed_id, ctx.ref.interval_start, HELD_BACK))
    # The full audit file (030): on demand, on the mapping's weekday, or when there is no snapshot yet.
    full = full_file or base is None or is_full_file_day(ctx.ref.interval_start, mapping.full_file_weekday)
    change_set = diff_against_snapshot(
        enrollment, base, as_of=ctx.ref.interval_start, term_policy=mapping.term_policy,
        term_end=mapping.term_end, retro_window_days=mapping.retro_window_days, held_back_members=held,
        full_file=full, plan_change=mapping.plan_change)
    if change_set.empty:
        _accept_census(ctx, endpoint_for)  # the carrier holds all of it already: this census is done
        raise NoChanges("no changes against the last delivered snapshot; nothing to send",
                        details={"feed_id": ctx.feed_id})
    store.stage(ctx.feed_id, ctx.run_id, change_set.snapshot, full_file=change_set.full_file)
    ctx.save_state(snapshot_staged=True)
    counts = {f"ins03_{k}": v for k, v in change_set.members_by_type.items()}
    counts.update({f"hd01_{k}": v for k, v in change_set.coverages_by_type.items()},
                  carried_over=change_set.carried_over, full_file=int(change_set.full_file))
    action = mapping.full_file.bgn08 if change_set.full_file else "2"
    return change_set.enrollment, action, counts


def snapshot_store(ctx: RunContext) -> Any:
    """The feed snapshots (encrypted at rest) under the data directory, keyed from the keys directory."""
    from carrierfeeds.changes import SnapshotStore

    return SnapshotStore.for_settings(ctx.settings)


def pyx12_workers() -> int:
    """How many pyx12 processes the gate runs at once: the CPUs this process may use, at most
    :data:`PYX12_MAX_PIECES`."""
    from carrierfeeds.threads import thread_count

    return thread_count(None, most=PYX12_MAX_PIECES)


def conformance(ctx: RunContext) -> dict[str, Any]:
    """The gate: a structural check of the whole file, and pyx12 on all of it or on a sample; gpg
    encrypts the file beside it, kept only if the gate passes (see _EncryptionAhead)."""
    with _stage(ctx, "conformance") as detail, _encryption_ahead(ctx) as ahead:
        result = _gate(ctx, detail)
        ahead.commit(detail)
    return result


def _gate(ctx: RunContext, detail: dict[str, Any]) -> dict[str, Any]:
    from carrierfeeds.x12.check import check_834, find_segment_ends, pyx12_target
    from carrierfeeds.x12.pyx12_adapter import Pyx12Child, validate_with_pyx12

    state = ctx.state()
    path = ctx.fetch(state["file_name"])
    output = ctx.bundle.feed.output.format
    # pyx12 on the whole file up to the configured size, else on a deterministic sample of families
    # cut from it (x12.check.pyx12_target). pyx12 is pure Python (~5,000 segments a second), so from
    # PYX12_PIECES_MIN_BYTES of target up, with more than one CPU, its families are cut into one piece
    # per CPU, each its own 834, and each piece is read by a child process, beside this one's
    # structural check of the whole file; the verdicts are still reported in their old order:
    # structure, member count, pyx12 (piece by piece). For a large file (PYX12_CHILD_MIN_BYTES, from
    # stat) the children are started before the file is read: they start Python, import pyx12 and
    # load the maps (~0.25 s, measured) while this process maps, hashes and samples the file (~1-2 s
    # at 1M members), then wait for their piece's path.
    workers = pyx12_workers()
    early = output == "x12-834" and path.stat().st_size >= PYX12_CHILD_MIN_BYTES
    # Beside a large file's structural check (~4 s CPU at 1M members, as long as pyx12 on the sample)
    # this process keeps a CPU busy: its pieces go to the others. At 1M members on 2 CPUs, two pieces
    # measured no faster than one child (stage 5.3-6.1 s against 5.3 s wall, median of 3 each).
    count = max(1, workers - 1) if early else workers
    with ExitStack() as leaving:
        # Unwound in reverse: the children (if any) are killed and reaped, then the pieces unlinked, on
        # every way out of the stage.
        piece_paths: list[Path] = []

        def unlink_pieces() -> None:
            for piece_path in piece_paths:
                piece_path.unlink(missing_ok=True)

        leaving.callback(unlink_pieces)
        children = [leaving.enter_context(Pyx12Child()) for _ in range(count)] if early else []
        # The run's own copy of the file, mapped read-only rather than read: no 240 MB anonymous copy
        # at 1M members; closed before the wait for pyx12.
        with read_mapped(path) as data:
            if hashlib.sha256(data).hexdigest() != state["payload_sha256"]:
                raise ConformanceFailed("the rendered file changed after it was built",
                                        details={"file_name": state["file_name"]})
            if output == "pdf":
                # A printable document has no X12 structure to check; its integrity is its hash.
                detail.update(format="pdf", bytes=len(data))
                ctx.save_state(conformance="passed")
                return {"run_id": ctx.run_id, "format": "pdf"}
            if output == "flatfile":
                from carrierfeeds.outputs.flatfile import check_flatfile, layout_for

                # Fail closed: a state without the build's record count can never match (-1).
                flat = check_flatfile(data[:], layout_for(ctx.bundle.mapping),
                                      expected_records=int(state.get("flatfile_records", -1)))
                detail.update(format="flatfile", records=flat.records, problems=flat.problem_count)
                if not flat.ok:
                    flaw = flat.problems[0]
                    raise ConformanceFailed(
                        f"{flat.problem_count} structural problem(s) in the flat file; first at record "
                        f"{flaw.record} column {flaw.column}: {flaw.message}",
                        details={"problems": flat.problem_count, "record": flaw.record,
                                 "column": flaw.column, "rule": flaw.code})
                ctx.save_state(conformance="passed")
                return {"run_id": ctx.run_id, "format": "flatfile", "records": flat.records}
            require_dmg = "dob" in ctx.bundle.mapping.allowlist
            # One scan for segment terminators serves both the sample and the structural check.
            ends = find_segment_ends(data)
            try:
                target = pyx12_target(data, max_members=ctx.settings.pyx12_max_members, segment_ends=ends)
                several = early or (count > 1 and target.size >= PYX12_PIECES_MIN_BYTES)
                pieces = target.pieces(count if several else 1)
            except (ValueError, IndexError):
                # A file too broken to cut: the structural check names its problem first, as before.
                _require_sound_834(check_834(data, require_dmg=require_dmg, segment_ends=ends), state,
                                   detail)
                raise
            sampled = target.sampled
            process = "child" if several else "this"
            if pieces[0] is not data:  # else the file itself, whole
                names = (["pyx12-sample.834"] if len(pieces) == 1
                         else [f"pyx12-piece-{k}.834" for k in range(1, len(pieces) + 1)])
                for name, cut in zip(names, pieces, strict=True):
                    piece_paths.append(ctx.run_dir / name)
                    write_private(piece_paths[-1], [cast(bytes, cut)])  # a cut piece is always bytes
            targets = piece_paths or [path]
            del pieces, target
            detail.update(pyx12_process=process, pyx12_pieces=len(targets))
            if several:
                for child in children[len(targets):]:
                    child.close()  # fewer families than CPUs
                for child, piece_path in zip(children, targets, strict=False):
                    child.check(piece_path)
                children = children[:len(targets)] + [leaving.enter_context(Pyx12Child(piece_path))
                                                       for piece_path in targets[len(children):]]
            report = check_834(data, require_dmg=require_dmg, segment_ends=ends)
            del ends
        _require_sound_834(report, state, detail)
        verdicts = ([child.verdict() for child in children] if several
                    else [validate_with_pyx12(targets[0], with_999=False)])
    ok = all(v.ok for v in verdicts)
    detail.update(pyx12="sample" if sampled else "full", pyx12_ok=ok,
                  pyx12_segments=sum(v.segments for v in verdicts))
    if not ok:
        # Errors from every piece, in piece order; a piece's segment positions are within that piece.
        errors = [(k, e) for k, v in enumerate(verdicts, 1) for e in v.errors]
        piece, first_error = errors[0] if errors else (next(k for k, v in enumerate(verdicts, 1) if not v.ok),
                                                       None)
        where = f"piece {piece} of {len(verdicts)}, " if len(verdicts) > 1 else ""
        raise ConformanceFailed(
            f"pyx12 rejected the file ({len(errors)} error(s))"
            + (f"; first: {where}segment {first_error.segment_position} {first_error.segment_id} "
               f"{first_error.element} code {first_error.code}" if first_error else ""),
            details={"errors": len(errors), "sampled": sampled, "pyx12_process": process,
                     "pyx12_pieces": len(verdicts), "pyx12_piece": piece})
    # The ST count, for matching 999s: split sets carry ST02 0001..N, not the ledger's ST02.
    ctx.save_state(conformance="passed", transaction_sets=report.transaction_sets)
    return {"run_id": ctx.run_id, "segments": report.segment_count}


def _require_sound_834(report: ConformanceReport, state: dict[str, Any], detail: dict[str, Any]) -> None:
    """Refuse a file the structural check faults, or one whose member count is not the build's."""
    detail.update(segments=report.segment_count, members=report.member_count, problems=len(report.problems))
    if not report.ok:
        first = report.problems[0]
        raise ConformanceFailed(
            f"{len(report.problems)} structural problem(s); first at segment {first.segment_position} "
            f"{first.segment_id} {first.element}: {first.message}",
            details={"problems": len(report.problems), "segment_position": first.segment_position,
                     "element": first.element, "rule": first.code})
    if report.member_count != state["counts"]["members"]:
        raise ConformanceFailed(f"file holds {report.member_count} members, build counted "
                                f"{state['counts']['members']}")


def _made_under(spec: Any) -> str:
    """The pins and options a ciphertext is made under; one made under others (a changed pin, armor or
    compression level) is not reused, it is made again."""
    return "|".join(str(v or "") for v in (spec.recipient_fingerprint, spec.recipient_encryption_subkey,
                                            spec.recipient_user_id, spec.signer_fingerprint, spec.armor,
                                            spec.compress_level))


def _encrypt_to_pins(ctx: RunContext, plain: Path, out: Path, payload_sha256: str, *,
                     stop: threading.Event | None = None) -> Any:
    """gpg over ``plain`` to the feed's pinned recipient, signed by ours; the bytes hashed as gpg reads
    them, so what is encrypted is what was gated (crypto.Keyring.encrypt_file)."""
    from carrierfeeds.crypto import Keyring

    spec = ctx.bundle.feed.encryption
    return Keyring(ctx.settings.resolved_gnupg_home).encrypt_file(
        plain, out, recipient=spec.recipient_fingerprint, signer=spec.signer_fingerprint, armor=spec.armor,
        compress_level=spec.compress_level, now=ctx.now(), warning_days=spec.expiry_warning_days,
        recipient_user_id=spec.recipient_user_id, recipient_encryption_subkey=spec.recipient_encryption_subkey,
        expect_sha256=payload_sha256, stop=stop)


def encrypt(ctx: RunContext) -> dict[str, Any]:
    """Encrypt the checked 834 to the pinned carrier key, signed with ours; refuse any unfit key.

    A ciphertext already made for this payload under the same pins and options (by the conformance stage, which
    encrypts ahead while it checks, or by an interrupted attempt of this one) is checked and used instead.
    """
    from carrierfeeds.crypto import Keyring

    spec = ctx.bundle.feed.encryption
    with _stage(ctx, "encrypt") as detail:
        state = ctx.state()
        if state.get("conformance") != "passed":
            raise ConformanceFailed("the file has not passed the conformance gate")
        keyring = Keyring(ctx.settings.resolved_gnupg_home)
        keyring.require_recipient(spec.recipient_fingerprint, now=ctx.now(), warning_days=spec.expiry_warning_days,
                                  user_id=spec.recipient_user_id, encryption_subkey=spec.recipient_encryption_subkey)
        cipher_name = state["file_name"] + spec.suffix
        earlier = (ctx.fetch(cipher_name) if state.get("cipher_name") == cipher_name and
                   state.get("encrypted_payload") == state["payload_sha256"] and
                   state.get("encrypted_under", _made_under(spec)) == _made_under(spec) and
                   ctx.store.exists(ctx.feed_id, ctx.ref.interval_start, cipher_name) else None)
        if earlier is not None and sha256_file(earlier) == state.get("ciphertext_sha256"):
            # A retry sends the very bytes an interrupted attempt may already have put on the far side;
            # the first attempt finds what the conformance stage made beside its checks.
            detail.update(reused=True, ciphertext_sha256=state["ciphertext_sha256"], bytes=earlier.stat().st_size,
                          recipient_fingerprint=spec.recipient_fingerprint,
                          **({"encrypted_in": "conformance"} if state.get("encrypted_ahead") else {}))
            return {"run_id": ctx.run_id, "bytes": earlier.stat().st_size, "reused": True}
        encrypted = _encrypt_to_pins(ctx, ctx.fetch(state["file_name"]), ctx.run_dir / cipher_name,
                                     state["payload_sha256"])
        detail.update(ciphertext_sha256=encrypted.sha256, bytes=encrypted.size,
                      recipient_fingerprint=spec.recipient_fingerprint)
        _keep_ciphertext(ctx, encrypted, payload_sha256=state["payload_sha256"], ahead=False)
    return {"run_id": ctx.run_id, "bytes": encrypted.size}


def _keep_ciphertext(ctx: RunContext, made: Any, *, payload_sha256: str, ahead: bool) -> None:
    """Put a whole, checked ciphertext in the staging store and name it in the state; on any failure
    (a full store is a TransientError) neither happens and the local copy goes too, so a retry starts
    from nothing rather than from a ciphertext the state does not vouch for."""
    try:
        ctx.keep(made.path, phi=False)  # already encrypted to the recipient; a failed put stores nothing
    except BaseException:
        made.path.unlink(missing_ok=True)
        raise
    try:
        ctx.save_state(cipher_name=made.path.name, ciphertext_sha256=made.sha256, cipher_bytes=made.size,
                       encrypted_payload=payload_sha256, encrypted_under=_made_under(ctx.bundle.feed.encryption),
                       encrypted_ahead=ahead)
    except BaseException:
        made.path.unlink(missing_ok=True)
        try:
            ctx.store.remove(ctx.feed_id, ctx.ref.interval_start, made.path.name)
        except Exception as exc:  # the state does not name it, and the next encryption replaces it
            log.warning("feed %s run %s: an unkept ciphertext stays in the staging store (%s)", ctx.feed_id,
                        ctx.run_id, type(exc).__name__)
        raise


class _EncryptionAhead:
    """gpg encrypting the rendered file (in its own process, fed by a thread) while the gate checks it.

    At 1M members gpg takes ~2.5 s of CPU and the gate ~4-5 s (pyx12's child beside this process's
    structural check); one after the other they add up, side by side they share the cores. Fail closed:
    the ciphertext is kept (staging store, state) only by :meth:`commit`, once the gate has passed; on any
    other way out gpg is fed no more and its output removed, so a file the gate refuses is never
    encrypted as far as the run is concerned. The encrypt stage still checks the pinned key and the
    ciphertext's hash before it uses it. A failure here is never the stage's: the encrypt stage then
    encrypts itself and reports whatever stops it.
    """

    def __init__(self, ctx: RunContext, state: dict[str, Any]) -> None:
        self._ctx = ctx
        self._payload = state["payload_sha256"]
        self.cipher_name = state["file_name"] + ctx.bundle.feed.encryption.suffix
        self._out = ctx.run_dir / f".ahead.{self.cipher_name}"
        self._stop = threading.Event()
        self._made: Any = None
        self._failure: str | None = None
        plain = ctx.fetch(state["file_name"])  # here, not in the thread: the gate fetches the same file
        self._thread = threading.Thread(target=self._run, args=(plain,), name="encrypt-ahead", daemon=True)
        self._thread.start()

    def _run(self, plain: Path) -> None:
        try:
            self._made = _encrypt_to_pins(self._ctx, plain, self._out, self._payload, stop=self._stop)
        except Exception as exc:  # reported by code or type only: never the stage's failure
            self._failure = getattr(exc, "code", None) or type(exc).__name__

    def commit(self, detail: dict[str, Any]) -> None:
        """The gate passed: wait for gpg and keep what it made as the run's ciphertext."""
        self._thread.join()
        if self._made is None:
            log.warning("feed %s run %s: encrypting ahead did not succeed (%s); the encrypt stage encrypts",
                        self._ctx.feed_id, self._ctx.run_id, self._failure)
            detail.update(encrypted_ahead=False, encrypt_ahead_error=self._failure)
            return
        final = self._ctx.run_dir / self.cipher_name
        os.replace(self._out, final)
        made, self._made = self._made, None
        try:
            _keep_ciphertext(self._ctx, replace(made, path=final), payload_sha256=self._payload, ahead=True)
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


class _NoEncryptionAhead:
    def commit(self, detail: dict[str, Any]) -> None:
        return None


@contextmanager
def _encryption_ahead(ctx: RunContext) -> Iterator[_EncryptionAhead | _NoEncryptionAhead]:
    """Encrypt ahead where it can pay: enabled, and no ciphertext of this payload made already."""
    state = ctx.state()
    if not ctx.settings.encrypt_ahead or "file_name" not in state or \
            state.get("encrypted_payload") == state.get("payload_sha256"):
        yield _NoEncryptionAhead()
        return
    ahead = _EncryptionAhead(ctx, state)
    try:
        yield ahead
    finally:
        ahead.discard()


def make_transport(ctx: RunContext) -> Any:
    """The feed's delivery target; credentials from the keys directory (Airflow passes its own)."""
    from carrierfeeds.credentials import load_sftp_endpoint
    from carrierfeeds.transport.local import LocalTransport
    from carrierfeeds.transport.manual import ManualTransport
    from carrierfeeds.transport.sftp import SftpTransport

    target = ctx.bundle.feed.delivery
    if target.kind == "sftp":
        endpoint = load_sftp_endpoint(ctx.settings.resolved_keys_dir, target.connection_id)
        return SftpTransport(endpoint, target.remote_dir)
    if target.kind == "manual":
        return ManualTransport(ctx.settings.data_dir / target.outbox)
    return LocalTransport(ctx.settings.data_dir / target.path)


def deliver(ctx: RunContext, *, transport: Any | None = None, force_reason: str | None = None) -> dict[str, Any]:
    """Send the ciphertext exactly once: intent row, upload (atomic on the far side), outcome row.

    One delivery of a run at a time: the stage holds the run's delivery lock (``Ledger.delivery_lock``)
    from its first look at the ledger to its outcome row, so a second worker (or a CLI rerun beside
    Airflow) waits, then finds the file delivered and sends nothing. A forced resend built by
    ``build(resend_reason=...)`` is a delivery of its own: its own control numbers and name, outcome
    ``forced_resend`` with the person's reason, linked in the ledger to the delivery it replaces.
    """
    feed = ctx.bundle.feed
    with _stage(ctx, "deliver") as detail, ctx.ledger.delivery_lock(ctx.feed_id, ctx.ref.interval_start):
        state = ctx.state()
        resend = int(state.get("resend") or 0)
        existing = ctx.ledger.find_delivery(feed_id=ctx.feed_id, interval_start=ctx.ref.interval_start,
                                            payload_sha256=state["payload_sha256"])
        if existing is not None and existing.status == "forced_resend" and feed.delivery.kind == "manual":
            # A manual resend always ends pending a person; this one was cut off between its two rows.
            _record_pending_handoff(ctx, existing.delivery_id, existing.size, existing.remote_path,
                                    "forced resend placed in the outbox; the hand-off row was interrupted")
        same_bytes_again = bool(force_reason) and not resend and existing is not None and \
            existing.status in ON_RECIPIENTS_SIDE
        if existing is not None and same_bytes_again and feed.output.format != "flatfile":
            # Fail closed: new control numbers come from the build stage, never from here.
            raise PermanentError("a forced resend goes out under new control numbers: build it with the "
                                 "resend reason first", details={"delivery_id": existing.delivery_id})
        if existing is not None and existing.status in ON_RECIPIENTS_SIDE and not same_bytes_again:
            # A retry, a rerun, a second worker or an Airflow clear of a delivered file: nothing is sent twice.
            detail.update(already_delivered=True, delivery_id=existing.delivery_id)
            ctx.save_state(delivered=True, already_delivered=True, remote_path=existing.remote_path)
            log.info("feed %s interval %s: interchange %s already delivered; not sending again",
                     ctx.feed_id, ctx.ref.interval_start, existing.isa13)
            return {"run_id": ctx.run_id, "already_delivered": True}
        other = ctx.ledger.find_delivery(feed_id=ctx.feed_id, interval_start=ctx.ref.interval_start)
        # A resend's payload differs from the file it replaces by its envelope only (checked by build).
        if not resend and other is not None and other.payload_sha256 != state["payload_sha256"] and \
                other.status in ON_RECIPIENTS_SIDE:
            raise Refused(
                f"a different file (interchange {other.isa13}) was already delivered for "
                f"{ctx.ref.interval_start}; a changed census belongs to the next interval",
                details={"delivery_id": other.delivery_id, "isa13": other.isa13})
        expected = recorded_ciphertext(ctx, state)
        cipher = ctx.fetch(state["cipher_name"])  # its name checked before any row is written
        counts = state["counts"]
        intent = existing or ctx.ledger.record_delivery_intent(
            run_id=ctx.run_id, feed_id=ctx.feed_id, interval_start=ctx.ref.interval_start,
            payload_sha256=state["payload_sha256"], file_name=state["file_name"] + feed.encryption.suffix,
            isa13=state["isa13"], gs06=state["gs06"], st02=state["st02"],
            recipient_fingerprint=feed.encryption.recipient_fingerprint,
            member_counts={"members": counts["members"],
                           **({k: v for k, v in counts.items() if k.startswith("ins03_")}
                              or {"ins03_030": counts["members"]}),
                           **({"transaction_sets": state["transaction_sets"]}
                              if "transaction_sets" in state else {})},
            transport=feed.delivery.kind, now=ctx.now())
        transport = transport or make_transport(ctx)
        if same_bytes_again:
            return _force_resend(ctx, intent, transport, cipher, str(force_reason), detail)
        remote_name = intent.file_name
        reason = state.get("resend_reason") or force_reason
        audit = {"isa13": intent.isa13, "remote_name": remote_name,
                 "replaces_delivery_id": state.get("replaces_delivery_id")}
        if resend:
            ctx.ledger.audit(actor=ctx.actor, action="forced_resend", object_type="delivery",
                             object_id=intent.delivery_id, reason=reason, now=ctx.now(), detail=audit)
        try:
            # One connection for the look and the upload where the transport can keep one open.
            with getattr(transport, "connected", nullcontext)():
                # A crash between the rename on the far side and our outcome row leaves the file there.
                found = transport.stat(remote_name)
                if found is not None:
                    return _reconcile(ctx, intent, existing, found, detail, transport)
                collected = _renamed_and_collected(ctx, transport, intent) if existing is not None else None
                if collected is not None:
                    return _record_collected(ctx, intent, detail, reason if resend else None, collected)
                receipt = transport.deliver(cipher, remote_name, expect_sha256=expected,
                                             **_rename_marker(ctx, transport, intent))
        except CarrierFeedsError as exc:
            # The ciphertext this attempt sent (or meant to): a later attempt that finds it renamed into
            # place recognises it by this hash (see _require_ours).
            ctx.ledger.record_delivery_outcome(intent.delivery_id, status="failed", now=ctx.now(),
                                               ciphertext_sha256=state["ciphertext_sha256"],
                                               error_code=exc.code, message=exc.message[:500])
            if resend:
                ctx.ledger.audit(actor=ctx.actor, action="forced_resend_failed", object_type="delivery",
                                 object_id=intent.delivery_id, reason=reason, now=ctx.now(),
                                 detail={**audit, "error_code": exc.code})
            raise
        outcome = "forced_resend" if resend else "pending_handoff" if feed.delivery.kind == "manual" else "delivered"
        # Renamed into place, then gone before a lost connection let us look again: the carrier's now.
        unverified = None if getattr(receipt, "verified", True) else \
            "renamed into place and collected by the carrier at once; delivered, not re-verified"
        ctx.ledger.record_delivery_outcome(
            intent.delivery_id, status=outcome, now=ctx.now(),
            ciphertext_sha256=expected, size=receipt.size, remote_path=receipt.remote_path,
            host_key_fingerprint=receipt.host_key_fingerprint, actor=ctx.actor,
            reason=reason if resend else None, message=unverified)
        if resend and feed.delivery.kind == "manual":
            # In the outbox is not with the recipient: the resend waits for a person, like the first copy.
            _record_pending_handoff(ctx, intent.delivery_id, receipt.size, receipt.remote_path,
                                    "forced resend placed in the outbox; waiting for a person")
        detail.update(bytes=receipt.size, attempts=receipt.attempts, remote_path=receipt.remote_path,
                      host_key_fingerprint=receipt.host_key_fingerprint,
                      **({"forced": True, "resend": resend} if resend else {}),
                      **({"verified": False} if unverified else {}))
        ctx.save_state(remote_path=receipt.remote_path, delivered=True, already_delivered=False)
    return {"run_id": ctx.run_id, "bytes": receipt.size, **({"forced": True} if resend else {})}


def recorded_ciphertext(ctx: RunContext, state: dict[str, Any]) -> str:
    """The sha256 of the ciphertext the encrypt stage last recorded in the ledger for this run: what the
    bytes uploaded must hash to (the staging store can be written by others; the ledger is the record).
    Refused when there is none, or when the state names another one."""
    from carrierfeeds.transport.base import CiphertextMismatch

    made = [e for e in ctx.ledger.run_events(ctx.run_id)
            if e.kind == "stage" and e.stage == "encrypt" and e.status == "succeeded"]
    recorded = made[-1].detail.get("ciphertext_sha256") if made else None
    if not isinstance(recorded, str):
        raise CiphertextMismatch("the ledger records no ciphertext for this run; run the encrypt stage",
                                 details={"run_id": ctx.run_id})
    if state.get("ciphertext_sha256") != recorded:
        raise CiphertextMismatch("the staged state names a ciphertext the ledger does not record; run the "
                                 "encrypt stage again", details={"run_id": ctx.run_id, "expected_sha256": recorded})
    return recorded


def resend_name(file_name: str, number: int) -> str:
    """The name of the ``number``-th forced resend: ``_resend<n>`` before the extensions, so the ISA13 in
    the name and the carrier's pickup pattern (``*.834.pgp``) still hold."""
    stem, dot, extensions = file_name.partition(".")
    return f"{stem}_resend{number}{dot}{extensions}"


def _force_resend(ctx: RunContext, intent: Any, transport: Any, cipher: Path, reason: str,
                  detail: dict[str, Any]) -> dict[str, Any]:
    """Send a delivered flat file again because a person said why: the same ciphertext under the next
    ``_resend<n>`` name (a flat file carries no control number in its content, so new numbers would not
    make it a new file; an 834 or PDF resend is built under new control numbers instead, see ``build``).
    The carrier may have moved, renamed or deleted the first copy, and a final name is never overwritten,
    so the resend never depends on what is left under the first name.

    Only this code writes ``_resend<n>`` names, so one already there is this resend, interrupted after
    its rename: recorded, not sent twice. A failure leaves the delivery's recorded status alone (the
    first copy is still with the carrier) and is audited as ``forced_resend_failed``.
    """
    state = ctx.state()
    done = sum(o.status == "forced_resend" for o in ctx.ledger.delivery_outcomes(delivery_ids=[intent.delivery_id]))
    remote_name = resend_name(intent.file_name, done + 1)
    audit = {"isa13": intent.isa13, "remote_name": remote_name}
    try:
        found = transport.stat(remote_name)
        if found is not None:
            _require_ours(ctx, transport, intent, found)
            ctx.ledger.record_delivery_outcome(
                intent.delivery_id, status="forced_resend", now=ctx.now(), size=found.size,
                remote_path=found.name, actor=ctx.actor, reason=reason,
                message="found on the carrier's side after an interrupted forced resend")
            if ctx.bundle.feed.delivery.kind == "manual":
                _record_pending_handoff(ctx, intent.delivery_id, found.size, found.name,
                                        "forced resend found in the outbox; waiting for a person")
            detail.update(reconciled=True, forced=True, bytes=found.size)
            ctx.save_state(remote_path=found.name, delivered=True, already_delivered=False)
            return {"run_id": ctx.run_id, "bytes": found.size, "reconciled": True}
        ctx.ledger.audit(actor=ctx.actor, action="forced_resend", object_type="delivery",
                         object_id=intent.delivery_id, reason=reason, now=ctx.now(), detail=audit)
        receipt = transport.deliver(cipher, remote_name, expect_sha256=recorded_ciphertext(ctx, state))
    except CarrierFeedsError as exc:
        ctx.ledger.audit(actor=ctx.actor, action="forced_resend_failed", object_type="delivery",
                         object_id=intent.delivery_id, reason=reason, now=ctx.now(),
                         detail={**audit, "error_code": exc.code})
        raise
    ctx.ledger.record_delivery_outcome(
        intent.delivery_id, status="forced_resend", now=ctx.now(), ciphertext_sha256=state["ciphertext_sha256"],
        size=receipt.size, remote_path=receipt.remote_path, host_key_fingerprint=receipt.host_key_fingerprint,
        actor=ctx.actor, reason=reason)
    if ctx.bundle.feed.delivery.kind == "manual":
        # In the outbox is not with the recipient: the resend waits for a person, like the first copy.
        _record_pending_handoff(ctx, intent.delivery_id, receipt.size, receipt.remote_path,
                                "forced resend placed in the outbox; waiting for a person")
    detail.update(forced=True, bytes=receipt.size, attempts=receipt.attempts, remote_path=receipt.remote_path,
                  host_key_fingerprint=receipt.host_key_fingerprint)
    ctx.save_state(remote_path=receipt.remote_path, delivered=True, already_delivered=False)
    return {"run_id": ctx.run_id, "bytes": receipt.size, "forced": True}


def _rename_marker(ctx: RunContext, transport: Any, intent: Any) -> dict[str, Any]:
    """``before_rename`` for a transport that can tell whether its temp file is still there (``temp_exists``,
    see :func:`_renamed_and_collected`): the ledger row ``rename_sent``, written just before each rename
    request, so that a later attempt finding neither name knows where the file went."""
    if not hasattr(transport, "temp_exists"):
        return {}
    cipher_sha256 = ctx.state()["ciphertext_sha256"]

    def marker() -> None:
        ctx.ledger.record_delivery_outcome(intent.delivery_id, status="rename_sent", now=ctx.now(),
                                           ciphertext_sha256=cipher_sha256, actor=ctx.actor)

    return {"before_rename": marker}


def _renamed_and_collected(ctx: RunContext, transport: Any, intent: Any) -> str | None:
    """An earlier attempt asked for the rename (``rename_sent``) and neither the final nor the temp name is
    on the server: the rename happened and the carrier took the file; the ciphertext hash that attempt
    recorded. None otherwise: a temp file still there means the rename did not happen, and the upload is
    simply done again."""
    temp_exists = getattr(transport, "temp_exists", None)
    if temp_exists is None:
        return None
    asked = [o for o in ctx.ledger.delivery_outcomes(delivery_ids=[intent.delivery_id]) if o.status == "rename_sent"]
    if not asked or temp_exists(intent.file_name):
        return None
    return str(asked[-1].ciphertext_sha256)


def _record_collected(ctx: RunContext, intent: Any, detail: dict[str, Any], reason: str | None,
                      ciphertext_sha256: str) -> dict[str, Any]:
    """The file an earlier attempt renamed into place is with the carrier: delivered, not re-verified."""
    outcome = "forced_resend" if reason else "delivered"
    ctx.ledger.record_delivery_outcome(
        intent.delivery_id, status=outcome, now=ctx.now(), ciphertext_sha256=ciphertext_sha256,
        actor=ctx.actor, reason=reason,
        message="renamed into place by an earlier attempt and collected by the carrier before it could be "
                "looked at again; delivered, not re-verified")
    log.warning("feed %s interval %s: %s was renamed into place by an earlier attempt and is gone (collected); "
                "recorded as delivered, not re-verified, not sent again", ctx.feed_id, ctx.ref.interval_start,
                intent.file_name)
    detail.update(verified=False, collected=True)
    ctx.save_state(remote_path=intent.file_name, delivered=True, already_delivered=False)
    return {"run_id": ctx.run_id, "collected": True}


def _reconcile(ctx: RunContext, intent: Any, existing: Any, found: Any, detail: dict[str, Any],
               transport: Any) -> dict[str, Any]:
    """The final name is already on the carrier's side: ours from an interrupted run, or a conflict."""
    if existing is None or existing.status not in ("pending", "failed", "rename_sent"):
        raise PermanentError(f"{intent.file_name} already exists on the carrier's side and the ledger has no "
                             "unfinished delivery for it", details={"delivery_id": intent.delivery_id})
    remote_sha256 = _require_ours(ctx, transport, intent, found)
    if ctx.bundle.feed.delivery.kind == "manual":
        # Found in our own outbox means placed, not handed over: it stays on the hand-off list.
        _record_pending_handoff(ctx, intent.delivery_id, found.size, found.name,
                                "found in the outbox after an interrupted run; waiting for a person")
    else:
        ctx.ledger.record_delivery_outcome(intent.delivery_id, status="reconciled", now=ctx.now(),
                                           size=found.size, remote_path=found.name,
                                           ciphertext_sha256=remote_sha256,
                                           message="found on the carrier's side after an interrupted run "
                                                   "(size and sha256 checked)")
    detail.update(reconciled=True, bytes=found.size)
    ctx.save_state(remote_path=found.name, delivered=True, already_delivered=False)
    return {"run_id": ctx.run_id, "bytes": found.size, "reconciled": True}


def _require_ours(ctx: RunContext, transport: Any, intent: Any, found: Any) -> str:
    """A file found under our name is taken as ours only when its size and its SHA-256 are those of the
    ciphertext this run sent (or an earlier attempt recorded for this delivery); a foreign file of the same
    size is refused (RemoteFileExists: recorded as a failed attempt, alerted, never overwritten)."""
    state = ctx.state()
    ours = {state.get("ciphertext_sha256")} | {o.ciphertext_sha256 for o in ctx.ledger.delivery_outcomes(
        delivery_ids=[intent.delivery_id])}
    ours.discard(None)
    hashing = getattr(transport, "sha256", None)
    remote: str | None = hashing(found.name) if hashing is not None else None
    if remote is not None and remote in ours:
        return remote
    if state.get("cipher_bytes") not in (None, found.size):
        raise PermanentError(f"{found.name} exists on the carrier's side with a different size",
                             details={"delivery_id": intent.delivery_id, "bytes": found.size})
    from carrierfeeds.transport.base import RemoteFileExists

    raise RemoteFileExists(
        f"{found.name} exists on the carrier's side but is not the file this run sent "
        f"({'its sha256 differs' if remote is not None else 'its content could not be checked'}); "
        "not taken as delivered, not overwritten",
        details={"delivery_id": intent.delivery_id, "bytes": found.size, "remote_sha256": remote})


def _record_pending_handoff(ctx: RunContext, delivery_id: str, size: int | None, remote_path: str | None,
                            message: str) -> None:
    """A manual delivery's file is in the outbox: outcome ``pending_handoff`` puts it on the hand-off list."""
    ctx.ledger.record_delivery_outcome(delivery_id, status="pending_handoff", now=ctx.now(), size=size,
                                       remote_path=remote_path, actor=ctx.actor, message=message)


def confirm(ctx: RunContext, *, endpoint_for: Callable[[str], Any] | None = None) -> RunSummary:
    """Close the run: census recorded as processed (an SFTP original moved with ``endpoint_for``'s
    connection), final status in the ledger, plaintext removed from the staging folder."""
    with _stage(ctx, "confirm") as detail:
        state = ctx.state()
        if not state.get("delivered"):
            raise PermanentError("nothing was delivered for this run")
        status = ("already_delivered" if state.get("already_delivered") else
                  "pending_handoff" if ctx.bundle.feed.delivery.kind == "manual" else "delivered")
        summary = _summary(ctx, status)
        if state.get("snapshot_staged"):
            # Only now does the carrier hold what this run sent; a failed delivery never gets here.
            # False: an acknowledgment already rejected this run and put the snapshot back.
            detail.update(snapshot_advanced=snapshot_store(ctx).advance(ctx.feed_id, ctx.run_id))
        # Only now has the census an outcome; a move that fails is retried by running confirm again.
        detail.update(census_moved=_accept_census(ctx, endpoint_for))
        ctx.ledger.finish_run(ctx.run_id, status, now=ctx.now(), counts=state.get("counts", {}))
        detail.update(removed=purge_plaintext(ctx))
    return summary


def purge_plaintext(ctx: RunContext) -> int:
    """End of a run: scratch wiped, and the staging store keeps only the state and the ciphertext.

    The employer's own file stays in its source folder for reprocessing; a retry re-stages from there.
    """
    from carrierfeeds.staging import StagingTampered, StagingUnsealed

    try:
        cipher = ctx.state().get("cipher_name")
    except (StagingTampered, StagingUnsealed):
        # A state that does not open names nothing to keep or to remove: the store is left for people to
        # look at (its member data stays sealed; retention removes it in time).
        log.warning("feed %s run %s: the staged state does not open; the staging store is left as it is",
                    ctx.feed_id, ctx.run_id)
        return wipe_scratch(ctx)
    keep = tuple(n for n in (STATE, cipher) if n)
    return wipe_scratch(ctx) + ctx.store.remove_run(ctx.feed_id, ctx.ref.interval_start, keep=keep)


def _summary(ctx: RunContext, status: str, error: CarrierFeedsError | None = None) -> RunSummary:
    from carrierfeeds.staging import StagingTampered, StagingUnsealed

    try:
        state = ctx.state()
    except (StagingTampered, StagingUnsealed):
        state = {}  # the error already says why; a summary never repeats what the state would claim
    counts = state.get("counts", {})
    return RunSummary(
        run_id=ctx.run_id, feed_id=ctx.feed_id, interval_start=ctx.ref.interval_start.isoformat(),
        status=status, members=counts.get("members", 0), subscribers=counts.get("subscribers", 0),
        coverages=counts.get("coverages", 0), file_name=state.get("cipher_name"),
        payload_sha256=state.get("payload_sha256"), ciphertext_sha256=state.get("ciphertext_sha256"),
        isa13=state.get("isa13"), remote_path=state.get("remote_path"),
        validation=state.get("validation", {}), error=error.as_dict() if error else None)


def end_run(ctx: RunContext, exc: CarrierFeedsError) -> RunSummary:
    """Record how a failed run ended and remove its plaintext; a retry re-stages from the source."""
    status = status_for(exc)
    ctx.ledger.finish_run(ctx.run_id, status, now=ctx.now(), error_code=exc.code, message=exc.message[:500])
    if status == "no_new_census":  # past the feed's window this is late or missing, never silent
        from carrierfeeds.ops.arrival import check_quietly

        check_quietly(ctx.settings, ctx.bundle, ctx.now(), ledger=ctx.ledger)
    if isinstance(exc, TransientError):
        wipe_scratch(ctx)  # what a retry needs stays in the staging store, encrypted
    else:
        purge_plaintext(ctx)
    return _summary(ctx, status, exc)


def run_feed(settings: Settings, ref: RunRef, *, clock: Callable[[], datetime], actor: str,
             census_path: Path | None = None, transport: Any | None = None,
             force_reason: str | None = None, full_file: bool = False, force_census: bool = False) -> RunSummary:
    """Every stage in order, in one process; ends in a recorded state whatever happens, and the ledger's
    head is then anchored outside the database (``ledger.anchor``)."""
    ctx = open_run(settings, ref, clock=clock, actor=actor)
    try:
        stage_census(ctx, census_path, force=force_census)
        validate(ctx)
        build(ctx, full_file=full_file, resend_reason=force_reason)
        conformance(ctx)
        encrypt(ctx)
        deliver(ctx, transport=transport, force_reason=force_reason)
        return confirm(ctx)
    except CarrierFeedsError as exc:
        return end_run(ctx, exc)
    except BaseException:
        ctx.ledger.finish_run(ctx.run_id, "failed", now=ctx.now(), error_code="internal")
        purge_plaintext(ctx)
        raise
    finally:
        anchor_run(ctx)


def anchor_run(ctx: RunContext) -> None:
    """Anchor the ledger head once a run has ended (logged, never raised: the run's outcome stands)."""
    from carrierfeeds.ledger.anchor import AnchorLog, anchor_quietly

    anchor_quietly(ctx.ledger, AnchorLog.for_settings(ctx.settings), reason=f"run:{ctx.run_id}", now=ctx.now())
