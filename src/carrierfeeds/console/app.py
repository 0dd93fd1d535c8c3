"""The console as a FastAPI app: server-rendered pages over the ledger (board, a feed's history, the
auditors' view, hand-offs) and one write action, confirming a manual hand-off.

Every route needs an authenticated principal from the :class:`Authorizer`; pages send an unauthenticated
browser to the login page, anything else gets 401. Pages and URLs carry ids, counts, hashes,
fingerprints and member tokens only, never census values.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from carrierfeeds.console.auth import (
    SESSION_COOKIE,
    SESSION_SECONDS,
    Authorizer,
    Principal,
    StandaloneAuth,
    csrf_ok,
    csrf_token,
)
from carrierfeeds.console.board_cache import BoardCache
from carrierfeeds.errors import CarrierFeedsError

if TYPE_CHECKING:
    from carrierfeeds.ledger.store import Ledger
    from carrierfeeds.ops.status import Board
    from carrierfeeds.settings import Settings

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
#: How old the board may get before a request starts rebuilding it (see board_cache).
BOARD_MAX_AGE = timedelta(seconds=30)
#: The longest period the report page builds at once (the CLI has no limit; a browser waits on this one).
MAX_REPORT_DAYS = 366


class _LoginRequired(Exception):
    def __init__(self, url: str) -> None:
        self.url = url


async def _principal(request: Request) -> Principal:
    """The caller, or 303 to the login page (a browser's page request) or 401; 403 without read access."""
    auth: Authorizer = request.app.state.console_auth
    who = await auth.identify(request)
    if who is None:
        login = auth.login_url(request)
        if login is not None and request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            raise _LoginRequired(login)
        raise HTTPException(status_code=401, detail="not authenticated", headers={"WWW-Authenticate": "Session"})
    if not who.can_read:
        raise HTTPException(status_code=403, detail="no read access to the carrierfeeds console")
    return who


Who = Annotated[Principal, Depends(_principal)]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _default_ledger(settings: Settings) -> Ledger:
    from carrierfeeds.settings import open_ledger

    return open_ledger(settings)


def create_app(settings: Settings, *, auth: Authorizer, secret: bytes | Callable[[], bytes],
               dag_url: Callable[[Request, str], str | None] | None = None,
               ledger_factory: Callable[[Settings], Ledger] = _default_ledger,
               clock: Callable[[], datetime] = _utcnow, board_max_age: timedelta = BOARD_MAX_AGE,
               title: str = "carrierfeeds console") -> FastAPI:
    """The console app over ``settings``' feeds and ledger; ``secret`` keys the CSRF tokens (a callable is
    asked on first use, so importing a plugin creates no key file); ``dag_url``
    maps a feed id to its DAG's page in Airflow (None: no link); the board is rebuilt in the background
    once older than ``board_max_age`` (zero: on every request)."""
    opened: list[Ledger] = []

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        for one in opened:
            one.close()

    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    lock = threading.Lock()
    keys: list[bytes] = []

    def key() -> bytes:
        with lock:
            if not keys:
                keys.append(secret() if callable(secret) else secret)
            return keys[0]

    def ledger() -> Ledger:
        with lock:
            if not opened:
                opened.append(ledger_factory(settings))
            return opened[0]

    @app.exception_handler(_LoginRequired)
    async def _to_login(request: Request, exc: _LoginRequired) -> Response:
        return RedirectResponse(exc.url, status_code=303)

    app.state.console_auth = auth

    def render(request: Request, name: str, who: Principal | None, status_code: int = 200,
               **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, name, {
            "title": title, "who": who, "csrf": csrf_token(key(), who.session) if who else "",
            "standalone": isinstance(auth, StandaloneAuth), **context}, status_code=status_code)

    def link(request: Request, feed_id: str) -> str | None:
        return dag_url(request, feed_id) if dag_url else None

    # ------------------------------------------------------------------------------------ board
    def build_board() -> Board:
        from carrierfeeds.ops.status import load_board

        return load_board(settings, ledger(), now=clock())

    boards = BoardCache(build_board, max_age=board_max_age, clock=clock)

    @app.get("/", response_class=HTMLResponse, name="board")
    def board(request: Request, who: Who, employer: str | None = None, carrier: str | None = None) -> HTMLResponse:
        from carrierfeeds.cli.status import row_cells

        data = boards.get()
        employers = sorted({(r.employer_id, r.employer_name) for r in data.rows})
        carriers = sorted({(r.carrier_id, r.carrier_name) for r in data.rows})
        rows = [r for r in data.rows if (not employer or r.employer_id == employer)
                and (not carrier or r.carrier_id == carrier)]
        return render(request, "board.html", who, board=data, rows=[(r, row_cells(r), link(request, r.feed_id))
                                                                     for r in rows],
                      employers=employers, carriers=carriers, employer=employer or "", carrier=carrier or "")

    # ------------------------------------------------------------------------------- a feed
    @app.get("/feeds/{feed_id}", response_class=HTMLResponse, name="feed")
    def feed(request: Request, who: Who, feed_id: str) -> HTMLResponse:
        from carrierfeeds.console.queries import feed_history

        history = feed_history(ledger(), feed_id)
        if not history.runs and not history.deliveries:
            known = {p.stem for p in settings.feeds_dir.glob("*.yaml")}
            if feed_id not in known:
                raise HTTPException(status_code=404, detail="no such feed")
        return render(request, "feed.html", who, h=history, dag=link(request, feed_id))

    # ------------------------------------------------------------------------------ auditors
    @app.get("/audit", response_class=HTMLResponse, name="audit")
    def audit(request: Request, who: Who) -> HTMLResponse:
        from carrierfeeds.errors import CarrierFeedsError
        from carrierfeeds.ledger.anchor import AnchorLog
        from carrierfeeds.ops.status import chain_status

        try:
            heads, _ = AnchorLog.for_settings(settings).read()
            chain = chain_status(heads)
        except CarrierFeedsError as exc:
            chain = chain_status((), problem=exc.message)
        from carrierfeeds.audit import disclosure_lines, feed_parties

        today = clock().date()
        seq, head = ledger().chain_head()
        return render(request, "audit.html", who, chain=chain, head_seq=seq, head_hash=head,
                      auths=ledger().authorisations(), since=(today.replace(day=1)).isoformat(),
                      until=today.isoformat(),
                      disclosures=disclosure_lines(ledger(), parties=feed_parties(ledger())))

    @app.get("/audit/report", name="report")
    def report(request: Request, who: Who, since: date, until: date,
               fmt: Annotated[str, Query(alias="format", pattern="^(html|pdf)$")] = "html") -> Response:
        from carrierfeeds.acknowledgments import carrier_ack_settings
        from carrierfeeds.audit import (
            acks_from_ledger,
            build_report,
            feed_parties,
            render_report_html,
            render_report_pdf,
        )
        from carrierfeeds.cli.common import _audit_parties
        from carrierfeeds.ledger.anchor import AnchorLog

        if until < since or (until - since) > timedelta(days=MAX_REPORT_DAYS):
            raise HTTPException(status_code=422, detail=f"a period of 1 to {MAX_REPORT_DAYS} days, since <= until")
        the_ledger = ledger()
        windows = {f: c.window for c in carrier_ack_settings(settings) for f in c.feed_ids}
        built = build_report(the_ledger, since=since, until=until, generated_at=clock(),
                             parties=feed_parties(the_ledger, _audit_parties(settings)),
                             acks=acks_from_ledger(the_ledger), ack_windows=windows,
                             anchors=AnchorLog.for_settings(settings))
        if fmt == "pdf":
            name = f"carrierfeeds-report-{since}-{until}.pdf"
            return Response(render_report_pdf(built), media_type="application/pdf",
                            headers={"Content-Disposition": f'attachment; filename="{name}"'})
        return HTMLResponse(render_report_html(built))

    @app.get("/audit/member", response_class=HTMLResponse, name="member")
    def member(request: Request, who: Who, token: str = "") -> HTMLResponse:
        from carrierfeeds.audit import member_deliveries
        from carrierfeeds.console.queries import find_member_token

        problem, hits, deliveries = None, None, None
        if token:
            try:
                hits = find_member_token(settings, token)
            except ValueError as exc:
                problem = str(exc)
            else:
                deliveries = member_deliveries(ledger(), token)
        return render(request, "member.html", who, token=token if hits is not None else "", hits=hits,
                      deliveries=deliveries, problem=problem, status_code=422 if problem else 200)

    # ------------------------------------------------------------------------------ hand-offs
    @app.get("/handoffs", response_class=HTMLResponse, name="handoffs")
    def handoffs(request: Request, who: Who, done: str | None = None) -> HTMLResponse:
        pending = ledger().pending_handoffs()
        allowed = {d.delivery_id: auth.can_confirm_feed(who, d.feed_id) for d in pending}
        return render(request, "handoffs.html", who, pending=pending, allowed=allowed, done=done)

    @app.post("/handoffs/{delivery_id}/confirm", name="confirm")
    def confirm(request: Request, who: Who, delivery_id: str, method: Annotated[str, Form()],
                received_by: Annotated[str, Form()], csrf: Annotated[str | None, Form()] = None) -> Response:
        from carrierfeeds.ledger import UnknownRecord

        the_ledger = ledger()
        found = [d for d in the_ledger.pending_handoffs() if d.delivery_id == delivery_id]
        if not who.can_confirm or (found and not auth.can_confirm_feed(who, found[0].feed_id)):
            raise HTTPException(status_code=403, detail="confirming a hand-off needs the edit permission")
        if not csrf_ok(key(), who.session, csrf):
            raise HTTPException(status_code=403, detail="missing or stale form token; reload the page")
        if not method.strip() or not received_by.strip():
            raise HTTPException(status_code=422, detail="say how the file was handed over and who received it")
        try:
            record = the_ledger.confirm_handoff(delivery_id, by=who.name, method=method.strip(),
                                                received_by=received_by.strip(), now=clock())
        except UnknownRecord:
            raise HTTPException(status_code=404, detail="no such delivery") from None
        except CarrierFeedsError as exc:
            raise HTTPException(status_code=409, detail=exc.message) from None
        log.info("console: delivery %s hand-off confirmed by %s", record.delivery_id, who.name)
        return RedirectResponse(str(request.url_for("handoffs")) + f"?done={quote(record.delivery_id)}",
                                status_code=303)

    # ------------------------------------------------------------------------- standalone login
    if isinstance(auth, StandaloneAuth):
        standalone = auth

        @app.get("/login", response_class=HTMLResponse, name="login_form")
        def login_form(request: Request, next: str = "/") -> HTMLResponse:
            return render(request, "login.html", None, next=_local(next), problem=None)

        @app.post("/login", name="login")
        def login(request: Request, user: Annotated[str, Form()], password: Annotated[str, Form()],
                  next: Annotated[str, Form()] = "/") -> Response:
            role = standalone.users.authenticate(user, password)
            if role is None:
                log.warning("console: failed login")
                return render(request, "login.html", None, next=_local(next), problem="unknown user or wrong password",
                              status_code=401)
            response = RedirectResponse(_local(next), status_code=303)
            response.set_cookie(SESSION_COOKIE, standalone.session_cookie(user, role), max_age=SESSION_SECONDS,
                                httponly=True, samesite="strict", secure=standalone.secure_cookie)
            log.info("console: %s logged in (%s)", user, role)
            return response

        @app.post("/logout", name="logout")
        def logout(request: Request, who: Who, csrf: Annotated[str | None, Form()] = None) -> Response:
            if not csrf_ok(key(), who.session, csrf):
                raise HTTPException(status_code=403, detail="missing or stale form token")
            response = RedirectResponse(str(request.url_for("login_form")), status_code=303)
            response.delete_cookie(SESSION_COOKIE)
            return response

    return app


def _local(target: str) -> str:
    """A redirect target inside this app: a path, never another site."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"
