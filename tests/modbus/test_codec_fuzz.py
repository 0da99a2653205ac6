"""Property tests of the frame decoders: random and mutated frames.

No exception but ProtocolError escapes the driver's decoders, and a
corrupted frame is never accepted as the answer.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cryod.drivers.base import ProtocolError
from cryod.drivers.modbus.codec import (
    ModbusExceptionResponse,
    Request,
    crc16,
    decode_tcp_adu,
    find_rtu_frame,
    parse_response,
    rtu_frame,
    rtu_request_size,
    tcp_adu,
)
from cryod.drivers.profile import load_profile
from cryod.simulators.console import SimConsole
from cryod.simulators.modbus_server import _Handler

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

requests = st.one_of(
    st.builds(
        Request.read,
        st.sampled_from(["input", "holding"]),
        st.integers(0, 600),
        st.integers(1, 125),
    ),
    st.builds(
        lambda a, ws: Request.write(a, ws),
        st.integers(0, 200),
        st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=8),
    ),
)


def valid_response(req: Request, words: list[int]) -> bytes:
    if req.function_code in (3, 4):
        return bytes([req.function_code, 2 * req.count]) + b"".join(
            struct.pack(">H", w) for w in words[: req.count]
        )
    if req.function_code == 6:
        return req.pdu
    return req.pdu[:5]


@FUZZ
@given(requests, st.binary(max_size=260))
def test_random_pdu_only_protocol_error(req: Request, pdu: bytes) -> None:
    try:
        words = parse_response(req, pdu)
    except ProtocolError:
        return
    # accepted: it must be exactly a well-formed answer to this request
    assert pdu[0] == req.function_code
    if req.function_code in (3, 4):
        assert len(words) == req.count
        assert pdu == valid_response(req, words)


@FUZZ
@given(requests, st.lists(st.integers(0, 0xFFFF), min_size=125, max_size=125))
def test_valid_pdu_round_trips(req: Request, words: list[int]) -> None:
    got = parse_response(req, valid_response(req, words))
    assert got == (words[: req.count] if req.function_code in (3, 4) else [])


@FUZZ
@given(requests, st.integers(1, 11))
def test_exception_answers_are_reported(req: Request, code: int) -> None:
    with pytest.raises(ModbusExceptionResponse) as info:
        parse_response(req, bytes([req.function_code | 0x80, code]))
    assert info.value.code == code


mutations = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("unit"), st.integers(0, 255), st.just(0)),
    st.tuples(st.just("function"), st.integers(0, 255), st.just(0)),
)


def mutate(frame: bytes, how: tuple[str, int, int]) -> bytes:
    kind, a, b = how
    if kind == "flip":
        i = a % len(frame)
        return frame[:i] + bytes([frame[i] ^ b]) + frame[i + 1 :]
    if kind == "truncate":
        return frame[: a % len(frame)]
    if kind == "unit":
        return bytes([a if a != frame[0] else (a + 1) % 256]) + frame[1:]
    fc = a if a not in (frame[1], frame[1] | 0x80) else (a + 3) % 256
    return frame[:1] + bytes([fc]) + frame[2:]


@FUZZ
@given(
    requests,
    st.lists(st.integers(0, 0xFFFF), min_size=125, max_size=125),
    mutations,
    st.binary(max_size=20),
    st.binary(max_size=20),
)
def test_mutated_rtu_frames_are_never_accepted(
    req: Request, words: list[int], how: tuple[str, int, int], before: bytes, after: bytes
) -> None:
    good = rtu_frame(1, valid_response(req, words))
    bad = mutate(good, how)
    pdu, skipped = find_rtu_frame(bad, 1, req)
    assert pdu is None  # CRC-16 catches every single-byte error and any truncation
    # garbage around a good frame: the frame is still found, garbage reported
    pdu, skipped = find_rtu_frame(before + good + after, 1, req)
    assert pdu is not None
    assert parse_response(req, pdu) == (words[: req.count] if req.function_code in (3, 4) else [])
    if pdu != good[1:-2]:  # the garbage itself held a valid-looking frame: astronomically rare
        assert skipped < len(before)


@FUZZ
@given(st.binary(max_size=300), st.integers(0, 0xFFFF), st.integers(1, 247))
def test_random_tcp_adu_only_protocol_error(adu: bytes, tid: int, unit: int) -> None:
    try:
        pdu = decode_tcp_adu(adu, tid, unit)
    except ProtocolError:
        return
    assert adu == tcp_adu(tid, unit, pdu)


@FUZZ
@given(requests, mutations)
def test_mutated_tcp_headers_rejected(req: Request, how: tuple[str, int, int]) -> None:
    good = tcp_adu(77, 1, valid_response(req, [1] * 125))
    kind, a, b = how
    if kind == "flip":  # only header bytes are checkable on TCP (no checksum)
        i = a % 7
        bad = good[:i] + bytes([good[i] ^ b]) + good[i + 1 :]
    elif kind == "truncate":
        bad = good[: a % len(good)]
    else:
        bad = good[:6] + bytes([(good[6] + 1 + a % 200) % 256]) + good[7:]
    try:
        decode_tcp_adu(bad, 77, 1)
    except ProtocolError:
        return
    raise AssertionError(f"accepted {bad.hex()}")


# ---- the server's side: any request PDU gets an answer or an exception, never a crash
_console = SimConsole(load_profile(), seed=1)
_handler = _Handler(_console, "fuzz")


@FUZZ
@given(st.binary(min_size=0, max_size=260))
def test_server_handles_any_pdu(pdu: bytes) -> None:
    before = _console.bad_request_count()
    answer = _handler.handle(pdu)
    assert answer
    if answer[0] & 0x80:
        assert 1 <= answer[1] <= 4
        assert _console.bad_request_count() == (before + 1) & 0xFFFF
    else:
        assert answer[0] == pdu[0]


@FUZZ
@given(st.binary(max_size=300))
def test_server_rtu_sizer_never_raises(buf: bytes) -> None:
    size = rtu_request_size(buf)
    assert size is None or size >= 0


def test_crc_known_vector() -> None:
    # read holding registers, unit 1, address 0, count 1: 01 03 00 00 00 01 84 0A
    assert crc16(bytes.fromhex("010300000001")) == bytes.fromhex("840a")


@FUZZ
@given(
    st.integers(0, 190),
    st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=6),
    st.booleans(),
)
def test_server_handles_any_structured_write(address: int, words: list[int], single: bool) -> None:
    req = Request.write(address, words[:1] if single else words)
    answer = _handler.handle(req.pdu)
    if answer[0] & 0x80:
        assert answer[1] in (2, 3, 4)
    else:
        assert parse_response(req, answer) == []
