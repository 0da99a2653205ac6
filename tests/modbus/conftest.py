"""Fixtures: a running SimConsole with the Modbus server on loopback TCP and on a pty."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cryod.drivers.base import Snapshot
from cryod.drivers.modbus import ModbusRtuDriver, ModbusTcpDriver
from cryod.drivers.profile import Profile, load_profile
from cryod.simulators.console import SimConsole
from cryod.simulators.modbus_server import serve_modbus_rtu, serve_modbus_tcp

SPEED = 20.0


@dataclass
class Sim:
    console: SimConsole
    events_path: Path

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Events read back from the JSON-lines file (the ground truth)."""
        out = []
        for line in self.events_path.read_text().splitlines():
            rec = json.loads(line)
            if kind is None or rec["event"] == kind:
                out.append(rec)
        return out


async def _stop(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@contextlib.asynccontextmanager
async def running_sim(tmp_path: Path, profile: Profile | None = None) -> AsyncIterator[Sim]:
    path = tmp_path / "events.jsonl"
    console = SimConsole(profile or load_profile(), speed=SPEED, seed=7, event_log_path=str(path))
    task = asyncio.create_task(console.run(), name="sim-console")
    try:
        yield Sim(console, path)
    finally:
        await _stop(task)
        console.close()


@contextlib.asynccontextmanager
async def tcp_server(sim: Sim) -> AsyncIterator[int]:
    ready = asyncio.Event()
    bound: dict[str, Any] = {}
    task = asyncio.create_task(
        serve_modbus_tcp(sim.console, "127.0.0.1", 0, ready, bound=bound), name="modbus-tcp"
    )
    try:
        await asyncio.wait_for(ready.wait(), 5)
        yield int(bound["port"])
    finally:
        await _stop(task)


@contextlib.asynccontextmanager
async def rtu_server(sim: Sim, path: Path) -> AsyncIterator[str]:
    ready = asyncio.Event()
    task = asyncio.create_task(serve_modbus_rtu(sim.console, str(path), ready), name="modbus-rtu")
    try:
        await asyncio.wait_for(ready.wait(), 5)
        yield str(path)
    finally:
        await _stop(task)


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Sim]:
    async with running_sim(tmp_path) as s:
        yield s


@pytest.fixture
async def tcp_port(sim: Sim) -> AsyncIterator[int]:
    async with tcp_server(sim) as port:
        yield port


@pytest.fixture
async def rtu_path(sim: Sim, tmp_path: Path) -> AsyncIterator[str]:
    async with rtu_server(sim, tmp_path / "ttyCRYO0") as path:
        yield path


FAST = {"timeout_s": 0.2, "retries": 1, "reconnect_max_s": 0.3}


@pytest.fixture
async def tcp_driver(tcp_port: int) -> AsyncIterator[ModbusTcpDriver]:
    d = ModbusTcpDriver.from_options({"host": "127.0.0.1", "port": tcp_port, **FAST})
    await d.connect()
    try:
        yield d
    finally:
        await d.close()


@pytest.fixture
async def rtu_driver(rtu_path: str) -> AsyncIterator[ModbusRtuDriver]:
    d = ModbusRtuDriver.from_options({"port": rtu_path, **FAST})
    await d.connect()
    try:
        yield d
    finally:
        await d.close()


@pytest.fixture(params=["tcp", "rtu"])
async def driver(
    request: pytest.FixtureRequest, sim: Sim, tmp_path: Path
) -> AsyncIterator[ModbusTcpDriver | ModbusRtuDriver]:
    """The same console behind either transport."""
    if request.param == "tcp":
        async with tcp_server(sim) as port:
            d: ModbusTcpDriver | ModbusRtuDriver = ModbusTcpDriver.from_options(
                {"host": "127.0.0.1", "port": port, **FAST}
            )
            await d.connect()
            try:
                yield d
            finally:
                await d.close()
    else:
        async with rtu_server(sim, tmp_path / "ttyCRYO1") as path:
            d = ModbusRtuDriver.from_options({"port": path, **FAST})
            await d.connect()
            try:
                yield d
            finally:
                await d.close()


async def eventually(fn: Any, timeout_s: float = 5.0, every_s: float = 0.05) -> Any:
    """Call the async ``fn`` until it returns without a DriverError; its last result."""
    from cryod.drivers.base import DriverError

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            return await fn()
        except DriverError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(every_s)


async def read_until(
    driver: ModbusTcpDriver | ModbusRtuDriver,
    pred: Callable[[Snapshot], bool],
    *,
    renew: bool = False,
    timeout_s: float = 10.0,
) -> Snapshot:
    """Read snapshots (renewing the lease by a write before each when ``renew``)
    until ``pred`` holds; the snapshot that satisfied it. The timeout only bounds
    a test that fails: a loaded machine takes longer, never gives a wrong answer."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        if renew:
            await driver.renew_lease()
        snap = await driver.read_snapshot()
        if pred(snap):
            return snap
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s; last snapshot {snap}")
        await asyncio.sleep(0.02)  # the poll interval, not a condition


async def renew_until(
    driver: ModbusTcpDriver | ModbusRtuDriver,
    pred: Callable[[Snapshot], bool],
    timeout_s: float = 10.0,
) -> Snapshot:
    """``read_until`` with the lease kept alive by a write before every read."""
    return await read_until(driver, pred, renew=True, timeout_s=timeout_s)
