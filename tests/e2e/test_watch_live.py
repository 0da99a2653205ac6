"""`cryoctl watch` in a real terminal (tmux) against a running daemon shows the probe
temperatures, and says so plainly when the daemon goes away."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import require_binary

from .harness import DEMO_PROCEDURE, sim_and_daemon

# a probe row: number (starred when in use), then its tip temperature
TEMP = re.compile(r"^[^\w-]*\*?\s*[1-8]\s+-?\d+\.\d\s", re.MULTILINE)


def test_watch_in_tmux_shows_probe_temperatures(tmp_path: Path) -> None:
    require_binary("tmux")
    session = f"cryod-watch-{int(time.time() * 1000) % 100000}"
    with sim_and_daemon(tmp_path, speed=10.0) as (_sim, d):
        d.call("procedure_open", DEMO_PROCEDURE)
        d.call("run", {"protocol": "morton-neuroma-cazzato2016", "probes": [1]})
        d.wait_state({"freezing"}, timeout=10)
        cmd = f"{sys.executable} -m cryod.daemon.ctl --socket {d.socket} watch --hz 4"
        subprocess.run(
            [
                "tmux",
                "-L",
                session,
                "new-session",
                "-d",
                "-s",
                session,
                "-x",
                "120",
                "-y",
                "50",
                cmd,
            ],
            check=True,
        )
        try:
            deadline = time.monotonic() + 15
            screen = ""
            while time.monotonic() < deadline:
                screen = subprocess.run(
                    ["tmux", "-L", session, "capture-pane", "-p", "-t", session],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                if "freezing" in screen.lower() and len(TEMP.findall(screen)) >= 8:
                    break
                time.sleep(0.3)
            assert "freezing" in screen.lower(), screen
            assert len(TEMP.findall(screen)) >= 8, screen  # every probe's tip temperature
            first = second = screen
            deadline = time.monotonic() + 30
            while second == first and time.monotonic() < deadline:
                time.sleep(0.3)
                second = subprocess.run(
                    ["tmux", "-L", session, "capture-pane", "-p", "-t", session],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            assert second != first  # it updates (countdown, trend)
            d.stop()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                screen = subprocess.run(
                    ["tmux", "-L", session, "capture-pane", "-p", "-t", session],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                if "unreachable" in screen:
                    break
                time.sleep(0.3)
            assert "unreachable" in screen, screen
        finally:
            subprocess.run(["tmux", "-L", session, "kill-server"], check=False)


def test_watch_once_on_a_dumb_terminal_has_no_escape_codes(tmp_path: Path) -> None:
    with sim_and_daemon(tmp_path, speed=10.0) as (_sim, d):
        r = subprocess.run(
            [
                sys.executable,
                "-c",
                "import asyncio, sys; from cryod.daemon.control import call; "
                "from cryod.daemon.watch import watch; "
                f"sys.exit(asyncio.run(watch(lambda: call({str(d.socket)!r}, "
                "'status'), once=True)))",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            env={"TERM": "dumb", "PATH": "/usr/bin:/bin"},
        )
    assert r.returncode == 0, r.stderr
    assert "\x1b[" not in r.stdout
    assert len(TEMP.findall(r.stdout)) >= 8
