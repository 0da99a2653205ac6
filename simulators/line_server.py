"""The simulator's end of the cryod serial line protocol, over a pseudo-terminal.

Translates frames (docs/line-protocol.md, codec in ``cryod.drivers.lineproto``)
into ``SimConsole`` calls and pushes TEL telemetry frames at the configured
rate. It never touches physics. Every bad input gets a NAK and is counted,
never an exception: a console that crashes on line noise is not a console.
The comms faults (``comms-silent``, ``comms-corrupt``, ``comms-slow``,
``disconnect``) are implemented here, at the transport, where a real cable
or UART would misbehave.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import Callable, Mapping
from typing import Any

from cryod.drivers.base import ConsoleLimits, TcStatus
from cryod.drivers.lineproto import (
    PROTOCOL_VERSION,
    Frame,
    FrameError,
    LineSplitter,
    ProbeTel,
    SeqCounter,
    Telemetry,
    encode,
    fmt_fixed,
    fmt_num,
    parse_bool,
    parse_float,
    parse_int,
)

from .console import CommandRejected, SimConsole
from .pty import PtyLink, open_link

__all__ = ["DEFAULT_RATE_HZ", "MAX_RATE_HZ", "MIN_RATE_HZ", "LineServer", "serve_line"]

TRANSPORT = "line"
DEFAULT_RATE_HZ = 10
MIN_RATE_HZ = 1
MAX_RATE_HZ = 200
#: pending output kept while the host is not reading; telemetry beyond it is dropped
OUT_CAP_BYTES = 16384
#: refusals that mean "the request was wrong" (counted as bad requests);
#: state refusals (lease_disarmed, fault_latched, cause_present) are not
BAD_REQUEST_CODES = frozenset(
    {
        "bad_frame",
        "too_long",
        "bad_checksum",
        "bad_syntax",
        "unknown_command",
        "out_of_range",
        "bad_probe",
        "limits_invalid",
        "read_only",
    }
)


class _Nak(Exception):
    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(message or code)
        self.code = code
        self.message = message


class _Params:
    """Strict access to a command's fields: unknown or missing keys are bad_syntax."""

    def __init__(self, frame: Frame, keys: set[str], args: set[str] | None = None) -> None:
        extra = [k for k, _ in frame.fields if k not in keys]
        if extra:
            raise _Nak("bad_syntax", f"unexpected field {extra[0]}")
        bad_args = [a for a in frame.args if a not in (args or set())]
        if bad_args:
            raise _Nak("bad_syntax", f"unexpected word {bad_args[0]}")
        self._fields = frame.field_map()
        self.args = frame.args

    def has(self, key: str) -> bool:
        return key in self._fields

    def _raw(self, key: str) -> str:
        value = self._fields.get(key)
        if value is None:
            raise _Nak("bad_syntax", f"missing field {key}")
        return value

    def _parse(self, key: str, parse: Callable[[str], Any]) -> Any:
        try:
            return parse(self._raw(key))
        except ValueError as exc:
            raise _Nak("bad_syntax", f"{key}: {exc}") from None

    def int(self, key: str, lo: int, hi: int, code: str = "out_of_range") -> int:
        value: int = self._parse(key, parse_int)
        if not lo <= value <= hi:
            raise _Nak(code, f"{key}={value} outside {lo}..{hi}")
        return value

    def float(self, key: str) -> float:
        value: float = self._parse(key, parse_float)
        return value

    def bool(self, key: str) -> bool:
        raw = self._raw(key)
        if raw not in ("0", "1"):
            if raw.lstrip("-").isdigit():
                raise _Nak("out_of_range", f"{key}={raw} is not 0 or 1")
            raise _Nak("bad_syntax", f"{key}={raw} is not 0 or 1")
        return parse_bool(raw)


def _clean(text: str) -> list[str]:
    """A NAK message as protocol words (no '=', '$', '*', control characters)."""
    safe = "".join(c if 0x21 <= ord(c) <= 0x7E and c not in "$*=" else " " for c in text)
    return safe.split()[:12]


