"""Interlocks checked before any freeze valve may open.

Pure: ``check_freeze_interlocks(...)`` returns the list of failures (empty =
the freeze may proceed), each with a stable reason ``code`` (part of the
external interface: operator messages, log, tests) and a detail. The engine
refuses the freeze with the first failure's code and records all of them.

Codes: ``no_procedure``, ``alarm_latched``, ``no_snapshot``,
``snapshot_stale``, ``lease_not_armed``, ``lease_timeout_too_long``,
``console_fault``, ``supply_invalid``, ``supply_low``, ``supply_high``,
``bad_probe``, ``tc_fault``, ``tc_invalid``, ``tc_implausible``,
``valve_already_open``, ``no_console_limits``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryod.drivers.base import Snapshot, TcStatus

from .limits import ConsoleEnvelope, SafetyLimits

__all__ = ["INTERLOCK_CODES", "InterlockFailure", "check_freeze_interlocks"]

INTERLOCK_CODES = (
    "no_procedure",
    "alarm_latched",
    "no_snapshot",
    "snapshot_stale",
    "lease_not_armed",
    "lease_timeout_too_long",
    "console_fault",
    "supply_invalid",
    "supply_low",
    "supply_high",
    "bad_probe",
    "tc_fault",
    "tc_invalid",
    "tc_implausible",
    "valve_already_open",
    "no_console_limits",
)


@dataclass(frozen=True, slots=True)
class InterlockFailure:
    code: str
    detail: str
    probe: int | None = None

    def __str__(self) -> str:
        where = "" if self.probe is None else f" (probe {self.probe})"
        return f"{self.code}{where}: {self.detail}"


def check_freeze_interlocks(
    *,
    snapshot: Snapshot | None,
    now_mono_s: float,
    probes: Sequence[int],
    limits: SafetyLimits,
    envelope: ConsoleEnvelope,
    poll_period_s: float,
    procedure_open: bool,
    latched_alarms: Iterable[str],
    first_freeze: bool,
) -> list[InterlockFailure]:
    """Every reason a freeze on ``probes`` must not start now.

    ``first_freeze`` applies the strict thermocouple plausibility window
    (tip near body or room temperature: the probe is in tissue and the
    sensor works). Later freezes of the same run follow a thaw, so the tip
    need only read valid and not colder than the console can produce.
    """
    out: list[InterlockFailure] = []
    if not procedure_open:
        out.append(InterlockFailure("no_procedure", "no procedure is open"))
    latched = sorted(set(latched_alarms))
    if latched:
        out.append(InterlockFailure("alarm_latched", ", ".join(latched)))
    if not envelope.has_console_limits and not limits.allow_host_only_limits:
        out.append(
            InterlockFailure(
                "no_console_limits",
                "the console cannot hold per-probe limits and the site does not "
                "allow host-only limits",
            )
        )
    bad = [p for p in probes if not 1 <= p <= envelope.probes]
    for p in bad:
        out.append(InterlockFailure("bad_probe", f"probe {p} outside 1..{envelope.probes}", p))
    if snapshot is None:
        out.append(InterlockFailure("no_snapshot", "no snapshot from the console yet"))
        return out
    age = now_mono_s - snapshot.t_mono
    max_age = limits.stale_polls * poll_period_s
    if age > max_age:
        out.append(InterlockFailure("snapshot_stale", f"snapshot {age:.2f} s old > {max_age} s"))
    lease = snapshot.lease
    if not lease.armed or lease.expired:
        out.append(InterlockFailure("lease_not_armed", "console lease not armed"))
    elif lease.timeout_ms > limits.max_lease_timeout_ms:
        out.append(
            InterlockFailure(
                "lease_timeout_too_long",
                f"lease timeout {lease.timeout_ms} ms > {limits.max_lease_timeout_ms} ms",
            )
        )
    if snapshot.faults.any:
        out.append(InterlockFailure("console_fault", ", ".join(snapshot.faults.names())))
    supply = snapshot.supply_kpa
    lo, hi = envelope.supply_working_kpa
    if not supply.usable or supply.value is None:
        out.append(InterlockFailure("supply_invalid", f"supply reading {supply.validity}"))
    elif supply.value < lo:
        out.append(InterlockFailure("supply_low", f"supply {supply.value} kPa < {lo} kPa"))
    elif supply.value > hi:
        out.append(InterlockFailure("supply_high", f"supply {supply.value} kPa > {hi} kPa"))
    for p in probes:
        if p in bad or p > len(snapshot.probes):
            continue
        ps = snapshot.probe(p)
        if ps.freeze_open:
            out.append(InterlockFailure("valve_already_open", "freeze valve reads open", p))
        if ps.tc_status is not TcStatus.OK:
            out.append(InterlockFailure("tc_fault", f"thermocouple {ps.tc_status.name}", p))
            continue
        tip = ps.tip_c
        if not tip.usable or tip.value is None:
            out.append(InterlockFailure("tc_invalid", f"tip reading {tip.validity}", p))
            continue
        if first_freeze:
            lo_c, hi_c = limits.tc_plausible_min_c, limits.tc_plausible_max_c
        else:
            lo_c, hi_c = envelope.min_tip_c, limits.tc_plausible_max_c
        if not lo_c <= tip.value <= hi_c:
            out.append(
                InterlockFailure("tc_implausible", f"tip {tip.value} C outside {lo_c}..{hi_c} C", p)
            )
    return out
