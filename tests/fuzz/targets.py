"""Fuzz targets shared by the CI-sized pytest run and the atheris harness.

Each target feeds bytes through one driver's real decoding chain and returns
"ok" (a frame the decoder accepted) or "bad" (a frame it rejected with its
documented error, i.e. one the driver counts in ``LinkStats.bad_frames``). Any
other exception escaping is a bug: it would kill the poll loop instead of
being counted.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

from cryod.drivers.base import ProtocolError, TcStatus, TripCause
from cryod.drivers.lineproto import (
    Frame,
    FrameError,
    LineSplitter,
    ProbeTel,
    Telemetry,
    decode,
    encode,
)
from cryod.drivers.modbus import (
    Request,
    decode_tcp_adu,
    find_rtu_frame,
    parse_response,
    rtu_frame,
    tcp_adu,
)

__all__ = ["TARGETS", "mutate", "valid_frames"]

UNIT = 1
TID = 0x1234
REQUESTS = [
    Request.read("input", 0, 40),
    Request.read("holding", 100, 8),
    Request.read("input", 200, 125),
    Request.write(10, [1]),
    Request.write(20, [1, 2, 3, 4]),
]


def _answer(req: Request, rng: random.Random) -> bytes:
    if req.function_code in (3, 4):
        words = [rng.randrange(0x10000) for _ in range(req.count)]
        return bytes([req.function_code, 2 * req.count]) + struct.pack(f">{req.count}H", *words)
    if req.function_code == 6:
        return req.pdu
    return req.pdu[:5]


def modbus_rtu(data: bytes, req: Request) -> str:
    pdu, _skipped = find_rtu_frame(data, UNIT, req)
    if pdu is None:
        return "bad"  # no answer in these bytes: the driver times out and counts it
    try:
        parse_response(req, pdu)
    except ProtocolError:
        return "bad"
    return "ok"


def modbus_tcp(data: bytes, req: Request) -> str:
    try:
        parse_response(req, decode_tcp_adu(data, TID, UNIT))
    except ProtocolError:
        return "bad"
    return "ok"


def line(data: bytes, _req: Request | None = None) -> str:
    """One line through ``decode`` and, for TEL frames, ``Telemetry.from_fields``."""
    try:
        frame = decode(data)
        if frame.verb == "TEL":
            Telemetry.from_fields(frame.field_map())
    except (FrameError, ValueError):
        return "bad"
    return "ok"


def line_stream(data: bytes, _req: Request | None = None) -> str:
    """A byte stream through the splitter: every item out is a frame or a counted error."""
    sp = LineSplitter()
    out = sp.feed(data)
    errors = sum(isinstance(x, FrameError) for x in out)
    if errors != sp.bad or len(out) - errors != sp.frames:
        raise AssertionError(f"splitter miscounted: {sp.bad} bad, {sp.frames} frames, {out}")
    return "bad" if errors else "ok"


TARGETS: dict[str, Callable[[bytes, Request], str]] = {
    "modbus_rtu": modbus_rtu,
    "modbus_tcp": modbus_tcp,
    "line": line,
    "line_stream": line_stream,
}


def _tel(rng: random.Random) -> bytes:
    probes = tuple(
        ProbeTel(
            tip_c=round(rng.uniform(-190, 40), 1),
            tc_status=TcStatus.OK,
            return_kpa=round(rng.uniform(0, 500), 1),
            freeze_open=rng.random() < 0.5,
            thaw_on=False,
            limits_armed=True,
            trip=TripCause.NONE,
            trip_time_s=0.0,
        )
        for _ in range(rng.randint(1, 8))
    )
    tel = Telemetry(
        console_time_s=round(rng.uniform(0, 1e5), 3),
        lease_armed=True,
        master_open=rng.random() < 0.5,
        supply_low=False,
        helium_ok=True,
        lease_expired=False,
        overpressure=False,
        console_limit=False,
        supply_kpa=float(rng.randint(20000, 31000)),
        cylinder_kpa=float(rng.randint(0, 60000)),
        skin_present=True,
        skin_c=round(rng.uniform(28, 37), 1),
        lease_timeout_ms=1000,
        lease_remaining_ms=rng.randint(0, 1000),
        lease_expiry_count=0,
        probes=probes,
    )
    return encode(Frame.make(rng.randrange(65536), "TEL", fields=tel.to_fields()))


def valid_frames(target: str, rng: random.Random) -> tuple[bytes, Request]:
    """A frame the target accepts, and the request it answers."""
    req = rng.choice(REQUESTS)
    if target == "modbus_rtu":
        return rtu_frame(UNIT, _answer(req, rng)), req
    if target == "modbus_tcp":
        return tcp_adu(TID, UNIT, _answer(req, rng)), req
    if target == "line":
        return _tel(rng), req
    return b"".join(_tel(rng) for _ in range(rng.randint(1, 3))), req


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to four random edits: bit flips, byte changes, inserts, deletes, cuts, splices."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif op == 2:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3 and buf:
            del buf[pos : pos + rng.randint(1, 8)]
        elif op == 4:
            del buf[pos:]  # truncated
        elif op == 5:
            buf[pos:pos] = rng.choice([b"$", b"*", b"\r\n", b"\n", b"=", b" ", b"\x00", b"\xff"])
        elif op == 6 and buf:
            i = rng.randrange(len(buf))
            buf[i:i] = buf[i : i + rng.randint(1, 16)]  # duplicated run
        else:
            buf += bytes(rng.randrange(256) for _ in range(rng.randint(1, 300)))  # oversized
    return bytes(buf)
