"""The viewer's account (password, sessions); the users are ``admin_pages``'."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from .. import admin
from ..passwords import PasswordError, hash_password, password_problem
from .pages import PageContext, Viewer, set_cookie

__all__ = ["account_routes"]


def account_routes(ctx: PageContext) -> list[BaseRoute]:
    settings = ctx.settings
    sessions = ctx.sessions

    def account_page(request: Request) -> Response:
        who = ctx.viewer(request)
        if who is None:
            return ctx.to_login(request)
        return ctx.page(
            request,
            "account.html",
            who,
            sessions=sessions.count(who.name),
            done=request.query_params.get("done"),
            errors={},
        )

    async def account_password(request: Request) -> Response:
        checked = await ctx.checked_post(request)
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
            ok = await run_in_threadpool(_change_password, ctx, who, current, new)
            if ok is None:
                sessions.end_all(who.name)
                token, _s = sessions.start(who.name, settings.mono())
                resp = RedirectResponse("/account?done=password", status_code=303)
                set_cookie(resp, ctx.cookie, token, settings.secure)
                return resp
            errors["current"] = ok
        return ctx.page(
            request,
            "account.html",
            who,
            400,
            sessions=sessions.count(who.name),
            done=None,
            errors=errors,
        )

    return [
        Route("/account", account_page, methods=["GET"]),
        Route("/account/password", account_password, methods=["POST"]),
    ]


def _change_password(ctx: PageContext, who: Viewer, current: str, new: str) -> str | None:
    """None when changed; else why not (beside the current-password field)."""
    try:
        new_hash = hash_password(new)
    except PasswordError as exc:
        return str(exc)
    now = ctx.settings.wall()
    try:
        with ctx.write() as s, s.begin():
            actor = admin.authenticate(s, who.name, current)
            head = admin.set_password(
                s, actor, name=who.name, password_hash=new_hash, now=now, node=ctx.settings.node
            )
    except admin.NotPermitted:
        return "the current password is wrong"
    ctx.anchor(head, now)
    return None
