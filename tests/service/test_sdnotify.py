"""sd_notify over real Unix datagram sockets, as systemd would receive it."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cryod.daemon.sdnotify import Heartbeats, Notifier, Watchdog, watchdog_interval_s


class Receiver:
    """The systemd end: a bound datagram socket that collects notifications."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name  # the NOTIFY_SOCKET value

    def recv(self, timeout_s: float = 1.0) -> str:
        self.sock.settimeout(timeout_s)
        return self.sock.recv(4096).decode()

    def drain(self) -> list[str]:
        out = []
        self.sock.setblocking(False)
        while True:
            try:
                out.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return out


@pytest.fixture(params=["path", "abstract"])
def receiver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Receiver]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        if request.param == "path":
            path = tmp_path / "notify.sock"
            sock.bind(str(path))
            name = str(path)
        else:
            abstract = f"cryod-test-{uuid.uuid4().hex}"
            sock.bind(b"\0" + abstract.encode())
            name = "@" + abstract
        yield Receiver(sock, name)
    finally:
        sock.close()


def test_ready_status_watchdog_stopping_arrive(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", receiver.name)
    notifier = Notifier()
    assert notifier.enabled
    assert notifier.ready(status="console cryosim-8 connected")
    assert receiver.recv() == "READY=1\nSTATUS=console cryosim-8 connected"
    assert notifier.status("2 consoles\npolling")
    assert receiver.recv() == "STATUS=2 consoles polling"  # no newline smuggled in
    assert notifier.watchdog()
    assert receiver.recv() == "WATCHDOG=1"
    assert notifier.extend_timeout(12.5)
    assert receiver.recv() == "EXTEND_TIMEOUT_USEC=12500000"
    assert notifier.stopping(status="safe state; flushing log")
    assert receiver.recv() == "STOPPING=1\nSTATUS=safe state; flushing log"


def test_noop_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog() is False


def test_unreachable_socket_does_not_raise(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert notifier.enabled
    assert notifier.ready() is False


def test_unsupported_address_form_is_disabled() -> None:
    assert not Notifier({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled


def test_unset_environment_hides_socket_from_children(receiver: Receiver) -> None:
    env = {"NOTIFY_SOCKET": receiver.name}
    notifier = Notifier(env, unset_environment=True)
    assert "NOTIFY_SOCKET" not in env
    assert notifier.ready()
    assert receiver.recv() == "READY=1"


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    assert watchdog_interval_s({"WATCHDOG_USEC": "5000000"}) == 2.5
    assert watchdog_interval_s({}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "junk"}) is None
    pid = os.getpid()
    mine = {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(pid)}
    assert watchdog_interval_s(mine) == 0.5
    # A child that inherited the environment must not ping for the service.
    assert watchdog_interval_s({**mine, "WATCHDOG_PID": str(pid + 1)}) is None


async def _wait_for_pings(receiver: Receiver, n: int, timeout_s: float = 2.0) -> list[str]:
    got: list[str] = []
    deadline = asyncio.get_running_loop().time() + timeout_s
    while len(got) < n:
        assert asyncio.get_running_loop().time() < deadline, f"only {got} received"
        await asyncio.sleep(0.01)
        got += receiver.drain()
    return got


async def test_watchdog_pings_only_while_healthy(receiver: Receiver) -> None:
    interval_s = 0.02
    env = {
        "NOTIFY_SOCKET": receiver.name,
        "WATCHDOG_USEC": str(int(interval_s * 2 * 1_000_000)),
        "WATCHDOG_PID": str(os.getpid()),
    }
    healthy = True
    watchdog = Watchdog(Notifier(env), lambda: healthy, env=env)
    assert watchdog.enabled
    assert watchdog.interval_s == pytest.approx(interval_s)
    task = asyncio.create_task(watchdog.run(), name="watchdog")
    try:
        assert set(await _wait_for_pings(receiver, 3)) == {"WATCHDOG=1"}

        healthy = False
        missed0 = watchdog.missed
        deadline = time.monotonic() + 30
        while watchdog.missed < missed0 + 1:  # a tick in flight may still land before it
            assert time.monotonic() < deadline, "the watchdog never noticed"
            await asyncio.sleep(interval_s)
        receiver.drain()
        while watchdog.missed < missed0 + 3:  # two more ticks withheld, counted
            assert time.monotonic() < deadline, watchdog.missed
            await asyncio.sleep(interval_s)
        assert receiver.drain() == []  # withheld: systemd will restart us
        assert watchdog.missed >= 2

        healthy = True
        assert set(await _wait_for_pings(receiver, 2)) == {"WATCHDOG=1"}
        assert watchdog.missed == 0
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_watchdog_treats_a_raising_health_check_as_unhealthy(receiver: Receiver) -> None:
    def broken() -> bool:
        raise RuntimeError("writer state unreadable")

    watchdog = Watchdog(Notifier({"NOTIFY_SOCKET": receiver.name}), broken, interval_s=0.01)
    assert watchdog.tick() is False
    assert receiver.drain() == []


async def test_watchdog_run_returns_when_disabled(receiver: Receiver) -> None:
    # Not under systemd's watchdog: run() ends at once, so a task group is not held open.
    no_usec = Watchdog(Notifier({"NOTIFY_SOCKET": receiver.name}), lambda: True, env={})
    await asyncio.wait_for(no_usec.run(), 1.0)
    no_socket = Watchdog(Notifier({}), lambda: True, interval_s=0.01)
    await asyncio.wait_for(no_socket.run(), 1.0)
    assert receiver.drain() == []


def test_heartbeats_fail_when_any_loop_stops_making_progress() -> None:
    now = [100.0]
    beats = Heartbeats(clock=lambda: now[0])
    beats.register("poll:sim-8", max_age_s=1.0)
    beats.register("writer", max_age_s=3.0)
    assert beats.healthy()  # start-up grace
    now[0] = 101.5
    assert beats.stale() == ["poll:sim-8"]
    beats.beat("poll:sim-8")
    assert beats.healthy()
    now[0] = 103.2
    assert beats.stale() == ["writer", "poll:sim-8"]  # oldest first
    beats.unregister("writer")
    beats.beat("poll:sim-8")
    assert beats.healthy()
    with pytest.raises(KeyError):
        beats.beat("writer")
    with pytest.raises(ValueError, match="max_age_s"):
        beats.register("x", 0)


async def test_watchdog_withholds_pings_when_a_heartbeat_goes_stale(receiver: Receiver) -> None:
    beats = Heartbeats()
    beats.register("poll:sim-8", max_age_s=0.05)
    watchdog = Watchdog(Notifier({"NOTIFY_SOCKET": receiver.name}), beats.healthy, interval_s=0.01)
    assert watchdog.tick()
    assert receiver.recv() == "WATCHDOG=1"
    await asyncio.sleep(0.08)  # the poll loop "hangs"
    assert watchdog.tick() is False
    assert receiver.drain() == []
    beats.beat("poll:sim-8")
    assert watchdog.tick()
    assert receiver.recv() == "WATCHDOG=1"
