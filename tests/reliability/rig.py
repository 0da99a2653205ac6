"""Shared rig for the fault tests: a real cryosim and a real cryod, and the checks
every fault test makes on what they left behind.

The simulator's event log is the ground truth of what happened at the console;
its ``mono_t_s`` is ``time.monotonic()`` of the simulator process, the same
system-wide clock as ``time.monotonic()`` here, so a latency is one subtraction.
Sizes are CI-sized by default; environment variables make them bigger
(docs/reliability.md lists them).
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

from cryod.daemon.control import ControlError
from tests.e2e.harness import DEMO_PROCEDURE, Daemon, Sim, daemon_config

T = TypeVar("T")

SPEED = 10.0  # cryosim --speed and the daemon's time_scale
POLL_HZ = 20.0
POLL_S = 1.0 / POLL_HZ  # wall seconds between polls
LEASE_MS = 500
TICK_S = 0.01  # the console's safety tick (profile cryosim-8: tick_s)
# Scheduling jitter of the simulator's tick loop on a loaded CI host: the console
# checks the lease every tick_s, but asyncio.sleep may wake a little late.
JITTER_S = 0.05
RESULTS = Path(os.environ.get("CRYOD_RELIABILITY_OUT", "/tmp/cryod-reliability"))

# log lines that mean an exception escaped somewhere in the daemon
_PROBLEM_MARKERS = ("Traceback", '"exception"', "exc_info", "never retrieved", '"level":"critical"')


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


#: CI is deterministic: the default seed is fixed; CRYOD_SEED=random explores new ones
DEFAULT_SEED = 1947858611


def seed_from_env(name: str = "CRYOD_SEED") -> int:
    """The run's seed: from the environment to replay (``random`` for a fresh one),
    else the fixed default (printed either way)."""
    raw = os.environ.get(name)
    if raw == "random":
        seed = random.SystemRandom().randrange(1, 2**31)
    else:
        seed = int(raw) if raw else DEFAULT_SEED
    print(f"\n{name}={seed}  (set it to replay this run)")
    return seed


def record(name: str, figures: dict[str, Any]) -> None:
    """Print a test's figures and keep them as JSON for docs/reliability.md."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    figures = {
        "test": name,
        "at_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **figures,
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2, sort_keys=True))
    print(f"\nFIGURES {name}: {json.dumps(figures, sort_keys=True)}")


def wait_for(fn: Callable[[], T | None], timeout: float, what: str, every: float = 0.02) -> T:
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def valve_events(
    sim: Sim,
    *,
    valve: str | None = "freeze",
    probe: int | None = None,
    is_open: bool | None = None,
    cause: str | None = None,
    after: float = 0.0,
) -> list[dict[str, Any]]:
    return [
        e
        for e in sim.events("valve")
        if (valve is None or e.get("valve") == valve)
        and (probe is None or e.get("probe") == probe)
        and (is_open is None or e["open"] is is_open)
        and (cause is None or e["cause"] == cause)
        and e["mono_t_s"] > after
    ]


def lease_renewed_before_expiry(sim: Sim, after: float) -> float:
    """From the event log: when the write that last renewed the lease reached the
    console, for the first lease expiry after ``after`` (wall monotonic)."""
    (first, *_) = [e for e in sim.events("lease_expired") if e["mono_t_s"] > after]
    return float(first["renewed_mono_t_s"])


def gas_flowing(sim: Sim) -> bool:
    """The physical truth now: is gas reaching any probe (master AND freeze valve open)?"""
    return any(p["gas_flowing"] for p in sim.state()["probes"])


def open_valves_at(sim: Sim, t: float) -> set[str]:
    """From the event log: the valves physically open at monotonic time ``t``
    (keys like ``freeze3``, ``thaw3``, ``master``)."""
    state: dict[str, bool] = {}
    for e in sim.events("valve"):
        if e["mono_t_s"] > t:
            break
        state[f"{e['valve']}{e['probe'] or ''}"] = bool(e["open"])
    return {k for k, v in state.items() if v}


def gas_stopped_at(sim: Sim, after: float) -> float | None:
    """From the event log: the moment after ``after`` from which no gas has flowed
    since (master closed, or every freeze valve physically closed), or None while
    gas flows. A valve that opens again later moves the moment on."""
    master = False
    freeze: dict[int, bool] = {}
    stopped: float | None = None
    for e in sim.events("valve"):
        if e["valve"] == "master":
            master = bool(e["open"])
        elif e["valve"] == "freeze":
            freeze[int(e["probe"])] = bool(e["open"])
        else:
            continue
        flowing = master and any(freeze.values())
        if flowing:
            stopped = None
        elif stopped is None and e["mono_t_s"] > after:
            stopped = float(e["mono_t_s"])
    return stopped


