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
    # positional SampleRow(console, t_utc, t_mono, probe, channel, value, validity,
    # procedure_id): this runs on every poll, so no per-row keyword or closure overhead
    t_utc, t_mono = snap.t_utc, snap.t_mono
    valid = "valid"

    def reading(probe: int, channel: str, r: Reading) -> SampleRow:
        value = r.value if r.usable else None
        return SampleRow(
            console, t_utc, t_mono, probe, channel, value, r.validity.value, procedure_id
        )

    rows = [
        reading(0, "supply_kpa", snap.supply_kpa),
        reading(0, "cylinder_kpa", snap.cylinder_kpa),
    ]
    if snap.skin_c is not None:
        rows.append(reading(0, "skin_c", snap.skin_c))
    lease, faults = snap.lease, snap.faults
    for channel, value in (
        ("master_open", float(snap.master_open)),
        ("supply_low", float(snap.supply_low)),
        ("lease_armed", float(lease.armed)),
        ("lease_expired", float(lease.expired)),
        ("fault_overpressure", float(faults.overpressure)),
        ("fault_console_limit", float(faults.console_limit)),
        ("console_time_s", snap.console_time_s),
    ):
        rows.append(SampleRow(console, t_utc, t_mono, 0, channel, value, valid, procedure_id))
    for p in snap.probes:
        n = p.probe
        rows.append(reading(n, "tip_c", p.tip_c))
        rows.append(reading(n, "return_kpa", p.return_kpa))
        for channel, value in (
            ("tc_status", float(p.tc_status)),
            ("freeze_open", float(p.freeze_open)),
            ("thaw_on", float(p.thaw_on)),
            ("limits_armed", float(p.limits_armed)),
            ("trip", float(p.trip)),
        ):
            rows.append(SampleRow(console, t_utc, t_mono, n, channel, value, valid, procedure_id))
    return rows
