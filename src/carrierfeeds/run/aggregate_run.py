"""The run of a carrier aggregator's file: each employer's own run stages and validates its census, one
aggregate run builds, gates, encrypts and delivers the one file exactly once, then each employer's run
records its share of the delivery.

Identity (no ledger schema change): the aggregate's run is keyed (mapping id, interval), so its feed id
in the ledger, the staging store and its delivery row is the mapping id (a feed may not take a mapping
id as its own: :func:`open_aggregate` refuses it). Each employer keeps its own run, keyed (its feed id,
interval), as its own feed's run would be: its census index, findings, snapshot and authorisation stay
per employer. The stages, in order:

1. :func:`stage_employers`: each employer's ``stage_census`` and ``validate`` (run.stages), unchanged. An
   employer with no census tonight is left out (``no_census``); one whose census is rejected is left
   out (``census_rejected``) under ``on_employer_failure: isolate`` and its run ends ``rejected``; under
   ``reject_all`` the whole file is refused (:class:`~carrierfeeds.errors.Refused`) and every employer run
   still open ends ``refused`` with that reason. Any other failure fails the aggregate (fail closed: a
   file is never sent without an employer because of an outage; the retry sends it whole).
2. :func:`build_aggregate_file` (the aggregate's ``build`` stage): per employer its authorisation and
   lifecycle, its view and, where its mapping keeps one, its next snapshot staged under its own run; the
   file's control numbers allocated once (the aggregate's run), one ST per employer rendered
   (``x12.render.render_834_employers``) under the numbers' allocation time, so a retry renders the same
   bytes; the disclosure staged for deliver; the PHI-free account (which employer is which ST02, its
   counts and disclosed fields) staged for confirm. Left-out employers' runs end here with their own
   outcome (``nothing_to_send``: census recorded as processed; ``not_authorized``: ``refused``, census
   waiting).
3. ``conformance``, ``encrypt`` and ``deliver`` of run.stages on the aggregate's run, unchanged: one
   delivery row (unique on mapping id, interval, payload hash), the rename marker, reconciliation.
4. :func:`confirm_aggregate`: each included employer's run records a ``deliver`` stage naming the
   aggregate's run and delivery, its ST02(s), ISA13, counts and the fields it disclosed, then its
   ``confirm`` (snapshot advanced, census recorded as processed) and ends ``delivered``; then the
   aggregate's run ends.

Disclosures: the delivery's ``disclosures`` row is the file's (every member's token and INS03 code, the
union of the fields the file carries, the shared mapping; the feed, schema and suite hashes are those of
the employers' files hashed together in feed-id order); each employer's own fields (``disclosed_<field>``),
its member count and its feed, schema and suite hashes are in its run's ``deliver`` stage detail.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Collection, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carrierfeeds.errors import CarrierFeedsError, ConfigError, DataError, NotAuthorized, Refused
from carrierfeeds.files import write_private
from carrierfeeds.outcomes import RunStatus
from carrierfeeds.run.context import (
    ACCEPTED,
    HELD_BACK,
    RunContext,
    RunRef,
    open_run,
    recorded_stage,
    wipe_scratch,
)
from carrierfeeds.run.state import BuildState
from carrierfeeds.settings import FeedBundle, Settings, open_ledger, open_store

if TYPE_CHECKING:
    from carrierfeeds.credentials import Connections
    from carrierfeeds.enrollment import Enrollment
    from carrierfeeds.ledger.disclosures import Disclosure
    from carrierfeeds.run.stages import RunSummary
    from carrierfeeds.staging import StagingStore
    from carrierfeeds.transport.base import Transport
    from carrierfeeds.x12.envelope import TransactionHeader

log = logging.getLogger(__name__)

#: The aggregate build's PHI-free account (JSON), staged for confirm: employers, their ST02s and counts.
ACCOUNT = "aggregate.json"
#: The aggregate's own stages after the employers' (names the ledger records on the aggregate's run).
AGGREGATE_STAGES = ("build", "conformance", "encrypt", "deliver", "confirm")
#: Why an employer is left out, by the status its own run ended with at staging or validation.
_LEFT_OUT_BY_STATUS: dict[str, str] = {RunStatus.NO_NEW_CENSUS: "no_census", RunStatus.REJECTED: "census_rejected"}


@dataclass
class AggregateRun:
    """The aggregate's run (``ctx``; feed id = the mapping id) and each employer's run, in feed-id order."""

    mapping_id: str
    ctx: RunContext
    employers: list[RunContext]
    #: feed id -> why it is left out, as staging and validation found it in this process.
    left_out: dict[str, str] = field(default_factory=dict)

    @property
    def policy(self) -> str:
        aggregation = self.ctx.bundle.mapping.aggregation
        return aggregation.on_employer_failure if aggregation is not None else "isolate"

    def employer(self, feed_id: str) -> RunContext:
        return next(e for e in self.employers if e.feed_id == feed_id)


@dataclass(frozen=True)
class AggregateSummary:
    """What an aggregate run did, PHI-free: the aggregate's own summary and each employer's outcome."""

    run: RunSummary
    employers: tuple[dict[str, Any], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {**self.run.as_dict(), "mapping_id": self.run.feed_id, "employers": list(self.employers)}


def aggregate_bundle(bundles: list[FeedBundle]) -> FeedBundle:
    """The aggregate run's bundle: the first employer's (the recipient key, signer, delivery target, format,
    schedule and time zone every employer shares; checked by ``aggregate_bundles``) under the mapping id.
    Nothing employer-specific of it is read by the aggregate's stages."""
    first = bundles[0]
    return replace(first, feed=first.feed.model_copy(update={"feed_id": first.mapping.mapping_id}))


