"""Issue 9, fault 1: the console lease closes every valve when the host is gone.

Three ways the host goes away mid-freeze, each at a random moment of the freeze
(seeded: ``CRYOD_SEED`` replays a run), ``CRYOD_TRIALS`` times (CI: 5; the
issue's figure is 50 of 50, see docs/reliability.md):

- ``kill9``: the daemon is killed with SIGKILL (then restarted: nothing committed
  is lost, the open cycle is ``interrupted``);
- ``sigstop``: the daemon hangs (SIGSTOP; SIGCONT afterwards: it must find the
  latched lease fault and show it, never resume the freeze);
- ``link-serial`` / ``link-rtu``: the serial link is cut (cryosim ``disconnect``
  on the line protocol / Modbus RTU pty: nothing is read or written any more).

Bound, from the simulator's event log: every renewal precedes the moment the
host went away (t0), so the console's deadline is at most t0 + lease and the
valves close at its first tick after that: close - t0 <= lease + tick (+ the
tick loop's scheduling jitter, + the lateness this machine showed during the
trial). The lower bound shows it was the lease, not something else, that closed
them: no valve closed before a whole lease after the write that last renewed it
(the simulator's ``lease_expired`` event names when that write arrived). It is
measured from that write, not from t0: on a loaded machine the daemon's last
renewal can be later than one renewal interval before t0 (seen beside a CPU
hog: the valves closed 0.286 s after the link was cut, the lease 0.5 s). How
often the daemon renews is tests/scenarios/test_lease_cadence.py's subject.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Daemon, Sim
from tests.timing import ThreadLag

from .rig import (
    JITTER_S,
    LEASE_MS,
    TICK_S,
    cycles,
    env_int,
    fresh_procedure,
    integrity,
    lease_renewed_before_expiry,
    log_problems,
    open_valves_at,
    record,
    recover,
    rig,
    seed_from_env,
    valve_events,
    wait_for,
)

TRIALS = env_int("CRYOD_TRIALS", 5)
FREEZE_S = 60.0  # simulated: 6 s of wall time at speed 10
UPPER_S = LEASE_MS / 1000 + TICK_S + JITTER_S

MODES = {
    "kill9": "modbus-tcp",
    "sigstop": "modbus-tcp",
    "link-serial": "serial",
    "link-rtu": "modbus-rtu",
}


def _start_freeze(d: Daemon, sim: Sim, probe: int) -> float:
    """Start an ad-hoc freeze; return when the console's freeze valve opened."""
    t = time.monotonic()
    d.call("freeze", {"probe": probe, "seconds": FREEZE_S})
    ev = wait_for(
        lambda: valve_events(sim, probe=probe, is_open=True, cause="command", after=t),
        10,
        "the freeze valve to open",
    )
    return float(ev[0]["mono_t_s"])


Outcome = tuple[dict[str, float], set[str]]


def _lease_closes(sim: Sim, t0: float) -> dict[str, float]:
    """Wait for the lease to close every valve open at t0; latency per valve from t0."""

    def lease_closes() -> dict[str, float]:
        return {
            f"{e['valve']}{e['probe'] or ''}": e["mono_t_s"] - t0
            for e in valve_events(sim, valve=None, cause="lease_expired", after=t0 - 0.001)
            if not e["open"]
        }

    # the same tick closes freeze and master: wait for all of them, not a fixed time
    # for the rest of the tick's lines
    lat: dict[str, float] = wait_for(
        lambda: (got := lease_closes()) and set(got) >= open_valves_at(sim, t0) and got,
        30,
        "the lease to close the valves",
    )
    # it was the lease: nothing closed before a whole lease after the last renewal
    # (the event log's times are rounded to the microsecond)
    after_renewal_s = t0 + min(lat.values()) - lease_renewed_before_expiry(sim, t0 - 0.001)
    assert after_renewal_s >= LEASE_MS / 1000 - 2e-6, (lat, after_renewal_s, "before lease")
    return lat


def _trial_kill9(d: Daemon, sim: Sim, cfg: Path, wd: Path, rng: random.Random, probe: int) -> Any:
    db = wd / "cryod.db"
    pid = fresh_procedure(d)
    _start_freeze(d, sim, probe)
    time.sleep(rng.uniform(0.05, 3.0))
    before = cycles(db)
    t0 = time.monotonic()
    d.kill9()
    lat = _lease_closes(sim, t0)
    open_at = open_valves_at(sim, t0)
    d2 = Daemon(cfg, wd)
    try:
        _check_restart(d2, db, before, pid)
    except BaseException:
        d2.stop()
        raise
    return d2, (lat, open_at)


def _check_restart(d2: Daemon, db: Path, before: dict[int, str | None], pid: int) -> None:
    st = d2.status()
    assert st["engine"]["state"] == "fault", st["engine"]
    assert "lease_expired" in st["snapshot"]["faults"]
    assert any(a["priority"] == "high" for a in st["alarms"])
    assert not any(p["freeze_open"] for p in st["snapshot"]["probes"])
    after = cycles(db)
    # nothing committed is lost; every cycle left open is now interrupted
    assert set(before) <= set(after), "committed cycles lost"
    for cid, outcome in before.items():
        if outcome is not None:
            assert after[cid] == outcome, (cid, outcome, after[cid])
        else:
            assert after[cid] == "interrupted", (cid, after[cid])
    mine = cycles(db, pid)
    assert "interrupted" in mine.values(), mine
    assert None not in after.values()


