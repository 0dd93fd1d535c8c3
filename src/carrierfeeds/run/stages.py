"""The stage functions of one feed run, and ``run_feed`` composing them; CLI and Airflow call these.

Each stage reads what earlier stages left in the run's staging store and the ledger (see run.context),
so any stage can be retried on its own, in another process.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from carrierfeeds.errors import (
    CarrierFeedsError,
    CensusRejected,
    ConfigError,
    ConformanceFailed,
    DataError,
    NotAuthorized,
    PermanentError,
    Refused,
    TransientError,
)
from carrierfeeds.files import sha256_file, write_private
from carrierfeeds.ledger.records import SENT_STATUSES
from carrierfeeds.outcomes import status_for
from carrierfeeds.run.context import (
    ACCEPTED,
    HELD_BACK,
    STATE,
    RunContext,
    RunRef,
    open_run,
    recorded_stage,
    release_memory,
    wipe_scratch,
)
from carrierfeeds.run.delivery import deliver_once
from carrierfeeds.run.encrypt_ahead import encrypt_to_pins, encryption_ahead, keep_ciphertext, made_under
from carrierfeeds.run.gate import run_gate
from carrierfeeds.run.render import RenderedFile, hash_only, render_file
from carrierfeeds.run.state import BuildState, CensusState, RunState, ValidationState
from carrierfeeds.settings import FeedBundle, Settings, plan_catalogue, private_dir
from carrierfeeds.staging import CHUNK
from carrierfeeds.transport.base import Transport

if TYPE_CHECKING:
    import pandas as pd

    from carrierfeeds.census.sources import CensusPick, Writable
    from carrierfeeds.changes import ChangeSet, SnapshotStore, SnapshotWriter
    from carrierfeeds.enrollment import Enrollment
    from carrierfeeds.ledger import Interchange
    from carrierfeeds.lifecycle import RunLifecycle
    from carrierfeeds.reconcile.correction import RunCorrection

log = logging.getLogger(__name__)
_T = TypeVar("_T")


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
    #: Where the file went under the feed's lifecycle: ``test`` (the carrier's test endpoint) or ``production``.
    endpoint: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------------ stages
def stage_census(ctx: RunContext, census_path: Path | None = None, *, force: bool = False) -> dict[str, Any]:
    """Fetch the feed's census (local folder, SFTP drop or SQL query; see ``census.sources``) into the
    run's private folder, under the size cap and archive rules. The employer's own file is never moved or
    changed here; an SFTP file moves to the processed folder only once validation accepts it.

    ``census_path`` is an explicit file: always processed. Otherwise a file another run already processed
    (recorded once that run had an outcome: see :func:`_accept_census`) raises
    :class:`~carrierfeeds.census.sources.NoNewCensus` (the run ends ``no_new_census``) unless ``force``.
    A rerun of a run whose census passed validation re-uses the staged copy while the staging store
    still holds it. Connection ids resolve through ``ctx.connections``.
    """
    from carrierfeeds.census.sources import census_from_file, confirm_unchanged, fetch_census, tees

    with recorded_stage(ctx, "stage_census") as detail:
        state = ctx.state()
        if census_path is None and not force and state.census is not None and \
                (state.census_validated or state.census_accepted) and \
                ctx.store.exists(ctx.feed_id, ctx.ref.interval_start, "census.csv"):
            detail.update(census_sha256=state.census.census_sha256, reused=True)
            return {"run_id": ctx.run_id, "census_sha256": state.census.census_sha256, "reused": True}

        def pick_census(tee: Writable | None = None) -> CensusPick:
            if census_path is not None:
                return census_from_file(Path(census_path), feed_id=ctx.feed_id, schema=ctx.bundle.schema,
                                        data_dir=ctx.settings.data_dir, work_dir=ctx.run_dir, tee=tee)
            return fetch_census(ctx.bundle.feed.census.source, feed_id=ctx.feed_id, schema=ctx.bundle.schema,
                                data_dir=ctx.settings.data_dir, keys_dir=ctx.settings.resolved_keys_dir,
                                work_dir=ctx.run_dir, force=force, connections=ctx.connections,
                                run_id=ctx.run_id, tee=tee)

        staged = ctx.run_dir / "census.csv"
        # Every pick is the run's own private file (a local file is copied and hashed through the one
        # descriptor it was opened with). The employer's file stays as it is, for reprocessing; one that
        # moved on since it was read (still being written) is caught before anything is kept.
        if tees(None if census_path is not None else ctx.bundle.feed.census.source):
            # A local file is copied, hashed and sealed into the staging store from the same blocks, in
            # one read: the store hashes nothing of its own (the copy's hash is of the very bytes sealed),
            # and any failure before the block ends leaves no sealed object and no private copy.
            picked: list[CensusPick] = []
            try:
                with ctx.store.open_writer(ctx.feed_id, ctx.ref.interval_start, staged.name,
                                           sha256=False) as stored:
                    picked.append(pick_census(stored))
                    confirm_unchanged(picked[0])
                    if stored.plain_bytes != picked[0].size:
                        raise RuntimeError("the census source did not write the census to the staging store")
                os.chmod(picked[0].path, 0o600)
                os.replace(picked[0].path, staged)
            except BaseException:
                for leftover in picked:
                    leftover.path.unlink(missing_ok=True)
                raise
            pick = picked[0]
            digest = pick.sha256
        else:
            pick = pick_census()
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
        ctx.save_state(census=CensusState(census_name=pick.name, census_sha256=digest, census_pick=pick.as_state()),
                       census_accepted=False, census_validated=False)
        detail.update(census_sha256=digest, bytes=pick.size, source=pick.kind, reprocessed=pick.reprocessed)
    return {"run_id": ctx.run_id, "census_sha256": digest}


def _census_changed(pick: CensusPick) -> TransientError:
    return TransientError(f"{pick.name}: the census changed while it was staged (still being written?)",
                          details={"sha256": pick.sha256})


def _accept_census(ctx: RunContext) -> bool:
    """The run has its outcome (its file delivered or handed over, or nothing to send): record the staged
    census as processed and move an SFTP original to the processed folder. Idempotent.

    Returns whether a file was moved on the server. Only an outcome gets here: a census that validation
    rejected, or whose build, gate, encryption or delivery failed, stays unrecorded (and in the drop), so
    the rerun, or the next run, processes that same census again instead of finding "no new census" while
    the carrier never received it.
    """
    from carrierfeeds.census.sources import CensusPick, accept_census

    census = ctx.state().census
    if census is None or census.census_pick is None:
        return False  # staged before sources were tracked: nothing to record
    pick = CensusPick.from_state(census.census_pick)
    moved = accept_census(ctx.bundle.feed.census.source, pick, feed_id=ctx.feed_id,
                          data_dir=ctx.settings.data_dir, keys_dir=ctx.settings.resolved_keys_dir,
                          run_id=ctx.run_id, at=ctx.now(), connections=ctx.connections)
    ctx.save_state(census_accepted=True)
    return moved is not None


def validate(ctx: RunContext) -> dict[str, Any]:
    """Read and validate the staged census; write the PHI-free report; apply the feed's policy.

    The census is read in blocks and validated in chunks of whole families (``Settings.chunk_families``;
    see :mod:`carrierfeeds.census.chunks`), the accepted file written chunk by chunk: the report and the
    outcome are those of the census validated whole. An accepted census is recorded as processed only
    when the run has an outcome (:func:`_accept_census`, from confirm or a build with nothing to send),
    not here.
    """
    from carrierfeeds.census.accepted import AcceptedWriter
    from carrierfeeds.census.chunks import FamilyCollision, census_chunks
    from carrierfeeds.census.tokens import MemberTokenizer
    from carrierfeeds.validation import CarrierRules
    from carrierfeeds.validation.chunked import suite_by_rows, validate_chunks

    with recorded_stage(ctx, "validate") as detail:
        staged = ctx.state().census
        source_name = staged.census_name if staged is not None else "census.csv"
        tokenizer = MemberTokenizer.from_key_file(ctx.settings.resolved_token_key_file)
        # With the carrier's rules: whatever the build could not take is refused here, by row and rule.
        carrier = CarrierRules.for_feed(ctx.bundle.mapping, ctx.bundle.feed.authorization.plans,
                                        output_format=ctx.bundle.feed.output.format)
        # A suite GX runs (any expectation not of one row alone) reads whole columns: one chunk.
        families = ctx.settings.chunk_families if suite_by_rows(ctx.bundle.suite_path) else None
        # the run's own staged copy (0600, replaced by rename, never truncated): read mapped, coded, in blocks
        census = census_chunks(ctx.fetch("census.csv"), ctx.bundle.schema, display_name=source_name,
                               spill_dir=ctx.run_dir / ".census-blocks", families_per_chunk=families)
        accepted = ctx.run_dir / ACCEPTED
        written = accepted.with_name(f".{ACCEPTED}.tmp")
        try:
            run = partial(validate_chunks, suite_path=ctx.bundle.suite_path, schema=ctx.bundle.schema,
                          tokenizer=tokenizer, as_of=ctx.ref.interval_start, source_name=source_name,
                          rows=census.rows, reader_warnings=census.warnings, code_texts=census.code_texts,
                          policy=ctx.bundle.feed.validation, plans=plan_catalogue(ctx.settings, ctx.bundle),
                          carrier=carrier)
            try:
                with AcceptedWriter(written) as writer:
                    outcome = run(census.chunks(), on_accepted=writer.add_accepted)
            except FamilyCollision:  # two families' ids hashed alike: validated again as one chunk
                census.as_one_chunk()
                with AcceptedWriter(written) as writer:
                    outcome = run(census.chunks(), on_accepted=writer.add_accepted)
        except BaseException:
            written.unlink(missing_ok=True)
            raise
        finally:
            census.close()
        release_memory()
        report = outcome.report
        report_dir = private_dir(ctx.settings.reports_dir / ctx.feed_id / ctx.ref.interval_start.isoformat())
        report.write_csv(report_dir / "validation.csv")
        report.write_html(report_dir / "validation.html")
        counts = {"rows": report.rows, "members": report.members, "families": report.families,
                  "failed_rows": report.failed_rows, "failed_families": report.failed_families,
                  "findings": len(report.findings), "held_back_members": outcome.held_back_members}
        # Expected exclusions by reason (a plan this carrier is not authorised for): flat in the ledger,
        # by reason in the run's summary (run --json).
        detail.update(counts, **{f"excluded_{k}": v for k, v in report.excluded.items()})
        log.info("%s: validated in %d chunk(s) of families", ctx.run_id, len(writer.chunks))
        ctx.save_state(validated=ValidationState(validation={**counts, "excluded": dict(report.excluded)},
                                                 report_dir=str(report_dir)))
        if outcome.rejected:
            written.unlink(missing_ok=True)
            raise CensusRejected(
                f"census rejected under policy {ctx.bundle.feed.validation.policy!r}: "
                f"{report.failed_rows} failing rows in {report.failed_families} families; "
                f"see {report_dir / 'validation.html'}",
                file=source_name, details=counts)
        ctx.store.put_bytes(ctx.feed_id, ctx.ref.interval_start, HELD_BACK,
                            json.dumps(sorted(outcome.held_back_member_ids)).encode(), phi=True)
        # Arrow IPC, uncompressed, read memory-mapped by build: AES over more bytes is cheaper than LZ4,
        # zstd or Parquet both ways. Low-cardinality columns as dictionaries from validation's codes
        # (carrierfeeds.census.accepted) keep it small (figures: benchmarks/README.md).
        os.chmod(written, 0o600)
        written.replace(accepted)
        ctx.keep(accepted)
        ctx.save_state(census_validated=True)
    return {"run_id": ctx.run_id, **counts}


def build(ctx: RunContext, *, full_file: bool = False, resend_reason: str | None = None) -> dict[str, Any]:
    """Map the accepted census through the carrier mapping and render the 834 into the run folder.

    In changes mode with nothing to send, that is the run's outcome: the census is recorded as processed
    (an SFTP original moved through ``ctx.connections``) before :class:`NoChanges` ends the run.

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
    from carrierfeeds.lifecycle import plan_run

    feed, mapping = ctx.bundle.feed, ctx.bundle.mapping
    with recorded_stage(ctx, "build") as detail:
        if mapping.aggregation is not None:
            # The carrier's guide wants one file for all its employers: a file of this employer alone is
            # never sent (the aggregate's run builds the file: run.aggregate_run).
            raise ConfigError(f"feed {feed.feed_id} is one employer of carrier file {mapping.mapping_id!r} "
                              "(mapping aggregation): it is sent only within that file; run it with "
                              f"`carrierfeeds run-aggregate {mapping.mapping_id}`", field="mapping_id")
        # The authority every file is sent under; a no-op unless the feed's authorisation changed.
        ctx.ledger.record_authorisation(
            feed_id=feed.feed_id, employer_id=feed.employer.id, carrier_id=feed.carrier.id,
            plans=feed.authorization.plans, effective_from=feed.authorization.effective_from,
            effective_to=feed.authorization.effective_to, recorded_by=ctx.actor, now=ctx.now(),
            reference=feed.authorization.reference)
        if not feed.authorization.covers(ctx.ref.interval_start):
            raise NotAuthorized(f"employer {feed.employer.id} has not authorised carrier {feed.carrier.id} "
                                f"for {ctx.ref.interval_start.isoformat()}",
                                details={"feed_id": feed.feed_id})
        # Before any control number is taken: a refused file uses none (see carrierfeeds.lifecycle).
        life = plan_run(ctx.ledger, feed, mapping, day=ctx.ref.interval_start, run_id=ctx.run_id,
                        actor=ctx.actor, now=ctx.now())
        detail.update(lifecycle=life.state, endpoint=life.endpoint,
                      **({"went_live": True} if life.went_live else {}),
                      **({"first_production_file": True} if life.full_file else {}))
        full_file = full_file or life.full_file
        accepted = ctx.fetch(ACCEPTED)
        action: str = mapping.full_file.bgn08
        change_counts: dict[str, Any] = {}
        roster: Enrollment | None = None  # a PDF roster's changes since the last one
        source: _AcceptedParts | None = None
        enrollment: Enrollment
        if feed.output.format == "x12-834" and not keeps_snapshot(mapping.mode, feed.validation.policy,
                                                                    eoi_hold=mapping.volumes.eoi_hold):
            # Mapped and rendered chunk by chunk of the accepted census (families whole): one chunk's
            # view in memory at a time, the same bytes (benchmarks/README.md, "Issue 23, streaming build").
            source = _AcceptedParts(accepted, feed, mapping, ctx.ref.interval_start)
        elif feed.output.format == "x12-834" and not snapshot_store(ctx).has_base(ctx.feed_id, ctx.run_id):
            # The feed's first file (no snapshot yet): the full audit file, each chunk diffed on its own
            # against nothing, the next snapshot staged a chunk at a time (SnapshotStore.staging).
            held = json.loads(ctx.store.get_bytes(ctx.feed_id, ctx.ref.interval_start, HELD_BACK))
            source = _AcceptedParts(accepted, feed, mapping, ctx.ref.interval_start,
                                    first_file=(ctx.bundle, tuple(held)))
        else:
            census = read_accepted(accepted)
            enrollment = build_enrollment(census, feed, mapping, as_of=ctx.ref.interval_start)
            if keeps_snapshot(mapping.mode, feed.validation.policy, eoi_hold=mapping.volumes.eoi_hold):
                enrollment, action, change_counts, roster = _diff_for_run(
                    ctx, census, enrollment, full_file=full_file or mapping.mode == "full")
            del census  # the render reads the enrollment only (what of the census it shares stays mapped)
            release_memory()
        interchange = ctx.ledger.allocate_control_numbers(
            run_id=ctx.run_id, sender_id=mapping.envelope.sender_id,
            receiver_id=mapping.envelope.receiver_id, now=ctx.now())
        if resend_reason and feed.output.format != "flatfile":
            # Checked before numbers are minted, so a refused resend uses none.
            sent = ctx.ledger.find_delivery(feed_id=ctx.feed_id, interval_start=ctx.ref.interval_start)
            checked = sent.delivery_id if sent is not None and sent.status in SENT_STATUSES else None
            seen = source if source is not None else enrollment
            if checked is not None:
                _require_same_members(ctx, seen, action, checked, life, changes=roster)
            resend = ctx.ledger.allocate_resend(
                run_id=ctx.run_id, sender_id=mapping.envelope.sender_id, receiver_id=mapping.envelope.receiver_id,
                actor=ctx.actor, reason=resend_reason, now=ctx.now())
            if resend is not None:
                if resend.replaces_delivery_id != checked:
                    _require_same_members(ctx, seen, action, resend.replaces_delivery_id, life, changes=roster)
                interchange = resend
        if source is None:
            rendered = _render(ctx, enrollment, action, interchange, life, changes=roster)
            from carrierfeeds.run.disclosure import stage_disclosure_of  # numpy/pandas: loaded when a file is built

            stage_disclosure_of(ctx, enrollment)
        else:
            rendered, enrollment = _render_parts(ctx, source, action, interchange, life)
            if source.first_file is not None:
                if enrollment.member_count == 0:
                    from carrierfeeds.changes import NoChanges

                    _accept_census(ctx)  # the carrier holds all of it already: this census is done
                    raise NoChanges("no changes against the last delivered snapshot; nothing to send",
                                    details={"feed_id": ctx.feed_id})
                ctx.save_state(snapshot_staged=True)
                change_counts = {"ins03_030": enrollment.member_count, "hd01_030": enrollment.coverage_count,
                                 "carried_over": 0, "full_file": 1}
        file_name, payload_sha256, size = rendered.file_name, rendered.sha256, rendered.size
        if mapping.notice is not None:
            detail.update(_write_notice(ctx, enrollment, rendered, interchange, change_counts))
        counts = {"members": enrollment.member_count, "subscribers": enrollment.subscriber_count,
                  "coverages": enrollment.coverage_count, **{f"excluded_{k}": v for k, v in
                                                             enrollment.excluded.items()}, **change_counts,
                  # The character rule's normalisations, by rule (never by value).
                  **{f"normalised_{k}": v for k, v in enrollment.normalised.items()}}
        detail.update(counts, isa13=interchange.isa13, payload_sha256=payload_sha256, bytes=size,
                      file_name=file_name,
                      **({"resend": interchange.resend, "replaces_delivery_id": interchange.replaces_delivery_id}
                         if interchange.resend else {}))
        ctx.save_state(built=BuildState(
            file_name=file_name, payload_sha256=payload_sha256, payload_bytes=size, isa13=interchange.isa13,
            gs06=interchange.gs06, st02=interchange.st02, counts=counts, resend=interchange.resend,
            replaces_delivery_id=interchange.replaces_delivery_id,
            resend_reason=resend_reason if interchange.resend else None, flatfile_records=rendered.records,
            endpoint=life.endpoint,
            usage=life.usage or (mapping.envelope.usage if feed.output.format == "x12-834" else None)))
    return {"run_id": ctx.run_id, "members": enrollment.member_count, "isa13": interchange.isa13}


