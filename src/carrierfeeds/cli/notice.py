"""`carrierfeeds notice`: the per-file notices sent to carriers after delivery; list them, send again."""

from __future__ import annotations

from typing import Annotated

import typer

from carrierfeeds.cli.common import _emit, _fail, _utcnow, app
from carrierfeeds.errors import CarrierFeedsError
from carrierfeeds.outcomes import ExitCode
from carrierfeeds.settings import Settings

notice_app = typer.Typer(help="Per-file notices to carriers (mapping notice.send): list, resend.",
                         no_args_is_help=True)
app.add_typer(notice_app, name="notice")


@notice_app.command("list")
def notice_list(
    feed: Annotated[str | None, typer.Option(help="only this feed's deliveries")] = None,
    failed: Annotated[bool, typer.Option("--failed", help="only notices not sent (failed, or cut off sending)")]
    = False,
    as_json: Annotated[bool, typer.Option("--json", help="the notices as JSON")] = False,
) -> None:
    """Every delivery's notice per channel: sent, failed (with our error code) or sending (cut off)."""
    from carrierfeeds.run.notices import notice_states
    from carrierfeeds.settings import open_ledger

    ledger = open_ledger(Settings())
    ids = None if feed is None else [d.delivery_id for d in ledger.deliveries(feed_id=feed)]
    rows = [s for s in notice_states(ledger, ids) if not failed or s["status"] != "sent"]
    lines = [f"{'DELIVERY ID':<32}  {'CHANNEL':<8} {'STATUS':<8} {'TRIES':>5}  {'AT (UTC)':<20}  ERROR"]
    lines += [f"{s['delivery_id']:<32}  {s['channel']:<8} {s['status']:<8} {s['tries']:>5}  {s['at'][:19]:<20}  "
              f"{s['error_code'] or ''}" for s in rows]
    _emit({"notices": rows}, as_json, lines if rows else ["no notices" + (" to resend" if failed else "")])


@notice_app.command("resend")
def notice_resend(
    run_or_delivery: Annotated[str, typer.Argument(help="a delivery id, or a run id (each of its deliveries)")],
    by: Annotated[str, typer.Option(help="who asks, for the ledger")] = "cli",
    as_json: Annotated[bool, typer.Option("--json", help="what each channel came to, as JSON")] = False,
) -> None:
    """Send a delivered file's notice on each channel that has not had it (failed, or cut off while
    sending: again under the same idempotency key); a channel already sent is left alone. Exit 2 for an
    unknown id, 5 when a notice could still not be sent."""
    from carrierfeeds.credentials import KeysDirConnections
    from carrierfeeds.ledger.records import DELIVERED_STATUSES
    from carrierfeeds.run.notices import FAILED, resend_notices
    from carrierfeeds.settings import open_ledger

    settings = Settings()
    ledger = open_ledger(settings)
    found = [d for d in ledger.deliveries() if run_or_delivery in (d.delivery_id, d.run_id)]
    if not found:
        _emit({"error": "unknown", "id": run_or_delivery}, as_json,
              [f"error: no delivery or run {run_or_delivery!r} in the ledger (see `carrierfeeds notice list`)"])
        raise typer.Exit(ExitCode.USAGE)
    results: dict[str, dict[str, str]] = {}
    connections = KeysDirConnections(settings.resolved_keys_dir)
    try:
        for delivery in found:
            if delivery.status in DELIVERED_STATUSES:
                results[delivery.delivery_id] = resend_notices(settings, ledger, connections, delivery, actor=by,
                                                               clock=_utcnow)
            else:
                results[delivery.delivery_id] = {}
    except CarrierFeedsError as exc:
        _fail(exc, as_json)
        return
    lines = [f"delivery {d}: " + (", ".join(f"{c} {s}" for c, s in r.items()) or "not with the carrier; no notice")
             for d, r in results.items()]
    _emit({"deliveries": results}, as_json, lines)
    if any(s == FAILED for r in results.values() for s in r.values()):
        raise typer.Exit(ExitCode.FAILED)
