"""Issue 9, fault 3: a blocked event loop stops systemd's watchdog pings, and the
console lease still closes the valves.

The daemon runs in a child process of ours (stall_child.py) that blocks its
event loop mid-freeze with ``time.sleep``. NOTIFY_SOCKET and WATCHDOG_USEC
point at a datagram socket this test reads, as systemd would: ``WATCHDOG=1``
must stop for the whole stall (systemd would restart the service after
WatchdogSec) and resume once the loop runs again; the console closes the
valves on its own within lease + one tick of the stall (+ the lateness this
machine showed), and no earlier than a lease after the write that last renewed it.
"""

from __future__ import annotations

import os
import random
import select
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.harness import PY, Daemon, Sim, daemon_config
from tests.timing import ThreadLag

from .rig import (
    JITTER_S,
    LEASE_MS,
    POLL_HZ,
    SPEED,
    TICK_S,
    fresh_procedure,
    lease_renewed_before_expiry,
    log_problems,
    open_valves_at,
    record,
    seed_from_env,
    valve_events,
    wait_for,
)

CHILD = Path(__file__).with_name("stall_child.py")
WATCHDOG_USEC = 1_000_000  # pings every 0.5 s
STALL_S = 3.0


class _Notify:
    """The systemd side of sd_notify: timestamps every datagram received."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.received: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.sock], [], [], 0.05)
            if ready:
                data = self.sock.recv(4096)
                self.received.append((time.monotonic(), data.decode()))

    def pings(self) -> list[float]:
        return [t for t, msg in self.received if "WATCHDOG=1" in msg.split("\n")]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


class _StallDaemon(Daemon):
    def __init__(self, config: Path, workdir: Path, env: dict[str, str], delay_s: float) -> None:
        self.config = config
        self.socket = workdir / "cryod.sock"
        self.log = workdir / "cryod.log"
        self._fh = open(self.log, "a")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [PY, str(CHILD), str(config), str(delay_s), str(STALL_S)],
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
        self.wait_ready()

    def marker(self, word: str) -> float | None:
        for line in self.log.read_text().splitlines():
            if line.startswith(word + " "):
                return float(line.split()[1])
        return None


@pytest.mark.timeout(90)
def test_blocked_loop_stops_watchdog_and_lease_closes_valves(tmp_path: Path) -> None:
    seed = seed_from_env()
    delay_s = random.Random(seed).uniform(0.1, 3.0)
    notify = _Notify(tmp_path / "notify.sock")
    sim = Sim(tmp_path, speed=SPEED)
    d: _StallDaemon | None = None
    try:
        cfg = daemon_config(tmp_path, sim, speed=SPEED, poll_hz=POLL_HZ, lease_timeout_ms=LEASE_MS)
        env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)}
        d = _StallDaemon(cfg, tmp_path, env, delay_s)
        assert any("READY=1" in m for _, m in notify.received), notify.received
        fresh_procedure(d)
        with ThreadLag() as lag:  # how late this machine ran: the console too
            d.call("freeze", {"probe": 1, "seconds": 60})
            stall = wait_for(lambda: d.marker("STALL"), 15, "the loop to be blocked")
            resumed = wait_for(lambda: d.marker("RESUMED"), STALL_S + 10, "the loop to run again")
            closes = wait_for(
                lambda: [
                    e
                    for e in valve_events(sim, valve=None, cause="lease_expired", after=stall)
                    if not e["open"]
                ],
                5,
                "the lease to close the valves",
            )
        renewed = lease_renewed_before_expiry(sim, stall)
        open_at = open_valves_at(sim, stall)
        # the daemon shows the console's fault once it runs again; pings resume
        wait_for(
            lambda: any(a["code"] == "console_lease_expired" for a in d.status()["alarms"]),
            10,
            "the lease alarm",
        )
        wait_for(lambda: [t for t in notify.pings() if t > resumed + 0.1], 5, "pings to resume")
        rc = d.stop()
    finally:
        if d is not None and d.proc.poll() is None:
            d.stop()
        sim.stop()
        notify.close()
    assert rc == 0
    assert {"freeze1", "master"} <= open_at, open_at
    lat = {f"{e['valve']}{e['probe'] or ''}": e["mono_t_s"] - stall for e in closes}
    assert open_at <= set(lat), (open_at, lat)
    assert max(lat.values()) <= LEASE_MS / 1000 + TICK_S + JITTER_S + lag.max_s, (lat, lag.max_s)
    # it was the lease: nothing closed before a whole lease after the last renewal
    # (measured from that write: on a loaded machine it can be later than one
    # renewal interval before the stall; event times are rounded to the microsecond)
    after_renewal_s = stall + min(lat.values()) - renewed
    assert after_renewal_s >= LEASE_MS / 1000 - 2e-6, (lat, after_renewal_s)
    pings = notify.pings()
    before = [t for t in pings if stall - 1.2 < t <= stall]
    during = [t for t in pings if stall < t < resumed]
    assert len(before) >= 2, f"the watchdog was not pinging before the stall: {pings}"
    assert during == [], f"WATCHDOG=1 sent while the loop was blocked: {during}"
    gap = min(t for t in pings if t > stall) - max(before)
    assert gap >= STALL_S, gap
    assert log_problems(tmp_path / "cryod.log") == []
    record(
        "loop_stall",
        {
            "seed": seed,
            "stall_s": STALL_S,
            "watchdog_interval_s": WATCHDOG_USEC / 2e6,
            "pings_during_stall": len(during),
            "longest_ping_gap_s": round(gap, 3),
            "lease_close_after_stall_s": round(max(lat.values()), 4),
        },
    )
