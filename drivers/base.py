"""The one narrow async interface every console driver implements.

Everything the daemon knows about a console arrives through these types, so
they carry what safety needs: every value has a unit, the time it was
determined (monotonic for durations, UTC for records) and a validity. Stale
or invalid data is never a bare number: ``Reading.value`` is ``None``
unless the validity says the number may be used.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

__all__ = [
    "ConsoleFaults",
    "ConsoleLimits",
    "Driver",
    "DriverError",
    "Identity",
    "LeaseStatus",
    "LimitTrip",
    "LinkError",
    "LinkStats",
    "ProbeState",
    "ProtocolError",
    "Reading",
    "RejectedError",
    "Snapshot",
    "TcStatus",
    "TripCause",
    "Validity",
]


class Validity(enum.StrEnum):
    """Validity of one measured value (after IEEE 11073 SDC's MeasurementValidity)."""

    VALID = "valid"
    QUESTIONABLE = "questionable"  # usable, but flagged (e.g. noisy, near a range edge)
    INVALID = "invalid"  # the console says it is wrong (open/shorted thermocouple, sentinel)
    STALE = "stale"  # not refreshed in time (link down, poll missed)

    @property
    def usable(self) -> bool:
        """True when the value may be compared against a limit."""
        return self in (Validity.VALID, Validity.QUESTIONABLE)


class TcStatus(enum.IntEnum):
    """Thermocouple status as the console reports it."""

    OK = 0
    OPEN = 1
    SHORT = 2


class TripCause(enum.IntEnum):
    """Why a console-held per-probe limit tripped (issue 10: defence in depth)."""

    NONE = 0
    MAX_ON_TIME = 1
    MIN_TIP = 2
    MAX_SUPPLY = 3


@dataclass(frozen=True, slots=True)
class Reading:
    """One measured value: number, unit, when it was determined, and whether it may be used."""

    value: float | None
    unit: str
    t_mono: float  # host monotonic seconds when determined
    t_utc: float  # host UTC, seconds since the epoch, when determined
    validity: Validity

    def __post_init__(self) -> None:
        if self.validity.usable and self.value is None:
            raise ValueError("a usable reading needs a value")

    @property
    def usable(self) -> bool:
        return self.validity.usable and self.value is not None

    def as_stale(self) -> Reading:
        return replace(self, value=None, validity=Validity.STALE)


@dataclass(frozen=True, slots=True)
class ConsoleLimits:
    """Per-probe limits the console itself enforces at its own tick (issue 10).

    ``consecutive`` is how many consecutive console ticks a temperature or
    pressure limit must be violated before it trips, so one noisy sample does
    not end a freeze. The on-time limit trips exactly when it runs out.
    """

    max_on_time_s: float
    min_tip_c: float
    max_supply_kpa: float
    consecutive: int

    def __post_init__(self) -> None:
        if not 0 < self.max_on_time_s <= 3600:
            raise ValueError(f"max_on_time_s {self.max_on_time_s} outside (0, 3600]")
        if not -200 <= self.min_tip_c <= 50:
            raise ValueError(f"min_tip_c {self.min_tip_c} outside [-200, 50]")
        if not 0 < self.max_supply_kpa <= 65000:
            raise ValueError(f"max_supply_kpa {self.max_supply_kpa} outside (0, 65000]")
        if not 1 <= self.consecutive <= 100:
            raise ValueError(f"consecutive {self.consecutive} outside [1, 100]")


@dataclass(frozen=True, slots=True)
class LimitTrip:
    """A console-side limit trip, latched like a lease fault."""

    probe: int
    cause: TripCause
    console_time_s: float  # console clock when it tripped


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeState:
    probe: int  # 1-based, as printed on the console
    tip_c: Reading
    return_kpa: Reading
    tc_status: TcStatus
    freeze_open: bool  # valve state as the console reports it (read back, not as commanded)
    thaw_on: bool
    limits_armed: bool = False  # the console holds confirmed limits for this probe
    trip: TripCause = TripCause.NONE


@dataclass(frozen=True, slots=True)
class LeaseStatus:
    armed: bool
    timeout_ms: int
    expired: bool  # latched until faults are reset
    expiry_count: int


@dataclass(frozen=True, slots=True)
class ConsoleFaults:
    """Latched console faults; the console refuses to open valves while any is set."""

    lease_expired: bool = False
    overpressure: bool = False  # console hard limit on supply pressure
    console_limit: bool = False  # a per-probe limit from ConsoleLimits tripped
    trips: tuple[LimitTrip, ...] = ()

    @property
    def any(self) -> bool:
        return self.lease_expired or self.overpressure or self.console_limit

    def names(self) -> list[str]:
        out = []
        if self.lease_expired:
            out.append("lease_expired")
        if self.overpressure:
            out.append("overpressure")
        if self.console_limit:
            out.append("console_limit")
        return out


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every channel of one console, read in one poll."""

    seq: int  # poll sequence number, per driver, increasing
    t_mono: float
    t_utc: float
    console_time_s: float  # the console's own clock (simulated time on cryosim)
    supply_kpa: Reading  # regulated supply to the probes
    cylinder_kpa: Reading
    skin_c: Reading | None  # None when the console has no skin channel
    master_open: bool
    supply_low: bool  # the console's own low-supply flag
    lease: LeaseStatus
    faults: ConsoleFaults
    probes: tuple[ProbeState, ...]

    def probe(self, number: int) -> ProbeState:
        return self.probes[number - 1]

    @property
    def any_freeze_open(self) -> bool:
        return any(p.freeze_open for p in self.probes)


@dataclass(frozen=True, slots=True)
class Identity:
    model: str
    serial: str
    firmware: str
    probes: int
    gas: str  # "argon", "n2o", "co2"
    capabilities: frozenset[str] = field(default_factory=frozenset)
    # Known capability names: "active_thaw_helium", "active_thaw_electric",
    # "skin_channel", "console_limits".

    @property
    def has_console_limits(self) -> bool:
        return "console_limits" in self.capabilities


@dataclass(slots=True)
class LinkStats:
    """Counters a driver keeps about its link; exposed in status and benchmarks."""

    transactions: int = 0
    timeouts: int = 0
    retries: int = 0
    bad_frames: int = 0  # CRC/checksum, truncated, wrong length/unit/function, garbage
    reconnects: int = 0
    seq_gaps: int = 0  # frames missing from the console's own sequence (line protocol)
    connected: bool = False
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "transactions": self.transactions,
            "timeouts": self.timeouts,
            "retries": self.retries,
            "bad_frames": self.bad_frames,
            "reconnects": self.reconnects,
            "seq_gaps": self.seq_gaps,
            "connected": self.connected,
            "last_error": self.last_error,
        }


class DriverError(Exception):
    """Base of every error a driver raises; the daemon catches only these."""


class LinkError(DriverError):
    """The link is down, timed out or returned garbage: values are now stale."""


class ProtocolError(DriverError):
    """The console answered, but not as the protocol says (counted as a bad frame)."""


class RejectedError(DriverError):
    """The console refused a command (e.g. valve open while a fault is latched)."""


class Driver(abc.ABC):
    """A console behind one link. One instance owns its link: all I/O goes through it.

    Every method has a bounded duration: implementations apply a timeout to
    every transaction and raise ``LinkError`` rather than wait forever.
    Commands are confirmed (read back, or acknowledged by the console) before
    they return; an unconfirmed command raises.
    """

    #: entry-point name, e.g. "modbus-tcp"
    name: ClassVar[str] = ""

    @classmethod
    @abc.abstractmethod
    def from_options(cls, options: Mapping[str, Any], *, source: str = "<config>") -> Driver:
        """Build from the daemon config's driver options; raise ValueError naming
        ``source``, the key and the reason on any bad option."""

    @property
    @abc.abstractmethod
    def stats(self) -> LinkStats: ...

    @abc.abstractmethod
    def min_poll_period_s(self) -> float:
        """Shortest poll period this link can carry (from the profile and baud rate)."""

    @abc.abstractmethod
    async def connect(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def identify(self) -> Identity: ...

    @abc.abstractmethod
    async def read_snapshot(self) -> Snapshot:
        """Read every channel. Raises LinkError; never returns repeated old values."""

    @abc.abstractmethod
    async def set_freeze(self, probe: int, on: bool) -> None: ...

    @abc.abstractmethod
    async def set_thaw(self, probe: int, on: bool) -> None: ...

    @abc.abstractmethod
    async def set_master(self, on: bool) -> None: ...

    @abc.abstractmethod
    async def arm_lease(self, timeout_ms: int) -> None:
        """Arm the console lease (0 disarms). Confirmed by reading it back."""

    @abc.abstractmethod
    async def renew_lease(self) -> None:
        """Renew the lease by a write (reads never renew it)."""

    @abc.abstractmethod
    async def read_faults(self) -> ConsoleFaults: ...

    @abc.abstractmethod
    async def reset_faults(self) -> None: ...

    @abc.abstractmethod
    async def write_limits(self, probe: int, limits: ConsoleLimits) -> None:
        """Hand per-probe limits to the console (issue 10)."""

    @abc.abstractmethod
    async def read_limits(self, probe: int) -> ConsoleLimits | None:
        """Read back the limits the console holds for a probe (None if it holds none)."""
