"""``carrierfeeds status``: the morning board as a table (colour on a terminal, plain when piped) or JSON."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any
from zoneinfo import ZoneInfo

import typer

from carrierfeeds.cli.common import _fail, _utcnow, app
from carrierfeeds.errors import CarrierFeedsError
from carrierfeeds.ops.status import Board, FeedRow
from carrierfeeds.outcomes import ExitCode
from carrierfeeds.settings import Settings

if TYPE_CHECKING:
    from rich.console import Console

#: Exit code when something needs a person (late or missing census, overdue acknowledgment, a last run
#: rejected, refused or failed, a feed file that does not load, an anchor file that does not read).
EXIT_ATTENTION = ExitCode.REJECTED
HEADERS = ("feed", "employer", "carrier", "last run", "next run", "census", "acks", "hand-offs", "lifecycle",
           "attention")


def _when(value: datetime | None, timezone: str) -> str:
    return "-" if value is None else value.astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M %Z")


def row_cells(row: FeedRow) -> tuple[str, ...]:
    """One row's cells as text, times in the feed's own time zone (as its schedule and window are)."""
    last = row.last_run
    run = "never" if last is None else f"{last.interval_start} {last.status}"
    census = row.census.state.replace("_", " ")
    if row.census.last_arrival is not None:
        census += f" (last {_when(row.census.last_arrival, row.timezone)})"
    acks = f"{row.acks_pending} pending, {row.acks_overdue} overdue" if row.acks_pending or row.acks_overdue else "-"
    return (row.feed_id, row.employer_name, row.carrier_name, run, _when(row.next_run, row.timezone), census, acks,
            str(row.handoffs_pending) if row.handoffs_pending else "-", lifecycle_cell(row),
            ", ".join(row.attention) or "ok")


def lifecycle_cell(row: FeedRow) -> str:
    """The feed's lifecycle state, with its go-live date while it is certified."""
    if row.lifecycle == "certified" and row.go_live is not None:
        return f"certified (go-live {row.go_live.isoformat()})"
    return row.lifecycle


def footer_lines(board: Board) -> list[str]:
    """The chain's last verification and newest anchor, then each feed file that does not load."""
    chain = board.chain
    if chain.problem is not None:
        lines = [f"ledger chain: anchors unreadable: {chain.problem}"]
    else:
        verified = ("never verified" if chain.verified_at is None
                    else f"last verified {chain.verified_at} at seq {chain.verified_seq} ({chain.verified_by})")
        anchor = ("no anchor yet" if chain.anchor_seq is None
                  else f"newest anchor seq {chain.anchor_seq} {chain.anchor_head} at {chain.anchor_at}")
        lines = [f"ledger chain: {verified}; {anchor}"]
    lines += [f"feed file {b.file} does not load: {b.message}" for b in board.broken]
    lines += [lifecycle_line(r) for r in board.rows if r.lifecycle_history]
    return lines


def lifecycle_line(row: FeedRow) -> str:
    """A feed's newest lifecycle change (the whole history: ``feeds lifecycle FEED`` or ``status --json``)."""
    e = row.lifecycle_history[-1]
    return (f"lifecycle {row.feed_id}: {e['action']} -> {e['state']} at {e['at'][:16].replace('T', ' ')} UTC "
            f"by {e['actor']}" + (f" (ref: {e['reference']})" if e.get("reference") else "")
            + f"; {len(row.lifecycle_history)} change(s)")


def plain_lines(board: Board) -> list[str]:
    """The board as aligned plain text (what a pipe or a log gets)."""
    cells = [HEADERS, *(row_cells(r) for r in board.rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADERS))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(HEADERS))).rstrip() for c in cells]
    if not board.rows:
        lines.append("no feeds in the feeds folder")
    return [f"carrierfeeds status at {board.generated_at.isoformat(timespec='seconds')}", *lines, "",
            *footer_lines(board)]


def print_rich(board: Board, console: Console | None = None) -> None:
    """The board as a rich table in colour (a terminal's view): attention in red, ``ok`` in green."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"carrierfeeds status at {board.generated_at.isoformat(timespec='seconds')}")
    for header in HEADERS:
        table.add_column(header)
    for row in board.rows:
        style = "red" if row.attention else None
        # Names come from config files: escaped, so a bracket in one is text, not rich markup.
        cells = [escape(c) for c in row_cells(row)]
        cells[-1] = f"[bold red]{cells[-1]}[/]" if row.attention else f"[green]{cells[-1]}[/]"
        table.add_row(*cells, style=style if row.census.state in ("late", "missing") else None)
    console = console or Console()
    console.print(table)
    for line in footer_lines(board):
        console.print(line, style="red" if "does not load" in line or "unreadable" in line else None,
                      markup=False, highlight=False)


@app.command("status")
def status(as_json: Annotated[bool, typer.Option("--json", help="print the board as JSON for machines")] = False,
           ) -> None:
    """The morning board: every feed, what happened last night and what needs a person.

    Per feed: its last run and outcome, next scheduled run, census freshness against its expected window
    (late, missing), acknowledgments pending or overdue, hand-offs pending; then the ledger chain's last
    verification and newest anchor. A table in colour on a terminal, plain text when piped. Reads only.

    Exit codes:
    0 nothing needs attention;
    1 needs attention: a census late or missing, an acknowledgment overdue, a last run rejected, refused
    or failed, a feed file that does not load, an anchor file that does not read;
    2 configuration error (the ledger URL, the data directory); 4 the ledger is unreachable, retry later.
    """
    from carrierfeeds.ops.status import load_board
    from carrierfeeds.settings import open_ledger

    settings = Settings()
    try:
        ledger = open_ledger(settings)
        try:
            board = load_board(settings, ledger, now=_utcnow())
        finally:
            ledger.close()
    except CarrierFeedsError as exc:
        _fail(exc, as_json)
        return
    data: dict[str, Any] = board.as_dict()
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
    elif sys.stdout.isatty():
        print_rich(board)
    else:
        for line in plain_lines(board):
            typer.echo(line)
    raise typer.Exit(EXIT_ATTENTION if board.needs_attention else ExitCode.OK)
