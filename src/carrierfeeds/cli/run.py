"""`run`, `demo`, `generate-census`, `validate` and `preview`: one feed's census, end to end or up to a stage."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer

from carrierfeeds.cli.common import _by_reason, _emit, _fail, _parse_day, _utcnow, app, progress_display
from carrierfeeds.errors import CarrierFeedsError, ConfigError
from carrierfeeds.outcomes import STATUS_EXIT, ExitCode, RunStatus, exit_code_for_run
from carrierfeeds.progress import step
from carrierfeeds.settings import Settings

#: What a finished run's ``remote_path`` is, by its status; a run that did not deliver names none.
_PLACED = {RunStatus.DELIVERED: "delivered to", RunStatus.ALREADY_DELIVERED: "delivered earlier to",
           RunStatus.PENDING_HANDOFF: "placed for hand-off in", RunStatus.HANDED_OFF: "handed off from"}


def _summary_lines(summary: Any) -> list[str]:
    code = exit_code_for_run(summary.status, summary.error)
    # the status the ledger holds, and the exit code when it is not the status's own (a run refused by
    # its configuration exits 2, not 3; a failed run that may be retried exits 4, not 5)
    lines = [f"run {summary.run_id}  feed {summary.feed_id}  interval {summary.interval_start}",
             f"status: {summary.status}" + ("" if code == STATUS_EXIT.get(summary.status, code)
                                            else f" (exit {int(code)}: {code.meaning})")]
    if summary.members:
        lines.append(f"members: {summary.members} ({summary.subscribers} subscribers, "
                     f"{summary.coverages} coverage lines)")
    if summary.file_name:
        lines.append(f"file: {summary.file_name}  ISA13 {summary.isa13}")
        lines.append(f"payload sha256: {summary.payload_sha256}")
    where = _PLACED.get(summary.status)
    if summary.remote_path and where:  # only where this run's status says the file went there
        lines.append(f"{where}: {summary.remote_path}"
                     + ("  (the carrier's test endpoint)" if summary.endpoint == "test" else ""))
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
    """Run every stage of one feed for one day: read, validate, build, check, encrypt, deliver.

    Exit 0 when delivered, already delivered earlier (nothing is sent twice) or there is no new census;
    1 when the census is rejected (the employer must fix the data); 2 on a usage or configuration error;
    3 when a security or policy check refuses (key, host key, authorisation, conformance); 4 on a
    transient failure (retry later); 5 on a permanent failure of an outside system.
    """
    from carrierfeeds.run.context import STAGES, RunRef
    from carrierfeeds.run.stages import run_feed
    from carrierfeeds.settings import load_bundle

    settings = Settings()
    try:
        bundle = load_bundle(settings, feed_id)
        if bundle.mapping.aggregation is not None:  # before a run is opened: the aggregate owns this one
            raise _one_employer(feed_id, bundle.mapping.mapping_id)
        interval = _parse_day(day) if day else datetime.now(ZoneInfo(bundle.feed.timezone)).date()
        with progress_display(f"run {feed_id}", len(STAGES)):
            summary = run_feed(settings, RunRef.for_day(feed_id, interval), clock=_utcnow, actor=actor,
                               census_path=census, force_reason=force_resend, full_file=full_file,
                               force_census=force_census)
    except CarrierFeedsError as exc:
        _fail(exc, as_json)
        return
    _emit(summary.as_dict(), as_json, _summary_lines(summary))
    raise typer.Exit(exit_code_for_run(summary.status, summary.error))


def _one_employer(feed_id: str, mapping_id: str) -> ConfigError:
    return ConfigError(f"feed {feed_id} is one employer of carrier file {mapping_id!r} (mapping aggregation): it is "
                       f"sent only within that file; run it with `carrierfeeds run-aggregate {mapping_id}`",
                       field="mapping_id")


@app.command("run-aggregate")
def run_aggregate_cmd(
    mapping_id: Annotated[str, typer.Argument(help="an aggregation mapping (file name without .yaml): one "
                                                   "carrier file for every feed naming it")],
    census: Annotated[list[str] | None, typer.Option(help="FEED_ID=PATH, an employer's census file (always "
                                                          "processed); default: each feed's source")] = None,
    force_census: Annotated[bool, typer.Option("--force-census", help="process each source's newest census "
                                                                      "although it was processed before")] = False,
    day: Annotated[str | None, typer.Option("--date", help="interval day YYYY-MM-DD; default: today in the "
                                                             "employers' (shared) time zone")] = None,
    full_file: Annotated[bool, typer.Option("--full-file", help="changes-mode mappings: every employer's full "
                                                                 "file (030) this time")] = False,
    actor: Annotated[str, typer.Option(help="who runs this, for the ledger")] = "cli",
    as_json: Annotated[bool, typer.Option("--json", help="print a machine-readable summary")] = False,
) -> None:
    """Run a carrier aggregator's file for one day: every employer's census, one file, delivered once.

    Each employer's census is staged and validated under its own run; one aggregate run (its feed id
    is the mapping id) builds one interchange with one transaction set per employer, gates, encrypts
    and delivers it exactly once; each included employer's run then records its share and ends
    delivered. Under ``on_employer_failure: isolate`` an employer whose census is rejected, who has not
    authorised the carrier or has nothing to send is left out and the others go; under ``reject_all``
    the file is refused. Exit codes as `run` (of the aggregate's run).
    """
    from carrierfeeds.run.aggregate import aggregate_bundles
    from carrierfeeds.run.aggregate_run import AGGREGATE_STAGES, run_aggregate

    settings = Settings()
    try:
        pairs = dict(item.split("=", 1) for item in census or [] if "=" in item)
        if len(pairs) != len(census or []):
            raise ConfigError("--census takes FEED_ID=PATH", field="--census")
        employers = aggregate_bundles(settings, mapping_id)
        interval = _parse_day(day) if day else datetime.now(ZoneInfo(employers[0].feed.timezone)).date()
        # each employer's stage_census, validate, deliver (its share) and confirm, and the aggregate's own
        with progress_display(f"run-aggregate {mapping_id}", 4 * len(employers) + len(AGGREGATE_STAGES)):
            summary = run_aggregate(settings, mapping_id, interval, clock=_utcnow, actor=actor,
                                    censuses={k: Path(v) for k, v in pairs.items()}, full_file=full_file,
                                    force_census=force_census)
    except CarrierFeedsError as exc:
        _fail(exc, as_json)
        return
    lines = _summary_lines(summary.run)
    for e in summary.employers:
        lines.append(f"  {e['feed_id']}: {e['status']}" + (f" ({e['error_code']})" if e["error_code"] else "")
                     + (f", ST02 {', '.join(f'{n:04d}' for n in e['st02'])}, {e['members']} members"
                        if e["st02"] else ""))
    _emit(summary.as_dict(), as_json, lines)
    raise typer.Exit(exit_code_for_run(summary.run.status, summary.run.error))


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="where the demo keeps its keys, sshd, ledger")] = Path("var/demo"),
    members: Annotated[int, typer.Option(min=1, help="people in the synthetic census")] = 250,
    seed: Annotated[int, typer.Option(help="census generator seed")] = 7,
    reset: Annotated[bool, typer.Option("--reset", help="delete a previous demo in --workdir (its ledger and "
                                                         "keys too) and start again; without it a previous demo "
                                                         "is kept (asked on a terminal, exit 2 otherwise)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="the result as JSON, no progress lines")] = False,
) -> None:
    """Run the demo feed end to end on this machine: keys, sshd, census, 834, delivery, round trip.

    Ends by printing the settings (export lines) that point `audit`, `status` and `run` at the demo's
    workspace. Exit 0 when the round trip checks out, 2 when --workdir holds a previous demo and
    neither --reset nor a yes at the terminal allows deleting it, 5 when the demo failed.
    """
    import sys

    from carrierfeeds.demo import run_demo

    ask = (lambda question: typer.confirm(question, default=False, err=True)) \
        if not as_json and sys.stdin.isatty() and sys.stderr.isatty() else None
    try:
        result = run_demo(workdir.resolve(), members=members, seed=seed, clock=_utcnow,
                          say=None if as_json else typer.echo, reset=reset, ask=ask)
    except CarrierFeedsError as exc:
        _fail(exc, as_json)
        return
    if as_json:
        typer.echo(json.dumps(result, indent=2, sort_keys=True, default=str))
    raise typer.Exit(ExitCode.OK if result["ok"] else ExitCode.FAILED)


@app.command("generate-census")
def generate_census_cmd(
    members: Annotated[int, typer.Option(min=1, help="number of people (subscribers and dependents)")],
    seed: Annotated[int, typer.Option(help="random seed: same seed, same census")] = 1,
    out: Annotated[Path, typer.Option(help="CSV file to write")] = Path("census.csv"),
    as_of: Annotated[str | None, typer.Option(help="reference day YYYY-MM-DD; default today (UTC)")] = None,
    volumes: Annotated[bool, typer.Option("--volumes", help="also basic life, short- and long-term disability "
                                                            "lines (LIFE-BASIC, STD-CORE, LTD-CORE) with benefit "
                                                            "amounts, premiums and a few EOI holds")] = False,
    id_prefix: Annotated[str, typer.Option(help="one to three letters starting every member id; give each "
                                                "employer of an aggregated carrier file its own")] = "E",
) -> None:
    """Write a synthetic employer census (fake but well-formed values; never real people)."""
    from carrierfeeds.census.generate import generate_census_csv

    day = _parse_day(as_of) if as_of else _utcnow().date()
    with progress_display(f"generate-census {members} people", 1):
        step("generate and write CSV")  # in blocks of a million people: memory stays that of one block
        try:
            rows = generate_census_csv(members, seed, out, as_of=day, volumes=volumes, id_prefix=id_prefix)
        except ValueError as exc:
            _fail(ConfigError(str(exc), field="--id-prefix"), False)
            return
    typer.echo(f"wrote {rows} rows for {members} members to {out}")


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
    from carrierfeeds.run.context import RunRef
    from carrierfeeds.settings import load_bundle, plan_catalogue
    from carrierfeeds.validation import CarrierRules, apply_policy, validate_census

    settings = Settings()
    try:
        bundle = load_bundle(settings, feed_id)
        interval = _parse_day(day) if day else datetime.now(ZoneInfo(bundle.feed.timezone)).date()
        # the day a run of this interval validates against (run.stages.validate: as_of=ref.interval_start)
        as_of = RunRef.for_day(feed_id, interval).interval_start
        with progress_display(f"validate {feed_id}", 4 if report else 3):
            step("read census")
            frame = read_census(census, bundle.schema)
            tokenizer = MemberTokenizer.from_key_file(settings.resolved_token_key_file)
            step("validate")
            result = validate_census(frame, bundle.suite_path, bundle.schema, tokenizer, as_of=as_of,
                                     source_name=census.name, plans=plan_catalogue(settings, bundle),
                                     carrier=CarrierRules.for_feed(bundle.mapping, bundle.feed.authorization.plans,
                                                                   output_format=bundle.feed.output.format))
            step("apply policy")
            outcome = apply_policy(frame, result, bundle.feed.validation)
            if not outcome.rejected:
                result, outcome = _as_the_build_would(frame, result, outcome, bundle, as_of, tokenizer)
            if report:
                step("write report")
                report.mkdir(parents=True, exist_ok=True, mode=0o700)
                result.write_csv(report / "validation.csv")
                result.write_html(report / "validation.html")
    except CarrierFeedsError as exc:
        _fail(exc, as_json)
        return
    data = {**result.to_dict(), "interval_start": as_of.isoformat(), "policy": bundle.feed.validation.policy,
            "rejected": outcome.rejected, "held_back_members": outcome.held_back_members}
    lines = [f"{census.name}: {result.rows} rows, {result.members} members, {result.families} families "
             f"(rules as of {as_of.isoformat()})",
             f"{len(result.findings)} finding(s) in {result.failed_rows} rows, {result.failed_families} families",
             *([f"left out as expected: {_by_reason(result.excluded)}"] if result.excluded else []),
             *[f"warning: {w}" for w in result.warnings],
             *(["by rule:"] if result.rule_counts else []),
             *[f"  {rule:<28} {n:>7}  {cols}" for rule, cols, n in result.by_rule()],
             *[f"  row {f.row:>7}  {f.member_token}  {result.label(f.column):<18} {f.rule:<28} {f.message}"
               + (f" (code in the file: {f.value!r})" if f.value is not None else "")
               for f in result.findings[:50]],
             *([f"  ... and {len(result.findings) - 50} more (see --report)"] if len(result.findings) > 50 else []),
             f"policy {bundle.feed.validation.policy}: {'REJECTED' if outcome.rejected else 'accepted'}"
             + (f" ({outcome.held_back_members} members held back)" if outcome.held_back_members else "")]
    _emit(data, as_json, lines)
    raise typer.Exit(ExitCode.REJECTED if outcome.rejected else ExitCode.OK)


def _as_the_build_would(frame: Any, result: Any, outcome: Any, bundle: Any, as_of: Any, tokenizer: Any
                        ) -> tuple[Any, Any]:
    """The report and policy outcome once the run's build has seen the accepted rows: a census the build
    refuses (a value the carrier's options need in a form the rules above do not check, such as an
    e-mail address, an amount or a status code) fails the run, whatever the policy, so ``validate``
    says so too: one more finding (the first row the build names, its column and rule) and a rejection."""
    import dataclasses

    import pandas as pd

    from carrierfeeds.census.columns import ROW_NUMBER
    from carrierfeeds.enrollment import build_enrollment
    from carrierfeeds.errors import DataError
    from carrierfeeds.validation import HEADER_ROW, Finding

    try:
        build_enrollment(outcome.accepted, bundle.feed, bundle.mapping, as_of=as_of)
    except DataError as exc:
        row = exc.row if exc.row is not None else HEADER_ROW
        ids = frame.loc[frame[ROW_NUMBER] == row, "member_id"] if "member_id" in frame.columns else []
        token = tokenizer.tokens(pd.Series(list(ids)[:1], dtype="str")).tolist()[0] if len(ids) else ""
        rule = exc.rule or "build"
        finding = Finding(row=row, member_token=token, column=exc.column or "", rule=rule,
                          message=f"the run's build refuses the census here: {exc.message.split(': ', 1)[-1]}")
        counts = dict(result.rule_counts)
        counts[rule] = counts.get(rule, 0) + 1
        result = dataclasses.replace(result, findings=(*result.findings, finding), rule_counts=counts,
                                     failed_rows=result.failed_rows + 1)
        outcome = dataclasses.replace(outcome, rejected=True, reason="the run's build refuses the census")
    return result, outcome


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
    from carrierfeeds.run.preview import preview_files
    from carrierfeeds.settings import load_bundle

    settings = Settings()
    try:
        bundle = load_bundle(settings, feed_id)
        as_of = _parse_day(day) if day else datetime.now(ZoneInfo(bundle.feed.timezone)).date()
        folder = _private_out(out)
        with progress_display(f"preview {feed_id}", 5):
            result = preview_files(settings, bundle, census, folder, as_of=as_of, full=full, now=_utcnow())
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
    raise typer.Exit(ExitCode.OK if result["status"] in ("ok", RunStatus.NOTHING_TO_SEND) else ExitCode.REFUSED)




@app.command("preview-aggregate")
def preview_aggregate_cmd(
    mapping_id: Annotated[str, typer.Argument(help="an aggregation mapping (file name without .yaml): one "
                                                   "carrier file for every feed naming it")],
    census: Annotated[list[str], typer.Option(help="FEED_ID=PATH, once per employer with a census tonight")],
    out: Annotated[Path, typer.Option(help="folder for the file (created 0700; the file 0600, unencrypted)")],
    full: Annotated[bool, typer.Option("--full", help="changes-mode mappings: every employer's full file "
                                                      "(030) instead of its changes")] = False,
    day: Annotated[str | None, typer.Option("--date", help="interval day YYYY-MM-DD; default: today (UTC)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="per employer: included or left out (by reason), "
                                                         "members; the file's conformance verdict")] = False,
) -> None:
    """See tonight's aggregated carrier file: one interchange, one transaction set per employer.

    Each employer's census is validated and built as its own feed would be; under the mapping's
    ``on_employer_failure: isolate`` a rejected or unauthorised employer is left out and the others go.
    Nothing is sent or recorded. Exit 0 when the gate passes (or there is nothing to send), 1 when an
    employer's census is rejected under ``reject_all``, 2 on a usage or configuration error, 3 when the
    gate fails or an employer has not authorised the carrier under ``reject_all``.
    """
    from carrierfeeds.run.aggregate import preview_aggregate

    settings = Settings()
    try:
        pairs = dict(item.split("=", 1) for item in census if "=" in item)
        if len(pairs) != len(census):
            raise ConfigError("--census takes FEED_ID=PATH", field="--census")
        as_of = _parse_day(day) if day else _utcnow().date()
        folder = _private_out(out)
        result = preview_aggregate(settings, mapping_id, {k: Path(v) for k, v in pairs.items()}, folder,
                                   as_of=as_of, now=_utcnow(), full=full)
    except CarrierFeedsError as exc:
        _fail(exc, as_json)
        return
    lines = [f"PREVIEW carrier file {mapping_id}  interval {result['interval_start']}: nothing sent, nothing recorded"]
    for e in result["employers"]:
        lines.append(f"  {e['feed_id']}: {e['status']}" + (f" ({e['reason']})" if e["reason"] else
                                                            f", {e['members']} members"))
    for f in result["files"]:
        lines += [f"file: {folder / f['name']}  ({f['bytes']} bytes, {f['transaction_sets']} transaction sets, "
                  f"{f['members']} members)", f"conformance: {f['conformance']['verdict']}"]
    lines.append("the file above holds member data unencrypted: delete it when done")
    _emit(result, as_json, lines)
    raise typer.Exit(ExitCode.OK if result["status"] in ("ok", RunStatus.NOTHING_TO_SEND) else ExitCode.REFUSED)
