"""The ops and auditor command line: ``carrierfeeds --help``. Exit codes mean the same everywhere.

    0  done (delivered, or already delivered earlier: nothing sent twice; or no new census to send)
    1  the census was rejected: the employer must fix the data (see the validation report)
    2  usage or configuration error: fix the command or the config files
    3  refused: a security or policy check said no (key, host key, authorisation, conformance)
    4  transient failure: retry later
    5  permanent failure of an outside system (authentication, permission, file already there)
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer

from carrierfeeds.errors import (
    CarrierFeedsError,
    ConfigError,
    DataError,
    PermanentError,
    Refused,
    TransientError,
)
from carrierfeeds.files import write_private
from carrierfeeds.settings import Settings, feed_paths

app = typer.Typer(help="carrierfeeds: employer census in, validated encrypted 834 out, every delivery "
                       "on a verifiable ledger.", no_args_is_help=True, add_completion=False)
feeds_app = typer.Typer(help="Feed configuration.", no_args_is_help=True)
db_app = typer.Typer(help="The ledger database.", no_args_is_help=True)
audit_app = typer.Typer(help="Auditors' views of the ledger.", no_args_is_help=True)
app.add_typer(feeds_app, name="feeds")
app.add_typer(db_app, name="db")
app.add_typer(audit_app, name="audit")

EXIT_OK, EXIT_REJECTED, EXIT_USAGE, EXIT_REFUSED, EXIT_TRANSIENT, EXIT_FAILED = 0, 1, 2, 3, 4, 5

STATUS_EXIT = {"delivered": EXIT_OK, "already_delivered": EXIT_OK, "handed_off": EXIT_OK, "pending_handoff": EXIT_OK,
               "nothing_to_send": EXIT_OK, "no_new_census": EXIT_OK,
               "rejected": EXIT_REJECTED, "refused": EXIT_REFUSED, "failed": EXIT_FAILED}


def exit_code_for(exc: CarrierFeedsError) -> int:
    if isinstance(exc, ConfigError):
        return EXIT_USAGE
    if isinstance(exc, DataError):
        return EXIT_REJECTED
    if isinstance(exc, Refused):
        return EXIT_REFUSED
    if isinstance(exc, TransientError):
        return EXIT_TRANSIENT
    if isinstance(exc, PermanentError):
        return EXIT_FAILED
    return EXIT_FAILED


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _emit(data: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        for line in lines:
            typer.echo(line)


def _fail(exc: CarrierFeedsError, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(exc.as_dict(), indent=2, sort_keys=True, default=str))
    else:
        typer.echo(f"error: {exc.message}", err=True)
    raise typer.Exit(exit_code_for(exc))


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log stage progress")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Third parties set their own loggers to INFO (GX's temporary docs site, paramiko's transport), so
    # the console handler, not only the root logger, holds the line.
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.INFO if verbose else logging.WARNING)


def _summary_lines(summary: Any) -> list[str]:
    lines = [f"run {summary.run_id}  feed {summary.feed_id}  interval {summary.interval_start}",
             f"status: {summary.status}"]
    if summary.members:
        lines.append(f"members: {summary.members} ({summary.subscribers} subscribers, "
                     f"{summary.coverages} coverage lines)")
    if summary.file_name:
        lines.append(f"file: {summary.file_name}  ISA13 {summary.isa13}")
        lines.append(f"payload sha256: {summary.payload_sha256}")
    if summary.remote_path:
        lines.append(f"delivered to: {summary.remote_path}")
    if (summary.validation or {}).get("excluded"):
        lines.append(f"left out as expected: {_by_reason(summary.validation['excluded'])}")
    if summary.error:
        lines.append(f"why: {summary.error['message']}")
    return lines


@app.command()
def run(
    feed_id: Annotated[str, typer.Argument(help="a feed in the feeds folder (file name without .yaml)")],
    census: Annotated[Path | None, typer.Option(help="census file, always processed; default: the newest new "
                                                     "file (or query result) from the feed's source")] = None,
    force_census: Annotated[bool, typer.Option("--force-census", help="process the source's newest census "
                                                                      "although it was processed before")] = False,
    day: Annotated[str | None, typer.Option("--date", help="interval day YYYY-MM-DD; default: today "
                                                             "in the feed's time zone")] = None,
    force_resend: Annotated[str | None, typer.Option(help="send again although already delivered, as a new "
                                                         "transmission under new control numbers (a failed "
                                                         "resend, retried, keeps its own); the reason is "
                                                         "audited")] = None,
    full_file: Annotated[bool, typer.Option("--full-file", help="changes-mode feeds: send the full audit "
                                                                 "file (INS03 030) this time")] = False,
    actor: Annotated[str, typer.Option(help="who runs this, for the ledger")] = "cli",
    as_json: Annotated[bool, typer.Option("--json", help="print a machine-readable summary")] = False,
) -> None:
    """Run every stage of one feed for one day: read, validate, build, check, encrypt, deliver."""
    from carrierfeeds.pipeline import RunRef, run_feed
    from carrierfeeds.settings import load_bundle

    settings = Settings()
    try:
        bundle = load_bundle(settings, feed_id)
        interval = _parse_day(day) if day else datetime.now(ZoneInfo(bundle.feed.timezone)).date()
        summary = run_feed(settings, RunRef.for_day(feed_id, interval), clock=_utcnow, actor=actor,
                           census_path=census, force_reason=force_resend, full_file=full_file,
                           force_census=force_census)
    except CarrierFeedsError as exc:
        _fail(exc, as_json)
        return
    _emit(summary.as_dict(), as_json, _summary_lines(summary))
    raise typer.Exit(exit_code_for_summary(summary))


def exit_code_for_summary(summary: Any) -> int:
    code = (summary.error or {}).get("code", "")
    if summary.error is None or summary.status == "already_delivered":
        return STATUS_EXIT.get(summary.status, EXIT_FAILED)
    if code == "config":
        return EXIT_USAGE
    if code == "transient":
        return EXIT_TRANSIENT
    if code == "permanent":
        return EXIT_FAILED
    return STATUS_EXIT.get(summary.status, EXIT_FAILED)


def _parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a date (YYYY-MM-DD)") from None


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="where the demo keeps its keys, sshd, ledger")] = Path("var/demo"),
    members: Annotated[int, typer.Option(min=1, help="people in the synthetic census")] = 250,
    seed: Annotated[int, typer.Option(help="census generator seed")] = 7,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Run the demo feed end to end on this machine: keys, sshd, census, 834, delivery, round trip."""
    from carrierfeeds.demo import run_demo

    try:
        result = run_demo(workdir.resolve(), members=members, seed=seed, clock=_utcnow,
                          say=None if as_json else typer.echo)
    except CarrierFeedsError as exc:
        _fail(exc, as_json)
        return
    if as_json:
        typer.echo(json.dumps(result, indent=2, sort_keys=True, default=str))
    raise typer.Exit(EXIT_OK if result["ok"] else EXIT_FAILED)


