"""The console as an Airflow 3 plugin: the FastAPI app mounted on the api-server under ``/carrierfeeds``
and a link in Airflow's navigation, authenticated and authorised by Airflow's auth manager.

Airflow does not authenticate a plugin's FastAPI app (a mounted app inherits none of the core API's
dependencies), so every request is checked here: the caller's JWT (the UI's ``_token`` cookie or an
``Authorization: Bearer`` header) is resolved by the auth manager, then

* read = ``is_authorized_custom_view(GET, "Carrierfeeds Console")``;
* confirm a hand-off = ``is_authorized_custom_view(PUT, "Carrierfeeds Console")`` and edit access
  (``is_authorized_dag(PUT)``) to the feed's DAG.

With the FAB auth manager an "Auditor" role holding ``can_read`` on ``Carrierfeeds Console`` (plus
Viewer's DAG read) reads every page and confirms nothing; see docs/console.md. FAB grants only
permissions on resources it knows, and nothing registers a plugin's FastAPI app as one:
``python -m carrierfeeds.console.airflow_plugin fab-permissions`` creates the console's two
(:func:`create_fab_permissions`), after which ``airflow roles add-perms`` can grant them.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from airflow.plugins_manager import AirflowPlugin

from carrierfeeds.console.auth import Principal

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.requests import Request

log = logging.getLogger(__name__)
RESOURCE = "Carrierfeeds Console"
URL_PREFIX = "/carrierfeeds"
COOKIE = "_token"  # Airflow's COOKIE_NAME_JWT_TOKEN


class AirflowAuth:
    """Identify the caller through Airflow's auth manager; unauthenticated browsers go to its login."""

    async def identify(self, request: Request) -> Principal | None:
        from airflow.api_fastapi.app import get_auth_manager
        from jwt import InvalidTokenError

        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else request.cookies.get(COOKIE)
        if not token:
            return None
        manager = get_auth_manager()
        try:
            user = await manager.get_user_from_token(token)
        except InvalidTokenError:  # expired, or not signed by this deployment
            return None
        can_read = manager.is_authorized_custom_view(method="GET", resource_name=RESOURCE, user=user)
        can_edit = manager.is_authorized_custom_view(method="PUT", resource_name=RESOURCE, user=user)
        name = str(user.get_name())
        session = hashlib.sha256(f"{user.get_id()}:{name}".encode()).hexdigest()[:32]
        return Principal(name=name, can_read=bool(can_read), can_confirm=bool(can_edit), session=session,
                         handle=user)

    def login_url(self, request: Request) -> str | None:
        from airflow.api_fastapi.app import get_auth_manager

        return str(get_auth_manager().get_url_login(next_url=str(request.url)))

    def can_confirm_feed(self, principal: Principal, feed_id: str) -> bool:
        from airflow.api_fastapi.app import get_auth_manager
        from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

        from carrierfeeds.settings import dag_id_for

        if not principal.can_confirm or principal.handle is None:
            return False
        return bool(get_auth_manager().is_authorized_dag(method="PUT", details=DagDetails(id=dag_id_for(feed_id)),
                                                         user=principal.handle))


def _dag_url(request: Request, feed_id: str) -> str:
    from carrierfeeds.settings import dag_id_for

    base = str(request.scope.get("root_path", "")).removesuffix(URL_PREFIX)
    return f"{base}/dags/{dag_id_for(feed_id)}"


def create_fab_permissions() -> list[str]:
    """Create ``can_read`` and ``can_edit`` on ``Carrierfeeds Console`` in the FAB auth manager's
    database (the deployment's ``[database] sql_alchemy_conn``); idempotent. Returns them as
    "action on resource" strings. Needs the FAB provider installed."""
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    made = []
    with get_application_builder() as appbuilder:
        for action in ("can_read", "can_edit"):
            if appbuilder.sm.create_permission(action, RESOURCE) is None:
                raise RuntimeError(f"FAB did not create {action} on {RESOURCE}")
            made.append(f"{action} on {RESOURCE}")
    return made


def build_app() -> FastAPI:
    """The console over the environment's settings (CARRIERFEEDS_*), as the api-server mounts it."""
    from carrierfeeds.console.app import create_app
    from carrierfeeds.console.auth import load_secret
    from carrierfeeds.settings import Settings

    settings = Settings()
    return create_app(settings, auth=AirflowAuth(), secret=lambda: load_secret(settings.resolved_keys_dir),
                      dag_url=_dag_url)


class LazyConsole:
    """The console's ASGI app, built by :func:`build_app` on its first request, not when Airflow loads the
    plugin: every Airflow process loads plugins (each task's, under Celery), and only the api-server
    serves the console. Building it means importing FastAPI and the console (figures in
    benchmarks/README.md, "Celery with feed")."""

    def __init__(self) -> None:
        self._app: FastAPI | None = None
        self._lock = threading.Lock()

    @property
    def app(self) -> FastAPI:
        """The console app, built once."""
        with self._lock:
            if self._app is None:
                self._app = build_app()
            return self._app

    @property
    def routes(self) -> list[Any]:
        """The console's routes, as a mounted app's are read (Starlette's ``Mount.routes``): how the
        pages' ``url_for`` finds the console's own routes (its static files) from Airflow's router."""
        return list(self.app.routes)

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[MutableMapping[str, Any]], Awaitable[None]]) -> None:
        await self.app(scope, receive, send)


class CarrierfeedsConsolePlugin(AirflowPlugin):
    """Registered through the ``airflow.plugins`` entry point: nothing goes in the dags folder."""

    # Airflow's plugin manager reads these class attributes as they are declared on AirflowPlugin.
    name = "carrierfeeds_console"
    fastapi_apps: list[dict[str, Any]] = [  # noqa: RUF012
        {"app": LazyConsole(), "url_prefix": URL_PREFIX, "name": "carrierfeeds console"}]
    external_views: list[dict[str, Any]] = [  # noqa: RUF012
        {"name": "Carrierfeeds", "href": "carrierfeeds/", "destination": "nav", "url_route": "carrierfeeds",
         "category": "browse"}]


if __name__ == "__main__":  # python -m carrierfeeds.console.airflow_plugin fab-permissions
    import sys

    if sys.argv[1:] != ["fab-permissions"]:
        sys.exit("usage: python -m carrierfeeds.console.airflow_plugin fab-permissions")
    for line in create_fab_permissions():
        sys.stdout.write(line + "\n")
