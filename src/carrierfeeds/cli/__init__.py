"""The ops and auditor command line: ``carrierfeeds --help``. Exit codes (``outcomes.ExitCode``) mean
the same everywhere:

    0  done (delivered, or already delivered earlier: nothing sent twice; or no new census to send)
    1  the census was rejected: the employer must fix the data (see the validation report)
    2  usage or configuration error: fix the command or the config files
    3  refused: a security or policy check said no (key, host key, authorisation, conformance)
    4  transient failure: retry later
    5  permanent failure of an outside system (authentication, permission, file already there)
"""

from __future__ import annotations

import sys

import typer

from carrierfeeds.cli.common import app
from carrierfeeds.errors import CarrierFeedsError
from carrierfeeds.outcomes import exit_code_for
from carrierfeeds.settings import Settings

# Each module registers its commands on `app` when imported: the order here is the order in --help.
# isort: off
from carrierfeeds.cli import run, feeds, db, audit, hold, handoff, keys, acks, status, reconcile, console, certify  # noqa: F401
from carrierfeeds.cli import notice  # noqa: F401
# isort: on

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    import sqlalchemy as sa

    from carrierfeeds.hardening import disable_core_dumps

    disable_core_dumps()  # this process reads censuses, decrypts acknowledgments and holds keys
    try:
        app()
    except CarrierFeedsError as exc:  # a stage error outside a command's own handling
        typer.echo(f"error: {exc.message}", err=True)
        sys.exit(exit_code_for(exc))
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        # The ledger answered when opened and went away later: one line, and a retry may fix it.
        settings = Settings()
        setting = "CARRIERFEEDS_LEDGER_URL" if settings.ledger_url else "CARRIERFEEDS_DATA_DIR"
        from carrierfeeds.ledger.connect import connect_failure

        failure = connect_failure(settings.resolved_ledger_url, exc, setting=setting)
        typer.echo(f"error: {failure.message}", err=True)
        sys.exit(exit_code_for(failure))
