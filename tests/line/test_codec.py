"""The line-protocol codec: checksum, framing, round trips, and hostile input."""

from __future__ import annotations

import random
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cryod.drivers.base import TcStatus, TripCause
from cryod.drivers.lineproto import (
    MAX_LINE_BYTES,
    Frame,
    FrameError,
    LineSplitter,
    ProbeTel,
    SeqCounter,
    Telemetry,
    crc16_ccitt_false,
    decode,
    encode,
    seq_gap,
    telemetry_max_len,
)

from .doc_formats import DOC, doc_decimals, format_errors

SETTINGS = settings(
    max_examples=300, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def test_crc_check_value_and_worked_example() -> None:
    # the CRC-16/CCITT-FALSE catalogue check value
    assert crc16_ccitt_false(b"123456789") == 0x29B1
    # the worked example in docs/line-protocol.md
    assert crc16_ccitt_false(b"7 FREEZE p=1 on=1") == 0xC2FF
    assert encode(Frame.make(7, "FREEZE", fields={"p": 1, "on": 1})) == (
        b"$7 FREEZE p=1 on=1*C2FF\r\n"
    )


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"7 FREEZE p=1 on=1*C2FF\r\n", "bad_frame"),  # no '$'
        (b"$7 FREEZE p=1 on=1\r\n", "bad_frame"),  # no checksum
        (b"$7 FREEZE p=1 on=1*C2F\r\n", "bad_frame"),  # 3 hex digits
        (b"$7 FREEZE p=1 on=1*C2FE\r\n", "bad_checksum"),
        (b"$7 FREEZE p=1 on=0*C2FF\r\n", "bad_checksum"),
        (b"$" + b"x" * MAX_LINE_BYTES + b"*0000\r\n", "too_long"),
    ],
)
def test_decode_rejects(line: bytes, code: str) -> None:
    with pytest.raises(FrameError) as err:
        decode(line)
    assert err.value.code == code


def _framed(body: bytes) -> bytes:
    return b"$" + body + b"*" + f"{crc16_ccitt_false(body):04X}".encode() + b"\r\n"


@pytest.mark.parametrize(
    "body",
    [
        b"x FREEZE",
        b"70000 BEAT",
        b"07 BEAT",
        b"7 freeze",
        b"7",
        b"7  BEAT",
        b"7 BEAT p=",
        b"7 BEAT =1",
        b"7 BEAT p=1 p=2",
        b"7 BEAT \x01",
        b"7 BEAT \xff",
    ],
)
def test_decode_rejects_bad_syntax_with_good_checksum(body: bytes) -> None:
    with pytest.raises(FrameError) as err:
        decode(_framed(body))
    assert err.value.code == "bad_syntax"


def test_bad_syntax_keeps_the_seq_for_the_nak() -> None:
    with pytest.raises(FrameError) as err:
        decode(_framed(b"12 BEAT p=1 p=2"))
    assert err.value.seq == 12


def test_splitter_resyncs_on_dollar() -> None:
    good = encode(Frame.make(3, "BEAT"))
    s = LineSplitter()
    out = s.feed(b"noise$12 TRUNC" + good + b"\r\n\r\n" + good[:5])
    out += s.feed(good[5:])
    assert [type(o).__name__ for o in out] == ["FrameError", "FrameError", "Frame", "Frame"]
    assert s.bad == 2
    assert s.frames == 2


def test_splitter_overlong_line_counted_once_then_recovers() -> None:
    s = LineSplitter()
    out = s.feed(b"$1 X " + b"a" * 5000)
    out += s.feed(b"b" * 3000 + b"\r\n" + encode(Frame.make(4, "IDENT")))
    assert s.bad == 1
    assert isinstance(out[0], FrameError)
    assert out[0].code == "too_long"
    assert isinstance(out[-1], Frame)
    assert out[-1].verb == "IDENT"


def test_seq_wraps_and_gaps() -> None:
    c = SeqCounter(65535)
    assert [c.next(), c.next()] == [65535, 0]
    assert seq_gap(None, 5) == 0
    assert seq_gap(65535, 0) == 0
    assert seq_gap(65534, 1) == 2
    assert seq_gap(10, 10) == 0  # repeat: resync, not a gap
    assert seq_gap(10, 3) == 0  # sender restarted


def test_tel_for_25_probes_fits_a_line() -> None:
    assert telemetry_max_len(25) <= MAX_LINE_BYTES
    assert telemetry_max_len(8) < telemetry_max_len(25)


# ---- property tests ---------------------------------------------------------------
verbs = st.from_regex(r"[A-Z][A-Z0-9_]{0,15}\??", fullmatch=True)
keys = st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True)
token_chars = st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="$*=")
values = st.text(token_chars | st.just("="), min_size=1, max_size=12)
args = st.text(token_chars, min_size=1, max_size=10)
frames = st.builds(
    Frame,
    seq=st.integers(0, 65535),
    verb=verbs,
    args=st.lists(args, max_size=4).map(tuple),
    fields=st.dictionaries(keys, values, max_size=8).map(lambda d: tuple(d.items())),
)


