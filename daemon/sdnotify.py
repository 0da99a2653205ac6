"""systemd notification protocol (sd_notify) in standard-library code.

Why not a dependency: the protocol is one datagram on a Unix socket, and a
library would be one more thing to pin. What matters is doing it right:
`NOTIFY_SOCKET` may name a path or an abstract socket (`@name`), notification
is a silent no-op when not run by systemd, a failed send never takes the
daemon down, and `WATCHDOG=1` is sent only while the caller's health check
passes, so systemd restarts a daemon whose poll loop or writer has stalled.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, MutableMapping

_log = logging.getLogger(__name__)


def _socket_address(raw: str) -> str | bytes | None:
    """The address to send to, or None if the form is one we cannot use."""
    if raw.startswith("@"):
        # Abstract namespace: a leading NUL byte instead of '@'.
        return b"\0" + raw[1:].encode()
    if raw.startswith("/"):
        return raw
    return None  # e.g. "vsock:..." (VMs): not supported here


def watchdog_interval_s(
    env: Mapping[str, str] | None = None, pid: int | None = None
) -> float | None:
    """Ping interval (half of WATCHDOG_USEC), or None when the watchdog is off.

    WATCHDOG_PID, when set, must be this process: a child that inherited the
    environment must not ping on the service's behalf.
    """
    env = os.environ if env is None else env
    raw_usec = env.get("WATCHDOG_USEC", "")
    if not raw_usec:
        return None
    try:
        usec = int(raw_usec)
    except ValueError:
        return None
    if usec <= 0:
        return None
    raw_pid = env.get("WATCHDOG_PID", "")
    if raw_pid:
        try:
            if int(raw_pid) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    return usec / 2 / 1_000_000


class Notifier:
    """Sends state changes to systemd; does nothing when NOTIFY_SOCKET is unset."""

    def __init__(
        self,
        env: MutableMapping[str, str] | None = None,
        *,
        unset_environment: bool = False,
    ) -> None:
        env_map: MutableMapping[str, str] = os.environ if env is None else env
        raw = env_map.get("NOTIFY_SOCKET", "")
        self.address = _socket_address(raw) if raw else None
        if raw and self.address is None:
            _log.warning("NOTIFY_SOCKET form not supported, notifications off: %r", raw)
        if unset_environment:
            # Children (e.g. a backup helper) must not talk to systemd for us.
            env_map.pop("NOTIFY_SOCKET", None)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send one notification of KEY=VALUE fields; True if it was delivered."""
        if self.address is None:
            return False
        message = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # never block the event loop: a reader that stopped draining its socket
                # must not stop the daemon (a full queue is then an OSError, logged below)
                sock.setblocking(False)
                sock.sendto(message, self.address)
        except OSError as exc:
            # systemd gone or socket unreachable: the daemon keeps running;
            # a missing WATCHDOG=1 is then systemd's cue to act.
            _log.warning("sd_notify failed: %s", exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        fields = ["READY=1"]
        if status is not None:
            fields.append(_status_field(status))
        return self.send(*fields)

    def status(self, text: str) -> bool:
        return self.send(_status_field(text))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        fields = ["STOPPING=1"]
        if status is not None:
            fields.append(_status_field(status))
        return self.send(*fields)

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more start/stop time (e.g. a database backup and migration)."""
        return self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def errno(self, code: int) -> bool:
        return self.send(f"ERRNO={int(code)}")


def _status_field(text: str) -> str:
    # One notification is newline-separated fields: a newline in the text
    # would start a bogus field.
    return "STATUS=" + " ".join(text.splitlines())


class Watchdog:
    """Pings systemd's watchdog at half of WATCHDOG_USEC while `healthy()` is true.

    When the predicate fails no ping is sent, so systemd kills and restarts
    the service after WatchdogSec. If health comes back before then, pings
    resume. The predicate must be cheap and must not block (it runs on the
    event loop); it should check that the poll loop and the storage writer
    made progress recently, not merely that their tasks exist.
    """

    def __init__(
        self,
        notifier: Notifier,
        healthy: Callable[[], bool],
        *,
        interval_s: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._notifier = notifier
        self._healthy = healthy
        self.interval_s = interval_s if interval_s is not None else watchdog_interval_s(env)
        self.pings = 0
        self.missed = 0
        self.last_ping_monotonic: float | None = None

    @property
    def enabled(self) -> bool:
        return self._notifier.enabled and self.interval_s is not None

    def tick(self) -> bool:
        """Check health once and ping if healthy; True if a ping was sent."""
        try:
            ok = bool(self._healthy())
        except Exception:  # noqa: BLE001 - a crashing health check is not health
            _log.exception("watchdog health check raised")
            ok = False
        if not ok:
            if self.missed == 0:
                _log.warning("health check failed: withholding WATCHDOG=1")
            self.missed += 1
            return False
        if self.missed:
            _log.warning("health restored after %d missed watchdog pings", self.missed)
            self.missed = 0
        sent = self._notifier.watchdog()
        if sent:
            self.pings += 1
            self.last_ping_monotonic = time.monotonic()
        return sent

    async def run(self) -> None:
        """Ping until cancelled; returns at once when the watchdog is not enabled."""
        if not self.enabled or self.interval_s is None:
            return
        interval_s = self.interval_s
        while True:
            started = time.monotonic()
            self.tick()
            await asyncio.sleep(max(0.0, interval_s - (time.monotonic() - started)))


class Heartbeats:
    """Progress marks from the loops the watchdog vouches for.

    Each loop (a console's poll loop, the storage writer) calls `beat(name)`
    whenever it completes a unit of work; `healthy()` is true only while every
    registered loop beat within its own allowance. A task that exists but is
    stuck therefore fails the check. Pass `healthy` to `Watchdog`.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._max_age_s: dict[str, float] = {}
        self._last: dict[str, float] = {}

    def register(self, name: str, max_age_s: float) -> None:
        """Watch `name`; registration counts as its first beat (start-up grace)."""
        if max_age_s <= 0:
            raise ValueError(f"heartbeat {name!r}: max_age_s must be > 0, got {max_age_s}")
        self._max_age_s[name] = max_age_s
        self._last[name] = self._clock()

    def unregister(self, name: str) -> None:
        self._max_age_s.pop(name, None)
        self._last.pop(name, None)

    def beat(self, name: str) -> None:
        if name not in self._max_age_s:
            raise KeyError(f"heartbeat {name!r} is not registered")
        self._last[name] = self._clock()

    def stale(self) -> list[str]:
        """Names of loops that have not beaten in time, oldest first."""
        now = self._clock()
        late = [
            (self._last[name], name)
            for name, max_age_s in self._max_age_s.items()
            if now - self._last[name] > max_age_s
        ]
        return [name for _, name in sorted(late)]

    def healthy(self) -> bool:
        return not self.stale()