def _render(ctx: RunContext, enrollment: Enrollment | None, action: str, interchange: Interchange,
            life: RunLifecycle | None = None, *, keep: bool = True, changes: Enrollment | None = None,
            parts: Iterable[Enrollment] | None = None) -> RenderedFile:
    """Render the feed's file under ``interchange``'s control numbers and allocation time. Kept (run
    folder and staging store) unless ``keep`` is False, when only its hash is wanted (an 834 or PDF
    resend's same-members check; a flat file's resend is its delivered bytes, never rendered again)."""
    pdf = ctx.bundle.feed.output.format == "pdf"
    rendered = render_file(ctx.bundle, enrollment, action=action, isa13=interchange.isa13, gs06=interchange.gs06,
                           st02=interchange.st02, created=interchange.created_at, day=ctx.ref.interval_start,
                           folder=ctx.run_dir, write=partial(_write_kept, ctx) if keep else hash_only,
                           pdf_prefix="" if keep else ".check.", changes=changes,
                           usage=life.usage if life is not None else None, marker=life.marker if life else "",
                           parts=parts)
    if pdf and keep:
        ctx.keep(rendered.path)  # the 834 and the flat file are kept as they are written
    elif pdf:
        rendered.path.unlink()
    return rendered


class _AcceptedParts:
    """The accepted census as the 834 view's parts, one family-whole chunk at a time
    (:func:`carrierfeeds.enrollment.build_enrollment_chunks`), each render reading them again.

    When the chunks cannot give the whole census's file (a chunk's families belong before an earlier
    chunk's: a family whose first census row the view leaves out, its rows far apart) or a chunk's data is
    refused (the whole census's build may name another row or rule first), the census is mapped whole
    instead, from then on: today's file, or today's error."""

    def __init__(self, path: Path, feed: Any, mapping: Any, as_of: date, *,
                 first_file: tuple[FeedBundle, tuple[str, ...]] | None = None) -> None:
        self.path, self.feed, self.mapping, self.as_of = path, feed, mapping, as_of
        #: A snapshot feed's first file (no snapshot yet): the bundle and validation's held-back members;
        #: each part is then the full audit file's slice (diff_for_day against nothing).
        self.first_file = first_file
        self.whole = False

    def parts(self, snapshot: SnapshotWriter | None = None) -> Iterator[Enrollment]:
        """The view's parts; for a first file each part's slice of the next snapshot goes to ``snapshot``."""
        from carrierfeeds.census.accepted import read_accepted, read_accepted_chunks
        from carrierfeeds.enrollment import build_enrollment, build_enrollment_chunks

        if self.whole:
            parts: Iterator[Enrollment] = iter([build_enrollment(read_accepted(self.path), self.feed, self.mapping,
                                                                 as_of=self.as_of)])
        else:
            parts = build_enrollment_chunks(read_accepted_chunks(self.path), self.feed, self.mapping,
                                            as_of=self.as_of)
        for part in parts:
            if self.first_file is None:
                yield part
                del part
                continue
            bundle, held = self.first_file
            change_set = diff_for_day(bundle, part, None, held_back=held, day=self.as_of, full_file=True)
            del part
            if snapshot is not None:
                snapshot.write(change_set.snapshot)
            enrollment = change_set.enrollment
            del change_set
            yield enrollment
            del enrollment

    def render(self, fn: Callable[[], _T]) -> _T:
        """``fn()`` (which reads :meth:`parts`); again from the whole census when the chunks fail (see the
        class)."""
        from carrierfeeds.enrollment import ChunksOutOfOrder

        try:
            return fn()
        except (ChunksOutOfOrder, DataError) as exc:
            if self.whole:
                raise
            log.warning("feed %s: the accepted census is mapped whole, not chunk by chunk (%s)",
                        self.feed.feed_id, type(exc).__name__)
            self.whole = True
            return fn()