@app.command("generate-census")
def generate_census_cmd(
    members: Annotated[int, typer.Option(min=1, help="number of people (subscribers and dependents)")],
    seed: Annotated[int, typer.Option(help="random seed: same seed, same census")] = 1,
    out: Annotated[Path, typer.Option(help="CSV file to write")] = Path("census.csv"),
    as_of: Annotated[str | None, typer.Option(help="reference day YYYY-MM-DD; default today (UTC)")] = None,
) -> None:
    """Write a synthetic employer census (fake but well-formed values; never real people)."""
    from carrierfeeds.census.generate import generate_census, write_census_csv

    day = _parse_day(as_of) if as_of else _utcnow().date()
    frame = generate_census(members, seed, as_of=day)
    write_census_csv(frame, out)
    typer.echo(f"wrote {len(frame)} rows for {frame['member_id'].nunique()} members to {out}")


@app.command()
def validate(
    feed_id: Annotated[str, typer.Argument(help="the feed whose schema, suite and policy apply")],
    census: Annotated[Path, typer.Option(help="census file to validate", exists=True, dir_okay=False)],
    report: Annotated[Path | None, typer.Option(help="folder for validation.csv and validation.html")] = None,
    day: Annotated[str | None, typer.Option("--date", help="interval day YYYY-MM-DD, as for `run --date` (age "
                                                             "rules are judged on it); default: today in the "
                                                             "feed's time zone, as `run`")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="counts and failing rows as JSON")] = False,
) -> None:
    """Validate a census exactly as a run would, without building or sending anything.

    The reference day for date rules is the run's: the start of the interval ``--date`` names (default
    today in the feed's time zone, the interval ``run`` would take). Exit 0 when the census passes the
    feed's policy, 1 when it would be rejected, 2 on a usage or configuration error. The report names
    rows, member tokens, columns and rules, never values.
    """
    from carrierfeeds.census.readers import read_census
    from carrierfeeds.census.tokens import MemberTokenizer
    from carrierfeeds.pipeline import RunRef
    from carrierfeeds.settings import load_bundle, plan_catalogue
    from carrierfeeds.validation import CarrierRules, apply_policy, validate_census

    settings = Settings()
    try:
        bundle = load_bundle(settings, feed_id)
        interval = _parse_day(day) if day else datetime.now(ZoneInfo(bundle.feed.timezone)).date()
        # the day a run of this interval validates against (pipeline.validate: as_of=ref.interval_start)
        as_of = RunRef.for_day(feed_id, interval).interval_start
        frame = read_census(census, bundle.schema)
        tokenizer = MemberTokenizer.from_key_file(settings.resolved_token_key_file)
        result = validate_census(frame, bundle.suite_path, bundle.schema, tokenizer, as_of=as_of,
                                 source_name=census.name, plans=plan_catalogue(settings, bundle),
                                 carrier=CarrierRules.for_feed(bundle.mapping, bundle.feed.authorization.plans))
    except CarrierFeedsError as exc:
        _fail(exc, as_json)
        return
    outcome = apply_policy(frame, result, bundle.feed.validation)
    if report:
        report.mkdir(parents=True, exist_ok=True, mode=0o700)
        result.write_csv(report / "validation.csv")
        result.write_html(report / "validation.html")
    data = {**result.to_dict(), "interval_start": as_of.isoformat(), "policy": bundle.feed.validation.policy,
            "rejected": outcome.rejected, "held_back_members": outcome.held_back_members}
    lines = [f"{census.name}: {result.rows} rows, {result.members} members, {result.families} families "
             f"(rules as of {as_of.isoformat()})",
             f"{len(result.findings)} finding(s) in {result.failed_rows} rows, {result.failed_families} families",
             *([f"left out as expected: {_by_reason(result.excluded)}"] if result.excluded else []),
             *[f"  row {f.row:>7}  {f.member_token}  {f.column:<18} {f.rule:<28} {f.message}"
               for f in result.findings[:50]],
             *([f"  ... and {len(result.findings) - 50} more (see --report)"] if len(result.findings) > 50 else []),
             f"policy {bundle.feed.validation.policy}: {'REJECTED' if outcome.rejected else 'accepted'}"
             + (f" ({outcome.held_back_members} members held back)" if outcome.held_back_members else "")]
    _emit(data, as_json, lines)
    raise typer.Exit(EXIT_REJECTED if outcome.rejected else EXIT_OK)


def _by_reason(counts: dict[str, int]) -> str:
    """Row counts by reason, for a person: ``plan_not_authorized 12``."""
    return ", ".join(f"{reason} {n} row(s)" for reason, n in sorted(counts.items()))


# ----------------------------------------------------------------------------- preview (issue 4)
def _private_out(out: Path) -> Path:
    """``out`` as a private folder: created 0700, or an existing folder nobody else can read."""
    if out.exists():
        if not out.is_dir():
            raise ConfigError("--out must be a folder", field="--out")
        if out.stat().st_mode & 0o077:
            raise ConfigError("--out is readable by others; the preview holds member data, so give a new "
                              "folder (it is created 0700) or a private one", field="--out")
    else:
        out.mkdir(parents=True, mode=0o700)
    out.chmod(0o700)
    return out


def _peek_control_number(settings: Settings, sender_id: str, receiver_id: str) -> tuple[int, str]:
    """The ISA13 the ledger would allocate next for this pair, read without writing (nothing is created)."""
    import sqlalchemy as sa

    from carrierfeeds.ledger import models
    from carrierfeeds.ledger.records import ISA13_MAX

    url = sa.make_url(settings.resolved_ledger_url)
    if url.get_backend_name() == "sqlite":
        if not url.database or not Path(url.database).is_file():
            return 1, "no ledger yet, so the first number"
        engine = sa.create_engine(f"sqlite:///file:{Path(url.database).resolve()}?mode=ro&uri=true")
    else:
        engine = sa.create_engine(url)
    counters = models.control_counters
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SET TRANSACTION READ ONLY"))
            if not sa.inspect(conn).has_table(counters.name):
                return 1, "ledger not initialised, so the first number"
            last = conn.execute(sa.select(counters.c.last_control).where(
                counters.c.sender_id == sender_id, counters.c.receiver_id == receiver_id)).scalar_one_or_none()
    except sa.exc.SQLAlchemyError as exc:
        raise TransientError(f"cannot read the ledger ({type(exc).__name__})") from None
    finally:
        engine.dispose()
    number = 1 if last is None or int(last) >= ISA13_MAX else int(last) + 1
    return number, "the ledger's next number, read without writing"


