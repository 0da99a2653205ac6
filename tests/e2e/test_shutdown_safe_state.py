"""SIGTERM puts the console in the one safe state by the daemon's own commands, on
every transport, mid-freeze, mid-active-thaw and mid-passive-thaw; with the link
failing at shutdown, the lease closes what the daemon could not, the alarm is
recorded, and nothing is reported as confirmed that was not.

Read from the simulator's event log (the console's ground truth) and the
daemon's database, with real cryosim and cryod processes.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import DEMO_PROCEDURE, Daemon, Sim, daemon_config

SPEED = 10.0
LEASE_MS = 500
TRANSPORTS = ["modbus-tcp", "modbus-rtu", "serial"]
PHASES = ["freeze", "active_thaw", "passive_thaw"]

FREEZE_THEN_PASSIVE_THAW = """
schema = "cryod.protocol/1"
[protocol]
name = "short-freeze-long-thaw"
title = "test: a short freeze, then a long passive thaw"
source = "test"
example = true
[[steps]]
kind = "freeze"
duration_s = 5
target_tip_c = -20.0
reach_within_s = 5
[[steps]]
kind = "thaw"
mode = "passive"
duration_s = 300
"""


def _output(ev: dict[str, Any]) -> tuple[str, int | None]:
    return (str(ev["valve"]), ev.get("probe"))


def _on_outputs(events: list[dict[str, Any]]) -> set[tuple[str, int | None]]:
    """Outputs on after these valve events (the console's commanded state)."""
    on: dict[tuple[str, int | None], bool] = {}
    for ev in events:
        on[_output(ev)] = bool(ev.get("commanded", ev["open"]))
    return {k for k, v in on.items() if v}


def _start_phase(d: Daemon, sim: Sim, phase: str, workdir: Path) -> set[tuple[str, int | None]]:
    """Bring the console into ``phase``; return the outputs on at the console."""
    d.call("procedure_open", DEMO_PROCEDURE)
    if phase == "freeze":
        d.call("freeze", {"probe": 1, "seconds": 120})
        want = {("master", None), ("freeze", 1)}
        d.wait_state({"freezing"}, timeout=15)
    elif phase == "active_thaw":
        d.call("thaw", {"probe": 1, "seconds": 120, "mode": "active"})
        # the simulated console thaws with helium, which flows through the master
        want = {("master", None), ("thaw", 1)}
        d.wait_state({"thawing"}, timeout=15)
    else:
        path = workdir / "short-freeze-long-thaw.toml"
        path.write_text(FREEZE_THEN_PASSIVE_THAW)
        d.call("run", {"protocol": str(path), "probes": [1]})
        d.wait_state({"thawing"}, timeout=30)
        want = {("master", None)}  # the run keeps its gas supply open between steps
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        on = _on_outputs(sim.events("valve"))
        if on == want:
            return on
        time.sleep(0.05)
    raise AssertionError(f"console outputs on {_on_outputs(sim.events('valve'))}, wanted {want}")


def _db(workdir: Path) -> sqlite3.Connection:
    return sqlite3.connect(workdir / "cryod.db")


def _audit(workdir: Path, kind: str) -> list[dict[str, Any]]:
    db = _db(workdir)
    try:
        rows = db.execute("SELECT payload FROM audit WHERE kind = ? ORDER BY seq", (kind,))
        return [json.loads(r[0]) for r in rows]
    finally:
        db.close()


@pytest.mark.slow
@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sigterm_closes_every_output_by_command(tmp_path: Path, transport: str, phase: str) -> None:
    sim = Sim(tmp_path, transport=transport, speed=SPEED)
    try:
        d = Daemon(daemon_config(tmp_path, sim, speed=SPEED, lease_timeout_ms=LEASE_MS), tmp_path)
        on = _start_phase(d, sim, phase, tmp_path)
        before = len(sim.events("valve"))
        assert d.stop() == 0
        after = sim.events("valve")[before:]
        closes = {_output(e): e for e in after if not e.get("commanded", e["open"])}
        # every output that was on was switched off by the daemon's command
        assert set(closes) >= on, after
        assert {closes[o]["cause"] for o in on} == {"command"}, after
        assert _on_outputs(sim.events("valve")) == set()
        # before the lease could have expired: it never did, it was disarmed instead
        assert sim.events("lease_expired") == []
        assert sim.state()["lease"]["armed"] is False
        executed = _audit(tmp_path, "safe_state_executed")
        assert executed
        assert executed[-1]["confirmed"] is True
        assert executed[-1]["not_confirmed"] == []
        assert _audit(tmp_path, "lease_disarmed")
    finally:
        sim.stop()


@pytest.mark.slow
@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sigterm_with_the_link_failing_leaves_it_to_the_lease_and_says_so(
    tmp_path: Path, transport: str, phase: str
) -> None:
    sim = Sim(tmp_path, transport=transport, speed=SPEED)
    try:
        d = Daemon(daemon_config(tmp_path, sim, speed=SPEED, lease_timeout_ms=LEASE_MS), tmp_path)
        on = _start_phase(d, sim, phase, tmp_path)
        before = len(sim.events("valve"))
        sim.ctl("fault", "comms-silent")  # the link dies: the first write gets no answer
        assert d.stop() == 0
        after = sim.events("valve")[before:]
        closes = {_output(e): e for e in after if not e.get("commanded", e["open"])}
        assert set(closes) >= on, after
        assert {closes[o]["cause"] for o in on} == {"lease_expired"}, after
        assert sim.events("lease_expired")
        # nothing reported as confirmed that was not
        executed = _audit(tmp_path, "safe_state_executed")
        assert executed
        assert all(e["confirmed"] is False for e in executed[-1:])
        assert executed[-1]["not_confirmed"]
        assert _audit(tmp_path, "lease_disarmed") == []
        db = _db(tmp_path)
        try:
            codes = [r[0] for r in db.execute("SELECT code FROM alarms")]
        finally:
            db.close()
        assert "safe_state_unconfirmed" in codes
        log = (tmp_path / "cryod.log").read_text()
        assert "safe_state_not_confirmed_at_shutdown" in log
    finally:
        sim.stop()
