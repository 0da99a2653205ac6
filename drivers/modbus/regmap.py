"""A console profile's register map, resolved once for the poll path: pure, no I/O.

``RegisterMap`` knows which registers a snapshot reads (the spans), how to
turn register words into integers, bits and Readings, and ``SnapshotDecoder``
turns one register image (address -> word, as the link read it) into a
``Snapshot``. The poll path decodes ~70 registers 20+ times a second, so every
register a snapshot needs is looked up once here (``_ProbePlan``, ``_Value``)
and not by name on every poll; tests/modbus/test_poll_path.py checks that the
result equals the per-register decode for any image.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from ..base import (
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
from ..profile import Profile, ResolvedRegister, decode_words
from .codec import Request

__all__ = ["RegisterMap", "SnapshotDecoder", "group_addresses"]

Image = dict[int, int]


class _Decode(enum.Enum):
    """How a measured register's words become an integer on the poll path."""

    UINT16 = "uint16"  # the word itself
    INT16 = "int16"  # the word, two's complement
    GENERIC = "generic"  # anything else: the profile's decoder (32-bit, strings)


class _Value(NamedTuple):
    """One measured register, resolved once for the poll path (see ``reading``)."""

    reg: ResolvedRegister
    decode: _Decode
    scale: float
    sentinels: frozenset[int]
    unit: str
    lo: float  # outside [lo, hi] a value is QUESTIONABLE
    hi: float


class _ProbePlan(NamedTuple):
    probe: int
    tip: _Value
    ret: _Value
    tc_status: ResolvedRegister
    trip_cause: ResolvedRegister
    trip_time: ResolvedRegister
    status: ResolvedRegister
    freeze_bit: int | None
    thaw_bit: int | None
    armed_bit: int | None


# enum lookups without the Enum call machinery (16 per poll)
_TC_STATUS: dict[int, TcStatus] = {int(m): m for m in TcStatus}
_TRIP_CAUSE: dict[int, TripCause] = {int(m): m for m in TripCause}


def _value_plan(reg: ResolvedRegister, lo: float, hi: float) -> _Value:
    spec = reg.spec
    return _Value(
        reg=reg,
        decode={"uint16": _Decode.UINT16, "int16": _Decode.INT16}.get(spec.type, _Decode.GENERIC),
        scale=spec.scale,
        sentinels=frozenset(spec.sentinels.values()),
        unit=spec.unit,
        lo=lo,
        hi=hi,
    )


def group_addresses(addrs: list[int], max_block: int) -> list[tuple[int, int]]:
    """Contiguous runs of sorted addresses as (start, count), each at most ``max_block``."""
    out: list[tuple[int, int]] = []
    for a in addrs:
        if out and a == out[-1][0] + out[-1][1] and out[-1][1] < max_block:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((a, 1))
    return out


class RegisterMap:
    """The registers of one console profile and how their words decode."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.word_order = profile.modbus.word_order
        #: (address, count) of the input-register blocks one snapshot reads
        self.span = profile.snapshot_span()
        self.span_requests = [Request.read("input", a, c) for a, c in self.span]
        self.regs = {n: profile.reg(n) for n in profile.registers}
        pregs = {
            (n, i): profile.probe_reg(n, i)
            for n in profile.probe_registers
            for i in range(1, profile.console.probes + 1)
        }
        cs = profile.console
        self.probe_plans = tuple(
            _ProbePlan(
                probe=n,
                tip=_value_plan(pregs["tip_c", n], cs.min_tip_c - 20.0, 80.0),
                ret=_value_plan(pregs["return_kpa", n], 0.0, cs.supply_max_kpa),
                tc_status=pregs["tc_status", n],
                trip_cause=pregs["trip_cause", n],
                trip_time=pregs["trip_time_ms", n],
                status=pregs["probe_status", n],
                freeze_bit=pregs["probe_status", n].spec.bits.get("freeze_open"),
                thaw_bit=pregs["probe_status", n].spec.bits.get("thaw_on"),
                armed_bit=pregs["probe_status", n].spec.bits.get("limits_armed"),
            )
            for n in range(1, cs.probes + 1)
        )
        sr = self.regs
        self.supply_plan = _value_plan(sr["supply_kpa"], 0.0, 65000.0)
        self.cylinder_plan = _value_plan(sr["cylinder_kpa"], 0.0, 65000.0)
        self.skin_plan = (
            _value_plan(sr["skin_c"], -20.0, 60.0)
            if "skin_channel" in cs.capabilities and "skin_c" in sr
            else None
        )

    def read_blocks(self, regs: list[ResolvedRegister]) -> list[tuple[int, int]]:
        """(start, count) of the reads that cover ``regs`` (one per contiguous group)."""
        addrs = sorted({a for r in regs for a in range(r.address, r.address + r.count)})
        return group_addresses(addrs, self.profile.modbus.max_block)

    def raw(self, image: Image, reg: ResolvedRegister) -> int | str:
        """The register's raw value (integer, or text for a string register)."""
        words = [image[a] for a in range(reg.address, reg.address + reg.count)]
        return decode_words(reg.spec, words, self.word_order)

    def integer(self, image: Image, reg: ResolvedRegister) -> int:
        kind = reg.spec.type
        if kind == "uint16":  # one word: the common case on the poll path
            return image[reg.address]
        if kind == "int16":
            word = image[reg.address]
            return word - 0x10000 if word >= 0x8000 else word
        raw = self.raw(image, reg)
        assert isinstance(raw, int)
        return raw

    def bit(self, image: Image, reg: ResolvedRegister, name: str) -> bool:
        bit = reg.spec.bits.get(name)
        return bit is not None and bool(self.integer(image, reg) >> bit & 1)

    def reading(
        self, image: Image, v: _Value, t_mono: float, t_utc: float, invalid: bool = False
    ) -> Reading:
        """A measured value: INVALID on a sentinel (or when ``invalid``), QUESTIONABLE
        outside its plausible range."""
        if v.decode is _Decode.UINT16:
            raw = image[v.reg.address]
        elif v.decode is _Decode.INT16:
            word = image[v.reg.address]
            raw = word - 0x10000 if word >= 0x8000 else word
        else:
            raw = self.integer(image, v.reg)
        if invalid or raw in v.sentinels:
            return Reading(
                value=None, unit=v.unit, t_mono=t_mono, t_utc=t_utc, validity=Validity.INVALID
            )
        value = round(raw * v.scale, 6)
        ok = v.lo <= value <= v.hi
        validity = Validity.VALID if ok else Validity.QUESTIONABLE
        return Reading(value=value, unit=v.unit, t_mono=t_mono, t_utc=t_utc, validity=validity)


