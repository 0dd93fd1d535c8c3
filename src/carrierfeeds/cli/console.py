"""``carrierfeeds console`` (the web console without Airflow, behind its own login) and
``carrierfeeds console-user`` (add or replace a console user in the keys directory)."""

from __future__ import annotations

from typing import Annotated

import typer

from carrierfeeds.cli.common import _fail, app
from carrierfeeds.errors import CarrierFeedsError
from carrierfeeds.outcomes import ExitCode
from carrierfeeds.settings import Settings


@app.command("console")
def console(
    host: Annotated[str, typer.Option(help="address to listen on; keep 127.0.0.1 behind a TLS proxy")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port to listen on")] = 8765,
    airflow_url: Annotated[str | None, typer.Option(help="Airflow's base URL, to link each feed to its DAG")] = None,
    secure_cookie: Annotated[bool, typer.Option(help="mark the session cookie Secure (served over HTTPS)")] = False,
) -> None:
    """Serve the console (feeds board, a feed's history, auditors' view, hand-offs) with its own login:
    users from `carrierfeeds console-user`, role ops (reads, confirms hand-offs) or auditor (reads)."""
    import uvicorn

    from carrierfeeds.console.app import create_app
    from carrierfeeds.console.auth import StandaloneAuth, UsersFile

    settings = Settings()
    try:
        auth = StandaloneAuth(settings.resolved_keys_dir, secure_cookie=secure_cookie)
        if not UsersFile(settings.resolved_keys_dir).read():
            typer.echo("error: no console users yet; add one with `carrierfeeds console-user NAME --role ops`",
                       err=True)
            raise typer.Exit(ExitCode.USAGE)
    except CarrierFeedsError as exc:
        _fail(exc, False)
        return
    dag_url = None
    if airflow_url:
        from carrierfeeds.settings import dag_id_for

        base = airflow_url.rstrip("/")

        def dag_url(request: object, feed_id: str) -> str:
            return f"{base}/dags/{dag_id_for(feed_id)}"

    web = create_app(settings, auth=auth, secret=auth.secret, dag_url=dag_url)
    uvicorn.run(web, host=host, port=port, log_level="info", server_header=False)


@app.command("console-user")
def console_user(
    name: Annotated[str, typer.Argument(help="the user's login name (recorded as the actor of a confirmation)")],
    role: Annotated[str, typer.Option(help="ops (reads, confirms hand-offs) or auditor (reads only)")],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True,
                                          help="at least 12 characters; stored as a salted scrypt hash")],
) -> None:
    """Add or replace a user of the standalone console (keys directory, file console-users.json, 0600)."""
    from carrierfeeds.console.auth import UsersFile

    try:
        UsersFile(Settings().resolved_keys_dir).set_user(name, role, password)
    except CarrierFeedsError as exc:
        _fail(exc, False)
        return
    typer.echo(f"console user {name} ({role}) saved")
