"""`carrierfeeds acks`: carriers' TA1/999 acknowledgments collected, matched and reported."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from carrierfeeds.cli.common import _emit, _fail, _parse_day, _utcnow, app
from carrierfeeds.errors import CarrierFeedsError
from carrierfeeds.outcomes import ExitCode
from carrierfeeds.settings import Settings

acks_app = typer.Typer(help="Carriers' TA1/999 acknowledgments: collect, match, report.", no_args_is_help=True)
app.add_typer(acks_app, name="acks")


def _ack_exit(alerts: Any) -> int:
    """0 nothing needs attention; 4 a source could not be read (retry); 1 anything else to act on."""
    errors = [a for a in alerts if a.severity == "error"]
    if not errors:
        return ExitCode.OK
    if all(a.kind == "fetch_failed" for a in errors):
        return ExitCode.TRANSIENT
    return ExitCode.REJECTED


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
    from carrierfeeds.settings import open_ledger

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
    fmt: Annotated[str, typer.Option("--format", help="table or json (--json is the same as --format json)")]
    = "table",
    as_json: Annotated[bool, typer.Option("--json", help="each delivery and its acknowledgment as JSON")] = False,
) -> None:
    """Each delivered file and what its carrier said: accepted, rejected, partial, awaiting or overdue.

    Exit 0, or 1 when any listed delivery is rejected, partial or overdue.
    """
    from datetime import timedelta

    from carrierfeeds.acknowledgments import DEFAULT_WINDOW, ack_status, carrier_ack_settings, feeds_without_source
    from carrierfeeds.settings import open_ledger

    if fmt not in ("table", "json"):
        raise typer.BadParameter("--format must be table or json")
    fmt = "json" if as_json else fmt
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
    raise typer.Exit(ExitCode.REJECTED if bad else ExitCode.OK)


