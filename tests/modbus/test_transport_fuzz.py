"""The driver's real TCP transport against a console that answers with mutated frames.

A raw server stands in for the console: it answers the first request of each
example with a hypothesis-mutated frame and later ones correctly, so the
driver must reject the bad frame, count it, and recover by retrying.
"""

from __future__ import annotations

import asyncio
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cryod.drivers.base import DriverError, LinkError, ProtocolError, Snapshot
from cryod.drivers.modbus import ModbusTcpDriver

Mutation = tuple[str, int, int, bytes]

mutations = st.one_of(
    st.tuples(st.just("flip_header"), st.integers(0, 8), st.integers(1, 255), st.just(b"")),
    st.tuples(st.just("flip_data"), st.integers(9, 10_000), st.integers(1, 255), st.just(b"")),
    st.tuples(st.just("truncate"), st.integers(0, 10_000), st.just(0), st.just(b"")),
    st.tuples(st.just("prefix"), st.just(0), st.just(0), st.binary(min_size=1, max_size=30)),
    st.tuples(st.just("replace"), st.just(0), st.just(0), st.binary(min_size=1, max_size=300)),
)


def answer(request: bytes) -> bytes:
    tid, _pid, _length, unit = struct.unpack(">HHHB", request[:7])
    fc = request[7]
    if fc in (3, 4):
        count = struct.unpack(">H", request[10:12])[0]
        pdu = bytes([fc, 2 * count]) + bytes(2 * count)
    else:
        pdu = request[7:12]
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def mutate(frame: bytes, m: Mutation) -> bytes:
    kind, a, b, extra = m
    if kind in ("flip_header", "flip_data"):
        i = a if kind == "flip_header" else 9 + a % (len(frame) - 9)
        return frame[:i] + bytes([frame[i] ^ b]) + frame[i + 1 :]
    if kind == "truncate":
        return frame[: a % len(frame)]
    if kind == "prefix":
        return extra + frame
    return extra


async def scenario(m: Mutation) -> tuple[object, int, int]:
    served = 0

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        try:
            while True:
                head = await reader.readexactly(7)
                body = await reader.readexactly(struct.unpack(">H", head[4:6])[0] - 1)
                frame = answer(head + body)
                writer.write(mutate(frame, m) if served == 0 else frame)
                served += 1
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    driver = ModbusTcpDriver.from_options(
        {
            "host": "127.0.0.1",
            "port": port,
            "timeout_s": 0.05,
            "retries": 1,
            "reconnect_max_s": 0.01,
        }
    )
    result: object
    try:
        await driver.connect()
        try:
            result = await asyncio.wait_for(driver.read_snapshot(), 2.0)
        except DriverError as exc:
            result = exc
    finally:
        await driver.close()
        server.close()
        await server.wait_closed()
    return result, driver.stats.bad_frames, driver.stats.timeouts


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations)
def test_mutated_answers_rejected_and_counted(m: Mutation) -> None:
    result, bad_frames, timeouts = asyncio.run(scenario(m))
    assert isinstance(result, Snapshot | LinkError | ProtocolError), result
    kind, a, _b, _extra = m
    if kind in ("flip_header", "prefix") or (kind == "truncate" and a % 199 > 0):
        # a frame that is not the answer is counted
        assert bad_frames >= 1, (m, bad_frames)
    if kind == "truncate" and a % 199 == 0:
        assert timeouts >= 1  # nothing came back at all: a timeout, not a bad frame
    if kind == "replace":  # random bytes are no answer: counted, or silence to the deadline
        assert bad_frames + timeouts >= 1
    if kind == "flip_data":
        # TCP carries no checksum: flipped data decodes, or fails as a ProtocolError
        assert isinstance(result, Snapshot | ProtocolError)
    if isinstance(result, Snapshot):
        assert result.seq == 1