def open_aggregate(settings: Settings, mapping_id: str, day: date, *, clock: Callable[[], datetime], actor: str,
                   store: StagingStore | None = None, connections: Connections | None = None,
                   ephemeral: bool = False) -> AggregateRun:
    """Find or start the aggregate's run for (mapping, day) and each employer's run for (feed, day)."""
    from carrierfeeds.run.aggregate import aggregate_bundles

    bundles = aggregate_bundles(settings, mapping_id)
    clash = [b.feed.feed_id for b in bundles if b.feed.feed_id == mapping_id]
    if clash or (settings.feeds_dir / f"{mapping_id}.yaml").exists():
        raise ConfigError(f"a feed is named {mapping_id!r} like the aggregation mapping: the aggregate's run "
                          "takes the mapping id as its feed id; rename the feed", field="feed_id")
    ledger = open_ledger(settings)
    store = store or open_store(settings)

    def opened(ref: RunRef, bundle: FeedBundle) -> RunContext:
        return open_run(settings, ref, clock=clock, actor=actor, ledger=ledger, bundle=bundle, store=store,
                        ephemeral=ephemeral, connections=connections)

    ctx = opened(RunRef.for_day(mapping_id, day), aggregate_bundle(bundles))
    employers = [opened(RunRef.for_day(b.feed.feed_id, day), b) for b in bundles]
    return AggregateRun(mapping_id=mapping_id, ctx=ctx, employers=employers)


# ------------------------------------------------------------------------------------------------ stages
def stage_employers(agg: AggregateRun, censuses: Mapping[str, Path] | None = None, *,
                    force: bool = False) -> dict[str, Any]:
    """Each employer's ``stage_census`` and ``validate`` under its own run (``censuses``: feed id -> an
    explicit census file, else the feed's source). Left out by reason as the module docstring says."""
    from carrierfeeds.census.sources import NoNewCensus
    from carrierfeeds.run.stages import end_run, stage_census, validate

    censuses = dict(censuses or {})
    stray = sorted(set(censuses) - {e.feed_id for e in agg.employers})
    if stray:
        raise ConfigError(f"feed(s) {stray} do not name mapping {agg.mapping_id!r}", field="census")
    validated = []
    for ectx in agg.employers:
        try:
            stage_census(ectx, censuses.get(ectx.feed_id), force=force)
            validate(ectx)
        except NoNewCensus as exc:
            end_run(ectx, exc)
            agg.left_out[ectx.feed_id] = "no_census"
            continue
        except DataError as exc:
            # No file tonight is the employer's own business; a census it sent that is refused is the file's.
            missing = exc.rule == "no_census"
            end_run(ectx, exc)
            agg.left_out[ectx.feed_id] = "no_census" if missing else "census_rejected"
            if not missing and agg.policy == "reject_all":
                raise _refused_whole(agg, ectx.feed_id, exc) from None
            continue
        validated.append(ectx.feed_id)
    return {"run_id": agg.ctx.run_id, "validated": len(validated), "left_out": len(agg.left_out)}


