"""Follow-up: the due list, and the forms of the study team (docs/web.md, "Follow-up forms").

- ``/followup``: what is due and overdue in the viewer's studies and sites, each
  with a link to its form for those who may record.
- ``/procedures/{node}/{pid}/followup/{time point}``: a coordinator (or an
  investigator) covering the study and site records, or corrects with a reason,
  one time point.
- ``/procedures/{node}/{pid}/events/new`` and ``…/events/{id}``: an adverse
  event or further intervention found after close, added and changed (a reason
  once signed).
- ``…/events/{id}/sign``: an investigator covering the study and site signs the
  event's current version, the meaning shown, their password re-entered
  (wrong passwords throttled as logins are).

The forms validate on the server through the store's own calls
(``followup_store``: the same pure checks as ``cryohub followup``); each
problem is shown beside its field (``followup_form``: the fields, their
choices and the conversions, pure), what was typed is kept; a success redirects
to the procedure page. Every change is audited by the store and anchored here;
every form shown is a subject read (``subject_read``, as the procedure page).
Monitors (and anyone not covering the study and site) get 403 on every form.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from cryod.research.followup import FollowedProcedure, due_state, local_date, window_for
from cryod.research.problems import ResearchDataError

from .. import admin
from ..access import Grant
from ..followup import may_record, may_sign, newest_profiles, signature_meaning
from .followup_form import (
    ASSESSMENT_FIELDS,
    CHOICES,
    EVENT_FIELDS,
    assessment_values,
    event_data,
    event_values,
    first_error,
    form_errors,
    placed,
)
from .pages import Forbidden, PageContext, Viewer
from .records import Procedure
from .scope import READER_ROLES, may_read_subject

__all__ = ["FLASH", "MAX_TEXT", "followup_context", "followup_routes"]

#: a form's text fields are kept up to this many characters (the store refuses what is
#: longer than a field allows, and the form shows it back)
MAX_TEXT: Final = 10_000

#: the procedure page's message after a form (``?done=``): only these, never the query's text
FLASH: Final = {
    "assessment": "Follow-up time point recorded.",
    "assessment_late": "Follow-up time point recorded, outside its window: a protocol deviation.",
    "event": "Adverse event recorded; an investigator signs it.",
    "changed": "Adverse event changed.",
    "signed": "Adverse event signed.",
}


class _Refusal(Exception):
    """Problems to show: field -> message ("" for the form as a whole)."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def followup_routes(ctx: PageContext) -> list[BaseRoute]:
    settings = ctx.settings

    # ---- lookups --------------------------------------------------------------------------
    def newest_profile(study: str | None) -> Any:
        return None if study is None else newest_profiles(settings.profiles).get(study)

    def target(
        request: Request, who: Viewer, allowed: Callable[[tuple[Grant, ...], str, str], bool]
    ) -> tuple[Procedure, Any] | Response:
        """The procedure of the path, its study's profile, once ``allowed`` (else 403/404)."""
        node, pid = request.path_params["node"], request.path_params["pid"]
        try:
            proc = ctx.find_procedure(who, node, pid)
        except Forbidden:
            return ctx.error(request, who, 404, "No such procedure to show you.")
        profile = newest_profile(proc.study)
        if profile is None or not isinstance(proc.values.get("uuid"), str) or not proc.opened_at:
            return ctx.error(request, who, 404, "This procedure is in no configured study.")
        assert proc.study is not None
        if not allowed(who.grants, proc.study, proc.site):
            return ctx.error(
                request, who, 403, "Your roles do not allow this form for this study and site."
            )
        return proc, profile

    def back(proc: Procedure, done: str) -> Response:
        return RedirectResponse(f"/procedures/{proc.node}/{proc.id}?done={done}", status_code=303)

    def change(
        fn: Callable[[Any, admin.Actor, dt.datetime], Any],
        who: Viewer,
        fields: Iterable[str],
        renames: dict[str, str] | None = None,
    ) -> Any:
        """``fn(session, actor, now)`` in one transaction, its head anchored; the result."""
        now = settings.wall()
        try:
            with ctx.write() as s, s.begin():
                head, result = fn(s, admin.Actor(who.name, who.grants), now)
        except (ResearchDataError, admin.Refused, admin.NotPermitted) as exc:
            raise _Refusal(form_errors(exc, fields, renames)) from None
        ctx.anchor(head, now)
        return result

    # ---- due list -------------------------------------------------------------------------
    def followup_page(request: Request) -> Response:
        """What is due and overdue (cryod.hub.followup), in the viewer's studies and sites."""
        who = ctx.viewer(request)
        if who is None:
            return ctx.to_login(request)
        items = _due_items(ctx, who.grants)
        by_uuid = {
            p.values.get("uuid"): p for p in ctx.refreshed_index().procedures(ctx.readable(who))
        }
        for i in items:
            proc = by_uuid.get(i["procedure"])
            i["page"] = None if proc is None else f"/procedures/{proc.node}/{proc.id}"
            i["form"] = (
                f"{i['page']}/followup/{i['time_point']}"
                if proc is not None and may_record(who.grants, i["study"], i["site"])
                else None
            )
        return ctx.page(request, "followup.html", who, items=items)

    # ---- assessment -----------------------------------------------------------------------
    async def assessment(request: Request) -> Response:
        post = request.method == "POST"
        asked = await ctx.form_request(request, MAX_TEXT)
        if isinstance(asked, Response):
            return asked
        who, form = asked
        got = await run_in_threadpool(target, request, who, may_record)
        if isinstance(got, Response):
            return got
        proc, profile = got
        tp_id = request.path_params["tp"]
        tp = next((t for t in profile.follow_up_points if t.id == tp_id), None)
        if tp is None:
            return ctx.error(request, who, 404, "No such time point in this study.")
        subject, puuid = str(proc.values.get("patient_ref")), uuid.UUID(proc.values["uuid"])
        assert proc.opened_at is not None
        window = window_for(FollowedProcedure(puuid, subject, proc.opened_at), tp, profile.zone)
        existing = await run_in_threadpool(_recorded, ctx, puuid, tp_id)
        errors: dict[str, str] = {}
        if post:
            data = {
                "time_point": tp_id,
                **{k: form.get(k, "").strip() for k in ASSESSMENT_FIELDS if k != "correction"},
            }
            data = {k: v for k, v in data.items() if v != ""}
            correction = form.get("correction", "").strip() or None

            def apply(s: Any, actor: admin.Actor, now: dt.datetime) -> Any:
                from ..followup_store import record_assessment

                head, _row, in_window = record_assessment(
                    s,
                    actor,
                    profile,
                    subject=subject,
                    procedure=puuid,
                    data=data,
                    reason=correction,
                    now=now,
                    node=settings.node,
                )
                return head, in_window

            try:
                in_window = await run_in_threadpool(
                    change, apply, who, ASSESSMENT_FIELDS, {"reason": "correction"}
                )
            except _Refusal as r:
                shown = [
                    k
                    for k in ASSESSMENT_FIELDS
                    if (k != "correction" or existing is not None)
                    and (k != "function_score" or profile.instruments.function is not None)
                ]
                errors = placed(r.errors, shown)
            else:
                return back(proc, "assessment" if in_window else "assessment_late")
        else:
            form = assessment_values(existing)
        await run_in_threadpool(ctx.log_read, who, proc, "followup_form")
        return ctx.page(
            request,
            "followup_form.html",
            who,
            400 if errors else 200,
            proc=proc,
            tp=tp,
            window=window,
            existing=existing,
            instruments=profile.instruments,
            form=form,
            errors=errors,
            first_error=first_error(errors, ASSESSMENT_FIELDS),
            choices=CHOICES,
        )

    # ---- adverse events -------------------------------------------------------------------
    async def event_form(request: Request) -> Response:
        post = request.method == "POST"
        if post:
            checked = await ctx.checked_post(request, MAX_TEXT)
            if isinstance(checked, Response):
                return checked
            who, form = checked
            lists = await ctx.form_lists(request, MAX_TEXT)
        else:
            found = await run_in_threadpool(ctx.viewer, request)
            if found is None:
                return ctx.to_login(request)
            who, form, lists = found, {}, {}
        got = await run_in_threadpool(target, request, who, may_record)
        if isinstance(got, Response):
            return got
        proc, profile = got
        event_id: int | None = request.path_params.get("eid")
        event = None
        if event_id is not None:
            event = await run_in_threadpool(_event_of, ctx, event_id, proc)
            if event is None:
                return ctx.error(request, who, 404, "No such adverse event of this procedure.")
        errors: dict[str, str] = {}
        criteria: list[str]
        if post:
            criteria = [c for c in lists.get("seriousness_criteria", []) if c]
            data = event_data(form, criteria)
            reason = form.get("reason", "").strip() or None
            subject, puuid = str(proc.values.get("patient_ref")), uuid.UUID(proc.values["uuid"])

            def apply(s: Any, actor: admin.Actor, now: dt.datetime) -> Any:
                from ..followup_store import change_event, record_event

                if event_id is None:
                    return record_event(
                        s,
                        actor,
                        profile,
                        subject=subject,
                        procedure=puuid,
                        data={k: v for k, v in data.items() if v is not None},
                        now=now,
                        node=settings.node,
                    )
                return change_event(
                    s,
                    actor,
                    profile,
                    event_id=event_id,
                    changes=data,
                    reason=reason,
                    now=now,
                    node=settings.node,
                )

            try:
                await run_in_threadpool(change, apply, who, (*EVENT_FIELDS, "reason"))
            except _Refusal as r:
                shown = [*EVENT_FIELDS, *(["reason"] if event is not None else [])]
                errors = placed(r.errors, shown)
            else:
                return back(proc, "event" if event_id is None else "changed")
        elif event is not None:
            form = event_values(event.content)
            criteria = [str(c) for c in event.content.get("seriousness_criteria") or []]
        else:
            criteria = []
        await run_in_threadpool(ctx.log_read, who, proc, "event_form")
        return ctx.page(
            request,
            "event_form.html",
            who,
            400 if errors else 200,
            proc=proc,
            event=event,
            form=form,
            criteria=criteria,
            errors=errors,
            first_error=first_error(errors, (*EVENT_FIELDS, "reason")),
            choices=CHOICES,
        )

    async def event_sign(request: Request) -> Response:
        post = request.method == "POST"
        asked = await ctx.form_request(request)
        if isinstance(asked, Response):
            return asked
        who, form = asked
        got = await run_in_threadpool(target, request, who, may_sign)
        if isinstance(got, Response):
            return got
        proc, _profile = got
        event_id: int = request.path_params["eid"]
        event = await run_in_threadpool(_event_of, ctx, event_id, proc)
        if event is None:
            return ctx.error(request, who, 404, "No such adverse event of this procedure.")
        errors: dict[str, str] = {}
        status = 200
        if post:
            address = request.client.host if request.client else "?"
            wait = settings.throttle.wait_s(who.name, address, settings.mono())
            version = form.get("version", "")
            if wait > 0:
                errors["password"] = (
                    f"too many wrong passwords: wait {math.ceil(wait)} s before trying again"
                )
                status = 429
            elif version != str(event.version):
                errors[""] = (
                    "the event changed while you were reading it; read this version, then sign"
                )
                status = 409
            else:
                password = form.get("password", "")

                def apply(s: Any, _actor: admin.Actor, now: dt.datetime) -> Any:
                    from ..followup_store import sign_event

                    try:
                        signer = admin.authenticate(s, who.name, password)
                    except admin.NotPermitted:
                        raise _Refusal({"password": "the password is wrong"}) from None
                    signed = sign_event(s, signer, event_id=event_id, now=now, node=settings.node)
                    return signed.head, signed

                try:
                    await run_in_threadpool(change, apply, who, ())
                except _Refusal as r:
                    errors = r.errors
                    status = 400
                    if "password" in errors:
                        settings.throttle.failed(who.name, address, settings.mono())
                        status = 401
                else:
                    settings.throttle.succeeded(who.name)
                    return back(proc, "signed")
        await run_in_threadpool(ctx.log_read, who, proc, "event_sign")
        return ctx.page(
            request,
            "event_sign.html",
            who,
            status,
            proc=proc,
            event=event,
            fields=event_values(event.content),
            meaning=signature_meaning(who.name, event.id, event.version),
            errors=errors,
        )

    base = "/procedures/{node}/{pid:int}"
    both = ["GET", "POST"]
    return [
        Route("/followup", followup_page),
        Route(base + "/followup/{tp}", assessment, methods=both),
        Route(base + "/events/new", event_form, methods=both),
        Route(base + "/events/{eid:int}", event_form, methods=both),
        Route(base + "/events/{eid:int}/sign", event_sign, methods=both),
    ]


