"""One driver Snapshot as sample rows: every polled value, with its validity.

Measured values keep the validity the driver gave them (a stale or invalid
reading is stored with value NULL); states read back from the console
(valves, lease, faults) are stored as 0/1 with validity ``valid`` because the
snapshot as a whole was read in that poll.
"""

from __future__ import annotations

from cryod.drivers.base import Reading, Snapshot

from .writer import SampleRow

PROBE_CHANNELS = (
    "tip_c",
    "return_kpa",
    "tc_status",
    "freeze_open",
    "thaw_on",
    "limits_armed",
    "trip",
)
CONSOLE_CHANNELS = (
    "supply_kpa",
    "cylinder_kpa",
    "skin_c",
    "master_open",
    "supply_low",
    "lease_armed",
    "lease_expired",
    "fault_overpressure",
    "fault_console_limit",
    "console_time_s",
)


def snapshot_rows(snap: Snapshot, console: str, procedure_id: int | None) -> list[SampleRow]:
    rows: list[SampleRow] = []

    def add(probe: int, channel: str, value: float | None, validity: str = "valid") -> None:
        rows.append(
            SampleRow(
                console=console,
                t_utc=snap.t_utc,
                t_mono=snap.t_mono,
                probe=probe,
                channel=channel,
                value=value,
                validity=validity,
                procedure_id=procedure_id,
            )
        )

    def reading(probe: int, channel: str, r: Reading) -> None:
        add(probe, channel, r.value if r.usable else None, r.validity.value)

    reading(0, "supply_kpa", snap.supply_kpa)
    reading(0, "cylinder_kpa", snap.cylinder_kpa)
    if snap.skin_c is not None:
        reading(0, "skin_c", snap.skin_c)
    add(0, "master_open", float(snap.master_open))
    add(0, "supply_low", float(snap.supply_low))
    add(0, "lease_armed", float(snap.lease.armed))
    add(0, "lease_expired", float(snap.lease.expired))
    add(0, "fault_overpressure", float(snap.faults.overpressure))
    add(0, "fault_console_limit", float(snap.faults.console_limit))
    add(0, "console_time_s", snap.console_time_s)
    for p in snap.probes:
        reading(p.probe, "tip_c", p.tip_c)
        reading(p.probe, "return_kpa", p.return_kpa)
        add(p.probe, "tc_status", float(p.tc_status))
        add(p.probe, "freeze_open", float(p.freeze_open))
        add(p.probe, "thaw_on", float(p.thaw_on))
        add(p.probe, "limits_armed", float(p.limits_armed))
        add(p.probe, "trip", float(p.trip))
    return rows
