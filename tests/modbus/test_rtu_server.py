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

    async def _read_for(self, size: int, window_s: float) -> bytes:
        got = b""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + window_s
        while len(got) < size and loop.time() < deadline:
            with contextlib.suppress(BlockingIOError):
                got += os.read(self.fd, 512)
            await asyncio.sleep(0.01)
        return got

    async def ask(self, data: bytes, answer_size: int) -> bytes:
        """Send a frame; the answer once ``answer_size`` bytes are in (a late answer to
        an earlier frame would be read here first, and fail the comparison)."""
        os.write(self.fd, data)
        return await self._read_for(answer_size, 5.0)

    async def unanswered(self, data: bytes, window_s: float = 0.25) -> bytes:
        """Send a frame a slave must not answer; whatever arrived within ``window_s``."""
        os.write(self.fd, data)
        return await self._read_for(1, window_s)

    def close(self) -> None:
        os.close(self.fd)


async def test_raw_pty_bad_frames_counted_no_hang(sim: Sim, rtu_path: str) -> None:
    c = sim.console
    before = c.bad_request_count()
    port = RawPort(rtu_path)
    try:
        good = frame("0104020800 01".replace(" ", ""))
        answer = frame("01040200 08".replace(" ", ""))  # probe_count = 8
        assert await port.ask(good, len(answer)) == answer
        bad_crc = good[:-1] + bytes([good[-1] ^ 0xFF])
        assert await port.unanswered(bad_crc) == b""  # a slave never answers a CRC error
        assert await port.unanswered(good[:5]) == b""  # truncated, then silence
        assert await port.unanswered(frame("0204020800 01".replace(" ", ""))) == b""  # unit 2
        # garbage before a good frame: the frame is still found and answered
        assert await port.ask(b"\xff\x00\x13" + good, len(answer)) == answer
        # protocol-level errors: exception frames with a good CRC
        for request, refusal in [
            (frame("0106000300 02".replace(" ", "")), frame("018603")),
            (frame("0106003200 01".replace(" ", "")), frame("018602")),
            (frame("010100000001"), frame("018101")),
        ]:
            assert await port.ask(request, len(refusal)) == refusal
        assert await port.ask(good, len(answer)) == answer
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
