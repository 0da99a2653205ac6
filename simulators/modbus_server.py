"""The simulator's Modbus TCP and RTU server: frames in, SimConsole calls out.

Why a framing layer of our own around pymodbus's PDU classes rather than
pymodbus's server: the register image must be computed from the console on
every request (pymodbus's server copies its datastore), the comms faults
(silent, corrupt, slow, disconnect) act on raw frames, and every malformed
frame must be counted and logged. Requests are decoded and answers framed by
the drivers' own codec (``cryod.drivers.modbus.codec``: pymodbus's PDU
classes, the one RTU CRC, the one MBAP layout), so the wire format is the one
cryod's driver and any pymodbus (or mbpoll) master expect. Wire behaviour:
docs/modbus.md.

Bound TCP port: pass ``bound={}`` to ``serve_modbus_tcp``; it receives
``bound["port"]`` (and ``"host"``) before ``ready`` is set (port 0 = any free
port).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryod.drivers.base import TcStatus
from cryod.drivers.modbus.codec import (
    MBAP_MAX_LENGTH,
    MBAP_MIN_LENGTH,
    ExcCodes,
    RequestRefused,
    crc16,
    encode_answer,
    exception_answer,
    parse_request,
    rtu_frame,
    rtu_request_size,
    tcp_adu,
)
from cryod.drivers.profile import (
    Profile,
    RegisterSpec,
    ResolvedRegister,
    decode_words,
    encode_value,
)

from .console import CommandRejected, SimConsole
from .pty import open_link

__all__ = ["ModbusImage", "serve_modbus_rtu", "serve_modbus_tcp"]

#: reserved addresses inside a table: a gap of at most this many unused
#: addresses between two defined registers reads as 0 (so block reads work)
MAX_RESERVED_GAP = 8
#: a started TCP frame must complete within this (then: truncated, connection closed)
TCP_FRAME_TIMEOUT_S = 1.0
#: silence after which a partial RTU frame is discarded (ptys do not keep
#: character timing, so this is longer than 3.5 characters)
RTU_SILENCE_S = 0.05
_FAULT_POLL_S = 0.02

_TYPE_BOUNDS = {
    "uint16": (0, 0xFFFF),
    "int16": (-0x8000, 0x7FFF),
    "uint32": (0, 0xFFFFFFFF),
    "int32": (-0x80000000, 0x7FFFFFFF),
}
_LIMIT_KEYS = {
    "limit_max_on_time_s": "max_on_time_s",
    "limit_min_tip_c": "min_tip_c",
    "limit_max_supply_kpa": "max_supply_kpa",
    "limit_consecutive": "consecutive",
}
_REJECT_CODES = {
    "read_only": ExcCodes.ILLEGAL_ADDRESS,
    "bad_probe": ExcCodes.ILLEGAL_ADDRESS,
    "out_of_range": ExcCodes.ILLEGAL_VALUE,
    "limits_invalid": ExcCodes.ILLEGAL_VALUE,
}


@dataclass(frozen=True, slots=True)
class _Slot:
    """One register word: which register it belongs to and where in it."""

    reg: ResolvedRegister
    base: str  # register name without the probe index
    probe: int | None
    word: int


def _readable(addresses: set[int]) -> set[int]:
    """Defined addresses plus small reserved gaps between them."""
    out = set(addresses)
    ordered = sorted(addresses)
    for a, b in itertools.pairwise(ordered):
        if 1 < b - a <= MAX_RESERVED_GAP + 1:
            out.update(range(a + 1, b))
    return out


def _to_raw(spec: RegisterSpec, value: float) -> int:
    """Engineering value to a raw register value, saturating at the register range
    (a sensor reading saturates; sentinel values stay reserved)."""
    lo, hi = _TYPE_BOUNDS[spec.type]
    sentinels = set(spec.sentinels.values())
    raw = round(value / spec.scale)
    while lo in sentinels:
        lo += 1
    while hi in sentinels:
        hi -= 1
    return max(lo, min(hi, raw))


class ModbusImage:
    """The console's register map, computed from the SimConsole on each request."""

    def __init__(self, console: SimConsole) -> None:
        self.console = console
        self.profile: Profile = console.profile
        self.word_order = self.profile.modbus.word_order
        self.slots: dict[str, dict[int, _Slot]] = {"input": {}, "holding": {}}
        for name in self.profile.registers:
            self._add(self.profile.reg(name), name, None)
        for probe in range(1, self.profile.console.probes + 1):
            for name in self.profile.probe_registers:
                self._add(self.profile.probe_reg(name, probe), name, probe)
        self.readable = {t: _readable(set(s)) for t, s in self.slots.items()}
        self._stored: dict[str, int] = {}  # last written values of plain registers

    def _add(self, reg: ResolvedRegister, base: str, probe: int | None) -> None:
        for i in range(reg.count):
            self.slots[reg.table][reg.address + i] = _Slot(reg, base, probe, i)

    # ---- reads -----------------------------------------------------------
    def read(self, table: str, address: int, count: int) -> list[int]:
        if not 1 <= count <= self.profile.modbus.max_block:
            raise RequestRefused(ExcCodes.ILLEGAL_VALUE, f"read count {count} out of range")
        readable = self.readable[table]
        bad = [a for a in range(address, address + count) if a not in readable]
        if bad:
            raise RequestRefused(ExcCodes.ILLEGAL_ADDRESS, f"{table} address {bad[0]} not mapped")
        cache: dict[str, list[int]] = {}
        out = []
        for a in range(address, address + count):
            slot = self.slots[table].get(a)
            if slot is None:
                out.append(0)
                continue
            if slot.reg.name not in cache:
                cache[slot.reg.name] = self._words(slot)
            out.append(cache[slot.reg.name][slot.word])
        return out

    def _words(self, slot: _Slot) -> list[int]:
        spec = slot.reg.spec
        raw = self._input_raw(slot) if slot.reg.table == "input" else self._holding_raw(slot)
        if spec.type != "string" and isinstance(raw, int):
            lo, hi = _TYPE_BOUNDS[spec.type]
            raw = max(lo, min(hi, raw))
        return encode_value(
            spec.model_copy(update={"min": None, "max": None}), raw, self.word_order
        )

    def _input_raw(self, slot: _Slot) -> int | str:
        c, spec, name = self.console, slot.reg.spec, slot.base
        if slot.probe is not None:
            p = c.probe(slot.probe)
            if name == "tip_c":
                if p.tc_status == TcStatus.SHORT:
                    return spec.sentinels.get("short", 0x7FFF)
                if p.tip_c is None or p.tc_status != TcStatus.OK:
                    return spec.sentinels.get("open", -0x8000)
                return _to_raw(spec, p.tip_c)
            probe_values: dict[str, Callable[[], int]] = {
                "return_kpa": lambda: _to_raw(spec, p.return_kpa),
                "probe_status": lambda: _bits(
                    spec,
                    freeze_open=p.freeze_open,
                    thaw_on=p.thaw_on,
                    limits_armed=p.limits_armed,
                ),
                "tc_status": lambda: int(p.tc_status),
                "trip_cause": lambda: int(p.trip),
                "trip_time_ms": lambda: _ms32(p.trip_time_s),
                "on_time_ms": lambda: _ms32(p.on_time_s),
            }
            fn = probe_values.get(name)
            return fn() if fn else 0
        cs = self.profile.console
        if name == "skin_c":
            skin = c.skin_c()
            return spec.sentinels.get("open", -0x8000) if skin is None else _to_raw(spec, skin)
        if name in ("model", "serial", "firmware"):
            text = {"model": cs.model, "serial": c.serial, "firmware": cs.firmware}[name]
            return text[: 2 * spec.length]
        faults = c.faults()
        values: dict[str, Callable[[], int]] = {
            "status": lambda: _bits(
                spec,
                lease_armed=c.lease_armed(),
                master_open=c.master_open(),
                supply_low=c.supply_low(),
                helium_ok=c.helium_ok(),
            ),
            "faults": lambda: _bits(spec, **dict.fromkeys(faults, True)),
            "lease_remaining_ms": lambda: min(c.lease_remaining_ms(), 0xFFFF),
            "lease_expiry_count": lambda: c.lease_expiry_count() % 0x10000,
            "console_time_ms": lambda: _ms32(c.now_s),
            "supply_kpa": lambda: _to_raw(spec, c.supply_kpa()),
            "cylinder_kpa": lambda: _to_raw(spec, c.cylinder_kpa()),
            "lease_timeout_ms_rb": lambda: c.lease_timeout_ms(),
            "bad_requests": lambda: c.bad_request_count() % 0x10000,
            "probe_count": lambda: cs.probes,
            "gas": lambda: spec.enum.get(cs.gas, 0),
            "capabilities": lambda: _bits(spec, **dict.fromkeys(cs.capabilities, True)),
        }
        fn = values.get(name)
        return fn() if fn else 0

    def _holding_raw(self, slot: _Slot) -> int:
        c, spec, name, n = self.console, slot.reg.spec, slot.base, slot.probe
        if n is not None:
            if name == "freeze_cmd":
                return int(c.probe(n).freeze_open)
            if name == "thaw_cmd":
                return int(c.probe(n).thaw_on)
            if name == "limits_arm":
                return int(c.limits(n) is not None)
            if name in _LIMIT_KEYS:
                key = _LIMIT_KEYS[name]
                pending = c.pending_limits(n)
                if key in pending:
                    return round(pending[key] / spec.scale)
                held = c.limits(n)
                return round(getattr(held, key) / spec.scale) if held is not None else 0
        if name == "lease_timeout_ms":
            return c.lease_timeout_ms()
        if name == "master_cmd":
            return int(c.master_open())
        if name == "fault_reset":
            return 0
        return self._stored.get(slot.reg.name, 0)

    # ---- writes ----------------------------------------------------------
    def write(self, address: int, words: list[int], source: str) -> None:
        """Validate every register of the request first, then apply them in order."""
        plan: list[tuple[_Slot, int]] = []
        a = address
        end = address + len(words)
        while a < end:
            slot = self.slots["holding"].get(a)
            if slot is None:
                raise RequestRefused(ExcCodes.ILLEGAL_ADDRESS, f"holding {a} not mapped")
            spec = slot.reg.spec
            if "w" not in spec.access:
                raise RequestRefused(ExcCodes.ILLEGAL_ADDRESS, f"{slot.reg.name} is read-only")
            if slot.word != 0 or a + slot.reg.count > end:
                raise RequestRefused(
                    ExcCodes.ILLEGAL_ADDRESS, f"{slot.reg.name} must be written whole"
                )
            chunk = words[a - address : a - address + slot.reg.count]
            raw = decode_words(spec, chunk, self.word_order)
            try:
                encode_value(spec, raw, self.word_order)
            except (ValueError, TypeError) as exc:
                raise RequestRefused(ExcCodes.ILLEGAL_VALUE, f"{slot.reg.name}: {exc}") from exc
            assert isinstance(raw, int)
            plan.append((slot, raw))
            a += slot.reg.count
        for slot, raw in plan:
            try:
                self._apply(slot, raw, source)
            except CommandRejected as exc:
                code = _REJECT_CODES.get(exc.code, ExcCodes.DEVICE_FAILURE)
                raise RequestRefused(code, f"{slot.reg.name}: {exc.code}: {exc}") from exc

    def _apply(self, slot: _Slot, raw: int, source: str) -> None:
        c, name, n = self.console, slot.base, slot.probe
        value = round(raw * slot.reg.spec.scale, 6)
        if n is not None:
            if name == "freeze_cmd":
                c.set_freeze(n, bool(raw), source=source)
            elif name == "thaw_cmd":
                c.set_thaw(n, bool(raw), source=source)
            elif name == "limits_arm":
                c.arm_limits(n, bool(raw), source=source)
            elif name in _LIMIT_KEYS:
                c.write_pending_limit(n, _LIMIT_KEYS[name], value, source=source)
            else:
                self._stored[slot.reg.name] = raw
                c.renew_lease(source=source)
            return
        if name == "lease_timeout_ms":
            c.set_lease_timeout(raw, source=source)
        elif name == "master_cmd":
            c.set_master(bool(raw), source=source)
        elif name == "fault_reset" and raw == 1:
            c.reset_faults(source=source)
        else:  # heartbeat, fault_reset=0, plain registers: renewal only
            self._stored[slot.reg.name] = raw
            c.renew_lease(source=source)


