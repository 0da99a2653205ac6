"""Modbus TCP and RTU console drivers, driven by a console profile (register map).

Why our own transport around pymodbus's PDU classes instead of pymodbus's
client: the client hides bad frames (it drops them and waits), has had loops
that never time out on garbage (pymodbus #2960) and uncaught errors on
malformed frames (#2698, #2556). Here every byte that arrives is checked by
small pure functions (``decode_tcp_adu``, ``find_rtu_frame``,
``parse_response``) that either return a response or raise ``ProtocolError``
and are fuzzed with hypothesis; pymodbus encodes the request PDUs, decodes
the response PDUs and computes the CRC. Every transaction holds the bus lock,
has a deadline, is retried a bounded number of times, and a lost link is
reopened with exponential backoff and jitter. Wire format: docs/modbus.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, NamedTuple, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pymodbus.framer.rtu import FramerRTU
from pymodbus.pdu import DecodePDU, ModbusPDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
    WriteMultipleRegistersRequest,
)

from .base import (
    ConsoleFaults,
    ConsoleLimits,
    Driver,
    DriverError,
    Identity,
    LeaseStatus,
    LimitTrip,
    LinkError,
    LinkStats,
    ProbeState,
    ProtocolError,
    Reading,
    RejectedError,
    Snapshot,
    TcStatus,
    TripCause,
    Validity,
)
from .linkmath import (
    LinkBudget,
    bits_per_char,
    check_poll_rate,
    inter_frame_gap_s,
    snapshot_budget_rtu,
    snapshot_budget_tcp,
)
from .profile import (
    Profile,
    ProfileError,
    ResolvedRegister,
    decode_words,
    encode_value,
    load_profile,
)

__all__ = [
    "ModbusExceptionResponse",
    "ModbusRtuDriver",
    "ModbusTcpDriver",
    "Request",
    "crc16",
    "decode_tcp_adu",
    "find_rtu_frame",
    "parse_response",
]

_EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    6: "device busy",
}
_LIMIT_FIELDS = (
    ("limit_max_on_time_s", "max_on_time_s"),
    ("limit_min_tip_c", "min_tip_c"),
    ("limit_max_supply_kpa", "max_supply_kpa"),
    ("limit_consecutive", "consecutive"),
)


class ModbusExceptionResponse(ProtocolError):
    """The console answered with a Modbus exception (counted as a bad frame)."""

    def __init__(self, function_code: int, code: int) -> None:
        name = _EXCEPTION_NAMES.get(code, "unknown")
        super().__init__(f"function {function_code}: exception {code} ({name})")
        self.function_code = function_code
        self.code = code


# ---- pure codec ------------------------------------------------------------
class Request:
    """One request PDU and what a valid answer to it looks like."""

    def __init__(self, pdu: ModbusPDU) -> None:
        self.function_code = pdu.function_code
        self.address = pdu.address
        self.count = pdu.count
        self.pdu = bytes([pdu.function_code]) + pdu.encode()

    @classmethod
    def read(cls, table: str, address: int, count: int) -> Request:
        klass = ReadInputRegistersRequest if table == "input" else ReadHoldingRegistersRequest
        return cls(klass(address=address, count=count))

    @classmethod
    def write(cls, address: int, words: list[int]) -> Request:
        if len(words) == 1:
            return cls._write_single(address, words[0])
        return cls(WriteMultipleRegistersRequest(address=address, registers=words))

    @classmethod
    def _write_single(cls, address: int, word: int) -> Request:
        """Function 6 built directly (the lease renewal sends one every poll); the same
        bytes as pymodbus's WriteSingleRegisterRequest (tests/modbus/test_codec_fuzz.py)."""
        req = cls.__new__(cls)
        req.function_code, req.address, req.count = 6, address, 1
        req.pdu = struct.pack(">BHH", 6, address, word)
        return req

    def response_size(self) -> int:
        """PDU bytes of a normal response."""
        if self.function_code in (3, 4):
            return 2 + 2 * self.count
        return 5


_DECODER = DecodePDU(is_server=False)


def parse_response(req: Request, pdu: bytes) -> list[int]:
    """Validate a response PDU against its request; registers read (or [] for writes).

    Raises ModbusExceptionResponse for an exception answer, ProtocolError for
    anything else that is not exactly the expected answer.
    """
    if not pdu:
        raise ProtocolError("empty response PDU")
    fc = pdu[0]
    if fc == req.function_code | 0x80:
        if len(pdu) != 2:
            raise ProtocolError(f"exception response of {len(pdu)} bytes")
        raise ModbusExceptionResponse(req.function_code, pdu[1])
    if fc != req.function_code:
        raise ProtocolError(f"wrong function code {fc} (expected {req.function_code})")
    if len(pdu) != req.response_size():
        raise ProtocolError(f"response PDU of {len(pdu)} bytes (expected {req.response_size()})")
    if fc in (3, 4) and pdu[1] != 2 * req.count:
        raise ProtocolError(f"byte count {pdu[1]} (expected {2 * req.count})")
    if fc == 6 and pdu != req.pdu:
        raise ProtocolError("write-single echo differs from the request")
    if fc == 16 and pdu[1:5] != req.pdu[1:5]:
        raise ProtocolError("write-multiple answer names another address or count")
    if fc in (3, 4):
        # length and byte count checked above: the registers are the rest, big-endian
        return list(struct.unpack(f">{req.count}H", pdu[2:]))
    if fc in (6, 16):
        return []  # the whole answer was compared with the request above
    decoded = _DECODER.decode(pdu)
    if decoded is None or decoded.function_code != fc:
        raise ProtocolError("response PDU does not decode")
    return []


