"""An anchor route that fails raises the medium ``anchor_failed`` alarm, never stops a
freeze, and clears when the route works again; ``cryoctl verify`` through the daemon
checks the record with the daemon's own anchors."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.security.rig import cryoctl

from .harness import DEMO_PROCEDURE, sim_and_daemon


def _anchor_alarm(d: Any) -> dict[str, Any] | None:
    return next((a for a in d.status()["alarms"] if a["code"] == "anchor_failed"), None)


def _wait(pred: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_failing_anchor_route_alarms_but_never_stops_a_freeze(tmp_path: Path) -> None:
    share = tmp_path / "share"  # not mounted yet: the anchor file cannot be written
    extra = f'[anchors]\nfile = "{share / "node.jsonl"}"\nalarm_after_s = 0.5\n'
    with sim_and_daemon(tmp_path, speed=20.0, extra=extra) as (_sim, d):
        d.call("procedure_open", DEMO_PROCEDURE)
        d.call("freeze", {"probe": 1, "seconds": 120})
        d.wait_state({"freezing"}, timeout=10)
        alarm = _wait(lambda: _anchor_alarm(d), 15, "anchor_failed")
        assert alarm["priority"] == "medium"
        assert alarm["latched"] is False
        assert "file" in alarm["message"]
        final = d.wait_state({"complete", "fault", "aborted", "stopped"}, timeout=30)
        assert final["engine"]["state"] == "complete", final  # the freeze ran its course
        share.mkdir()  # the share is back: the route anchors the head it owed, the alarm clears
        _wait(lambda: _anchor_alarm(d) is None, 15, "anchor_failed to clear")
        assert (share / "node.jsonl").read_text().count('"anchor"') >= 1
        live = cryoctl(d.socket, "verify")
        assert live.returncode == 0, live.stdout + live.stderr
        assert f"anchors {share / 'node.jsonl'}: ok" in live.stdout
        assert "anchors cryod (running): ok" in live.stdout
