"""Pure physical model of a Joule-Thomson cryoablation console.

No I/O, no clocks, no randomness: every function takes the state and a
simulated time step and returns or updates the state, so the model is tested
exactly and the console (console.py) adds sensors, safety and faults on top.

Every temperature relaxes first-order toward an equilibrium and is updated
with the exact solution ``x' = eq + (x - eq) * exp(-dt / tau)``, so the result
does not depend on the step size while the equilibrium is constant; the
console sub-steps (``MAX_SUBSTEP_S``) so slowly varying equilibria (supply
pressure) stay accurate too.

Sources of the numbers: /work/shared/reference/domain.md ("domain") unless
marked "assumption" (a plausible default, not a clinical figure).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "BODY_C",
    "GASES",
    "MAX_SUBSTEP_S",
    "PROBE_START_C",
    "GasSpec",
    "ProbePhysics",
    "SupplyPhysics",
    "ThawKind",
    "first_order",
    "freeze_equilibrium_c",
    "regulator_out_kpa",
    "return_target_kpa",
    "skin_equilibrium_c",
    "step_probe",
    "step_skin",
    "step_supply",
]

ThawKind = Literal["helium", "electric"]

# ---- tissue and probe ------------------------------------------------------
BODY_C = 37.0  # body core temperature: passive thaw ends here (physics)
PROBE_START_C = 35.0  # a probe placed in tissue, not yet equilibrated (assumption, 33-37 C)
PASSIVE_TAU_S = 25.0  # ice-free tip warming toward body temperature (assumption)
PLATEAU_C = 0.0  # ice ball edge / melting point (domain: "ice ball edge 0 C")
PLATEAU_TAU_S = 5.0  # cold tip warming quickly up to the plateau (domain: "warms quickly to ~0 C")
PLATEAU_ONSET_C = -1.0  # the tip counts as "at the plateau" above this (assumption)
ICE_GROWTH_S_PER_S = 0.6  # plateau seconds of ice gained per second at -100 C (assumption)
ICE_MAX_S = 120.0  # largest ice ball, in seconds of passive plateau (assumption)
PASSIVE_MELT_S_PER_S = 1.0  # passive melting consumes plateau seconds in real time
ACTIVE_MELT_S_PER_S = 6.0  # active thaw melts the ice ball faster (assumption)
HELIUM_THAW_C = 30.0  # helium J-T heating target (brief: +20..+40 C; domain: active thaw)
HELIUM_THAW_TAU_S = 5.0
ELECTRIC_THAW_C = 40.0  # electric heater target (assumption)
ELECTRIC_THAW_TAU_S = 10.0

# ---- return line (gauge pressure: 0 kPa = atmospheric) -----------------------
RETURN_FLOW_KPA = 85.0  # domain: return pressure 10-15 psi = 69-103 kPa
RETURN_TAU_S = 0.5  # assumption

# ---- skin channel -------------------------------------------------------------
SKIN_BASE_C = 35.0  # domain: thermocouple under warmed skin stayed 35-40 C
SKIN_DROP_PER_PROBE_C = 0.6  # assumption: a freezing probe cools the skin slightly
SKIN_MAX_DROP_C = 3.0
SKIN_TAU_S = 60.0

# ---- supply ---------------------------------------------------------------------
SUPPLY_TAU_S = 0.3  # regulator response (assumption)
REGULATOR_DROOP_PER_VALVE = 0.01  # supply falls 1 % per flowing probe (assumption)
OVERPRESSURE_TAU_S = 0.2

#: largest physics sub-step the console takes (simulated seconds)
MAX_SUBSTEP_S = 0.05


@dataclass(frozen=True, slots=True)
class GasSpec:
    """The physics of one working gas."""

    name: str
    cylinder_full_kpa: float
    freeze_c: float  # tip equilibrium in tissue at nominal supply pressure
    freeze_tau_s: float
    consumption_kpa_per_s: float  # cylinder pressure lost per flowing probe
    regulator_dropout_kpa: float  # the regulator needs this much above its set point


GASES: dict[str, GasSpec] = {
    # domain: argon cylinder ~41 MPa full, tip ~-140 C in tissue. Consumption
    # (assumption): 40 L cylinder ~6600 L of gas, ~25 L/min per probe -> ~2.6 kPa/s.
    "argon": GasSpec("argon", 41000.0, -140.0, 12.0, 2.6, 500.0),
    # domain: N2O supply 4.1-5.5 MPa, boils at -88.5 C. Cylinder ~ vapour
    # pressure at 20 C (5.1 MPa). Modelled as a compressed gas (assumption: a
    # real liquefied-gas cylinder holds its pressure until nearly empty).
    "n2o": GasSpec("n2o", 5100.0, -88.0, 10.0, 0.5, 100.0),
    # domain: CO2 tip ~-78 C; cylinder ~ vapour pressure at 20 C (5.7 MPa).
    "co2": GasSpec("co2", 5700.0, -78.0, 10.0, 0.5, 100.0),
}


def first_order(x: float, target: float, tau_s: float, dt_s: float) -> float:
    """Exact first-order relaxation of x toward target over dt."""
    if dt_s <= 0:
        return x
    return target + (x - target) * math.exp(-dt_s / tau_s)


def freeze_equilibrium_c(gas: GasSpec, supply_kpa: float, nominal_kpa: float) -> float:
    """Tip equilibrium while gas flows: J-T cooling grows with the pressure drop,
    so a low supply freezes warmer (linear in the supply ratio, capped at 105 %)."""
    ratio = min(max(supply_kpa / nominal_kpa, 0.0), 1.05)
    return BODY_C + (gas.freeze_c - BODY_C) * ratio


def return_target_kpa(flowing: bool, supply_kpa: float, nominal_kpa: float) -> float:
    """Return-line gauge pressure: ~85 kPa while gas flows, atmospheric (0) idle."""
    if not flowing:
        return 0.0
    return RETURN_FLOW_KPA * min(max(supply_kpa / nominal_kpa, 0.0), 1.2)


@dataclass(slots=True)
class ProbePhysics:
    """True state of one probe in tissue."""

    tip_c: float = PROBE_START_C
    ice_s: float = 0.0  # ice ball size, in seconds of passive plateau it would hold
    return_kpa: float = 0.0


def step_probe(
    p: ProbePhysics,
    *,
    gas: GasSpec,
    flowing: bool,
    thaw: ThawKind | None,
    supply_kpa: float,
    nominal_kpa: float,
    dt_s: float,
) -> None:
    """Advance one probe by dt (freeze, active thaw, or passive thaw with the
    latent-heat plateau near 0 C while the ice ball melts)."""
    if dt_s <= 0:
        return
    thaw_eq, thaw_tau = HELIUM_THAW_C, HELIUM_THAW_TAU_S
    if thaw == "electric":
        thaw_eq, thaw_tau = ELECTRIC_THAW_C, ELECTRIC_THAW_TAU_S
    if flowing:
        eq = freeze_equilibrium_c(gas, supply_kpa, nominal_kpa)
        tau = gas.freeze_tau_s
        if thaw is not None:  # both at once: they fight, the faster one sets the pace
            eq, tau = (eq + thaw_eq) / 2.0, min(tau, thaw_tau)
    elif thaw is not None:
        eq, tau = thaw_eq, thaw_tau
        p.ice_s = max(0.0, p.ice_s - ACTIVE_MELT_S_PER_S * dt_s)
    elif p.ice_s > 0.0:
        # passive thaw: body heat brings the tip up to the melting point,
        # where it stays until the latent heat of the ice ball is paid
        eq, tau = PLATEAU_C, PLATEAU_TAU_S
        if p.tip_c >= PLATEAU_ONSET_C:
            p.ice_s = max(0.0, p.ice_s - PASSIVE_MELT_S_PER_S * dt_s)
    else:
        eq, tau = BODY_C, PASSIVE_TAU_S
    p.tip_c = first_order(p.tip_c, eq, tau, dt_s)
    if flowing and p.tip_c < PLATEAU_C:  # the ice ball grows only while gas extracts heat
        growth = ICE_GROWTH_S_PER_S * min(-p.tip_c / 100.0, 1.5)
        p.ice_s = min(ICE_MAX_S, p.ice_s + growth * dt_s)
    p.return_kpa = first_order(
        p.return_kpa, return_target_kpa(flowing, supply_kpa, nominal_kpa), RETURN_TAU_S, dt_s
    )


@dataclass(slots=True)
class SupplyPhysics:
    """True state of the gas supply: cylinder and regulated supply line."""

    cylinder_kpa: float
    supply_kpa: float


def regulator_out_kpa(
    gas: GasSpec, set_point_kpa: float, cylinder_kpa: float, flowing: int
) -> float:
    """What the regulator delivers: its set point less droop under flow, or the
    cylinder pressure less the dropout once the cylinder cannot sustain it."""
    drooped = set_point_kpa * (1.0 - REGULATOR_DROOP_PER_VALVE * flowing)
    return max(0.0, min(drooped, cylinder_kpa - gas.regulator_dropout_kpa))


def step_supply(
    s: SupplyPhysics,
    *,
    gas: GasSpec,
    set_point_kpa: float,
    flowing: int,
    leak_kpa_per_s: float,
    cap_kpa: float | None,
    force_kpa: float | None,
    dt_s: float,
) -> None:
    """Advance the supply by dt. ``flowing`` probes draw gas from the cylinder;
    ``leak_kpa_per_s`` is an extra loss; ``cap_kpa`` limits the delivered
    pressure (a failing regulator); ``force_kpa`` drives the line to a pressure
    regardless (a regulator failed open: over-pressure)."""
    if dt_s <= 0:
        return
    loss = (gas.consumption_kpa_per_s * flowing + leak_kpa_per_s) * dt_s
    s.cylinder_kpa = max(0.0, s.cylinder_kpa - loss)
    if force_kpa is not None:
        s.supply_kpa = first_order(s.supply_kpa, force_kpa, OVERPRESSURE_TAU_S, dt_s)
        return
    target = regulator_out_kpa(gas, set_point_kpa, s.cylinder_kpa, flowing)
    if cap_kpa is not None:
        target = min(target, cap_kpa)
    s.supply_kpa = first_order(s.supply_kpa, target, SUPPLY_TAU_S, dt_s)


def skin_equilibrium_c(probes_below_zero: int) -> float:
    """Skin over the treated area cools slightly while probes hold ice."""
    return SKIN_BASE_C - min(SKIN_MAX_DROP_C, SKIN_DROP_PER_PROBE_C * probes_below_zero)


def step_skin(skin_c: float, probes_below_zero: int, dt_s: float) -> float:
    return first_order(skin_c, skin_equilibrium_c(probes_below_zero), SKIN_TAU_S, dt_s)
