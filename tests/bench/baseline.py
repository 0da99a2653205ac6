"""The link's own cost: a bare client reading the same data from the same simulator.

Modbus (TCP and RTU): pymodbus reads the snapshot's register span, exactly
the requests cryod's driver sends for one snapshot, and writes the heartbeat
register (one FC6 write, the lease renewal). Line protocol: a bare pyserial
``SNAP?`` round trip. Run with no daemon attached, so nothing else shares the
link. Over a pseudo-terminal nothing is paced at the baud rate, so the RTU
wire time at 115200 baud is computed (``linkmath``) and reported beside it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from cryod.drivers import linkmath
from cryod.drivers.lineproto import Frame, decode, encode
from cryod.drivers.profile import load_profile

from .procs import Sim
from .stats import summary


async def _modbus(sim: Sim, n: int) -> dict[str, Any]:
    from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

    profile = load_profile("cryosim-8")
    span = profile.snapshot_span()
    unit = profile.modbus.unit_id
    hb = profile.reg("heartbeat").address
    client: Any
    if sim.transport == "modbus-tcp":
        client = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=1, retries=0)
    else:
        client = AsyncModbusSerialClient(
            str(sim.link), baudrate=115200, timeout=1, retries=0, reconnect_delay=0
        )
    await client.connect()
    reads: list[float] = []
    writes: list[float] = []
    try:
        for i in range(n + 5):
            t0 = time.perf_counter()
            for start, count in span:
                rr = await client.read_input_registers(start, count=count, device_id=unit)
                assert not rr.isError(), rr
            t1 = time.perf_counter()
            wr = await client.write_register(hb, i & 0xFFFF, device_id=unit)
            assert not wr.isError(), wr
            t2 = time.perf_counter()
            if i >= 5:  # warm-up
                reads.append((t1 - t0) * 1000)
                writes.append((t2 - t1) * 1000)
            await asyncio.sleep(0.002)
    finally:
        client.close()
    out = {"snapshot_read_ms": summary(reads, 3), "heartbeat_write_ms": summary(writes, 3)}
    if sim.transport == "modbus-rtu":
        bits = linkmath.bits_per_char("N", 1)
        read_s = sum(
            linkmath.rtu_transaction_s(*linkmath.read_registers_bytes(c), 115200, bits)
            for _, c in span
        )
        write_s = linkmath.rtu_transaction_s(*linkmath.write_single_bytes(), 115200, bits)
        out["wire_115200_read_ms"] = round(read_s * 1000, 2)
        out["wire_115200_write_ms"] = round(write_s * 1000, 2)
    return out


def _line(sim: Sim, n: int) -> dict[str, Any]:
    import serial

    rtts: list[float] = []
    with serial.Serial(str(sim.link), baudrate=115200, timeout=1.0) as ser:
        seq = 1
        for i in range(n + 5):
            seq = seq % 65535 + 1
            ser.reset_input_buffer()
            t0 = time.perf_counter()
            ser.write(encode(Frame.make(seq, "SNAP?")))
            while True:
                line = ser.readline()
                if not line:
                    raise RuntimeError("no answer to SNAP?")
                try:
                    fr = decode(line)
                except ValueError:
                    continue
                if fr.verb in ("ACK", "NAK") and fr.args[:1] == (str(seq),):
                    break
            t1 = time.perf_counter()
            if i >= 5:
                rtts.append((t1 - t0) * 1000)
            time.sleep(0.002)
    return {"snapshot_read_ms": summary(rtts, 3)}


def measure(sim: Sim, n: int) -> dict[str, Any]:
    if sim.transport == "serial":
        return _line(sim, n)
    return asyncio.run(_modbus(sim, n))
