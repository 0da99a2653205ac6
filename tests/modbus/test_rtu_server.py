"""Raw bytes on the RTU pty (bad CRC, garbage, truncation, wrong unit) and a bare RTU master."""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import tty

from pymodbus.client import AsyncModbusSerialClient

from cryod.drivers.modbus import crc16

from .conftest import Sim


def frame(hex_body: str) -> bytes:
    body = bytes.fromhex(hex_body)
    return body + crc16(body)


class RawPort:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        termios.tcflush(self.fd, termios.TCIOFLUSH)

    async def exchange(self, data: bytes, wait_s: float = 0.25) -> bytes:
        os.write(self.fd, data)
        got = b""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while loop.time() < deadline:
            with contextlib.suppress(BlockingIOError):
                got += os.read(self.fd, 512)
            await asyncio.sleep(0.01)
        return got

    def close(self) -> None:
        os.close(self.fd)


async def test_raw_pty_bad_frames_counted_no_hang(sim: Sim, rtu_path: str) -> None:
    c = sim.console
    before = c.bad_request_count()
    port = RawPort(rtu_path)
    try:
        good = frame("0104020800 01".replace(" ", ""))
        ans = await port.exchange(good)
        assert ans == frame("01040200 08".replace(" ", ""))  # probe_count = 8
        bad_crc = good[:-1] + bytes([good[-1] ^ 0xFF])
        assert await port.exchange(bad_crc) == b""  # a slave never answers a CRC error
        assert await port.exchange(good[:5]) == b""  # truncated, then silence
        assert await port.exchange(frame("0204020800 01".replace(" ", ""))) == b""  # unit 2
        # garbage before a good frame: the frame is still found and answered
        ans = await port.exchange(b"\xff\x00\x13" + good)
        assert ans == frame("0104020008")
        # protocol-level errors: exception frames with a good CRC
        assert await port.exchange(frame("0106000300 02".replace(" ", ""))) == frame("018603")
        assert await port.exchange(frame("0106003200 01".replace(" ", ""))) == frame("018602")
        assert await port.exchange(frame("010100000001")) == frame("018101")
        assert await port.exchange(good) == frame("0104020008")
    finally:
        port.close()
    # bad CRC, truncated, garbage prefix, 3 exception answers (unit 2 is not an error)
    assert c.bad_request_count() == before + 6
    assert len(sim.events("bad_request")) == 6


async def test_bare_pymodbus_rtu_master(sim: Sim, rtu_path: str) -> None:
    client = AsyncModbusSerialClient(
        rtu_path, baudrate=115200, timeout=1, retries=0, reconnect_delay_max=0.1
    )
    assert await client.connect()
    try:
        rr = await client.read_input_registers(address=16, count=1, device_id=1)
        assert not rr.isError()
        tip = rr.registers[0] - 0x10000 if rr.registers[0] >= 0x8000 else rr.registers[0]
        true_tip = sim.console.probe(1).tip_c
        assert true_tip is not None
        assert abs(tip / 10 - true_tip) < 1.0
    finally:
        client.close()
        await asyncio.sleep(0.01)
