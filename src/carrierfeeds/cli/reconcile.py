"""``carrierfeeds reconcile``: compare a carrier's return file with what it should hold, and work the list.

Exit codes as everywhere (see :mod:`carrierfeeds.cli`); ``import`` exits 0 when the carrier holds what
it should and 1 when discrepancies are open (the carrier's data needs fixing), as for a bad file.
Output names members by token only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from carrierfeeds.cli.common import _emit, _fail, _utcnow, app
from carrierfeeds.errors import CarrierFeedsError
from carrierfeeds.outcomes import ExitCode
from carrierfeeds.settings import Settings

reconcile_app = typer.Typer(help="Reconciliation: the carrier's roster against what we sent; the worklist.",
                            no_args_is_help=True)
app.add_typer(reconcile_app, name="reconcile")

def _ledger(settings: Settings) -> Any:
    from carrierfeeds.settings import open_ledger

    return open_ledger(settings)


def _item_line(i: Any) -> str:
    return (f"{i.discrepancy_id}  {i.status:<12}  {i.kind:<24}  {i.member_token}  {i.field or '-':<14}  "
            f"{i.coverage_line or '-':<5}  first {i.first_seen:%Y-%m-%d}  last {i.last_seen:%Y-%m-%d}")


@reconcile_app.command("import")
def reconcile_import(
    feed: Annotated[str, typer.Argument(help="feed id")],
    file: Annotated[Path, typer.Argument(help="the carrier's return file (834 or the feed's flat layout)",
                                         exists=True, dir_okay=False, readable=True)],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable result")] = False,
    by: Annotated[str, typer.Option(help="who ran the comparison (recorded in the ledger)")] = "carrierfeeds",
    census: Annotated[Path | None, typer.Option(
        help="the current census as a third view: each discrepancy labelled with the side its fix is on "
             "(carrier, ours, both) and the census's changes not sent yet listed",
        exists=True, dir_okay=False, readable=True)] = None,
) -> None:
    """Read FILE, compare it with what FEED's carrier should hold, update the worklist.

    Exit 0 when the carrier holds what it should, 1 when discrepancies are open or the file is bad.
    """
    from carrierfeeds.census.tokens import MemberTokenizer
    from carrierfeeds.changes import SnapshotStore
    from carrierfeeds.credentials import KeysDirConnections
    from carrierfeeds.errors import ConfigError
    from carrierfeeds.reconcile.alert import alert_payload, needs_alert, send_alert
    from carrierfeeds.reconcile.service import reconcile_file
    from carrierfeeds.settings import load_bundle

    settings = Settings()
    try:
        bundle = load_bundle(settings, feed)
        spec = bundle.feed.reconciliation
        if spec is None:
            raise ConfigError("the feed has no reconciliation section", file=f"{feed}.yaml", field="reconciliation")
        ledger = _ledger(settings)
        tokenizer = MemberTokenizer.from_key_file(settings.resolved_token_key_file)
        now = _utcnow()
        view = None
        if census is not None:
            from carrierfeeds.reconcile.census_view import census_view

            view = census_view(settings, bundle, census, tokenizer, as_of=now.date())
        result = reconcile_file(file, feed_id=feed, spec=spec, mapping=bundle.mapping, ledger=ledger,
                                store=SnapshotStore.for_settings(settings), tokenizer=tokenizer, now=now,
                                actor=by, census=view)
        alerted = False
        record = result.worklist
        if needs_alert(bundle.feed, record.open_after):
            assert spec.alert_threshold is not None  # noqa: S101 - needs_alert checked it
            alerted = send_alert(bundle.feed, alert_payload(feed, open_count=record.open_after,
                                                            threshold=spec.alert_threshold,
                                                            comparison_id=record.comparison_id,
                                                            by_kind=record.by_kind),
                                 connections=KeysDirConnections(settings.resolved_keys_dir))
    except CarrierFeedsError as exc:
        _fail(exc, as_json)
        return
    data = {**result.as_dict(), "alerted": alerted}
    lines = [f"feed {feed}: carrier holds {result.carrier_members} members, expected {result.expected_members}",
             f"comparison {record.comparison_id}: {len(result.discrepancies)} discrepancies "
             f"({record.opened} new, {record.seen} seen before, {record.reopened} reopened); "
             f"{record.auto_closed} auto-closed; {record.open_after} open",
             *(f"  {k:<26} {n}" for k, n in sorted(result.by_kind.items()))]
    if result.sides is not None:
        said = {"carrier": "the carrier's to fix", "ours": "ours: the census agrees with the carrier",
                "both": "the census differs from both", "not_sent": "census changes not sent yet"}
        lines += [f"  by side: {side:<9} {n:>6}  ({said[side]})" for side, n in result.by_side.items()]
    if result.awaiting_ack:
        lines.append(f"{result.awaiting_ack} concern members whose latest change awaits the carrier's "
                     "acknowledgment")
    if alerted:
        lines.append("alert sent: open discrepancies passed the feed's threshold")
    _emit(data, as_json, lines)
    raise typer.Exit(ExitCode.OK if record.open_after == 0 else ExitCode.REJECTED)


@reconcile_app.command("list")
def reconcile_list(
    feed: Annotated[str, typer.Argument(help="feed id")],
    status: Annotated[str | None, typer.Option(help="open, acknowledged, resolved or auto_closed")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the discrepancies as JSON")] = False,
) -> None:
    """The feed's discrepancies, oldest first."""
    from carrierfeeds.ledger.worklist import work_items

    try:
        items = work_items(_ledger(Settings()), feed_id=feed, status=status)
    except CarrierFeedsError as exc:
        _fail(exc, as_json)
        return
    _emit([i.as_dict() for i in items], as_json,
          [_item_line(i) for i in items] or [f"no discrepancies{f' {status}' if status else ''} for {feed}"])


