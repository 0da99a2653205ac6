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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from cryod.drivers.base import ConsoleLimits, TcStatus, TripCause
from cryod.drivers.profile import Profile

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

ValveCause = Literal["command", "lease_expired", "hard_limit", "fault", "console_limit"]


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


class SimConsole:
    """One simulated console. Not thread-safe: used from one asyncio loop."""

    def __init__(
        self,
        profile: Profile,
        *,
        speed: float = 1.0,
        seed: int = 0,
        event_log_path: str | None = None,
    ) -> None:
        raise NotImplementedError

    # ---- lifecycle -----------------------------------------------------
    async def run(self) -> None:
        """Tick physics and console safety every ``profile.console.tick_s`` of wall
        time until cancelled (each tick advances simulated time by tick_s * speed)."""
        raise NotImplementedError

    def step(self, wall_dt_s: float) -> None:
        """Advance one tick by hand (tests of the pure model; run() calls this)."""
        raise NotImplementedError

    def close(self) -> None:
        """Flush and close the event log."""
        raise NotImplementedError

    # ---- identity and clocks -------------------------------------------
    @property
    def profile(self) -> Profile:
        raise NotImplementedError

    @property
    def now_s(self) -> float:
        """Console (simulated) time since power-on, seconds."""
        raise NotImplementedError

    @property
    def serial(self) -> str:
        raise NotImplementedError

    # ---- reads (never renew the lease) ---------------------------------
    def lease_armed(self) -> bool:
        raise NotImplementedError

    def lease_timeout_ms(self) -> int:
        raise NotImplementedError

    def lease_remaining_ms(self) -> int:
        raise NotImplementedError

    def lease_expiry_count(self) -> int:
        raise NotImplementedError

    def faults(self) -> frozenset[str]:
        """Latched faults: subset of {"lease_expired", "overpressure", "console_limit"}."""
        raise NotImplementedError

    def master_open(self) -> bool:
        raise NotImplementedError

    def supply_low(self) -> bool:
        raise NotImplementedError

    def helium_ok(self) -> bool:
        raise NotImplementedError

    def supply_kpa(self) -> float:
        """Measured regulated supply pressure."""
        raise NotImplementedError

    def cylinder_kpa(self) -> float:
        raise NotImplementedError

    def skin_c(self) -> float | None:
        """Measured skin temperature; None if open or the console has no skin channel."""
        raise NotImplementedError

    def probe(self, n: int) -> ProbeReading:
        """Measured state of probe n (1-based); raises CommandRejected("bad_probe")."""
        raise NotImplementedError

    def limits(self, n: int) -> ConsoleLimits | None:
        """Limits held for probe n (None when none are armed)."""
        raise NotImplementedError

    def pending_limits(self, n: int) -> dict[str, float]:
        """Limit values written but not yet armed (Modbus writes them one register
        at a time before writing limits_arm=1). Keys: max_on_time_s, min_tip_c,
        max_supply_kpa, consecutive."""
        raise NotImplementedError

    def true_state(self) -> dict[str, Any]:
        """JSON-able true physical state (for `cryosim state`): temperatures,
        pressures, valves, lease, faults, injected faults, counters."""
        raise NotImplementedError

    # ---- writes (each accepted one renews an armed lease) --------------
    def renew_lease(self, source: str = "host") -> None:
        """A write whose only purpose is renewal (heartbeat)."""
        raise NotImplementedError

    def set_lease_timeout(self, timeout_ms: int, source: str = "host") -> None:
        """0 disarms; otherwise must lie in the profile's lease_timeout_ms_range."""
        raise NotImplementedError

    def set_freeze(self, n: int, on: bool, source: str = "host") -> None:
        raise NotImplementedError

    def set_thaw(self, n: int, on: bool, source: str = "host") -> None:
        raise NotImplementedError

    def set_master(self, on: bool, source: str = "host") -> None:
        raise NotImplementedError

    def reset_faults(self, source: str = "host") -> None:
        """Clear latched faults; CommandRejected("cause_present") if a cause remains."""
        raise NotImplementedError

    def write_pending_limit(self, n: int, key: str, value: float, source: str = "host") -> None:
        """Stage one limit value (see pending_limits)."""
        raise NotImplementedError

    def arm_limits(self, n: int, on: bool, source: str = "host") -> None:
        """Arm the staged limits as a set (validated by ConsoleLimits; rejected
        with "limits_invalid" when incomplete or out of range), or disarm them.
        Arming restarts the probe's on-time count for the next freeze."""
        raise NotImplementedError

    def set_limits(self, n: int, limits: ConsoleLimits, source: str = "host") -> None:
        """Stage and arm in one write (the line protocol's LIMITS command)."""
        raise NotImplementedError

    def count_bad_request(self) -> None:
        """A wire server saw a request it rejected (bad value, read-only register,
        malformed frame); counted in the bad_requests register."""
        raise NotImplementedError

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
        raise NotImplementedError

    def clear(self, kind: str | None = None) -> None:
        raise NotImplementedError

    def comms_faults(self) -> dict[str, float | None]:
        """Active comms faults {kind: value}; the wire servers act on these:
        comms-silent: read requests and answer nothing; comms-corrupt: answer
        with a bad CRC/checksum, garbage bytes or a truncated frame (chosen by
        the seeded RNG); comms-slow: delay each answer by value ms;
        disconnect: drop every connection and refuse new ones (a pty: stop
        reading and writing) until cleared or for_s runs out."""
        raise NotImplementedError

    # ---- the ground truth ------------------------------------------------
    def log_event(self, event: str, **fields: Any) -> None:
        """Write one JSON line: {"event", "sim_t_s", "wall_t" (UTC ISO),
        "mono_t_s" (wall monotonic), **fields}. Events: "valve" (valve=
        freeze|thaw|master, probe, open, cause), "lease" (armed, timeout_ms) ,
        "lease_expired", "fault_latched"/"fault_reset", "fault_injected"/
        "fault_cleared" (kind, probe, value), "console_limit" (probe, cause,
        limit), "connection" (transport, state=opened|closed, peer),
        "bad_request" (transport, reason)."""
        raise NotImplementedError
