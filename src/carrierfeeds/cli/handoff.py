"""`carrierfeeds handoff`: files for carriers without electronic intake, confirmed by a person."""

from __future__ import annotations

import json
from datetime import UTC
from typing import Annotated

import typer

from carrierfeeds.cli.common import _emit, _fail, _utcnow, app
from carrierfeeds.errors import CarrierFeedsError
from carrierfeeds.outcomes import ExitCode
from carrierfeeds.settings import Settings

handoff_app = typer.Typer(help="Manual hand-offs: files for carriers without electronic intake.",
                          no_args_is_help=True)
app.add_typer(handoff_app, name="handoff")


@handoff_app.command("list")
def handoff_list(
    feed: Annotated[str | None, typer.Option(help="only this feed")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the pending hand-offs as JSON")] = False,
) -> None:
    """Files placed in the hand-off outbox that no person has confirmed handing over yet."""
    from carrierfeeds.settings import open_ledger

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
    received_by: Annotated[str, typer.Option("--received-by",
                                             help="who at the recipient took the file (recorded)")],
    as_json: Annotated[bool, typer.Option("--json", help="the recorded hand-off (or the error) as JSON")] = False,
) -> None:
    """Record that a person handed a pending file over; audited. Exit 2 for an unknown id, 5 when the
    hand-off was already confirmed or the delivery is not a pending hand-off."""
    from carrierfeeds.ledger import UnknownRecord
    from carrierfeeds.settings import open_ledger

    try:
        record = open_ledger(Settings()).confirm_handoff(delivery_id, by=by, method=method,
                                                         received_by=received_by, now=_utcnow())
    except UnknownRecord as exc:
        if as_json:
            typer.echo(json.dumps(exc.as_dict(), indent=2, sort_keys=True, default=str))
        else:
            typer.echo(f"error: no delivery {delivery_id!r} in the ledger (see `carrierfeeds handoff list`)",
                       err=True)
        raise typer.Exit(ExitCode.USAGE) from None
    except CarrierFeedsError as exc:
        _fail(exc, as_json)
        return
    _emit({"delivery_id": record.delivery_id, "feed_id": record.feed_id, "status": record.status,
           "by": by, "method": method, "received_by": received_by, "at": record.updated_at.isoformat()}, as_json,
          [f"delivery {record.delivery_id} ({record.feed_id}, {record.interval_start}) handed off by {by} "
           f"via {method}, received by {received_by} (audited)"])


