"""The admins' pages: the users (list, add, disable) and the configured study profiles.

- ``/users``: every user with their roles; a form to add one (name, role,
  optional study and site, the initial password typed twice). The rules are
  ``cryod.hub.admin``'s, as on the command line (``cryohub user add``): who may
  grant what (``access.may_manage_user``), the name (``access.check_user_name``),
  the password (``passwords.password_problem``); the change is audited by
  ``admin.add_user`` (``user_added``) and anchored here. Each problem is shown
  beside its field, what was typed kept (the passwords never); a success
  redirects to ``/users?done=added``.
- ``/users/{name}/disable``: ``admin.disable_user`` (``user_disabled``).
- ``/admin/studies``: read only, the study profiles of ``[studies] profiles_dir``
  this app loaded (id, version, content hash, title, registry ids), and how a
  study is added (the profile file; nothing here changes one).

Only viewers holding an admin grant see these pages (others get 403); which
users an admin may add or disable is decided by ``admin`` alone.
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from .. import admin
from ..access import Grant, Role, check_user_name
from ..passwords import PasswordError, hash_password, password_problem
from ..store.models import User
from .pages import PageContext, Viewer

__all__ = ["FLASH", "USER_FIELDS", "admin_routes", "new_user"]

#: the users page's message after a change (``?done=``): only these, never the query's text
FLASH: Final = {"added": "User added.", "disabled": "User disabled."}

#: the add-user form's fields, in the order shown (the first one in error has the focus)
USER_FIELDS: Final = ("name", "role", "study", "site", "password", "again")

ROLES: Final = tuple((r.value, r.value) for r in Role)


def new_user(form: dict[str, str], studies: set[str]) -> tuple[str, Grant | None, dict[str, str]]:
    """The add-user form read (pure): the name, the grant, and field -> problem.

    The grant is None when a field of it is wrong; whether the admin may grant it is
    ``admin.add_user``'s to decide."""
    errors: dict[str, str] = {}
    name = form.get("name", "").strip()
    problem = check_user_name(name)
    if problem is not None:
        errors["name"] = problem
    role = form.get("role", "")
    if role not in {r.value for r in Role}:
        errors["role"] = f"choose a role ({', '.join(r.value for r in Role)})"
    study = form.get("study", "").strip() or None
    if study is not None and study not in studies:
        errors["study"] = (
            f"{study[:70]!r} is not a configured study "
            f"({', '.join(sorted(studies)) or 'no study profiles configured'})"
        )
    site = form.get("site", "").strip() or None
    site_problem = None if site is None else admin.id_problem("site", site)  # as rooms' sites
    if site_problem is not None:
        errors["site"] = site_problem
    password, again = form.get("password", ""), form.get("again", "")
    problem = password_problem(password)
    if problem is not None:
        errors["password"] = problem
    elif password != again:
        errors["again"] = "the two passwords differ"
    grant = None if {"role", "study", "site"} & errors.keys() else Grant(Role(role), study, site)
    return name, grant, errors


def admin_routes(ctx: PageContext) -> list[BaseRoute]:
    settings = ctx.settings

    def studies() -> set[str]:
        return {p.study.id for p in settings.profiles}

    def users_of() -> list[dict[str, Any]]:
        with ctx.db() as s:
            return [
                {
                    "name": u.name,
                    "grants": [str(g) for g in admin.grants_of(s, u)],
                    "disabled": u.disabled_at is not None,
                }
                for u in s.execute(select(User).order_by(User.name)).scalars()
            ]

    def users_view(
        request: Request, who: Viewer, form: dict[str, str], errors: dict[str, str], status: int
    ) -> Response:
        kept = {k: v for k, v in form.items() if k not in ("password", "again", "csrf")}
        return ctx.page(
            request,
            "users.html",
            who,
            status,
            users=users_of(),
            form=kept,
            errors=errors,
            first_error=next((f for f in USER_FIELDS if f in errors), None),
            roles=ROLES,
            studies=[(s, s) for s in sorted(studies())],
            done=FLASH.get(request.query_params.get("done", "")),
        )

    async def users_page(request: Request) -> Response:
        asked = await ctx.form_request(request)
        if isinstance(asked, Response):
            return asked
        who, form = asked
        if not _is_admin(who):
            return ctx.error(request, who, 403, "Users are managed by admins.")
        if request.method == "GET":
            return await run_in_threadpool(users_view, request, who, {}, {}, 200)
        name, grant, errors = new_user(form, studies())
        if not errors and grant is not None:
            problem = await run_in_threadpool(_add, ctx, who, name, grant, form["password"])
            if problem is None:
                return RedirectResponse("/users?done=added", status_code=303)
            errors.update(problem)
        return await run_in_threadpool(users_view, request, who, form, errors, 400)

    async def user_disable(request: Request) -> Response:
        checked = await ctx.checked_post(request)
        if isinstance(checked, Response):
            return checked
        who, _form = checked
        name = request.path_params["name"]
        error = await run_in_threadpool(_disable, ctx, who, name)
        if error is None:
            ctx.sessions.end_all(name)
            return RedirectResponse("/users?done=disabled", status_code=303)
        return ctx.error(request, who, 403, error)

    def studies_page(request: Request) -> Response:
        who = ctx.viewer(request)
        if who is None:
            return ctx.to_login(request)
        if not _is_admin(who):
            return ctx.error(request, who, 403, "The study profiles are shown to admins.")
        profiles = [
            {
                "id": p.study.id,
                "version": p.version,
                "content_hash": p.content_hash,
                "title": p.study.title,
                "registry_ids": [f"{r.system} {r.value}" for r in p.study.registry_ids],
            }
            for p in sorted(settings.profiles, key=lambda p: (p.study.id, p.version))
        ]
        return ctx.page(request, "admin_studies.html", who, profiles=profiles)

    return [
        Route("/users", users_page, methods=["GET", "POST"]),
        Route("/users/{name}/disable", user_disable, methods=["POST"]),
        Route("/admin/studies", studies_page, methods=["GET"]),
    ]


def _is_admin(who: Viewer) -> bool:
    """May see the admin pages (what each admin may change is ``admin``'s to decide)."""
    return any(g.role is Role.ADMIN for g in who.grants)


def _add(
    ctx: PageContext, who: Viewer, name: str, grant: Grant, password: str
) -> dict[str, str] | None:
    """None when added; else field -> why not."""
    try:
        password_hash = hash_password(password)
    except PasswordError as exc:
        return {"password": str(exc)}
    now = ctx.settings.wall()
    try:
        with ctx.write() as s, s.begin():
            head = admin.add_user(
                s,
                admin.Actor(who.name, who.grants),
                name=name,
                password_hash=password_hash,
                grants=(grant,),
                now=now,
                node=ctx.settings.node,
            )
    except admin.NotPermitted as exc:
        return {"role": str(exc)}
    except admin.Refused as exc:
        return {"name": str(exc)}
    ctx.anchor(head, now)
    return None


def _disable(ctx: PageContext, who: Viewer, name: str) -> str | None:
    now = ctx.settings.wall()
    try:
        with ctx.write() as s, s.begin():
            actor = admin.Actor(who.name, who.grants)
            head = admin.disable_user(s, actor, name=name, now=now, node=ctx.settings.node)
    except (admin.NotPermitted, admin.Refused) as exc:
        return str(exc)
    ctx.anchor(head, now)
    return None