def _wait_alarm(d: Daemon, code: str) -> None:
    wait_for(
        lambda: any(a["code"] == code for a in d.status()["alarms"]),
        10,
        f"the {code} alarm",
        every=0.05,
    )


def _wait_faulted(db: Path, pid: int) -> None:
    """The run's cycle is closed as ``faulted`` (recorded right after the safe state)."""
    got = wait_for(
        lambda: (c := cycles(db, pid)) and None not in c.values() and c,
        30,
        "the cycle to be closed",
    )
    assert set(got.values()) == {"faulted"}, got


def _trial_sigstop(d: Daemon, sim: Sim, rng: random.Random, probe: int) -> Outcome:
    pid = fresh_procedure(d)
    _start_freeze(d, sim, probe)
    time.sleep(rng.uniform(0.05, 3.0))
    t0 = time.monotonic()
    os.kill(d.proc.pid, signal.SIGSTOP)
    try:
        lat = _lease_closes(sim, t0)
    finally:
        os.kill(d.proc.pid, signal.SIGCONT)
    open_at = open_valves_at(sim, t0)
    # awake again: it finds the console's latched fault and never resumes the freeze
    _wait_alarm(d, "console_lease_expired")
    wait_for(lambda: d.status()["engine"]["state"] == "fault", 30, "the engine to fault")
    _wait_faulted(d.log.parent / "cryod.db", pid)
    return lat, open_at


def _trial_link(d: Daemon, sim: Sim, rng: random.Random, probe: int) -> Outcome:
    pid = fresh_procedure(d)
    _start_freeze(d, sim, probe)
    time.sleep(rng.uniform(0.05, 3.0))
    sim.ctl("fault", "disconnect")
    (inj,) = [e for e in sim.events("fault_injected") if e["kind"] == "disconnect"][-1:]
    t0 = float(inj["mono_t_s"])  # from here the console reads and writes nothing
    lat = _lease_closes(sim, t0)
    open_at = open_valves_at(sim, t0)
    # the daemon's supervisor sees the data go stale (status shows it at once; the
    # engine hears of it once the safe-state commands to the dead link have timed out)
    _wait_alarm(d, "stale_data")
    sim.ctl("clear", "disconnect")
    wait_for(
        lambda: (s := d.status())["link"]["connected"] and s["snapshot"] is not None,
        15,
        "the daemon to relink",
    )
    _wait_faulted(d.log.parent / "cryod.db", pid)
    return lat, open_at


@pytest.mark.timeout(60 + 12 * TRIALS)
@pytest.mark.parametrize("mode", list(MODES))
def test_lease_closes_valves_when_the_host_is_gone(tmp_path: Path, mode: str) -> None:
    seed = seed_from_env()
    rng = random.Random(f"{seed}-{mode}")
    latencies: list[float] = []
    voids: list[str] = []
    attempts = 0
    with rig(tmp_path, transport=MODES[mode], seed=seed % 1000) as (sim, d, cfg):
        try:
            while len(latencies) < TRIALS:
                attempts += 1
                assert len(voids) <= max(3, TRIALS // 5), f"too many void trials: {voids}"
                probe = 1 + attempts % 8
                if attempts > 1:
                    recover(d)
                with ThreadLag() as lag:  # how late this machine ran: the console too
                    if mode == "kill9":
                        d, (lat, open_at) = _trial_kill9(d, sim, cfg, tmp_path, rng, probe)
                    elif mode == "sigstop":
                        lat, open_at = _trial_sigstop(d, sim, rng, probe)
                    else:
                        lat, open_at = _trial_link(d, sim, rng, probe)
                if f"freeze{probe}" not in open_at:
                    # the freeze had already ended when the host went away: nothing to
                    # prove in this trial (counted, and the reason kept)
                    voids.append(f"attempt {attempts}: {d.status()['engine'].get('reason')}")
                    continue
                # every valve open at that moment was closed by the lease
                assert open_at <= set(lat), (attempts, open_at, lat)
                worst = max(lat[k] for k in open_at)
                bound_s = UPPER_S + lag.max_s
                assert worst <= bound_s, (attempts, lat, f"bound {bound_s:.3f} s", lag.max_s)
                latencies.append(worst)
            recover(d)
        finally:
            if d.proc.poll() is None:
                rc = d.stop()
                assert rc == 0, f"cryod exited {rc} on SIGTERM"
    assert integrity(tmp_path / "cryod.db") == "ok"
    assert log_problems(tmp_path / "cryod.log") == []
    record(
        f"crash_lease_{mode}",
        {
            "seed": seed,
            "trials": TRIALS,
            "valves_closed_by_lease": f"{len(latencies)}/{TRIALS}",
            "void_trials": voids,
            "lease_ms": LEASE_MS,
            "bound_s": round(UPPER_S, 3),
            "latency_min_s": round(min(latencies), 4),
            "latency_median_s": round(statistics.median(latencies), 4),
            "latency_max_s": round(max(latencies), 4),
        },
    )
