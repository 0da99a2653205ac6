"""What every route module needs: the settings, who is asking, CSRF, rendering, auditing.

``create_app`` makes one ``PageContext`` and hands it to each route module
(``login_pages``, ``board_pages``, ``procedure_pages``, ``followup_pages``,
``audit_pages``, ``account_pages``, ``admin_pages``, ...), which returns its routes; a new page is a
new module with a ``…_routes(ctx)`` function, added to the list in ``create_app``.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

import jinja2
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from .. import admin
from ..access import Grant
from ..anchors import anchor_head
from ..store import audit
from ..store.db import writer
from ..store.models import User
from .board import Board
from .records import Procedure, RecordIndex
from .scope import may_read_audit, may_read_subject
from .sessions import LoginSession, SessionStore, same_token
from .telemetry import BrokerSettings, TelemetryFeed
from .throttle import LoginThrottle

__all__ = [
    "MAX_FIELD",
    "Forbidden",
    "PageContext",
    "Viewer",
    "WebSettings",
    "num",
    "set_cookie",
    "when",
]

HERE: Final = Path(__file__).parent
#: a form field is cut to this many characters (a longer text field says so: ``MAX_TEXT``)
MAX_FIELD: Final = 1024


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


class Forbidden(Exception):
    pass


class PageContext:
    """The app's shared state and the plumbing of its route handlers."""

    def __init__(self, settings: WebSettings) -> None:
        self.settings = settings
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(HERE / "templates")),
            autoescape=True,  # every text is escaped; nothing is marked safe
        )
        env.globals["tz_name"] = str(settings.tz)
        env.filters["when"] = lambda v: when(v, settings.tz)
        env.filters["num"] = num
        self.templates = Jinja2Templates(env=env)
        self.sessions = SessionStore(idle_s=settings.idle_s)
        self.index = RecordIndex(refresh_s=settings.refresh_s)
        self.cookie = "__Host-cryohub" if settings.secure else "cryohub_session"
        self.feed = (
            None if settings.broker is None else TelemetryFeed(settings.broker, settings.board)
        )

    # ---- the store ------------------------------------------------------------------------
    def db(self) -> Session:
        return Session(self.settings.engine)

    def write(self) -> Session:
        """A session on the writer (changes); commit with ``with ctx.write() as s, s.begin()``."""
        return Session(writer(self.settings.engine))

    def anchor(self, head: Any, at: dt.datetime) -> None:
        """Anchor the audit chain's new head (after every change)."""
        s = self.settings
        anchor_head(s.node, head, anchor_file=s.anchor_file, journal_socket=s.journal_socket, at=at)

    # ---- who is asking --------------------------------------------------------------------
    def viewer(self, request: Request, *, renew: bool = True) -> Viewer | None:
        token = request.cookies.get(self.cookie)
        s = self.sessions.get(token, self.settings.mono(), renew=renew)
        if s is None or token is None:
            return None
        with self.db() as session:
            user = session.execute(select(User).where(User.name == s.user)).scalar_one_or_none()
            if user is None or user.disabled_at is not None:
                self.sessions.end_all(s.user)
                return None
            grants = admin.grants_of(session, user)
        return Viewer(s.user, grants, s, token)

    def to_login(self, request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?{urlencode({'next': target})}", status_code=303)

    # ---- pages and forms ------------------------------------------------------------------
    def page(
        self, request: Request, name: str, who: Viewer | None, status: int = 200, **ctx: Any
    ) -> Response:
        ctx.update(
            me=who,
            csrf=None if who is None else who.session.csrf,
            may_audit=who is not None and may_read_audit(who.grants),
            is_admin=who is not None and any(g.role.value == "admin" for g in who.grants),
        )
        resp: Response = self.templates.TemplateResponse(request, name, ctx, status_code=status)
        return resp

    def error(self, request: Request, who: Viewer | None, status: int, message: str) -> Response:
        return self.page(request, "error.html", who, status, message=message)

    @staticmethod
    def same_origin(request: Request) -> bool:
        origin = request.headers.get("origin")
        if origin is None or origin == "null":
            return origin is None
        host = request.headers.get("host", "")
        return origin.split("://", 1)[-1] == host

    @staticmethod
    async def form_of(request: Request, limit: int = MAX_FIELD) -> dict[str, str]:
        form = await request.form()
        return {k: str(v)[:limit] for k, v in form.items() if isinstance(v, str)}

    @staticmethod
    async def form_lists(request: Request, limit: int = MAX_FIELD) -> dict[str, list[str]]:
        """Every value of each field (checkboxes sharing a name)."""
        form = await request.form()
        out: dict[str, list[str]] = {}
        for k, v in form.multi_items():
            if isinstance(v, str):
                out.setdefault(k, []).append(v[:limit])
        return out

    async def checked_post(
        self, request: Request, limit: int = MAX_FIELD
    ) -> tuple[Viewer, dict[str, str]] | Response:
        """Who posted, and the form, once its CSRF token and origin are right."""
        who = await run_in_threadpool(self.viewer, request)
        if who is None:
            return self.to_login(request)
        form = await self.form_of(request, limit)
        if not self.same_origin(request) or not same_token(form.get("csrf"), who.session.csrf):
            return PlainTextResponse("refused: the form's CSRF token is missing or wrong", 403)
        return who, form

    async def form_request(
        self, request: Request, limit: int = MAX_FIELD
    ) -> tuple[Viewer, dict[str, str]] | Response:
        """A page that is a form: who asks and, on a POST, the checked form (empty on a GET);
        or the response that ends the request (to the login page, or the CSRF refusal)."""
        if request.method == "POST":
            return await self.checked_post(request, limit)
        who = await run_in_threadpool(self.viewer, request)
        if who is None:
            return self.to_login(request)
        return who, {}

    # ---- subjects -------------------------------------------------------------------------
    def log_read(self, who: Viewer, proc: Procedure, what: str) -> None:
        """Every read of a subject's page: an audit entry, anchored."""
        now = self.settings.wall()
        with self.write() as s, s.begin():
            head = audit.append(
                s,
                node=self.settings.node,
                kind="subject_read",
                payload={"by": who.name, "room": proc.node, "procedure_id": proc.id, "page": what},
                at=now,
            )
        self.anchor(head, now)

    @staticmethod
    def readable(who: Viewer) -> Callable[[str | None, str], bool]:
        return lambda study, site: may_read_subject(who.grants, study, site)

    def refreshed_index(self) -> RecordIndex:
        with self.db() as s:
            self.index.refresh(s, self.settings.mono())
        return self.index

    def find_procedure(self, who: Viewer, node: str, pid: int) -> Procedure:
        proc = self.refreshed_index().procedure(node, pid)
        # a procedure outside the viewer's scope is as absent as one that does not exist
        if proc is None or not may_read_subject(who.grants, proc.study, proc.site):
            raise Forbidden
        return proc


# ---- helpers (no state) ---------------------------------------------------------------------
def set_cookie(
    resp: Response, name: str, value: str, secure: bool, *, max_age: int | None = None
) -> None:
    resp.set_cookie(
        name, value, max_age=max_age, path="/", secure=secure, httponly=True, samesite="strict"
    )


def when(value: Any, tz: dt.tzinfo) -> str:
    if isinstance(value, str):
        from .records import parse_time

        parsed = parse_time(value)
        if parsed is None:
            return value
        value = parsed
    if isinstance(value, dt.datetime):
        return value.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")
    return "—"


def num(value: Any, digits: int = 1) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "—"
    return f"{value:.{digits}f}"
