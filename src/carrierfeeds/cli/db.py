"""`carrierfeeds db` and `purge`: the ledger database's schema and the retention purge."""

from __future__ import annotations

from typing import Annotated

import typer

from carrierfeeds.cli.common import _emit, _fail, _parse_day, _utcnow, app
from carrierfeeds.errors import CarrierFeedsError
from carrierfeeds.settings import Settings

db_app = typer.Typer(help="The ledger database.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the ledger database to the current schema."""
    from carrierfeeds.settings import open_ledger

    settings = Settings()
    open_ledger(settings).close()
    typer.echo(f"ledger at {settings.resolved_ledger_url.split('@')[-1]} is up to date")


@app.command()
def purge(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list what would go; change nothing")] = False,
    as_of: Annotated[str | None, typer.Option(help="purge as of this day YYYY-MM-DD; default today (UTC)")] = None,
    retention_days: Annotated[int | None, typer.Option(
        min=0, help="days employee-level data is kept after a contract ends "
                    "(default: setting employee_data_retention_days, 90)")] = None,
    retention_years: Annotated[int | None, typer.Option(
        min=1, help="years ledger metadata is kept (default: setting ledger_retention_years, 7)")] = None,
    actor: Annotated[str, typer.Option(help="who runs the purge, for the ledger")] = "cli",
    as_json: Annotated[bool, typer.Option("--json", help="what was (or would be) purged, as JSON")] = False,
) -> None:
    """Purge employee-level files after contract end and ledger metadata after its retention period.

    A legal hold on the employer or feed blocks both. Every purge is audited (kind, counts, feed and
    employer; never the data). Run it with the ledger owner's database credentials.
    """
    from carrierfeeds.retention import purge_with_settings
    from carrierfeeds.settings import open_ledger

    settings = Settings()
    now = _utcnow()
    try:
        report = purge_with_settings(settings, open_ledger(settings),
                                     as_of=_parse_day(as_of) if as_of else now.date(), now=now, actor=actor,
                                     dry_run=dry_run, retention_days=retention_days,
                                     retention_years=retention_years)
    except CarrierFeedsError as exc:
        _fail(exc, as_json)
        return
    verb = "would purge" if dry_run else "purged"
    lines = [f"{'DRY RUN: ' if dry_run else ''}as of {report.as_of}"]
    for item in report.employee_data.items:
        label = {"purge": verb, "held": "kept (legal hold)", "unknown_feed": "kept (no feed file)",
                 "shared": "kept (another feed reads it)"}[item.action]
        lines.append(f"  {label:<20} {item.kind:<14} feed {item.feed_id:<28} employer {item.employer_id or '?':<16} "
                     f"{item.files} files")
    counts = ", ".join(f"{n} {t}" for t, n in report.ledger.counts.items()) or "nothing due"
    lines.append(f"  ledger metadata before {report.ledger_cutoff.date()}: {verb} {report.ledger.rows} rows "
                 f"({counts})")
    _emit(report.as_dict(), as_json, lines)


