"""The ``serial-line`` driver: the cryod line protocol over a serial port.

One owner per bus: the port is read by one reader callback on the event loop
(``loop.add_reader`` on the pyserial file descriptor) and written only by the
command path, one command in flight at a time. The reader splits lines,
verifies checksums, counts bad frames and gaps in the console's sequence
numbers, routes ACK/NAK to the waiting command by sequence number and keeps
the latest TEL frame with its reception time.

Stale data is never returned: ``read_snapshot`` hands out a TEL frame only
once, only if the console clock moved on, and only while it is younger than
two telemetry periods; and it measures the link's round trip (a ``SNAP?``
request) at least once a second, so a link that delivers telemetry late is
caught. Every command has a timeout and bounded retries; a retry carries a
new sequence number, which is safe because every command sets a state
(``FREEZE p=1 on=1``), it never toggles one. A vanished port is reopened with
the drivers' back-off rule (``drivers/backoff.py``). The port itself is a
``SerialPort`` (``drivers/serial_port.py``, the one module that imports pyserial).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cryod.common.validation import problem_lines

from . import linkmath
from .backoff import Backoff, BackoffPolicy
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
from .lineproto import (
    FRAME_ERROR_CODES,
    Frame,
    FrameError,
    LineSplitter,
    SeqCounter,
    Telemetry,
    encode,
    fmt_num,
    parse_float,
    parse_int,
    seq_gap,
    telemetry_max_len,
)
from .serial_port import SerialPort

__all__ = ["LineRejectedError", "SerialLineDriver", "SerialLineOptions"]

#: share of the console-to-host bandwidth kept free for ACK/NAK replies
REPLY_RESERVE = 0.2
#: probe count assumed before the console has identified itself
ASSUMED_PROBES = 8
#: a TEL frame is fresh for this many telemetry periods
FRESH_PERIODS = 2.0
#: measure the round trip at least this often (catches a link that delivers late)
RTT_PROBE_INTERVAL_S = 1.0
#: no TEL for this long: say HELLO again (the console may have restarted)
RESYNC_AFTER_S = 1.0
#: most bytes the reader drains in one go before yielding to the loop
MAX_BATCH_BYTES = 65536
#: reopening a vanished port: the longest wait after the first failure, and ever
RECONNECT_BACKOFF = BackoffPolicy(first_s=0.05, max_s=5.0)
LIMIT_TOLERANCE = 5e-4
#: commands that change console state a snapshot must reflect once acknowledged
_STATE_WRITES = frozenset({"LEASE", "FREEZE", "THAW", "MASTER", "RESET", "LIMITS"})
_TRIP_NAMES = {c.name.lower(): c for c in TripCause}


class SerialLineOptions(BaseModel):
    """Driver options from the daemon config (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    port: str = Field(min_length=1, description="serial device, e.g. /dev/ttyUSB0")
    baudrate: int = Field(default=115200, ge=300, le=4_000_000)
    telemetry_hz: int = Field(default=20, ge=1, le=200)
    timeout_s: float = Field(default=0.2, gt=0, le=10)
    retries: int = Field(default=2, ge=0, le=10)


class LineRejectedError(RejectedError):
    """The console answered NAK; ``code`` is the protocol's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class _Tel:
    tel: Telemetry
    t_mono: float
    t_utc: float
    #: False when it arrived in a backlog or a bad frame followed it: its age is unknown
    trusted: bool = True


def link_budget(baudrate: int, probes: int, skin: bool = True) -> linkmath.LinkBudget:
    """Shortest telemetry period: the longest TEL frame at 10 bits/char (8N1),
    with REPLY_RESERVE of the bandwidth kept for command replies."""
    bits = linkmath.bits_per_char("N", 1, 8)
    frame_bytes = telemetry_max_len(probes, skin)
    wire_s = frame_bytes * linkmath.char_time_s(baudrate, bits)
    period = wire_s / (1.0 - REPLY_RESERVE)
    desc = (
        f"line protocol at {baudrate} baud 8N1 ({bits:g} bits/char): TEL frame up to "
        f"{frame_bytes} bytes for {probes} probes = {wire_s * 1000:.2f} ms, "
        f"{REPLY_RESERVE:.0%} kept for replies"
    )
    return linkmath.LinkBudget(period, desc)


class SerialLineDriver(Driver):
    """A console speaking the cryod line protocol on a serial port (or a pty)."""

    name: ClassVar[str] = "serial-line"

    def __init__(self, options: SerialLineOptions) -> None:
        self._opts = options
        self._stats = LinkStats()
        self._port: SerialPort | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._splitter = LineSplitter()
        self._seq = SeqCounter(random.randrange(65536))
        self._pending: dict[int, asyncio.Future[Frame]] = {}
        self._in_flight: int | None = None
        self._cmd_lock = asyncio.Lock()
        self._tel_event = asyncio.Event()
        self._latest: _Tel | None = None
        self._last_read_mono = 0.0
        self._last_write_ack = 0.0  # snapshots never predate a confirmed write
        self._last_console_t = -1.0
        self._snap_seq = 0
        self._rx_seq: int | None = None
        self._identity: Identity | None = None
        self._rtt_ok_until = 0.0
        self._last_resync = 0.0
        self._closing = False
        self._reconnect_task: asyncio.Task[None] | None = None
        #: console frames lost in transit (gaps in the console's sequence numbers)
        self.seq_gaps = 0
        #: batches holding several TEL frames (the host fell behind)
        self.backlogs = 0
        #: replies that arrived after their command timed out
        self.late_replies = 0
        #: recent command round trips, seconds
        self.rtts: deque[float] = deque(maxlen=512)
        #: recent TEL inter-arrival times, seconds
        self.tel_intervals: deque[float] = deque(maxlen=512)

    # ---- construction ----------------------------------------------------------
    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], *, source: str = "<config>"
    ) -> SerialLineDriver:
        try:
            opts = SerialLineOptions.model_validate(dict(options))
        except ValidationError as exc:
            raise ValueError("\n".join(problem_lines(exc, None, prefix=source))) from None
        driver = cls(opts)
        try:
            driver.check_poll_rate(opts.telemetry_hz)
        except ValueError as exc:
            raise ValueError(f"{source}.telemetry_hz: {exc}") from None
        return driver

    @property
    def options(self) -> SerialLineOptions:
        return self._opts

    @property
    def stats(self) -> LinkStats:
        return self._stats

    def _probes(self) -> int:
        return self._identity.probes if self._identity else ASSUMED_PROBES

    def min_poll_period_s(self) -> float:
        return link_budget(self._opts.baudrate, self._probes()).period_s

    def check_poll_rate(self, hz: float) -> None:
        """Raise ValueError naming the maximum when the link cannot carry ``hz``."""
        linkmath.check_poll_rate(hz, link_budget(self._opts.baudrate, self._probes()))

    @property
    def max_age_s(self) -> float:
        """Oldest telemetry read_snapshot hands out."""
        return FRESH_PERIODS / self._opts.telemetry_hz

    # ---- port ownership ----------------------------------------------------------
    def _open_port(self) -> None:
        self._loop = asyncio.get_running_loop()
        port = SerialPort(self._opts.port, baudrate=self._opts.baudrate)
        try:
            self._loop.add_reader(port.fd, self._on_readable)
        except OSError:
            port.close()
            raise
        self._port = port
        self._splitter = LineSplitter()
        self._rx_seq = None
        self._stats.connected = True

    def _close_port(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            if self._loop is not None:
                self._loop.remove_reader(port.fd)
            port.close()
        self._stats.connected = False
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(LinkError("serial port closed"))

    def _port_lost(self, reason: str) -> None:
        self._stats.last_error = f"port lost: {reason}"
        self._close_port()
        if not self._closing and (self._reconnect_task is None or self._reconnect_task.done()):
            assert self._loop is not None
            self._reconnect_task = self._loop.create_task(
                self._reconnect(), name=f"serial-line reconnect {self._opts.port}"
            )

    async def _reconnect(self) -> None:
        """Reopen the port after a back-off (``RECONNECT_BACKOFF``), then say HELLO;
        never give up while not closing."""
        backoff = Backoff(policy=RECONNECT_BACKOFF)
        while not self._closing:
            await asyncio.sleep(backoff.failed())
            try:
                self._open_port()
            except OSError as exc:
                self._stats.last_error = f"reopen {self._opts.port}: {exc}"
                continue
            self._stats.reconnects += 1
            try:
                await self._handshake()
            except DriverError as exc:
                # the port opened but no console answered (e.g. it is still starting):
                # close it and try again after the next back-off
                self._stats.last_error = f"handshake after reopen: {exc}"
                self._close_port()
                continue
            return

    async def connect(self) -> None:
        self._closing = False
        if self._port is None:
            try:
                self._open_port()
            except OSError as exc:
                self._stats.last_error = str(exc)
                raise LinkError(str(exc)) from exc
        try:
            await self._handshake()
        except DriverError:
            self._close_port()
            raise

    async def close(self) -> None:
        self._closing = True
        task, self._reconnect_task = self._reconnect_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._close_port()

    async def _handshake(self) -> None:
        await self.identify(hello=True)
        try:
            self.check_poll_rate(self._opts.telemetry_hz)
        except ValueError as exc:
            raise DriverError(f"{self._opts.port}: telemetry_hz: {exc}") from None
        reply = await self._command("RATE", hz=self._opts.telemetry_hz)
        if reply.get("hz") != str(self._opts.telemetry_hz):
            raise ProtocolError(f"RATE not confirmed: {reply.body()}")
        self._last_resync = time.monotonic()

    # ---- reading ---------------------------------------------------------------------
    def _on_readable(self) -> None:
        """Drain what the port holds now and process it as one batch.

        Reception time is only an honest age for a frame that arrived on its
        own: several TEL frames in one batch mean the host fell behind (a
        stalled loop), so even the newest may be old; a bad frame after a TEL
        means the link broke after it. Such a TEL is kept for counting but
        never handed out as fresh.
        """
        port = self._port
        if port is None:
            return
        try:
            data = port.read_ready(MAX_BATCH_BYTES)
        except OSError as exc:
            self._port_lost(str(exc))
            return
        if not data:
            return
        now, utc = time.monotonic(), time.time()
        tels = 0
        for item in self._splitter.feed(data):
            if isinstance(item, FrameError):
                self._bad(f"{item.code}: {item.detail}")
                self._distrust()
            else:
                tels += 1 if item.verb == "TEL" else 0
                self._on_frame(item, now, utc)
        if tels > 1:
            self.backlogs += 1
            self._distrust()

    def _distrust(self) -> None:
        if self._latest is not None and self._latest.trusted:
            self._latest = replace(self._latest, trusted=False)

    def _bad(self, why: str) -> None:
        self._stats.bad_frames += 1
        self._stats.last_error = f"bad frame: {why}"

    def _on_frame(self, frame: Frame, now: float, utc: float) -> None:
        self.seq_gaps += seq_gap(self._rx_seq, frame.seq)
        self._rx_seq = frame.seq
        if frame.verb == "TEL":
            try:
                tel = Telemetry.from_fields(frame.field_map())
            except ValueError as exc:
                self._bad(str(exc))
                return
            if self._latest is not None:
                self.tel_intervals.append(now - self._latest.t_mono)
            self._latest = _Tel(tel, now, utc)
            self._tel_event.set()
            return
        if frame.verb not in ("ACK", "NAK") or not frame.args:
            self._bad(f"unexpected frame {frame.verb}")
            return
        ref = frame.args[0]
        if ref == "-":  # the console could not read a frame: if it was ours, retry now
            target = self._in_flight
        else:
            try:
                target = parse_int(ref)
            except ValueError:
                self._bad(f"bad reference {ref!r}")
                return
        fut = self._pending.get(target) if target is not None else None
        if fut is None or fut.done():
            self.late_replies += 1
            return
        fut.set_result(frame)

    # ---- commands --------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        port = self._port
        if port is None:
            raise LinkError(f"{self._opts.port} is not open")
        try:
            n = port.write(data)
        except OSError as exc:
            self._port_lost(str(exc))
            raise LinkError(f"write to {self._opts.port}: {exc}") from exc
        if n != len(data):
            raise LinkError(f"{self._opts.port}: output blocked ({n}/{len(data)} bytes written)")

    async def _command(self, verb: str, *args: str, **fields: object) -> Frame:
        """Send one command and return its ACK; NAK raises LineRejectedError,
        no valid answer after the retries raises LinkError."""
        if self._port is None:
            raise LinkError(f"{self._opts.port} is not open (reconnecting)")
        loop = asyncio.get_running_loop()
        attempts = self._opts.retries + 1
        async with self._cmd_lock:
            last = "no answer"
            for attempt in range(attempts):
                if attempt:
                    self._stats.retries += 1
                seq = self._seq.next()
                fut: asyncio.Future[Frame] = loop.create_future()
                self._pending[seq] = fut
                self._in_flight = seq
                t0 = time.monotonic()
                try:
                    self._write(encode(Frame.make(seq, verb, args, fields)))
                    async with asyncio.timeout(self._opts.timeout_s):
                        reply = await fut
                except TimeoutError:
                    self._stats.timeouts += 1
                    self._rtt_ok_until = 0.0
                    last = f"no answer within {self._opts.timeout_s * 1000:.0f} ms"
                    continue
                finally:
                    self._pending.pop(seq, None)
                    self._in_flight = None
                    if fut.done() and not fut.cancelled():
                        fut.exception()  # retrieved: no "never retrieved" warning

                rtt = time.monotonic() - t0
                self._stats.transactions += 1
                if reply.verb == "NAK":
                    code = reply.args[1] if len(reply.args) > 1 else "unknown"
                    message = " ".join(reply.args[2:])
                    if code in FRAME_ERROR_CODES:  # our frame arrived damaged: send again
                        last = f"console could not read the frame ({code})"
                        continue
                    self._note_rtt(rtt)
                    raise LineRejectedError(code, f"{verb} refused by console: {code} {message}")
                self._note_rtt(rtt)
                if verb in _STATE_WRITES:
                    self._last_write_ack = time.monotonic()
                return reply
        self._stats.last_error = f"{verb}: {last} after {attempts} attempts"
        raise LinkError(f"{self._opts.port}: {verb}: {last} after {attempts} attempt(s)")

    def _note_rtt(self, rtt: float) -> None:
        self.rtts.append(rtt)
        if rtt <= self.max_age_s:
            self._rtt_ok_until = time.monotonic() + RTT_PROBE_INTERVAL_S
        else:
            self._rtt_ok_until = 0.0

    def rtt_p50_s(self) -> float | None:
        return statistics.median(self.rtts) if self.rtts else None

    # ---- identity ----------------------------------------------------------------------
    async def identify(self, *, hello: bool = False) -> Identity:
        reply = await self._command("HELLO" if hello else "IDENT")
        try:
            caps = reply.get("caps") or "none"
            ident = Identity(
                model=_need(reply, "model"),
                serial=_need(reply, "serial"),
                firmware=_need(reply, "fw"),
                probes=parse_int(_need(reply, "probes")),
                gas=_need(reply, "gas"),
                capabilities=frozenset() if caps == "none" else frozenset(caps.split(",")),
            )
        except ValueError as exc:
            self._bad(str(exc))
            raise ProtocolError(f"bad identity reply: {exc}") from None
        if not 1 <= ident.probes <= 99:
            raise ProtocolError(f"console reports {ident.probes} probes")
        self._identity = ident
        return ident

    # ---- snapshot ------------------------------------------------------------------------
    async def read_snapshot(self) -> Snapshot:
        if self._port is None:
            raise LinkError(f"{self._opts.port} is not open (reconnecting)")
        if time.monotonic() >= self._rtt_ok_until:
            snap = await self._snapshot_by_request()
            if snap is not None:
                return snap
        now = time.monotonic()
        deadline = now + self.max_age_s
        while True:
            latest = self._latest
            now = time.monotonic()
            if (
                latest is not None
                and latest.trusted
                and latest.t_mono > max(self._last_read_mono, self._last_write_ack)
                and latest.tel.console_time_s > self._last_console_t
                and now - latest.t_mono <= self.max_age_s
            ):
                return self._accept(latest.tel, latest.t_mono, latest.t_utc)
            if now >= deadline:
                break
            self._tel_event.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(deadline - now):
                    await self._tel_event.wait()
        age = "none yet" if latest is None else f"last {1000 * (now - latest.t_mono):.0f} ms ago"
        msg = f"{self._opts.port}: no fresh telemetry within {self.max_age_s * 1000:.0f} ms ({age})"
        self._stats.last_error = msg
        if latest is None or now - latest.t_mono > RESYNC_AFTER_S:
            self._rtt_ok_until = 0.0  # next read asks explicitly (and says HELLO again)
        raise LinkError(msg)

    async def _snapshot_by_request(self) -> Snapshot | None:
        """Ask with SNAP? (measures the round trip); resync telemetry when it stopped.
        None when the console's clock has not moved on since the last snapshot."""
        now = time.monotonic()
        latest = self._latest
        if (latest is None or now - latest.t_mono > RESYNC_AFTER_S) and (
            now - self._last_resync > RESYNC_AFTER_S
        ):
            self._last_resync = now
            await self._handshake()
        t0 = time.monotonic()
        reply = await self._command("SNAP?")
        t1 = time.monotonic()
        if t1 - t0 > self.max_age_s:
            raise LinkError(
                f"{self._opts.port}: round trip {1000 * (t1 - t0):.0f} ms exceeds the "
                f"{self.max_age_s * 1000:.0f} ms freshness bound"
            )
        try:
            tel = Telemetry.from_fields(reply.field_map())
        except ValueError as exc:
            self._bad(str(exc))
            raise ProtocolError(f"bad SNAP? reply: {exc}") from None
        if tel.console_time_s <= self._last_console_t:
            return None  # same console sample as last time: wait for the next TEL
        mid = (t0 + t1) / 2.0
        return self._accept(tel, mid, time.time() - (t1 - mid))

    def _accept(self, tel: Telemetry, t_mono: float, t_utc: float) -> Snapshot:
        if tel.console_time_s <= self._last_console_t:
            raise LinkError("console clock did not advance: refusing repeated data")
        if self._identity is not None and len(tel.probes) != self._identity.probes:
            raise ProtocolError(
                f"telemetry has {len(tel.probes)} probes, console said {self._identity.probes}"
            )
        self._last_read_mono = time.monotonic()
        self._last_console_t = tel.console_time_s
        self._snap_seq += 1
        return _snapshot(self._snap_seq, tel, t_mono, t_utc)

    # ---- outputs ---------------------------------------------------------------------------
    async def _set(self, verb: str, probe: int | None, on: bool) -> None:
        fields: dict[str, object] = {} if probe is None else {"p": probe}
        fields["on"] = int(on)
        reply = await self._command(verb, **fields)
        if reply.get("on") != str(int(on)) or (probe is not None and reply.get("p") != str(probe)):
            raise ProtocolError(f"{verb} not confirmed: sent {fields}, console said {reply.body()}")

    async def set_freeze(self, probe: int, on: bool) -> None:
        await self._set("FREEZE", probe, on)

    async def set_thaw(self, probe: int, on: bool) -> None:
        await self._set("THAW", probe, on)

    async def set_master(self, on: bool) -> None:
        await self._set("MASTER", None, on)

    async def arm_lease(self, timeout_ms: int) -> None:
        reply = await self._command("LEASE", ms=int(timeout_ms))
        if reply.get("ms") != str(int(timeout_ms)):
            raise ProtocolError(f"LEASE not confirmed: asked {timeout_ms} ms, {reply.body()}")

    async def renew_lease(self) -> None:
        await self._command("BEAT")

    async def read_faults(self) -> ConsoleFaults:
        return self._faults(await self._command("FAULTS?"))

    async def reset_faults(self) -> None:
        await self._command("RESET")

    def _faults(self, reply: Frame) -> ConsoleFaults:
        try:
            fl = int(_need(reply, "fl"), 16)
            trips = []
            for key, value in reply.fields:
                if key.startswith("p") and key[1:].isdigit():
                    name, _, t = value.partition(",")
                    trips.append(LimitTrip(int(key[1:]), _TRIP_NAMES[name], parse_float(t)))
        except (ValueError, KeyError) as exc:
            self._bad(f"FAULTS? reply: {exc}")
            raise ProtocolError(f"bad FAULTS? reply: {reply.body()}") from None
        return ConsoleFaults(
            lease_expired=bool(fl & 1),
            overpressure=bool(fl & 2),
            console_limit=bool(fl & 4),
            trips=tuple(trips),
        )

    async def write_limits(self, probe: int, limits: ConsoleLimits) -> None:
        reply = await self._command(
            "LIMITS",
            p=probe,
            on_s=fmt_num(limits.max_on_time_s),
            min_c=fmt_num(limits.min_tip_c),
            max_kpa=fmt_num(limits.max_supply_kpa),
            n=limits.consecutive,
        )
        held = self._limits(reply, probe)
        if held is None or not _same_limits(held, limits):
            raise ProtocolError(
                f"probe {probe}: console did not confirm the limits (sent {limits}, holds {held})"
            )

    async def read_limits(self, probe: int) -> ConsoleLimits | None:
        return self._limits(await self._command("LIMITS?", p=probe), probe)

    async def disarm_limits(self, probe: int) -> None:
        reply = await self._command("LIMITS", "off", p=probe)
        if self._limits(reply, probe) is not None:
            raise ProtocolError(f"probe {probe}: limits still armed after LIMITS off")

    def _limits(self, reply: Frame, probe: int) -> ConsoleLimits | None:
        try:
            if reply.get("p") != str(probe):
                raise ValueError(f"reply is about probe {reply.get('p')}")
            if _need(reply, "armed") == "0":
                return None
            return ConsoleLimits(
                max_on_time_s=parse_float(_need(reply, "on_s")),
                min_tip_c=parse_float(_need(reply, "min_c")),
                max_supply_kpa=parse_float(_need(reply, "max_kpa")),
                consecutive=parse_int(_need(reply, "n")),
            )
        except ValueError as exc:
            self._bad(f"LIMITS reply: {exc}")
            raise ProtocolError(f"bad LIMITS reply: {reply.body()} ({exc})") from None


def _need(frame: Frame, key: str) -> str:
    value = frame.get(key)
    if value is None:
        raise ValueError(f"field {key} missing")
    return value


def _same_limits(a: ConsoleLimits, b: ConsoleLimits) -> bool:
    return (
        abs(a.max_on_time_s - b.max_on_time_s) <= LIMIT_TOLERANCE
        and abs(a.min_tip_c - b.min_tip_c) <= LIMIT_TOLERANCE
        and abs(a.max_supply_kpa - b.max_supply_kpa) <= LIMIT_TOLERANCE
        and a.consecutive == b.consecutive
    )


def _snapshot(seq: int, tel: Telemetry, t_mono: float, t_utc: float) -> Snapshot:
    def reading(value: float | None, unit: str) -> Reading:
        validity = Validity.VALID if value is not None else Validity.INVALID
        return Reading(value, unit, t_mono, t_utc, validity)

    probes = tuple(
        ProbeState(
            probe=n,
            tip_c=reading(p.tip_c if p.tc_status == TcStatus.OK else None, "degC"),
            return_kpa=reading(p.return_kpa, "kPa"),
            tc_status=p.tc_status,
            freeze_open=p.freeze_open,
            thaw_on=p.thaw_on,
            limits_armed=p.limits_armed,
            trip=p.trip,
        )
        for n, p in enumerate(tel.probes, start=1)
    )
    trips = tuple(
        LimitTrip(n, p.trip, p.trip_time_s)
        for n, p in enumerate(tel.probes, start=1)
        if p.trip != TripCause.NONE
    )
    return Snapshot(
        seq=seq,
        t_mono=t_mono,
        t_utc=t_utc,
        console_time_s=tel.console_time_s,
        supply_kpa=reading(tel.supply_kpa, "kPa"),
        cylinder_kpa=reading(tel.cylinder_kpa, "kPa"),
        skin_c=reading(tel.skin_c, "degC") if tel.skin_present else None,
        master_open=tel.master_open,
        supply_low=tel.supply_low,
        lease=LeaseStatus(
            armed=tel.lease_armed,
            timeout_ms=tel.lease_timeout_ms,
            expired=tel.lease_expired,
            expiry_count=tel.lease_expiry_count,
        ),
        faults=ConsoleFaults(
            lease_expired=tel.lease_expired,
            overpressure=tel.overpressure,
            console_limit=tel.console_limit,
            trips=trips,
        ),
        probes=probes,
    )