class LineServer:
    """One console behind one pty. Not thread-safe: one asyncio loop."""

    def __init__(self, console: SimConsole, link: PtyLink) -> None:
        self._console = console
        self._link = link
        self._fd = link.master_fd
        self._splitter = LineSplitter()
        self._seq = SeqCounter()
        self._rate_hz = DEFAULT_RATE_HZ
        self._telemetry_on = False
        self._open = False
        self._cut = False  # disconnect in force
        self._out = bytearray()
        self._writer = False
        self._timers: set[asyncio.TimerHandle] = set()
        self._last: tuple[int, str, tuple[str, list[str], dict[str, str]]] | None = None
        self._rng = random.Random(console.serial)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rate_changed = asyncio.Event()
        self.frames_in = 0
        self.frames_out = 0
        self.dropped_out = 0
        self._handlers: dict[str, Callable[[Frame], dict[str, str]]] = {
            "HELLO": self._hello,
            "IDENT": self._ident,
            "LEASE": self._lease,
            "BEAT": self._beat,
            "FREEZE": self._freeze,
            "THAW": self._thaw,
            "MASTER": self._master,
            "RESET": self._reset,
            "FAULTS?": self._faults,
            "LIMITS": self._limits,
            "LIMITS?": self._limits_q,
            "RATE": self._rate,
            "SNAP?": self._snap,
        }

    @property
    def rate_hz(self) -> int:
        return self._rate_hz

    # ---- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._fd, self._on_readable)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
            if self._writer:
                self._loop.remove_writer(self._fd)
                self._writer = False
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        self._set_open(False, "server stopped")

    async def run(self) -> None:
        """Push telemetry at the configured rate until cancelled."""
        loop = asyncio.get_running_loop()
        next_t = loop.time()
        while True:
            period = 1.0 / self._rate_hz
            next_t += period
            self._rate_changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_t - loop.time())):
                    await self._rate_changed.wait()
                    next_t = loop.time()  # new rate: send now, then at the new period
            if loop.time() - next_t > period:  # stalled: skip, do not burst
                next_t = loop.time()
            faults = self._comms()
            if self._telemetry_on and not faults.keys() & {"comms-silent", "disconnect"}:
                self._send("TEL", fields=self._telemetry().to_fields(), droppable=True)

    # ---- input -------------------------------------------------------------
    def _comms(self) -> dict[str, float | None]:
        faults = self._console.comms_faults()
        cut = "disconnect" in faults
        if cut and not self._cut:
            self._cut = True
            self._splitter = LineSplitter(bad=self._splitter.bad, frames=self._splitter.frames)
            self._out.clear()
            self._set_open(False, "disconnect")
        elif not cut and self._cut:
            self._cut = False
        return faults

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            return  # no client end open: nothing to read
        faults = self._comms()
        if not data or faults.keys() & {"comms-silent", "disconnect"}:
            return  # the wire is cut, or the console reads and ignores
        for item in self._splitter.feed(data):
            if isinstance(item, FrameError):
                self._refuse(item.seq, item.code, item.detail)
            else:
                self._handle(item)

    def _handle(self, frame: Frame) -> None:
        self.frames_in += 1
        self._set_open(True, frame.verb)
        if self._last is not None and self._last[0] == frame.seq and self._last[1] == frame.body():
            # the host repeated its last frame with the same seq: answer, do not execute again
            verb, args, fields = self._last[2]
            self._send(verb, args, fields)
            return
        handler = self._handlers.get(frame.verb)
        try:
            if handler is None:
                raise _Nak("unknown_command", f"unknown command {frame.verb}")
            fields = handler(frame)
        except _Nak as exc:
            self._refuse(frame.seq, exc.code, exc.message)
            return
        except CommandRejected as exc:
            self._refuse(frame.seq, exc.code, str(exc))
            return
        reply = ("ACK", [str(frame.seq)], fields)
        self._last = (frame.seq, frame.body(), reply)
        self._send("ACK", [str(frame.seq)], fields)

    def _refuse(self, seq: int | None, code: str, message: str = "") -> None:
        if code in BAD_REQUEST_CODES:
            self._console.count_bad_request(transport=TRANSPORT, reason=code)
        ref = "-" if seq is None else str(seq)
        self._send("NAK", [ref, code, *_clean(message)])

    def _set_open(self, is_open: bool, why: str) -> None:
        if is_open == self._open:
            return
        self._open = is_open
        self._console.log_event(
            "connection",
            transport=TRANSPORT,
            state="opened" if is_open else "closed",
            peer=str(self._link.path),
            reason=why,
        )

    # ---- output ------------------------------------------------------------
    def _send(
        self,
        verb: str,
        args: list[str] | tuple[str, ...] = (),
        fields: Mapping[str, str] | None = None,
        *,
        droppable: bool = False,
    ) -> None:
        faults = self._comms()
        if faults.keys() & {"comms-silent", "disconnect"}:
            return
        data = encode(Frame.make(self._seq.next(), verb, args, fields))
        if "comms-corrupt" in faults:
            data = self._corrupt(data, faults["comms-corrupt"])
        delay_ms = faults.get("comms-slow") if "comms-slow" in faults else None
        if delay_ms and self._loop is not None:
            self._later(delay_ms / 1000.0, data, droppable)
        else:
            self._write(data, droppable)

    def _later(self, delay_s: float, data: bytes, droppable: bool) -> None:
        assert self._loop is not None
        handles: list[asyncio.TimerHandle] = []

        def fire() -> None:
            self._timers.discard(handles[0])
            if not self._cut:
                self._write(data, droppable)

        handles.append(self._loop.call_later(delay_s, fire))
        self._timers.add(handles[0])

    def _corrupt(self, data: bytes, value: float | None) -> bytes:
        """Damage a frame (probability ``value`` if 0 < value < 1, else always)."""
        if value is not None and 0 < value < 1 and self._rng.random() >= value:
            return data
        mode = self._rng.choice(("checksum", "garbage", "truncate"))
        if mode == "checksum":
            star = data.rfind(b"*")
            digit = data[star + 1 : star + 2]
            other = b"0" if digit != b"0" else b"1"
            return data[: star + 1] + other + data[star + 2 :]
        if mode == "garbage":
            junk = bytes(self._rng.choice(b"#%&@!~^0123456789abcXYZ\x00\x7f\xff") for _ in range(4))
            at = self._rng.randrange(1, len(data) - 2)
            return data[:at] + junk + data[at:]
        cut = self._rng.randrange(2, len(data) - 2)
        return data[:cut] + b"\r\n"

    def _write(self, data: bytes, droppable: bool) -> None:
        if self._out:
            if droppable and len(self._out) > OUT_CAP_BYTES:
                self.dropped_out += 1
                return
            self._out += data
            return
        try:
            n = os.write(self._fd, data)
        except BlockingIOError:
            n = 0
        except OSError:
            self.dropped_out += 1
            return
        self.frames_out += 1
        if n < len(data):
            self._out += data[n:]
            if self._loop is not None and not self._writer:
                self._loop.add_writer(self._fd, self._on_writable)
                self._writer = True

    def _on_writable(self) -> None:
        try:
            n = os.write(self._fd, bytes(self._out))
        except BlockingIOError:
            return
        except OSError:
            n = len(self._out)
        del self._out[:n]
        if not self._out and self._loop is not None:
            self._loop.remove_writer(self._fd)
            self._writer = False

    # ---- telemetry -----------------------------------------------------------
    def _telemetry(self) -> Telemetry:
        c = self._console
        faults = c.faults()
        probes = []
        for n in range(1, c.profile.console.probes + 1):
            r = c.probe(n)
            tc = r.tc_status if r.tip_c is not None or r.tc_status != TcStatus.OK else TcStatus.OPEN
            probes.append(
                ProbeTel(
                    tip_c=r.tip_c if tc == TcStatus.OK else None,
                    tc_status=tc,
                    return_kpa=r.return_kpa,
                    freeze_open=r.freeze_open,
                    thaw_on=r.thaw_on,
                    limits_armed=r.limits_armed,
                    trip=r.trip,
                    trip_time_s=r.trip_time_s,
                )
            )
        return Telemetry(
            console_time_s=c.now_s,
            lease_armed=c.lease_armed(),
            master_open=c.master_open(),
            supply_low=c.supply_low(),
            helium_ok=c.helium_ok(),
            lease_expired="lease_expired" in faults,
            overpressure="overpressure" in faults,
            console_limit="console_limit" in faults,
            supply_kpa=c.supply_kpa(),
            cylinder_kpa=c.cylinder_kpa(),
            skin_present="skin_channel" in c.profile.console.capabilities,
            skin_c=c.skin_c(),
            lease_timeout_ms=c.lease_timeout_ms(),
            lease_remaining_ms=c.lease_remaining_ms(),
            lease_expiry_count=c.lease_expiry_count(),
            probes=tuple(probes),
        )

    # ---- commands --------------------------------------------------------------
    def _probe_no(self, params: _Params) -> int:
        return params.int("p", 1, self._console.profile.console.probes, code="bad_probe")

    def _identity(self) -> dict[str, str]:
        spec = self._console.profile.console
        return {
            "proto": str(PROTOCOL_VERSION),
            "model": spec.model,
            "serial": self._console.serial,
            "fw": spec.firmware or "unknown",
            "probes": str(spec.probes),
            "gas": spec.gas,
            "caps": ",".join(spec.capabilities) or "none",
            "rate": str(self._rate_hz),
            "max_line": "1024",
        }

    def _hello(self, frame: Frame) -> dict[str, str]:
        _Params(frame, set())
        self._telemetry_on = True
        return self._identity()

    def _ident(self, frame: Frame) -> dict[str, str]:
        _Params(frame, set())
        return self._identity()

    def _lease(self, frame: Frame) -> dict[str, str]:
        p = _Params(frame, {"ms"})
        self._console.set_lease_timeout(p.int("ms", 0, 65535))
        return self._lease_fields()

    def _lease_fields(self) -> dict[str, str]:
        c = self._console
        return {"ms": str(c.lease_timeout_ms()), "rem": str(c.lease_remaining_ms())}

    def _beat(self, frame: Frame) -> dict[str, str]:
        _Params(frame, set())
        self._console.renew_lease()
        return self._lease_fields()

    def _freeze(self, frame: Frame) -> dict[str, str]:
        p = _Params(frame, {"p", "on"})
        n, on = self._probe_no(p), p.bool("on")
        self._console.set_freeze(n, on)
        return {"p": str(n), "on": "1" if self._console.probe(n).freeze_open else "0"}

    def _thaw(self, frame: Frame) -> dict[str, str]:
        p = _Params(frame, {"p", "on"})
        n, on = self._probe_no(p), p.bool("on")
        self._console.set_thaw(n, on)
        return {"p": str(n), "on": "1" if self._console.probe(n).thaw_on else "0"}

    def _master(self, frame: Frame) -> dict[str, str]:
        p = _Params(frame, {"on"})
        self._console.set_master(p.bool("on"))
        return {"on": "1" if self._console.master_open() else "0"}

    def _fault_fields(self) -> dict[str, str]:
        tel = self._telemetry()
        out = {"fl": tel.to_fields()["fl"], "lx": str(tel.lease_expiry_count)}
        for n, probe in enumerate(tel.probes, start=1):
            if probe.trip:
                out[f"p{n}"] = f"{probe.trip.name.lower()},{fmt_fixed(probe.trip_time_s, 3)}"
        return out

    def _reset(self, frame: Frame) -> dict[str, str]:
        _Params(frame, set())
        self._console.reset_faults()
        return self._fault_fields()

    def _faults(self, frame: Frame) -> dict[str, str]:
        _Params(frame, set())
        return self._fault_fields()

    def _limit_fields(self, n: int) -> dict[str, str]:
        lim = self._console.limits(n)
        if lim is None:
            return {"p": str(n), "armed": "0"}
        return {
            "p": str(n),
            "armed": "1",
            "on_s": fmt_num(lim.max_on_time_s),
            "min_c": fmt_num(lim.min_tip_c),
            "max_kpa": fmt_num(lim.max_supply_kpa),
            "n": str(lim.consecutive),
        }

    def _limits(self, frame: Frame) -> dict[str, str]:
        if frame.args == ("off",):
            p = _Params(frame, {"p"}, {"off"})
            n = self._probe_no(p)
            self._console.arm_limits(n, False)
            return self._limit_fields(n)
        p = _Params(frame, {"p", "on_s", "min_c", "max_kpa", "n"})
        n = self._probe_no(p)
        try:
            limits = ConsoleLimits(
                max_on_time_s=p.float("on_s"),
                min_tip_c=p.float("min_c"),
                max_supply_kpa=p.float("max_kpa"),
                consecutive=p.int("n", 1, 100, code="limits_invalid"),
            )
        except ValueError as exc:
            raise _Nak("limits_invalid", str(exc)) from None
        self._console.set_limits(n, limits)
        return self._limit_fields(n)

    def _limits_q(self, frame: Frame) -> dict[str, str]:
        p = _Params(frame, {"p"})
        return self._limit_fields(self._probe_no(p))

    def _rate(self, frame: Frame) -> dict[str, str]:
        p = _Params(frame, {"hz"})
        self._rate_hz = p.int("hz", MIN_RATE_HZ, MAX_RATE_HZ)
        self._rate_changed.set()
        return {"hz": str(self._rate_hz)}

    def _snap(self, frame: Frame) -> dict[str, str]:
        _Params(frame, set())
        return self._telemetry().to_fields()


async def serve_line(
    console: SimConsole, link_path: str, ready: asyncio.Event | None = None
) -> None:
    """Serve the line protocol on a pty whose client end is symlinked at
    ``link_path``, until cancelled; removes the symlink and closes the pty."""
    link = open_link(link_path)
    server = LineServer(console, link)
    try:
        server.start()
        if ready is not None:
            ready.set()
        await server.run()
    finally:
        server.stop()
        with contextlib.suppress(OSError):
            link.close()