def _refused_whole(agg: AggregateRun, feed_id: str, exc: CarrierFeedsError) -> Refused:
    return Refused(f"carrier file {agg.mapping_id} refused (on_employer_failure: reject_all): employer feed "
                   f"{feed_id} {exc.code}", details={"feed_id": feed_id, "reason": exc.code})


@dataclass
class _Included:
    ctx: RunContext
    enrollment: Enrollment
    action: str
    counts: dict[str, int]


def build_aggregate_file(agg: AggregateRun, *, full_file: bool = False) -> dict[str, Any]:
    """The aggregate's ``build`` stage: every validated employer's view (and next snapshot, staged under its
    own run), the file rendered under control numbers allocated once, its disclosure and account staged.
    Raises NoChanges when no employer has anything to send."""
    from carrierfeeds.census.accepted import read_accepted
    from carrierfeeds.changes import NoChanges, keeps_snapshot
    from carrierfeeds.enrollment import build_enrollment
    from carrierfeeds.lifecycle import LifecycleRefused, plan_run
    from carrierfeeds.run.aggregate import EmployerPart, employer_header
    from carrierfeeds.run.stages import diff_for_day, snapshot_store

    ctx, mapping, day = agg.ctx, agg.ctx.bundle.mapping, agg.ctx.ref.interval_start
    with recorded_stage(ctx, "build") as detail:
        account: list[EmployerPart] = []
        included: list[_Included] = []
        settle: list[tuple[RunContext, CarrierFeedsError]] = []
        for ectx in agg.employers:
            feed = ectx.bundle.feed
            part = EmployerPart(feed_id=feed.feed_id, employer_id=feed.employer.id, status="included")
            account.append(part)
            state = ectx.state()
            record = ctx.ledger.get_run(ectx.run_id)
            if not state.census_validated or record is None or record.status != RunStatus.RUNNING:
                part.status = "left_out"
                part.reason = agg.left_out.get(feed.feed_id) or _LEFT_OUT_BY_STATUS.get(
                    record.status if record is not None else "", "no_census")
                continue
            ctx.ledger.record_authorisation(
                feed_id=feed.feed_id, employer_id=feed.employer.id, carrier_id=feed.carrier.id,
                plans=feed.authorization.plans, effective_from=feed.authorization.effective_from,
                effective_to=feed.authorization.effective_to, recorded_by=ctx.actor, now=ctx.now(),
                reference=feed.authorization.reference)
            if not feed.authorization.covers(day):
                refused = NotAuthorized(f"employer {feed.employer.id} has not authorised carrier {feed.carrier.id} "
                                        f"for {day.isoformat()}", details={"feed_id": feed.feed_id})
                if agg.policy == "reject_all":
                    from carrierfeeds.run.stages import end_run

                    end_run(ectx, refused)
                    raise _refused_whole(agg, feed.feed_id, refused)
                part.status, part.reason = "left_out", refused.code
                settle.append((ectx, refused))
                continue
            try:
                life = plan_run(ctx.ledger, feed, mapping, day=day, run_id=ectx.run_id, actor=ctx.actor, now=ctx.now())
                if life.endpoint != "production":
                    # One file goes to the carrier's one target: a test file of one employer is not built here.
                    raise LifecycleRefused(f"employer feed {feed.feed_id} is {life.state}: an aggregated file goes "
                                           "only to the production target, with every employer in production or "
                                           "unmanaged", details={"feed_id": feed.feed_id, "state": life.state})
                census = read_accepted(ectx.fetch(ACCEPTED))
                enrollment = build_enrollment(census, feed, mapping, as_of=day)
                del census
                action: str = mapping.full_file.bgn08
                counts: dict[str, int] = {}
                if keeps_snapshot(mapping.mode, feed.validation.policy, eoi_hold=mapping.volumes.eoi_hold):
                    store = snapshot_store(ectx)
                    base = store.load_base(feed.feed_id, ectx.run_id)
                    held = json.loads(ectx.store.get_bytes(feed.feed_id, day, HELD_BACK))
                    change_set = diff_for_day(ectx.bundle, enrollment, base, held_back=held, day=day,
                                              full_file=full_file or life.full_file or mapping.mode == "full")
                    if change_set.empty:
                        part.status, part.reason = "left_out", "nothing_to_send"
                        settle.append((ectx, NoChanges("no changes against the last delivered snapshot",
                                                       details={"feed_id": feed.feed_id})))
                        continue
                    store.stage(feed.feed_id, ectx.run_id, change_set.snapshot, full_file=change_set.full_file)
                    ectx.save_state(snapshot_staged=True)
                    enrollment = change_set.enrollment
                    action = mapping.full_file.bgn08 if change_set.full_file else "2"
                    counts = {f"ins03_{k}": int(v) for k, v in change_set.members_by_type.items()}
                if enrollment.member_count == 0:
                    part.status, part.reason = "left_out", "nothing_to_send"
                    settle.append((ectx, NoChanges("nothing to send", details={"feed_id": feed.feed_id})))
                    continue
                counts = counts or {f"ins03_{mapping.full_file.maintenance_type}": enrollment.member_count}
                part.members = enrollment.member_count
                part.members_by_type = {k[6:]: v for k, v in counts.items()}
                included.append(_Included(ectx, enrollment, action, counts))
            except DataError as exc:
                # The employer's own data (a change before the carrier's retro window, a value the build
                # refuses): left out like a rejected census, or the whole file refused under reject_all.
                from carrierfeeds.run.stages import end_run

                if agg.policy == "reject_all":
                    end_run(ectx, exc)
                    raise _refused_whole(agg, feed.feed_id, exc) from None
                part.status, part.reason = "left_out", "census_rejected"
                settle.append((ectx, exc))
        _settle_left_out(settle)
        detail.update(employers=len(account), included=len(included),
                      **{f"left_out_{r}": sum(p.reason == r for p in account) for r in
                         sorted({p.reason for p in account if p.reason})})
        if not included:
            raise NoChanges(f"no employer of carrier file {agg.mapping_id} has anything to send",
                            details={"feed_id": agg.mapping_id})
        interchange = ctx.ledger.allocate_control_numbers(
            run_id=ctx.run_id, sender_id=mapping.envelope.sender_id, receiver_id=mapping.envelope.receiver_id,
            now=ctx.now())
        parts = [(i.enrollment, employer_header(i.ctx.bundle, position=k, isa13=interchange.isa13,
                                                created=interchange.created_at, action=i.action))
                 for k, i in enumerate(included, start=1)]
        st02s = _st02s(parts, interchange.st02)
        file_name, sha256, size = _render(ctx, parts, interchange)
        disclosures = _stage_disclosure(ctx, included)
        entries = []
        for inc, numbers, disclosed in zip(included, st02s, disclosures, strict=True):
            entries.append({"feed_id": inc.ctx.feed_id, "run_id": inc.ctx.run_id, "st02": numbers,
                            "members": inc.enrollment.member_count, "subscribers": inc.enrollment.subscriber_count,
                            "coverages": inc.enrollment.coverage_count, **inc.counts,
                            "disclosed_fields": list(disclosed.fields), "feed_sha256": disclosed.feed_sha256,
                            "schema_sha256": disclosed.schema_sha256, "suite_sha256": disclosed.suite_sha256})
        ctx.store.put_bytes(ctx.feed_id, day, ACCOUNT, json.dumps(
            {"employers": [asdict(p) for p in account], "included": entries}, sort_keys=True).encode(), phi=False)
        notice = _write_notice(ctx, account, parts, file_name, sha256, size, interchange.isa13, interchange.created_at)
        by_type: dict[str, int] = {}
        for inc in included:
            for k, v in inc.counts.items():
                by_type[k] = by_type.get(k, 0) + v
        counts = {"members": sum(i.enrollment.member_count for i in included),
                  "subscribers": sum(i.enrollment.subscriber_count for i in included),
                  "coverages": sum(i.enrollment.coverage_count for i in included), **by_type}
        # Which employer's run each ST02 is: the ack matcher reverts the snapshot of a rejected set's employer.
        detail.update(counts, isa13=interchange.isa13, payload_sha256=sha256, bytes=size, file_name=file_name,
                      transaction_sets=sum(len(n) for n in st02s), **notice,
                      **{f"st02_{n:04d}": inc.ctx.run_id for inc, numbers in zip(included, st02s, strict=True)
                         for n in numbers})
        ctx.save_state(built=BuildState(
            file_name=file_name, payload_sha256=sha256, payload_bytes=size, isa13=interchange.isa13,
            gs06=interchange.gs06, st02=interchange.st02, counts=counts, endpoint="production",
            usage=mapping.envelope.usage))
    return {"run_id": ctx.run_id, "members": counts["members"], "isa13": interchange.isa13,
            "employers": len(included)}


