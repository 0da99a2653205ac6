"""The simulator's Modbus TCP server seen by a third-party master and by raw bytes."""

from __future__ import annotations

import asyncio
import contextlib
import struct

import pytest
from pymodbus.client import AsyncModbusTcpClient

from .conftest import Sim


@contextlib.asynccontextmanager
async def bare_client(port: int):  # type: ignore[no-untyped-def]
    client = AsyncModbusTcpClient(
        "127.0.0.1", port=port, timeout=1, retries=0, reconnect_delay_max=0.1
    )
    assert await client.connect()
    try:
        yield client
    finally:
        client.close()
        await asyncio.sleep(0.01)


def s16(w: int) -> int:
    return w - 0x10000 if w >= 0x8000 else w


async def test_documented_addresses_with_a_bare_pymodbus_client(sim: Sim, tcp_port: int) -> None:
    c = sim.console
    async with bare_client(tcp_port) as client:
        ident = await client.read_input_registers(address=500, count=23, device_id=1)
        assert not ident.isError()
        text = b"".join(w.to_bytes(2, "big") for w in ident.registers[:8]).rstrip(b"\0")
        assert text == b"CRYOSIM-8"
        serial = b"".join(w.to_bytes(2, "big") for w in ident.registers[8:16]).rstrip(b"\0")
        assert serial.decode() == c.serial
        assert ident.registers[20] == 8  # probe_count at 520
        assert ident.registers[21] == 1  # gas at 521: argon
        assert ident.registers[22] == 0b1101  # helium thaw, skin channel, console limits

        rr = await client.read_input_registers(address=0, count=11, device_id=1)
        status, faults, lease_left, expiries, t_hi, t_lo, supply, cylinder, skin, lease_rb, _ = (
            rr.registers
        )
        assert status & 0b0001 == 0  # lease disarmed at power-on
        assert faults == 0
        assert lease_left == 0
        assert lease_rb == 0
        assert expiries == 0
        assert abs(((t_hi << 16) | t_lo) / 1000 - c.now_s) < 2.0
        assert abs(supply - c.supply_kpa()) < 300
        assert abs(cylinder - c.cylinder_kpa()) < 300
        skin_c = c.skin_c()
        assert skin_c is not None
        assert abs(s16(skin) / 10 - skin_c) < 1.0
        for n in (1, 5, 8):
            base = 16 + (n - 1) * 10  # documented probe block
            pr = await client.read_input_registers(address=base, count=9, device_id=1)
            tip = s16(pr.registers[0]) / 10
            true_tip = c.probe(n).tip_c
            assert true_tip is not None
            assert abs(tip - true_tip) < 1.0
            assert 15 < tip < 45  # at rest: body temperature
            assert pr.registers[2] == 0  # valves closed, no limits
            assert pr.registers[3] == 0  # thermocouple OK

        # holding registers: writes are confirmed by the console state
        wr = await client.write_register(address=0, value=2000, device_id=1)
        assert not wr.isError()
        assert c.lease_timeout_ms() == 2000
        hr = await client.read_holding_registers(address=0, count=4, device_id=1)
        assert hr.registers[0] == 2000
        wr = await client.write_register(address=3, value=1, device_id=1)  # master open
        assert not wr.isError()
        assert c.master_open()
        wr = await client.write_register(address=100 + 2 * 10, value=1, device_id=1)  # probe 3
        assert not wr.isError()
        assert c.probe(3).freeze_open
        hr = await client.read_holding_registers(address=120, count=2, device_id=1)
        assert hr.registers == [1, 0]
        await client.write_register(address=120, value=0, device_id=1)
        await client.write_register(address=3, value=0, device_id=1)
        assert not c.probe(3).freeze_open
        assert not c.master_open()
        assert not c.faults()


async def test_exception_codes_are_documented_ones(sim: Sim, tcp_port: int) -> None:
    c = sim.console
    before = c.bad_request_count()
    async with bare_client(tcp_port) as client:
        cases = [
            (client.write_register(address=50, value=1, device_id=1), 2),  # unmapped
            (client.write_register(address=3, value=2, device_id=1), 3),  # master_cmd max 1
            (client.write_register(address=0, value=50, device_id=1), 3),  # lease < 100 ms
            (client.write_register(address=100, value=1, device_id=1), 4),  # lease disarmed
            (client.read_input_registers(address=300, count=2, device_id=1), 2),
            (client.read_holding_registers(address=0, count=100, device_id=1), 2),
            (client.read_coils(address=0, count=1, device_id=1), 1),
        ]
        for call, code in cases:
            rr = await call
            assert rr.isError(), rr
            assert rr.exception_code == code
        ok = await client.read_input_registers(address=0, count=2, device_id=1)
        assert not ok.isError()
    assert c.bad_request_count() == before + len(cases)
    reasons = [e["reason"] for e in sim.events("bad_request")]
    assert len(reasons) == len(cases)
    assert not c.probe(1).freeze_open