def _preview_files(settings: Settings, bundle: Any, census: Path, folder: Path, *, as_of: date, full: bool,
                   now: datetime) -> dict[str, Any]:
    """Every stage up to the conformance gate, on pure functions only: no ledger row, no control number
    allocated, no snapshot staged or advanced, nothing encrypted or sent. Returns the PHI-free account."""
    import os

    from carrierfeeds.census.readers import read_census
    from carrierfeeds.census.tokens import KEY_BYTES, MemberTokenizer
    from carrierfeeds.changes import SnapshotStore, diff_against_snapshot, is_full_file_day, keeps_snapshot
    from carrierfeeds.enrollment import build_enrollment
    from carrierfeeds.errors import CensusRejected
    from carrierfeeds.settings import plan_catalogue
    from carrierfeeds.validation import CarrierRules, apply_policy, validate_census

    feed, mapping = bundle.feed, bundle.mapping
    frame = read_census(census, bundle.schema)
    key_file = settings.resolved_token_key_file
    # Tokens only label findings; without the deployment's key a throwaway one is used, never written.
    tokenizer = (MemberTokenizer.from_key_file(key_file) if key_file.is_file()
                 else MemberTokenizer(os.urandom(KEY_BYTES)))
    report = validate_census(frame, bundle.suite_path, bundle.schema, tokenizer, as_of=as_of,
                             source_name=census.name, plans=plan_catalogue(settings, bundle),
                             carrier=CarrierRules.for_feed(mapping, feed.authorization.plans))
    outcome = apply_policy(frame, report, feed.validation)
    validation = {"rows": report.rows, "members": report.members, "failed_rows": report.failed_rows,
                  "findings": len(report.findings), "held_back_members": outcome.held_back_members,
                  "excluded": dict(report.excluded)}
    if outcome.rejected:
        raise CensusRejected(f"census would be rejected under policy {feed.validation.policy!r}: "
                             f"{report.failed_rows} failing rows (run `carrierfeeds validate` for the report)",
                             file=census.name, details=validation)
    enrollment = build_enrollment(outcome.accepted, feed, mapping, as_of=as_of)
    members_by_type = {mapping.full_file.maintenance_type: enrollment.member_count}
    action, full_file, base_rows = mapping.full_file.bgn08, True, None
    if keeps_snapshot(mapping.mode, feed.validation.policy):
        store = SnapshotStore(settings.data_dir / "snapshots", settings.resolved_keys_dir / "snapshot.key")
        base = store.load(feed.feed_id)  # read only: the current snapshot, never staged or advanced
        base_rows = None if base is None else len(base)
        full_file = full or base is None or mapping.mode == "full" or is_full_file_day(
            as_of, mapping.full_file_weekday)
        change_set = diff_against_snapshot(
            enrollment, base, as_of=as_of, term_policy=mapping.term_policy, term_end=mapping.term_end,
            retro_window_days=mapping.retro_window_days, held_back_members=outcome.held_back_member_ids,
            full_file=full_file, plan_change=mapping.plan_change)
        enrollment, members_by_type = change_set.enrollment, dict(change_set.members_by_type)
        action = mapping.full_file.bgn08 if change_set.full_file else "2"
    result: dict[str, Any] = {
        "feed_id": feed.feed_id, "interval_start": as_of.isoformat(), "preview": True, "sent": False,
        "snapshot_advanced": False, "ledger_written": False, "out": str(folder), "full_file": full_file,
        "snapshot_rows": base_rows, "validation": validation, "files": []}
    if enrollment.member_count == 0:
        result["status"] = "nothing_to_send"
        return result
    number, source = _peek_control_number(settings, mapping.envelope.sender_id, mapping.envelope.receiver_id)
    control = {"isa13": number, "gs06": number, "st02": number, "placeholder": True,
               "note": f"preview placeholder ({source}); the real run allocates its own"}
    entry = _render_preview(feed, mapping, enrollment, folder, as_of=as_of, number=number, action=action,
                            now=now, pyx12_max_members=settings.pyx12_max_members)
    entry.update(members=enrollment.member_count, members_by_type=members_by_type, control_numbers=control)
    result["files"] = [entry]
    result["status"] = "ok" if entry["conformance"]["verdict"] == "passed" else "conformance_failed"
    return result


def _render_preview(feed: Any, mapping: Any, enrollment: Any, folder: Path, *, as_of: date, number: int,
                    action: str, now: datetime, pyx12_max_members: int) -> dict[str, Any]:
    """Render the feed's file into ``folder`` and run the same gate as a run; PHI-free account of it."""
    from carrierfeeds.config import Party

    verdict: dict[str, Any] = {"verdict": "passed", "problems": 0, "first": None}
    if feed.output.format == "pdf":
        from carrierfeeds.outputs.pdf import fallback_file_name, write_fallback_pdf

        name = fallback_file_name(feed, as_of, f"{number:09d}")
        doc = write_fallback_pdf(enrollment, folder / name, feed=feed, interval_start=as_of,
                                 control_id=f"{number:09d}", created=now)
        return {"name": name, "format": "pdf", "bytes": doc.size, "sha256": doc.sha256, "pages": doc.pages,
                "segments": None, "records": None, "conformance": {**verdict, "check": "hash only"}}
    if feed.output.format == "flatfile":
        from carrierfeeds.outputs.flatfile import check_flatfile, flatfile_name, layout_for, render_flatfile

        layout = layout_for(mapping)
        name = flatfile_name(layout, feed_id=feed.feed_id, control=number, day=as_of,
                             sender=mapping.envelope.sender_id, receiver=mapping.envelope.receiver_id)
        sha, size = write_private(folder / name, render_flatfile(enrollment, layout))
        flat = check_flatfile((folder / name).read_bytes(), layout, expected_records=len(enrollment.table))
        if not flat.ok:
            p = flat.problems[0]
            verdict = {"verdict": "failed", "problems": flat.problem_count,
                       "first": {"record": p.record, "column": p.column, "rule": p.code, "message": p.message}}
        return {"name": name, "format": f"flatfile-{layout.kind}", "bytes": size, "sha256": sha,
                "segments": None, "records": flat.records, "conformance": {**verdict, "check": "structure"}}
    from carrierfeeds.x12.check import check_834, sample_834, validate_with_pyx12
    from carrierfeeds.x12.envelope import ControlNumbers, Delimiters, TransactionHeader
    from carrierfeeds.x12.render import render_834

    control = ControlNumbers(isa13=number, gs06=number, st02=number)
    header = TransactionHeader(
        ids=mapping.envelope, created=now, reference=f"CF{number:09d}",
        sponsor=Party(name=feed.employer.name, id_qualifier="FI", id=feed.employer.tax_id),
        payer=mapping.payer, action=action, group_number=mapping.group_number)
    name = mapping.file_name.format(sender=mapping.envelope.sender_id.strip(),
                                    receiver=mapping.envelope.receiver_id.strip(), isa13=f"{number:09d}",
                                    date=as_of.strftime("%Y%m%d"), feed=feed.feed_id)
    sha, size = write_private(folder / name, render_834(enrollment, header, control, Delimiters()))
    data = (folder / name).read_bytes()
    report = check_834(data, require_dmg="dob" in mapping.allowlist)
    if not report.ok:
        p834 = report.problems[0]
        verdict = {"verdict": "failed", "problems": len(report.problems),
                   "first": {"segment_position": p834.segment_position, "segment": p834.segment_id,
                             "element": p834.element, "rule": p834.code}}
    else:
        sample, sampled = sample_834(data, max_members=pyx12_max_members)
        target = folder / name
        if sampled:
            target = folder / f".{name}.pyx12-sample"
            write_private(target, [sample])
        try:
            pyx12 = validate_with_pyx12(target)
        finally:
            if sampled:
                target.unlink(missing_ok=True)
        if not pyx12.ok:
            first = pyx12.errors[0] if pyx12.errors else None
            verdict = {"verdict": "failed", "problems": len(pyx12.errors),
                       "first": None if first is None else {"segment_position": first.segment_position,
                                                            "segment": first.segment_id,
                                                            "element": first.element, "rule": first.code}}
        verdict["pyx12"] = "sample" if sampled else "full"
    return {"name": name, "format": "x12-834", "bytes": size, "sha256": sha, "segments": report.segment_count,
            "records": None, "conformance": {**verdict, "check": "structure+pyx12"}}


