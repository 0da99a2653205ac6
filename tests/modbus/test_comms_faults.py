"""Recovery from injected comms faults: LinkError while faulted, no hang, counted, recovers."""

from __future__ import annotations

import asyncio
import time

import pytest

from cryod.drivers.base import LinkError
from cryod.drivers.modbus import ModbusRtuDriver, ModbusTcpDriver

from .conftest import Sim, eventually

Drv = ModbusTcpDriver | ModbusRtuDriver


async def fails_while_faulted(driver: Drv, attempts: int = 3) -> None:
    for _ in range(attempts):
        t = time.monotonic()
        with pytest.raises(LinkError):
            await driver.read_snapshot()
        # bounded: (retries + 1) * (timeout + margin), never a hang
        assert time.monotonic() - t < (driver.retries + 1) * (driver.timeout_s + 0.1) + 0.2


@pytest.mark.parametrize("kind", ["comms-silent", "comms-corrupt", "disconnect"])
async def test_recovers_after_fault(sim: Sim, driver: Drv, kind: str) -> None:
    first = await driver.read_snapshot()
    sim.console.inject(kind)
    await asyncio.sleep(0.05)
    await fails_while_faulted(driver)
    stats = driver.stats
    if kind == "comms-silent":
        assert stats.timeouts >= 3
    elif kind == "comms-corrupt":
        assert stats.bad_frames >= 1  # later attempts may fail fast while reconnecting
    sim.console.clear(kind)
    snap = await eventually(driver.read_snapshot)
    assert snap.seq > first.seq
    assert snap.console_time_s > first.console_time_s
    assert driver.stats.connected
    if kind == "disconnect" and driver.name == "modbus-tcp":
        assert driver.stats.reconnects >= 1
        states = [e["state"] for e in sim.events("connection")]
        assert states.count("opened") >= 2
        assert "closed" in states
    assert driver.stats.last_error is not None


async def test_slow_answers(sim: Sim, driver: Drv) -> None:
    sim.console.inject("comms-slow", value=60)  # under the 200 ms timeout: still works
    t = time.perf_counter()
    await driver.read_snapshot()
    assert time.perf_counter() - t >= 0.06
    sim.console.inject("comms-slow", value=500)  # over it: LinkError, no hang
    await fails_while_faulted(driver, attempts=1)
    sim.console.clear("comms-slow")
    await asyncio.sleep(0.6)  # the late answers arrive and are discarded as stale
    snap = await eventually(driver.read_snapshot)
    assert snap.probes
    assert driver.stats.timeouts >= 2


async def test_values_never_repeated_while_down(sim: Sim, driver: Drv) -> None:
    seqs = [(await driver.read_snapshot()).seq]
    sim.console.inject("comms-silent", for_s=0.5)
    down = 0
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            seqs.append((await driver.read_snapshot()).seq)
        except LinkError:
            down += 1
            continue
        if down:
            break
    assert down >= 1
    assert seqs == sorted(set(seqs))  # every returned snapshot is a fresh read