def _render_parts(ctx: RunContext, source: _AcceptedParts, action: str, interchange: Interchange,
                  life: RunLifecycle | None = None, *, keep: bool = True) -> tuple[RenderedFile, Enrollment]:
    """The 834 rendered part by part (:func:`_render` with ``parts``) and the view's counts (an
    ``Enrollment`` whose table is empty); when ``keep``, the disclosure record gathered part by part and
    staged, as :func:`_render` and ``stage_disclosure_of`` do for a whole view."""
    import numpy as np

    from carrierfeeds.census.tokens import MemberTokenizer
    from carrierfeeds.enrollment import combine_enrollments
    from carrierfeeds.ledger.disclosures import MemberIndex
    from carrierfeeds.run.disclosure import disclosure_of, fields_present, member_entries, stage_disclosure

    tokenizer = MemberTokenizer.from_key_file(ctx.settings.resolved_token_key_file) if keep else None
    counts: list[Enrollment] = []
    fields: set[str] = set()
    entries: list[np.ndarray] = []  # the members' packed index entries, part by part

    def watched(parts: Iterator[Enrollment]) -> Iterator[Enrollment]:
        for part in parts:
            counts.append(combine_enrollments([part], tables=False))
            if tokenizer is not None:
                fields.update(fields_present(part))
                entries.append(MemberIndex.entries(*member_entries(part, tokenizer)))
            yield part
            del part  # not held while the next part is made

    def once() -> RenderedFile:
        for seen in (counts, fields, entries):
            seen.clear()
        if source.first_file is None or not keep:
            return _render(ctx, None, action, interchange, life, keep=keep, parts=watched(source.parts()))
        with snapshot_store(ctx).staging(ctx.feed_id, ctx.run_id, full_file=True) as snapshot:
            return _render(ctx, None, action, interchange, life, keep=keep,
                           parts=watched(source.parts(snapshot)))

    rendered = source.render(once)
    if tokenizer is not None:
        stage_disclosure(ctx, disclosure_of(ctx.settings, ctx.bundle, tuple(sorted(fields)),
                                            MemberIndex.from_entries(entries)))
    return rendered, combine_enrollments(counts, tables=False)


