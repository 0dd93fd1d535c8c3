"""`carrierfeeds audit`: auditors' read-only views of the ledger and its hash chain."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path
from typing import Annotated

import typer

from carrierfeeds.cli.common import _audit_parties, _day_start, _emit, _fail, _parse_day, _utcnow, app
from carrierfeeds.errors import CarrierFeedsError
from carrierfeeds.outcomes import ExitCode
from carrierfeeds.settings import Settings

audit_app = typer.Typer(help="Auditors' views of the ledger.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(
    as_json: Annotated[bool, typer.Option("--json", help="the chain verdict and anchors as JSON")] = False,
) -> None:
    """Walk the ledger's hash chain, check that it still holds every signed anchor of its head (kept
    outside the database), then anchor the head as it is now. Exit 5 on a broken link or a missing or
    rewritten anchored row."""
    from carrierfeeds.ledger.anchor import AnchorLog, verify_ledger
    from carrierfeeds.settings import open_ledger

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
    raise typer.Exit(ExitCode.OK if result.ok else ExitCode.FAILED)


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
    from carrierfeeds.settings import open_ledger

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
    from carrierfeeds.settings import open_ledger

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
    raise typer.Exit(ExitCode.OK if report.chain_ok and report.anchors_ok else ExitCode.FAILED)


@audit_app.command("show")
def audit_show(
    run_id: Annotated[str, typer.Argument(help="a run id (from `audit log` or `run --json`)")],
    as_json: Annotated[bool, typer.Option("--json", help="the run's history as JSON")] = False,
) -> None:
    """Every stage, delivery outcome and audit event of one run, in order."""
    from carrierfeeds.audit import run_history
    from carrierfeeds.settings import open_ledger

    history = run_history(open_ledger(Settings()), run_id)
    if history is None:
        typer.echo(f"error: no run {run_id!r} in the ledger", err=True)
        raise typer.Exit(ExitCode.USAGE)
    r = history.run
    lines = [f"run {r.run_id}  feed {r.feed_id}  interval {r.interval_start}..{r.interval_end}",
             f"status: {r.status}  attempts: {r.attempt}  started {r.started_at.isoformat()}",
             *(f"  {at.astimezone(UTC):%Y-%m-%d %H:%M:%S}  {text}" for _, at, text in history.timeline())]
    _emit(history.as_dict(), as_json, lines)