@app.command()
def preview(
    feed_id: Annotated[str, typer.Argument(help="a feed in the feeds folder (file name without .yaml)")],
    census: Annotated[Path, typer.Option(help="census file to preview", exists=True, dir_okay=False)],
    out: Annotated[Path, typer.Option(help="folder for the files (created 0700; files 0600, unencrypted)")],
    full: Annotated[bool, typer.Option("--full", help="changes-mode feeds: the full file (030) instead of "
                                                      "the changes against the current snapshot")] = False,
    day: Annotated[str | None, typer.Option("--date", help="interval day YYYY-MM-DD; default: today in the "
                                                             "feed's time zone")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="per file: name, members by maintenance type, "
                                                         "segments, control numbers, conformance verdict")] = False,
) -> None:
    """See what tonight's run will send: every stage up to the conformance gate, files written to --out.

    Nothing is sent, encrypted or recorded: no ledger row, no control number allocated (the number shown
    is the ledger's next one, read only, marked as a placeholder), the snapshot is read, never staged or
    advanced. The files hold member data unencrypted: delete them when done. Exit 0 when the gate
    passes (or there is nothing to send), 1 when the census would be rejected, 2 on a usage or
    configuration error, 3 when the gate fails.
    """
    from carrierfeeds.settings import load_bundle

    settings = Settings()
    try:
        bundle = load_bundle(settings, feed_id)
        as_of = _parse_day(day) if day else datetime.now(ZoneInfo(bundle.feed.timezone)).date()
        folder = _private_out(out)
        result = _preview_files(settings, bundle, census, folder, as_of=as_of, full=full, now=_utcnow())
    except CarrierFeedsError as exc:
        _fail(exc, as_json)
        return
    lines = [f"PREVIEW feed {result['feed_id']}  interval {result['interval_start']}: nothing sent, "
             "nothing recorded, snapshot unchanged",
             f"census: {result['validation']['rows']} rows, {result['validation']['held_back_members']} "
             "members held back by validation"
             + (f"; left out as expected: {_by_reason(result['validation']['excluded'])}"
                if result["validation"]["excluded"] else "")]
    if not result["files"]:
        lines.append("no changes against the carrier's snapshot: tonight's run would send nothing")
    for f in result["files"]:
        by_type = ", ".join(f"{k}: {v}" for k, v in sorted(f["members_by_type"].items()))
        size = (f"{f['segments']} segments" if f["segments"] is not None else
                f"{f['records']} records" if f["records"] is not None else f"{f.get('pages')} pages")
        lines += [f"file: {folder / f['name']}  ({f['format']}, {f['bytes']} bytes, {size})",
                  f"members: {f['members']} ({by_type})",
                  f"control number {f['control_numbers']['isa13']:09d}: {f['control_numbers']['note']}",
                  f"conformance: {f['conformance']['verdict']}"
                  + (f" ({f['conformance']['problems']} problem(s), first {f['conformance']['first']})"
                     if f["conformance"]["verdict"] != "passed" else "")]
    lines.append("the files above hold member data unencrypted: delete them when done")
    _emit(result, as_json, lines)
    raise typer.Exit(EXIT_OK if result["status"] in ("ok", "nothing_to_send") else EXIT_REFUSED)