def _bits(spec: RegisterSpec, **flags: bool) -> int:
    value = 0
    for name, on in flags.items():
        if on and name in spec.bits:
            value |= 1 << spec.bits[name]
    return value


def _ms32(seconds: float) -> int:
    return round(seconds * 1000) % 0x1_0000_0000


# ---- PDU level -------------------------------------------------------------
class _Handler:
    """Request PDU in, answer PDU out (a Modbus exception for anything refused)."""

    def __init__(self, console: SimConsole, transport: str) -> None:
        self.console = console
        self.image = ModbusImage(console)
        self.unit_id = console.profile.modbus.unit_id
        self.transport = transport

    def bad(self, reason: str) -> None:
        self.console.count_bad_request(transport=f"modbus-{self.transport}", reason=reason)

    def handle(self, pdu: bytes) -> bytes:
        try:
            return self._dispatch(pdu)
        except RequestRefused as exc:
            self.bad(exc.reason)
            return exception_answer(pdu[0] if pdu else 0, exc.code)

    def _dispatch(self, pdu: bytes) -> bytes:
        req = parse_request(pdu)
        if req.function_code in (3, 4):
            return encode_answer(req, self.image.read(req.table, req.address, req.count))
        self.image.write(req.address, list(req.registers), f"modbus-{self.transport}")
        return encode_answer(req)


