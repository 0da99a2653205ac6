"""Shutdown with 16 consoles, some of them unreachable, ends within the unit's
TimeoutStopSec: consoles stop in parallel and each is capped by SHUTDOWN_BUDGET_S.

Four real simulators (two of them silenced just before SIGTERM, so the daemon's
shutdown writes get no answer) and twelve consoles that never answered at all.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.e2e.harness import DEMO_PROCEDURE, Daemon, Sim, free_port
from tests.reliability.rig import log_events
from tests.service.test_systemd_unit import UNIT, directives

SPEED = 10.0


def _config(workdir: Path, sims: list[Sim], dead_ports: list[int]) -> Path:
    consoles = []
    for i, sim in enumerate(sims, start=1):
        consoles.append(
            f"""
[[consoles]]
id = "c{i}"
driver = "modbus-tcp"
simulated = true
time_scale = {SPEED}
lease_timeout_ms = 2000
[consoles.options]
host = "127.0.0.1"
port = {sim.port}
"""
        )
    for j, port in enumerate(dead_ports, start=len(sims) + 1):
        consoles.append(
            f"""
[[consoles]]
id = "c{j}"
driver = "modbus-tcp"
simulated = true
time_scale = {SPEED}
lease_timeout_ms = 2000
[consoles.options]
host = "127.0.0.1"
port = {port}
"""
        )
    text = f"""
[daemon]
database = "{workdir / "cryod.db"}"
control_socket = "{workdir / "cryod.sock"}"
site = "test"
require_study_id = true
{"".join(consoles)}
"""
    path = workdir / "cryod.toml"
    path.write_text(text)
    return path


@pytest.mark.slow
def test_sixteen_consoles_some_unreachable_stop_within_timeout_stop_sec(tmp_path: Path) -> None:
    stop_limit_s = int(directives(UNIT.read_text())["Service.TimeoutStopSec"][-1].removesuffix("s"))
    sims = []
    daemons: list[Daemon] = []
    try:
        for i in range(4):
            work = tmp_path / f"sim{i}"
            work.mkdir()
            sims.append(Sim(work, speed=SPEED, seed=i + 1))
        dead = [free_port() for _ in range(12)]  # nothing listens there
        d = Daemon(_config(tmp_path, sims, dead), tmp_path)
        daemons.append(d)
        for i in range(1, 5):  # each reachable console freezing
            d.call("procedure_open", {**DEMO_PROCEDURE, "console": f"c{i}"})
            d.call("freeze", {"console": f"c{i}", "probe": 1, "seconds": 120})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = {c["id"]: c["engine"]["state"] for c in d.call("status")["consoles"]}
            if all(states[f"c{i}"] == "freezing" for i in range(1, 5)):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"not all freezing: {states}")
        for sim in sims[2:]:
            sim.ctl("fault", "comms-silent")  # these two stop answering
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        rc = d.proc.wait(timeout=stop_limit_s + 10)
        elapsed = time.monotonic() - t0
        d.stop()
        print(
            f"\n[shutdown] 16 consoles (2 silenced, 12 never reachable): {elapsed:.2f} s, "
            f"TimeoutStopSec {stop_limit_s} s"
        )
        assert rc == 0
        assert elapsed < stop_limit_s, f"shutdown took {elapsed:.1f} s"
        # the reachable ones were closed by the daemon, the silenced ones by the lease
        for sim in sims[:2]:
            closes = [e for e in sim.events("valve") if e["valve"] == "freeze" and not e["open"]]
            assert closes[-1]["cause"] == "command"
        for sim in sims[2:]:
            closes = [e for e in sim.events("valve") if e["valve"] == "freeze" and not e["open"]]
            assert closes[-1]["cause"] == "lease_expired"
        events = log_events(tmp_path / "cryod.log", "safe_state_not_confirmed_at_shutdown")
        unconfirmed = {x["console"] for x in events}
        assert unconfirmed == {"c3", "c4"}
    finally:
        for daemon in daemons:  # a failure before the SIGTERM leaves it running
            if daemon.proc.poll() is None:
                daemon.stop()
        for sim in sims:
            sim.stop()
