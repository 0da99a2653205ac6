"""The simulator's line server, spoken to with raw bytes on the real pty."""

from __future__ import annotations

import asyncio
import re

import pytest

from cryod.drivers.lineproto import MAX_LINE_BYTES, Frame, crc16_ccitt_false, encode

from .conftest import RawClient, Sim
from .doc_formats import doc_decimals, format_errors, number_pattern


def framed(body: bytes) -> bytes:
    return b"$" + body + b"*" + f"{crc16_ccitt_false(body):04X}".encode() + b"\r\n"


async def test_hello_identifies_and_starts_telemetry(sim: Sim, raw: RawClient) -> None:
    reply = await raw.ask("HELLO")
    assert reply.verb == "ACK"
    f = reply.field_map()
    assert f["model"] == "CRYOSIM-8"
    assert f["probes"] == "8"
    assert f["gas"] == "argon"
    assert "console_limits" in f["caps"].split(",")
    assert (await raw.ask("RATE", hz=50)).get("hz") == "50"
    tel = await raw.wait_tel(5)
    times = [float(f.get("t") or "nan") for f in tel]
    assert times == sorted(times)  # pushed in order, the console clock running
    opened = sim.events("connection")
    assert opened[-1]["state"] == "opened"
    assert opened[-1]["transport"] == "line"


BAD_INPUTS = [
    (b"$5 HELLO*0000\r\n", "-", "bad_checksum"),
    (b"hello there\r\n", "-", "bad_frame"),
    (b"$6 HELLO\r\n", "-", "bad_frame"),
    (b"$" + b"A" * (MAX_LINE_BYTES + 10) + b"\r\n", "-", "too_long"),
    (framed(b"7 BEAT p=1 p=2"), "7", "bad_syntax"),
    (framed(b"8 BOGUS"), "8", "unknown_command"),
    (framed(b"9 FREEZE p=1"), "9", "bad_syntax"),
    (framed(b"10 FREEZE p=1 on=2"), "10", "out_of_range"),
    (framed(b"11 FREEZE p=9 on=0"), "11", "bad_probe"),
    (framed(b"12 FREEZE p=one on=0"), "12", "bad_syntax"),
    (framed(b"13 RATE hz=500"), "13", "out_of_range"),
    (framed(b"14 LEASE ms=50"), "14", "out_of_range"),
    (framed(b"15 LIMITS p=1 on_s=0 min_c=-150 max_kpa=33000 n=3"), "15", "limits_invalid"),
    (framed(b"16 LIMITS p=1 on_s=60 min_c=-150 max_kpa=33000 n=0"), "16", "limits_invalid"),
    (framed(b"17 LIMITS p=1 on_s=1e3 min_c=-150 max_kpa=33000 n=3"), "17", "bad_syntax"),
    (framed(b"18 SNAP? extra"), "18", "bad_syntax"),
]


@pytest.mark.parametrize(("data", "ref", "code"), BAD_INPUTS)
async def test_bad_input_is_naked_counted_and_logged(
    sim: Sim, raw: RawClient, data: bytes, ref: str, code: str
) -> None:
    before = sim.console.bad_request_count()
    raw.write(data)
    (nak,) = await raw.wait_replies(1)
    assert nak.verb == "NAK"
    assert nak.args[:2] == (ref, code)
    assert sim.console.bad_request_count() == before + 1
    assert sim.events("bad_request")[-1]["reason"] == code
    # and the console still answers
    assert (await raw.ask("IDENT")).verb == "ACK"


async def test_state_refusals_are_naked_but_not_bad_requests(sim: Sim, raw: RawClient) -> None:
    before = sim.console.bad_request_count()
    nak = await raw.ask("FREEZE", p=1, on=1)  # lease disarmed at power-on
    assert nak.args[1] == "lease_disarmed"
    assert sim.console.bad_request_count() == before
    assert not sim.console.probe(1).freeze_open