class _Faults:
    """The comms faults as they apply to one answer."""

    def __init__(self, console: SimConsole, seed: int) -> None:
        self.console = console
        self.rng = random.Random(seed)

    def active(self) -> dict[str, float | None]:
        return self.console.comms_faults()

    def corrupt(self, frame: bytes, rtu: bool) -> bytes:
        kind = self.rng.choice(["checksum", "garbage", "truncated"])
        if kind == "checksum":
            if rtu:
                return frame[:-2] + bytes([frame[-2] ^ 0xFF, frame[-1] ^ 0x5A])
            bad_len = (int.from_bytes(frame[4:6], "big") + self.rng.randint(1, 50)) & 0xFFFF
            return frame[:4] + bad_len.to_bytes(2, "big") + frame[6:]
        if kind == "garbage":
            return bytes(self.rng.randrange(256) for _ in range(self.rng.randint(1, 40)))
        return frame[: self.rng.randint(1, max(1, len(frame) - 1))]


# ---- Modbus TCP ------------------------------------------------------------
async def serve_modbus_tcp(
    console: SimConsole,
    host: str,
    port: int,
    ready: asyncio.Event | None = None,
    *,
    bound: dict[str, Any] | None = None,
    seed: int = 0,
) -> None:
    """Serve Modbus TCP until cancelled; ``bound`` receives the bound host and port."""
    handler = _Handler(console, "tcp")
    faults = _Faults(console, seed)
    conns: set[asyncio.StreamWriter] = set()
    tasks: set[asyncio.Task[None]] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer(writer)
        if "disconnect" in faults.active():
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            return
        task = asyncio.current_task()
        if task is not None:
            tasks.add(task)
        conns.add(writer)
        console.log_event("connection", transport="modbus-tcp", state="opened", peer=peer)
        try:
            await _tcp_session(reader, writer, handler, faults)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            conns.discard(writer)
            if task is not None:
                tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            console.log_event("connection", transport="modbus-tcp", state="closed", peer=peer)

    server = await asyncio.start_server(on_connect, host, port)
    sock = server.sockets[0].getsockname()
    if bound is not None:
        bound["host"], bound["port"] = sock[0], sock[1]
    if ready is not None:
        ready.set()
    try:
        while True:
            await asyncio.sleep(_FAULT_POLL_S)
            if "disconnect" in faults.active():
                for w in list(conns):
                    w.close()
    finally:
        server.close()
        for w in list(conns):
            w.close()
        for t in list(tasks):
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await server.wait_closed()


