"""Value objects for payload tests, built from the driver types (drivers/base.py)."""

from __future__ import annotations

from cryod.drivers.base import (
    ConsoleFaults,
    LeaseStatus,
    LinkStats,
    ProbeState,
    Reading,
    Snapshot,
    TcStatus,
    TripCause,
    Validity,
)

T_UTC = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def reading(value: float | None, unit: str, validity: Validity = Validity.VALID) -> Reading:
    return Reading(value=value, unit=unit, t_mono=100.0, t_utc=T_UTC, validity=validity)


def snapshot(seq: int = 1, *, tip_c: float = -85.25, probes: int = 2) -> Snapshot:
    ps = [
        ProbeState(
            probe=1,
            tip_c=reading(tip_c, "C"),
            return_kpa=reading(95.0, "kPa"),
            tc_status=TcStatus.OK,
            freeze_open=True,
            thaw_on=False,
            limits_armed=True,
        ),
        ProbeState(
            probe=2,
            tip_c=reading(None, "C", Validity.INVALID),
            return_kpa=reading(None, "kPa", Validity.STALE),
            tc_status=TcStatus.OPEN,
            freeze_open=False,
            thaw_on=False,
            trip=TripCause.MIN_TIP,
        ),
    ][:probes]
    return Snapshot(
        seq=seq,
        t_mono=100.0 + seq,
        t_utc=T_UTC + seq,
        console_time_s=12.5 + seq,
        supply_kpa=reading(5200.0, "kPa"),
        cylinder_kpa=reading(31000.0, "kPa", Validity.QUESTIONABLE),
        skin_c=reading(36.2, "C"),
        master_open=True,
        supply_low=False,
        lease=LeaseStatus(armed=True, timeout_ms=1000, expired=False, expiry_count=0),
        faults=ConsoleFaults(),
        probes=tuple(ps),
    )


def link() -> LinkStats:
    return LinkStats(transactions=10, timeouts=1, connected=True)
