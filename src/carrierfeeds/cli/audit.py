"""`carrierfeeds audit`: auditors' read-only views of the ledger and its hash chain."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path
from typing import Annotated

import typer

from carrierfeeds.cli.common import _audit_parties, _day_start, _emit, _fail, _parse_day, _utcnow, app
from carrierfeeds.errors import CarrierFeedsError
from carrierfeeds.ledger.records import DeliveryStatus
from carrierfeeds.outcomes import ExitCode
from carrierfeeds.settings import Settings

audit_app = typer.Typer(help="Auditors' views of the ledger.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


def _known(flag: str, value: str, allowed: list[str]) -> None:
    """A filter value the ledger cannot hold is a usage error naming what it can, not "0 deliveries"."""
    if value not in allowed:
        shown = ", ".join(allowed) if allowed else "none recorded yet"
        raise typer.BadParameter(f"{value!r} is not one of: {shown}", param_hint=flag)


def _check_parties(parties: dict[str, tuple[str, str]], *, feed: str | None = None, carrier: str | None = None,
                   employer: str | None = None) -> None:
    """Feed, carrier and employer filters name parties the feed files or the ledger know."""
    if feed is not None:
        _known("--feed", feed, sorted(parties))
    if carrier is not None:
        _known("--carrier", carrier, sorted({c for _, c in parties.values()}))
    if employer is not None:
        _known("--employer", employer, sorted({e for e, _ in parties.values()}))


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
    if status is not None:
        _known("--status", status, sorted(str(s) for s in DeliveryStatus))
    first, end = _day_start(since), _day_start(until)
    if first and end and end < first:
        raise typer.BadParameter("--until is before --since")
    settings = Settings()
    ledger = open_ledger(settings)
    parties = feed_parties(ledger, _audit_parties(settings))
    _check_parties(parties, feed=feed, carrier=carrier, employer=employer)
    lines = delivery_lines(ledger, feed_id=feed, carrier_id=carrier, employer_id=employer,
                           since=first, until=end + timedelta(days=1) if end else None,
                           status=status, parties=parties, acks=acks_from_ledger(ledger))
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
    typer.echo(f"wrote {out}: {report.summary()} Chain {'intact' if report.chain_ok else 'BROKEN'}; "
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
             *history.status_lines(),
             *(f"  {at.astimezone(UTC):%Y-%m-%d %H:%M:%S}  {text}" for _, at, text in history.timeline())]
    _emit(history.as_dict(), as_json, lines)




@audit_app.command("member")
def audit_member(
    token: Annotated[str, typer.Argument(help="a member token (m_ and 16 hex digits), as reports show it")],
    as_json: Annotated[bool, typer.Option("--json", help="the deliveries as JSON")] = False,
) -> None:
    """Every delivery that carried one member, named by token only: carrier, feed, file, control numbers,
    date and the member's maintenance types (INS03). Exit 2 for a string that is not a token."""
    from carrierfeeds.audit import feed_parties, member_deliveries
    from carrierfeeds.ledger.disclosures import is_member_token
    from carrierfeeds.settings import open_ledger

    if not is_member_token(token):
        raise typer.BadParameter("a member token is m_ followed by 16 hex digits", param_hint="TOKEN")
    settings = Settings()
    ledger = open_ledger(settings)
    found = member_deliveries(ledger, token, parties=feed_parties(ledger, _audit_parties(settings)))
    lines = [f"{'SENT (UTC)':<16}  {'CARRIER':<20} {'FEED':<28} {'ISA13':<9}  {'GS06':<9}  {'ST02':<9}  "
             f"{'INS03':<7}  {'STATUS':<15} FILE"]
    lines += [f"{m.sent_at.astimezone(UTC):%Y-%m-%d %H:%M}  {m.carrier_id or '?':<20} {m.feed_id:<28} "
              f"{m.isa13:09d}  {m.gs06:09d}  {m.st02:09d}  {','.join(m.maintenance_types):<7}  {m.status:<15} "
              f"{m.file_name}" for m in found]
    lines.append(f"{len(found)} deliveries carried {token}")
    _emit({"member_token": token, "deliveries": [m.as_dict() for m in found]}, as_json, lines)