def _write_notice(ctx: RunContext, enrollment: Enrollment, rendered: RenderedFile, interchange: Interchange,
                  change_counts: dict[str, Any]) -> dict[str, str]:
    """The mapping's per-file notice (counts, control numbers, sha256; no member data) written beside the
    file in the run folder and kept in the staging store; its names and hashes, for the ledger's detail."""
    from carrierfeeds.outputs.notice import file_notice, notice_digest, notice_files

    feed, mapping = ctx.bundle.feed, ctx.bundle.mapping
    assert mapping.notice is not None  # noqa: S101 - the caller checks
    full = not change_counts or bool(change_counts.get("full_file"))
    by_type = {k[6:]: int(v) for k, v in change_counts.items() if k.startswith("ins03_")}
    lines = {k[5:]: int(v) for k, v in change_counts.items() if k.startswith("hd01_")}
    audit = mapping.full_file.maintenance_type
    notice = file_notice(
        feed_id=feed.feed_id, carrier=mapping.carrier_name, employer=feed.employer.name,
        file_name=rendered.file_name, file_format=rendered.format, sha256=rendered.sha256, size=rendered.size,
        isa13=interchange.isa13, gs06=interchange.gs06, st02=interchange.st02, interval_start=ctx.ref.interval_start,
        created=interchange.created_at, full_file=full, members=enrollment.member_count,
        subscribers=enrollment.subscriber_count,
        members_by_type=by_type or {audit: enrollment.member_count},
        coverages_by_type=lines if not full else {audit: enrollment.coverage_count},
        excluded=dict(enrollment.excluded))
    files = notice_files(mapping.notice, rendered.file_name, notice)
    for name, data in files:
        write_private(ctx.run_dir / name, [data])
        ctx.keep(ctx.run_dir / name, phi=False)
    return notice_digest(mapping.notice, files)


