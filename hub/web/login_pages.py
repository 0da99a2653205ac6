"""Login (throttled, never locked), logout and logout everywhere."""

from __future__ import annotations

import math
from typing import Final

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..passwords import hash_password, verify_password
from ..store.models import User
from .pages import PageContext, set_cookie
from .sessions import new_token, same_token

__all__ = ["PRELOGIN_COOKIE", "check_password", "login_routes"]

PRELOGIN_COOKIE: Final = "cryohub_login"


def login_routes(ctx: PageContext) -> list[BaseRoute]:
    settings = ctx.settings

    async def login_form(request: Request) -> Response:
        token = new_token()
        resp = ctx.page(request, "login.html", None, login_csrf=token, next=_safe_next(request))
        set_cookie(resp, PRELOGIN_COOKIE, token, settings.secure, max_age=3600)
        return resp

    async def login(request: Request) -> Response:
        form = await ctx.form_of(request)
        name = form.get("username", "").strip()
        password = form.get("password", "")
        nxt = _safe_next_value(form.get("next"))
        if not ctx.same_origin(request) or not same_token(
            form.get("csrf"), request.cookies.get(PRELOGIN_COOKIE)
        ):
            return PlainTextResponse("refused: the form's CSRF token is missing or wrong", 403)
        address = request.client.host if request.client else "?"
        now = settings.mono()
        wait = settings.throttle.wait_s(name, address, now)

        def again(error: str, status: int) -> Response:
            token = new_token()
            resp = ctx.page(
                request,
                "login.html",
                None,
                status=status,
                login_csrf=token,
                next=nxt,
                error=error,
                username=name,
            )
            set_cookie(resp, PRELOGIN_COOKIE, token, settings.secure, max_age=3600)
            return resp

        if wait > 0:
            return again(
                f"Too many failed logins: wait {math.ceil(wait)} s before trying again.", 429
            )
        ok = await run_in_threadpool(check_password, settings.engine, name, password)
        if not ok:
            settings.throttle.failed(name, address, settings.mono())
            return again("Wrong user name or password (or the account is disabled).", 401)
        settings.throttle.succeeded(name)
        token, _s = ctx.sessions.start(name, settings.mono())
        resp = RedirectResponse(nxt, status_code=303)
        set_cookie(resp, ctx.cookie, token, settings.secure)
        resp.delete_cookie(PRELOGIN_COOKIE, path="/")
        return resp

    async def logout(request: Request) -> Response:
        checked = await ctx.checked_post(request)
        if isinstance(checked, Response):
            return checked
        who, form = checked
        if form.get("everywhere"):
            ctx.sessions.end_all(who.name)
        else:
            ctx.sessions.end(who.token)
        resp = RedirectResponse("/login?bye=1", status_code=303)
        resp.delete_cookie(ctx.cookie, path="/")
        return resp

    return [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]


def _safe_next_value(value: str | None) -> str:
    """Only a path on this site (never //host or a scheme): no open redirect."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/board"
    return value


def _safe_next(request: Request) -> str:
    return _safe_next_value(request.query_params.get("next"))


def check_password(engine: Engine, name: str, password: str) -> bool:
    """The user exists, is enabled and this is their password (as long either way)."""
    with Session(engine) as s:
        user = s.execute(select(User).where(User.name == name)).scalar_one_or_none()
        if user is None:
            verify_password(_dummy_hash(), password)  # the same time as a wrong password
            return False
        return user.disabled_at is None and verify_password(user.password_hash, password)


_dummy: list[str] = []


def _dummy_hash() -> str:
    if not _dummy:
        _dummy.append(hash_password("not-a-password-of-anyone"))
    return _dummy[0]