@reconcile_app.command("show")
def reconcile_show(
    discrepancy_id: Annotated[str, typer.Argument(metavar="ID", help="a discrepancy id (from `reconcile list`)")],
    as_json: Annotated[bool, typer.Option("--json", help="the discrepancy and its events as JSON")] = False,
) -> None:
    """One discrepancy and every event of it."""
    from carrierfeeds.ledger.worklist import work_items

    try:
        items = work_items(_ledger(Settings()), discrepancy_id=discrepancy_id)
    except CarrierFeedsError as exc:
        _fail(exc, as_json)
        return
    if not items:
        typer.echo(f"error: no discrepancy {discrepancy_id!r}", err=True)
        raise typer.Exit(ExitCode.USAGE)
    i = items[0]
    lines = [_item_line(i), *(f"  {e.at:%Y-%m-%d %H:%M:%S}  {e.action:<12}  {e.actor}"
                              + (f"  {e.reason}" if e.reason else "") for e in i.events)]
    _emit(i.as_dict(events=True), as_json, lines)


def _decide(discrepancy_id: str, action: str, by: str, reason: str | None) -> None:
    from carrierfeeds.ledger.worklist import set_status

    try:
        item = set_status(_ledger(Settings()), discrepancy_id, action=action, actor=by, reason=reason, now=_utcnow())
    except CarrierFeedsError as exc:
        _fail(exc, False)
        return
    typer.echo(_item_line(item))


@reconcile_app.command("acknowledge")
def reconcile_acknowledge(
    discrepancy_id: Annotated[str, typer.Argument(metavar="ID", help="a discrepancy id (from `reconcile list`)")],
    by: Annotated[str, typer.Option(help="who takes it on")],
) -> None:
    """Mark an open discrepancy as being worked on."""
    _decide(discrepancy_id, "acknowledged", by, None)


@reconcile_app.command("resolve")
def reconcile_resolve(
    discrepancy_id: Annotated[str, typer.Argument(metavar="ID", help="a discrepancy id (from `reconcile list`)")],
    by: Annotated[str, typer.Option(help="who resolved it")],
    reason: Annotated[str, typer.Option(help="why it is resolved (no member data)")],
) -> None:
    """Close a discrepancy by hand, with a reason; recorded on the ledger's chain."""
    _decide(discrepancy_id, "resolved", by, reason)


@reconcile_app.command("report")
def reconcile_report(
    feed: Annotated[str, typer.Argument(help="feed id")],
    fmt: Annotated[str, typer.Option("--format", help="html, pdf or json")] = "json",
    out: Annotated[Path | None, typer.Option(help="write here (default: stdout for json)")] = None,
) -> None:
    """Counts by kind and age and the oldest open items, per carrier."""
    from carrierfeeds.ledger.worklist import work_items
    from carrierfeeds.reconcile.report import build_reconcile_report, write_reconcile_report
    from carrierfeeds.settings import load_bundle

    if fmt not in ("html", "pdf", "json"):
        raise typer.BadParameter("--format must be html, pdf or json")
    if fmt != "json" and out is None:
        raise typer.BadParameter("--out is needed for html and pdf")
    settings = Settings()
    try:
        bundle = load_bundle(settings, feed)
        items = work_items(_ledger(settings), feed_id=feed)
    except CarrierFeedsError as exc:
        _fail(exc, fmt == "json")
        return
    report = build_reconcile_report(items, generated_at=_utcnow(), carriers={feed: bundle.feed.carrier.name})
    if out is None:
        typer.echo(json.dumps(report.as_dict(), indent=2, sort_keys=True))
        return
    write_reconcile_report(report, out, fmt)
    s = report.sections[0]
    typer.echo(f"wrote {out}: {s.open} open, {s.acknowledged} acknowledged, {s.resolved} resolved")