@feeds_app.command("check")
def feeds_check(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Load every feed and the mapping, schema and suite each names; report every problem.

    Each suite is built by Great Expectations itself (a run evaluates common expectation types as masks
    and may never hand the suite to GX), so an edit GX would refuse is caught here, before any run.
    Every mapping in the mappings folder must load (a run judges plan codes by all of them), and a
    schema's ``plan_codes`` may map only onto plans some mapping lists (or its ``plans_not_sent``):
    a target no mapping knows would make every row of that plan an ``unknown_plan`` finding.
    """
    from carrierfeeds.config import CensusSchema, load_feed, load_mapping
    from carrierfeeds.settings import bundle_from_feed
    from carrierfeeds.validation import check_suite

    settings = Settings()
    results: list[dict[str, Any]] = []
    shared: list[dict[str, Any]] = []  # problems of files feeds share: mappings, schemas
    known: set[str] = set()
    for mapping_path in sorted(settings.mappings_dir.glob("*.yaml")):
        try:
            known.update(load_mapping(mapping_path).plans)
        except ConfigError as exc:
            shared.append({"file": str(mapping_path), "ok": False, "error": exc.message})
    schemas: dict[str, CensusSchema] = {}
    suites: dict[Path, ConfigError | None] = {}  # feeds sharing a suite build it once
    for path in feed_paths(settings):
        try:
            bundle = bundle_from_feed(settings, load_feed(path), path)
            schemas.setdefault(bundle.schema.schema_id, bundle.schema)
            if bundle.suite_path not in suites:
                try:
                    check_suite(bundle.suite_path)
                    suites[bundle.suite_path] = None
                except ConfigError as exc:
                    suites[bundle.suite_path] = exc
            if (refused := suites[bundle.suite_path]) is not None:
                raise refused
            _check_sql_login(settings, bundle.feed.census.source)
            results.append({"file": str(path), "ok": True})
        except (ConfigError, TransientError) as exc:
            results.append({"file": str(path), "ok": False, "error": exc.message})
    for schema_id, schema in sorted(schemas.items()):
        unknown = [(name, code) for name, code in schema.plan_codes.items()
                   if code not in known and code not in schema.plans_not_sent]
        if unknown:
            shared.append({"file": str(settings.schemas_dir / f"{schema_id}.yaml"), "ok": False, "error": "; ".join(
                f"plan_codes[{name!r}] maps to {code!r}, which no mapping in {settings.mappings_dir} lists "
                "(a typo? a plan the employer runs elsewhere goes in plans_not_sent)" for name, code in unknown)})
    ok = all(r["ok"] for r in results) and bool(results) and not shared
    lines = [f"{'ok  ' if r['ok'] else 'FAIL'} {r['file']}" + ("" if r["ok"] else f"\n     {r['error']}")
             for r in [*results, *shared]] or [f"no feeds in {settings.feeds_dir}"]
    _emit({"ok": ok, "feeds": results, "shared": shared}, as_json, lines)
    raise typer.Exit(EXIT_OK if ok else EXIT_USAGE)


def _check_sql_login(settings: Settings, source: Any) -> None:
    """A SQL census source's login must be read-only (census.sql_source); checked where its connection
    file is in the keys directory (an Airflow connection is checked by the run itself, before its query)."""
    from carrierfeeds.census.sources import load_sql_url
    from carrierfeeds.census.sql_source import read_only_login_problems
    from carrierfeeds.config import SqlSource

    if not isinstance(source, SqlSource) or not (settings.resolved_keys_dir / f"{source.connection_id}.json").exists():
        return
    problems = read_only_login_problems(load_sql_url(settings.resolved_keys_dir, source.connection_id))
    if problems:
        raise ConfigError("the login is not read-only: " + "; ".join(problems),
                          field=f"census.source (connection {source.connection_id})")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the ledger database to the current schema."""
    from carrierfeeds.pipeline import open_ledger

    settings = Settings()
    open_ledger(settings).close()
    typer.echo(f"ledger at {settings.resolved_ledger_url.split('@')[-1]} is up to date")


@audit_app.command("verify")
def audit_verify(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Walk the ledger's hash chain, check that it still holds every signed anchor of its head (kept
    outside the database), then anchor the head as it is now. Exit 5 on a broken link or a missing or
    rewritten anchored row."""
    from carrierfeeds.ledger.anchor import AnchorLog, verify_ledger
    from carrierfeeds.pipeline import open_ledger

    settings = Settings()
    try:
        result = verify_ledger(open_ledger(settings), AnchorLog.for_settings(settings), now=_utcnow(),
                               reason="audit-verify")
    except CarrierFeedsError as exc:
        _fail(exc, as_json)
        return
    verdict, anchors = result.chain, result.anchors
    broken = verdict.first_broken.as_dict() if verdict.first_broken is not None else None
    data = {"ok": result.ok, "chain_ok": verdict.ok, "rows_checked": verdict.rows_checked,
            "first_broken": broken, "head_seq": verdict.head_seq, "head_hash": verdict.head_hash,
            "anchors": anchors.as_dict(),
            "anchored_now": None if result.anchored is None else
            {"seq": result.anchored.seq, "head": result.anchored.head, "at": result.anchored.at}}
    lines = [f"chain {'intact' if verdict.ok else 'BROKEN'}: {verdict.rows_checked} rows checked; "
             f"head {verdict.head_seq} {verdict.head_hash}"]
    if not verdict.ok:
        lines.append(f"first broken link: {verdict.first_broken}")
    lines.append(f"anchors: {anchors}")
    if result.anchored is not None:
        lines.append(f"anchored seq {result.anchored.seq} in {AnchorLog.for_settings(settings).path}")
    _emit(data, as_json, lines)
    raise typer.Exit(EXIT_OK if result.ok else EXIT_FAILED)


# ------------------------------------------------------- auditors' views, legal holds, purge (issue 7)
hold_app = typer.Typer(help="Legal holds: block purging of an employer's or a feed's data.",
                       no_args_is_help=True)
app.add_typer(hold_app, name="hold")


def _audit_parties(settings: Settings) -> list[Any]:
    """Feed parties for labelling; an unreadable feed file is skipped here (the ledger still names it)."""
    from carrierfeeds.config import load_feed
    from carrierfeeds.retention import FeedParty

    parties = []
    for path in feed_paths(settings):
        try:
            parties.append(FeedParty.from_feed(load_feed(path)))
        except ConfigError:
            logging.getLogger(__name__).warning("feed file %s unreadable; labelled from the ledger", path.name)
    return parties


def _day_start(text: str | None) -> datetime | None:
    return datetime.combine(_parse_day(text), datetime.min.time(), tzinfo=UTC) if text else None


@audit_app.command("log")
def audit_log(
    feed: Annotated[str | None, typer.Option(help="only this feed")] = None,
    carrier: Annotated[str | None, typer.Option(help="only this carrier id")] = None,
    employer: Annotated[str | None, typer.Option(help="only this employer id")] = None,
    since: Annotated[str | None, typer.Option(help="first day YYYY-MM-DD (UTC), inclusive")] = None,
    until: Annotated[str | None, typer.Option(help="last day YYYY-MM-DD (UTC), inclusive")] = None,
    status: Annotated[str | None, typer.Option(help="only deliveries in this status "
                                                     "(pending, delivered, failed, reconciled, forced_resend)")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, json or csv")] = "table",
) -> None:
    """One line per delivery: times, outcome, acknowledgment, counts, hashes, fingerprints, actor."""
    from datetime import timedelta

    from carrierfeeds.audit import (
        acks_from_ledger,
        delivery_lines,
        feed_parties,
        lines_to_csv,
        lines_to_json,
        lines_to_table,
    )
    from carrierfeeds.pipeline import open_ledger

    if fmt not in ("table", "json", "csv"):
        raise typer.BadParameter("--format must be table, json or csv")
    settings = Settings()
    ledger = open_ledger(settings)
    end = _day_start(until)
    lines = delivery_lines(ledger, feed_id=feed, carrier_id=carrier, employer_id=employer,
                           since=_day_start(since), until=end + timedelta(days=1) if end else None,
                           status=status, parties=feed_parties(ledger, _audit_parties(settings)),
                           acks=acks_from_ledger(ledger))
    render = {"table": lines_to_table, "json": lines_to_json, "csv": lines_to_csv}[fmt]
    typer.echo(render(lines), nl=False)


@audit_app.command("report")
def audit_report(
    since: Annotated[str, typer.Option(help="first day YYYY-MM-DD (UTC), inclusive")],
    until: Annotated[str, typer.Option(help="last day YYYY-MM-DD (UTC), inclusive")],
    out: Annotated[Path, typer.Option(help="report.html or report.pdf")],
) -> None:
    """A readable report for a period: per carrier and employer, a chart per day, failures and resends."""
    from carrierfeeds.audit import acks_from_ledger, build_report, feed_parties, write_report
    from carrierfeeds.pipeline import open_ledger

    if out.suffix.lower() not in (".html", ".htm", ".pdf"):
        raise typer.BadParameter("--out must end in .html or .pdf")
    first, last = _parse_day(since), _parse_day(until)
    if last < first:
        raise typer.BadParameter("--until is before --since")
    settings = Settings()
    ledger = open_ledger(settings)
    from carrierfeeds.acknowledgments import carrier_ack_settings

    try:
        # "Late" is each carrier mapping's ack_window_hours, as for `carrierfeeds acks status`.
        windows = {f: c.window for c in carrier_ack_settings(settings) for f in c.feed_ids}
    except CarrierFeedsError as exc:
        _fail(exc, False)
        return
    from carrierfeeds.ledger.anchor import AnchorLog

    try:
        report = build_report(ledger, since=first, until=last, generated_at=_utcnow(),
                              parties=feed_parties(ledger, _audit_parties(settings)),
                              acks=acks_from_ledger(ledger), ack_windows=windows,
                              anchors=AnchorLog.for_settings(settings))
    except CarrierFeedsError as exc:
        _fail(exc, False)
        return
    write_report(report, out)
    t = report.totals
    typer.echo(f"wrote {out}: {t['deliveries']} deliveries, {t['failures']} failed attempts, "
               f"{t['forced_resends']} forced resends; chain {'intact' if report.chain_ok else 'BROKEN'}; "
               f"anchors: {report.anchor_status}")
    raise typer.Exit(EXIT_OK if report.chain_ok and report.anchors_ok else EXIT_FAILED)


@audit_app.command("show")
def audit_show(
    run_id: Annotated[str, typer.Argument(help="a run id (from `audit log` or `run --json`)")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Every stage, delivery outcome and audit event of one run, in order."""
    from carrierfeeds.audit import run_history
    from carrierfeeds.pipeline import open_ledger

    history = run_history(open_ledger(Settings()), run_id)
    if history is None:
        typer.echo(f"error: no run {run_id!r} in the ledger", err=True)
        raise typer.Exit(EXIT_USAGE)
    r = history.run
    lines = [f"run {r.run_id}  feed {r.feed_id}  interval {r.interval_start}..{r.interval_end}",
             f"status: {r.status}  attempts: {r.attempt}  started {r.started_at.isoformat()}",
             *(f"  {at.astimezone(UTC):%Y-%m-%d %H:%M:%S}  {text}" for _, at, text in history.timeline())]
    _emit(history.as_dict(), as_json, lines)


def _hold(employer: str | None, feed: str | None, reason: str, actor: str, held: bool) -> None:
    from carrierfeeds.pipeline import open_ledger
    from carrierfeeds.retention import set_hold

    if (employer is None) == (feed is None):
        raise typer.BadParameter("name exactly one of --employer or --feed")
    try:
        set_hold(open_ledger(Settings()), employer_id=employer, feed_id=feed, held=held, reason=reason,
                 actor=actor, now=_utcnow())
    except CarrierFeedsError as exc:
        _fail(exc, False)
    what = f"employer {employer}" if employer else f"feed {feed}"
    typer.echo(f"legal hold {'set on' if held else 'cleared from'} {what} (audited)")


@hold_app.command("set")
def hold_set(
    reason: Annotated[str, typer.Option(help="why (a ticket or matter number; recorded in the ledger)")],
    employer: Annotated[str | None, typer.Option(help="employer id")] = None,
    feed: Annotated[str | None, typer.Option(help="feed id")] = None,
    actor: Annotated[str, typer.Option(help="who places the hold, for the ledger")] = "cli",
) -> None:
    """Place a legal hold: nothing of this employer or feed is purged until it is cleared."""
    _hold(employer, feed, reason, actor, True)


@hold_app.command("clear")
def hold_clear(
    reason: Annotated[str, typer.Option(help="why the hold is lifted (recorded in the ledger)")],
    employer: Annotated[str | None, typer.Option(help="employer id")] = None,
    feed: Annotated[str | None, typer.Option(help="feed id")] = None,
    actor: Annotated[str, typer.Option(help="who lifts the hold, for the ledger")] = "cli",
) -> None:
    """Lift a legal hold recorded in the ledger (a hold in a feed file is lifted by editing the file)."""
    _hold(employer, feed, reason, actor, False)


@hold_app.command("list")
def hold_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Holds in force, from the ledger and from feed files."""
    from carrierfeeds.pipeline import open_ledger

    settings = Settings()
    held = [{"object_type": h.object_type, "object_id": h.object_id, "source": "ledger", "actor": h.actor,
             "reason": h.reason, "since": h.since.isoformat()} for h in open_ledger(settings).legal_holds()]
    held += [{"object_type": "employer", "object_id": p.employer_id, "source": f"feed {p.feed_id}",
              "actor": None, "reason": None, "since": None} for p in _audit_parties(settings) if p.legal_hold]
    _emit({"holds": held}, as_json, [f"{h['object_type']:<8} {h['object_id']:<24} {h['source']}"
                                     + (f"  since {h['since']} by {h['actor']}: {h['reason']}" if h["since"] else "")
                                     for h in held] or ["no legal holds"])


@app.command()
def purge(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list what would go; change nothing")] = False,
    as_of: Annotated[str | None, typer.Option(help="purge as of this day YYYY-MM-DD; default today (UTC)")] = None,
    retention_days: Annotated[int | None, typer.Option(
        min=0, help="days employee-level data is kept after a contract ends "
                    "(default: setting employee_data_retention_days, 90)")] = None,
    retention_years: Annotated[int | None, typer.Option(
        min=1, help="years ledger metadata is kept (default: setting ledger_retention_years, 7)")] = None,
    actor: Annotated[str, typer.Option(help="who runs the purge, for the ledger")] = "cli",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Purge employee-level files after contract end and ledger metadata after its retention period.

    A legal hold on the employer or feed blocks both. Every purge is audited (kind, counts, feed and
    employer; never the data). Run it with the ledger owner's database credentials.
    """
    from carrierfeeds.pipeline import open_ledger
    from carrierfeeds.retention import purge_with_settings

    settings = Settings()
    now = _utcnow()
    try:
        report = purge_with_settings(settings, open_ledger(settings),
                                     as_of=_parse_day(as_of) if as_of else now.date(), now=now, actor=actor,
                                     dry_run=dry_run, retention_days=retention_days,
                                     retention_years=retention_years)
    except CarrierFeedsError as exc:
        _fail(exc, as_json)
        return
    verb = "would purge" if dry_run else "purged"
    lines = [f"{'DRY RUN: ' if dry_run else ''}as of {report.as_of}"]
    for item in report.employee_data.items:
        label = {"purge": verb, "held": "kept (legal hold)", "unknown_feed": "kept (no feed file)",
                 "shared": "kept (another feed reads it)"}[item.action]
        lines.append(f"  {label:<20} {item.kind:<14} feed {item.feed_id:<28} employer {item.employer_id or '?':<16} "
                     f"{item.files} files")
    counts = ", ".join(f"{n} {t}" for t, n in report.ledger.counts.items()) or "nothing due"
    lines.append(f"  ledger metadata before {report.ledger_cutoff.date()}: {verb} {report.ledger.rows} rows "
                 f"({counts})")
    _emit(report.as_dict(), as_json, lines)


# ------------------------------------------------------- manual hand-offs and key checks (issue 5)
handoff_app = typer.Typer(help="Manual hand-offs: files for carriers without electronic intake.",
                          no_args_is_help=True)
keys_app = typer.Typer(help="PGP keys the feeds pin.", no_args_is_help=True)
app.add_typer(handoff_app, name="handoff")
app.add_typer(keys_app, name="keys")


@handoff_app.command("list")
def handoff_list(
    feed: Annotated[str | None, typer.Option(help="only this feed")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Files placed in the hand-off outbox that no person has confirmed handing over yet."""
    from carrierfeeds.pipeline import open_ledger

    pending = open_ledger(Settings()).pending_handoffs(feed_id=feed)
    rows = [{"delivery_id": d.delivery_id, "feed_id": d.feed_id, "interval_start": d.interval_start.isoformat(),
             "isa13": d.isa13, "file_name": d.file_name, "outbox_path": d.remote_path,
             "members": d.member_counts.get("members"), "placed_at": d.updated_at.isoformat()}
            for d in pending]
    lines = [f"{'DELIVERY ID':<32}  {'FEED':<28} {'INTERVAL':<10}  {'PLACED (UTC)':<16}  FILE"]
    lines += [f"{d.delivery_id:<32}  {d.feed_id:<28} {d.interval_start.isoformat():<10}  "
              f"{d.updated_at.astimezone(UTC):%Y-%m-%d %H:%M}  {d.remote_path or d.file_name}" for d in pending]
    _emit({"pending": rows}, as_json, lines if pending else ["no hand-offs pending"])


@handoff_app.command("confirm")
def handoff_confirm(
    delivery_id: Annotated[str, typer.Argument(help="the delivery id from `handoff list`")],
    by: Annotated[str, typer.Option(help="who handed the file over (recorded in the ledger)")],
    method: Annotated[str, typer.Option(help="how, e.g. courier, in-person, secure-portal (recorded)")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Record that a person handed a pending file over; audited. Exit 2 for an unknown id, 5 when the
    hand-off was already confirmed or the delivery is not a pending hand-off."""
    from carrierfeeds.ledger import UnknownRecord
    from carrierfeeds.pipeline import open_ledger

    try:
        record = open_ledger(Settings()).confirm_handoff(delivery_id, by=by, method=method, now=_utcnow())
    except UnknownRecord as exc:
        if as_json:
            typer.echo(json.dumps(exc.as_dict(), indent=2, sort_keys=True, default=str))
        else:
            typer.echo(f"error: no delivery {delivery_id!r} in the ledger (see `carrierfeeds handoff list`)",
                       err=True)
        raise typer.Exit(EXIT_USAGE) from None
    except CarrierFeedsError as exc:
        _fail(exc, as_json)
        return
    _emit({"delivery_id": record.delivery_id, "feed_id": record.feed_id, "status": record.status,
           "by": by, "method": method, "at": record.updated_at.isoformat()}, as_json,
          [f"delivery {record.delivery_id} ({record.feed_id}, {record.interval_start}) handed off by {by} "
           f"via {method} (audited)"])


def _recipient_problem(info: Any, spec: Any) -> str | None:
    """Why a usable-looking recipient key would still be refused at encrypt time, or None.

    The same tests as ``Keyring.require_recipient``: an encryption subkey, and the feed's optional
    user id and subkey pins.
    """
    from carrierfeeds.crypto import normalize_fingerprint

    if info.status not in ("ok", "expiring"):
        return None
    if not info.can_encrypt:
        return "no_encryption_subkey"
    if spec.recipient_user_id is not None and spec.recipient_user_id not in info.valid_user_ids:
        return "user_id_pin_mismatch"
    if spec.recipient_encryption_subkey is not None and \
            info.encryption_subkey != normalize_fingerprint(spec.recipient_encryption_subkey):
        return "subkey_pin_mismatch"
    return None


@keys_app.command("check")
def keys_check(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every feed's pinned recipient and signer key: fingerprint, expiry, days left, status.

    Exit 0 when every key is ok; 3 when any is missing, expired, revoked, a recipient key has no usable
    encryption subkey, or any expires within its feed's ``encryption.expiry_warning_days`` (status
    "expiring": runs still work, but renew now); 2 when a feed file is broken, there are no feeds, or
    the gpg home is unusable.
    """
    from carrierfeeds.config import load_feed
    from carrierfeeds.crypto import Keyring

    settings = Settings()
    now = _utcnow()
    try:
        keyring = Keyring(settings.resolved_gnupg_home)
    except CarrierFeedsError as exc:
        _fail(exc, as_json)
        return
    keys: list[dict[str, Any]] = []
    broken: list[dict[str, Any]] = []
    for path in feed_paths(settings):
        try:
            feed = load_feed(path)
        except ConfigError as exc:
            broken.append({"file": str(path), "error": exc.message})
            continue
        spec = feed.encryption
        for role, fpr in (("recipient", spec.recipient_fingerprint), ("signer", spec.signer_fingerprint)):
            info = keyring.inspect(fpr, now=now, warning_days=spec.expiry_warning_days)
            problem = _recipient_problem(info, spec) if role == "recipient" else None
            keys.append({"feed_id": feed.feed_id, "role": role, "fingerprint": info.fingerprint,
                         "user_ids": list(info.user_ids), "status": info.status, "problem": problem,
                         "expires": info.expires.isoformat() if info.expires else None,
                         "days_left": info.days_left, "warning_days": spec.expiry_warning_days,
                         "ok": info.status == "ok" and problem is None})
    failing = [k for k in keys if not k["ok"]]
    code = EXIT_REFUSED if failing else EXIT_USAGE if broken or not keys else EXIT_OK
    lines = [f"{'FEED':<28} {'ROLE':<9} {'FINGERPRINT':<40}  {'EXPIRES':<10} {'DAYS':>5}  STATUS"]
    lines += [f"{k['feed_id']:<28} {k['role']:<9} {k['fingerprint']:<40}  "
              f"{(k['expires'] or 'never')[:10]:<10} {'' if k['days_left'] is None else k['days_left']:>5}  "
              f"{k['status']}" + (f" ({k['problem']})" if k["problem"] else "") for k in keys]
    lines += [f"FAIL {b['file']}: {b['error']}" for b in broken]
    if not keys and not broken:
        lines = [f"no feeds in {settings.feeds_dir}"]
    lines.append(f"{len(keys) - len(failing)} of {len(keys)} keys ok" + (
        f"; {len(failing)} need attention" if failing else ""))
    _emit({"ok": code == EXIT_OK, "keys": keys, "broken_feeds": broken, "checked_at": now.isoformat()},
          as_json, lines)
    raise typer.Exit(code)


# ------------------------------------------------------------------------------ acknowledgments (TA1/999)
acks_app = typer.Typer(help="Carriers' TA1/999 acknowledgments: collect, match, report.", no_args_is_help=True)
app.add_typer(acks_app, name="acks")


def _ack_exit(alerts: Any) -> int:
    """0 nothing needs attention; 4 a source could not be read (retry); 1 anything else to act on."""
    errors = [a for a in alerts if a.severity == "error"]
    if not errors:
        return EXIT_OK
    if all(a.kind == "fetch_failed" for a in errors):
        return EXIT_TRANSIENT
    return EXIT_REJECTED


@acks_app.command("collect")
def acks_collect(
    feed: Annotated[list[str] | None, typer.Option(help="only the carriers of these feeds")] = None,
    from_dir: Annotated[Path | None, typer.Option(help="read this local folder instead of the configured "
                                                       "sources (e.g. a file ops received by hand)")] = None,
    source_id: Annotated[str, typer.Option(help="with --from-dir: the name the files are recorded under")] = "manual",
    encrypted: Annotated[bool, typer.Option(help="with --from-dir: files are PGP-encrypted to our key")] = False,
    signer: Annotated[str | None, typer.Option(help="with --from-dir --encrypted: the carrier's signing key "
                                                    "fingerprint every file must be signed with")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable result")] = False,
) -> None:
    """Collect new acknowledgment files, match each to its delivery, record them, and alert.

    Each file is processed once (by its sha256). Exit 0 when nothing needs attention, 1 when a file
    was rejected or partly accepted, an acknowledgment matched nothing, was unreadable, was set aside
    over a cap (``acks`` spec: max_file_bytes, max_decompressed_bytes) or is overdue, 4 when a source
    could not be read (retry), 2 on a configuration error.
    """
    from carrierfeeds.acknowledgments import LocalAckInbox, PollResult, collect_acks, poll_acks
    from carrierfeeds.pipeline import open_ledger

    settings = Settings()
    now = _utcnow()
    try:
        if from_dir is not None:
            from carrierfeeds.changes import SnapshotStore
            from carrierfeeds.crypto import Keyring

            ledger = open_ledger(settings)
            report = collect_acks(ledger, LocalAckInbox(from_dir), source_id=source_id, now=now,
                                  encrypted=encrypted,
                                  keyring=Keyring(settings.resolved_gnupg_home) if encrypted else None,
                                  require_signer=signer, archive_dir=settings.data_dir / "acks",
                                  snapshots=SnapshotStore.for_settings(settings))
            result = PollResult(reports=(report,), overdue=(), alerts=report.alerts)
        else:
            result = poll_acks(settings, now=now, feed_ids=feed)
    except CarrierFeedsError as exc:
        _fail(exc, as_json)
        return
    lines: list[str] = []
    for r in result.reports:
        lines.append(f"{r.source_id}: {len(r.files)} file(s): {r.count('recorded')} new, "
                     f"{r.count('duplicate')} already seen, {r.count('failed')} failed"
                     + (f", {r.count('set_aside')} set aside (over a cap)" if r.count("set_aside") else "")
                     + (f", {r.count('deferred')} left for the next poll" if r.count("deferred") else ""))
        for f in r.files:
            for row in f.rows:
                lines.append(f"  {f.file_name}  {row.kind:<10} control {row.control_number}  {row.status:<20} "
                             f"delivery {row.delivery_id or 'NONE'}")
    lines.extend(f"no acks source configured for {s}" for s in result.skipped)
    lines.extend(f"{a.severity.upper()} {a.kind}: {a.message}" for a in result.alerts)
    _emit(result.as_dict(), as_json, lines or ["nothing to collect"])
    raise typer.Exit(_ack_exit(result.alerts))


@acks_app.command("status")
def acks_status(
    feed: Annotated[str | None, typer.Option(help="only this feed")] = None,
    overdue: Annotated[bool, typer.Option("--overdue", help="only deliveries whose acknowledgment is late")] = False,
    since: Annotated[str | None, typer.Option(help="deliveries sent on or after this day (YYYY-MM-DD)")] = None,
    window_hours: Annotated[int | None, typer.Option(min=1, help="override every carrier's window (hours)")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table or json")] = "table",
) -> None:
    """Each delivered file and what its carrier said: accepted, rejected, partial, awaiting or overdue.

    Exit 0, or 1 when any listed delivery is rejected, partial or overdue.
    """
    from datetime import timedelta

    from carrierfeeds.acknowledgments import DEFAULT_WINDOW, ack_status, carrier_ack_settings, feeds_without_source
    from carrierfeeds.pipeline import open_ledger

    if fmt not in ("table", "json"):
        raise typer.BadParameter("--format must be table or json")
    settings = Settings()
    now = _utcnow()
    try:
        carriers = carrier_ack_settings(settings)
        windows = {f: c.window for c in carriers for f in c.feed_ids}
        if window_hours is not None:
            windows = {f: timedelta(hours=window_hours) for f in windows}
        default = timedelta(hours=window_hours) if window_hours is not None else DEFAULT_WINDOW
        start = datetime.combine(_parse_day(since), datetime.min.time(), tzinfo=UTC) if since else None
        rows = ack_status(open_ledger(settings), now=now, windows=windows, default_window=default,
                          feed_id=feed, since=start, no_source=feeds_without_source(carriers))
    except CarrierFeedsError as exc:
        _fail(exc, fmt == "json")
        return
    if overdue:
        rows = [r for r in rows if r.status == "overdue"]
    if fmt == "json":
        typer.echo(json.dumps([r.as_dict() for r in rows], indent=2, sort_keys=True, default=str))
    else:
        typer.echo(f"{'delivered_at':<20}  {'feed':<24}  {'isa13':>9}  {'status':<20}  {'ta1':<9}  "
                   f"{'seg_err':>7}  due")
        for r in rows:
            typer.echo(f"{r.delivered_at.strftime('%Y-%m-%d %H:%M'):<20}  {r.feed_id[:24]:<24}  {r.isa13:>9}  "
                       f"{r.status:<20}  {r.interchange or '-':<9}  {r.segment_errors:>7}  "
                       f"{r.due_at.strftime('%Y-%m-%d %H:%M')}")
        if not rows:
            typer.echo("no deliveries" + (" overdue" if overdue else ""))
    bad = any(r.status in ("rejected", "partial", "overdue") for r in rows)
    raise typer.Exit(EXIT_REJECTED if bad else EXIT_OK)


import carrierfeeds.cli_console  # noqa: E402  registers `carrierfeeds console` and `console-user`
import carrierfeeds.cli_status  # noqa: E402, F401  registers `carrierfeeds status` on app


def main() -> None:
    """Console-script entry point."""
    import sqlalchemy as sa

    from carrierfeeds.hardening import disable_core_dumps

    disable_core_dumps()  # this process reads censuses, decrypts acknowledgments and holds keys
    try:
        app()
    except CarrierFeedsError as exc:  # a stage error outside a command's own handling
        typer.echo(f"error: {exc.message}", err=True)
        sys.exit(exit_code_for(exc))
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        # The ledger answered when opened and went away later: one line, and a retry may fix it.
        settings = Settings()
        setting = "CARRIERFEEDS_LEDGER_URL" if settings.ledger_url else "CARRIERFEEDS_DATA_DIR"
        from carrierfeeds.ledger.store import connect_failure

        failure = connect_failure(settings.resolved_ledger_url, exc, setting=setting)
        typer.echo(f"error: {failure.message}", err=True)
        sys.exit(exit_code_for(failure))
