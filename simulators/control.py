"""The simulator's control socket: fault injection and inspection.

A unix stream socket carrying JSON lines, one request and one response per
line, so a test (or ``cryosim fault``) can break the console while a driver
talks to it over the wire. It is a test instrument, not part of any console:
it lives on a local socket only.

Requests::

    {"cmd": "fault", "kind": "tc-open", "probe": 2, "value": null, "for_s": 5}
    {"cmd": "clear", "kind": "tc-open"}        (kind null or absent: clear all)
    {"cmd": "state"}
    {"cmd": "events", "event": "valve"}        (recent events held in memory)

Responses: ``{"ok": true, ...}`` (``state`` adds "state", ``events`` adds
"events") or ``{"ok": false, "error": "reason"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import stat
from pathlib import Path
from typing import Any

from cryod.common.jsonlines import encode_line, exchange, exchange_blocking

from .console import SimConsole

__all__ = ["ControlError", "arequest", "handle_request", "request", "serve_control"]

MAX_LINE = 64 * 1024


class ControlError(Exception):
    """The control socket is unreachable or refused the request."""


def _opt_number(req: dict[str, Any], key: str) -> float | None:
    value = req.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{key} must be a number")
    return float(value)


def handle_request(console: SimConsole, req: Any) -> dict[str, Any]:
    """Apply one decoded request; never raises (errors become responses)."""
    if not isinstance(req, dict):
        return {"ok": False, "error": "request must be a JSON object"}
    cmd = req.get("cmd")
    try:
        if cmd == "fault":
            kind = req.get("kind")
            if not isinstance(kind, str):
                raise ValueError("kind is required")
            probe = req.get("probe")
            if probe is not None and (isinstance(probe, bool) or not isinstance(probe, int)):
                raise ValueError("probe must be an integer")
            console.inject(
                kind, probe=probe, value=_opt_number(req, "value"), for_s=_opt_number(req, "for_s")
            )
            return {"ok": True}
        if cmd == "clear":
            kind = req.get("kind")
            if kind is not None and not isinstance(kind, str):
                raise ValueError("kind must be a string")
            console.clear(kind)
            return {"ok": True}
        if cmd == "state":
            return {"ok": True, "state": console.true_state()}
        if cmd == "events":
            event = req.get("event")
            if event is not None and not isinstance(event, str):
                raise ValueError("event must be a string")
            return {"ok": True, "events": console.events(event)}
    except ValueError as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": False, "error": f"unknown cmd {cmd!r} (fault, clear, state, events)"}


def _prepare(sock_path: Path) -> Path:
    """Remove a stale socket left by a killed run; refuse to replace anything else."""
    if sock_path.exists() or sock_path.is_symlink():
        if not stat.S_ISSOCK(sock_path.lstat().st_mode):
            raise FileExistsError(f"{sock_path} exists and is not a socket")
        sock_path.unlink()
    return sock_path


def _remove(sock_path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        sock_path.unlink()


async def serve_control(
    console: SimConsole, path: str | os.PathLike[str], ready: asyncio.Event | None = None
) -> None:
    """Serve the control socket at ``path`` until cancelled, then remove it."""
    sock_path = _prepare(Path(path))
    writers: set[asyncio.StreamWriter] = set()

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(b'{"ok":false,"error":"line too long"}\n')
                    break
                if not line:
                    break
                try:
                    resp = handle_request(console, json.loads(line))
                except json.JSONDecodeError as exc:
                    resp = {"ok": False, "error": f"not JSON: {exc.msg}"}
                writer.write(encode_line(resp, separators=(",", ":")))
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    server = await asyncio.start_unix_server(session, path=str(sock_path), limit=MAX_LINE)
    try:
        os.chmod(sock_path, 0o600)  # local test instrument: owner only
        if ready is not None:
            ready.set()
        await asyncio.Future()  # until cancelled
    finally:
        server.close()
        for w in list(writers):
            w.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await server.wait_closed()
        _remove(sock_path)


def _decode(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise ControlError("the simulator closed the control socket without answering")
    try:
        resp = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ControlError(f"bad response: {exc.msg}") from exc
    if not isinstance(resp, dict):
        raise ControlError("bad response: not an object")
    if not resp.get("ok"):
        raise ControlError(str(resp.get("error", "refused")))
    return resp


def request(
    path: str | os.PathLike[str], req: dict[str, Any], timeout: float = 5.0
) -> dict[str, Any]:
    """Blocking client (the CLI): send one request, return the response or raise."""
    try:
        buf = exchange_blocking(path, req, timeout_s=timeout)
    except (OSError, TimeoutError) as exc:
        raise ControlError(f"control socket {path}: {exc}") from exc
    return _decode(buf)


async def arequest(
    path: str | os.PathLike[str], req: dict[str, Any], limit_s: float = 5.0
) -> dict[str, Any]:
    """Async client (tests and scenarios inside an event loop)."""
    try:
        async with asyncio.timeout(limit_s):
            raw = await exchange(path, req, limit=16 * MAX_LINE)
    except (OSError, TimeoutError) as exc:
        raise ControlError(f"control socket {path}: {exc}") from exc
    return _decode(raw)
