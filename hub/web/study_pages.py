"""The study pages: per study the reader covers, the summary tables (as ``cryohub
summary`` gives them), its pain plot (a PNG through ``summary_plot``) and a
download of each export format.

- ``GET /studies``: the studies the viewer reads, each with the scopes they may
  choose (the whole study, or each of their sites).
- ``GET /studies/{study}?site=&on=``: the summary as of ``on`` (default: today
  in the study's zone; a bad date is shown beside its field, kept as typed).
- ``GET /studies/{study}/pain.png?site=&on=``: the plot of that summary.
- ``POST /studies/{study}/export`` (CSRF; ``format``, ``site``): the export,
  built and checked as ``cryohub export`` does (``export_files``: a format
  that fails its checks sends nothing, 500 with the problems), recorded with
  ``record_export`` (an ``exported`` audit entry: who, study, site, format,
  the subjects as digests, each file's SHA-256), anchored, then sent.

A site-scoped reader gets only their sites' subjects: the summary and exports
are built from the collector's snapshot of that site. An admin without a
reader grant for the study sees no study (404, as for a study not configured).
"""

from __future__ import annotations

import datetime as dt
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from .. import admin
from ..exports import ExportInvalid, export_files
from ..followup import newest_profiles
from ..followup_store import record_export, snapshot, study_data
from ..summary import Summary, summarise
from .pages import PageContext, Viewer, WebSettings
from .study_view import (
    FORMAT_NAMES,
    FORMATS,
    Download,
    covers,
    digests,
    download,
    parse_on,
    scope_choices,
    scope_label,
    summary_tables,
)

__all__ = ["study_routes"]

PLOT_CACHE: Final = 16
SUMMARY_CACHE: Final = 16
#: the Study page's tables and plot are at most this late (exports are always built afresh)
SUMMARY_TTL_S: Final = 30.0


class NotFound(Exception):
    pass


def study_routes(ctx: PageContext) -> list[BaseRoute]:
    pages = StudyPages(ctx)
    return [
        Route("/studies", pages.studies_page),
        Route("/studies/{study}", pages.study_page),
        Route("/studies/{study}/pain.png", pages.pain_plot),
        Route("/studies/{study}/export", pages.export, methods=["POST"]),
    ]


