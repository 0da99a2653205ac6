"""The web app: Starlette routes, server-rendered Jinja2 pages, no inline script.

- **Security headers** on every response: a CSP allowing only this origin's
  scripts, styles and images (no inline script or style), ``frame-ancestors
  'none'``, ``form-action 'self'``, nosniff, the referrer only to this
  origin (with ``no-referrer`` Chromium sends ``Origin: null`` on a form),
  no caching of pages; HSTS when served behind TLS.
- **Login** with the collector's users (argon2, ``passwords``), throttled per
  account and per address (``throttle``), never locked; a server-side
  session (``sessions``) in an HttpOnly, SameSite=Strict cookie, ``Secure``
  (and ``__Host-`` prefixed) behind TLS; idle timeout; logout, and logout
  everywhere. A disabled user's sessions end at their next request.
- **CSRF**: every form carries the session's token (the login form a
  pre-session one, double-submitted in a cookie); a POST without the right
  token, or from another origin, is refused (403).
- **Roles** (``scope``): subjects' pages for readers covering the procedure's
  study and site; the board per site; the audit for monitors and admins;
  users for admins. Every read of a subject's page is an audit entry
  (``subject_read``: who, room, procedure, page), anchored like every other.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

import jinja2
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import admin
from ..access import Grant
from ..anchors import anchor_head
from ..passwords import PasswordError, hash_password, password_problem, verify_password
from ..store import audit
from ..store.db import writer
from ..store.models import AuditEntry, Room, User
from ..store.received import room_copy
from ..verify import check_room_copy
from . import plot as plotting
from .board import Board
from .records import Filters, Procedure, RecordIndex, tip_series
from .scope import READER_ROLES, may_read_audit, may_read_subject, may_see_room
from .sessions import LoginSession, SessionStore, new_token, same_token
from .study_pages import StudyPages
from .telemetry import BrokerSettings, TelemetryFeed
from .throttle import LoginThrottle

__all__ = ["CSP", "WebSettings", "create_app"]

HERE: Final = Path(__file__).parent
PAGE_SIZE: Final = 50
AUDIT_PAGE: Final = 100
PLOT_COLUMNS: Final = 840
PLOT_CACHE: Final = 64
SSE_TICK_S: Final = 0.25
MAX_FIELD: Final = 1024

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; object-src 'none'"
)
PRELOGIN_COOKIE: Final = "cryohub_login"


@dataclass
class WebSettings:
    engine: Engine
    node: str  # the collector's id (its audit chain)
    anchor_file: Path
    journal_socket: Path | None = None
    secure: bool = False  # served behind TLS: Secure cookies, HSTS
    idle_s: float = 15 * 60.0
    tz: dt.tzinfo = dt.UTC
    broker: BrokerSettings | None = None
    mono: Callable[[], float] = time.monotonic
    wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    #: study profiles ([studies] profiles_dir): the follow-up schedule of each study
    profiles: tuple[Any, ...] = ()
    #: the procedures shown are at most this late (their index looks for new rows at
    #: most this often)
    refresh_s: float = 1.0
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    board: Board = field(default_factory=Board)


@dataclass(frozen=True, slots=True)
class Viewer:
    name: str
    grants: tuple[Grant, ...]
    session: LoginSession
    token: str

    @property
    def sites(self) -> set[str] | None:
        """Sites the viewer may see on the board (None: every site)."""
        if any(g.site is None for g in self.grants):
            return None
        return {g.site for g in self.grants if g.site is not None}


class SecurityHeaders:
    """Pure ASGI middleware: the headers on every response (streams included)."""

    def __init__(self, app: ASGIApp, *, secure: bool) -> None:
        self.app = app
        self.secure = secure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                extra = {
                    b"content-security-policy": CSP.encode(),
                    b"x-content-type-options": b"nosniff",
                    b"x-frame-options": b"DENY",
                    b"referrer-policy": b"same-origin",
                    b"cross-origin-opener-policy": b"same-origin",
                    b"cross-origin-resource-policy": b"same-origin",
                    b"permissions-policy": b"camera=(), microphone=(), geolocation=()",
                }
                if not scope["path"].startswith("/static/"):
                    extra[b"cache-control"] = b"no-store"
                if self.secure:
                    extra[b"strict-transport-security"] = b"max-age=31536000"
                present = {k.lower() for k, _ in headers}
                headers.extend((k, v) for k, v in extra.items() if k not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Forbidden(Exception):
    pass


def create_app(settings: WebSettings) -> Starlette:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(HERE / "templates")),
        autoescape=True,  # every text is escaped; nothing is marked safe
    )
    templates = Jinja2Templates(env=env)
    env.globals["tz_name"] = str(settings.tz)
    env.filters["when"] = lambda v: _when(v, settings.tz)
    env.filters["num"] = _num
    sessions = SessionStore(idle_s=settings.idle_s)
    index = RecordIndex(refresh_s=settings.refresh_s)
    plots: OrderedDict[tuple[Any, ...], str] = OrderedDict()
    cookie = "__Host-cryohub" if settings.secure else "cryohub_session"
    feed = None if settings.broker is None else TelemetryFeed(settings.broker, settings.board)

    # ---- plumbing ---------------------------------------------------------------------------
    def db() -> Session:
        return Session(settings.engine)

    def viewer(request: Request, *, renew: bool = True) -> Viewer | None:
        token = request.cookies.get(cookie)
        s = sessions.get(token, settings.mono(), renew=renew)
        if s is None or token is None:
            return None
        with db() as session:
            user = session.execute(select(User).where(User.name == s.user)).scalar_one_or_none()
            if user is None or user.disabled_at is not None:
                sessions.end_all(s.user)
                return None
            grants = admin.grants_of(session, user)
        return Viewer(s.user, grants, s, token)

    def page(
        request: Request, name: str, who: Viewer | None, status: int = 200, **ctx: Any
    ) -> Response:
        ctx.update(
            me=who,
            csrf=None if who is None else who.session.csrf,
            may_audit=who is not None and may_read_audit(who.grants),
            is_admin=who is not None and any(g.role.value == "admin" for g in who.grants),
        )
        resp: Response = templates.TemplateResponse(request, name, ctx, status_code=status)
        return resp

    def to_login(request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?{urlencode({'next': target})}", status_code=303)

    def same_origin(request: Request) -> bool:
        origin = request.headers.get("origin")
        if origin is None or origin == "null":
            return origin is None
        host = request.headers.get("host", "")
        return origin.split("://", 1)[-1] == host

    async def form_of(request: Request) -> dict[str, str]:
        form = await request.form()
        return {k: str(v)[:MAX_FIELD] for k, v in form.items() if isinstance(v, str)}

    async def checked_post(request: Request) -> tuple[Viewer, dict[str, str]] | Response:
        who = await run_in_threadpool(viewer, request)
        if who is None:
            return to_login(request)
        form = await form_of(request)
        if not same_origin(request) or not same_token(form.get("csrf"), who.session.csrf):
            return PlainTextResponse("refused: the form's CSRF token is missing or wrong", 403)
        return who, form

    def log_read(who: Viewer, proc: Procedure, what: str) -> None:
        """Every read of a subject's page: an audit entry, anchored."""
        now = settings.wall()
        with Session(writer(settings.engine)) as s, s.begin():
            head = audit.append(
                s,
                node=settings.node,
                kind="subject_read",
                payload={"by": who.name, "room": proc.node, "procedure_id": proc.id, "page": what},
                at=now,
            )
        anchor_head(
            settings.node,
            head,
            anchor_file=settings.anchor_file,
            journal_socket=settings.journal_socket,
            at=now,
        )

    def readable(who: Viewer) -> Callable[[str | None, str], bool]:
        return lambda study, site: may_read_subject(who.grants, study, site)

    def refreshed_index() -> RecordIndex:
        with db() as s:
            index.refresh(s, settings.mono())
        return index

    def find_procedure(who: Viewer, node: str, pid: int) -> Procedure:
        proc = refreshed_index().procedure(node, pid)
        # a procedure outside the viewer's scope is as absent as one that does not exist
        if proc is None or not may_read_subject(who.grants, proc.study, proc.site):
            raise Forbidden
        return proc

    # ---- login ------------------------------------------------------------------------------
    async def login_form(request: Request) -> Response:
        token = new_token()
        resp = page(request, "login.html", None, login_csrf=token, next=_safe_next(request))
        _set_cookie(resp, PRELOGIN_COOKIE, token, settings.secure, max_age=3600)
        return resp

    async def login(request: Request) -> Response:
        form = await form_of(request)
        name = form.get("username", "").strip()
        password = form.get("password", "")
        nxt = _safe_next_value(form.get("next"))
        if not same_origin(request) or not same_token(
            form.get("csrf"), request.cookies.get(PRELOGIN_COOKIE)
        ):
            return PlainTextResponse("refused: the form's CSRF token is missing or wrong", 403)
        address = request.client.host if request.client else "?"
        now = settings.mono()
        wait = settings.throttle.wait_s(name, address, now)

        def again(error: str, status: int) -> Response:
            token = new_token()
            resp = page(
                request,
                "login.html",
                None,
                status=status,
                login_csrf=token,
                next=nxt,
                error=error,
                username=name,
            )
            _set_cookie(resp, PRELOGIN_COOKIE, token, settings.secure, max_age=3600)
            return resp

        if wait > 0:
            return again(
                f"Too many failed logins: wait {math.ceil(wait)} s before trying again.", 429
            )
        ok = await run_in_threadpool(_check_login, settings.engine, name, password)
        if not ok:
            settings.throttle.failed(name, address, settings.mono())
            return again("Wrong user name or password (or the account is disabled).", 401)
        settings.throttle.succeeded(name)
        token, _s = sessions.start(name, settings.mono())
        resp = RedirectResponse(nxt, status_code=303)
        _set_cookie(resp, cookie, token, settings.secure)
        resp.delete_cookie(PRELOGIN_COOKIE, path="/")
        return resp

    async def logout(request: Request) -> Response:
        checked = await checked_post(request)
        if isinstance(checked, Response):
            return checked
        who, form = checked
        if form.get("everywhere"):
            sessions.end_all(who.name)
        else:
            sessions.end(who.token)
        resp = RedirectResponse("/login?bye=1", status_code=303)
        resp.delete_cookie(cookie, path="/")
        return resp

    # ---- board ------------------------------------------------------------------------------
    async def home(request: Request) -> Response:
        return RedirectResponse("/board", status_code=303)

    async def board_page(request: Request) -> Response:
        who = await run_in_threadpool(viewer, request)
        if who is None:
            return to_login(request)
        rooms = settings.board.view(settings.mono(), sites=who.sites, tz=settings.tz)
        return page(request, "board.html", who, rooms=rooms, feed=feed)

    async def board_events(request: Request) -> Response:
        who = await run_in_threadpool(viewer, request, renew=False)
        if who is None:
            return PlainTextResponse("log in first", 401)
        token = who.token

        async def stream() -> AsyncIterator[str]:
            sent = None
            last_sent = 0.0
            yield "retry: 2000\n\n"
            while True:
                if await request.is_disconnected():
                    return
                if sessions.get(token, settings.mono(), renew=False) is None:
                    yield "event: expired\ndata: {}\n\n"
                    return
                rooms = settings.board.view(settings.mono(), sites=who.sites, tz=settings.tz)
                body = json.dumps(
                    {"rooms": rooms, "feed": None if feed is None else feed.connected},
                    separators=(",", ":"),
                    allow_nan=False,
                )
                now = settings.mono()
                if body != sent or now - last_sent > 10:
                    yield f"data: {body}\n\n"
                    sent, last_sent = body, now
                await _sleep(SSE_TICK_S)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"x-accel-buffering": "no", "cache-control": "no-store"},
        )

    # ---- procedures -------------------------------------------------------------------------
    def procedures_page(request: Request) -> Response:
        who = viewer(request)
        if who is None:
            return to_login(request)
        q = request.query_params
        errors: dict[str, str] = {}
        dates: dict[str, dt.date | None] = {}
        for key in ("from", "to"):
            text = q.get(key, "").strip()
            dates[key] = None
            if text:
                try:
                    dates[key] = dt.date.fromisoformat(text)
                except ValueError:
                    errors[key] = "a date is YYYY-MM-DD"
        status = q.get("status") or None
        if status not in (None, "open", "closed"):
            errors["status"] = "open or closed"
            status = None
        filters = Filters(
            study=q.get("study") or None,
            site=q.get("site") or None,
            room=q.get("room") or None,
            status=status,
            date_from=dates["from"],
            date_to=dates["to"],
        )
        allowed = refreshed_index().procedures(readable(who))
        chosen = [p for p in allowed if filters.keep(p)]
        try:
            page_no = max(1, int(q.get("page", "1")))
        except ValueError:
            page_no = 1
        pages = max(1, math.ceil(len(chosen) / PAGE_SIZE))
        page_no = min(page_no, pages)
        shown = chosen[(page_no - 1) * PAGE_SIZE : page_no * PAGE_SIZE]
        keep = {k: v for k, v in q.items() if k != "page" and v}
        return page(
            request,
            "procedures.html",
            who,
            procedures=shown,
            total=len(chosen),
            page_no=page_no,
            pages=pages,
            query=q,
            errors=errors,
            choices=index.choices(allowed),
            prev_url=f"?{urlencode({**keep, 'page': page_no - 1})}" if page_no > 1 else None,
            next_url=f"?{urlencode({**keep, 'page': page_no + 1})}" if page_no < pages else None,
        )

    def procedure_page(request: Request) -> Response:
        who = viewer(request)
        if who is None:
            return to_login(request)
        node, pid = request.path_params["node"], request.path_params["pid"]
        try:
            proc = find_procedure(who, node, pid)
        except Forbidden:
            return page(request, "error.html", who, 404, message="No such procedure to show you.")
        log_read(who, proc, "procedure")
        cycles = index.children(node, "cycles", pid)
        alarms = index.children(node, "alarms", pid)
        events = proc.values.get("adverse_events")
        return page(
            request,
            "procedure.html",
            who,
            proc=proc,
            cycles=cycles,
            alarms=alarms,
            events=events if isinstance(events, list) else None,
            events_recorded=isinstance(events, list),
            details=_details(proc.values),
        )

    def procedure_plot(request: Request) -> Response:
        who = viewer(request)
        if who is None:
            return PlainTextResponse("log in first", 401)
        node, pid = request.path_params["node"], request.path_params["pid"]
        try:
            proc = find_procedure(who, node, pid)
        except Forbidden:
            return PlainTextResponse("no such procedure", 404)
        log_read(who, proc, "plot")
        with db() as s:
            newest, series, duration = tip_series(s, proc, settings.wall())
        # the record is append-only: a plot changes only when a newer block arrives
        cycles = index.children(node, "cycles", pid)
        key = (node, pid, newest, proc.values.get("closed_at"), len(cycles))
        svg = plots.get(key)
        if svg is None:
            cols = {
                probe: plotting.decimate(points, 0.0, duration, PLOT_COLUMNS)
                for probe, points in series.items()
            }
            svg = plotting.plot_svg(
                cols,
                _shades(proc, cycles),
                duration_s=duration,
                columns=PLOT_COLUMNS,
                title=f"{node} procedure {pid}: tip temperature",
            )
            plots[key] = svg
            while len(plots) > PLOT_CACHE:
                plots.popitem(last=False)
        else:
            plots.move_to_end(key)
        return Response(svg, media_type="image/svg+xml")

    # ---- follow-up ----------------------------------------------------------------------------
    def followup_page(request: Request) -> Response:
        """What is due and overdue (cryod.hub.followup), in the viewer's studies and sites."""
        who = viewer(request)
        if who is None:
            return to_login(request)
        items = _due_items(settings, who.grants)
        return page(request, "followup.html", who, items=items)

    # ---- audit ------------------------------------------------------------------------------
    def audit_page(request: Request) -> Response:
        who = viewer(request)
        if who is None:
            return to_login(request)
        if not may_read_audit(who.grants):
            return page(request, "error.html", who, 403, message="The audit is for monitors.")
        try:
            before = int(request.query_params.get("before", "0")) or None
        except ValueError:
            before = None
        with db() as s:
            q = select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(AUDIT_PAGE)
            if before is not None:
                q = q.where(AuditEntry.seq < before)
            rows = list(s.execute(q).scalars())
            total = s.execute(select(func.count()).select_from(AuditEntry)).scalar_one()
            rooms = list(s.execute(select(Room).order_by(Room.site, Room.node)).scalars())
        entries = [
            {"seq": e.seq, "at": e.at, "kind": e.kind, **_describe(e.kind, e.payload)} for e in rows
        ]
        older = rows[-1].seq if rows and rows[-1].seq > 1 else None
        visible = [r for r in rooms if may_see_room(who.grants, r.site)]
        return page(
            request,
            "audit.html",
            who,
            entries=entries,
            total=total,
            older=older,
            rooms=visible,
            verified=None,
        )

    def audit_verify(request: Request) -> Response:
        who = viewer(request)
        if who is None:
            return to_login(request)
        if not may_read_audit(who.grants):
            return page(request, "error.html", who, 403, message="The audit is for monitors.")
        node = request.query_params.get("room", "")
        with db() as s:
            room = s.get(Room, node)
            if room is None or not may_see_room(who.grants, room.site):
                return page(request, "error.html", who, 404, message="No such room to verify.")
            copy = room_copy(s, node)
        assert copy is not None
        report = check_room_copy(
            copy.registration, copy.entries, copy.rows, copy.blocks, copy.withheld
        )
        return page(
            request,
            "verify.html",
            who,
            room=node,
            ok=report.exit_code == 0,
            lines=report.lines(),
            checked_at=settings.wall(),
        )

    # ---- account and users ------------------------------------------------------------------
    def account_page(request: Request) -> Response:
        who = viewer(request)
        if who is None:
            return to_login(request)
        return page(
            request,
            "account.html",
            who,
            sessions=sessions.count(who.name),
            done=request.query_params.get("done"),
            errors={},
        )

    async def account_password(request: Request) -> Response:
        checked = await checked_post(request)
        if isinstance(checked, Response):
            return checked
        who, form = checked
        errors: dict[str, str] = {}
        current, new, again = form.get("current", ""), form.get("new", ""), form.get("again", "")
        problem = password_problem(new)
        if problem is not None:
            errors["new"] = problem
        elif new != again:
            errors["again"] = "the two new passwords differ"
        if not errors:
            ok = await run_in_threadpool(_change_password, settings, who, current, new)
            if ok is None:
                sessions.end_all(who.name)
                token, _s = sessions.start(who.name, settings.mono())
                resp = RedirectResponse("/account?done=password", status_code=303)
                _set_cookie(resp, cookie, token, settings.secure)
                return resp
            errors["current"] = ok
        return page(
            request,
            "account.html",
            who,
            400,
            sessions=sessions.count(who.name),
            done=None,
            errors=errors,
        )

    def users_page(request: Request) -> Response:
        who = viewer(request)
        if who is None:
            return to_login(request)
        if not any(g.role.value == "admin" for g in who.grants):
            return page(request, "error.html", who, 403, message="Users are managed by admins.")
        with db() as s:
            users = [
                {
                    "name": u.name,
                    "grants": [str(g) for g in admin.grants_of(s, u)],
                    "disabled": u.disabled_at is not None,
                }
                for u in s.execute(select(User).order_by(User.name)).scalars()
            ]
        return page(request, "users.html", who, users=users, error=None)

    async def user_disable(request: Request) -> Response:
        checked = await checked_post(request)
        if isinstance(checked, Response):
            return checked
        who, _form = checked
        name = request.path_params["name"]
        error = await run_in_threadpool(_disable, settings, who, name)
        if error is None:
            sessions.end_all(name)
            return RedirectResponse("/users", status_code=303)
        return page(request, "error.html", who, 403, message=error)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        import asyncio

        # decode the rows already received before the first page asks (seconds for a
        # large study); a page arriving meanwhile waits for the index's lock
        warm = asyncio.create_task(run_in_threadpool(refreshed_index))
        task = None if feed is None else asyncio.create_task(feed.run())
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            with contextlib.suppress(Exception):
                await warm

    routes = [
        Route("/", home),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/board", board_page),
        Route("/board/events", board_events),
        Route("/procedures", procedures_page),
        Route("/procedures/{node}/{pid:int}", procedure_page),
        Route("/procedures/{node}/{pid:int}/plot.svg", procedure_plot),
        Route("/followup", followup_page),
        Route("/audit", audit_page),
        Route("/audit/verify", audit_verify),
        Route("/account", account_page, methods=["GET"]),
        Route("/account/password", account_password, methods=["POST"]),
        Route("/users", users_page),
        Route("/users/{name}/disable", user_disable, methods=["POST"]),
        Route("/healthz", healthz),
        *StudyPages(settings, viewer, page, to_login, checked_post).routes(),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(SecurityHeaders, secure=settings.secure)
    app.state.sessions = sessions
    app.state.index = index
    app.state.feed = feed
    return app


# ---- helpers (no state) ---------------------------------------------------------------------
async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def _set_cookie(
    resp: Response, name: str, value: str, secure: bool, *, max_age: int | None = None
) -> None:
    resp.set_cookie(
        name, value, max_age=max_age, path="/", secure=secure, httponly=True, samesite="strict"
    )


def _safe_next_value(value: str | None) -> str:
    """Only a path on this site (never //host or a scheme): no open redirect."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/board"
    return value


def _safe_next(request: Request) -> str:
    return _safe_next_value(request.query_params.get("next"))


def _check_login(engine: Engine, name: str, password: str) -> bool:
    with Session(engine) as s:
        user = s.execute(select(User).where(User.name == name)).scalar_one_or_none()
        if user is None:
            verify_password(_DUMMY_HASH(), password)  # the same time as a wrong password
            return False
        return user.disabled_at is None and verify_password(user.password_hash, password)


_dummy: list[str] = []


def _DUMMY_HASH() -> str:
    if not _dummy:
        _dummy.append(hash_password("not-a-password-of-anyone"))
    return _dummy[0]


def _change_password(settings: WebSettings, who: Viewer, current: str, new: str) -> str | None:
    """None when changed; else why not (beside the current-password field)."""
    try:
        new_hash = hash_password(new)
    except PasswordError as exc:
        return str(exc)
    now = settings.wall()
    try:
        with Session(writer(settings.engine)) as s, s.begin():
            actor = admin.authenticate(s, who.name, current)
            head = admin.set_password(
                s, actor, name=who.name, password_hash=new_hash, now=now, node=settings.node
            )
    except admin.NotPermitted:
        return "the current password is wrong"
    anchor_head(
        settings.node,
        head,
        anchor_file=settings.anchor_file,
        journal_socket=settings.journal_socket,
        at=now,
    )
    return None


def _disable(settings: WebSettings, who: Viewer, name: str) -> str | None:
    now = settings.wall()
    try:
        with Session(writer(settings.engine)) as s, s.begin():
            actor = admin.Actor(who.name, who.grants)
            head = admin.disable_user(s, actor, name=name, now=now, node=settings.node)
    except (admin.NotPermitted, admin.Refused) as exc:
        return str(exc)
    anchor_head(
        settings.node,
        head,
        anchor_file=settings.anchor_file,
        journal_socket=settings.journal_socket,
        at=now,
    )
    return None


def _due_items(settings: WebSettings, grants: tuple[Grant, ...]) -> list[dict[str, Any]]:
    from cryod.research.followup import local_date

    from ..followup import due_list
    from ..followup_store import snapshot, study_data
    from ..summary import final_statuses

    newest: dict[str, Any] = {}
    for p in settings.profiles:
        if p.study.id not in newest or p.version > newest[p.study.id].version:
            newest[p.study.id] = p
    out: list[dict[str, Any]] = []
    now = settings.wall()
    for study, profile in sorted(newest.items()):
        if not any(g.role in READER_ROLES and g.study in (None, study) for g in grants):
            continue
        with Session(settings.engine) as s:
            snap = snapshot(s, study, None)
        data = study_data(profile, snap, now)
        on = local_date(now, profile.zone)
        recorded = {(u, a.time_point) for u, a in data.assessments}
        ended = {subject: d for subject, (d, _status) in final_statuses(data).items()}
        site_of = {p.procedure_uuid: p.site for p in data.procedures}
        for d in due_list(profile, data.procedures, recorded=recorded, ended=ended, on=on):
            w = d.window
            site = site_of[w.procedure_uuid]
            if not may_read_subject(grants, study, site):
                continue
            out.append(
                {
                    "state": d.state.value,
                    "study": study,
                    "site": site,
                    "subject": w.subject,
                    "time_point": w.time_point,
                    "label": w.label,
                    "target": w.target_on,
                    "earliest": w.earliest_on,
                    "latest": w.latest_on,
                    "on": on,
                }
            )
    return out


def _when(value: Any, tz: dt.tzinfo) -> str:
    if isinstance(value, str):
        from .records import parse_time

        parsed = parse_time(value)
        if parsed is None:
            return value
        value = parsed
    if isinstance(value, dt.datetime):
        return value.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")
    return "—"


def _num(value: Any, digits: int = 1) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "—"
    return f"{value:.{digits}f}"


#: what the procedure page lists under "details", in this order (others follow)
_DETAIL_ORDER: Final = (
    "study_id",
    "uuid",
    "patient_ref",
    "console",
    "opened_at",
    "closed_at",
    "indication",
    "indication_other",
    "site",
    "side",
    "imaging",
    "anaesthesia",
    "operator",
    "probe_model",
    "probe_lot",
    "console_model",
    "console_serial",
    "console_firmware",
    "software_version",
    "host_only_limits",
    "notes",
    "closed_by",
)


def _details(values: dict[str, Any]) -> list[tuple[str, str]]:
    keys = [k for k in _DETAIL_ORDER if k in values] + sorted(
        k for k in values if k not in _DETAIL_ORDER and k not in ("id", "adverse_events")
    )
    out = []
    for k in keys:
        v = values[k]
        if k.endswith("_at"):
            text = _when(v, dt.UTC) + " UTC" if v is not None else "—"
        elif v is None:
            text = "—"
        elif isinstance(v, (dict, list)):
            text = json.dumps(v, ensure_ascii=False)
        else:
            text = str(v)
        out.append((k.replace("_", " "), text))
    return out


def _shades(proc: Procedure, cycles: list[dict[str, Any]]) -> list[plotting.Shade]:
    from .records import parse_time

    opened = proc.opened_at
    if opened is None:
        return []
    end_default = proc.closed_at or opened
    out = []
    for c in cycles:
        start = parse_time(c.get("started_at"))
        end = parse_time(c.get("ended_at")) or end_default
        probe = c.get("probe")
        if start is None or not isinstance(probe, int):
            continue
        out.append(
            plotting.Shade(
                probe=probe,
                start_s=(start - opened).total_seconds(),
                end_s=(end - opened).total_seconds(),
                phase="thaw" if c.get("phase") == "thaw" else "freeze",
            )
        )
    return out


def _describe(kind: str, payload: Any) -> dict[str, Any]:
    """Who, what and why of an audit entry, as the audit page shows them."""
    p = payload if isinstance(payload, dict) else {}
    who = p.get("by")
    what_keys = [k for k in sorted(p) if k not in ("by", "reason", "password")]
    what = "; ".join(f"{k}: {_short(p[k])}" for k in what_keys)
    return {"who": who if isinstance(who, str) else "—", "what": what, "why": p.get("reason")}


def _short(v: Any) -> str:
    text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 160 else text[:157] + "…"
