"""The preview: a run's stages up to the gate (validate, build, diff, render, gate), side effects off.

No ledger row, no control number allocated, no snapshot staged or advanced, nothing staged, encrypted
or sent. Returns the PHI-free account ``carrierfeeds preview`` prints."""

from __future__ import annotations

import os
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carrierfeeds import progress
from carrierfeeds.errors import CensusRejected, ConfigError, TransientError
from carrierfeeds.files import write_private
from carrierfeeds.run.gate import GateVerdict, check_file
from carrierfeeds.run.render import RenderedFile, render_file
from carrierfeeds.run.stages import diff_for_day, roster_changes
from carrierfeeds.settings import FeedBundle, Settings, plan_catalogue

if TYPE_CHECKING:
    from carrierfeeds.ledger import Ledger
    from carrierfeeds.lifecycle import RunLifecycle


def preview_files(settings: Settings, bundle: FeedBundle, census: Path, folder: Path, *, as_of: date, full: bool,
                  now: datetime) -> dict[str, Any]:
    """Validate ``census``, build and diff it as tonight's run would, render the feed's file into
    ``folder`` (private) under the ledger's next control number, read without writing, and gate it.

    CensusRejected when the feed's policy would reject the census; the gate's verdict is in the account
    (``status`` ``conformance_failed``), not raised."""
    from carrierfeeds.census.readers import read_census
    from carrierfeeds.census.tokens import KEY_BYTES, MemberTokenizer
    from carrierfeeds.changes import SnapshotStore, keeps_snapshot
    from carrierfeeds.enrollment import Enrollment, build_enrollment
    from carrierfeeds.validation import CarrierRules, apply_policy, validate_census

    feed, mapping = bundle.feed, bundle.mapping
    if mapping.aggregation is not None:  # what the run does: never a file of this employer alone
        raise ConfigError(f"feed {feed.feed_id} is one employer of carrier file {mapping.mapping_id!r} (mapping "
                          "aggregation): preview that file with `carrierfeeds preview-aggregate` "
                          f"and run it with `carrierfeeds run-aggregate {mapping.mapping_id}`", field="mapping_id")
    life = peek_lifecycle(settings, bundle, day=as_of)  # a suspended feed, or P before production: refused
    progress.step("read census")
    frame = read_census(census, bundle.schema)
    key_file = settings.resolved_token_key_file
    # Tokens only label findings; without the deployment's key a throwaway one is used, never written.
    tokenizer = (MemberTokenizer.from_key_file(key_file) if key_file.is_file()
                 else MemberTokenizer(os.urandom(KEY_BYTES)))
    progress.step("validate")
    report = validate_census(frame, bundle.suite_path, bundle.schema, tokenizer, as_of=as_of,
                             source_name=census.name, plans=plan_catalogue(settings, bundle),
                             carrier=CarrierRules.for_feed(mapping, feed.authorization.plans,
                                                           output_format=feed.output.format))
    outcome = apply_policy(frame, report, feed.validation)
    validation = {"rows": report.rows, "members": report.members, "failed_rows": report.failed_rows,
                  "findings": len(report.findings), "held_back_members": outcome.held_back_members,
                  "excluded": dict(report.excluded)}
    if outcome.rejected:
        raise CensusRejected(f"census would be rejected under policy {feed.validation.policy!r}: "
                             f"{report.failed_rows} failing rows (run `carrierfeeds validate` for the report)",
                             file=census.name, details=validation)
    progress.step("build")
    enrollment = build_enrollment(outcome.accepted, feed, mapping, as_of=as_of)
    members_by_type: dict[str, int] = {mapping.full_file.maintenance_type: enrollment.member_count}
    coverages_by_type: dict[str, int] = {mapping.full_file.maintenance_type: enrollment.coverage_count}
    action: str = mapping.full_file.bgn08
    full_file, base_rows = True, None
    roster: Enrollment | None = None  # a PDF roster's changes since the last one
    if keeps_snapshot(mapping.mode, feed.validation.policy, eoi_hold=mapping.volumes.eoi_hold):
        base = SnapshotStore.for_settings(settings).load(feed.feed_id)  # read only: never staged or advanced
        base_rows = None if base is None else len(base)
        change_set = diff_for_day(bundle, enrollment, base, held_back=outcome.held_back_member_ids, day=as_of,
                                  full_file=full or life.full_file or mapping.mode == "full")
        roster = roster_changes(bundle, enrollment, base, change_set, held_back=outcome.held_back_member_ids,
                                day=as_of)
        full_file = change_set.full_file
        enrollment, members_by_type = change_set.enrollment, dict(change_set.members_by_type)
        if not change_set.full_file:
            coverages_by_type = dict(change_set.coverages_by_type)
        action = mapping.full_file.bgn08 if change_set.full_file else "2"
    result: dict[str, Any] = {
        "feed_id": feed.feed_id, "interval_start": as_of.isoformat(), "preview": True, "sent": False,
        "snapshot_advanced": False, "ledger_written": False, "out": str(folder), "full_file": full_file,
        "snapshot_rows": base_rows, "validation": validation, "files": [],
        "lifecycle": {"state": life.state, "endpoint": life.endpoint, "first_production_file": life.full_file}}
    if enrollment.member_count == 0:
        result["status"] = "nothing_to_send"
        return result
    number, source = peek_control_number(settings, mapping.envelope.sender_id, mapping.envelope.receiver_id)
    control = {"isa13": number, "gs06": number, "st02": number, "placeholder": True,
               "note": f"preview placeholder ({source}); the real run allocates its own"}
    progress.step("render")
    rendered = render_file(bundle, enrollment, action=action, isa13=number, gs06=number, st02=number, created=now,
                           day=as_of, folder=folder, write=write_private, changes=roster, usage=life.usage,
                           marker=life.marker)
    progress.step("conformance")
    verdict = check_file(rendered.path, bundle, payload_sha256=rendered.sha256, members=enrollment.member_count,
                         records=rendered.records, pyx12_max_members=settings.pyx12_max_members, scratch=folder,
                         detail={})
    entry = _account(rendered, verdict)
    entry.update(members=enrollment.member_count, members_by_type=members_by_type, control_numbers=control)
    if mapping.notice is not None:
        from carrierfeeds.outputs.notice import file_notice, notice_files

        notice = file_notice(
            feed_id=feed.feed_id, carrier=mapping.carrier_name, employer=feed.employer.name,
            file_name=rendered.file_name, file_format=rendered.format, sha256=rendered.sha256, size=rendered.size,
            isa13=number, gs06=number, st02=number, interval_start=as_of, created=now, full_file=full_file,
            members=enrollment.member_count, subscribers=enrollment.subscriber_count,
            members_by_type=members_by_type, coverages_by_type=coverages_by_type, excluded=dict(enrollment.excluded))
        written = notice_files(mapping.notice, rendered.file_name, notice)
        for name, data in written:
            write_private(folder / name, [data])
        entry["notice"] = [name for name, _ in written]
    result["files"] = [entry]
    result["status"] = "ok" if verdict.passed else "conformance_failed"
    return result


