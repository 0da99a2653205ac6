"""End to end: cryod run against cryosim over Modbus TCP, driven by cryoctl's API.

Every safety check is on. What happened at the console is read from the
simulator's event log, what was recorded from the daemon's database.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cryod.daemon.control import ControlError
from tests.timing import ThreadLag

from .harness import DEMO_PROCEDURE, Daemon, Sim, daemon_config, sim_and_daemon

SPEED = 10.0
POLL_HZ = 20.0
POLL_PERIOD_SIM_S = SPEED / POLL_HZ  # one poll period on the engine's (scaled) clock
# plus the poll-start jitter budget of issue 8 (2 ms of wall time), on the same clock
JITTER_SIM_S = 0.002 * SPEED


def _cryoctl(sock: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cryod.daemon.ctl", "--socket", str(sock), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_two_freeze_protocol_end_to_end(tmp_path: Path) -> None:
    with sim_and_daemon(tmp_path, speed=SPEED, poll_hz=POLL_HZ) as (sim, d):
        r = _cryoctl(
            d.socket,
            "procedure",
            "open",
            "--patient-ref",
            "PSN-0042",
            "--indication",
            "mortons_neuroma",
            "--site",
            "3rd web space",
            "--side",
            "left",
            "--imaging",
            "ultrasound",
            "--anaesthesia",
            "local",
            "--study-id",
            "STUDY-1",
            "--probe-model",
            "SIM-17G",
            "--probe-lot",
            "L1",
        )
        assert r.returncode == 0, r.stderr
        pid = json.loads(r.stdout)["procedure_id"]
        with ThreadLag() as lag:  # how late this machine ran: a poll that late ends a cycle late
            r = _cryoctl(d.socket, "run", "classic-double-90", "--probes", "1")
            assert r.returncode == 0, r.stderr
            d.wait_state({"freezing"}, timeout=10)
            final = d.wait_state({"complete", "fault", "aborted", "stopped"}, timeout=90)
        assert final["engine"]["state"] == "complete", final
        r = _cryoctl(d.socket, "procedure", "close", "--notes", "e2e")
        assert r.returncode == 0, r.stderr
        r = _cryoctl(d.socket, "export", str(pid), "--format", "json")
        assert r.returncode == 0, r.stderr
        export = json.loads(r.stdout)
        status = _cryoctl(d.socket, "status")
        assert status.returncode == 0
        assert "console c1" in status.stdout
    assert export["schema"] == "cryod.export/2"
    assert export["chain"]["seal"]["kind"] == "export"  # made by the daemon: sealed
    proc = export["procedures"][0]
    assert "patient_ref" not in json.dumps(sim.events())  # nothing personal at the console
    freezes = [c for c in proc["cycles"] if c["phase"] == "freeze"]
    thaws = [c for c in proc["cycles"] if c["phase"] == "thaw"]
    assert len(freezes) == 2
    assert len(thaws) == 2
    # a cycle's duration is within one poll period (and the polls' lateness) of the protocol's
    late_sim_s = POLL_PERIOD_SIM_S + JITTER_SIM_S + lag.max_s * SPEED
    for c in freezes:
        assert c["outcome"] == "completed"
        assert abs(c["duration_s"] - 90.0) <= late_sim_s, (c, lag.max_s)
        assert c["min_tip_c"] < -100.0
        assert c["time_below_c"]["-20"] > 60.0
    assert all(c["outcome"] == "completed" for c in thaws)
    # first thaw: 30 s by the clock; last thaw: until the tip is above 10 C (cap 180 s)
    assert abs(thaws[0]["duration_s"] - 30.0) <= late_sim_s, (thaws[0], lag.max_s)
    assert thaws[1]["duration_s"] < 180.0
    # the recorded minimum is the minimum the console reported in the samples
    db = sqlite3.connect(tmp_path / "cryod.db")
    (min_sample,) = db.execute(
        "SELECT min(tip_c) FROM sample_probes WHERE probe = 1 AND tip_v = 0"  # valid
    ).fetchone()
    assert min(c["min_tip_c"] for c in freezes) == pytest.approx(min_sample, abs=0.05)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # the valve really opened and closed at the console, by command, twice
    valve = [e for e in sim.events("valve") if e.get("valve") == "freeze" and e.get("probe") == 1]
    opens = [e for e in valve if e["open"]]
    assert len(opens) == 2
    assert all(e["cause"] == "command" for e in valve)


def test_kill9_mid_freeze_lease_closes_valve_and_restart_marks_interrupted(
    tmp_path: Path,
) -> None:
    lease_ms = 500
    sim = Sim(tmp_path, speed=SPEED)
    try:
        cfg = daemon_config(tmp_path, sim, speed=SPEED, lease_timeout_ms=lease_ms)
        d = Daemon(cfg, tmp_path)
        pid = d.call("procedure_open", DEMO_PROCEDURE)["procedure_id"]
        d.call("run", {"protocol": "morton-neuroma-cazzato2016", "probes": [1]})
        d.wait_state({"freezing"}, timeout=10)
        time.sleep(1.0)
        d.kill9()
        t_kill = time.monotonic()
        # the console closes the valve on its own (the bound only ends a failing test)
        deadline = time.monotonic() + 30
        closed = []
        while time.monotonic() < deadline and not closed:
            closed = [
                e
                for e in sim.events("valve")
                if e.get("valve") == "freeze" and not e["open"] and e["cause"] == "lease_expired"
            ]
            time.sleep(0.05)
        assert closed, "the lease did not close the freeze valve"
        expired = sim.events("lease_expired")
        assert expired
        # restart: never resumes the freeze; the cycle is interrupted
        db = sqlite3.connect(tmp_path / "cryod.db")
        (samples_before,) = db.execute("SELECT count(*) FROM sample_polls").fetchone()
        db.close()
        assert samples_before > 0
        d2 = Daemon(cfg, tmp_path)
        try:
            st = d2.status()
            # the console's latched lease fault is shown, not silently reset
            assert st["engine"]["state"] == "fault"
            assert "lease_expired" in st["snapshot"]["faults"]
            assert any(a["priority"] == "high" for a in st["alarms"])
            assert not any(p["freeze_open"] for p in st["snapshot"]["probes"])
            assert st["procedure"] == {"id": pid, "open": True}
            # a reset before the acknowledgement is refused
            with pytest.raises(ControlError):
                d2.call("reset")
            d2.call("ack")
            d2.call("reset")
            st = d2.status()
            assert st["engine"]["state"] != "fault", st["engine"]
            assert st["snapshot"]["faults"] == []
            detail = d2.call("show", {"id": pid})
        finally:
            d2.stop()
        cycles = detail["cycles"]
        assert [c["outcome"] for c in cycles] == ["interrupted"]
        db = sqlite3.connect(tmp_path / "cryod.db")
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        (samples_after,) = db.execute("SELECT count(*) FROM sample_polls").fetchone()
        assert samples_after >= samples_before
        # only lease expiry and the restart's safe state touched the valve after the kill
        after = [
            e
            for e in sim.events("valve")
            if e.get("valve") == "freeze" and e["open"] and e["mono_t_s"] > expired[-1]["mono_t_s"]
        ]
        assert after == [], "a freeze valve was reopened after the crash"
        print(
            f"kill -9 -> valve closed by lease; measured {time.monotonic() - t_kill:.2f} s "
            f"to observe"
        )
    finally:
        sim.stop()


def test_malformed_control_requests_change_nothing(tmp_path: Path) -> None:
    with sim_and_daemon(tmp_path, speed=SPEED) as (_sim, d):
        before = d.status()
        for cmd, args in [
            ("freeze", {"probe": 1, "seconds": 30}),  # no procedure open
            ("run", {"protocol": "no-such-protocol"}),
            ("extend", {"seconds": 1e9}),
            ("nonsense", {}),
            ("freeze", {"probe": "x"}),
            ("procedure_open", {**DEMO_PROCEDURE, "patient_ref": "John Smith"}),
        ]:
            with pytest.raises(ControlError):
                d.call(cmd, args)
        after = d.status()
        assert after["engine"]["state"] == before["engine"]["state"] == "idle"
        assert after["procedure"] is None
        assert not any(p["freeze_open"] for p in after["snapshot"]["probes"])
        # the refusals are in the operator log, the patient name is not
        log = (tmp_path / "cryod.log").read_text()
        assert "John Smith" not in log


def test_sigterm_mid_freeze_safe_state_first_then_log_then_exit_0(tmp_path: Path) -> None:
    sim = Sim(tmp_path, speed=SPEED)
    try:
        d = Daemon(daemon_config(tmp_path, sim, speed=SPEED), tmp_path)
        pid = d.call("procedure_open", DEMO_PROCEDURE)["procedure_id"]
        d.call("run", {"protocol": "morton-neuroma-cazzato2016", "probes": [1]})
        d.wait_state({"freezing"}, timeout=10)
        time.sleep(0.5)
        assert d.stop() == 0
        # closed by the daemon's own command, not by the console's lease
        closes = [
            e
            for e in sim.events("valve")
            if e.get("valve") == "freeze" and not e["open"] and e["probe"] == 1
        ]
        assert closes
        assert closes[-1]["cause"] == "command"
        assert sim.events("lease_expired") == []
        db = sqlite3.connect(tmp_path / "cryod.db")
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        outcomes = [
            r[0] for r in db.execute("SELECT outcome FROM cycles WHERE procedure_id = ?", (pid,))
        ]
        assert outcomes == ["aborted"]
        kinds = [r[0] for r in db.execute("SELECT kind FROM audit ORDER BY seq")]
        assert kinds[-1] == "daemon_stopped"
    finally:
        sim.stop()