def _settle_left_out(settle: list[tuple[RunContext, CarrierFeedsError]]) -> None:
    """End the runs of employers the build left out, each with its own outcome: nothing to send records
    its census as processed (the carrier holds all of it); not authorised leaves it waiting."""
    from carrierfeeds.changes import NoChanges
    from carrierfeeds.run.stages import _accept_census, end_run

    for ectx, outcome in settle:
        if isinstance(outcome, NoChanges):
            _accept_census(ectx)
        end_run(ectx, outcome)


def _st02s(parts: list[tuple[Enrollment, TransactionHeader]], st02: int) -> list[list[int]]:
    """Each employer's ST02s as the renderer numbers them (``x12.render.set_numbers`` across the file)."""
    from carrierfeeds.enrollment import member_starts
    from carrierfeeds.x12.envelope import ControlNumbers
    from carrierfeeds.x12.render import set_numbers, split_transaction_sets

    sizes = [len(split_transaction_sets(e.table, member_starts(e.table), e.options.max_members_per_transaction))
             for e, _ in parts]
    numbers = [int(n) for n in set_numbers(ControlNumbers(isa13=st02, gs06=st02, st02=st02), sum(sizes))]
    out, at = [], 0
    for n in sizes:
        out.append(numbers[at:at + n])
        at += n
    return out


