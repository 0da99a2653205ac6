"""A driver Snapshot becomes one sample row per polled value, validity kept."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cryod.daemon.store.samples import CONSOLE_CHANNELS, PROBE_CHANNELS, snapshot_rows
from cryod.daemon.store.writer import SampleRow
from cryod.drivers.base import (
    ConsoleFaults,
    LeaseStatus,
    ProbeState,
    Reading,
    Snapshot,
    TcStatus,
    TripCause,
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


# -- the per-poll fast path against a plain reference ---------------------------


def reference_rows(snap: Snapshot, console: str, procedure_id: int | None) -> list[SampleRow]:
    """The obvious implementation: one keyword SampleRow per channel, in order."""

    def row(probe: int, channel: str, value: float | None, validity: str) -> SampleRow:
        return SampleRow(
            console=console,
            t_utc=snap.t_utc,
            t_mono=snap.t_mono,
            probe=probe,
            channel=channel,
            value=value,
            validity=validity,
            procedure_id=procedure_id,
        )

    def measured(probe: int, channel: str, r: Reading) -> SampleRow:
        return row(probe, channel, r.value if r.usable else None, r.validity.value)

    rows = [
        measured(0, "supply_kpa", snap.supply_kpa),
        measured(0, "cylinder_kpa", snap.cylinder_kpa),
    ]
    if snap.skin_c is not None:
        rows.append(measured(0, "skin_c", snap.skin_c))
    states = {
        "master_open": float(snap.master_open),
        "supply_low": float(snap.supply_low),
        "lease_armed": float(snap.lease.armed),
        "lease_expired": float(snap.lease.expired),
        "fault_overpressure": float(snap.faults.overpressure),
        "fault_console_limit": float(snap.faults.console_limit),
        "console_time_s": snap.console_time_s,
    }
    rows += [row(0, channel, value, "valid") for channel, value in states.items()]
    for p in snap.probes:
        rows.append(measured(p.probe, "tip_c", p.tip_c))
        rows.append(measured(p.probe, "return_kpa", p.return_kpa))
        for channel in ("tc_status", "freeze_open", "thaw_on", "limits_armed", "trip"):
            rows.append(row(p.probe, channel, float(getattr(p, channel)), "valid"))
    return rows


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@st.composite
def readings(draw: st.DrawFn) -> Reading:
    validity = draw(st.sampled_from(Validity))
    # a usable reading always has a value; an unusable one may or may not
    value = draw(finite if validity.usable else st.none() | finite)
    return Reading(value, "u", draw(finite), draw(finite), validity)


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    n_probes = draw(st.integers(0, 8))
    probes = tuple(
        ProbeState(
            probe=n,
            tip_c=draw(readings()),
            return_kpa=draw(readings()),
            tc_status=draw(st.sampled_from(TcStatus)),
            freeze_open=draw(st.booleans()),
            thaw_on=draw(st.booleans()),
            limits_armed=draw(st.booleans()),
            trip=draw(st.sampled_from(TripCause)),
        )
        for n in range(1, n_probes + 1)
    )
    return Snapshot(
        seq=draw(st.integers(0, 2**31)),
        t_mono=draw(finite),
        t_utc=draw(finite),
        console_time_s=draw(finite),
        supply_kpa=draw(readings()),
        cylinder_kpa=draw(readings()),
        skin_c=draw(st.none() | readings()),
        master_open=draw(st.booleans()),
        supply_low=draw(st.booleans()),
        lease=LeaseStatus(
            armed=draw(st.booleans()),
            timeout_ms=1000,
            expired=draw(st.booleans()),
            expiry_count=0,
        ),
        faults=ConsoleFaults(
            lease_expired=draw(st.booleans()),
            overpressure=draw(st.booleans()),
            console_limit=draw(st.booleans()),
        ),
        probes=probes,
    )


@settings(max_examples=300, deadline=None)
@given(snapshots(), st.text(max_size=8), st.none() | st.integers(1, 2**40))
def test_snapshot_rows_match_the_reference(
    snap: Snapshot, console: str, procedure_id: int | None
) -> None:
    got = snapshot_rows(snap, console, procedure_id)
    want = reference_rows(snap, console, procedure_id)
    assert got == want  # same values, same order (the order rows get their ids in)
    assert all(type(r) is SampleRow for r in got)
    # exact types too: a bool or an enum where a float is stored would differ in SQLite
    assert [tuple(map(type, r)) for r in got] == [tuple(map(type, r)) for r in want]