def _peer(writer: asyncio.StreamWriter) -> str:
    info = writer.get_extra_info("peername")
    if isinstance(info, tuple) and len(info) >= 2:
        return f"{info[0]}:{info[1]}"
    return str(info)


async def _tcp_session(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    handler: _Handler,
    faults: _Faults,
) -> None:
    while True:
        header = await reader.readexactly(1)  # idle wait: no timeout between requests
        try:
            async with asyncio.timeout(TCP_FRAME_TIMEOUT_S):
                header += await reader.readexactly(5)
            tid, pid, length = struct.unpack(">HHH", header)
            if not MBAP_MIN_LENGTH <= length <= MBAP_MAX_LENGTH:
                handler.bad(f"MBAP length {length} out of range")
                return  # the stream cannot be resynchronised: close it
            async with asyncio.timeout(TCP_FRAME_TIMEOUT_S):
                body = await reader.readexactly(length)
        except TimeoutError:
            handler.bad("truncated frame")
            return
        if pid != 0:
            handler.bad(f"MBAP protocol id {pid}")
            continue
        unit, pdu = body[0], body[1:]
        active = faults.active()
        if "disconnect" in active:
            return
        if unit != handler.unit_id or "comms-silent" in active:
            continue
        response = handler.handle(pdu)
        frame = tcp_adu(tid, unit, response)
        slow = active.get("comms-slow")
        if "comms-slow" in active:
            await asyncio.sleep((slow or 0.0) / 1000.0)
        if "comms-corrupt" in faults.active():
            frame = faults.corrupt(frame, rtu=False)
        writer.write(frame)
        await writer.drain()