def _render(ctx: RunContext, parts: list[tuple[Enrollment, TransactionHeader]],
            interchange: Any) -> tuple[str, str, int]:
    """The file, written to the run folder and kept in the staging store in one pass; name, sha256, size."""
    from carrierfeeds.x12.envelope import ControlNumbers, Delimiters
    from carrierfeeds.x12.render import render_834_employers

    mapping, day = ctx.bundle.mapping, ctx.ref.interval_start
    file_name = mapping.file_name.format(
        sender=mapping.envelope.sender_id.strip(), receiver=mapping.envelope.receiver_id.strip(),
        isa13=f"{interchange.isa13:09d}", date=day.strftime("%Y%m%d"), feed=mapping.mapping_id)
    control = ControlNumbers(isa13=interchange.isa13, gs06=interchange.gs06, st02=interchange.st02)
    with ctx.keeping(ctx.run_dir / file_name) as out:
        for chunk in render_834_employers(parts, control, Delimiters()):
            out.write(chunk)
    return file_name, out.sha256, out.size


def _combined(hashes: Collection[str]) -> str:
    """One sha256 standing for several config files' (the employers', in feed-id order): the one itself
    when they are all the same file."""
    distinct = list(dict.fromkeys(hashes))
    if len(distinct) == 1:
        return distinct[0]
    return hashlib.sha256("\n".join(distinct).encode()).hexdigest()


def _stage_disclosure(ctx: RunContext, included: list[_Included]) -> list[Disclosure]:
    """Each employer's disclosure (returned, for its account entry) and the file's (staged for deliver):
    every member's token and code, the union of the fields, the employers' config hashes combined."""
    from carrierfeeds.census.tokens import MemberTokenizer
    from carrierfeeds.ledger.disclosures import Disclosure, MemberIndex
    from carrierfeeds.run.disclosure import disclosure_for, member_entries, stage_disclosure

    tokenizer = MemberTokenizer.from_key_file(ctx.settings.resolved_token_key_file)
    each = [disclosure_for(ctx.settings, i.ctx.bundle, i.enrollment, tokenizer) for i in included]
    tokens: list[str] = []
    codes: list[str] = []
    for inc in included:
        t, c = member_entries(inc.enrollment, tokenizer)
        tokens += t
        codes += c
    stage_disclosure(ctx, Disclosure(
        allowlist=each[0].allowlist, fields=tuple(sorted({f for d in each for f in d.fields})),
        feed_sha256=_combined([d.feed_sha256 for d in each]), mapping_sha256=each[0].mapping_sha256,
        schema_sha256=_combined([d.schema_sha256 for d in each]),
        suite_sha256=_combined([d.suite_sha256 for d in each]), members=MemberIndex.pack(tokens, codes)))
    return each


