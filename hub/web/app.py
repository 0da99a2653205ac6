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
  users and the study profiles for admins (``admin_pages``). Every read of a
  subject's page is an audit entry (``subject_read``: who, room, procedure,
  page), anchored like every other.

``create_app`` only assembles: the shared plumbing is ``pages.PageContext``,
each group of pages is a route module (``…_routes(ctx)``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Final

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .account_pages import account_routes
from .admin_pages import admin_routes
from .audit_pages import audit_routes
from .board_pages import board_routes
from .followup_pages import followup_routes
from .login_pages import login_routes
from .pages import HERE, PageContext, WebSettings
from .procedure_pages import procedure_routes
from .study_pages import study_routes

__all__ = ["CSP", "WebSettings", "create_app"]

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; object-src 'none'"
)


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


def create_app(settings: WebSettings) -> Starlette:
    ctx = PageContext(settings)
    feed = ctx.feed

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        import asyncio

        # decode the rows already received before the first page asks (seconds for a
        # large study); a page arriving meanwhile waits for the index's lock
        warm = asyncio.create_task(run_in_threadpool(ctx.refreshed_index))
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

    routes: list[BaseRoute] = []
    routes += login_routes(ctx)
    routes += board_routes(ctx)
    routes += procedure_routes(ctx)
    routes += followup_routes(ctx)
    routes += audit_routes(ctx)
    routes += account_routes(ctx)
    routes += admin_routes(ctx)
    routes += study_routes(ctx)
    routes += [
        Route("/healthz", healthz),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(SecurityHeaders, secure=settings.secure)
    app.state.sessions = ctx.sessions
    app.state.index = ctx.index
    app.state.feed = feed
    app.state.pages = ctx
    return app