def _notice_names(ctx: RunContext) -> list[str]:
    """The run's per-file notices (PHI-free), kept in the staging store after the run like its state."""
    from carrierfeeds.outputs.notice import notice_names

    notice, built = ctx.bundle.mapping.notice, ctx.state().built
    return notice_names(notice, built.file_name) if notice is not None and built is not None else []


def _require_same_members(ctx: RunContext, enrollment: Enrollment | _AcceptedParts, action: str,
                          replaces: str | None, life: RunLifecycle | None = None, *,
                          changes: Enrollment | None = None) -> None:
    """Refuse a forced resend unless this census, rendered under the control numbers and time of the file
    it replaces, gives exactly that file's bytes (the renderer is deterministic: the payload hash decides)."""
    replaced = next((d for d in ctx.ledger.deliveries(feed_id=ctx.feed_id) if d.delivery_id == replaces), None)
    earlier = next((x for x in ctx.ledger.transmissions(ctx.run_id) if replaced is not None
                    and x.isa13 == replaced.isa13), None)
    if replaced is None or earlier is None:
        raise Refused("the delivery a forced resend replaces is not in the ledger",
                      details={"delivery_id": replaces})
    if isinstance(enrollment, _AcceptedParts):
        again = _render_parts(ctx, enrollment, action, earlier, life, keep=False)[0]
    else:
        again = _render(ctx, enrollment, action, earlier, life, keep=False, changes=changes)
    if again.sha256 != replaced.payload_sha256:
        raise Refused(
            f"a forced resend sends the delivered members again under new control numbers, but the census, "
            f"mapping or options (--full-file) of {ctx.ref.interval_start} no longer render the delivered file "
            f"(interchange {replaced.isa13}); a changed census belongs to the next interval",
            details={"delivery_id": replaced.delivery_id, "isa13": replaced.isa13})


