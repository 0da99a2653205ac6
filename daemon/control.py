"""The local control API: JSON lines over a Unix socket, never a network listener.

Who may talk to the daemon is decided twice: by the socket file's mode and
group (the operating system refuses others), and by the peer's credentials
(SO_PEERCRED) checked against the same rule, so a socket left with a loose
mode by mistake still refuses strangers.

Wire format, one JSON object per line, at most ``MAX_REQUEST_BYTES``:
request ``{"id": 1, "cmd": "status", "args": {...}}``; response
``{"id": 1, "ok": true, "result": ...}`` or
``{"id": 1, "ok": false, "error": {"code": "...", "message": "..."}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryod.common.jsonlines import encode_line, exchange

__all__ = [
    "MAX_REQUEST_BYTES",
    "ControlError",
    "ControlServer",
    "Handler",
    "call",
]

MAX_REQUEST_BYTES = 64 * 1024

Handler = Callable[[dict[str, Any], "Peer"], Awaitable[Any]]


class ControlError(Exception):
    """A request was refused; ``code`` is stable, ``message`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Peer:
    pid: int
    uid: int
    gid: int

    @property
    def label(self) -> str:
        return f"uid={self.uid} pid={self.pid}"


def _peer(sock: socket.socket) -> Peer:
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", data)
    return Peer(pid, uid, gid)


class ControlServer:
    """Serves one Unix socket; each command name maps to one async handler."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        handlers: Mapping[str, Handler],
        *,
        mode: int = 0o660,
        group: str | None = None,
        on_refused: Callable[[Peer], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self._handlers = dict(handlers)
        self._mode = mode
        self._group = group
        self._gid: int | None = grp.getgrnam(group).gr_gid if group else None
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self.refused = 0
        self._on_refused = on_refused

    def allowed(self, peer: Peer) -> bool:
        """Same rule as the file mode: owner, root, or a member of the socket's group."""
        if peer.uid in (0, os.getuid()):
            return True
        gid = self._gid if self._gid is not None else os.getgid()
        if peer.gid == gid:
            return True
        try:
            import pwd

            name = pwd.getpwuid(peer.uid).pw_name
            return name in grp.getgrgid(gid).gr_mem
        except KeyError:
            return False

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_socket():
            self.path.unlink()
        old = os.umask(0o777 & ~self._mode)
        try:
            self._server = await asyncio.start_unix_server(
                self._on_client, path=str(self.path), limit=MAX_REQUEST_BYTES
            )
        finally:
            os.umask(old)
        os.chmod(self.path, self._mode)
        # chown only when needed: the systemd unit's syscall filter refuses chown,
        # and RuntimeDirectory already gives the socket the service's group.
        if self._gid is not None and self.path.stat().st_gid != self._gid:
            os.chown(self.path, -1, self._gid)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._conns):
                task.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            sock = writer.get_extra_info("socket")
            peer = _peer(sock)
            if not self.allowed(peer):
                self.refused += 1
                if self._on_refused is not None:
                    self._on_refused(peer)
                await _send(writer, _error(None, "unauthorised", f"{peer.label} may not control"))
                return
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    return
                except asyncio.LimitOverrunError:
                    await _send(writer, _error(None, "too_large", "request over 64 KiB"))
                    return
                await _send(writer, await self._dispatch(line, peer))
        except (ConnectionError, OSError):
            return
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _dispatch(self, line: bytes, peer: Peer) -> dict[str, Any]:
        try:
            req = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            return _error(None, "bad_request", "not a JSON object")
        if not isinstance(req, dict):
            return _error(None, "bad_request", "not a JSON object")
        rid = req.get("id")
        cmd = req.get("cmd")
        args = req.get("args", {})
        if not isinstance(cmd, str) or not isinstance(args, dict):
            return _error(rid, "bad_request", "needs 'cmd' (string) and 'args' (object)")
        unknown = set(req) - {"id", "cmd", "args"}
        if unknown:
            return _error(rid, "bad_request", f"unknown fields: {sorted(unknown)}")
        handler = self._handlers.get(cmd)
        if handler is None:
            return _error(rid, "unknown_command", f"{cmd!r}; known: {sorted(self._handlers)}")
        try:
            result = await handler(args, peer)
        except ControlError as exc:
            return _error(rid, exc.code, exc.message)
        except (ValueError, TypeError, KeyError) as exc:
            return _error(rid, "bad_request", str(exc))
        return {"id": rid, "ok": True, "result": result}


def _error(rid: Any, code: str, message: str) -> dict[str, Any]:
    return {"id": rid, "ok": False, "error": {"code": code, "message": message}}


async def _send(writer: asyncio.StreamWriter, obj: dict[str, Any]) -> None:
    writer.write(encode_line(obj, default=str))
    await writer.drain()


async def call(
    path: str | os.PathLike[str],
    cmd: str,
    args: Mapping[str, Any] | None = None,
    *,
    timeout_s: float = 10.0,
) -> Any:
    """One request to a running daemon; raises ControlError on a refusal."""

    async def _go() -> Any:
        request = {"id": 1, "cmd": cmd, "args": dict(args or {})}
        line = await exchange(path, request, limit=16 * 1024 * 1024)
        if not line:
            raise ControlError("no_answer", "the daemon closed the connection")
        resp = json.loads(line)
        if not resp.get("ok"):
            err = resp.get("error", {})
            raise ControlError(err.get("code", "error"), err.get("message", ""))
        return resp.get("result")

    async with asyncio.timeout(timeout_s):  # not wait_for: on 3.11 it can drop a cancel
        return await _go()
