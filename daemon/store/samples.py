"""One driver Snapshot as sample rows: every polled value, with its validity.

Measured values keep the validity the driver gave them (a stale or invalid
reading is stored with value NULL); states read back from the console
(valves, lease, faults) are stored as 0/1 with validity ``valid`` because the
snapshot as a whole was read in that poll.
"""

from __future__ import annotations

from cryod.drivers.base import Snapshot, Validity

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


# Validity -> (stored text, usable): a dict lookup instead of two properties per reading
_VALIDITY: dict[Validity, tuple[str, bool]] = {v: (v.value, v.usable) for v in Validity}
# SampleRow(...) runs a Python-level __new__ per row; tuple.__new__ builds the same
# SampleRow in C (the rows are made on every poll: 66 for 8 probes)
_new_row = tuple.__new__


def snapshot_rows(snap: Snapshot, console: str, procedure_id: int | None) -> list[SampleRow]:
    """One row per polled value: the console's channels, then each probe's.

    A measured value whose reading is not usable (stale, invalid) is stored
    as NULL with its validity; read-back states are 0/1 and ``valid``.
    """
    t_utc, t_mono, pid = snap.t_utc, snap.t_mono, procedure_id
    row, validity = SampleRow, _VALIDITY
    rows: list[SampleRow] = []
    add = rows.append
    measured = [("supply_kpa", snap.supply_kpa), ("cylinder_kpa", snap.cylinder_kpa)]
    if snap.skin_c is not None:
        measured.append(("skin_c", snap.skin_c))
    for channel, r in measured:
        text, usable = validity[r.validity]
        value = r.value if usable else None
        add(_new_row(row, (console, t_utc, t_mono, 0, channel, value, text, pid)))
    lease, faults = snap.lease, snap.faults
    for channel, state in (
        ("master_open", float(snap.master_open)),
        ("supply_low", float(snap.supply_low)),
        ("lease_armed", float(lease.armed)),
        ("lease_expired", float(lease.expired)),
        ("fault_overpressure", float(faults.overpressure)),
        ("fault_console_limit", float(faults.console_limit)),
        ("console_time_s", snap.console_time_s),
    ):
        add(_new_row(row, (console, t_utc, t_mono, 0, channel, state, "valid", pid)))
    for p in snap.probes:
        n = p.probe
        for channel, r in (("tip_c", p.tip_c), ("return_kpa", p.return_kpa)):
            text, usable = validity[r.validity]
            value = r.value if usable else None
            add(_new_row(row, (console, t_utc, t_mono, n, channel, value, text, pid)))
        for channel, state in (
            ("tc_status", float(p.tc_status)),
            ("freeze_open", float(p.freeze_open)),
            ("thaw_on", float(p.thaw_on)),
            ("limits_armed", float(p.limits_armed)),
            ("trip", float(p.trip)),
        ):
            add(_new_row(row, (console, t_utc, t_mono, n, channel, state, "valid", pid)))
    return rows
