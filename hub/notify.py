"""systemd's notification protocol (sd_notify) for ``cryohub run``, standard library only.

One datagram on the unix socket ``$NOTIFY_SOCKET`` names (a path, or an
abstract socket ``@name``); a silent no-op when systemd did not start us; a
failed send never stops ingest. ``watchdog_interval_s`` is half of
``$WATCHDOG_USEC`` (None: no watchdog, or ``$WATCHDOG_PID`` is another
process). The service sends ``WATCHDOG=1`` only while ingest is healthy
(``service.Health``), so a stalled collector is killed and restarted.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

__all__ = ["Notifier", "watchdog_interval_s"]

_log = logging.getLogger("cryohub.notify")


def _address(raw: str) -> str | bytes | None:
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()
    if raw.startswith("/"):
        return raw
    return None


def watchdog_interval_s(env: Mapping[str, str] | None = None) -> float | None:
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", "") or 0)
        pid = int(env.get("WATCHDOG_PID", "") or os.getpid())
    except ValueError:
        return None
    if usec <= 0 or pid != os.getpid():
        return None
    return usec / 2 / 1_000_000


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        raw = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
        self.address = _address(raw) if raw else None
        if raw and self.address is None:
            _log.warning("NOTIFY_SOCKET form not supported, notifications off")

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            _log.warning("sd_notify failed: %s", exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", _status(status))

    def status(self, text: str) -> bool:
        return self.send(_status(text))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")


def _status(text: str) -> str:
    return "STATUS=" + " ".join(text.splitlines())