def _write_notice(ctx: RunContext, account: list[Any], parts: list[tuple[Enrollment, TransactionHeader]],
                  file_name: str, sha256: str, size: int, isa13: int, created: datetime) -> dict[str, str]:
    """The mapping's per-file notice beside the file, kept in the staging store; its names and hashes."""
    mapping = ctx.bundle.mapping
    if mapping.notice is None:
        return {}
    from carrierfeeds.outputs.notice import notice_digest, notice_files
    from carrierfeeds.run.aggregate import aggregate_notice

    notice = aggregate_notice(mapping, account, parts, file_name=file_name, sha256=sha256, size=size, isa13=isa13,
                              interval_start=ctx.ref.interval_start, created=created)
    files = notice_files(mapping.notice, file_name, notice)
    for name, data in files:
        write_private(ctx.run_dir / name, [data])
        ctx.keep(ctx.run_dir / name, phi=False)
    return notice_digest(mapping.notice, files)


def read_account(ctx: RunContext) -> dict[str, Any]:
    """The account the aggregate's build staged (PHI-free): ``employers`` and ``included``."""
    account: dict[str, Any] = json.loads(ctx.store.get_bytes(ctx.feed_id, ctx.ref.interval_start, ACCOUNT))
    return account


def confirm_aggregate(agg: AggregateRun) -> AggregateSummary:
    """Close the aggregate: each included employer's run records its ``deliver`` (the aggregate's run and
    delivery ids, its ST02s, counts, fields disclosed) and ``confirm`` (snapshot advanced, census recorded
    as processed) and ends as the aggregate does; then the aggregate's run ends, plaintext removed."""
    from carrierfeeds.errors import PermanentError
    from carrierfeeds.run.stages import _accept_census, _summary, purge_plaintext, snapshot_store

    ctx = agg.ctx
    with recorded_stage(ctx, "confirm") as detail:
        state = ctx.state()
        if state.delivery is None or not state.delivery.delivered:
            raise PermanentError("nothing was delivered for this run")
        built = state.build
        status = (RunStatus.ALREADY_DELIVERED if state.delivery.already_delivered else
                  RunStatus.PENDING_HANDOFF if ctx.bundle.feed.delivery.kind == "manual" else RunStatus.DELIVERED)
        delivery = ctx.ledger.find_delivery(feed_id=ctx.feed_id, interval_start=ctx.ref.interval_start,
                                            payload_sha256=built.payload_sha256)
        if delivery is None:
            raise PermanentError("the ledger holds no delivery of this file", details={"run_id": ctx.run_id})
        account = read_account(ctx)
        for entry in account["included"]:
            ectx = agg.employer(entry["feed_id"])
            with recorded_stage(ectx, "deliver") as share:
                share.update(aggregate_run_id=ctx.run_id, delivery_id=delivery.delivery_id, isa13=built.isa13,
                             st02=entry["st02"][0], transaction_sets=len(entry["st02"]),
                             **{k: entry[k] for k in ("members", "subscribers", "coverages")},
                             **{k: v for k, v in entry.items() if k.startswith("ins03_")},
                             feed_sha256=entry["feed_sha256"], schema_sha256=entry["schema_sha256"],
                             suite_sha256=entry["suite_sha256"],
                             **{f"disclosed_{f}": True for f in entry["disclosed_fields"]})
            with recorded_stage(ectx, "confirm") as closing:
                if ectx.state().snapshot_staged:
                    closing.update(snapshot_advanced=snapshot_store(ectx).advance(ectx.feed_id, ectx.run_id))
                closing.update(census_moved=_accept_census(ectx))
                ctx.ledger.finish_run(ectx.run_id, status, now=ctx.now(), counts={
                    k: v for k, v in entry.items() if isinstance(v, int) and not isinstance(v, bool)})
                closing.update(removed=purge_plaintext(ectx))
        if status != RunStatus.PENDING_HANDOFF:
            # The file's per-file notice to the carrier, as a feed's confirm sends it (run.notices).
            from carrierfeeds.run.notices import send_run_notices

            detail.update({f"notice_{channel}": done for channel, done in send_run_notices(ctx).items()})
        summary = _summary(ctx, status)
        ctx.ledger.finish_run(ctx.run_id, status, now=ctx.now(), counts=state.counts)
        detail.update(employers=len(account["included"]), delivery_id=delivery.delivery_id,
                      removed=purge_plaintext(ctx))
    return AggregateSummary(summary, employer_outcomes(agg, account))


