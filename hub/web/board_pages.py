"""The live board of rooms (per site) and its event stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from .pages import PageContext

__all__ = ["SSE_TICK_S", "board_routes"]

SSE_TICK_S: Final = 0.25


def board_routes(ctx: PageContext) -> list[BaseRoute]:
    settings = ctx.settings
    feed = ctx.feed

    async def home(request: Request) -> Response:
        return RedirectResponse("/board", status_code=303)

    async def board_page(request: Request) -> Response:
        who = await run_in_threadpool(ctx.viewer, request)
        if who is None:
            return ctx.to_login(request)
        rooms = settings.board.view(settings.mono(), sites=who.sites, tz=settings.tz)
        return ctx.page(request, "board.html", who, rooms=rooms, feed=feed)

    async def board_events(request: Request) -> Response:
        who = await run_in_threadpool(ctx.viewer, request, renew=False)
        if who is None:
            return PlainTextResponse("log in first", 401)
        token = who.token

        async def stream() -> AsyncIterator[str]:
            sent = None
            last_sent = 0.0
            yield "retry: 2000\n\n"
            while True:
                if await request.is_disconnected():
                    return
                if ctx.sessions.get(token, settings.mono(), renew=False) is None:
                    yield "event: expired\ndata: {}\n\n"
                    return
                rooms = settings.board.view(settings.mono(), sites=who.sites, tz=settings.tz)
                body = json.dumps(
                    {"rooms": rooms, "feed": None if feed is None else feed.connected},
                    separators=(",", ":"),
                    allow_nan=False,
                )
                now = settings.mono()
                if body != sent or now - last_sent > 10:
                    yield f"data: {body}\n\n"
                    sent, last_sent = body, now
                await asyncio.sleep(SSE_TICK_S)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"x-accel-buffering": "no", "cache-control": "no-store"},
        )

    return [
        Route("/", home),
        Route("/board", board_page),
        Route("/board/events", board_events),
    ]
