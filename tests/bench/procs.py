"""The processes a benchmark runs: cryosim (from the e2e harness), cryod, mosquitto.

cryod runs as ``tests.bench.daemon_main`` (the real daemon plus a read-only
``bench_polls`` command) or, for the start-up figure, as the unchanged
``cryod run``. Either way it gets a ``NOTIFY_SOCKET`` of ours, so READY=1 is
caught exactly as systemd would catch it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from cryod.daemon.control import call
from tests.e2e.harness import DEMO_PROCEDURE, Sim, _stop

__all__ = ["DEMO_PROCEDURE", "BenchDaemon", "Sim", "daemon_toml", "proc_cpu_s", "proc_rss_mb"]

REPO = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def daemon_toml(
    workdir: Path,
    sims: list[Sim],
    *,
    speed: float = 1.0,
    poll_hz: float = 20.0,
    lease_timeout_ms: int | None = None,  # None: the daemon's default (1000 ms)
    mqtt_port: int | None = None,
    log_level: str = "info",
) -> Path:
    """A daemon config with one console per simulator (ids c1, c2, ...)."""
    parts = [
        f"""[daemon]
database = "{workdir / "cryod.db"}"
control_socket = "{workdir / "cryod.sock"}"
site = "bench"
log_level = "{log_level}"
require_study_id = true
"""
    ]
    for i, sim in enumerate(sims, start=1):
        opts = "\n".join(f"{k} = {json.dumps(v)}" for k, v in sim.driver["options"].items())
        parts.append(
            f"""
[[consoles]]
id = "c{i}"
driver = "{sim.driver["driver"]}"
simulated = true
time_scale = {speed}
poll_hz = {poll_hz}
{"" if lease_timeout_ms is None else f"lease_timeout_ms = {lease_timeout_ms}"}
[consoles.options]
{opts}
"""
        )
    if mqtt_port is not None:
        parts.append(
            f"""
[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
site = "bench"
reconnect_max_s = 5.0
"""
        )
    path = workdir / "cryod.toml"
    path.write_text("".join(parts))
    return path


class BenchDaemon:
    """cryod as a subprocess; ``ready_s`` is process start to READY=1 (sd_notify)."""

    def __init__(
        self,
        config: Path,
        workdir: Path,
        *,
        plain: bool = False,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.socket = workdir / "cryod.sock"
        self.log = workdir / "cryod.log"
        notify_path = workdir / "notify.sock"
        with contextlib.suppress(FileNotFoundError):
            notify_path.unlink()
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(notify_path))
        self._fh = open(self.log, "a")  # noqa: SIM115 - closed in stop()
        module = "cryod.daemon.cli" if plain else "tests.bench.daemon_main"
        args = ["run", "--config", str(config)] if plain else [str(config)]
        env = {**os.environ, **(extra_env or {}), "NOTIFY_SOCKET": str(notify_path)}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.t_start = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )
        self.pid = self.proc.pid
        self.notifications: list[str] = []
        self._drain_stop = threading.Event()
        self._drain: threading.Thread | None = None
        try:
            self.ready_s = self._wait_ready(30.0)
        except BaseException:
            self.stop()
            raise
        # keep reading like systemd does: the daemon's sd_notify send is blocking, and a
        # full datagram queue (10 by default) would stall its event loop
        self._drain = threading.Thread(target=self._drain_notify, name="bench-notify", daemon=True)
        self._drain.start()

    def _drain_notify(self) -> None:
        self._notify.settimeout(0.1)
        while not self._drain_stop.is_set():
            try:
                self.notifications.append(self._notify.recv(4096).decode(errors="replace"))
            except TimeoutError:
                continue
            except OSError:
                return

    def _wait_ready(self, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        self._notify.settimeout(0.1)
        while time.monotonic() < deadline:
            try:
                msg = self._notify.recv(4096).decode(errors="replace")
            except TimeoutError:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"cryod exited {self.proc.returncode}: {self.log.read_text()[-3000:]}"
                    ) from None
                continue
            if "READY=1" in msg.split("\n"):
                return time.monotonic() - self.t_start
        raise RuntimeError(f"cryod not READY in {timeout} s: {self.log.read_text()[-3000:]}")

    def call(self, cmd: str, args: dict[str, Any] | None = None, timeout_s: float = 15.0) -> Any:
        return asyncio.run(call(self.socket, cmd, args or {}, timeout_s=timeout_s))

    def status(self) -> dict[str, Any]:
        return self.call("status")

    def wait_polling(self, min_polls: int = 3, timeout: float = 30.0) -> None:
        """Every console connected and polling."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                cs = self.status()["consoles"]
                if all(c["snapshot"] is not None and c["poll"]["polls"] > min_polls for c in cs):
                    return
            time.sleep(0.05)
        raise RuntimeError(f"consoles not polling: {self.log.read_text()[-3000:]}")

    def polls(self, clear: bool = False) -> dict[str, Any]:
        return self.call("bench_polls", {"clear": clear})

    def stop(self) -> int:
        rc = _stop(self.proc, 20)
        if not self._fh.closed:
            self._fh.close()
        self._drain_stop.set()
        if self._drain is not None:
            self._drain.join()
        self._notify.close()
        return rc


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (from /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as fh:
        stat = fh.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_mb(pid: int) -> float:
    """Resident set size in MB (VmRSS from /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for pid {pid}")
