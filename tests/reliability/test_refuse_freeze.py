"""Issue 9, fault 2: no freeze starts unless the console's lease is armed, and no
longer than the site allows (limits.max_lease_timeout_ms, default 2000 ms).

The lease is changed behind the daemon's back by a bare Modbus client (another
master on the console, a technician's tool, a console reboot): the daemon must
read what the console holds now, not what it armed at start-up. The control
case at the end (lease back at the configured value: the same freeze starts)
shows the refusals came from the lease and nothing else.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from pymodbus.client import ModbusTcpClient

from cryod.daemon.control import ControlError
from cryod.drivers.profile import load_profile
from tests.e2e.harness import Daemon, Sim

from .rig import LEASE_MS, fresh_procedure, log_problems, record, rig, valve_events, wait_for

MAX_LEASE_MS = 2000  # limits.max_lease_timeout_ms default (daemon/limits.py)


def _set_console_lease(sim: Sim, timeout_ms: int) -> None:
    """Write the console's lease register directly, as a second Modbus master would."""
    profile = load_profile(None)
    reg = profile.reg("lease_timeout_ms")
    client = ModbusTcpClient("127.0.0.1", port=sim.port, timeout=2)
    try:
        assert client.connect()
        rr = client.write_register(reg.address, timeout_ms, device_id=profile.modbus.unit_id)
        assert not rr.isError(), rr
    finally:
        client.close()


def _daemon_sees(d: Daemon, armed: bool, timeout_ms: int) -> None:
    wait_for(
        lambda: (
            (lease := d.status()["snapshot"]["lease"])["armed"] is armed
            and lease["timeout_ms"] == timeout_ms
        ),
        5,
        f"the daemon to read lease armed={armed} {timeout_ms} ms",
    )


def _refused(d: Daemon, sim: Sim, code: str) -> None:
    t = time.monotonic()
    for cmd, args in (
        ("freeze", {"probe": 1, "seconds": 30}),
        ("run", {"protocol": "classic-double-90", "probes": [1]}),
    ):
        with pytest.raises(ControlError) as err:
            d.call(cmd, args)
        assert err.value.code == code, (cmd, err.value)
    d.after_polls()  # a valve opened by mistake shows by now
    st = d.status()
    assert st["engine"]["state"] == "idle", st["engine"]
    assert valve_events(sim, valve=None, is_open=True, after=t) == []
    assert not any(p["freeze_open"] for p in st["snapshot"]["probes"])


def test_freeze_refused_when_lease_disarmed_or_too_long(tmp_path: Path) -> None:
    with rig(tmp_path) as (sim, d, _cfg):
        pid = fresh_procedure(d)
        # 1. disarmed behind the daemon's back (the console accepts it: no valve is open)
        _set_console_lease(sim, 0)
        _daemon_sees(d, False, 0)
        _refused(d, sim, "lease_not_armed")
        # 2. armed, but longer than the site allows: at the maximum the console takes,
        #    and one millisecond over the site's limit
        for too_long in (60000, MAX_LEASE_MS + 1):
            _set_console_lease(sim, too_long)
            _daemon_sees(d, True, too_long)
            _refused(d, sim, "lease_timeout_too_long")
        # 3. control: the configured lease back, the same freeze starts and opens a valve
        _set_console_lease(sim, LEASE_MS)
        _daemon_sees(d, True, LEASE_MS)
        t = time.monotonic()
        d.call("freeze", {"probe": 1, "seconds": 30})
        wait_for(lambda: valve_events(sim, probe=1, is_open=True, after=t), 5, "the valve")
        d.call("abort")
        rc = d.stop()
    assert rc == 0
    assert log_problems(tmp_path / "cryod.log") == []
    # every refusal is in the operator log with its reason
    con = sqlite3.connect(tmp_path / "cryod.db")
    try:
        refused = con.execute(
            "SELECT action, reason FROM operator_actions WHERE procedure_id = ? AND NOT accepted",
            (pid,),
        ).fetchall()
    finally:
        con.close()
    reasons = [r for _a, r in refused]
    assert sum("lease_not_armed" in r for r in reasons) == 2, refused
    assert sum("lease_timeout_too_long" in r for r in reasons) == 4, refused
    record(
        "refuse_freeze",
        {"refusals": len(refused), "valves_opened_while_refused": 0, "control_freeze_opened": 1},
    )