def crc16(data: bytes) -> bytes:
    """Modbus RTU CRC as sent on the wire."""
    return FramerRTU.compute_CRC(data).to_bytes(2, "big")


def rtu_frame(unit: int, pdu: bytes) -> bytes:
    body = bytes([unit]) + pdu
    return body + crc16(body)


def find_rtu_frame(buf: bytes, unit: int, req: Request) -> tuple[bytes | None, int]:
    """Look for the answer to ``req`` in received bytes.

    Returns (pdu, garbage_bytes_skipped) when a frame with a good CRC from
    ``unit`` answering ``req``'s function starts somewhere in ``buf``;
    (None, 0) when more bytes may still complete one.
    """
    normal = req.response_size() + 3
    for start in range(len(buf)):
        if buf[start] != unit or start + 1 >= len(buf):
            continue
        fc = buf[start + 1]
        if fc == req.function_code | 0x80:
            size = 5
        elif fc == req.function_code:
            size = normal
        else:
            continue
        frame = buf[start : start + size]
        if len(frame) < size:
            continue
        if crc16(frame[:-2]) == frame[-2:]:
            return frame[1:-2], start
    return None, 0


def tcp_adu(tid: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def decode_tcp_adu(adu: bytes, tid: int, unit: int) -> bytes:
    """Check one complete MBAP frame; the PDU it carries. Raises ProtocolError."""
    if len(adu) < 8:
        raise ProtocolError(f"MBAP frame of {len(adu)} bytes")
    rtid, pid, length, runit = struct.unpack(">HHHB", adu[:7])
    if pid != 0:
        raise ProtocolError(f"MBAP protocol id {pid}")
    if length != len(adu) - 6:
        raise ProtocolError(f"MBAP length {length} for {len(adu) - 6} bytes")
    if rtid != tid:
        raise ProtocolError(f"transaction id {rtid} (expected {tid})")
    if runit != unit:
        raise ProtocolError(f"unit id {runit} (expected {unit})")
    return adu[7:]


# ---- transports ------------------------------------------------------------
class _LinkLost(Exception):
    """The connection is gone or out of sync: close it and reopen."""


class _BadFrame(ProtocolError):
    """Bytes that are no valid answer (already counted by the transport)."""


class _Transport:
    """One open connection; ``exchange`` sends a request and returns the answer PDU."""

    #: exchange() itself never runs past its deadline (no outer guard timer needed)
    keeps_deadline = False

    def __init__(self, stats: LinkStats) -> None:
        self.stats = stats

    async def open(self, timeout_s: float) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def exchange(self, unit: int, req: Request, deadline: float) -> bytes:
        raise NotImplementedError


class _TcpProtocol(asyncio.Protocol):
    """Collects the console's bytes and wakes the waiting exchange once a whole MBAP
    frame (or a header no frame can have) is in, or the connection is gone."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.waiter: asyncio.Future[None] | None = None
        self.gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport of whatever event loop runs us (uvloop's is no subclass)
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is not None and not self.waiter.done() and self.frame_ready():
            self.waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)
        if not self.gone.done():
            self.gone.set_result(None)

    def frame_ready(self) -> bool:
        buf = self.buf
        if len(buf) < 7:
            return False
        length = _mbap_length(buf)
        return length is None or len(buf) >= 6 + length  # garbage: the exchange says so


def _mbap_length(head: bytearray) -> int | None:
    """The length field of the MBAP header at the start of ``head`` (7 bytes or more);
    None when no Modbus TCP frame can have that header."""
    length = head[4] << 8 | head[5]
    if head[2] or head[3] or not 2 <= length <= 254:
        return None
    return length


class _TcpTransport(_Transport):
    """Modbus TCP on an asyncio protocol: one timer per exchange and no stream layer
    (this runs twice per poll on the event loop)."""

    keeps_deadline = True  # the whole exchange runs under one timeout_at(deadline)

    def __init__(self, stats: LinkStats, host: str, port: int) -> None:
        super().__init__(stats)
        self.host, self.port = host, port
        self.proto: _TcpProtocol | None = None
        self.tid = random.randrange(1, 0x10000)

    async def open(self, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        _, proto = await asyncio.wait_for(
            loop.create_connection(_TcpProtocol, self.host, self.port), timeout_s
        )
        self.proto = proto

    async def close(self) -> None:
        proto, self.proto = self.proto, None
        if proto is not None and proto.transport is not None:
            proto.transport.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(proto.gone), 0.5)

    async def exchange(self, unit: int, req: Request, deadline: float) -> bytes:
        proto = self.proto
        if proto is None or proto.transport is None or proto.closed:
            raise _LinkLost("not connected")
        self.tid = self.tid % 0xFFFF + 1
        proto.transport.write(tcp_adu(self.tid, unit, req.pdu))
        if proto.transport.get_write_buffer_size() > 0x10000:
            raise _LinkLost("the console is not reading")
        buf = proto.buf
        try:
            async with asyncio.timeout_at(deadline):  # the only timer of the exchange
                while True:
                    if not proto.frame_ready():
                        if proto.closed:
                            if buf:
                                self.stats.bad_frames += 1
                            raise _LinkLost("connection closed by the console")
                        proto.waiter = asyncio.get_running_loop().create_future()
                        try:
                            await proto.waiter
                        finally:
                            proto.waiter = None
                        continue
                    length = _mbap_length(buf)
                    if length is None:
                        self.stats.bad_frames += 1
                        raise _LinkLost(f"garbage MBAP header {bytes(buf[:7]).hex()}")
                    frame = bytes(buf[: 6 + length])
                    del buf[: 6 + length]
                    try:
                        return decode_tcp_adu(frame, self.tid, unit)
                    except ProtocolError:
                        self.stats.bad_frames += 1  # stale answer or wrong unit: skip it
        except TimeoutError:
            if buf:
                self.stats.bad_frames += 1
                got = len(buf)
                buf.clear()
                what = "header only" if got == 7 else f"{got} bytes"
                raise _LinkLost(f"truncated frame ({what})") from None
            raise


class _RtuTransport(_Transport):
    def __init__(
        self, stats: LinkStats, port: str, baudrate: int, parity: str, stopbits: int
    ) -> None:
        super().__init__(stats)
        self.port, self.baudrate, self.parity, self.stopbits = port, baudrate, parity, stopbits
        bits = bits_per_char(parity, stopbits)
        self.gap_s = inter_frame_gap_s(baudrate, bits)
        # silence that ends a response: USB adapters deliver in 16 ms batches (pymodbus #880)
        self.silence_s = max(10 * self.gap_s, 0.03)
        self.serial: Any = None
        self.buf = bytearray()
        self.arrived = asyncio.Event()
        self.last_activity = 0.0
        self.lost: str | None = None

    async def open(self, timeout_s: float) -> None:
        import serial  # pyserial; imported here so TCP-only installs never touch it

        try:
            self.serial = serial.Serial(
                self.port,
                baudrate=self.baudrate,
                parity=self.parity,
                stopbits=self.stopbits,
                bytesize=8,
                timeout=0,
                write_timeout=timeout_s,
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise OSError(f"cannot open {self.port}: {exc}") from exc
        self.lost = None
        self.buf.clear()
        asyncio.get_running_loop().add_reader(self.serial.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = self.serial.read(4096)
        except Exception as exc:  # noqa: BLE001 - pyserial raises SerialException/OSError/TypeError
            self.lost = f"read failed: {exc}"
            asyncio.get_running_loop().remove_reader(self.serial.fileno())
            self.arrived.set()
            return
        if data:
            self.buf.extend(data)
            self.last_activity = time.monotonic()
            self.arrived.set()

    async def close(self) -> None:
        ser, self.serial = self.serial, None
        if ser is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(ser.fileno())
            with contextlib.suppress(Exception):
                ser.close()

    async def exchange(self, unit: int, req: Request, deadline: float) -> bytes:
        if self.serial is None or self.lost:
            raise _LinkLost(self.lost or "not open")
        # bus idle for the inter-frame gap; anything still arriving is a stale answer
        while True:
            idle = time.monotonic() - self.last_activity
            if idle >= self.gap_s:
                break
            await asyncio.sleep(self.gap_s - idle)
        if self.buf:
            self.stats.bad_frames += 1
            self.buf.clear()
        try:
            self.serial.write(rtu_frame(unit, req.pdu))
        except Exception as exc:
            raise _LinkLost(f"write failed: {exc}") from exc
        self.last_activity = time.monotonic()
        loop = asyncio.get_running_loop()
        while True:
            pdu, skipped = find_rtu_frame(bytes(self.buf), unit, req)
            if pdu is not None:
                if skipped:
                    self.stats.bad_frames += 1
                self.buf.clear()
                return pdu
            if self.lost:
                raise _LinkLost(self.lost)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            self.arrived.clear()
            wait = min(remaining, self.silence_s) if self.buf else remaining
            try:
                await asyncio.wait_for(self.arrived.wait(), wait)
            except TimeoutError:
                if self.buf:  # silence after bytes that are no valid answer
                    self.stats.bad_frames += 1
                    got = bytes(self.buf)
                    self.buf.clear()
                    raise _BadFrame(f"bad frame {got[:16].hex()}") from None


# ---- options ---------------------------------------------------------------
class _CommonOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    profile: str = "cryosim-8"
    unit_id: int | None = Field(default=None, ge=1, le=247)
    timeout_s: float = Field(default=0.2, gt=0, le=30)
    retries: int = Field(default=2, ge=0, le=10)
    reconnect_max_s: float = Field(default=2.0, gt=0, le=300)


class TcpOptions(_CommonOptions):
    host: str = Field(min_length=1)
    port: int = Field(default=502, ge=1, le=65535)


class RtuOptions(_CommonOptions):
    port: str = Field(min_length=1)
    baudrate: int = Field(default=115200, ge=300, le=4_000_000)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1


def _validate(model: type[BaseModel], options: Mapping[str, Any], source: str) -> Any:
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "<options>"
            lines.append(f"{source}.{key}: {err['msg']}")
        raise ValueError("\n".join(lines)) from exc


def _load_profile(name: str, source: str) -> Profile:
    try:
        return load_profile(name)
    except ProfileError as exc:
        raise ValueError(f"{source}.profile: {exc}") from exc


# ---- the driver --------------------------------------------------------------
class _Value(NamedTuple):
    """One measured register, resolved once for the poll path (see ``_reading``)."""

    reg: ResolvedRegister
    kind: int  # 0: uint16, 1: int16, 2: anything else (the generic decoder)
    scale: float
    sentinels: frozenset[int]
    unit: str
    lo: float  # outside [lo, hi] a value is QUESTIONABLE
    hi: float


class _ProbePlan(NamedTuple):
    probe: int
    tip: _Value
    ret: _Value
    tc_status: ResolvedRegister
    trip_cause: ResolvedRegister
    trip_time: ResolvedRegister
    status: ResolvedRegister
    freeze_bit: int | None
    thaw_bit: int | None
    armed_bit: int | None


# enum lookups without the Enum call machinery (16 per poll)
_TC_STATUS: dict[int, TcStatus] = {int(m): m for m in TcStatus}
_TRIP_CAUSE: dict[int, TripCause] = {int(m): m for m in TripCause}


def _value_plan(reg: ResolvedRegister, lo: float, hi: float) -> _Value:
    kind = {"uint16": 0, "int16": 1}.get(reg.spec.type, 2)
    spec = reg.spec
    return _Value(reg, kind, spec.scale, frozenset(spec.sentinels.values()), spec.unit, lo, hi)


class _ModbusDriver(Driver):
    """Everything but the transport: register map, decoding, confirmation, retries."""

    def __init__(
        self,
        profile: Profile,
        *,
        unit_id: int | None,
        timeout_s: float,
        retries: int,
        reconnect_max_s: float,
    ) -> None:
        self.profile = profile
        self.unit_id = unit_id if unit_id is not None else profile.modbus.unit_id
        self.timeout_s = timeout_s
        self.retries = retries
        self.reconnect_min_s = min(0.05, reconnect_max_s)
        self.reconnect_max_s = reconnect_max_s
        self._stats = LinkStats()
        self._lock = asyncio.Lock()
        self._transport: _Transport | None = None
        self._ever_connected = False
        self._failures = 0
        self._next_connect = 0.0
        self._seq = 0
        self._heartbeat = 0
        self._time_wraps = 0
        self._last_time_ms: int | None = None
        self._identity: Identity | None = None
        self._span = profile.snapshot_span()
        # resolved once: the poll path decodes ~70 registers 20+ times a second
        self._sregs = {n: profile.reg(n) for n in profile.registers}
        self._pregs = {
            (n, i): profile.probe_reg(n, i)
            for n in profile.probe_registers
            for i in range(1, profile.console.probes + 1)
        }
        self._span_requests = [Request.read("input", a, c) for a, c in self._span]
        cs, pr = profile.console, self._pregs
        self._probe_plans = tuple(
            _ProbePlan(
                probe=n,
                tip=_value_plan(pr["tip_c", n], cs.min_tip_c - 20.0, 80.0),
                ret=_value_plan(pr["return_kpa", n], 0.0, cs.supply_max_kpa),
                tc_status=pr["tc_status", n],
                trip_cause=pr["trip_cause", n],
                trip_time=pr["trip_time_ms", n],
                status=pr["probe_status", n],
                freeze_bit=pr["probe_status", n].spec.bits.get("freeze_open"),
                thaw_bit=pr["probe_status", n].spec.bits.get("thaw_on"),
                armed_bit=pr["probe_status", n].spec.bits.get("limits_armed"),
            )
            for n in range(1, cs.probes + 1)
        )
        sr = self._sregs
        self._supply_plan = _value_plan(sr["supply_kpa"], 0.0, 65000.0)
        self._cylinder_plan = _value_plan(sr["cylinder_kpa"], 0.0, 65000.0)
        self._skin_plan = (
            _value_plan(sr["skin_c"], -20.0, 60.0)
            if "skin_channel" in cs.capabilities and "skin_c" in sr
            else None
        )

    # ---- plumbing ----------------------------------------------------------
    @property
    def stats(self) -> LinkStats:
        return self._stats

    def _make_transport(self) -> _Transport:
        raise NotImplementedError

    def link_budget(self) -> LinkBudget:
        raise NotImplementedError

    def min_poll_period_s(self) -> float:
        return self.link_budget().period_s

    def check_poll_rate(self, rate_hz: float) -> None:
        """Raise ValueError naming the maximum when ``rate_hz`` is faster than the link allows."""
        check_poll_rate(rate_hz, self.link_budget())

    async def connect(self) -> None:
        async with self._lock:
            self._next_connect = 0.0
            await self._ensure_open()

    async def close(self) -> None:
        async with self._lock:
            await self._drop()

    async def _drop(self) -> None:
        transport, self._transport = self._transport, None
        self._stats.connected = False
        if transport is not None:
            await transport.close()

    def _backoff(self) -> None:
        self._failures += 1
        delay = min(self.reconnect_max_s, self.reconnect_min_s * 2 ** (self._failures - 1))
        self._next_connect = time.monotonic() + delay * random.uniform(0.5, 1.0)

    async def _ensure_open(self) -> None:
        if self._transport is not None:
            return
        wait = self._next_connect - time.monotonic()
        if wait > 0:
            raise LinkError(f"link down ({self._stats.last_error}); next reconnect in {wait:.2f} s")
        transport = self._make_transport()
        try:
            await transport.open(self.timeout_s)
        except (OSError, TimeoutError) as exc:
            await transport.close()
            self._stats.last_error = f"connect failed: {exc or type(exc).__name__}"
            self._backoff()
            raise LinkError(self._stats.last_error) from exc
        self._transport = transport
        self._stats.connected = True
        if self._ever_connected:
            self._stats.reconnects += 1
        self._ever_connected = True

    async def _transact(self, req: Request) -> list[int]:
        """One request under the bus lock, with deadline, bounded retries and reconnection."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            for attempt in range(self.retries + 1):
                if attempt:
                    self._stats.retries += 1
                await self._ensure_open()
                assert self._transport is not None
                transport = self._transport
                deadline = loop.time() + self.timeout_s
                try:
                    if transport.keeps_deadline:
                        pdu = await transport.exchange(self.unit_id, req, deadline)
                    else:
                        async with asyncio.timeout(self.timeout_s + 0.05):  # no extra task
                            pdu = await transport.exchange(self.unit_id, req, deadline)
                    words = parse_response(req, pdu)
                except _BadFrame as exc:
                    self._stats.last_error = str(exc)
                    continue
                except ModbusExceptionResponse:
                    self._stats.bad_frames += 1
                    self._stats.transactions += 1
                    self._failures = 0
                    raise
                except TimeoutError:
                    self._stats.timeouts += 1
                    self._stats.last_error = f"timeout after {self.timeout_s:g} s"
                    continue
                except ProtocolError as exc:
                    self._stats.bad_frames += 1
                    self._stats.last_error = f"bad frame: {exc}"
                    continue
                except (_LinkLost, OSError, ConnectionError) as exc:
                    self._stats.last_error = f"link lost: {exc}"
                    await self._drop()
                    self._backoff()
                    continue
                self._stats.transactions += 1
                self._failures = 0
                return words
            raise LinkError(
                f"no valid answer after {self.retries + 1} attempt(s): {self._stats.last_error}"
            )

    async def _read(self, table: str, address: int, count: int) -> list[int]:
        return await self._transact(Request.read(table, address, count))

    async def _read_regs(self, regs: list[ResolvedRegister]) -> dict[int, int]:
        """Read the given registers (one request per contiguous group)."""
        addrs = sorted({a for r in regs for a in range(r.address, r.address + r.count)})
        table = regs[0].table
        image: dict[int, int] = {}
        for start, count in _group(addrs, self.profile.modbus.max_block):
            for i, w in enumerate(await self._read(table, start, count)):
                image[start + i] = w
        return image

    def _raw(self, image: dict[int, int], reg: ResolvedRegister) -> int | str:
        words = [image[a] for a in range(reg.address, reg.address + reg.count)]
        return decode_words(reg.spec, words, self.profile.modbus.word_order)

    def _int(self, image: dict[int, int], reg: ResolvedRegister) -> int:
        kind = reg.spec.type
        if kind == "uint16":  # one word: the common case on the poll path
            return image[reg.address]
        if kind == "int16":
            word = image[reg.address]
            return word - 0x10000 if word >= 0x8000 else word
        raw = self._raw(image, reg)
        assert isinstance(raw, int)
        return raw

    def _bit(self, image: dict[int, int], reg: ResolvedRegister, name: str) -> bool:
        bit = reg.spec.bits.get(name)
        return bit is not None and bool(self._int(image, reg) >> bit & 1)

    async def _write(self, reg: ResolvedRegister, raw: int) -> None:
        """Write one register (range-checked, never clamped); refusals raise RejectedError."""
        words = encode_value(reg.spec, raw, self.profile.modbus.word_order)
        await self._write_words(reg.address, words, reg.name)

    async def _write_words(self, address: int, words: list[int], what: str) -> None:
        try:
            await self._transact(Request.write(address, words))
        except ModbusExceptionResponse as exc:
            raise RejectedError(f"console refused {what}: {await self._reason(exc)}") from exc

    async def _reason(self, exc: ModbusExceptionResponse) -> str:
        """Why the console refused: its exception code plus what its status shows."""
        text = str(exc).split(": ", 1)[-1]
        if exc.code != 4:
            return text
        try:
            image = await self._read_regs([self.profile.reg("status"), self.profile.reg("faults")])
        except DriverError:
            return text
        faults = [
            n
            for n in self.profile.registers["faults"].bits
            if self._bit(image, self.profile.reg("faults"), n)
        ]
        if faults:
            return f"{text}: faults latched: {', '.join(faults)}"
        if not self._bit(image, self.profile.reg("status"), "lease_armed"):
            return f"{text}: lease not armed"
        return text

    def _check_probe(self, probe: int) -> None:
        if not 1 <= probe <= self.profile.console.probes:
            raise ValueError(f"probe {probe} outside 1..{self.profile.console.probes}")

    # ---- identity ----------------------------------------------------------
    async def identify(self) -> Identity:
        p = self.profile
        names = ("model", "serial", "firmware", "probe_count", "gas", "capabilities")
        image = await self._read_regs([p.reg(n) for n in names])
        model = str(self._raw(image, p.reg("model")))
        probes = self._int(image, p.reg("probe_count"))
        if probes != p.console.probes:
            raise ProtocolError(
                f"console reports {probes} probes but profile {p.console.model} declares "
                f"{p.console.probes}: wrong profile for this console"
            )
        if model != p.console.model:
            raise ProtocolError(
                f"console reports model {model!r} but the profile is for {p.console.model!r}"
            )
        gas_raw = self._int(image, p.reg("gas"))
        gas = {v: k for k, v in p.registers["gas"].enum.items()}.get(gas_raw)
        if gas is None:
            raise ProtocolError(f"console reports unknown gas code {gas_raw}")
        caps_reg = p.reg("capabilities")
        caps = frozenset(n for n in caps_reg.spec.bits if self._bit(image, caps_reg, n))
        self._identity = Identity(
            model=model,
            serial=str(self._raw(image, p.reg("serial"))),
            firmware=str(self._raw(image, p.reg("firmware"))),
            probes=probes,
            gas=gas,
            capabilities=caps,
        )
        return self._identity

    # ---- snapshot ------------------------------------------------------------
    async def _read_image(self) -> tuple[dict[int, int], float, float]:
        image: dict[int, int] = {}
        for req in self._span_requests:
            for i, w in enumerate(await self._transact(req), start=req.address):
                image[i] = w
        return image, time.monotonic(), time.time()

    async def read_snapshot(self) -> Snapshot:
        image, t_mono, t_utc = await self._read_image()
        return self._decode_snapshot(image, t_mono, t_utc)

    def _reading(
        self, image: dict[int, int], v: _Value, t_mono: float, t_utc: float, invalid: bool = False
    ) -> Reading:
        kind = v.kind
        if kind == 0:
            raw = image[v.reg.address]
        elif kind == 1:
            word = image[v.reg.address]
            raw = word - 0x10000 if word >= 0x8000 else word
        else:
            raw = self._int(image, v.reg)
        if invalid or raw in v.sentinels:
            return Reading(None, v.unit, t_mono, t_utc, Validity.INVALID)
        value = round(raw * v.scale, 6)
        ok = v.lo <= value <= v.hi
        validity = Validity.VALID if ok else Validity.QUESTIONABLE
        return Reading(value, v.unit, t_mono, t_utc, validity)

    def _decode_snapshot(self, image: dict[int, int], t_mono: float, t_utc: float) -> Snapshot:
        """The register image as a Snapshot; registers resolved once (``_probe_plans``),
        since this runs on every poll."""
        sreg = self._sregs
        status, faults_reg = sreg["status"], sreg["faults"]
        time_ms = self._int(image, sreg["console_time_ms"])
        if self._last_time_ms is not None and time_ms < self._last_time_ms:
            self._time_wraps += 1
        self._last_time_ms = time_ms
        probes = []
        trips = []
        reading, as_int = self._reading, self._int
        for pp in self._probe_plans:
            n = pp.probe
            tc = _TC_STATUS.get(as_int(image, pp.tc_status))
            if tc is None:
                raise ProtocolError(f"probe {n}: unknown tc_status")
            trip = _TRIP_CAUSE.get(as_int(image, pp.trip_cause))
            if trip is None:
                raise ProtocolError(f"probe {n}: unknown trip_cause")
            if trip != TripCause.NONE:
                trip_ms = as_int(image, pp.trip_time)
                trips.append(LimitTrip(n, trip, trip_ms / 1000.0))
            word = as_int(image, pp.status)
            probes.append(
                ProbeState(  # positional, in field order: keywords cost a third more
                    n,
                    reading(image, pp.tip, t_mono, t_utc, tc is not TcStatus.OK),
                    reading(image, pp.ret, t_mono, t_utc),
                    tc,
                    pp.freeze_bit is not None and bool(word >> pp.freeze_bit & 1),
                    pp.thaw_bit is not None and bool(word >> pp.thaw_bit & 1),
                    pp.armed_bit is not None and bool(word >> pp.armed_bit & 1),
                    trip,
                )
            )
        skin = None if self._skin_plan is None else reading(image, self._skin_plan, t_mono, t_utc)
        faults = ConsoleFaults(
            lease_expired=self._bit(image, faults_reg, "lease_expired"),
            overpressure=self._bit(image, faults_reg, "overpressure"),
            console_limit=self._bit(image, faults_reg, "console_limit"),
            trips=tuple(trips),
        )
        self._seq += 1
        return Snapshot(
            seq=self._seq,
            t_mono=t_mono,
            t_utc=t_utc,
            console_time_s=(time_ms + self._time_wraps * 2**32) / 1000.0,
            supply_kpa=reading(image, self._supply_plan, t_mono, t_utc),
            cylinder_kpa=reading(image, self._cylinder_plan, t_mono, t_utc),
            skin_c=skin,
            master_open=self._bit(image, status, "master_open"),
            supply_low=self._bit(image, status, "supply_low"),
            lease=LeaseStatus(
                armed=self._bit(image, status, "lease_armed"),
                timeout_ms=as_int(image, sreg["lease_timeout_ms_rb"]),
                expired=faults.lease_expired,
                expiry_count=as_int(image, sreg["lease_expiry_count"]),
            ),
            faults=faults,
            probes=tuple(probes),
        )

    # ---- commands ---------------------------------------------------------------
    async def _confirm_bit(self, reg: ResolvedRegister, bit: str, want: bool, what: str) -> None:
        image = await self._read_regs([reg])
        if self._bit(image, reg, bit) != want:
            raise RejectedError(f"{what} not confirmed: console reports {bit}={not want}")

    async def set_freeze(self, probe: int, on: bool) -> None:
        self._check_probe(probe)
        await self._write(self.profile.probe_reg("freeze_cmd", probe), int(on))
        await self._confirm_bit(
            self.profile.probe_reg("probe_status", probe),
            "freeze_open",
            on,
            f"probe {probe} freeze {'open' if on else 'close'}",
        )

    async def set_thaw(self, probe: int, on: bool) -> None:
        self._check_probe(probe)
        await self._write(self.profile.probe_reg("thaw_cmd", probe), int(on))
        await self._confirm_bit(
            self.profile.probe_reg("probe_status", probe),
            "thaw_on",
            on,
            f"probe {probe} thaw {'on' if on else 'off'}",
        )

    async def set_master(self, on: bool) -> None:
        await self._write(self.profile.reg("master_cmd"), int(on))
        await self._confirm_bit(
            self.profile.reg("status"), "master_open", on, f"master {'open' if on else 'close'}"
        )

    async def arm_lease(self, timeout_ms: int) -> None:
        lo, hi = self.profile.console.lease_timeout_ms_range
        if timeout_ms != 0 and not lo <= timeout_ms <= hi:
            raise ValueError(f"lease timeout {timeout_ms} ms outside {lo}..{hi} (or 0 to disarm)")
        await self._write(self.profile.reg("lease_timeout_ms"), timeout_ms)
        rb = self.profile.reg("lease_timeout_ms_rb")
        got = self._int(await self._read_regs([rb]), rb)
        if got != timeout_ms:
            raise RejectedError(f"lease timeout not confirmed: wrote {timeout_ms}, reads {got}")

    async def renew_lease(self) -> None:
        self._heartbeat = (self._heartbeat + 1) & 0xFFFF
        await self._write(self.profile.reg("heartbeat"), self._heartbeat)

    async def read_faults(self) -> ConsoleFaults:
        image, t_mono, t_utc = await self._read_image()
        return self._decode_snapshot(image, t_mono, t_utc).faults

    async def reset_faults(self) -> None:
        await self._write(self.profile.reg("fault_reset"), 1)
        faults = await self.read_faults()
        if faults.any:
            raise RejectedError(f"faults still latched after reset: {', '.join(faults.names())}")

    async def write_limits(self, probe: int, limits: ConsoleLimits) -> None:
        self._check_probe(probe)
        p = self.profile
        if not p.has_console_limits:
            raise RejectedError(
                f"console {p.console.model} does not hold per-probe limits "
                "(profile lacks the console_limits capability)"
            )
        words: dict[int, int] = {}
        for reg_name, attr in _LIMIT_FIELDS:
            reg = p.probe_reg(reg_name, probe)
            raw = round(float(getattr(limits, attr)) / reg.spec.scale)
            for i, w in enumerate(encode_value(reg.spec, raw, p.modbus.word_order)):
                words[reg.address + i] = w
        for start, count in _group(sorted(words), 123):
            await self._write_words(
                start, [words[a] for a in range(start, start + count)], f"probe {probe} limits"
            )
        await self._write(p.probe_reg("limits_arm", probe), 1)
        held = await self.read_limits(probe)
        if held is None or not _same_limits(held, limits, p, probe):
            raise RejectedError(f"probe {probe} limits not confirmed: console holds {held}")

    async def read_limits(self, probe: int) -> ConsoleLimits | None:
        self._check_probe(probe)
        p = self.profile
        if not p.has_console_limits:
            return None
        regs = [p.probe_reg(n, probe) for n, _ in _LIMIT_FIELDS] + [
            p.probe_reg("limits_arm", probe)
        ]
        image = await self._read_regs(regs)
        if self._int(image, regs[-1]) != 1:
            return None
        values = {
            attr: round(self._int(image, r) * r.spec.scale, 6)
            for (_, attr), r in zip(_LIMIT_FIELDS, regs, strict=False)
        }
        try:
            return ConsoleLimits(
                max_on_time_s=values["max_on_time_s"],
                min_tip_c=values["min_tip_c"],
                max_supply_kpa=values["max_supply_kpa"],
                consecutive=int(values["consecutive"]),
            )
        except ValueError as exc:
            raise ProtocolError(f"probe {probe}: console holds invalid limits: {exc}") from exc


def _same_limits(a: ConsoleLimits, b: ConsoleLimits, p: Profile, probe: int) -> bool:
    for reg_name, attr in _LIMIT_FIELDS:
        tol = p.probe_reg(reg_name, probe).spec.scale / 2 + 1e-9
        if abs(float(getattr(a, attr)) - float(getattr(b, attr))) > tol:
            return False
    return True


def _group(addrs: list[int], max_block: int) -> list[tuple[int, int]]:
    """Contiguous runs of sorted addresses, each at most ``max_block`` long."""
    out: list[tuple[int, int]] = []
    for a in addrs:
        if out and a == out[-1][0] + out[-1][1] and out[-1][1] < max_block:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((a, 1))
    return out


class ModbusTcpDriver(_ModbusDriver):
    """A console on Modbus TCP."""

    name: ClassVar[str] = "modbus-tcp"

    def __init__(self, host: str, port: int = 502, *, profile: Profile, **kw: Any) -> None:
        super().__init__(profile, **kw)
        self.host, self.port = host, port

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], *, source: str = "<config>"
    ) -> ModbusTcpDriver:
        o: TcpOptions = _validate(TcpOptions, options, source)
        return cls(
            o.host,
            o.port,
            profile=_load_profile(o.profile, source),
            unit_id=o.unit_id,
            timeout_s=o.timeout_s,
            retries=o.retries,
            reconnect_max_s=o.reconnect_max_s,
        )

    def _make_transport(self) -> _Transport:
        return _TcpTransport(self._stats, self.host, self.port)

    def link_budget(self) -> LinkBudget:
        return snapshot_budget_tcp()


class ModbusRtuDriver(_ModbusDriver):
    """A console on Modbus RTU over a serial line."""

    name: ClassVar[str] = "modbus-rtu"

    def __init__(
        self,
        port: str,
        baudrate: int = 115200,
        parity: str = "N",
        stopbits: int = 1,
        *,
        profile: Profile,
        **kw: Any,
    ) -> None:
        super().__init__(profile, **kw)
        self.port, self.baudrate, self.parity, self.stopbits = port, baudrate, parity, stopbits

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], *, source: str = "<config>"
    ) -> ModbusRtuDriver:
        o: RtuOptions = _validate(RtuOptions, options, source)
        return cls(
            o.port,
            o.baudrate,
            o.parity,
            o.stopbits,
            profile=_load_profile(o.profile, source),
            unit_id=o.unit_id,
            timeout_s=o.timeout_s,
            retries=o.retries,
            reconnect_max_s=o.reconnect_max_s,
        )

    def _make_transport(self) -> _Transport:
        return _RtuTransport(self._stats, self.port, self.baudrate, self.parity, self.stopbits)

    def link_budget(self) -> LinkBudget:
        return snapshot_budget_rtu(self._span, self.baudrate, self.parity, self.stopbits)
