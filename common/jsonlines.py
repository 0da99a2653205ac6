"""One JSON request and its JSON answer, a line each, on a local stream socket.

The daemon's control socket (``cryoctl``) and the simulator's (``cryosim fault``,
tests) speak the same framing: a JSON object and a newline each way, one exchange
per connection. This module is that framing, client side, once; what a request
means and how an answer is judged stay with each socket's own module.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Mapping
from typing import Any

__all__ = ["encode_line", "exchange", "exchange_blocking"]


def encode_line(obj: Mapping[str, Any], **dumps: Any) -> bytes:
    """``obj`` as one JSON line (``dumps``: keyword arguments of ``json.dumps``)."""
    return json.dumps(obj, **dumps).encode() + b"\n"


async def exchange(
    path: str | os.PathLike[str], request: Mapping[str, Any], *, limit: int
) -> bytes:
    """Send ``request``, return the answer line (``b""``: closed without one). ``limit``
    bounds the answer; the caller bounds the time (``asyncio.timeout``)."""
    reader, writer = await asyncio.open_unix_connection(str(path), limit=limit)
    try:
        writer.write(encode_line(request))
        await writer.drain()
        return await reader.readline()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


def exchange_blocking(
    path: str | os.PathLike[str], request: Mapping[str, Any], *, timeout_s: float
) -> bytes:
    """``exchange`` for code outside an event loop (a CLI); raises OSError/TimeoutError."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        s.connect(str(path))
        s.sendall(encode_line(request))
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return buf
