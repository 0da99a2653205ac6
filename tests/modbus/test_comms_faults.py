"""Recovery from injected comms faults: LinkError while faulted, no hang, counted, recovers."""

from __future__ import annotations

import asyncio
import time

import pytest

from cryod.drivers.base import LinkError
from cryod.drivers.modbus import ModbusRtuDriver, ModbusTcpDriver
from cryod.drivers.modbus.transport import RtuTransport, TcpTransport
from tests.timing import LoopLag

from .conftest import Sim, eventually

Drv = ModbusTcpDriver | ModbusRtuDriver


def unread_bytes(driver: Drv) -> int:
    """Bytes the console sent that the driver's transport holds, not yet consumed."""
    transport = driver._link._transport
    if isinstance(transport, TcpTransport):
        return 0 if transport.proto is None else len(transport.proto.buf)
    assert isinstance(transport, RtuTransport)
    return len(transport.buf)


async def late_answers_arrived(driver: Drv, answers: int, timeout_s: float = 10.0) -> None:
    """Wait until ``answers`` answers to the snapshot's first read are in, unread."""
    req = driver._map.span_requests[0]
    header = 7 if isinstance(driver, ModbusTcpDriver) else 3  # MBAP / unit id + CRC
    want = answers * (header + req.response_size())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while unread_bytes(driver) < want:
        assert loop.time() < deadline, f"{unread_bytes(driver)} of {want} late bytes arrived"
        await asyncio.sleep(0.01)


async def fails_while_faulted(driver: Drv, attempts: int = 3) -> None:
    for _ in range(attempts):
        async with LoopLag() as lag:
            t = time.monotonic()
            with pytest.raises(LinkError):
                await driver.read_snapshot()
            took_s = time.monotonic() - t
        # bounded: (retries + 1) * (timeout + margin), never a hang; each timer of the
        # attempt may fire as late as this loaded machine woke a sleeper meanwhile
        tries = driver.retries + 1
        assert took_s < tries * (driver.timeout_s + 0.1 + lag.max_s) + 0.2, (took_s, lag.max_s)


@pytest.mark.parametrize("kind", ["comms-silent", "comms-corrupt", "disconnect"])
async def test_recovers_after_fault(sim: Sim, driver: Drv, kind: str) -> None:
    first = await driver.read_snapshot()
    sim.console.inject(kind)  # acts on the next frame the server sees: nothing to wait for
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
    # the console still answers every attempt, late: wait until those answers are in
    # (RTU has no transaction id, so a late answer must not be mistaken for a new one)
    await late_answers_arrived(driver, answers=driver.retries + 1)
    bad_before = driver.stats.bad_frames
    snap = await driver.read_snapshot()  # the late answers are discarded as stale
    assert snap.probes
    assert driver.stats.bad_frames > bad_before
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