@reconcile_app.command("collect")
def reconcile_collect(
    feed: Annotated[str, typer.Argument(help="feed id")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable result")] = False,
    by: Annotated[str, typer.Option(help="who ran the collection (recorded in the ledger)")] = "carrierfeeds",
) -> None:
    """Collect FEED's new return files from the carrier's outbox and compare each.

    Exit 0 when every new file was compared and the carrier holds what it should (or there was nothing
    new), 1 when discrepancies are open or a file was refused.
    """
    result = run_collect(feed, actor=by, as_json=as_json)
    lines = [f"feed {feed}: {len(result.compared)} return files compared, {len(result.refused)} refused"]
    for f in result.files:
        name = f.file.plaintext_sha256 or f.file.ciphertext_sha256 or "-"
        if f.result is not None:
            w = f.result.worklist
            lines.append(f"  compared {name[:12]}: {len(f.result.discrepancies)} discrepancies "
                         f"({w.opened} new, {w.auto_closed} auto-closed); {w.open_after} open")
        elif f.refused_reason is not None:
            lines.append(f"  refused  {(f.file.ciphertext_sha256 or '-')[:12]}: {f.refused_reason}")
        else:
            lines.append(f"  {f.file.outcome}")
    _emit(result.as_dict(), as_json, lines)
    bad = result.refused or (result.open_after or 0) > 0
    raise typer.Exit(ExitCode.REJECTED if bad else ExitCode.OK)


def run_collect(feed: str, *, actor: str, as_json: bool) -> Any:
    """``reconcile collect`` without the output: :func:`carrierfeeds.reconcile.collect.collect_feed` with
    connections from the keys directory; an error exits as everywhere."""
    from carrierfeeds.credentials import KeysDirConnections
    from carrierfeeds.reconcile.collect import collect_feed

    settings = Settings()
    try:
        return collect_feed(settings, feed, _ledger(settings),
                            connections=KeysDirConnections(settings.resolved_keys_dir),
                            clock=_utcnow, actor=actor)
    except CarrierFeedsError as exc:
        _fail(exc, as_json)
        raise  # _fail always exits



@reconcile_app.command("draft")
def reconcile_draft(
    feed: Annotated[str, typer.Argument(help="feed id")],
    out: Annotated[Path | None, typer.Option(help="folder for the draft 834 (default: the data dir's drafts)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable result")] = False,
) -> None:
    """Render the change 834 that would bring FEED's carrier in line with its open discrepancies.

    Nothing is sent and nothing is written to the ledger; the file is gated like a run's. Exit 0 when
    the draft passes the gate (or there is nothing to correct), 1 when it fails it.
    """
    from carrierfeeds.census.tokens import MemberTokenizer
    from carrierfeeds.ledger.worklist import work_items
    from carrierfeeds.reconcile.correction import draft_correction
    from carrierfeeds.settings import load_bundle

    settings = Settings()
    try:
        bundle = load_bundle(settings, feed)
        items = work_items(_ledger(settings), feed_id=feed)
        folder = out or settings.data_dir / "reconcile" / feed / "drafts"
        result = draft_correction(settings, bundle, items, folder=folder, now=_utcnow(),
                                  tokenizer=MemberTokenizer.from_key_file(settings.resolved_token_key_file))
    except CarrierFeedsError as exc:
        _fail(exc, as_json)
        return
    lines = [f"feed {feed}: correction answers {len(result['discrepancy_ids'])} discrepancies; "
             f"{len(result['manual'])} left to people; nothing sent"]
    for f in result["files"]:
        lines.append(f"  {f['name']}: {f['members']} members {f['members_by_type']}, "
                     f"gate {f['conformance']['verdict']}")
    _emit(result, as_json, lines)
    raise typer.Exit(ExitCode.REJECTED if result["status"] == "conformance_failed" else ExitCode.OK)


@reconcile_app.command("approve")
def reconcile_approve(
    feed: Annotated[str, typer.Argument(help="feed id")],
    by: Annotated[str, typer.Option(help="who approves sending the correction")],
    reason: Annotated[str | None, typer.Option(help="why (no member data)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable result")] = False,
) -> None:
    """Approve FEED's correction (as `reconcile draft` shows it): the feed's next run sends it."""
    from carrierfeeds.census.tokens import MemberTokenizer
    from carrierfeeds.changes import SnapshotStore
    from carrierfeeds.ledger.worklist import work_items
    from carrierfeeds.reconcile.correction import approve_correction, correction_view

    settings = Settings()
    try:
        ledger = _ledger(settings)
        snapshot = SnapshotStore.for_settings(settings).load(feed)
        items = work_items(ledger, feed_id=feed)
        if snapshot is None or not items:
            typer.echo(f"error: nothing to correct for {feed}", err=True)
            raise typer.Exit(ExitCode.USAGE)
        view = correction_view(snapshot, items,
                               MemberTokenizer.from_key_file(settings.resolved_token_key_file))
        if not view.discrepancy_ids:
            typer.echo(f"error: no open discrepancy of {feed} is corrected by a file", err=True)
            raise typer.Exit(ExitCode.USAGE)
        approval = approve_correction(ledger, feed_id=feed, discrepancy_ids=view.discrepancy_ids, by=by,
                                      reason=reason, now=_utcnow())
    except CarrierFeedsError as exc:
        _fail(exc, as_json)
        return
    _emit({"feed_id": feed, "approval_id": approval, "discrepancy_ids": list(view.discrepancy_ids)}, as_json,
          [f"correction {approval} approved for {len(view.discrepancy_ids)} discrepancies; "
           f"the next run of {feed} sends it"])
