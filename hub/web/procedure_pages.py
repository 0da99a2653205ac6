"""Subjects' pages: the procedures list, one procedure, its tip-temperature plot."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import OrderedDict
from typing import Any, Final
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from . import plot as plotting
from .followup_pages import FLASH, followup_context
from .pages import Forbidden, PageContext, when
from .records import Filters, Procedure, parse_time, tip_series

__all__ = ["PAGE_SIZE", "procedure_routes"]

PAGE_SIZE: Final = 50
PLOT_COLUMNS: Final = 840
PLOT_CACHE: Final = 64


def procedure_routes(ctx: PageContext) -> list[BaseRoute]:
    settings = ctx.settings
    index = ctx.index
    plots: OrderedDict[tuple[Any, ...], str] = OrderedDict()

    def procedures_page(request: Request) -> Response:
        who = ctx.viewer(request)
        if who is None:
            return ctx.to_login(request)
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
        allowed = ctx.refreshed_index().procedures(ctx.readable(who))
        chosen = [p for p in allowed if filters.keep(p)]
        try:
            page_no = max(1, int(q.get("page", "1")))
        except ValueError:
            page_no = 1
        size = PAGE_SIZE
        pages = max(1, math.ceil(len(chosen) / size))
        page_no = min(page_no, pages)
        shown = chosen[(page_no - 1) * size : page_no * size]
        keep = {k: v for k, v in q.items() if k != "page" and v}
        return ctx.page(
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
        who = ctx.viewer(request)
        if who is None:
            return ctx.to_login(request)
        node, pid = request.path_params["node"], request.path_params["pid"]
        try:
            proc = ctx.find_procedure(who, node, pid)
        except Forbidden:
            return ctx.error(request, who, 404, "No such procedure to show you.")
        ctx.log_read(who, proc, "procedure")
        cycles = index.children(node, "cycles", pid)
        alarms = index.children(node, "alarms", pid)
        events = proc.values.get("adverse_events")
        done = request.query_params.get("done", "")
        return ctx.page(
            request,
            "procedure.html",
            who,
            proc=proc,
            cycles=cycles,
            alarms=alarms,
            events=events if isinstance(events, list) else None,
            events_recorded=isinstance(events, list),
            details=_details(proc.values),
            flash=FLASH.get(done),
            **followup_context(ctx, who, proc),
        )

    def procedure_plot(request: Request) -> Response:
        who = ctx.viewer(request)
        if who is None:
            return PlainTextResponse("log in first", 401)
        node, pid = request.path_params["node"], request.path_params["pid"]
        try:
            proc = ctx.find_procedure(who, node, pid)
        except Forbidden:
            return PlainTextResponse("no such procedure", 404)
        ctx.log_read(who, proc, "plot")
        with ctx.db() as s:
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

    return [
        Route("/procedures", procedures_page),
        Route("/procedures/{node}/{pid:int}", procedure_page),
        Route("/procedures/{node}/{pid:int}/plot.svg", procedure_plot),
    ]


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
            text = when(v, dt.UTC) + " UTC" if v is not None else "—"
        elif v is None:
            text = "—"
        elif isinstance(v, (dict, list)):
            text = json.dumps(v, ensure_ascii=False)
        else:
            text = str(v)
        out.append((k.replace("_", " "), text))
    return out


def _shades(proc: Procedure, cycles: list[dict[str, Any]]) -> list[plotting.Shade]:
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
