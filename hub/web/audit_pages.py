"""The audit (monitors and admins) and the check of a room's received copy."""

from __future__ import annotations

import json
from typing import Any, Final

from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..store.models import AuditEntry, Room
from ..store.received import room_copy
from ..verify import check_room_copy
from .pages import PageContext
from .scope import may_read_audit, may_see_room

__all__ = ["AUDIT_PAGE", "audit_routes"]

AUDIT_PAGE: Final = 100


def audit_routes(ctx: PageContext) -> list[BaseRoute]:
    settings = ctx.settings

    def audit_page(request: Request) -> Response:
        who = ctx.viewer(request)
        if who is None:
            return ctx.to_login(request)
        if not may_read_audit(who.grants):
            return ctx.error(request, who, 403, "The audit is for monitors.")
        try:
            before = int(request.query_params.get("before", "0")) or None
        except ValueError:
            before = None
        with ctx.db() as s:
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
        return ctx.page(
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
        who = ctx.viewer(request)
        if who is None:
            return ctx.to_login(request)
        if not may_read_audit(who.grants):
            return ctx.error(request, who, 403, "The audit is for monitors.")
        node = request.query_params.get("room", "")
        with ctx.db() as s:
            room = s.get(Room, node)
            if room is None or not may_see_room(who.grants, room.site):
                return ctx.error(request, who, 404, "No such room to verify.")
            copy = room_copy(s, node)
        assert copy is not None
        report = check_room_copy(
            copy.registration, copy.entries, copy.rows, copy.blocks, copy.withheld
        )
        return ctx.page(
            request,
            "verify.html",
            who,
            room=node,
            ok=report.exit_code == 0,
            lines=report.lines(),
            checked_at=settings.wall(),
        )

    return [
        Route("/audit", audit_page),
        Route("/audit/verify", audit_verify),
    ]


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
