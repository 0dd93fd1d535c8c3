"""A carrier aggregator's file: several employers' censuses in one 834 (the mapping's ``aggregation``).

Decision (the TR3 allows one sponsor, Loop 1000A N1*P5, per transaction set): one interchange (one
ISA/GS, one set of control numbers) per file and one ST/SE per employer, each with its own BGN (the
file's reference plus the employer's position), sponsor (the employer's name and FEIN) and header
totals. The employers are the feeds that name the mapping, in feed-id order; they share the carrier's
envelope, recipient key, signer and delivery target (checked, else ConfigError naming the feed).

Each employer is built exactly as its own feed would be: its census read with its schema, validated
with its suite, plan catalogue and policy, its authorisation (plans, dates) applied and the mapping's
allowlist cutting the view; in changes mode against its own snapshot. An employer whose census is
rejected or who has not authorised the carrier for the day is, under ``on_employer_failure: isolate``,
left out of the file and counted by reason (the others go); under ``reject_all`` the file is refused.
An employer with nothing to send has no ST.

Here: the employers (:func:`aggregate_bundles`), each employer's transaction set header
(:func:`employer_header`), the file's notice (:func:`aggregate_notice`) and the preview
(:func:`preview_aggregate`, nothing sent or recorded). The run that delivers the file, each employer
under its own ledger run, is :mod:`carrierfeeds.run.aggregate_run`; see docs/companion-guides.md.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carrierfeeds.errors import CensusRejected, ConfigError, NotAuthorized
from carrierfeeds.files import write_private
from carrierfeeds.settings import FeedBundle, Settings, bundle_from_feed, feed_paths, plan_catalogue

if TYPE_CHECKING:
    from carrierfeeds.config import CarrierMapping
    from carrierfeeds.enrollment import Enrollment
    from carrierfeeds.x12.envelope import TransactionHeader


@dataclass
class EmployerPart:
    """One employer's share of the file, PHI-free: included (with its ST02s and counts) or left out by
    reason (``census_rejected``, ``not_authorized``, ``nothing_to_send``)."""

    feed_id: str
    employer_id: str
    status: str
    members: int = 0
    members_by_type: dict[str, int] = field(default_factory=dict)
    reason: str | None = None
    findings: int = 0


def aggregate_bundles(settings: Settings, mapping_id: str, *, required: bool = True) -> list[FeedBundle]:
    """Every feed naming ``mapping_id`` (an aggregation mapping), in feed-id order, checked to share what
    one file needs: the recipient key, the signer, the delivery target, the 834 format, and the schedule
    and time zone (the aggregate's one run a night covers the same day for every employer). With
    ``required`` false a mapping no feed names yet (an example, a carrier being onboarded) gives []."""
    from carrierfeeds.config import load_feed

    bundles = []
    for path in feed_paths(settings):
        feed = load_feed(path)
        if feed.mapping_id == mapping_id:
            bundles.append((path, bundle_from_feed(settings, feed, path)))
    if not bundles:
        if not required:
            return []
        raise ConfigError(f"no feed names mapping {mapping_id!r}", field="mapping_id")
    first_path, first = bundles[0]
    if first.mapping.aggregation is None:
        raise ConfigError(f"mapping {mapping_id!r} has no aggregation: each of its feeds is its own file",
                          file=str(settings.mappings_dir / f"{mapping_id}.yaml"), field="aggregation")
    def shared(b: FeedBundle) -> dict[str, Any]:
        return {"encryption.recipient_fingerprint": b.feed.encryption.recipient_fingerprint,
                "encryption.signer_fingerprint": b.feed.encryption.signer_fingerprint,
                "delivery": b.feed.delivery.model_dump(), "output.format": b.feed.output.format,
                # One run a night for the file: its day is every employer's interval.
                "schedule": b.feed.schedule, "timezone": b.feed.timezone}

    ours = shared(first)
    for path, bundle in bundles[1:]:
        for where, value in shared(bundle).items():
            if value != ours[where]:
                raise ConfigError(f"feed {bundle.feed.feed_id!r} shares carrier file {mapping_id!r} with "
                                  f"{first.feed.feed_id!r} ({first_path.name}) but not its {where}",
                                  file=str(path), field=where)
    if first.feed.output.format != "x12-834":
        raise ConfigError("an aggregated carrier file is an 834", file=str(first_path), field="output.format")
    return [b for _, b in bundles]


def _employer_enrollment(settings: Settings, bundle: FeedBundle, census: Path, *, as_of: date,
                         full: bool) -> tuple[Enrollment, str, dict[str, int], int]:
    """One employer's view as its own feed would build it: (enrollment, BGN08, members by type, held back)."""
    from carrierfeeds.census.readers import read_census
    from carrierfeeds.census.tokens import KEY_BYTES, MemberTokenizer
    from carrierfeeds.changes import SnapshotStore, keeps_snapshot
    from carrierfeeds.enrollment import build_enrollment
    from carrierfeeds.run.stages import diff_for_day
    from carrierfeeds.validation import CarrierRules, apply_policy, validate_census

    feed, mapping = bundle.feed, bundle.mapping
    if not feed.authorization.covers(as_of):
        raise NotAuthorized(f"employer {feed.employer.id} has not authorised carrier {feed.carrier.id} for "
                            f"{as_of.isoformat()}", details={"feed_id": feed.feed_id})
    frame = read_census(census, bundle.schema)
    key_file = settings.resolved_token_key_file
    tokenizer = (MemberTokenizer.from_key_file(key_file) if key_file.is_file()
                 else MemberTokenizer(os.urandom(KEY_BYTES)))
    report = validate_census(frame, bundle.suite_path, bundle.schema, tokenizer, as_of=as_of,
                             source_name=census.name, plans=plan_catalogue(settings, bundle),
                             carrier=CarrierRules.for_feed(mapping, feed.authorization.plans))
    outcome = apply_policy(frame, report, feed.validation)
    if outcome.rejected:
        raise CensusRejected(f"census of feed {feed.feed_id} would be rejected under policy "
                             f"{feed.validation.policy!r}: {report.failed_rows} failing rows",
                             file=census.name, details={"feed_id": feed.feed_id, "findings": len(report.findings)})
    enrollment = build_enrollment(outcome.accepted, feed, mapping, as_of=as_of)
    by_type: dict[str, int] = {mapping.full_file.maintenance_type: enrollment.member_count}
    action: str = mapping.full_file.bgn08
    if keeps_snapshot(mapping.mode, feed.validation.policy, eoi_hold=mapping.volumes.eoi_hold):
        base = SnapshotStore.for_settings(settings).load(feed.feed_id)  # read only
        change_set = diff_for_day(bundle, enrollment, base, held_back=outcome.held_back_member_ids, day=as_of,
                                  full_file=full or mapping.mode == "full")
        enrollment, by_type = change_set.enrollment, dict(change_set.members_by_type)
        action = mapping.full_file.bgn08 if change_set.full_file else "2"
    return enrollment, action, by_type, outcome.held_back_members


def build_aggregate(settings: Settings, mapping_id: str, censuses: dict[str, Path], *, as_of: date,
                    created: datetime, isa13: int, full: bool = False
                    ) -> tuple[list[FeedBundle], list[tuple[Enrollment, TransactionHeader]], list[EmployerPart]]:
    """Each employer's transaction set of one aggregated file: (bundles, parts to render, the account).

    ``censuses`` maps feed id to its census file; a feed of the aggregate without one has nothing to send.
    A census for a feed outside the aggregate is a ConfigError."""
    bundles = aggregate_bundles(settings, mapping_id)
    known = {b.feed.feed_id for b in bundles}
    stray = sorted(set(censuses) - known)
    if stray:
        raise ConfigError(f"feed(s) {stray} do not name mapping {mapping_id!r}", field="census")
    policy = bundles[0].mapping.aggregation.on_employer_failure  # type: ignore[union-attr]
    parts: list[tuple[Enrollment, TransactionHeader]] = []
    account: list[EmployerPart] = []
    for bundle in bundles:
        feed = bundle.feed
        part = EmployerPart(feed_id=feed.feed_id, employer_id=feed.employer.id, status="included")
        account.append(part)
        census = censuses.get(feed.feed_id)
        if census is None:
            part.status, part.reason = "left_out", "no_census"
            continue
        try:
            enrollment, action, by_type, _ = _employer_enrollment(settings, bundle, census, as_of=as_of, full=full)
        except (CensusRejected, NotAuthorized) as exc:
            if policy == "reject_all":
                raise
            part.status, part.reason = "left_out", exc.code
            part.findings = int(exc.details.get("findings", 0)) if isinstance(exc, CensusRejected) else 0
            continue
        if enrollment.member_count == 0:
            part.status, part.reason = "left_out", "nothing_to_send"
            continue
        part.members, part.members_by_type = enrollment.member_count, by_type
        parts.append((enrollment, employer_header(bundle, position=len(parts) + 1, isa13=isa13, created=created,
                                                  action=action)))
    return bundles, parts, account


def employer_header(bundle: FeedBundle, *, position: int, isa13: int, created: datetime,
                    action: str) -> TransactionHeader:
    """The transaction set header of the employer at ``position`` (1, 2, ...) of the file: the carrier's
    envelope, BGN02 the file's reference plus ``-E<position>``, the employer as sponsor (N1*P5)."""
    from carrierfeeds.config import Party
    from carrierfeeds.x12.envelope import TransactionHeader

    feed, mapping = bundle.feed, bundle.mapping
    return TransactionHeader(
        ids=mapping.envelope, created=created, reference=f"CF{isa13:09d}-E{position}",
        sponsor=Party(name=feed.employer.name, id_qualifier="FI", id=feed.employer.tax_id),
        payer=mapping.payer, action=action, group_number=mapping.group_number)


def preview_aggregate(settings: Settings, mapping_id: str, censuses: dict[str, Path], folder: Path, *,
                      as_of: date, now: datetime, full: bool = False) -> dict[str, Any]:
    """The aggregated file tonight's run would send, written to ``folder`` (private) and gated, with
    nothing sent, recorded or advanced; the PHI-free account, per employer."""
    from carrierfeeds.run.gate import check_file
    from carrierfeeds.run.preview import peek_control_number
    from carrierfeeds.x12.envelope import ControlNumbers, Delimiters
    from carrierfeeds.x12.render import render_834_employers

    first = aggregate_bundles(settings, mapping_id)[0]
    mapping = first.mapping
    number, _ = peek_control_number(settings, mapping.envelope.sender_id, mapping.envelope.receiver_id)
    bundles, parts, account = build_aggregate(settings, mapping_id, censuses, as_of=as_of, created=now,
                                              isa13=number, full=full)
    result: dict[str, Any] = {"mapping_id": mapping_id, "interval_start": as_of.isoformat(), "preview": True,
                              "sent": False, "employers": [vars(p) for p in account], "files": []}
    if not parts:
        result["status"] = "nothing_to_send"
        return result
    file_name = mapping.file_name.format(
        sender=mapping.envelope.sender_id.strip(), receiver=mapping.envelope.receiver_id.strip(),
        isa13=f"{number:09d}", date=as_of.strftime("%Y%m%d"), feed=mapping_id)
    control = ControlNumbers(isa13=number, gs06=number, st02=number)
    sha256, size = write_private(folder / file_name, render_834_employers(parts, control, Delimiters()))
    members = sum(e.member_count for e, _ in parts)
    verdict = check_file(folder / file_name, bundles[0], payload_sha256=sha256, members=members, records=None,
                         pyx12_max_members=settings.pyx12_max_members, scratch=folder, detail={})
    result["files"] = [{"name": file_name, "bytes": size, "sha256": sha256, "members": members,
                        "transaction_sets": verdict.transaction_sets, "segments": verdict.segments,
                        "conformance": {"verdict": "passed" if verdict.passed else "failed",
                                        "problems": verdict.problems, "first": verdict.first}}]
    if mapping.notice is not None:
        from carrierfeeds.outputs.notice import notice_files

        notice = aggregate_notice(mapping, account, parts, file_name=file_name, sha256=sha256, size=size,
                                  isa13=number, interval_start=as_of, created=now)
        written = notice_files(mapping.notice, file_name, notice)
        for name, data in written:
            write_private(folder / name, [data])
        result["files"][0]["notice"] = [name for name, _ in written]
    result["status"] = "ok" if verdict.passed else "conformance_failed"
    return result


def aggregate_notice(mapping: CarrierMapping, account: list[EmployerPart],
                     parts: list[tuple[Enrollment, TransactionHeader]], *, file_name: str, sha256: str, size: int,
                     isa13: int, interval_start: date, created: datetime) -> dict[str, Any]:
    """The per-file notice of an aggregated file (counts by employer account, envelope values; no member
    data), as the preview shows it and the aggregate's run writes it."""
    from carrierfeeds.outputs.notice import file_notice

    by_type: dict[str, int] = {}
    for part in account:
        for code, n in part.members_by_type.items():
            by_type[code] = by_type.get(code, 0) + n
    included = [p.employer_id for p in account if p.status == "included"]
    return file_notice(
        feed_id=mapping.mapping_id, carrier=mapping.carrier_name, employer=f"{len(included)} employers: "
        + ", ".join(included), file_name=file_name, file_format="x12-834", sha256=sha256, size=size,
        isa13=isa13, gs06=isa13, st02=isa13, interval_start=interval_start, created=created,
        full_file=all(h.action == mapping.full_file.bgn08 for _, h in parts),
        members=sum(e.member_count for e, _ in parts), subscribers=sum(e.subscriber_count for e, _ in parts),
        members_by_type=by_type, coverages_by_type={},
        excluded=dict(Counter(f"employers_{p.reason}" for p in account if p.reason)))


__all__ = ["EmployerPart", "aggregate_bundles", "aggregate_notice", "build_aggregate", "employer_header",
           "preview_aggregate"]