def employer_outcomes(agg: AggregateRun, account: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], ...]:
    """Each employer's run and how it ended (the ledger's word), with its ST02s when it is in the file."""
    included = {e["feed_id"]: e for e in (account or {}).get("included", [])}
    out = []
    for ectx in agg.employers:
        record = agg.ctx.ledger.get_run(ectx.run_id)
        finished = [e for e in agg.ctx.ledger.run_events(ectx.run_id) if e.kind == "run_finished"]
        entry = included.get(ectx.feed_id)
        out.append({"feed_id": ectx.feed_id, "run_id": ectx.run_id,
                    "status": record.status if record is not None else None,
                    "error_code": finished[-1].error_code if finished else None,
                    "st02": entry["st02"] if entry else [], "members": entry["members"] if entry else 0})
    return tuple(out)


def end_aggregate(agg: AggregateRun, exc: CarrierFeedsError) -> AggregateSummary:
    """The aggregate failed or had nothing to send: its run ends so, and so does every employer run still
    open (a file never went out with them; their census waits for the retry or the next night)."""
    from carrierfeeds.run.stages import end_run

    summary = end_run(agg.ctx, exc)
    for ectx in agg.employers:
        record = agg.ctx.ledger.get_run(ectx.run_id)
        if record is not None and record.status == RunStatus.RUNNING:
            end_run(ectx, exc)
    return AggregateSummary(summary, employer_outcomes(agg))


def aggregate_stages(agg: AggregateRun, *, censuses: Mapping[str, Path] | None = None,
                     transport: Transport | None = None, full_file: bool = False, force_census: bool = False,
                     done: Collection[str] = (),
                     scope: Callable[[str], AbstractContextManager[Any]] | None = None) -> AggregateSummary:
    """Every stage in order; ``done`` names aggregate stages that succeeded in an earlier try of the open
    run (Airflow's retry), skipped and recorded as such: a built file is not built again. ``scope`` wraps
    each stage run (Airflow's task log folds each under its name)."""
    from carrierfeeds.run.stages import conformance, deliver, encrypt

    ctx = agg.ctx
    within = scope or (lambda _stage: nullcontext())

    def skipped(stage: str) -> bool:
        if stage in done:
            ctx.ledger.record_stage(ctx.run_id, stage, "skipped", now=ctx.now(), detail={"reason": "succeeded_earlier"})
            return True
        return False

    if not skipped("build"):
        with within("build"):
            stage_employers(agg, censuses, force=force_census)
            try:
                build_aggregate_file(agg, full_file=full_file)
            finally:
                for ectx in agg.employers:  # their validated tables, read by the build: nothing later needs them
                    wipe_scratch(ectx)
    if not skipped("conformance"):
        with within("conformance"):
            conformance(ctx)
    if not skipped("encrypt"):
        with within("encrypt"):
            encrypt(ctx)
    with within("deliver"):
        deliver(ctx, transport=transport)  # exactly once by itself: a retry finds the delivery, sends nothing
    with within("confirm"):
        return confirm_aggregate(agg)


def run_aggregate(settings: Settings, mapping_id: str, day: date, *, clock: Callable[[], datetime], actor: str,
                  censuses: Mapping[str, Path] | None = None, transport: Transport | None = None,
                  full_file: bool = False, force_census: bool = False) -> AggregateSummary:
    """Every stage of the aggregate for ``day`` in one process; ends in a recorded state whatever happens
    (the aggregate's run and every employer's), and the ledger's head is then anchored."""
    from carrierfeeds.run.stages import anchor_run, purge_plaintext

    agg = open_aggregate(settings, mapping_id, day, clock=clock, actor=actor)
    try:
        return aggregate_stages(agg, censuses=censuses, transport=transport, full_file=full_file,
                                force_census=force_census)
    except CarrierFeedsError as exc:
        return end_aggregate(agg, exc)
    except BaseException:
        for run_ctx in (agg.ctx, *agg.employers):
            record = agg.ctx.ledger.get_run(run_ctx.run_id)
            if run_ctx is agg.ctx or (record is not None and record.status == RunStatus.RUNNING):
                agg.ctx.ledger.finish_run(run_ctx.run_id, RunStatus.FAILED, now=agg.ctx.now(), error_code="internal")
                purge_plaintext(run_ctx)
        raise
    finally:
        anchor_run(agg.ctx)


__all__ = ["ACCOUNT", "AGGREGATE_STAGES", "AggregateRun", "AggregateSummary", "aggregate_bundle", "aggregate_stages",
           "build_aggregate_file", "confirm_aggregate", "end_aggregate", "open_aggregate", "read_account",
           "run_aggregate", "stage_employers"]
