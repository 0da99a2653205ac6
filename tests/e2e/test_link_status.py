"""What a user sees when the console goes quiet: the link is silent, not up, and the
stale-data alarm gives wall-clock seconds (saying which are simulated).

cryod runs against cryosim at simulated speed x10; the console stops answering
(cryosim ``comms-silent``) while the connection stays open.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .harness import sim_and_daemon

SPEED = 10.0
STALE = re.compile(r"no valid snapshot for (\d+\.\d\d) s \((\d+\.\d\d) s simulated at x10\)")


def _wait(pred: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _stale(c: dict[str, Any]) -> dict[str, Any] | None:
    return next((a for a in c["alarms"] if a["code"] == "stale_data"), None)


def _silent(c: dict[str, Any]) -> dict[str, Any] | None:
    """The console's status once stale_data is raised and the link is no longer up."""
    return c if _stale(c) is not None and c["link"]["state"] != "up" else None


def _cryoctl_status(sock: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "cryod.daemon.ctl", "--socket", str(sock), "status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_silent_console_is_shown_silent_with_stale_data_in_wall_seconds(tmp_path: Path) -> None:
    with sim_and_daemon(tmp_path, speed=SPEED) as (sim, d):
        up = d.status()["link"]
        assert up["state"] == "up", up
        assert "link up" in _cryoctl_status(d.socket)
        sim.ctl("fault", "comms-silent")
        c = _wait(lambda: _silent(d.status()), 15, "stale_data and a link that is not up")
        link = c["link"]
        assert link["state"] in ("silent", "down"), link
        assert link["snapshot_age_s"] > link["stale_after_s"], link
        # the detail: wall seconds, and the simulated ones said to be simulated
        alarm = _stale(c)
        assert alarm is not None
        m = STALE.fullmatch(alarm["message"])
        assert m, alarm["message"]
        wall_s, simulated_s = float(m[1]), float(m[2])
        assert abs(simulated_s - SPEED * wall_s) <= 0.1, alarm["message"]
        # cryoctl status no longer says "link up" while nothing arrives
        text = _cryoctl_status(d.socket)
        assert "link up" not in text, text
        assert re.search(r"link (DOWN, )?silent for \d+\.\d s", text), text
        assert "ALARM HIGH stale_data" in text, text
        # the console answers again: the link is up, and the latched alarm needs ack + reset
        sim.ctl("clear", "comms-silent")
        _wait(lambda: d.status()["link"]["state"] == "up", 15, "the link to come back")
        assert _stale(d.status()) is not None
        d.call("ack")
        _wait(lambda: _reset(d), 15, "the reset")
        assert _stale(d.status()) is None
        assert "link up" in _cryoctl_status(d.socket)


def _reset(d: Any) -> bool:
    from cryod.daemon.control import ControlError

    try:
        d.call("reset")
    except ControlError:
        return False
    return True
