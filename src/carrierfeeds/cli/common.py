"""What every command shares: the `app`, the --verbose callback, JSON-or-lines output, errors to exit codes."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Annotated, Any

import typer
from typer._click import Command
from typer.core import TyperGroup, TyperOption

from carrierfeeds.errors import CarrierFeedsError, ConfigError
from carrierfeeds.outcomes import exit_code_for
from carrierfeeds.settings import Settings, feed_paths


class _RootGroup(TyperGroup):
    """The root command: flags show no ``<bool>`` type in help, and ``-v`` also works after a subcommand."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        verbose = next(p for p in self.params if p.name == "verbose")
        for command in _leaves(self):
            # A copy of the root's own option that sets logging when parsed instead of reaching the command.
            late = copy.copy(verbose)
            late.expose_value, late.callback = False, _verbose_callback
            command.params.append(late)
        for command in [self, *_all_commands(self)]:
            for param in [*command.params, command.get_help_option(typer.Context(command))]:
                if isinstance(param, TyperOption) and param.is_flag:
                    param.metavar = ""


def _all_commands(group: TyperGroup) -> list[Command]:
    found: list[Command] = []
    for command in group.commands.values():
        found.append(command)
        if isinstance(command, TyperGroup):
            found += _all_commands(command)
    return found


def _leaves(group: TyperGroup) -> list[Command]:
    return [c for c in _all_commands(group) if not isinstance(c, TyperGroup)]


def _verbose_callback(ctx: Any, param: Any, value: Any) -> None:
    if value:
        _configure_logging(verbose=True)


app = typer.Typer(help="carrierfeeds: employer census in, validated encrypted 834 out, every delivery "
                       "on a verifiable ledger.", no_args_is_help=True, add_completion=False, cls=_RootGroup)


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


def _version_callback(value: bool) -> None:
    if value:
        from carrierfeeds import __version__

        typer.echo(f"carrierfeeds {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log stage progress")] = False,
          version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_version_callback,
                                                help="print the version and exit (each run records it "
                                                     "in the ledger)")] = False) -> None:
    _configure_logging(verbose=verbose)


def _configure_logging(*, verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Third parties set their own loggers to INFO (GX's temporary docs site, paramiko's transport), so
    # the console handler, not only the root logger, holds the line.
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.INFO if verbose else logging.WARNING)
    if verbose:  # basicConfig does nothing the second time, when -v comes after the subcommand
        logging.getLogger().setLevel(logging.INFO)


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


class GpgExitCodes(logging.Filter):
    """Holds back python-gnupg's "gpg returned a non-zero error code" warning (one per key gpg did not
    find), counting them; the command says it once in its own words. Shown under -v."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "non-zero error code" in str(record.msg):
            self.count += 1
            return logging.getLogger().getEffectiveLevel() <= logging.INFO
        return True


@contextlib.contextmanager
def quiet_gpg_exit_codes() -> Iterator[GpgExitCodes]:
    said = GpgExitCodes()
    gnupg_log = logging.getLogger("gnupg")
    gnupg_log.addFilter(said)
    try:
        yield said
    finally:
        gnupg_log.removeFilter(said)


@contextlib.contextmanager
def progress_display(title: str, steps: int) -> Iterator[None]:
    """Show long work's steps (``carrierfeeds.progress``) as a progress bar on stderr, only when stderr is
    a terminal: piped or redirected output gets nothing. The bar names the step, never data."""
    from carrierfeeds import progress

    if not sys.stderr.isatty():
        yield
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=Console(file=sys.stderr), transient=True,
                   redirect_stdout=False, redirect_stderr=False)
    task = bar.add_task(title, total=steps)
    started: list[str] = []

    def step(name: str) -> None:
        if started:
            bar.advance(task)
        started.append(name)
        bar.update(task, description=f"{title}: {name}")

    with bar, progress.listening(step):
        yield
