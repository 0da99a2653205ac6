"""Site safety limits, the console envelope, and the margin of the console-held limits.

Pure: no I/O. ``SafetyLimits`` is the site's configuration (a pydantic model,
unknown keys are errors, values out of range are rejected, never clamped);
``ConsoleEnvelope`` is what the console can do (from its profile or
identity). Both feed protocol validation, the interlocks, the engine and the
supervisor, so one number means the same thing everywhere.

Layered limits (issue 10), from first to trip to last:

1. the engine closes the freeze valve at the planned time (next poll);
2. the supervisor trips at planned + ``on_time_grace_s``, at the protocol's
   tip floor, above the supply band's upper edge;
3. the console's own per-probe limits (``console_limits_for``), set wider by
   ``ConsoleMargin`` so they only act when the host is alive and wrong;
4. the console's hard supply limit and its lease.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cryod.drivers.base import ConsoleLimits, Identity

__all__ = [
    "ConsoleEnvelope",
    "ConsoleMargin",
    "FreezePlan",
    "SafetyLimits",
    "Supervision",
    "console_limits_for",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ConsoleMargin(_Strict):
    """How much wider the console's limits are than the supervisor's own.

    Wider so the supervisor trips first in normal operation and the console is
    only the backstop; narrow enough that the backstop still protects. The
    on-time margin is the larger of the absolute and the relative figure.
    """

    on_time_s: float = Field(default=5.0, ge=1.0, le=60.0)
    on_time_frac: float = Field(default=0.05, ge=0.0, le=0.5)
    tip_c: float = Field(default=10.0, ge=1.0, le=30.0)
    supply_frac: float = Field(default=0.05, ge=0.0, le=0.2)
    consecutive: int = Field(default=3, ge=1, le=20)


class SafetyLimits(_Strict):
    """The site's safety limits. Defaults follow docs/safety.md and domain.md.

    Durations are per probe. ``max_freeze_s_per_cycle`` bounds one freeze
    including its extensions; ``..._per_protocol`` the planned freeze time of
    one protocol run; ``..._per_procedure`` the cumulative freeze time of a
    probe during one open procedure (repositioning freezes included).
    """

    # protocol and command limits
    max_freeze_s_per_cycle: float = Field(default=300.0, gt=0, le=1800)
    max_freeze_s_per_protocol: float = Field(default=600.0, gt=0, le=3600)
    max_freeze_s_per_procedure: float = Field(default=1200.0, gt=0, le=7200)
    max_extend_s: float = Field(default=60.0, gt=0, le=600)
    max_thaw_s: float = Field(default=600.0, gt=0, le=3600)
    max_hold_s: float = Field(default=1800.0, gt=0, le=7200)
    min_step_s: float = Field(default=1.0, gt=0, le=60)  # shorter steps are a typo
    max_steps: int = Field(default=20, ge=1, le=100)
    floor_tip_c: float = Field(default=-160.0, ge=-200, le=-20)  # site floor when the step has none
    ad_hoc_target_tip_c: float = Field(default=-40.0, ge=-200, le=-5)
    ad_hoc_reach_within_s: float = Field(default=60.0, gt=0, le=600)
    ad_hoc_thaw_until_c: float = Field(default=10.0, ge=-20, le=40)
    # interlocks
    max_lease_timeout_ms: int = Field(default=2000, ge=100, le=60000)
    tc_plausible_min_c: float = Field(default=15.0, ge=-20, le=40)
    tc_plausible_max_c: float = Field(default=42.0, ge=20, le=50)
    precheck_timeout_s: float = Field(default=5.0, gt=0, le=60)
    allow_host_only_limits: bool = False  # freeze on a console without console_limits
    # supervisor: data freshness
    stale_polls: int = Field(default=3, ge=1, le=100)
    # supervisor: temperatures
    skin_min_c: float = Field(default=28.0, ge=0, le=40)  # high alarm, stops the freeze
    skin_warn_c: float = Field(default=31.0, ge=0, le=40)  # medium alarm
    tc_max_rate_c_per_s: float = Field(default=60.0, gt=0, le=1000)
    tc_rate_min_jump_c: float = Field(default=5.0, gt=0, le=100)
    tc_stuck_window_s: float = Field(default=10.0, gt=0, le=120)
    tc_stuck_epsilon_c: float = Field(default=0.05, ge=0, le=5)
    cooling_check_s: float = Field(default=5.0, gt=0, le=60)
    cooling_min_drop_c: float = Field(default=5.0, gt=0, le=100)
    close_grace_s: float = Field(default=3.0, gt=0, le=60)
    still_cooling_drop_c: float = Field(default=3.0, gt=0, le=50)
    warm_check_s: float = Field(default=20.0, gt=0, le=300)
    warm_min_rise_c: float = Field(default=2.0, gt=0, le=50)
    on_time_grace_s: float = Field(default=2.0, ge=0, le=30)
    readback_grace_s: float = Field(default=1.0, ge=0, le=30)
    # supervisor: return line, a sign of gas after a close that needs no thermocouple.
    # Flowing reads 69-103 kPa (domain.md), vented ~0 (gauge): the limit must stay
    # below the flowing range, or the sign could never fire.
    return_vented_max_kpa: float = Field(default=20.0, gt=0, le=60)
    return_vent_s: float = Field(default=3.0, gt=0, le=60)  # time the line takes to vent
    # supervisor: gas supply
    leak_window_s: float = Field(default=10.0, gt=0, le=600)
    leak_idle_kpa_per_s: float = Field(default=3.0, gt=0, le=1000)
    consumption_kpa_per_s_per_probe: float = Field(default=5.0, ge=0, le=1000)
    console_margin: ConsoleMargin = ConsoleMargin()

    @model_validator(mode="after")
    def _check(self) -> SafetyLimits:
        if not self.max_freeze_s_per_cycle <= self.max_freeze_s_per_protocol:
            raise ValueError("max_freeze_s_per_cycle must be <= max_freeze_s_per_protocol")
        if not self.max_freeze_s_per_protocol <= self.max_freeze_s_per_procedure:
            raise ValueError("max_freeze_s_per_protocol must be <= max_freeze_s_per_procedure")
        if not self.tc_plausible_min_c < self.tc_plausible_max_c:
            raise ValueError("tc_plausible_min_c must be < tc_plausible_max_c")
        if not self.skin_min_c < self.skin_warn_c:
            raise ValueError("skin_min_c must be < skin_warn_c")
        if self.ad_hoc_target_tip_c <= self.floor_tip_c:
            raise ValueError("ad_hoc_target_tip_c must be warmer than floor_tip_c")
        return self

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> SafetyLimits:
        return cls.model_validate(data)

    def for_sim_speed(self, speed: float) -> SafetyLimits:
        """The physics-based checks for a simulator running ``speed`` times faster
        than the host clock: rates x speed, physics windows / speed. Every check
        stays on; protocol durations and host timing are unchanged. (The
        console's own on-time limit runs on console time: scale it in the test.)"""
        if not speed > 0:
            raise ValueError("speed must be > 0")
        return self.model_validate(
            {
                **self.model_dump(),
                "tc_max_rate_c_per_s": self.tc_max_rate_c_per_s * speed,
                "tc_stuck_window_s": self.tc_stuck_window_s / speed,
                "cooling_check_s": self.cooling_check_s / speed,
                "close_grace_s": self.close_grace_s / speed,
                "return_vent_s": self.return_vent_s / speed,
                "warm_check_s": self.warm_check_s / speed,
                "leak_idle_kpa_per_s": self.leak_idle_kpa_per_s * speed,
                "consumption_kpa_per_s_per_probe": self.consumption_kpa_per_s_per_probe * speed,
            }
        )


@dataclass(frozen=True, slots=True)
class ConsoleEnvelope:
    """What the console can do and must not exceed (from its profile or identity)."""

    probes: int
    min_tip_c: float  # coldest tip the console can produce
    supply_working_kpa: tuple[float, float]  # regulated supply band the probes need
    supply_max_kpa: float  # the console's own hard limit
    capabilities: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        lo, hi = self.supply_working_kpa
        if not 0 < lo < hi <= self.supply_max_kpa:
            raise ValueError("supply_working_kpa must be 0 < low < high <= supply_max_kpa")
        if not 1 <= self.probes <= 25:
            raise ValueError(f"probes {self.probes} outside 1..25")

    @property
    def has_console_limits(self) -> bool:
        return "console_limits" in self.capabilities

    @property
    def has_skin_channel(self) -> bool:
        return "skin_channel" in self.capabilities

    @property
    def supervisor_max_supply_kpa(self) -> float:
        """The supervisor trips above the working band, well before the hard limit."""
        return self.supply_working_kpa[1]

    @classmethod
    def from_profile(cls, profile: Any) -> ConsoleEnvelope:
        """From a ``cryod.drivers.profile.Profile`` (typed Any to keep this module light)."""
        c = profile.console
        return cls(
            probes=int(c.probes),
            min_tip_c=float(c.min_tip_c),
            supply_working_kpa=(float(c.supply_working_kpa[0]), float(c.supply_working_kpa[1])),
            supply_max_kpa=float(c.supply_max_kpa),
            capabilities=frozenset(c.capabilities),
        )

    @classmethod
    def from_identity(
        cls,
        identity: Identity,
        *,
        min_tip_c: float,
        supply_working_kpa: tuple[float, float],
        supply_max_kpa: float,
    ) -> ConsoleEnvelope:
        """For a console without a profile (e.g. the line protocol): numbers from config."""
        return cls(
            probes=identity.probes,
            min_tip_c=min_tip_c,
            supply_working_kpa=supply_working_kpa,
            supply_max_kpa=supply_max_kpa,
            capabilities=identity.capabilities,
        )


def console_limits_for(
    *,
    on_time_s: float,
    floor_tip_c: float,
    supervisor_max_supply_kpa: float,
    margin: ConsoleMargin,
) -> ConsoleLimits:
    """The limits handed down to the console for one freeze: the supervisor's own,
    widened by ``margin``. Raises ValueError (never clamps) when the widened
    value does not fit what a console can hold."""
    widen = max(margin.on_time_s, on_time_s * margin.on_time_frac)
    return ConsoleLimits(
        max_on_time_s=round(on_time_s + widen, 1),
        min_tip_c=round(floor_tip_c - margin.tip_c, 1),
        max_supply_kpa=round(supervisor_max_supply_kpa * (1.0 + margin.supply_frac)),
        consecutive=margin.consecutive,
    )


@dataclass(frozen=True, slots=True)
class FreezePlan:
    """What the current freeze step of one probe is allowed: the engine's view,
    handed to the supervisor (which bounds it by the site limits on its own)."""

    probe: int
    on_time_s: float  # planned freeze time including confirmed extensions
    floor_tip_c: float  # colder than this trips
    target_tip_c: float
    reach_within_s: float


@dataclass(frozen=True, slots=True)
class Supervision:
    """What the engine tells the supervisor each poll: the probes in use (their
    thermocouples are watched) and the freeze plans of probes in a freeze."""

    watched: frozenset[int] = frozenset()
    plans: tuple[FreezePlan, ...] = ()

    def plan(self, probe: int) -> FreezePlan | None:
        for p in self.plans:
            if p.probe == probe:
                return p
        return None
