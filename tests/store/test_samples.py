"""A driver Snapshot becomes one sample row per polled value, validity kept."""

from __future__ import annotations

from cryod.daemon.store.samples import CONSOLE_CHANNELS, PROBE_CHANNELS, snapshot_rows
from cryod.drivers.base import (
    ConsoleFaults,
    LeaseStatus,
    ProbeState,
    Reading,
    Snapshot,
    TcStatus,
    Validity,
)


def reading(value: float | None, unit: str, validity: Validity = Validity.VALID) -> Reading:
    return Reading(value, unit, 10.0, 1_700_000_000.0, validity)


def test_snapshot_rows_cover_every_channel() -> None:
    probes = tuple(
        ProbeState(
            probe=n,
            tip_c=reading(-40.0 - n, "degC") if n == 1 else reading(None, "degC", Validity.STALE),
            return_kpa=reading(90.0, "kPa"),
            tc_status=TcStatus.OK if n == 1 else TcStatus.OPEN,
            freeze_open=n == 1,
            thaw_on=False,
        )
        for n in (1, 2)
    )
    snap = Snapshot(
        seq=7,
        t_mono=10.0,
        t_utc=1_700_000_000.0,
        console_time_s=3.5,
        supply_kpa=reading(25000.0, "kPa"),
        cylinder_kpa=reading(41000.0, "kPa"),
        skin_c=reading(36.5, "degC"),
        master_open=True,
        supply_low=False,
        lease=LeaseStatus(armed=True, timeout_ms=1000, expired=False, expiry_count=0),
        faults=ConsoleFaults(),
        probes=probes,
    )
    rows = snapshot_rows(snap, "c1", 3)
    by_key = {(r.probe, r.channel): r for r in rows}
    assert {c for p, c in by_key if p == 0} == set(CONSOLE_CHANNELS)
    for n in (1, 2):
        assert {c for p, c in by_key if p == n} == set(PROBE_CHANNELS)
    assert len(rows) == len(CONSOLE_CHANNELS) + 2 * len(PROBE_CHANNELS)
    assert by_key[(1, "tip_c")].value == -41.0
    assert by_key[(1, "freeze_open")].value == 1.0
    stale = by_key[(2, "tip_c")]
    assert (stale.value, stale.validity) == (None, "stale")  # never a number
    assert by_key[(2, "tc_status")].value == float(TcStatus.OPEN)
    assert all(r.procedure_id == 3 and r.t_mono == 10.0 and r.console == "c1" for r in rows)
