"""100,000 random and mutated frames into each driver's decoding chain (CI-sized).

Hypothesis explores structured inputs on the pure decoders; a seeded loop of
random mutations of valid frames supplies the bulk. No exception other than
the decoder's documented one escapes, no call hangs (pytest-timeout, and the
slowest call is measured), and every frame is either accepted or counted as
bad. An accepted mutant must be a well-formed frame (a CRC collision for RTU,
a payload edit for TCP, which has no checksum of its own); a truncated one
never is. Longer runs: tests/fuzz/fuzz_decoders.py (atheris, ``make fuzz``).
"""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cryod.drivers.lineproto import MAX_LINE_BYTES, FrameError, decode
from cryod.drivers.modbus import crc16
from tests.fuzz.targets import REQUESTS, TARGETS, mutate, valid_frames

MUTANTS_PER_TARGET = 23_000  # x 4 targets = 92,000; + 9,000 hypothesis + 1,500 truncations
SEED = 20_260_901
HYP = settings(
    max_examples=4_000,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

requests = st.sampled_from(REQUESTS)


@pytest.mark.timeout(120)
@HYP
@given(st.sampled_from(sorted(TARGETS)), st.binary(max_size=600), requests)
def test_random_bytes(target: str, data: bytes, req) -> None:
    assert TARGETS[target](data, req) in ("ok", "bad")


@pytest.mark.timeout(120)
@HYP
@given(st.binary(min_size=0, max_size=40), requests, st.integers(0, 2))
def test_random_modbus_frames_with_good_framing(body: bytes, req, how: int) -> None:
    """Random PDUs behind a correct CRC / MBAP header reach parse_response."""
    from cryod.drivers.modbus import rtu_frame, tcp_adu
    from tests.fuzz.targets import TID, UNIT, modbus_rtu, modbus_tcp

    pdu = bytes([req.function_code | (0x80 if how == 2 else 0)]) + body
    assert modbus_rtu(rtu_frame(UNIT, pdu), req) in ("ok", "bad")
    assert modbus_tcp(tcp_adu(TID, UNIT, pdu), req) in ("ok", "bad")


@pytest.mark.timeout(120)
@settings(HYP, max_examples=1_000)
@given(
    st.lists(
        st.text(
            alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="$*"),
            max_size=40,
        ),
        max_size=30,
    )
)
def test_lines_with_a_valid_checksum(tokens: list[str]) -> None:
    """Bodies that pass the checksum: only the syntax and field checks stand between."""
    from cryod.drivers.lineproto import crc16_ccitt_false
    from tests.fuzz.targets import line

    body = " ".join(["7", "TEL", *tokens]).encode()
    frame = b"$" + body + b"*" + f"{crc16_ccitt_false(body):04X}".encode() + b"\r\n"
    assert line(frame) in ("ok", "bad")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_mutated_frames_rejected_and_counted(target: str) -> None:
    rng = random.Random(f"{SEED}-{target}")
    fn = TARGETS[target]
    counts = {"ok": 0, "bad": 0}
    valid_ok = accepted_mutants = 0
    slowest_s = 0.0
    for _ in range(MUTANTS_PER_TARGET):
        frame, req = valid_frames(target, rng)
        if rng.random() < 0.02:
            assert fn(frame, req) == "ok", frame  # positive control: valid frames pass
            valid_ok += 1
        mutant = mutate(frame, rng)
        t0 = time.perf_counter()
        verdict = fn(mutant, req)  # any exception other than the documented one fails here
        slowest_s = max(slowest_s, time.perf_counter() - t0)
        counts[verdict] += 1
        if verdict == "ok" and mutant != frame:
            if target == "modbus_rtu":
                # accepted only if a frame with a CRC matching what it covers is in there
                # (the frame itself after a resync over garbage, or a CRC collision)
                body = mutant[mutant.index(bytes([1])) :] if 1 in mutant else mutant
                assert any(
                    crc16(body[i : j - 2]) == body[j - 2 : j]
                    for i in range(len(body))
                    for j in range(i + 4, len(body) + 1)
                ), mutant
            if target == "modbus_tcp":
                assert len(mutant) == len(frame), "a resized MBAP frame was accepted"
            if target == "line":
                assert decode(mutant) is not None
            accepted_mutants += 1
    assert counts["ok"] + counts["bad"] == MUTANTS_PER_TARGET
    assert counts["bad"] > 0.5 * MUTANTS_PER_TARGET, counts
    assert valid_ok > 0
    assert slowest_s < 0.5, f"one frame took {slowest_s:.3f} s"
    print(
        f"{target}: {MUTANTS_PER_TARGET} mutants, {counts['bad']} rejected and counted, "
        f"{counts['ok']} accepted ({accepted_mutants} of them differ from the valid frame: "
        "resync, a line ending, a TCP payload edit, or a checksum collision), "
        f"slowest {slowest_s * 1000:.1f} ms"
    )


def test_truncated_frames_are_always_rejected() -> None:
    rng = random.Random(SEED)
    for target in ("modbus_rtu", "modbus_tcp", "line"):
        for _ in range(500):
            frame, req = valid_frames(target, rng)
            cut = frame[: rng.randrange(len(frame) - (2 if target == "line" else 0))]
            assert TARGETS[target](cut, req) == "bad", (target, cut)


def test_oversized_line_is_refused_early() -> None:
    with pytest.raises(FrameError) as info:
        decode(b"$" + b"A" * (10 * 1024 * 1024))
    assert info.value.code == "too_long"
    assert MAX_LINE_BYTES <= 4096