def log_problems(path: Path) -> list[str]:
    """Lines of the daemon's log that show an escaped exception."""
    if not path.exists():
        return []
    return [ln for ln in path.read_text().splitlines() if any(m in ln for m in _PROBLEM_MARKERS)]


def log_events(path: Path, event: str) -> list[dict[str, Any]]:
    out = []
    for ln in path.read_text().splitlines():
        raw = ln[ln.find("{") :] if "{" in ln else ""
        try:
            rec = json.loads(raw)
        except ValueError:
            continue
        if rec.get("event") == event:
            out.append(rec)
    return out


def fresh_procedure(d: Daemon) -> int:
    """Close whatever procedure is open (an adopted one after a restart) and open a new one."""
    st = d.status()
    if st["procedure"] is not None:
        d.call("procedure_close", {"notes": "reliability trial", "adverse_events": []})
    return int(d.call("procedure_open", DEMO_PROCEDURE)["procedure_id"])


def recover(d: Daemon, sim: Sim | None = None, timeout: float = 20.0) -> dict[str, Any]:
    """Back to a usable idle daemon after a fault: clear injected faults, ack, reset
    (retried while the cause is still present, e.g. a supervisor window draining)."""
    if sim is not None:
        sim.ctl("clear")
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        st = d.status()
        if (
            st["engine"]["state"] not in ("fault",)
            and not st["alarms"]
            and st["snapshot"] is not None
            and not st["snapshot"]["faults"]
        ):
            return st
        try:
            d.call("ack")
            d.call("reset")
        except ControlError as exc:
            last = exc
            time.sleep(0.2)
    raise AssertionError(f"daemon did not recover: {last}; {d.status()}")


def cycles(db: Path, procedure_id: int | None = None) -> dict[int, str | None]:
    con = sqlite3.connect(db)
    try:
        q = "SELECT id, outcome FROM cycles"
        args: tuple[Any, ...] = ()
        if procedure_id is not None:
            q += " WHERE procedure_id = ?"
            args = (procedure_id,)
        return {int(i): o for i, o in con.execute(q, args).fetchall()}
    finally:
        con.close()


def integrity(db: Path) -> str:
    con = sqlite3.connect(db)
    try:
        return str(con.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        con.close()


class _Drain:
    """Copies a pipe to a file in a thread (so the daemon's stdout is not a regular
    file: under a file-size limit its own log must not be what fails)."""

    def __init__(self, pipe: IO[bytes], path: Path) -> None:
        self._pipe = pipe
        self._out = open(path, "ab")  # noqa: SIM115 - closed in close()
        self._thread = threading.Thread(target=self._run, name="drain-cryod", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for line in iter(self._pipe.readline, b""):
            self._out.write(line)
            self._out.flush()

    @property
    def closed(self) -> bool:
        return self._out.closed

    def close(self) -> None:
        self._thread.join(10)
        self._pipe.close()
        self._out.close()


class PipedDaemon(Daemon):
    """``cryod run`` with stdout on a pipe (as under systemd, where it goes to journald)."""

    def __init__(self, config: Path, workdir: Path, env: dict[str, str] | None = None) -> None:
        import subprocess

        from tests.e2e.harness import PY

        self.config = config
        self.socket = workdir / "cryod.sock"
        self.log = workdir / "cryod.log"
        self.proc = subprocess.Popen(
            [PY, "-m", "cryod.daemon.cli", "run", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        assert self.proc.stdout is not None
        self._fh = _Drain(self.proc.stdout, self.log)  # type: ignore[assignment]
        self.wait_ready()


@contextmanager
def rig(
    workdir: Path,
    *,
    transport: str = "modbus-tcp",
    speed: float = SPEED,
    lease_ms: int = LEASE_MS,
    seed: int = 1,
    database: Path | None = None,
    piped: bool = False,
    env: dict[str, str] | None = None,
) -> Iterator[tuple[Sim, Daemon, Path]]:
    """A simulator and a daemon on it; both stopped at the end (the daemon by SIGTERM:
    its exit status is checked by the caller through ``rig_exit``)."""
    sim = Sim(workdir, transport=transport, speed=speed, seed=seed)
    d: Daemon | None = None
    try:
        cfg = daemon_config(workdir, sim, speed=speed, poll_hz=POLL_HZ, lease_timeout_ms=lease_ms)
        if database is not None:
            text = cfg.read_text().replace(str(workdir / "cryod.db"), str(database))
            cfg.write_text(text)
        cls = PipedDaemon if piped else Daemon
        d = cls(cfg, workdir, env=env)
        yield sim, d, cfg
    finally:
        if d is not None and d.proc.poll() is None:
            d.stop()
        sim.stop()