# ---- the procedure page's follow-up ---------------------------------------------------------
def followup_context(ctx: PageContext, who: Viewer, proc: Procedure) -> dict[str, Any]:
    """The follow-up timeline and the events after close of one procedure (if in a study)."""
    from ..followup_store import procedure_followup

    settings = ctx.settings
    profile = None if proc.study is None else newest_profiles(settings.profiles).get(proc.study)
    puuid = proc.values.get("uuid")
    if profile is None or not isinstance(puuid, str) or proc.opened_at is None:
        return {"timeline": None, "followup_events": None}
    assert proc.study is not None
    with ctx.db() as s:
        recorded = procedure_followup(s, uuid.UUID(puuid))
    today = local_date(settings.wall(), profile.zone)
    followed = FollowedProcedure(
        uuid.UUID(puuid), str(proc.values.get("patient_ref")), proc.opened_at
    )
    timeline = []
    for tp in profile.follow_up_points:
        w = window_for(followed, tp, profile.zone)
        a = recorded.assessments.get(tp.id)
        state = str(a.get("status", "recorded")) if a is not None else due_state(w, today).value
        timeline.append({"tp": tp, "window": w, "state": state, "values": a})
    return {
        "timeline": timeline,
        "followup_events": recorded.events,
        "may_record": may_record(who.grants, proc.study, proc.site),
        "may_sign": may_sign(who.grants, proc.study, proc.site),
        "instruments": profile.instruments,
    }


