"""What every command shares: the `app`, the --verbose callback, JSON-or-lines output, errors to exit codes."""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime
from typing import Annotated, Any

import typer

from carrierfeeds.errors import CarrierFeedsError, ConfigError
from carrierfeeds.outcomes import exit_code_for
from carrierfeeds.settings import Settings, feed_paths

app = typer.Typer(help="carrierfeeds: employer census in, validated encrypted 834 out, every delivery "
                       "on a verifiable ledger.", no_args_is_help=True, add_completion=False)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _emit(data: Any, as_json: bool, lines: list[str]) -> None:
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


def _parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _by_reason(counts: dict[str, int]) -> str:
    """Row counts by reason, for a person: ``plan_not_authorized 12``."""
    return ", ".join(f"{reason} {n} row(s)" for reason, n in sorted(counts.items()))


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


