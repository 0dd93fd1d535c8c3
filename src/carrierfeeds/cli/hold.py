"""`carrierfeeds hold`: legal holds that block purging of an employer's or a feed's data."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from carrierfeeds.cli.common import _audit_parties, _emit, _fail, _utcnow, app
from carrierfeeds.errors import CarrierFeedsError, ConfigError
from carrierfeeds.settings import Settings

hold_app = typer.Typer(help="Legal holds: block purging of an employer's or a feed's data.",
                       no_args_is_help=True)
app.add_typer(hold_app, name="hold")


def _hold(employer: str | None, feed: str | None, reason: str, actor: str, held: bool) -> None:
    from carrierfeeds.retention import set_hold
    from carrierfeeds.settings import open_ledger

    if (employer is None) == (feed is None):
        raise typer.BadParameter("name exactly one of --employer or --feed")
    settings = Settings()
    try:
        ledger = open_ledger(settings)
        _require_known(settings, ledger, employer, feed)
        set_hold(ledger, employer_id=employer, feed_id=feed, held=held, reason=reason,
                 actor=actor, now=_utcnow())
    except CarrierFeedsError as exc:
        _fail(exc, False)
    what = f"employer {employer}" if employer else f"feed {feed}"
    typer.echo(f"legal hold {'set on' if held else 'cleared from'} {what} (audited)")


def _require_known(settings: Settings, ledger: Any, employer: str | None, feed: str | None) -> None:
    """A hold on a mistyped id would protect nothing while saying it does: the id must be one the feed
    files or the ledger (its runs, authorisations and holds) know, else a usage error with did-you-mean."""
    from carrierfeeds.settings import did_you_mean

    parties = _audit_parties(settings)
    authorised = ledger.authorisations()
    holds = ledger.legal_holds()
    if employer is not None:
        kind, wanted, flag = "employer", employer, "--employer"
        known = {p.employer_id for p in parties} | {a.employer_id for a in authorised} | {
            h.object_id for h in holds if h.object_type == "employer"}
    else:
        kind, wanted, flag = "feed", str(feed), "--feed"
        known = {p.feed_id for p in parties} | {a.feed_id for a in authorised} | set(ledger.latest_runs()) | {
            h.object_id for h in holds if h.object_type == "feed"}
    if wanted not in known:
        raise ConfigError(f"no {kind} {wanted!r} in the feed files ({settings.feeds_dir}) or the ledger"
                          + did_you_mean(wanted, known), field=flag)


@hold_app.command("set")
def hold_set(
    reason: Annotated[str, typer.Option(help="why (a ticket or matter number; recorded in the ledger)")],
    employer: Annotated[str | None, typer.Option(help="employer id")] = None,
    feed: Annotated[str | None, typer.Option(help="feed id")] = None,
    actor: Annotated[str, typer.Option(help="who places the hold, for the ledger")] = "cli",
) -> None:
    """Place a legal hold: nothing of this employer or feed is purged until it is cleared."""
    _hold(employer, feed, reason, actor, True)


@hold_app.command("clear")
def hold_clear(
    reason: Annotated[str, typer.Option(help="why the hold is lifted (recorded in the ledger)")],
    employer: Annotated[str | None, typer.Option(help="employer id")] = None,
    feed: Annotated[str | None, typer.Option(help="feed id")] = None,
    actor: Annotated[str, typer.Option(help="who lifts the hold, for the ledger")] = "cli",
) -> None:
    """Lift a legal hold recorded in the ledger (a hold in a feed file is lifted by editing the file)."""
    _hold(employer, feed, reason, actor, False)


@hold_app.command("list")
def hold_list(as_json: Annotated[bool, typer.Option("--json", help="the holds as JSON")] = False) -> None:
    """Holds in force, from the ledger and from feed files."""
    from carrierfeeds.settings import open_ledger

    settings = Settings()
    held = [{"object_type": h.object_type, "object_id": h.object_id, "source": "ledger", "actor": h.actor,
             "reason": h.reason, "since": h.since.isoformat()} for h in open_ledger(settings).legal_holds()]
    held += [{"object_type": "employer", "object_id": p.employer_id, "source": f"feed {p.feed_id}",
              "actor": None, "reason": None, "since": None} for p in _audit_parties(settings) if p.legal_hold]
    _emit({"holds": held}, as_json, [f"{h['object_type']:<8} {h['object_id']:<24} {h['source']}"
                                     + (f"  since {h['since']} by {h['actor']}: {h['reason']}" if h["since"] else "")
                                     for h in held] or ["no legal holds"])