class SnapshotDecoder:
    """Register images to Snapshots, numbered in order; the console's 32-bit
    millisecond clock is unwrapped (it wraps after 49.7 days)."""

    def __init__(self, regmap: RegisterMap) -> None:
        self.map = regmap
        self._seq = 0
        self._time_wraps = 0
        self._last_time_ms: int | None = None

    def decode(self, image: Image, t_mono: float, t_utc: float) -> Snapshot:
        """The register image as a Snapshot; raises ProtocolError for an enum code the
        profile does not define."""
        m = self.map
        sreg = m.regs
        status, faults_reg = sreg["status"], sreg["faults"]
        time_ms = m.integer(image, sreg["console_time_ms"])
        if self._last_time_ms is not None and time_ms < self._last_time_ms:
            self._time_wraps += 1
        self._last_time_ms = time_ms
        probes = []
        trips = []
        reading, as_int, bit = m.reading, m.integer, m.bit
        for pp in m.probe_plans:
            n = pp.probe
            tc = _TC_STATUS.get(as_int(image, pp.tc_status))
            if tc is None:
                raise ProtocolError(f"probe {n}: unknown tc_status")
            trip = _TRIP_CAUSE.get(as_int(image, pp.trip_cause))
            if trip is None:
                raise ProtocolError(f"probe {n}: unknown trip_cause")
            if trip != TripCause.NONE:
                trip_ms = as_int(image, pp.trip_time)
                trips.append(LimitTrip(probe=n, cause=trip, console_time_s=trip_ms / 1000.0))
            word = as_int(image, pp.status)
            probes.append(
                ProbeState(
                    probe=n,
                    tip_c=reading(image, pp.tip, t_mono, t_utc, tc is not TcStatus.OK),
                    return_kpa=reading(image, pp.ret, t_mono, t_utc),
                    tc_status=tc,
                    freeze_open=pp.freeze_bit is not None and bool(word >> pp.freeze_bit & 1),
                    thaw_on=pp.thaw_bit is not None and bool(word >> pp.thaw_bit & 1),
                    limits_armed=pp.armed_bit is not None and bool(word >> pp.armed_bit & 1),
                    trip=trip,
                )
            )
        skin = None if m.skin_plan is None else reading(image, m.skin_plan, t_mono, t_utc)
        faults = ConsoleFaults(
            lease_expired=bit(image, faults_reg, "lease_expired"),
            overpressure=bit(image, faults_reg, "overpressure"),
            console_limit=bit(image, faults_reg, "console_limit"),
            trips=tuple(trips),
        )
        self._seq += 1
        return Snapshot(
            seq=self._seq,
            t_mono=t_mono,
            t_utc=t_utc,
            console_time_s=(time_ms + self._time_wraps * 2**32) / 1000.0,
            supply_kpa=reading(image, m.supply_plan, t_mono, t_utc),
            cylinder_kpa=reading(image, m.cylinder_plan, t_mono, t_utc),
            skin_c=skin,
            master_open=bit(image, status, "master_open"),
            supply_low=bit(image, status, "supply_low"),
            lease=LeaseStatus(
                armed=bit(image, status, "lease_armed"),
                timeout_ms=as_int(image, sreg["lease_timeout_ms_rb"]),
                expired=faults.lease_expired,
                expiry_count=as_int(image, sreg["lease_expiry_count"]),
            ),
            faults=faults,
            probes=tuple(probes),
        )