# ---- helpers ---------------------------------------------------------------------------------
def _recorded(ctx: PageContext, puuid: uuid.UUID, tp: str) -> dict[str, Any] | None:
    from ..followup_store import procedure_followup

    with ctx.db() as s:
        return procedure_followup(s, puuid).assessments.get(tp)


def _event_of(ctx: PageContext, event_id: int, proc: Procedure) -> Any:
    """The event, if it is one of this procedure's (else None)."""
    from ..followup_store import event_view

    with ctx.db() as s:
        try:
            e = event_view(s, event_id)
        except admin.Refused:
            return None
    return e if e.procedure_uuid == proc.values.get("uuid") else None


def _due_items(ctx: PageContext, grants: tuple[Grant, ...]) -> list[dict[str, Any]]:
    from ..followup import due_list
    from ..followup_store import snapshot, study_data
    from ..summary import final_statuses

    settings = ctx.settings
    out: list[dict[str, Any]] = []
    now = settings.wall()
    for study, profile in newest_profiles(settings.profiles).items():
        if not any(g.role in READER_ROLES and g.study in (None, study) for g in grants):
            continue
        with ctx.db() as s:
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
                    "procedure": str(w.procedure_uuid),
                    "time_point": w.time_point,
                    "label": w.label,
                    "target": w.target_on,
                    "earliest": w.earliest_on,
                    "latest": w.latest_on,
                    "on": on,
                }
            )
    return out
