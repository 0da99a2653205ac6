"""The poll path's fast paths (drivers/modbus/regmap.py and codec.py) give exactly
what the generic code gives: the snapshot decode (registers resolved once)
against the per-register decode, for any register image; the lease renewal's
write request against the one pymodbus builds; the write answers accepted and
refused alike."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.pdu.register_message import WriteSingleRegisterRequest

from cryod.drivers.base import (
    ConsoleFaults,
    LeaseStatus,
    LimitTrip,
    ProbeState,
    ProtocolError,
    Reading,
    Snapshot,
    TcStatus,
    TripCause,
    Validity,
)
from cryod.drivers.modbus import ModbusTcpDriver, Request, parse_response
from cryod.drivers.modbus.regmap import RegisterMap
from cryod.drivers.profile import ResolvedRegister, load_profile

PROFILE = load_profile()


def driver() -> ModbusTcpDriver:
    return ModbusTcpDriver(
        "127.0.0.1", 1, profile=PROFILE, unit_id=1, timeout_s=0.5, retries=0, reconnect_max_s=1.0
    )


def reference_reading(
    d: RegisterMap,
    image: dict[int, int],
    reg: ResolvedRegister,
    t: tuple[float, float],
    lo: float,
    hi: float,
    invalid: bool = False,
) -> Reading:
    """The generic decode, register by register (the algorithm before the plan)."""
    raw = d.integer(image, reg)
    unit = reg.spec.unit
    if invalid or raw in reg.spec.sentinels.values():
        return Reading(None, unit, t[0], t[1], Validity.INVALID)
    value = round(raw * reg.spec.scale, 6)
    ok = lo <= value <= hi
    return Reading(value, unit, t[0], t[1], Validity.VALID if ok else Validity.QUESTIONABLE)


def reference_decode(d: RegisterMap, image: dict[int, int], t: tuple[float, float]) -> Snapshot:
    p, cs = PROFILE, PROFILE.console
    probes, trips = [], []
    for n in range(1, cs.probes + 1):
        ps = p.probe_reg("probe_status", n)
        try:
            tc = TcStatus(d.integer(image, p.probe_reg("tc_status", n)))
        except ValueError as exc:
            raise ProtocolError(f"probe {n}: unknown tc_status") from exc
        try:
            trip = TripCause(d.integer(image, p.probe_reg("trip_cause", n)))
        except ValueError as exc:
            raise ProtocolError(f"probe {n}: unknown trip_cause") from exc
        if trip != TripCause.NONE:
            trips.append(LimitTrip(n, trip, d.integer(image, p.probe_reg("trip_time_ms", n)) / 1e3))
        probes.append(
            ProbeState(
                probe=n,
                tip_c=reference_reading(
                    d,
                    image,
                    p.probe_reg("tip_c", n),
                    t,
                    cs.min_tip_c - 20.0,
                    80.0,
                    invalid=tc != TcStatus.OK,
                ),
                return_kpa=reference_reading(
                    d, image, p.probe_reg("return_kpa", n), t, 0.0, cs.supply_max_kpa
                ),
                tc_status=tc,
                freeze_open=d.bit(image, ps, "freeze_open"),
                thaw_on=d.bit(image, ps, "thaw_on"),
                limits_armed=d.bit(image, ps, "limits_armed"),
                trip=trip,
            )
        )
    status, faults_reg = p.reg("status"), p.reg("faults")
    faults = ConsoleFaults(
        lease_expired=d.bit(image, faults_reg, "lease_expired"),
        overpressure=d.bit(image, faults_reg, "overpressure"),
        console_limit=d.bit(image, faults_reg, "console_limit"),
        trips=tuple(trips),
    )
    return Snapshot(
        seq=1,
        t_mono=t[0],
        t_utc=t[1],
        console_time_s=d.integer(image, p.reg("console_time_ms")) / 1000.0,
        supply_kpa=reference_reading(d, image, p.reg("supply_kpa"), t, 0.0, 65000.0),
        cylinder_kpa=reference_reading(d, image, p.reg("cylinder_kpa"), t, 0.0, 65000.0),
        skin_c=reference_reading(d, image, p.reg("skin_c"), t, -20.0, 60.0),
        master_open=d.bit(image, status, "master_open"),
        supply_low=d.bit(image, status, "supply_low"),
        lease=LeaseStatus(
            armed=d.bit(image, status, "lease_armed"),
            timeout_ms=d.integer(image, p.reg("lease_timeout_ms_rb")),
            expired=faults.lease_expired,
            expiry_count=d.integer(image, p.reg("lease_expiry_count")),
        ),
        faults=faults,
        probes=tuple(probes),
    )


def _addresses() -> list[int]:
    return [a + i for a, c in PROFILE.snapshot_span() for i in range(c)]


def _enum_addresses(name: str) -> set[int]:
    return {PROFILE.probe_reg(name, n).address for n in range(1, PROFILE.console.probes + 1)}


def _sentinel_words() -> list[int]:
    regs = [PROFILE.reg(n) for n in PROFILE.registers] + [
        PROFILE.probe_reg(n, 1) for n in PROFILE.probe_registers
    ]
    return sorted({v & 0xFFFF for r in regs for v in r.spec.sentinels.values()})


WORD = st.one_of(
    st.integers(0, 0xFFFF),
    st.sampled_from([0, 1, 2, 3, 0x7FFF, 0x8000, 0xFFFF, *_sentinel_words()]),
)


@st.composite
def images(draw: st.DrawFn, enums_valid: bool = True) -> dict[int, int]:
    tc_addrs, trip_addrs = _enum_addresses("tc_status"), _enum_addresses("trip_cause")
    image = {}
    for a in _addresses():
        if enums_valid and a in tc_addrs:
            image[a] = draw(st.integers(0, 2))
        elif enums_valid and a in trip_addrs:
            image[a] = draw(st.integers(0, 3))
        else:
            image[a] = draw(WORD)
    return image


@settings(max_examples=300, deadline=None)
@given(image=images(), t_mono=st.floats(0, 1e6), t_utc=st.floats(1e9, 2e9))
def test_planned_decode_equals_the_generic_decode(
    image: dict[int, int], t_mono: float, t_utc: float
) -> None:
    got = driver()._decode_snapshot(image, t_mono, t_utc)
    assert got == reference_decode(RegisterMap(PROFILE), image, (t_mono, t_utc))


@settings(max_examples=200, deadline=None)
@given(image=images(enums_valid=False))
def test_unknown_enum_codes_are_refused_alike(image: dict[int, int]) -> None:
    try:
        want: Snapshot | str = reference_decode(RegisterMap(PROFILE), image, (1.0, 2.0))
    except ProtocolError as exc:
        want = str(exc)
    try:
        got: Snapshot | str = driver()._decode_snapshot(image, 1.0, 2.0)
    except ProtocolError as exc:
        got = str(exc)
    assert got == want


def test_the_profile_under_test_has_a_skin_channel_and_sentinels() -> None:
    """Otherwise the equality above would not cover those paths."""
    assert "skin_channel" in PROFILE.console.capabilities
    assert _sentinel_words()
    image = dict.fromkeys(_addresses(), 0)
    image[PROFILE.probe_reg("tc_status", 3).address] = 9
    with pytest.raises(ProtocolError, match="probe 3: unknown tc_status"):
        driver()._decode_snapshot(image, 1.0, 2.0)


@given(address=st.integers(0, 0xFFFF), word=st.integers(0, 0xFFFF))
def test_single_write_request_is_the_pymodbus_request(address: int, word: int) -> None:
    ours = Request.write(address, [word])
    ref = WriteSingleRegisterRequest(address=address, registers=[word])
    assert ours.pdu == bytes([6]) + ref.encode()
    assert (ours.function_code, ours.address, ours.count) == (6, address, 1)
    assert parse_response(ours, ours.pdu) == []  # the echo is the answer


@given(
    address=st.integers(0, 0xFFFF),
    word=st.integers(0, 0xFFFF),
    answer=st.binary(min_size=1, max_size=8),
)
def test_a_write_answer_other_than_the_echo_is_refused(
    address: int, word: int, answer: bytes
) -> None:
    req = Request.write(address, [word])
    if answer == req.pdu:
        assert parse_response(req, answer) == []
    elif answer[0] == 0x86 and len(answer) == 2:
        with pytest.raises(ProtocolError, match="exception"):
            parse_response(req, answer)
    else:
        with pytest.raises(ProtocolError):
            parse_response(req, answer)


@settings(max_examples=100, deadline=None)
@given(image=images(), t_mono=st.floats(0, 1e6))
def test_decoded_readings_are_checked_frozen_readings(image: dict[int, int], t_mono: float) -> None:
    """The decode builds every Reading through Reading(), so its check that a usable
    reading has a value holds on the poll path too; and the readings are frozen."""
    snap = driver()._decode_snapshot(image, t_mono, 2.0)
    readings = [snap.supply_kpa, snap.cylinder_kpa]
    readings += [r for p in snap.probes for r in (p.tip_c, p.return_kpa)]
    for r in readings:
        assert type(r) is Reading
        assert not (r.validity.usable and r.value is None)
    with pytest.raises(ValueError, match="usable reading needs a value"):
        Reading(None, "C", t_mono, 2.0, Validity.VALID)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.supply_kpa.value = 1.0  # type: ignore[misc]