# ---- Modbus RTU on a pty ------------------------------------------------
async def serve_modbus_rtu(
    console: SimConsole,
    link_path: str,
    ready: asyncio.Event | None = None,
    *,
    seed: int = 0,
) -> None:
    """Serve Modbus RTU on a pty whose terminal end ``link_path`` points at."""
    handler = _Handler(console, "rtu")
    faults = _Faults(console, seed)
    link = open_link(link_path)
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes] = asyncio.Queue()

    def on_readable() -> None:
        try:
            data = os.read(link.master_fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            chunks.put_nowait(data)

    loop.add_reader(link.master_fd, on_readable)
    console.log_event("connection", transport="modbus-rtu", state="opened", peer=str(link_path))
    if ready is not None:
        ready.set()
    try:
        await _rtu_loop(link.master_fd, chunks, handler, faults)
    finally:
        loop.remove_reader(link.master_fd)
        link.close()
        console.log_event("connection", transport="modbus-rtu", state="closed", peer=str(link_path))


async def _rtu_loop(
    fd: int, chunks: asyncio.Queue[bytes], handler: _Handler, faults: _Faults
) -> None:
    buf = b""
    garbage = 0
    while True:
        try:
            async with asyncio.timeout(RTU_SILENCE_S if buf else None):
                data = await chunks.get()
        except TimeoutError:
            garbage += len(buf)  # a frame that never completed: truncated
            buf = b""
            if garbage:
                handler.bad(f"{garbage} garbage or truncated bytes discarded")
                garbage = 0
            continue
        if "disconnect" in faults.active():
            buf = b""  # the line is cut: nothing is heard
            continue
        buf += data
        while buf:
            size = rtu_request_size(buf)
            if size is None:
                break
            if size == 0 or size > 256:
                buf, garbage = buf[1:], garbage + 1  # hunt for the next frame start
                continue
            if len(buf) < size:
                break
            frame = buf[:size]
            if crc16(frame[:-2]) != frame[-2:]:
                buf, garbage = buf[1:], garbage + 1
                continue
            buf = buf[size:]
            if garbage:
                handler.bad(f"{garbage} garbage bytes before a frame")
                garbage = 0
            await _rtu_answer(fd, frame, handler, faults)


async def _rtu_answer(fd: int, frame: bytes, handler: _Handler, faults: _Faults) -> None:
    unit = frame[0]
    active = faults.active()
    if unit != handler.unit_id or "comms-silent" in active or "disconnect" in active:
        return  # other devices' frames and broadcasts get no answer
    out = rtu_frame(unit, handler.handle(frame[1:-2]))
    if "comms-slow" in active:
        await asyncio.sleep((active.get("comms-slow") or 0.0) / 1000.0)
    if "comms-corrupt" in faults.active():
        out = faults.corrupt(out, rtu=True)
    with contextlib.suppress(BlockingIOError, OSError):
        os.write(fd, out)