@dataclass
class StudyPages:
    ctx: PageContext
    plots: OrderedDict[tuple[Any, ...], bytes] = field(default_factory=OrderedDict)
    summaries: OrderedDict[tuple[Any, ...], tuple[float, Summary]] = field(
        default_factory=OrderedDict
    )
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def settings(self) -> WebSettings:
        return self.ctx.settings

    # ---- the pieces ---------------------------------------------------------------------
    def profiles(self) -> dict[str, Any]:
        """Study id -> its newest configured profile."""
        return newest_profiles(self.settings.profiles)

    def scoped(self, who: Viewer, study: str, site_text: str | None) -> tuple[Any, str | None]:
        """The study's profile and the scope asked for (default: the first the viewer may
        choose); NotFound for a study not configured or not covered at that scope."""
        profile = self.profiles().get(study)
        choices = scope_choices(who.grants, study)
        if profile is None or not choices:
            raise NotFound
        site = site_text or None
        if site_text is None:
            site = choices[0]
        if not covers(who.grants, study, site):
            raise NotFound
        return profile, site

    def summary(self, profile: Any, site: str | None, on: dt.date) -> Summary:
        """The summary, reused for SUMMARY_TTL_S (the page and its plot, reloads): building
        it decodes every procedure of the study (seconds for 10,000)."""
        key = (profile.study.id, profile.version, site, on)
        now = self.settings.mono()
        with self.lock:
            hit = self.summaries.get(key)
        if hit is not None and now - hit[0] < SUMMARY_TTL_S:
            return hit[1]
        with self.ctx.db() as s:
            snap = snapshot(s, profile.study.id, site)
        data = study_data(profile, snap, self.settings.wall())
        made = summarise(data, on, withdrawn=snap.withdrawn)
        with self.lock:
            self.summaries[key] = (now, made)
            self.summaries.move_to_end(key)
            while len(self.summaries) > SUMMARY_CACHE:
                self.summaries.popitem(last=False)
        return made

    def today(self, profile: Any) -> dt.date:
        from cryod.research.followup import local_date

        return local_date(self.settings.wall(), profile.zone)

    # ---- pages --------------------------------------------------------------------------
    def studies_page(self, request: Request) -> Response:
        who = self.ctx.viewer(request)
        if who is None:
            return self.ctx.to_login(request)
        studies = [
            {
                "id": study,
                "title": getattr(profile.study, "title", None),
                "scopes": [
                    {"site": site, "label": scope_label(site)}
                    for site in scope_choices(who.grants, study)
                ],
            }
            for study, profile in self.profiles().items()
            if scope_choices(who.grants, study)
        ]
        return self.ctx.page(request, "studies.html", who, studies=studies)

    def study_page(self, request: Request) -> Response:
        who = self.ctx.viewer(request)
        if who is None:
            return self.ctx.to_login(request)
        study = request.path_params["study"]
        q = request.query_params
        try:
            profile, site = self.scoped(who, study, q.get("site"))
        except NotFound:
            return self.ctx.page(
                request, "error.html", who, 404, message="No such study to show you."
            )
        on, on_error = parse_on(q.get("on"), self.today(profile))
        summary = self.summary(profile, site, on)
        tables = summary_tables(summary)
        query = {"on": on.isoformat()} | ({"site": site} if site is not None else {})
        return self.ctx.page(
            request,
            "study.html",
            who,
            study=study,
            site=site,
            scope=scope_label(site),
            scopes=[{"site": s, "label": scope_label(s)} for s in scope_choices(who.grants, study)],
            on_text=q.get("on", on.isoformat()),
            errors={"on": on_error} if on_error else {},
            tables=tables,
            plot_query=query,
            formats=[(f, FORMAT_NAMES[f]) for f in FORMATS],
            status=400 if on_error else 200,
        )

    def pain_plot(self, request: Request) -> Response:
        who = self.ctx.viewer(request)
        if who is None:
            return PlainTextResponse("log in first", 401)
        study = request.path_params["study"]
        q = request.query_params
        try:
            profile, site = self.scoped(who, study, q.get("site"))
        except NotFound:
            return PlainTextResponse("no such study", 404)
        on, on_error = parse_on(q.get("on"), self.today(profile))
        if on_error:
            return PlainTextResponse(f"on: {on_error}", 400)
        summary = self.summary(profile, site, on)
        key = (study, site, summary.text())
        with self.lock:
            png = self.plots.get(key)
        if png is None:
            try:
                png = _render_png(summary)
            except ModuleNotFoundError as exc:
                if not (exc.name or "").startswith("matplotlib"):
                    raise
                return PlainTextResponse(
                    "the plot needs matplotlib: pip install 'cryod[report]'", 503
                )
        with self.lock:
            self.plots[key] = png
            self.plots.move_to_end(key)
            while len(self.plots) > PLOT_CACHE:
                self.plots.popitem(last=False)
        return Response(png, media_type="image/png")

    async def export(self, request: Request) -> Response:
        checked = await self.ctx.checked_post(request)
        if isinstance(checked, Response):
            return checked
        who, form = checked
        study = request.path_params["study"]
        fmt = form.get("format", "")
        try:
            profile, site = self.scoped(who, study, form.get("site") or "")
        except NotFound:
            return self.ctx.page(
                request, "error.html", who, 404, message="No such study to show you."
            )
        if fmt not in FORMATS:
            return self.ctx.page(
                request,
                "error.html",
                who,
                400,
                message=f"format: {fmt[:40]!r} is not one of {', '.join(FORMATS)}",
            )
        try:
            got = await run_in_threadpool(self._export, who, profile, site, fmt)
        except ExportInvalid as exc:
            return self.ctx.page(
                request,
                "error.html",
                who,
                500,
                message=f"The {fmt} export failed its checks; nothing was sent or recorded: "
                + "; ".join(str(p) for p in exc.problems[:20]),
            )
        return Response(
            got.body,
            media_type=got.media_type,
            headers={"content-disposition": f'attachment; filename="{got.filename}"'},
        )

    def _export(self, who: Viewer, profile: Any, site: str | None, fmt: str) -> Download:
        """Build and check the export, record it (who, what, which subjects), anchor it."""
        settings = self.settings
        now = settings.wall()
        study = profile.study.id
        with self.ctx.write() as s, s.begin():
            snap = snapshot(s, study, site)
            data = study_data(profile, snap, now)
            files = export_files(data, fmt)  # ExportInvalid: nothing recorded
            got = download(study, site, fmt, files, now)
            head = record_export(
                s,
                admin.Actor(who.name, who.grants),
                study=study,
                site=site,
                fmt=fmt,
                path=f"web download {got.filename}",
                subjects=[p.subject for p in data.procedures],
                files=digests(files),
                now=now,
                node=settings.node,
            )
        self.ctx.anchor(head, now)
        return got


#: pyplot keeps global state: one plot at a time (pages run in a thread pool)
_PLOTTING: Final = threading.Lock()


def _render_png(summary: Summary) -> bytes:
    from ..summary_plot import write_plot

    with _PLOTTING, tempfile.TemporaryDirectory(prefix="cryohub-plot-") as tmp:
        path = Path(tmp) / "pain.png"
        write_plot(summary, path)
        return path.read_bytes()
