"""The simulated console: physics, console-side safety (lease, hard limits,
per-probe limits), fault injection and the ground-truth event log.

CONTRACT (fixed; the wire servers in modbus_server.py and line_server.py and
the control socket are written against it). The wire servers translate
frames into these calls and never touch physics directly.

Clocks: physics, valve on-time and per-probe limits run on *simulated* time
(``now_s``), which advances ``speed`` times faster than the wall clock. The
lease watches the host over a real link, so it runs on the *wall* monotonic
clock: a 1000 ms lease is 1000 ms of real time at any speed.

Writes and the lease: every accepted host write (any call marked "write")
renews an armed lease; reads never do. Rejected writes do not renew.
While the lease is disarmed the console refuses to open any valve (freeze,
thaw, master). On expiry every freeze valve, every thaw and the master
valve close (cause ``lease_expired``), the ``lease_expired`` fault latches,
and the expiry counter increments.

Latched faults (``lease_expired``, ``overpressure``, ``console_limit``)
make the console refuse to open valves until ``reset_faults`` succeeds, which
it does only once the cause is gone (e.g. supply back under the hard limit).

IMPLEMENTATION NOTES (behaviour a client can rely on; docs/simulator.md):
- Gas reaches a probe only while the master valve AND its freeze valve are
  physically open: open the master before freezing (helium thaw needs the
  master too; an electric heater does not).
- Measured values (noise, quantisation, sensor faults) are sampled once per
  tick; reads between ticks return the last sample.
- Every write first checks the lease deadline, so a write that arrives after
  the deadline finds the lease already expired (it cannot rescue it).
- Disarming the lease is refused ("cause_present") while any valve is open.
- Per-probe limits are checked only while that probe's freeze valve is
  commanded open; an invalid thermocouple counts as a min_tip violation.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from cryod.drivers.base import ConsoleLimits, TcStatus, TripCause
from cryod.drivers.profile import Profile

from . import physics
from .eventlog import EventLog

__all__ = [
    "COMMS_FAULTS",
    "FAULT_KINDS",
    "CommandRejected",
    "ProbeReading",
    "SimConsole",
]

FAULT_KINDS = (
    "tc-open",
    "tc-short",
    "tc-stuck",
    "tc-noise",
    "temp-offset",
    "supply-low",
    "supply-leak",
    "overpressure",
    "valve-stuck-open",
    "valve-stuck-closed",
    "comms-silent",
    "comms-corrupt",
    "comms-slow",
    "disconnect",
)
#: fault kinds whose effect the wire servers implement (they ask ``comms_faults()``)
COMMS_FAULTS = ("comms-silent", "comms-corrupt", "comms-slow", "disconnect")
#: fault kinds that act on one probe (probe None = every probe)
PROBE_FAULTS = (
    "tc-open",
    "tc-short",
    "tc-stuck",
    "tc-noise",
    "temp-offset",
    "valve-stuck-open",
    "valve-stuck-closed",
)

#: fault kinds applied when the console samples its sensors (once per tick)
SENSOR_FAULTS = ("tc-open", "tc-short", "tc-stuck", "tc-noise", "temp-offset")

ValveCause = Literal["command", "lease_expired", "hard_limit", "fault", "console_limit"]

LIMIT_KEYS = ("max_on_time_s", "min_tip_c", "max_supply_kpa", "consecutive")

# sensor realism (assumptions; the register scales set the quantisation)
TIP_NOISE_C = 0.2
TIP_QUANTUM_C = 0.1
RETURN_NOISE_KPA = 0.3
RETURN_QUANTUM_KPA = 0.1
SUPPLY_NOISE_KPA = 5.0
CYLINDER_NOISE_KPA = 10.0
SKIN_NOISE_C = 0.1
# fault defaults when no value is given
TC_NOISE_DEFAULT_C = 5.0
SUPPLY_LEAK_DEFAULT_KPA_PER_S = 50.0
COMMS_SLOW_DEFAULT_MS = 500.0
_ON_TIME_EPS_S = 1e-9


class CommandRejected(Exception):
    """The console refused a host write; ``code`` is a short stable reason.

    Codes: "lease_disarmed", "fault_latched", "out_of_range", "bad_probe",
    "read_only", "cause_present", "limits_invalid".
    """

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(message or code)
        self.code = code


@dataclass(frozen=True, slots=True)
class ProbeReading:
    """What the console's sensors report for one probe (noise, quantisation and
    faults included), as opposed to the true physical state."""

    tip_c: float | None  # None when tc_status is not OK (wire: sentinel value)
    tc_status: TcStatus
    return_kpa: float
    freeze_open: bool
    thaw_on: bool
    limits_armed: bool
    trip: TripCause
    trip_time_s: float  # console time of the trip, 0 when none
    on_time_s: float  # freeze-valve on-time of the current freeze


@dataclass(slots=True)
class _Injected:
    value: float | None
    until_mono: float | None  # wall monotonic auto-clear time
    sensed: bool = False  # a sensor fault: in the measured values since a tick


@dataclass(slots=True)
class _Probe:
    phys: physics.ProbePhysics = field(default_factory=physics.ProbePhysics)
    freeze_cmd: bool = False
    thaw_cmd: bool = False
    logged_freeze: tuple[bool, bool] = (False, False)  # (commanded, physical) last logged
    on_time_s: float = 0.0
    limits: ConsoleLimits | None = None
    pending: dict[str, float] = field(default_factory=dict)
    trip: TripCause = TripCause.NONE
    trip_time_s: float = 0.0
    tip_violations: int = 0
    supply_violations: int = 0
    meas_tip_c: float | None = physics.PROBE_START_C
    meas_raw_tip_c: float = physics.PROBE_START_C  # before the status check (stuck source)
    tc_status: TcStatus = TcStatus.OK
    meas_return_kpa: float = 0.0
    stuck_c: float | None = None


def _quantise(value: float, quantum: float) -> float:
    return round(round(value / quantum) * quantum, 6)


class SimConsole:
    """One simulated console. Not thread-safe: used from one asyncio loop."""

    def __init__(
        self,
        profile: Profile,
        *,
        speed: float = 1.0,
        seed: int = 0,
        event_log_path: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not speed > 0 or not math.isfinite(speed):
            raise ValueError(f"speed {speed} must be a positive number")
        self._profile = profile
        self._spec = profile.console
        self._gas = physics.GASES[self._spec.gas]
        self._speed = float(speed)
        self._seed = seed
        self._clock = clock
        self._rng = random.Random(seed)
        self._log = EventLog(event_log_path)
        lo, hi = self._spec.supply_working_kpa
        self._set_point_kpa = min(
            (lo + hi) / 2.0, self._gas.cylinder_full_kpa - self._gas.regulator_dropout_kpa
        )
        self._nominal_kpa = self._set_point_kpa
        self._now_s = 0.0
        self._ticks = 0
        self._supply = physics.SupplyPhysics(
            cylinder_kpa=self._gas.cylinder_full_kpa, supply_kpa=self._set_point_kpa
        )
        self._skin_true_c = physics.SKIN_BASE_C
        self._probes = [_Probe() for _ in range(self._spec.probes)]
        self._master_cmd = False
        self._lease_timeout_ms = 0
        self._lease_deadline = 0.0
        self._lease_renewed_mono = 0.0  # wall monotonic time of the renewing write
        self._lease_expired = False
        self._lease_expiries = 0
        self._faults: set[str] = set()
        self._bad_requests = 0
        self._injected: dict[tuple[str, int | None], _Injected] = {}
        self._meas_supply_kpa = self._set_point_kpa
        self._meas_cylinder_kpa = self._supply.cylinder_kpa
        self._meas_skin_c: float | None = physics.SKIN_BASE_C if self._has("skin_channel") else None
        self._measure()
        self.log_event(
            "power_on",
            model=self._spec.model,
            serial=self.serial,
            gas=self._spec.gas,
            probes=self._spec.probes,
            speed=self._speed,
            seed=seed,
        )

    # ---- lifecycle -----------------------------------------------------
    async def run(self) -> None:
        """Tick physics and console safety every ``profile.console.tick_s`` of wall
        time until cancelled (each tick advances simulated time by tick_s * speed)."""
        tick = self._spec.tick_s
        last = self._clock()
        deadline = last + tick
        while True:
            await asyncio.sleep(max(0.0, deadline - self._clock()))
            now = self._clock()
            self.step(now - last)
            last = now
            deadline += tick
            if deadline < now:  # fell behind (loop stalled): do not burst
                deadline = now + tick

    def step(self, wall_dt_s: float) -> None:
        """Advance one tick by hand (tests of the pure model; run() calls this)."""
        self._ticks += 1
        self._expire_injected()
        self._check_lease()
        self._advance(max(0.0, wall_dt_s) * self._speed)
        self._measure()
        self._check_hard_limits()
        self._check_probe_limits()

    def close(self) -> None:
        """Flush and close the event log."""
        self._log.close()

    # ---- identity and clocks -------------------------------------------
    @property
    def profile(self) -> Profile:
        return self._profile

    @property
    def now_s(self) -> float:
        """Console (simulated) time since power-on, seconds."""
        return self._now_s

    @property
    def serial(self) -> str:
        return f"SIM{abs(self._seed) % 100000:05d}"

    @property
    def speed(self) -> float:
        return self._speed

    @property
    def event_log(self) -> EventLog:
        """The event log (its in-memory tail is handy in tests)."""
        return self._log

    # ---- reads (never renew the lease) ---------------------------------
    def lease_armed(self) -> bool:
        return self._lease_timeout_ms > 0

    def lease_timeout_ms(self) -> int:
        return self._lease_timeout_ms

    def lease_remaining_ms(self) -> int:
        if not self.lease_armed() or self._lease_expired:
            return 0
        left = self._lease_deadline - self._clock()
        return max(0, min(int(left * 1000.0), self._lease_timeout_ms))

    def lease_expiry_count(self) -> int:
        return self._lease_expiries & 0xFFFF

    def bad_request_count(self) -> int:
        """Requests the wire servers rejected (wraps at 65536)."""
        return self._bad_requests & 0xFFFF

    def faults(self) -> frozenset[str]:
        """Latched faults: subset of {"lease_expired", "overpressure", "console_limit"}."""
        return frozenset(self._faults)

    def master_open(self) -> bool:
        return self._master_cmd

    def supply_low(self) -> bool:
        low = self._spec.supply_working_kpa[0]
        return self._meas_supply_kpa < low or self._meas_cylinder_kpa < low

    def helium_ok(self) -> bool:
        return self._has("active_thaw_helium")

    def supply_kpa(self) -> float:
        """Measured regulated supply pressure."""
        return self._meas_supply_kpa

    def cylinder_kpa(self) -> float:
        return self._meas_cylinder_kpa

    def skin_c(self) -> float | None:
        """Measured skin temperature; None if open or the console has no skin channel."""
        return self._meas_skin_c

    def probe(self, n: int) -> ProbeReading:
        """Measured state of probe n (1-based); raises CommandRejected("bad_probe")."""
        p = self._probe(n)
        return ProbeReading(
            tip_c=p.meas_tip_c,
            tc_status=p.tc_status,
            return_kpa=p.meas_return_kpa,
            freeze_open=p.freeze_cmd,
            thaw_on=p.thaw_cmd,
            limits_armed=p.limits is not None,
            trip=p.trip,
            trip_time_s=p.trip_time_s,
            on_time_s=p.on_time_s,
        )

    def limits(self, n: int) -> ConsoleLimits | None:
        """Limits held for probe n (None when none are armed)."""
        return self._probe(n).limits

    def pending_limits(self, n: int) -> dict[str, float]:
        """Limit values written but not yet armed (Modbus writes them one register
        at a time before writing limits_arm=1). Keys: max_on_time_s, min_tip_c,
        max_supply_kpa, consecutive."""
        return dict(self._probe(n).pending)

    def true_state(self) -> dict[str, Any]:
        """JSON-able true physical state (for `cryosim state`): temperatures,
        pressures, valves, lease, faults, injected faults, counters."""
        now_mono = self._clock()
        probes = []
        for i, p in enumerate(self._probes, start=1):
            lim = p.limits
            probes.append(
                {
                    "probe": i,
                    "tip_c": round(p.phys.tip_c, 3),
                    "ice_s": round(p.phys.ice_s, 3),
                    "return_kpa": round(p.phys.return_kpa, 3),
                    "freeze_commanded": p.freeze_cmd,
                    "freeze_open": self._freeze_physical(i),
                    "gas_flowing": self._flowing(i),
                    "thaw_on": p.thaw_cmd,
                    "thaw_active": self._thaw_kind(i) is not None,
                    "measured_tip_c": p.meas_tip_c,
                    "tc_status": p.tc_status.name.lower(),
                    "on_time_s": round(p.on_time_s, 6),
                    "limits": None if lim is None else {k: getattr(lim, k) for k in LIMIT_KEYS},
                    "pending_limits": dict(p.pending),
                    "trip": p.trip.name.lower(),
                    "trip_time_s": p.trip_time_s,
                }
            )
        return {
            "model": self._spec.model,
            "serial": self.serial,
            "gas": self._spec.gas,
            "sim_t_s": round(self._now_s, 6),
            "speed": self._speed,
            "seed": self._seed,
            "lease": {
                "armed": self.lease_armed(),
                "timeout_ms": self._lease_timeout_ms,
                "remaining_ms": self.lease_remaining_ms(),
                "expired": self._lease_expired,
                "expiry_count": self._lease_expiries,
            },
            "faults": sorted(self._faults),
            "master_open": self._master_cmd,
            "supply": {
                "cylinder_kpa": round(self._supply.cylinder_kpa, 3),
                "supply_kpa": round(self._supply.supply_kpa, 3),
                "set_point_kpa": self._set_point_kpa,
                "measured_supply_kpa": self._meas_supply_kpa,
                "measured_cylinder_kpa": self._meas_cylinder_kpa,
                "supply_low": self.supply_low(),
                "hard_limit_kpa": self._spec.supply_max_kpa,
            },
            "skin": None
            if not self._has("skin_channel")
            else {"skin_c": round(self._skin_true_c, 3), "measured_skin_c": self._meas_skin_c},
            "probes": probes,
            "injected": [
                {
                    "kind": kind,
                    "probe": probe,
                    "value": inj.value,
                    "remaining_s": None
                    if inj.until_mono is None
                    else round(max(0.0, inj.until_mono - now_mono), 3),
                }
                for (kind, probe), inj in sorted(
                    self._injected.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)
                )
            ],
            "counters": {
                "ticks": self._ticks,
                "bad_requests": self._bad_requests,
                "lease_expiries": self._lease_expiries,
                "events": self._log.written,
            },
        }

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        """The most recent event-log records held in memory (optionally one kind)."""
        return self._log.recent(event)

    # ---- writes (each accepted one renews an armed lease) --------------
    def renew_lease(self, source: str = "host") -> None:
        """A write whose only purpose is renewal (heartbeat)."""
        self._check_lease()
        self._accept_write()

    def set_lease_timeout(self, timeout_ms: int, source: str = "host") -> None:
        """0 disarms; otherwise must lie in the profile's lease_timeout_ms_range."""
        self._check_lease()
        if timeout_ms == 0:
            if self._any_valve_commanded():
                self._reject(
                    "cause_present", "close every valve before disarming the lease", source
                )
            was = self._lease_timeout_ms
            self._lease_timeout_ms = 0
            self._lease_expired = False
            if was:
                self.log_event("lease", armed=False, timeout_ms=0, source=source)
            return
        lo, hi = self._spec.lease_timeout_ms_range
        if not lo <= timeout_ms <= hi:
            self._reject(
                "out_of_range", f"lease timeout {timeout_ms} ms outside {lo}..{hi}", source
            )
        changed = timeout_ms != self._lease_timeout_ms
        self._lease_timeout_ms = int(timeout_ms)
        self._accept_write()
        if changed:
            self.log_event("lease", armed=True, timeout_ms=self._lease_timeout_ms, source=source)

    def set_freeze(self, n: int, on: bool, source: str = "host") -> None:
        p = self._probe(n)
        self._check_lease()
        if on:
            self._require_may_open(source)
        self._accept_write()
        if on and not p.freeze_cmd:  # a new freeze: its on-time starts at zero
            p.on_time_s = 0.0
            p.tip_violations = p.supply_violations = 0
        p.freeze_cmd = on
        self._sync_freeze(n, "command", source)

    def set_thaw(self, n: int, on: bool, source: str = "host") -> None:
        p = self._probe(n)
        self._check_lease()
        if on:
            if self._thaw_capability() is None:
                self._reject("out_of_range", "this console has no active thaw", source)
            self._require_may_open(source)
        self._accept_write()
        if p.thaw_cmd != on:
            p.thaw_cmd = on
            self.log_event("valve", valve="thaw", probe=n, open=on, cause="command", source=source)

    def set_master(self, on: bool, source: str = "host") -> None:
        self._check_lease()
        if on:
            self._require_may_open(source)
        self._accept_write()
        if self._master_cmd != on:
            self._master_cmd = on
            self.log_event(
                "valve", valve="master", probe=None, open=on, cause="command", source=source
            )

    def reset_faults(self, source: str = "host") -> None:
        """Clear latched faults; CommandRejected("cause_present") if a cause remains."""
        self._check_lease()
        present = []
        if "overpressure" in self._faults and self._overpressure_present():
            present.append("overpressure")
        if "console_limit" in self._faults:
            present += [f"console_limit probe {n}" for n in self._limit_causes_present()]
        if present:
            self._reject("cause_present", "cause still present: " + ", ".join(present), source)
        self._accept_write()
        cleared = sorted(self._faults)
        self._faults.clear()
        for p in self._probes:
            p.trip, p.trip_time_s = TripCause.NONE, 0.0
            p.tip_violations = p.supply_violations = 0
        if cleared:
            self.log_event("fault_reset", faults=cleared, source=source)

    def write_pending_limit(self, n: int, key: str, value: float, source: str = "host") -> None:
        """Stage one limit value (see pending_limits)."""
        p = self._probe(n)
        self._check_lease()
        self._require_limits_capability(source)
        if key not in LIMIT_KEYS:
            self._reject("out_of_range", f"unknown limit {key!r}", source)
        if not math.isfinite(value):
            self._reject("out_of_range", f"limit {key} is not a finite number", source)
        self._accept_write()
        p.pending[key] = float(value)

    def arm_limits(self, n: int, on: bool, source: str = "host") -> None:
        """Arm the staged limits as a set (validated by ConsoleLimits; rejected
        with "limits_invalid" when incomplete or out of range), or disarm them.
        Arming restarts the probe's on-time count for the next freeze."""
        p = self._probe(n)
        self._check_lease()
        self._require_limits_capability(source)
        if not on:
            self._accept_write()
            if p.limits is not None:
                p.limits = None
                self.log_event("limits", probe=n, armed=False, source=source)
            return
        limits = self._validate_pending(n, p.pending, source)
        self._accept_write()
        p.limits = limits
        p.on_time_s = 0.0
        p.tip_violations = p.supply_violations = 0
        self.log_event(
            "limits",
            probe=n,
            armed=True,
            source=source,
            **{k: getattr(limits, k) for k in LIMIT_KEYS},
        )

    def set_limits(self, n: int, limits: ConsoleLimits, source: str = "host") -> None:
        """Stage and arm in one write (the line protocol's LIMITS command)."""
        p = self._probe(n)
        self._require_limits_capability(source)
        p.pending = {k: float(getattr(limits, k)) for k in LIMIT_KEYS}
        self.arm_limits(n, True, source)

    def count_bad_request(self, *, transport: str | None = None, reason: str | None = None) -> None:
        """A wire server saw a request it rejected (bad value, read-only register,
        malformed frame); counted in the bad_requests register. When the server
        passes ``transport``/``reason`` a "bad_request" event is logged too."""
        self._bad_requests += 1
        if transport is not None or reason is not None:
            self.log_event("bad_request", transport=transport, reason=reason)

    # ---- fault injection (control socket) -------------------------------
    def inject(
        self,
        kind: str,
        *,
        probe: int | None = None,
        value: float | None = None,
        for_s: float | None = None,
    ) -> None:
        """Inject a fault (kinds: FAULT_KINDS); for_s is wall seconds; probe None = all."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r} (known: {', '.join(FAULT_KINDS)})")
        if probe is not None:
            if kind not in PROBE_FAULTS:
                raise ValueError(f"{kind} acts on the whole console; it takes no probe")
            if not 1 <= probe <= self._spec.probes:
                raise ValueError(f"probe {probe} outside 1..{self._spec.probes}")
        if value is not None and not math.isfinite(value):
            raise ValueError("value must be a finite number")
        if for_s is not None and not (math.isfinite(for_s) and for_s > 0):
            raise ValueError("for_s must be a positive number of seconds")
        value = self._fault_value(kind, value)
        until = None if for_s is None else self._clock() + for_s
        self._injected[(kind, probe)] = _Injected(value, until)
        self.log_event("fault_injected", kind=kind, probe=probe, value=value, for_s=for_s)
        self._sync_all_freeze("fault")

    def clear(self, kind: str | None = None) -> None:
        if kind is not None and kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        for key in [k for k in self._injected if kind is None or k[0] == kind]:
            self._remove_injected(key, "cleared")
        self._sync_all_freeze("fault")

    def comms_faults(self) -> dict[str, float | None]:
        """Active comms faults {kind: value}; the wire servers act on these:
        comms-silent: read requests and answer nothing; comms-corrupt: answer
        with a bad CRC/checksum, garbage bytes or a truncated frame (chosen by
        the seeded RNG); comms-slow: delay each answer by value ms;
        disconnect: drop every connection and refuse new ones (a pty: stop
        reading and writing) until cleared or for_s runs out."""
        self._expire_injected()
        return {k: inj.value for (k, _), inj in self._injected.items() if k in COMMS_FAULTS}

    def injected(self) -> list[tuple[str, int | None, float | None]]:
        """Active injected faults as (kind, probe, value)."""
        self._expire_injected()
        return [(k, p, inj.value) for (k, p), inj in self._injected.items()]

    # ---- the ground truth ------------------------------------------------
    def log_event(self, event: str, **fields: Any) -> None:
        """Write one JSON line: {"event", "sim_t_s", "wall_t" (UTC ISO),
        "mono_t_s" (wall monotonic), **fields}. Events: "valve" (valve=
        freeze|thaw|master, probe, open, cause), "lease" (armed, timeout_ms) ,
        "lease_expired", "fault_latched"/"fault_reset", "fault_injected"/
        "fault_cleared" (kind, probe, value), "console_limit" (probe, cause,
        limit), "connection" (transport, state=opened|closed, peer),
        "bad_request" (transport, reason)."""
        record: dict[str, Any] = {
            "event": event,
            "sim_t_s": round(self._now_s, 6),
            "wall_t": datetime.now(UTC).isoformat(timespec="microseconds"),
            "mono_t_s": round(self._clock(), 6),
        }
        record.update(fields)
        self._log.write(record)

    # ---- internals: configuration ---------------------------------------
    def _has(self, capability: str) -> bool:
        return capability in self._spec.capabilities

    def _thaw_capability(self) -> physics.ThawKind | None:
        if self._has("active_thaw_helium"):
            return "helium"
        if self._has("active_thaw_electric"):
            return "electric"
        return None

    def _probe(self, n: int) -> _Probe:
        if not isinstance(n, int) or not 1 <= n <= self._spec.probes:
            raise CommandRejected("bad_probe", f"probe {n} outside 1..{self._spec.probes}")
        return self._probes[n - 1]

    def _fault_value(self, kind: str, value: float | None) -> float | None:
        if kind == "tc-noise":
            return TC_NOISE_DEFAULT_C if value is None else abs(value)
        if kind == "temp-offset":
            if value is None:
                raise ValueError("temp-offset needs a value (degrees C to add)")
            return value
        if kind == "supply-low":
            if value is not None and value < 0:
                raise ValueError("supply-low value is a pressure in kPa (>= 0)")
            return 0.75 * self._spec.supply_working_kpa[0] if value is None else value
        if kind == "supply-leak":
            if value is not None and value <= 0:
                raise ValueError("supply-leak value is a loss rate in kPa/s (> 0)")
            return SUPPLY_LEAK_DEFAULT_KPA_PER_S if value is None else value
        if kind == "overpressure":
            if value is not None and value <= self._spec.supply_max_kpa:
                raise ValueError(
                    f"overpressure value must exceed the hard limit {self._spec.supply_max_kpa} kPa"
                )
            return 1.1 * self._spec.supply_max_kpa if value is None else value
        if kind == "comms-slow":
            if value is not None and value < 0:
                raise ValueError("comms-slow value is a delay in ms (>= 0)")
            return COMMS_SLOW_DEFAULT_MS if value is None else value
        return value

    # ---- internals: faults -------------------------------------------------
    def _fault(self, kind: str, probe: int | None = None) -> _Injected | None:
        if probe is not None:
            inj = self._injected.get((kind, probe))
            if inj is not None:
                return inj
        return self._injected.get((kind, None))

    def _log_sensed(self) -> None:
        """Log the tick at which a sensor fault first reaches the measured values: that
        tick, not the injection, is when the console's reading changes (a crossing that
        the console and any client can see starts there)."""
        for (kind, probe), inj in self._injected.items():
            if not inj.sensed and kind in SENSOR_FAULTS:
                inj.sensed = True
                self.log_event("fault_sensed", kind=kind, probe=probe, value=inj.value)

    def _remove_injected(self, key: tuple[str, int | None], why: str) -> None:
        inj = self._injected.pop(key)
        self.log_event("fault_cleared", kind=key[0], probe=key[1], value=inj.value, reason=why)

    def _expire_injected(self) -> None:
        if not self._injected:
            return
        now = self._clock()
        expired = [
            k
            for k, inj in self._injected.items()
            if inj.until_mono is not None and now >= inj.until_mono
        ]
        for key in expired:
            self._remove_injected(key, "expired")
        if expired:
            self._sync_all_freeze("fault")

    # ---- internals: valves ------------------------------------------------
    def _freeze_physical(self, n: int) -> bool:
        if self._fault("valve-stuck-open", n) is not None:
            return True
        if self._fault("valve-stuck-closed", n) is not None:
            return False
        return self._probes[n - 1].freeze_cmd

    def _flowing(self, n: int) -> bool:
        return self._master_cmd and self._freeze_physical(n)

    def _thaw_kind(self, n: int) -> physics.ThawKind | None:
        if not self._probes[n - 1].thaw_cmd:
            return None
        kind = self._thaw_capability()
        if kind == "helium" and not self._master_cmd:
            return None  # helium comes through the master valve too
        return kind

    def _any_valve_commanded(self) -> bool:
        return self._master_cmd or any(p.freeze_cmd or p.thaw_cmd for p in self._probes)

    def _sync_freeze(self, n: int, cause: ValveCause, source: str | None = None) -> None:
        """Log a freeze-valve event when its commanded or physical state changed.
        ``open`` is the physical truth; ``commanded`` what the console reports."""
        p = self._probes[n - 1]
        now = (p.freeze_cmd, self._freeze_physical(n))
        if now != p.logged_freeze:
            p.logged_freeze = now
            fields: dict[str, Any] = {"valve": "freeze", "probe": n, "open": now[1]}
            fields.update(commanded=now[0], cause=cause)
            if source is not None:
                fields["source"] = source
            self.log_event("valve", **fields)

    def _sync_all_freeze(self, cause: ValveCause) -> None:
        for n in range(1, self._spec.probes + 1):
            self._sync_freeze(n, cause)

    def _close_all(self, cause: ValveCause) -> None:
        for n, p in enumerate(self._probes, start=1):
            p.freeze_cmd = False
            self._sync_freeze(n, cause)
            if p.thaw_cmd:
                p.thaw_cmd = False
                self.log_event("valve", valve="thaw", probe=n, open=False, cause=cause)
        if self._master_cmd:
            self._master_cmd = False
            self.log_event("valve", valve="master", probe=None, open=False, cause=cause)

    def _latch(self, fault: str, **fields: Any) -> None:
        if fault not in self._faults:
            self._faults.add(fault)
            self.log_event("fault_latched", fault=fault, **fields)

    # ---- internals: writes and the lease -----------------------------------
    def _reject(self, code: str, message: str, source: str) -> None:
        self.log_event("command_rejected", code=code, reason=message, source=source)
        raise CommandRejected(code, message)

    def _require_may_open(self, source: str) -> None:
        if not self.lease_armed():
            self._reject(
                "lease_disarmed", "the lease is disarmed: arm it before opening valves", source
            )
        if self._faults:
            self._reject(
                "fault_latched", "latched faults: " + ", ".join(sorted(self._faults)), source
            )

    def _require_limits_capability(self, source: str) -> None:
        if not self._has("console_limits"):
            self._reject("read_only", "this console does not hold per-probe limits", source)

    def _validate_pending(self, n: int, pending: dict[str, float], source: str) -> ConsoleLimits:
        missing = [k for k in LIMIT_KEYS if k not in pending]
        if missing:
            self._reject(
                "limits_invalid", f"probe {n}: limits not written: {', '.join(missing)}", source
            )
        consecutive = pending["consecutive"]
        if consecutive != int(consecutive):
            self._reject("limits_invalid", f"probe {n}: consecutive must be an integer", source)
        try:
            return ConsoleLimits(
                max_on_time_s=pending["max_on_time_s"],
                min_tip_c=pending["min_tip_c"],
                max_supply_kpa=pending["max_supply_kpa"],
                consecutive=int(consecutive),
            )
        except ValueError as exc:
            self._reject("limits_invalid", f"probe {n}: {exc}", source)
            raise  # unreachable: _reject raises

    def _accept_write(self) -> None:
        """An accepted write renews an armed lease (after the deadline check)."""
        if self.lease_armed():
            self._lease_renewed_mono = self._clock()
            self._lease_deadline = self._lease_renewed_mono + self._lease_timeout_ms / 1000.0
            self._lease_expired = False

    def _check_lease(self) -> None:
        if not self.lease_armed() or self._lease_expired:
            return
        if self._clock() < self._lease_deadline:
            return
        self._lease_expired = True
        self._lease_expiries += 1
        self.log_event(
            "lease_expired",
            timeout_ms=self._lease_timeout_ms,
            expiry_count=self._lease_expiries,
            renewed_mono_t_s=round(self._lease_renewed_mono, 6),
        )
        self._close_all("lease_expired")
        self._latch("lease_expired")

    # ---- internals: physics and console safety ---------------------------
    def _advance(self, sim_dt_s: float) -> None:
        remaining = sim_dt_s
        while remaining > 1e-12:
            h = min(remaining, physics.MAX_SUBSTEP_S)
            for p in self._probes:  # end a sub-step exactly when an on-time runs out
                if p.freeze_cmd and p.limits is not None:
                    h = min(h, max(0.0, p.limits.max_on_time_s - p.on_time_s))
            self._physics(h)
            self._now_s += h
            remaining -= h
            for n, p in enumerate(self._probes, start=1):
                if p.freeze_cmd:
                    p.on_time_s += h
                    lim = p.limits
                    if lim is not None and p.on_time_s >= lim.max_on_time_s - _ON_TIME_EPS_S:
                        p.on_time_s = lim.max_on_time_s
                        self._trip(n, TripCause.MAX_ON_TIME, lim.max_on_time_s, p.on_time_s)

    def _physics(self, dt_s: float) -> None:
        if dt_s <= 0:
            return
        flowing = [self._flowing(n) for n in range(1, self._spec.probes + 1)]
        leak = self._fault("supply-leak")
        low = self._fault("supply-low")
        over = self._fault("overpressure")
        physics.step_supply(
            self._supply,
            gas=self._gas,
            set_point_kpa=self._set_point_kpa,
            flowing=sum(flowing),
            leak_kpa_per_s=leak.value or 0.0 if leak is not None else 0.0,
            cap_kpa=low.value if low is not None else None,
            force_kpa=over.value if over is not None else None,
            dt_s=dt_s,
        )
        below_zero = 0
        for n, p in enumerate(self._probes, start=1):
            physics.step_probe(
                p.phys,
                gas=self._gas,
                flowing=flowing[n - 1],
                thaw=self._thaw_kind(n),
                supply_kpa=self._supply.supply_kpa,
                nominal_kpa=self._nominal_kpa,
                dt_s=dt_s,
            )
            below_zero += p.phys.tip_c < 0.0
        self._skin_true_c = physics.step_skin(self._skin_true_c, below_zero, dt_s)

    def _measure(self) -> None:
        """Sample every sensor once (noise, quantisation, sensor faults)."""
        self._log_sensed()
        g = self._rng.gauss
        for n, p in enumerate(self._probes, start=1):
            noise = self._fault("tc-noise", n)
            sigma = TIP_NOISE_C if noise is None or noise.value is None else noise.value
            raw = p.phys.tip_c + g(0.0, sigma)
            offset = self._fault("temp-offset", n)
            if offset is not None and offset.value is not None:
                raw += offset.value
            if self._fault("tc-stuck", n) is not None:
                if p.stuck_c is None:
                    p.stuck_c = p.meas_raw_tip_c
                raw = p.stuck_c
            else:
                p.stuck_c = None
            p.meas_raw_tip_c = _quantise(raw, TIP_QUANTUM_C)
            if self._fault("tc-open", n) is not None:
                p.tc_status = TcStatus.OPEN
            elif self._fault("tc-short", n) is not None:
                p.tc_status = TcStatus.SHORT
            else:
                p.tc_status = TcStatus.OK
            p.meas_tip_c = p.meas_raw_tip_c if p.tc_status is TcStatus.OK else None
            ret = p.phys.return_kpa + g(0.0, RETURN_NOISE_KPA)
            p.meas_return_kpa = max(0.0, _quantise(ret, RETURN_QUANTUM_KPA))
        self._meas_supply_kpa = max(
            0.0, float(round(self._supply.supply_kpa + g(0.0, SUPPLY_NOISE_KPA)))
        )
        self._meas_cylinder_kpa = max(
            0.0, float(round(self._supply.cylinder_kpa + g(0.0, CYLINDER_NOISE_KPA)))
        )
        if self._has("skin_channel"):
            self._meas_skin_c = _quantise(self._skin_true_c + g(0.0, SKIN_NOISE_C), TIP_QUANTUM_C)

    def _overpressure_present(self) -> bool:
        return self._meas_supply_kpa > self._spec.supply_max_kpa

    def _check_hard_limits(self) -> None:
        if not self._overpressure_present():
            return
        if "overpressure" not in self._faults or self._any_valve_commanded():
            self._close_all("hard_limit")
            self._latch(
                "overpressure",
                supply_kpa=self._meas_supply_kpa,
                limit_kpa=self._spec.supply_max_kpa,
            )

    def _tip_violates(self, p: _Probe, lim: ConsoleLimits) -> bool:
        # the console checks its own measured value; an invalid thermocouple
        # cannot prove the tip is warm enough, so it counts as a violation
        return p.meas_tip_c is None or p.meas_tip_c < lim.min_tip_c

    def _check_probe_limits(self) -> None:
        for n, p in enumerate(self._probes, start=1):
            lim = p.limits
            if lim is None or not p.freeze_cmd:
                p.tip_violations = p.supply_violations = 0
                continue
            p.tip_violations = p.tip_violations + 1 if self._tip_violates(p, lim) else 0
            over = self._meas_supply_kpa > lim.max_supply_kpa
            p.supply_violations = p.supply_violations + 1 if over else 0
            if p.tip_violations >= lim.consecutive:
                self._trip(n, TripCause.MIN_TIP, lim.min_tip_c, p.meas_tip_c)
            elif p.supply_violations >= lim.consecutive:
                self._trip(n, TripCause.MAX_SUPPLY, lim.max_supply_kpa, self._meas_supply_kpa)

    def _trip(self, n: int, cause: TripCause, limit: float, measured: float | None) -> None:
        p = self._probes[n - 1]
        p.trip = cause
        p.trip_time_s = self._now_s
        p.freeze_cmd = False
        p.tip_violations = p.supply_violations = 0
        self.log_event(
            "console_limit", probe=n, cause=cause.name.lower(), limit=limit, measured=measured
        )
        self._sync_freeze(n, "console_limit")
        self._latch("console_limit", probe=n, cause=cause.name.lower())

    def _limit_causes_present(self) -> list[int]:
        out = []
        for n, p in enumerate(self._probes, start=1):
            lim = p.limits
            if p.trip is TripCause.NONE or lim is None:
                continue
            if (p.trip is TripCause.MIN_TIP and self._tip_violates(p, lim)) or (
                p.trip is TripCause.MAX_SUPPLY and self._meas_supply_kpa > lim.max_supply_kpa
            ):
                out.append(n)
        return out