@audit_app.command("disclosures")
def audit_disclosures(
    carrier: Annotated[str | None, typer.Option(help="only this carrier id")] = None,
    since: Annotated[str | None, typer.Option("--from", help="first day YYYY-MM-DD (UTC), inclusive")] = None,
    until: Annotated[str | None, typer.Option("--to", help="last day YYYY-MM-DD (UTC), inclusive")] = None,
    out: Annotated[Path | None, typer.Option(help="also write the report as report.html or report.pdf")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the report as JSON")] = False,
) -> None:
    """Minimum necessary, per carrier and feed: the fields its delivered files carried, the allowlist,
    member counts and the config hashes they ran under. Exit 2 for an unknown carrier or a bad date."""
    from datetime import timedelta

    from carrierfeeds.audit import disclosure_lines, feed_parties, render_disclosures_html, render_disclosures_pdf
    from carrierfeeds.settings import open_ledger

    if out is not None and out.suffix.lower() not in (".html", ".htm", ".pdf"):
        raise typer.BadParameter("--out must end in .html or .pdf")
    first, last = (_parse_day(since) if since else None), (_parse_day(until) if until else None)
    if first and last and last < first:
        raise typer.BadParameter("--to is before --from")
    settings = Settings()
    ledger = open_ledger(settings)
    parties = feed_parties(ledger, _audit_parties(settings))
    _check_parties(parties, carrier=carrier)
    end = _day_start(until)
    found = disclosure_lines(ledger, carrier_id=carrier, since=_day_start(since),
                             until=end + timedelta(days=1) if end else None, parties=parties)
    if out is not None and out.suffix.lower() == ".pdf":
        out.write_bytes(render_disclosures_pdf(found, since=first, until=last, generated_at=_utcnow()))
    elif out is not None:
        out.write_text(render_disclosures_html(found, since=first, until=last, generated_at=_utcnow()),
                       encoding="utf-8")
    lines = []
    for ln in found:
        lines.append(f"{ln.carrier_id} <- {ln.employer_id} ({ln.feed_id}): {ln.files} files, "
                     f"{ln.member_disclosures} member disclosures, largest file {ln.largest_file_members} members")
        lines.append("  fields: " + (", ".join(f"{k} ({n})" for k, n in ln.fields.items()) or "-"))
        unused = [x for x in ln.allowlist if x not in ln.fields]
        if unused:
            lines.append("  allowed but never sent: " + ", ".join(unused))
        if ln.files_without_record:
            lines.append(f"  {ln.files_without_record} files delivered before disclosures were recorded")
        for h in ln.config_sha256:
            lines.append("  ran under " + " ".join(f"{k}={v[:12]}" for k, v in h.items()))
    lines.append(f"{len(found)} carrier feeds" + (f"; wrote {out}" if out is not None else ""))
    _emit({"from": since, "to": until, "carrier": carrier, "feeds": [ln.as_dict() for ln in found]}, as_json, lines)


@audit_app.command("authorisations")
def audit_authorisations(
    feed: Annotated[str | None, typer.Option(help="only this feed")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the authorisations as JSON")] = False,
) -> None:
    """Every authorisation the ledger recorded: employer, carrier, plans, dates and the employer's
    document it rests on (the feed's authorization.reference)."""
    from carrierfeeds.audit import authorisation_rows
    from carrierfeeds.settings import open_ledger

    ledger = open_ledger(Settings())
    if feed is not None:
        _known("--feed", feed, sorted({a.feed_id for a in ledger.authorisations()}))
    rows = authorisation_rows(ledger, feed_id=feed)
    lines = [f"{'SEQ':>6}  {'FEED':<28} {'EMPLOYER':<14} {'CARRIER':<18} {'FROM':<10}  {'TO':<10}  "
             f"{'REFERENCE':<24} PLANS"]
    lines += [f"{r['seq']:>6}  {r['feed_id']:<28} {r['employer_id']:<14} {r['carrier_id']:<18} "
              f"{r['effective_from']:<10}  {r['effective_to'] or 'open':<10}  {r['reference'] or '(none)':<24} "
              f"{','.join(r['plans'])}" for r in rows]
    lines.append(f"{len(rows)} authorisations")
    _emit({"authorisations": rows}, as_json, lines)