async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> bytes:
    """Send one frame; the console's whole answer frame, which must carry the
    request's transaction id (so a late answer to an earlier frame fails here)."""
    writer.write(data)
    await writer.drain()
    head = await asyncio.wait_for(reader.readexactly(6), 5)
    length = struct.unpack(">H", head[4:6])[0]
    frame = head + await asyncio.wait_for(reader.readexactly(length), 5)
    assert frame[:2] == data[:2], f"answer {frame.hex()} to another transaction"
    return frame


async def unanswered(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes, window_s: float = 0.3
) -> bytes:
    """Send one frame the console must not answer; what arrived within ``window_s``.
    An answer later than that shows up in the next ``ask`` as a wrong transaction id."""
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(300), window_s)
    except TimeoutError:
        return b""


async def test_malformed_raw_frames_get_errors_not_crashes(sim: Sim, tcp_port: int) -> None:
    c = sim.console
    before = c.bad_request_count()
    reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port)
    try:
        # wrong protocol id: discarded without an answer, counted
        assert (
            await unanswered(
                reader, writer, struct.pack(">HHHB", 1, 7, 6, 1) + bytes.fromhex("0400000001")
            )
            == b""
        )
        # request for another unit id: no answer (not ours)
        assert (
            await unanswered(
                reader, writer, struct.pack(">HHHB", 2, 0, 6, 9) + bytes.fromhex("0400000001")
            )
            == b""
        )
        # PDU too short for its function: exception 03
        ans = await ask(reader, writer, struct.pack(">HHHB", 3, 0, 3, 1) + bytes.fromhex("0400"))
        assert ans[7:] == bytes([0x84, 3])
        assert ans[:2] == b"\x00\x03"
        # FC16 whose byte count lies: exception 03
        pdu = bytes.fromhex("1000000002") + bytes([9]) + bytes(4)
        ans = await ask(reader, writer, struct.pack(">HHHB", 4, 0, len(pdu) + 1, 1) + pdu)
        assert ans[7:] == bytes([0x90, 3])
        # count 0 read: exception 03
        ans = await ask(
            reader, writer, struct.pack(">HHHB", 5, 0, 6, 1) + bytes.fromhex("0400000000")
        )
        assert ans[7:] == bytes([0x84, 3])
        # the connection still serves a good request
        ans = await ask(
            reader, writer, struct.pack(">HHHB", 6, 0, 6, 1) + bytes.fromhex("0402080001")
        )
        assert ans[7:9] == bytes([4, 2])
        assert struct.unpack(">H", ans[9:11])[0] == 8
        # an impossible MBAP length: the stream cannot be resynchronised, so it is closed
        writer.write(struct.pack(">HHHB", 7, 0, 0, 1))
        await writer.drain()
        assert await asyncio.wait_for(reader.read(100), 2) == b""
    finally:
        writer.close()
        await writer.wait_closed()
    # a frame that stops half way: closed after the frame timeout, counted
    reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port)
    try:
        writer.write(struct.pack(">HHHB", 8, 0, 6, 1) + b"\x04")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(100), 3) == b""
    finally:
        writer.close()
        await writer.wait_closed()
    # garbage then a good frame on a new connection still works
    reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port)
    try:
        ans = await ask(
            reader, writer, struct.pack(">HHHB", 9, 0, 6, 1) + bytes.fromhex("0402080001")
        )
        assert len(ans) == 11
    finally:
        writer.close()
        await writer.wait_closed()
    assert c.bad_request_count() == before + 6
    assert len(sim.events("bad_request")) == 6
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5  # the server logs "closed" once it sees the FIN
    while len([e for e in sim.events("connection") if e["state"] == "closed"]) < 3:
        if loop.time() > deadline:
            break  # the assertions below say what is missing
        await asyncio.sleep(0.01)
    opened = [e for e in sim.events("connection") if e["state"] == "opened"]
    closed = [e for e in sim.events("connection") if e["state"] == "closed"]
    assert len(opened) == 3
    assert len(closed) == 3


@pytest.mark.parametrize("unit", [1, 2])
async def test_unit_id_other_than_the_profile_gets_no_answer(
    sim: Sim, tcp_port: int, unit: int
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port)
    try:
        request = struct.pack(">HHHB", 1, 0, 6, unit) + bytes.fromhex("0400000001")
        if unit == 1:
            assert len(await ask(reader, writer, request)) == 11
        else:
            assert await unanswered(reader, writer, request) == b""
            # nor later: the next request's answer is the next frame on the stream
            good = struct.pack(">HHHB", 2, 0, 6, 1) + bytes.fromhex("0400000001")
            assert len(await ask(reader, writer, good)) == 11
    finally:
        writer.close()
        await writer.wait_closed()
