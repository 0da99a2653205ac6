"""Modbus links: TCP and RTU transports, and the link that runs transactions on them.

Why our own transport instead of pymodbus's client: the client hides bad
frames (it drops them and waits), has had loops that never time out on
garbage (pymodbus #2960) and uncaught errors on malformed frames (#2698,
#2556). Here every byte that arrives goes through the pure checks of
``codec``, and ``ModbusLink.transact`` holds the bus lock, gives each attempt
a deadline, retries a bounded number of times and reopens a lost link with
the drivers' one back-off rule (``drivers/backoff.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from typing import cast

from ..backoff import Backoff, BackoffPolicy
from ..base import LinkError, LinkStats, ProtocolError
from ..linkmath import bits_per_char, inter_frame_gap_s
from ..serial_port import SerialPort
from .codec import (
    ModbusExceptionResponse,
    Request,
    decode_tcp_adu,
    find_rtu_frame,
    mbap_length,
    parse_response,
    rtu_frame,
    tcp_adu,
)

__all__ = ["ModbusLink", "RtuTransport", "TcpTransport", "Transport"]

#: longest wait before the first reconnect attempt
RECONNECT_FIRST_S = 0.05
#: bytes one RTU read drains at most before yielding to the loop
_RTU_READ_BYTES = 4096


class LinkLost(Exception):
    """The connection is gone or out of sync: close it and reopen."""


class BadFrame(ProtocolError):
    """Bytes that are no valid answer (already counted by the transport)."""


class Transport:
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


# ---- Modbus TCP -------------------------------------------------------------------
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
        length = mbap_length(buf)
        return length is None or len(buf) >= 6 + length  # garbage: the exchange says so


class TcpTransport(Transport):
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
        async with asyncio.timeout(timeout_s):
            _, proto = await loop.create_connection(_TcpProtocol, self.host, self.port)
        self.proto = proto

    async def close(self) -> None:
        proto, self.proto = self.proto, None
        if proto is not None and proto.transport is not None:
            proto.transport.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(0.5):
                    await asyncio.shield(proto.gone)

    async def exchange(self, unit: int, req: Request, deadline: float) -> bytes:
        proto = self.proto
        if proto is None or proto.transport is None or proto.closed:
            raise LinkLost("not connected")
        self.tid = self.tid % 0xFFFF + 1
        proto.transport.write(tcp_adu(self.tid, unit, req.pdu))
        if proto.transport.get_write_buffer_size() > 0x10000:
            raise LinkLost("the console is not reading")
        buf = proto.buf
        try:
            async with asyncio.timeout_at(deadline):  # the only timer of the exchange
                while True:
                    if not proto.frame_ready():
                        if proto.closed:
                            if buf:
                                self.stats.bad_frames += 1
                            raise LinkLost("connection closed by the console")
                        proto.waiter = asyncio.get_running_loop().create_future()
                        try:
                            await proto.waiter
                        finally:
                            proto.waiter = None
                        continue
                    length = mbap_length(buf)
                    if length is None:
                        self.stats.bad_frames += 1
                        raise LinkLost(f"garbage MBAP header {bytes(buf[:7]).hex()}")
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
                raise LinkLost(f"truncated frame ({what})") from None
            raise


# ---- Modbus RTU -------------------------------------------------------------------
class RtuTransport(Transport):
    """Modbus RTU on a serial port: the bus is idle for the inter-frame gap before a
    request, and an answer ends with silence."""

    def __init__(
        self, stats: LinkStats, port: str, baudrate: int, parity: str, stopbits: int
    ) -> None:
        super().__init__(stats)
        self.port, self.baudrate, self.parity, self.stopbits = port, baudrate, parity, stopbits
        bits = bits_per_char(parity, stopbits)
        self.gap_s = inter_frame_gap_s(baudrate, bits)
        # silence that ends a response: USB adapters deliver in 16 ms batches (pymodbus #880)
        self.silence_s = max(10 * self.gap_s, 0.03)
        self.serial: SerialPort | None = None
        self.buf = bytearray()
        self.arrived = asyncio.Event()
        self.last_activity = 0.0
        self.lost: str | None = None

    async def open(self, timeout_s: float) -> None:
        self.serial = SerialPort(
            self.port, baudrate=self.baudrate, parity=self.parity, stopbits=self.stopbits
        )
        self.lost = None
        self.buf.clear()
        asyncio.get_running_loop().add_reader(self.serial.fd, self._on_readable)

    def _on_readable(self) -> None:
        ser = self.serial
        if ser is None:
            return
        try:
            data = ser.read_ready(_RTU_READ_BYTES)
        except OSError as exc:
            self.lost = f"read failed: {exc}"
            asyncio.get_running_loop().remove_reader(ser.fd)
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
                asyncio.get_running_loop().remove_reader(ser.fd)
            ser.close()

    async def exchange(self, unit: int, req: Request, deadline: float) -> bytes:
        ser = self.serial
        if ser is None or self.lost:
            raise LinkLost(self.lost or "not open")
        # bus idle for the inter-frame gap; anything still arriving is a stale answer
        while True:
            idle = time.monotonic() - self.last_activity
            if idle >= self.gap_s:
                break
            await asyncio.sleep(self.gap_s - idle)
        if self.buf:
            self.stats.bad_frames += 1
            self.buf.clear()
        frame = rtu_frame(unit, req.pdu)
        try:
            written = ser.write(frame)
        except OSError as exc:
            raise LinkLost(f"write failed: {exc}") from exc
        if written != len(frame):
            raise LinkLost(f"output blocked ({written}/{len(frame)} bytes written)")
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
                raise LinkLost(self.lost)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            self.arrived.clear()
            wait = min(remaining, self.silence_s) if self.buf else remaining
            try:
                async with asyncio.timeout(wait):
                    await self.arrived.wait()
            except TimeoutError:
                if self.buf:  # silence after bytes that are no valid answer
                    self.stats.bad_frames += 1
                    got = bytes(self.buf)
                    self.buf.clear()
                    raise BadFrame(f"bad frame {got[:16].hex()}") from None


# ---- the link ---------------------------------------------------------------------
class ModbusLink:
    """Transactions with one console: under the bus lock, each attempt with a deadline,
    a bounded number of retries, and a lost link reopened after a back-off."""

    def __init__(
        self,
        make_transport: Callable[[LinkStats], Transport],
        *,
        unit_id: int,
        timeout_s: float,
        retries: int,
        reconnect_max_s: float,
    ) -> None:
        self.unit_id = unit_id
        self.timeout_s = timeout_s
        self.retries = retries
        self.stats = LinkStats()
        self._make_transport = make_transport
        self._lock = asyncio.Lock()
        self._transport: Transport | None = None
        self._ever_connected = False
        self._backoff = Backoff(
            policy=BackoffPolicy(
                first_s=min(RECONNECT_FIRST_S, reconnect_max_s), max_s=reconnect_max_s
            )
        )
        self._next_connect = 0.0

    async def connect(self) -> None:
        """Open the link now (an explicit connect does not wait out a back-off)."""
        async with self._lock:
            self._next_connect = 0.0
            await self._ensure_open()

    async def close(self) -> None:
        async with self._lock:
            await self._drop()

    async def _drop(self) -> None:
        transport, self._transport = self._transport, None
        self.stats.connected = False
        if transport is not None:
            await transport.close()

    def _failed(self) -> None:
        self._next_connect = time.monotonic() + self._backoff.failed()

    def _succeeded(self) -> None:
        self._backoff.succeeded()

    async def _ensure_open(self) -> Transport:
        if self._transport is not None:
            return self._transport
        wait = self._next_connect - time.monotonic()
        if wait > 0:
            raise LinkError(f"link down ({self.stats.last_error}); next reconnect in {wait:.2f} s")
        transport = self._make_transport(self.stats)
        try:
            await transport.open(self.timeout_s)
        except (OSError, TimeoutError) as exc:
            await transport.close()
            self.stats.last_error = f"connect failed: {exc or type(exc).__name__}"
            self._failed()
            raise LinkError(self.stats.last_error) from exc
        self._transport = transport
        self.stats.connected = True
        if self._ever_connected:
            self.stats.reconnects += 1
        self._ever_connected = True
        return transport

    async def transact(self, req: Request) -> list[int]:
        """One request: the registers read (or [] for a write). Raises
        ModbusExceptionResponse when the console refuses it, LinkError when no
        valid answer came after the retries."""
        stats = self.stats
        async with self._lock:
            loop = asyncio.get_running_loop()
            for attempt in range(self.retries + 1):
                if attempt:
                    stats.retries += 1
                transport = await self._ensure_open()
                deadline = loop.time() + self.timeout_s
                try:
                    if transport.keeps_deadline:
                        pdu = await transport.exchange(self.unit_id, req, deadline)
                    else:
                        async with asyncio.timeout(self.timeout_s + 0.05):  # no extra task
                            pdu = await transport.exchange(self.unit_id, req, deadline)
                    words = parse_response(req, pdu)
                except BadFrame as exc:
                    stats.last_error = str(exc)
                    continue
                except ModbusExceptionResponse:
                    stats.bad_frames += 1
                    stats.transactions += 1
                    self._succeeded()
                    raise
                except TimeoutError:
                    stats.timeouts += 1
                    stats.last_error = f"timeout after {self.timeout_s:g} s"
                    continue
                except ProtocolError as exc:
                    stats.bad_frames += 1
                    stats.last_error = f"bad frame: {exc}"
                    continue
                except (LinkLost, OSError, ConnectionError) as exc:
                    stats.last_error = f"link lost: {exc}"
                    await self._drop()
                    self._failed()
                    continue
                stats.transactions += 1
                self._succeeded()
                return words
            raise LinkError(
                f"no valid answer after {self.retries + 1} attempt(s): {stats.last_error}"
            )