def _write_kept(ctx: RunContext, path: Path, chunks: Iterable[bytes]) -> tuple[str, int]:
    """The rendered file written privately and atomically and kept in the staging store in one pass (its
    chunks encrypted from memory, hashed once); its sha256 and size."""
    with ctx.keeping(path) as out:
        for chunk in chunks:
            out.write(chunk)
    return out.sha256, out.size


def diff_for_day(bundle: FeedBundle, enrollment: Enrollment, base: pd.DataFrame | None, *,
                 held_back: Iterable[str], day: date, full_file: bool = False) -> ChangeSet:
    """The changes mode's diff of ``enrollment`` against ``base`` (the carrier's snapshot): a change file,
    or the full audit file (030) on demand, on the mapping's weekday, or when there is no snapshot yet,
    carrying over the families validation held back (``held_back``, the policy's member ids). Pure: the
    run stages its result, the preview only shows it."""
    from carrierfeeds.changes import diff_against_snapshot, is_full_file_day

    mapping = bundle.mapping
    held = set(held_back)
    full = full_file or base is None or is_full_file_day(day, mapping.full_file_weekday)
    return diff_against_snapshot(
        enrollment, base, as_of=day, term_policy=mapping.term_policy, term_end=mapping.term_end,
        retro_window_days=mapping.retro_window_days, held_back_members=held, full_file=full,
        plan_change=mapping.plan_change, pending_terms=mapping.mode == "changes")


#: The changes listed beside a PDF roster are not sent: no retro window limits what they show.
_LISTED_ONLY_RETRO_DAYS = 36_500


def roster_changes(bundle: FeedBundle, enrollment: Enrollment, base: pd.DataFrame | None, change_set: ChangeSet,
                   *, held_back: Iterable[str], day: date) -> Enrollment | None:
    """For a PDF roster (a full file of a ``pdf`` feed with a snapshot to compare), its changes since the
    last roster: the change file the same view would make against the same snapshot, listed for the
    clerk (:func:`carrierfeeds.outputs.pdf.render_fallback_pdf`); None otherwise. Pure: the same base
    gives the same list, so a rerun or a resend renders the same PDF."""
    from carrierfeeds.changes import diff_against_snapshot

    if bundle.feed.output.format != "pdf" or not change_set.full_file or base is None:
        return None
    mapping = bundle.mapping
    return diff_against_snapshot(
        enrollment, base, as_of=day, term_policy=mapping.term_policy, term_end=mapping.term_end,
        retro_window_days=_LISTED_ONLY_RETRO_DAYS, held_back_members=set(held_back), full_file=False,
        plan_change=mapping.plan_change).enrollment


def _diff_for_run(ctx: RunContext, census: pd.DataFrame, enrollment: Enrollment, *,
                  full_file: bool = False) -> tuple[Enrollment, str, dict[str, int], Enrollment | None]:
    """Diff against the last confirmed snapshot, stage the next one (advanced by confirm): the changes
    mode's change file, or a full file that carries over the families validation held back; and for a
    PDF roster, its changes since the last roster (:func:`roster_changes`)."""
    from carrierfeeds.changes import NoChanges
    from carrierfeeds.reconcile.correction import with_correction

    mapping = ctx.bundle.mapping
    store = snapshot_store(ctx)
    base = store.load_base(ctx.feed_id, ctx.run_id)
    # The members of families validation held back, as its policy named them: carried over untouched.
    held = json.loads(ctx.store.get_bytes(ctx.feed_id, ctx.ref.interval_start, HELD_BACK))
    change_set = diff_for_day(ctx.bundle, enrollment, base, held_back=held, day=ctx.ref.interval_start,
                              full_file=full_file)
    roster = roster_changes(ctx.bundle, enrollment, base, change_set, held_back=held, day=ctx.ref.interval_start)
    correction = _approved_correction(ctx, base, full_file=change_set.full_file)
    if change_set.empty and correction is None:
        _accept_census(ctx)  # the carrier holds all of it already: this census is done
        raise NoChanges("no changes against the last delivered snapshot; nothing to send",
                        details={"feed_id": ctx.feed_id})
    store.stage(ctx.feed_id, ctx.run_id, change_set.snapshot, full_file=change_set.full_file)
    ctx.save_state(snapshot_staged=True)
    counts = {f"ins03_{k}": v for k, v in change_set.members_by_type.items()}
    counts.update({f"hd01_{k}": v for k, v in change_set.coverages_by_type.items()},
                  carried_over=change_set.carried_over, full_file=int(change_set.full_file))
    action = mapping.full_file.bgn08 if change_set.full_file else "2"
    if correction is not None:
        counts.update(corrected_discrepancies=len(correction.discrepancy_ids))
        ctx.store.put_bytes(ctx.feed_id, ctx.ref.interval_start, CORRECTION, json.dumps(
            {"approval_id": correction.approval_id, "discrepancy_ids": correction.discrepancy_ids}).encode(),
            phi=False)
        return with_correction(change_set.enrollment, correction), action, counts, roster
    return change_set.enrollment, action, counts, roster