@SETTINGS
@given(frames)
def test_round_trip(frame: Frame) -> None:
    assert decode(encode(frame)) == frame


@SETTINGS
@given(st.binary(max_size=2 * MAX_LINE_BYTES))
def test_decode_random_bytes_raises_only_frame_error(data: bytes) -> None:
    code = None
    try:
        decode(data)
    except FrameError as exc:
        code = exc.code
    assert code in (None, "bad_frame", "too_long", "bad_checksum", "bad_syntax")


@SETTINGS
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_splitter_random_chunks_never_raise(chunks: list[bytes]) -> None:
    s = LineSplitter()
    total = 0
    for chunk in chunks:
        out = s.feed(chunk)
        assert all(isinstance(o, Frame | FrameError) for o in out)
        total += len(out)
    assert s.bad + s.frames == total


@st.composite
def mutated_streams(draw: st.DrawFn) -> tuple[list[Frame], int, bytes]:
    """Several valid frames, one of them damaged by a flip, insert, delete or cut
    (never the last one: a cut-off final frame is only known to be bad once the
    next frame starts)."""
    fs = draw(st.lists(frames, min_size=2, max_size=5))
    victim = draw(st.integers(0, len(fs) - 2))
    wire = [encode(f) for f in fs]
    line = bytearray(wire[victim])
    kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
    # the trailing "\r\n" is excluded ("\r" is optional by design), and so is
    # the leading "$" for inserts: bytes before it are garbage *between* frames
    pos = draw(st.integers(1 if kind == "insert" else 0, len(line) - 3))
    if kind == "flip":
        new = draw(st.integers(0, 255).filter(lambda b: b != line[pos]))
        line[pos] = new
    elif kind == "insert":
        line[pos:pos] = draw(st.binary(min_size=1, max_size=6).filter(lambda b: b"$" not in b))
    elif kind == "delete":
        del line[pos]
    else:
        line = line[: max(1, pos)]
    wire[victim] = bytes(line)
    return fs, victim, b"".join(wire)


@SETTINGS
@given(mutated_streams(), st.integers(1, 64))
def test_every_mutated_frame_is_rejected_and_counted(
    case: tuple[list[Frame], int, bytes], chunk: int
) -> None:
    fs, victim, data = case
    s = LineSplitter()
    out: list[Frame | FrameError] = []
    for i in range(0, len(data), chunk):
        out += s.feed(data[i : i + chunk])
    got = [o for o in out if isinstance(o, Frame)]
    expected = [f for i, f in enumerate(fs) if i != victim]
    assert got == expected  # the damaged frame never decodes, the others all do
    assert s.bad >= 1


probe_tel = st.builds(
    ProbeTel,
    tip_c=st.integers(-2000, 600).map(lambda v: v / 10),
    tc_status=st.just(TcStatus.OK),
    return_kpa=st.integers(0, 65535).map(lambda v: v / 10),
    freeze_open=st.booleans(),
    thaw_on=st.booleans(),
    limits_armed=st.booleans(),
    trip=st.just(TripCause.NONE),
) | st.builds(
    ProbeTel,
    tip_c=st.none(),
    tc_status=st.sampled_from([TcStatus.OPEN, TcStatus.SHORT]),
    return_kpa=st.integers(0, 2000).map(lambda v: v / 10),
    freeze_open=st.booleans(),
    thaw_on=st.booleans(),
    limits_armed=st.booleans(),
    trip=st.sampled_from([TripCause.MAX_ON_TIME, TripCause.MIN_TIP, TripCause.MAX_SUPPLY]),
    trip_time_s=st.integers(0, 10**9).map(lambda v: v / 1000),
)


telemetries = st.builds(
    Telemetry,
    console_time_s=st.integers(0, 10**9).map(lambda v: v / 1000),
    lease_armed=st.booleans(),
    master_open=st.booleans(),
    supply_low=st.booleans(),
    helium_ok=st.booleans(),
    lease_expired=st.booleans(),
    overpressure=st.booleans(),
    console_limit=st.booleans(),
    supply_kpa=st.integers(0, 65535).map(float),
    cylinder_kpa=st.integers(0, 65535).map(float),
    skin_present=st.just(True),
    skin_c=st.none() | st.integers(-500, 600).map(lambda v: v / 10),
    lease_timeout_ms=st.integers(0, 65535),
    lease_remaining_ms=st.integers(0, 65535),
    lease_expiry_count=st.integers(0, 65535),
    probes=st.lists(probe_tel, min_size=1, max_size=25).map(tuple),
)


