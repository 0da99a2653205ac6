"""Fixtures: a simulated console serving the line protocol on a real pty."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tty
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cryod.drivers.lineproto import Frame, LineSplitter, encode
from cryod.drivers.profile import load_profile
from cryod.drivers.serial_line import SerialLineDriver
from cryod.simulators.console import SimConsole
from cryod.simulators.line_server import serve_line


@dataclass
class Sim:
    console: SimConsole
    port: str
    event_log: Path
    tasks: list[asyncio.Task[None]]

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        """Events from the JSON-lines file (the ground truth on disk)."""
        out = []
        for line in self.event_log.read_text().splitlines():
            rec = json.loads(line)
            if event is None or rec["event"] == event:
                out.append(rec)
        return out

    async def restart_server(self) -> None:
        """Stop the line server and start a new one (a new pty behind the same path)."""
        server = self.tasks.pop()
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
        ready = asyncio.Event()
        self.tasks.append(asyncio.create_task(serve_line(self.console, self.port, ready)))
        await ready.wait()


async def start_sim(tmp_path: Path, speed: float = 1.0) -> Sim:
    log = tmp_path / "events.jsonl"
    console = SimConsole(load_profile(), speed=speed, seed=7, event_log_path=str(log))
    port = str(tmp_path / "ttyCRYO0")
    ready = asyncio.Event()
    tasks = [
        asyncio.create_task(console.run(), name="sim-physics"),
        asyncio.create_task(serve_line(console, port, ready), name="sim-line"),
    ]
    await ready.wait()
    return Sim(console, port, log, tasks)


async def stop_sim(sim: Sim) -> None:
    for task in sim.tasks:
        task.cancel()
    await asyncio.gather(*sim.tasks, return_exceptions=True)
    sim.console.close()


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Sim]:
    s = await start_sim(tmp_path, speed=20.0)
    try:
        yield s
    finally:
        await stop_sim(s)


@pytest.fixture
async def driver(sim: Sim) -> AsyncIterator[SerialLineDriver]:
    d = SerialLineDriver.from_options({"port": sim.port, "telemetry_hz": 20}, source="test")
    await d.connect()
    try:
        yield d
    finally:
        await d.close()


class RawClient:
    """Writes raw bytes to the pty and collects the console's replies (not TEL)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        self.splitter = LineSplitter()
        self.replies: list[Frame] = []
        self.tel: list[Frame] = []
        self.seq = 100

    def close(self) -> None:
        os.close(self.fd)

    def send(self, verb: str, *args: str, **fields: object) -> int:
        self.seq += 1
        self.write(encode(Frame.make(self.seq, verb, args, fields)))
        return self.seq

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            for item in self.splitter.feed(data):
                assert isinstance(item, Frame), f"console sent a bad frame: {item}"
                (self.tel if item.verb == "TEL" else self.replies).append(item)

    async def wait_replies(self, n: int, timeout_s: float = 2.0) -> list[Frame]:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(self.replies) < n:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"only {len(self.replies)} of {n} replies: {self.replies}")
            await asyncio.sleep(0.01)
            self._drain()
        out, self.replies = self.replies[:n], self.replies[n:]
        return out

    async def wait_tel(self, n: int, timeout_s: float = 5.0) -> list[Frame]:
        """Wait until at least ``n`` TEL frames have arrived; all of them so far."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(self.tel) < n:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"only {len(self.tel)} of {n} TEL frames in {timeout_s} s")
            await asyncio.sleep(0.01)
            self._drain()
        return self.tel

    async def ask(self, verb: str, *args: str, **fields: object) -> Frame:
        seq = self.send(verb, *args, **fields)
        (reply,) = await self.wait_replies(1)
        assert reply.args[0] == str(seq), reply
        return reply


@pytest.fixture
async def raw(sim: Sim) -> AsyncIterator[RawClient]:
    client = RawClient(sim.port)
    try:
        yield client
    finally:
        client.close()
