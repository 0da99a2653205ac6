"""Follow-up: what is due and overdue in the viewer's studies and sites."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..access import Grant
from .pages import PageContext, WebSettings
from .scope import READER_ROLES, may_read_subject

__all__ = ["followup_routes"]


def followup_routes(ctx: PageContext) -> list[BaseRoute]:
    settings = ctx.settings

    def followup_page(request: Request) -> Response:
        """What is due and overdue (cryod.hub.followup), in the viewer's studies and sites."""
        who = ctx.viewer(request)
        if who is None:
            return ctx.to_login(request)
        items = _due_items(settings, who.grants)
        return ctx.page(request, "followup.html", who, items=items)

    return [Route("/followup", followup_page)]


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