# --- reconciliation hook: an approved corrective file rides on the feed's next change file ---------------
#: What a run's change file corrects (approval id, discrepancy ids; no PHI), read by confirm.
CORRECTION = "correction.json"


def _sent_correction(ctx: RunContext) -> dict[str, Any]:
    """Confirm's half of the hook: the delivered file carried a correction, so its items are ``corrected``."""
    from carrierfeeds.reconcile.correction import mark_corrected

    if not ctx.store.exists(ctx.feed_id, ctx.ref.interval_start, CORRECTION):
        return {}
    sent = json.loads(ctx.store.get_bytes(ctx.feed_id, ctx.ref.interval_start, CORRECTION))
    mark_corrected(ctx.ledger, approval_id=sent["approval_id"], discrepancy_ids=sent["discrepancy_ids"],
                   run_id=ctx.run_id, now=ctx.now())
    return {"correction_of": sent["approval_id"], "corrected": len(sent["discrepancy_ids"])}


def _approved_correction(ctx: RunContext, base: pd.DataFrame | None, *, full_file: bool) -> RunCorrection | None:
    """The feed's approved, unsent correction (``carrierfeeds reconcile approve``), drawn against ``base``;
    None on a full file (it carries every member as the snapshot holds them: the correction is in it)."""
    from carrierfeeds.census.tokens import MemberTokenizer
    from carrierfeeds.reconcile.correction import correction_for_run

    if full_file:
        return None
    return correction_for_run(ctx.ledger, ctx.feed_id, base,
                              lambda: MemberTokenizer.from_key_file(ctx.settings.resolved_token_key_file))


def snapshot_store(ctx: RunContext) -> SnapshotStore:
    """The feed snapshots (encrypted at rest) under the data directory, keyed from the keys directory."""
    from carrierfeeds.changes import SnapshotStore

    return SnapshotStore.for_settings(ctx.settings)


def conformance(ctx: RunContext) -> dict[str, Any]:
    """The gate: a structural check of the whole file, and pyx12 on all of it or on a sample; gpg
    encrypts the file beside it, kept only if the gate passes (see _EncryptionAhead)."""
    with recorded_stage(ctx, "conformance") as detail, encryption_ahead(ctx) as ahead:
        result = run_gate(ctx, detail, before_state=ahead.settle)
        ahead.commit(detail)
    return result


def encrypt(ctx: RunContext) -> dict[str, Any]:
    """Encrypt the checked 834 to the pinned carrier key, signed with ours; refuse any unfit key.

    A ciphertext already made for this payload under the same pins and options (by the conformance stage, which
    encrypts ahead while it checks, or by an interrupted attempt of this one) is checked and used instead.
    """
    from carrierfeeds.crypto import Keyring

    spec = ctx.bundle.feed.encryption
    with recorded_stage(ctx, "encrypt") as detail:
        state = ctx.state()
        if state.gate is None or state.gate.conformance != "passed":
            raise ConformanceFailed("the file has not passed the conformance gate")
        keyring = Keyring(ctx.settings.resolved_gnupg_home)
        keyring.require_recipient(spec.recipient_fingerprint, now=ctx.now(), warning_days=spec.expiry_warning_days,
                                  user_id=spec.recipient_user_id, encryption_subkey=spec.recipient_encryption_subkey)
        built, made = state.build, state.encrypted
        cipher_name = built.file_name + spec.suffix
        earlier = (ctx.fetch(cipher_name) if made is not None and made.cipher_name == cipher_name and
                   made.encrypted_payload == built.payload_sha256 and
                   (made.encrypted_under or made_under(spec)) == made_under(spec) and
                   ctx.store.exists(ctx.feed_id, ctx.ref.interval_start, cipher_name) else None)
        if earlier is not None and made is not None and sha256_file(earlier) == made.ciphertext_sha256:
            # A retry sends the very bytes an interrupted attempt may already have put on the far side;
            # the first attempt finds what the conformance stage made beside its checks.
            detail.update(reused=True, ciphertext_sha256=made.ciphertext_sha256, bytes=earlier.stat().st_size,
                          recipient_fingerprint=spec.recipient_fingerprint,
                          **({"encrypted_in": "conformance"} if made.encrypted_ahead else {}))
            return {"run_id": ctx.run_id, "bytes": earlier.stat().st_size, "reused": True}
        encrypted = encrypt_to_pins(ctx, ctx.fetch(built.file_name), ctx.run_dir / cipher_name,
                                    built.payload_sha256)
        detail.update(ciphertext_sha256=encrypted.sha256, bytes=encrypted.size,
                      recipient_fingerprint=spec.recipient_fingerprint)
        keep_ciphertext(ctx, encrypted, payload_sha256=built.payload_sha256, ahead=False)
    return {"run_id": ctx.run_id, "bytes": encrypted.size}


def deliver(ctx: RunContext, *, transport: Transport | None = None,
            force_reason: str | None = None) -> dict[str, Any]:
    """Send the ciphertext exactly once: intent row, upload (atomic on the far side), outcome row.

    One delivery of a run at a time: the stage holds the run's delivery lock (``Ledger.delivery_lock``)
    from its first look at the ledger to its outcome row, so a second worker (or a CLI rerun beside
    Airflow) waits, then finds the file delivered and sends nothing. A forced resend built by
    ``build(resend_reason=...)`` is a delivery of its own: its own control numbers and name, outcome
    ``forced_resend`` with the person's reason, linked in the ledger to the delivery it replaces.
    """
    with recorded_stage(ctx, "deliver") as detail, ctx.ledger.delivery_lock(ctx.feed_id, ctx.ref.interval_start):
        return deliver_once(ctx, detail, transport=transport, force_reason=force_reason)


