"""The ops and auditor command line: ``carrierfeeds --help``. Exit codes mean the same everywhere.

    0  done (delivered, or already delivered earlier: nothing sent twice)
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

STATUS_EXIT = {"delivered": EXIT_OK, "already_delivered": EXIT_OK, "handed_off": EXIT_OK,
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
    # Third parties log their own chatter at INFO (GX's temporary docs site, paramiko's transport).
    for noisy in ("great_expectations", "paramiko"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


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
    if summary.error:
        lines.append(f"why: {summary.error['message']}")
    return lines


@app.command()
def run(
    feed_id: Annotated[str, typer.Argument(help="a feed in the feeds folder (file name without .yaml)")],
    census: Annotated[Path | None, typer.Option(help="census file; default: newest in the feed's source")] = None,
    day: Annotated[str | None, typer.Option("--date", help="interval day YYYY-MM-DD; default: today "
                                                             "in the feed's time zone")] = None,
    force_resend: Annotated[str | None, typer.Option(help="send again although already delivered; "
                                                         "the reason is audited")] = None,
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
                           census_path=census, force_reason=force_resend)
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
    day: Annotated[str | None, typer.Option("--date", help="reference day for age rules; default today")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="counts and failing rows as JSON")] = False,
) -> None:
    """Validate a census exactly as a run would, without building or sending anything.

    Exit 0 when the census passes the feed's policy, 1 when it would be rejected, 2 on a usage or
    configuration error. The report names rows, member tokens, columns and rules, never values.
    """
    from carrierfeeds.census.readers import read_census
    from carrierfeeds.census.tokens import MemberTokenizer
    from carrierfeeds.settings import load_bundle
    from carrierfeeds.validation import apply_policy, validate_census

    settings = Settings()
    try:
        bundle = load_bundle(settings, feed_id)
        as_of = _parse_day(day) if day else datetime.now(ZoneInfo(bundle.feed.timezone)).date()
        frame = read_census(census, bundle.schema)
        tokenizer = MemberTokenizer.from_key_file(settings.resolved_token_key_file)
        result = validate_census(frame, bundle.suite_path, bundle.schema, tokenizer, as_of=as_of,
                                 source_name=census.name)
    except CarrierFeedsError as exc:
        _fail(exc, as_json)
        return
    outcome = apply_policy(frame, result, bundle.feed.validation)
    if report:
        report.mkdir(parents=True, exist_ok=True, mode=0o700)
        result.write_csv(report / "validation.csv")
        result.write_html(report / "validation.html")
    data = {**result.to_dict(), "policy": bundle.feed.validation.policy, "rejected": outcome.rejected,
            "held_back_members": outcome.held_back_members}
    lines = [f"{census.name}: {result.rows} rows, {result.members} members, {result.families} families",
             f"{len(result.findings)} finding(s) in {result.failed_rows} rows, {result.failed_families} families",
             *[f"  row {f.row:>7}  {f.member_token}  {f.column:<18} {f.rule:<28} {f.message}"
               for f in result.findings[:50]],
             *([f"  ... and {len(result.findings) - 50} more (see --report)"] if len(result.findings) > 50 else []),
             f"policy {bundle.feed.validation.policy}: {'REJECTED' if outcome.rejected else 'accepted'}"
             + (f" ({outcome.held_back_members} members held back)" if outcome.held_back_members else "")]
    _emit(data, as_json, lines)
    raise typer.Exit(EXIT_REJECTED if outcome.rejected else EXIT_OK)


@feeds_app.command("check")
def feeds_check(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Load every feed and the mapping, schema and suite each names; report every problem."""
    from carrierfeeds.config import load_feed
    from carrierfeeds.settings import bundle_from_feed

    settings = Settings()
    results: list[dict[str, Any]] = []
    for path in feed_paths(settings):
        try:
            bundle_from_feed(settings, load_feed(path), path)
            results.append({"file": str(path), "ok": True})
        except ConfigError as exc:
            results.append({"file": str(path), "ok": False, "error": exc.message})
    ok = all(r["ok"] for r in results) and bool(results)
    lines = [f"{'ok  ' if r['ok'] else 'FAIL'} {r['file']}" + ("" if r["ok"] else f"\n     {r['error']}")
             for r in results] or [f"no feeds in {settings.feeds_dir}"]
    _emit({"ok": ok, "feeds": results}, as_json, lines)
    raise typer.Exit(EXIT_OK if ok else EXIT_USAGE)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the ledger database to the current schema."""
    from carrierfeeds.pipeline import open_ledger

    settings = Settings()
    open_ledger(settings).close()
    typer.echo(f"ledger at {settings.resolved_ledger_url.split('@')[-1]} is up to date")


@audit_app.command("verify")
def audit_verify(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Walk the ledger's hash chain and name the first broken link, if any."""
    from carrierfeeds.pipeline import open_ledger

    verdict = open_ledger(Settings()).verify_chain()
    broken = verdict.first_broken.as_dict() if verdict.first_broken is not None else None
    data = {"ok": verdict.ok, "rows_checked": verdict.rows_checked, "first_broken": broken,
            "head_seq": verdict.head_seq, "head_hash": verdict.head_hash}
    _emit(data, as_json, [f"chain {'intact' if verdict.ok else 'BROKEN'}: {verdict.rows_checked} rows checked; "
                          f"head {verdict.head_seq} {verdict.head_hash}"]
          + ([f"first broken link: {verdict.first_broken}"] if not verdict.ok else []))
    raise typer.Exit(EXIT_OK if verdict.ok else EXIT_FAILED)


@audit_app.command("log")
def audit_log(
    feed: Annotated[str | None, typer.Option(help="only this feed")] = None,
    status: Annotated[str | None, typer.Option(help="only deliveries in this status")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table or json")] = "table",
) -> None:
    """One line per delivery: when, what, to whom, outcome, hashes and fingerprints."""
    from dataclasses import asdict

    from carrierfeeds.pipeline import open_ledger

    rows = [asdict(d) for d in open_ledger(Settings()).deliveries(feed_id=feed, status=status)]
    if fmt == "json":
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    cols = ("created_at", "feed_id", "interval_start", "isa13", "status", "file_name", "payload_sha256")
    typer.echo("  ".join(cols))
    for r in rows:
        typer.echo("  ".join(str(r[c])[:24] if c == "created_at" else str(r[c])[:16] if c.endswith("sha256")
                             else str(r[c]) for c in cols))


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except CarrierFeedsError as exc:  # a stage error outside a command's own handling
        typer.echo(f"error: {exc.message}", err=True)
        sys.exit(exit_code_for(exc))