async def test_garbage_burst_then_commands_still_work(sim: Sim, raw: RawClient) -> None:
    raw.write(bytes(range(256)) * 20 + b"\r\n")
    # the console answers in order: once IDENT's ACK is in, every NAK for the garbage is too
    seq = raw.send("IDENT")
    replies: list[Frame] = []
    while not replies or replies[-1].verb != "ACK":
        replies += await raw.wait_replies(1)
    assert replies[-1].args[0] == str(seq)
    naks = replies[:-1]
    assert naks, "garbage must be refused"
    assert all(r.verb == "NAK" and r.args[0] == "-" for r in naks)
    assert sim.console.bad_request_count() >= len(naks)
    assert (await raw.ask("LEASE", ms=500)).get("ms") == "500"
    assert sim.console.lease_armed()
    assert (await raw.ask("LEASE", ms=0)).get("ms") == "0"


async def test_repeated_seq_is_answered_not_executed_twice(sim: Sim, raw: RawClient) -> None:
    await raw.ask("LEASE", ms=1000)
    await raw.ask("MASTER", on=1)
    frame = encode(Frame.make(500, "FREEZE", fields={"p": 2, "on": 1}))
    raw.write(frame)
    raw.write(frame)
    a, b = await raw.wait_replies(2)
    assert a.verb == b.verb == "ACK"
    assert a.args == b.args == ("500",)
    opens = [
        e for e in sim.events("valve") if e["valve"] == "freeze" and e["probe"] == 2 and e["open"]
    ]
    assert len(opens) == 1
    await raw.ask("FREEZE", p=2, on=0)
    await raw.ask("MASTER", on=0)


async def test_limits_commands(sim: Sim, raw: RawClient) -> None:
    await raw.ask("LEASE", ms=1000)
    ack = await raw.ask("LIMITS", p=3, on_s="90.5", min_c="-120", max_kpa="33000", n=3)
    assert ack.field_map() == {
        "p": "3",
        "armed": "1",
        "on_s": "90.5",
        "min_c": "-120",
        "max_kpa": "33000",
        "n": "3",
    }
    assert (await raw.ask("LIMITS?", p=3)).field_map() == ack.field_map()
    off = await raw.ask("LIMITS", "off", p=3)
    assert off.field_map() == {"p": "3", "armed": "0"}
    assert sim.console.limits(3) is None
    assert (await raw.ask("FAULTS?")).field_map() == {"fl": "0", "lx": "0"}


async def test_snap_carries_telemetry(sim: Sim, raw: RawClient) -> None:
    reply = await raw.ask("SNAP?")
    f = reply.field_map()
    assert {"t", "st", "fl", "sup", "cyl", "skin", "lt", "lr", "lx", "p1", "p8"} <= f.keys()


async def test_numbers_on_the_wire_have_the_documented_decimals(sim: Sim, raw: RawClient) -> None:
    """SNAP? (the TEL fields) and FAULTS? as cryosim writes them, against the formats
    docs/line-protocol.md states (tests/line/doc_formats.py reads them from it)."""
    decimals = doc_decimals()
    assert format_errors((await raw.ask("SNAP?")).field_map(), decimals) == []
    await raw.ask("LEASE", ms=5000)
    await raw.ask("LIMITS", p=1, on_s="0.5", min_c="-150", max_kpa="34000", n=3)
    await raw.ask("MASTER", on=1)
    await raw.ask("FREEZE", p=1, on=1)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while "p1" not in (faults := (await raw.ask("FAULTS?")).field_map()):
        assert loop.time() < deadline, f"no console-limit trip: {faults}"
        await asyncio.sleep(0.02)
    cause, t_s = faults["p1"].split(",")
    assert cause == "max_on_time"
    assert re.fullmatch(number_pattern(decimals["faults_t_s"]), t_s), t_s
    snap = (await raw.ask("SNAP?")).field_map()
    assert len(snap["p1"].split(",")) == 5  # the trip and its time are in the TEL fields too
    assert format_errors(snap, decimals) == []
    await raw.ask("MASTER", on=0)