def confirm(ctx: RunContext) -> RunSummary:
    """Close the run: census recorded as processed (an SFTP original moved through ``ctx.connections``),
    the mapping's per-file notice sent to the carrier once the file is with it (``run.notices``; a notice
    that fails is recorded and alerted, never undoing the delivery), final status in the ledger,
    plaintext removed from the staging folder."""
    with recorded_stage(ctx, "confirm") as detail:
        state = ctx.state()
        if state.delivery is None or not state.delivery.delivered:
            raise PermanentError("nothing was delivered for this run")
        status = ("already_delivered" if state.delivery.already_delivered else
                  "pending_handoff" if ctx.bundle.feed.delivery.kind == "manual" else "delivered")
        summary = _summary(ctx, status)
        if state.snapshot_staged:
            # Only now does the carrier hold what this run sent; a failed delivery never gets here.
            # False: an acknowledgment already rejected this run and put the snapshot back.
            detail.update(snapshot_advanced=snapshot_store(ctx).advance(ctx.feed_id, ctx.run_id))
        # Only now has the census an outcome; a move that fails is retried by running confirm again.
        detail.update(census_moved=_accept_census(ctx))
        detail.update(_sent_correction(ctx))
        if status != "pending_handoff":
            # After the delivery, never before: a refused or failed run sends no notice, and a notice that
            # fails is recorded and alerted without undoing the delivered file (see run.notices).
            from carrierfeeds.run.notices import send_run_notices

            detail.update({f"notice_{channel}": done for channel, done in send_run_notices(ctx).items()})
        ctx.ledger.finish_run(ctx.run_id, status, now=ctx.now(), counts=state.counts)
        detail.update(removed=purge_plaintext(ctx))
    return summary


def purge_plaintext(ctx: RunContext) -> int:
    """End of a run: scratch wiped, and the staging store keeps only the state and the ciphertext.

    The employer's own file stays in its source folder for reprocessing; a retry re-stages from there.
    """
    from carrierfeeds.staging import StagingTampered, StagingUnsealed

    try:
        made = ctx.state().encrypted
        cipher = made.cipher_name if made is not None else None
    except (StagingTampered, StagingUnsealed):
        # A state that does not open names nothing to keep or to remove: the store is left for people to
        # look at (its member data stays sealed; retention removes it in time).
        log.warning("feed %s run %s: the staged state does not open; the staging store is left as it is",
                    ctx.feed_id, ctx.run_id)
        return wipe_scratch(ctx)
    keep = tuple(n for n in (STATE, cipher, *_notice_names(ctx)) if n)
    return wipe_scratch(ctx) + ctx.store.remove_run(ctx.feed_id, ctx.ref.interval_start, keep=keep)


def _summary(ctx: RunContext, status: str, error: CarrierFeedsError | None = None) -> RunSummary:
    from carrierfeeds.staging import StagingTampered, StagingUnsealed

    try:
        state = ctx.state()
    except (StagingTampered, StagingUnsealed):
        state = RunState()  # the error already says why; a summary never repeats what the state would claim
    counts, built, made = state.counts, state.built, state.encrypted
    return RunSummary(
        run_id=ctx.run_id, feed_id=ctx.feed_id, interval_start=ctx.ref.interval_start.isoformat(),
        status=status, members=counts.get("members", 0), subscribers=counts.get("subscribers", 0),
        coverages=counts.get("coverages", 0), file_name=made.cipher_name if made else None,
        payload_sha256=built.payload_sha256 if built else None,
        ciphertext_sha256=made.ciphertext_sha256 if made else None, isa13=built.isa13 if built else None,
        remote_path=state.delivery.remote_path if state.delivery else None,
        validation=state.validated.validation if state.validated else {}, error=error.as_dict() if error else None,
        endpoint=(built.endpoint or "production") if built else None)


def end_run(ctx: RunContext, exc: CarrierFeedsError) -> RunSummary:
    """Record how a failed run ended and remove its plaintext; a retry re-stages from the source."""
    status = status_for(exc)
    ctx.ledger.finish_run(ctx.run_id, status, now=ctx.now(), error_code=exc.code, message=exc.message[:500])
    if status == "no_new_census":  # past the feed's window this is late or missing, never silent
        from carrierfeeds.ops.arrival import check_quietly

        check_quietly(ctx.settings, ctx.bundle, ctx.now(), ledger=ctx.ledger, connections=ctx.connections)
    if isinstance(exc, TransientError):
        wipe_scratch(ctx)  # what a retry needs stays in the staging store, encrypted
    else:
        purge_plaintext(ctx)
    return _summary(ctx, status, exc)


def run_feed(settings: Settings, ref: RunRef, *, clock: Callable[[], datetime], actor: str,
             census_path: Path | None = None, transport: Transport | None = None,
             force_reason: str | None = None, full_file: bool = False, force_census: bool = False) -> RunSummary:
    """Every stage in order, in one process; ends in a recorded state whatever happens, and the ledger's
    head is then anchored outside the database (``ledger.anchor``)."""
    ctx = open_run(settings, ref, clock=clock, actor=actor)

    def stages() -> RunSummary:
        stage_census(ctx, census_path, force=force_census)
        validate(ctx)
        build(ctx, full_file=full_file, resend_reason=force_reason)
        conformance(ctx)
        encrypt(ctx)
        deliver(ctx, transport=transport, force_reason=force_reason)
        return confirm(ctx)

    return run_to_a_recorded_end(ctx, stages)


def run_to_a_recorded_end(ctx: RunContext, stages: Callable[[], RunSummary]) -> RunSummary:
    """Call ``stages`` (a run's stages in order, ending with confirm); whatever happens the run ends in a
    recorded state with its plaintext gone, and the ledger's head is then anchored outside the database."""
    try:
        return stages()
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
