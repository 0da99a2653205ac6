"""Processes for end-to-end tests and benchmarks: a real cryosim and a real cryod.

Both run as subprocesses speaking over real transports, so a test can kill -9
the daemon and read what really happened at the console from the
simulator's event log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryod.daemon.control import ControlError, call

PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[Any], timeout: float = 10.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class Sim:
    """``cryosim serve`` on one transport with a control socket and an event log."""

    def __init__(
        self,
        workdir: Path,
        *,
        transport: str = "modbus-tcp",
        speed: float = 10.0,
        seed: int = 1,
        extra: list[str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.transport = transport
        self.event_log = workdir / "console-events.jsonl"
        self.control = workdir / "sim.sock"
        args = [
            "serve",
            "--speed",
            str(speed),
            "--seed",
            str(seed),
            "--event-log",
            str(self.event_log),
            "--control",
            str(self.control),
        ]
        if transport == "modbus-tcp":
            self.port = free_port()
            args += ["--modbus-tcp", f"127.0.0.1:{self.port}"]
            self.driver = {
                "driver": "modbus-tcp",
                "options": {"host": "127.0.0.1", "port": self.port},
            }
        else:
            self.link = workdir / "ttySIM0"
            args += ["--modbus-rtu" if transport == "modbus-rtu" else "--serial", str(self.link)]
            self.driver = {
                "driver": "modbus-rtu" if transport == "modbus-rtu" else "serial-line",
                "options": {"port": str(self.link)},
            }
        args += extra or []
        self.proc = subprocess.Popen(
            [PY, "-m", "cryod.simulators.cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.proc.stdout is not None
        wanted = 2  # the transport and the control socket
        seen = 0
        deadline = time.monotonic() + 20
        while seen < wanted:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"cryosim exited: {self.proc.poll()}")
            if "listening on" in line:
                seen += 1
            if time.monotonic() > deadline:
                raise RuntimeError("cryosim did not start")

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        out = []
        if not self.event_log.exists():
            return out
        for line in self.event_log.read_text().splitlines():
            with contextlib.suppress(ValueError):
                ev = json.loads(line)
                if kind is None or ev.get("event") == kind:
                    out.append(ev)
        return out

    def ctl(self, *args: str) -> str:
        return subprocess.run(
            [
                PY,
                "-m",
                "cryod.simulators.cli",
                *args[:1],
                "--control",
                str(self.control),
                *args[1:],
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=20,
        ).stdout

    def state(self) -> dict[str, Any]:
        return json.loads(self.ctl("state"))

    def stop(self) -> None:
        _stop(self.proc)
        if self.proc.stdout:
            self.proc.stdout.close()


def daemon_config(
    workdir: Path,
    sim: Sim,
    *,
    speed: float,
    poll_hz: float = 20.0,
    lease_timeout_ms: int = 500,
    extra_console: str = "",
    extra: str = "",
) -> Path:
    opts = "\n".join(f"{k} = {json.dumps(v)}" for k, v in sim.driver["options"].items())
    text = f"""
[daemon]
database = "{workdir / "cryod.db"}"
control_socket = "{workdir / "cryod.sock"}"
site = "test"
log_level = "info"
require_study_id = true

[[consoles]]
id = "c1"
driver = "{sim.driver["driver"]}"
simulated = true
time_scale = {speed}
poll_hz = {poll_hz}
lease_timeout_ms = {lease_timeout_ms}
{extra_console}
[consoles.options]
{opts}
{extra}
"""
    path = workdir / "cryod.toml"
    path.write_text(text)
    return path


class Daemon:
    """``cryod run`` as a subprocess; its JSON log lines go to a file."""

    def __init__(self, config: Path, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.socket = workdir / "cryod.sock"
        self.log = workdir / "cryod.log"
        self._fh = open(self.log, "a")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [PY, "-m", "cryod.daemon.cli", "run", "--config", str(config)],
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cryod exited {self.proc.returncode}: {self.log.read_text()}")
            with contextlib.suppress(OSError, ControlError, TimeoutError, ValueError):
                st = self.call("status", timeout_s=2)
                c = st["consoles"][0]
                if c["snapshot"] is not None and c["poll"]["polls"] > 3:
                    return st
            time.sleep(0.1)
        raise RuntimeError(f"cryod not ready: {self.log.read_text()[-3000:]}")

    def call(self, cmd: str, args: dict[str, Any] | None = None, timeout_s: float = 15.0) -> Any:
        return asyncio.run(call(self.socket, cmd, args or {}, timeout_s=timeout_s))

    def status(self) -> dict[str, Any]:
        return self.call("status")["consoles"][0]

    def after_polls(self, polls: int = 3, timeout_s: float = 30.0) -> None:
        """Wait until the daemon has polled the console ``polls`` more times. A valve
        commanded by mistake has reached the console by then (the simulator's event log)
        and shows in the daemon's snapshot: a negative check after this is not vacuous,
        however slow the machine (a fixed sleep could pass before a single poll ran)."""
        start = self.status()["poll"]["polls"]
        deadline = time.monotonic() + timeout_s
        while self.status()["poll"]["polls"] < start + polls:
            assert time.monotonic() < deadline, f"the daemon polled fewer than {polls} times"
            time.sleep(0.02)

    def wait_state(self, states: set[str], timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.status()
            if st["engine"]["state"] in states:
                return st
            time.sleep(0.1)
        raise AssertionError(f"engine never reached {states}: {self.status()['engine']}")

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._fh.close()

    def stop(self) -> int:
        rc = _stop(self.proc, 20)
        if not self._fh.closed:
            self._fh.close()
        return rc


DEMO_PROCEDURE = {
    "patient_ref": "PSN-0042",
    "indication": "mortons_neuroma",
    "site": "third intermetatarsal space",
    "side": "left",
    "imaging": "ultrasound",
    "anaesthesia": "local",
    "study_id": "STUDY-1",
    "probe_model": "SIM-17G",
    "probe_lot": "L1",
}


@contextlib.contextmanager
def sim_and_daemon(
    workdir: Path, *, transport: str = "modbus-tcp", speed: float = 10.0, **cfg: Any
) -> Iterator[tuple[Sim, Daemon]]:
    sim = Sim(workdir, transport=transport, speed=speed)
    daemon = None
    try:
        daemon = Daemon(daemon_config(workdir, sim, speed=speed, **cfg), workdir)
        yield sim, daemon
    finally:
        if daemon is not None:
            daemon.stop()
        sim.stop()