def _account(rendered: RenderedFile, verdict: GateVerdict) -> dict[str, Any]:
    """A rendered file and its gate verdict as ``preview --json`` shows them (PHI-free)."""
    conformance: dict[str, Any] = {"verdict": "passed" if verdict.passed else "failed", "problems": verdict.problems,
                                   "first": verdict.first}
    if verdict.pyx12 is not None:
        conformance["pyx12"] = verdict.pyx12
    if verdict.waived:
        conformance["pyx12_waived"] = verdict.waived  # HD03 codes the mapping names beyond the TR3 list
    entry: dict[str, Any] = {"name": rendered.file_name, "format": rendered.format, "bytes": rendered.size,
                             "sha256": rendered.sha256}
    if rendered.pages is not None:
        entry["pages"] = rendered.pages
    entry.update(segments=verdict.segments, records=verdict.records,
                 conformance={**conformance, "check": verdict.check})
    return entry


def peek_lifecycle(settings: Settings, bundle: FeedBundle, *, day: date) -> RunLifecycle:
    """What the run of ``day`` would send under the feed's lifecycle, read without writing (as
    :func:`peek_control_number` reads the ledger)."""
    import sqlalchemy as sa

    from carrierfeeds.ledger.lifecycle import feed_lifecycle
    from carrierfeeds.lifecycle import preview_run

    ledger = _read_only_ledger(settings)
    try:
        if ledger is not None:
            with ledger.engine.connect() as conn:
                if not sa.inspect(conn).has_table(feed_lifecycle.name):
                    ledger.close()
                    ledger = None
        return preview_run(ledger, bundle.feed, bundle.mapping, day=day)
    except sa.exc.SQLAlchemyError as exc:
        raise TransientError(f"cannot read the ledger ({type(exc).__name__})") from None
    finally:
        if ledger is not None:
            ledger.close()


def _read_only_ledger(settings: Settings) -> Ledger | None:
    """The ledger opened without creating anything (a SQLite file read-only); None when there is none."""
    import sqlalchemy as sa

    from carrierfeeds.ledger import Ledger

    url = sa.make_url(settings.resolved_ledger_url)
    if url.get_backend_name() == "sqlite":
        if not url.database or not Path(url.database).is_file():
            return None
        return Ledger(sa.create_engine(f"sqlite:///file:{Path(url.database).resolve()}?mode=ro&uri=true"))
    return Ledger(sa.create_engine(url))


def peek_control_number(settings: Settings, sender_id: str, receiver_id: str) -> tuple[int, str]:
    """The ISA13 the ledger would allocate next for this pair, read without writing (nothing is created:
    no ledger file, no table, no counter) and where that number comes from."""
    import sqlalchemy as sa

    from carrierfeeds.ledger import models

    ledger = _read_only_ledger(settings)
    if ledger is None:
        return 1, "no ledger yet, so the first number"
    engine = ledger.engine
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(models.control_counters.name):
                return 1, "ledger not initialised, so the first number"
        number = ledger.next_control_number(sender_id=sender_id, receiver_id=receiver_id)
    except sa.exc.SQLAlchemyError as exc:
        raise TransientError(f"cannot read the ledger ({type(exc).__name__})") from None
    finally:
        ledger.close()
    return number, "the ledger's next number, read without writing"