@SETTINGS
@given(telemetries)
def test_telemetry_round_trip(tel: Telemetry) -> None:
    frame = decode(encode(Frame.make(9, "TEL", fields=tel.to_fields())))
    assert Telemetry.from_fields(frame.field_map()) == tel


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"t": "1", "st": "0", "fl": "0", "sup": "1", "cyl": "1", "lt": "0", "lr": "0", "lx": "0"},
        {
            "t": "x",
            "st": "0",
            "fl": "0",
            "sup": "1",
            "cyl": "1",
            "lt": "0",
            "lr": "0",
            "lx": "0",
            "p1": "1,1,0,0",
        },
        {
            "t": "1",
            "st": "10",
            "fl": "0",
            "sup": "1",
            "cyl": "1",
            "lt": "0",
            "lr": "0",
            "lx": "0",
            "p1": "1,1,0,0",
        },
        {
            "t": "1",
            "st": "0",
            "fl": "0",
            "sup": "1",
            "cyl": "1",
            "lt": "0",
            "lr": "0",
            "lx": "0",
            "p2": "1,1,0,0",
        },
        {
            "t": "1",
            "st": "0",
            "fl": "0",
            "sup": "1",
            "cyl": "1",
            "lt": "0",
            "lr": "0",
            "lx": "0",
            "p1": "1,1,9,0",
        },
        {
            "t": "1",
            "st": "0",
            "fl": "0",
            "sup": "1",
            "cyl": "1",
            "lt": "0",
            "lr": "0",
            "lx": "0",
            "p1": "1,1,0,2",
        },
        {
            "t": "1",
            "st": "0",
            "fl": "0",
            "sup": "1",
            "cyl": "1",
            "lt": "0",
            "lr": "0",
            "lx": "0",
            "p1": "1,1,0,0",
            "zz": "1",
        },
    ],
)
def test_bad_telemetry_fields_raise_value_error(fields: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="TEL"):
        Telemetry.from_fields(fields)


# ---- the document and the encoder agree (docs/line-protocol.md) ------------------
def test_the_crc_is_the_documented_algorithm() -> None:
    """The codec's CRC (binascii.crc_hqx) equals the bit-by-bit reference of
    section 2.2, run from the document itself, on the check value and random bytes."""
    block = re.search(r"### 2\.2.*?```python\n(.*?)```", DOC.read_text(), re.S)
    assert block, "section 2.2 lost its reference implementation"
    namespace: dict[str, Any] = {}
    exec(block.group(1), namespace)
    reference = namespace["crc16_ccitt_false"]
    assert reference(b"123456789") == crc16_ccitt_false(b"123456789") == 0x29B1
    rng = random.Random(16)
    for size in [0, 1, 2, 17, 64, 1024] * 20:
        data = rng.randbytes(size)
        assert crc16_ccitt_false(data) == reference(data)


def test_the_document_states_a_format_for_every_number() -> None:
    assert doc_decimals() == {
        "t": 3,
        "sup": 0,
        "cyl": 0,
        "skin": 1,
        "tip": 1,
        "return": 1,
        "trip_t": 3,
        "faults_t_s": 3,
    }


def test_telemetry_keeps_trailing_zeros_as_documented() -> None:
    """Values whose shortest form drops zeros are written with the stated decimals."""
    tel = Telemetry(
        console_time_s=12.5,
        lease_armed=True,
        master_open=True,
        supply_low=False,
        helium_ok=True,
        lease_expired=False,
        overpressure=False,
        console_limit=True,
        supply_kpa=25850.0,
        cylinder_kpa=40000.0,
        skin_present=True,
        skin_c=35.0,
        lease_timeout_ms=1000,
        lease_remaining_ms=900,
        lease_expiry_count=0,
        probes=(
            ProbeTel(-140.0, TcStatus.OK, 0.0, True, False, True, TripCause.MIN_TIP, 10.5),
            ProbeTel(-0.04, TcStatus.OK, 80.0, False, False, False),
            ProbeTel(None, TcStatus.OPEN, 0.0, False, False, False),
        ),
    )
    fields = tel.to_fields()
    assert format_errors(fields, doc_decimals()) == []
    assert (fields["t"], fields["sup"], fields["cyl"], fields["skin"]) == (
        "12.500",
        "25850",
        "40000",
        "35.0",
    )
    assert fields["p1"] == "-140.0,0.0,5,2,10.500"
    assert fields["p2"] == "0.0,80.0,0,0"  # -0.04 rounds to a zero without a sign
    assert fields["p3"] == "open,0.0,0,0"


@SETTINGS
@given(telemetries)
def test_every_telemetry_number_has_the_documented_decimals(tel: Telemetry) -> None:
    assert format_errors(tel.to_fields(), doc_decimals()) == []


def test_format_check_catches_dropped_zeros() -> None:
    """Negative control: the shortest forms the encoder wrote before are refused."""
    errors = format_errors(
        {"t": "12.5", "sup": "25850", "p1": "-140,0,5,2,10.5", "p2": "-0.0,1.0,0,0"},
        doc_decimals(),
    )
    assert len(errors) == 5, errors


def test_the_documented_example_frame_is_what_the_encoder_writes() -> None:
    line = re.search(r"^\$56 TEL .*$", DOC.read_text(), re.M)
    assert line, "section 7 lost its example frame"
    wire = line.group(0).encode() + b"\r\n"
    fields = decode(wire).field_map()
    assert format_errors(fields, doc_decimals()) == []
    tel = Telemetry.from_fields(fields)
    assert encode(Frame.make(56, "TEL", fields=tel.to_fields())) == wire
