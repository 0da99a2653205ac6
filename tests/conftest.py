"""Suite-wide fixtures: the leak check every test runs under, and real components.

The leak check fails a test that leaves asyncio tasks, threads, child
processes or sockets behind: a leaked poll task or server socket in a test is
a leaked one in the daemon.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from collections.abc import Iterator

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_binary(name: str) -> str:
    """Path of a real component a test needs; skip locally, fail in CI when absent."""
    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None
    )
    if path is None:
        if IN_CI:
            pytest.fail(f"{name} is required in CI (CI=true) but is not installed")
        pytest.skip(f"{name} not installed (see README: Requirements)")
    return path


def _socket_fds() -> set[str]:
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:") or target.startswith("/dev/pts/") or target == "/dev/ptmx":
            out.add(f"{fd}->{target}")
    return out


def _children() -> set[int]:
    me = os.getpid()
    kids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] != "Z":
            kids.add(int(entry))
    return kids


def _threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.is_alive()}


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if it leaves tasks, threads, child processes or sockets behind."""
    runner = request.getfixturevalue("_function_scoped_runner")
    threads0, kids0, socks0 = _threads(), _children(), _socket_fds()
    yield
    loop = runner.get_loop()
    problems: list[str] = []
    if not loop.is_closed():
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        # tasks that are already finishing get until a deadline, as threads and sockets
        # below: aiomqtt's misc task, created from paho's connect thread, can outlive a
        # connection the broker dropped during the connect by up to its 1 s period
        finish_by = time.monotonic() + 2.0
        while pending and time.monotonic() < finish_by:
            loop.run_until_complete(asyncio.sleep(0.05))
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        if pending:
            problems.append(
                f"tasks left running: {[t.get_name() + ' ' + repr(t.get_coro()) for t in pending]}"
            )
            for t in pending:
                t.cancel()
    deadline = time.monotonic() + 2.0
    while True:
        # the loop's default executor threads belong to the loop (closed by the runner)
        threads = {t for t in _threads() - threads0 if not t.name.startswith("asyncio_")}
        kids = _children() - kids0
        socks = _socket_fds() - socks0
        if not (threads or kids or socks) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if threads:
        problems.append(f"threads left running: {sorted(t.name for t in threads)}")
    if kids:
        problems.append(f"child processes left running: {sorted(kids)}")
    if socks:
        problems.append(f"sockets or terminals left open: {sorted(socks)}")
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)
