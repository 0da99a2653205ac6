"""Shared helpers for the bad-input and security tests: CLIs as subprocesses,
what the console did (simulator event log) and what the daemon recorded.

Built on tests/e2e/harness.py (a real cryosim and a real cryod); nothing here
is a mock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.e2e.harness import Daemon, Sim

PY = sys.executable
REPO = Path(__file__).resolve().parents[2]


def run_cli(
    module: str, *args: str, timeout: float = 60, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """``python -m cryod.<module> ARGS`` with captured text output."""
    return subprocess.run(
        [PY, "-m", f"cryod.{module}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def cryoctl(sock: Path, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return run_cli("daemon.ctl", "--socket", str(sock), *args, **kw)


def valve_events(sim: Sim) -> list[dict[str, Any]]:
    return sim.events("valve")


def actions(db: Path) -> list[dict[str, Any]]:
    """The operator-actions table, oldest first."""
    con = sqlite3.connect(db)
    try:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute("SELECT * FROM operator_actions ORDER BY id")]
    finally:
        con.close()


def fingerprint(d: Daemon) -> dict[str, Any]:
    """What a refused request must not change: engine, procedure, alarms, valves, faults."""
    st = d.status()
    eng = st["engine"]
    snap = st["snapshot"]
    return {
        "state": eng["state"],
        "step": eng.get("step"),
        "protocol": eng.get("protocol"),
        "procedure": st["procedure"],
        "alarms": sorted((a["code"], a["probe"], a["acked"]) for a in st["alarms"]),
        "freeze_open": [p["freeze_open"] for p in snap["probes"]],
        "thaw_on": [p["thaw_on"] for p in snap["probes"]],
        "master_open": snap["master_open"],
        "faults": sorted(snap["faults"]),
    }


def after_polls(d: Daemon, polls: int = 3, timeout_s: float = 30.0) -> None:
    """``Daemon.after_polls``: negative checks after polls the daemon made, not a sleep."""
    d.after_polls(polls, timeout_s)


async def raw_request(sock: Path, data: bytes, timeout_s: float = 10.0) -> dict[str, Any] | None:
    """Send raw bytes on the control socket; the first JSON answer line (None: closed)."""

    async def go() -> dict[str, Any] | None:
        reader, writer = await asyncio.open_unix_connection(str(sock), limit=1 << 24)
        try:
            writer.write(data)
            await writer.drain()
            line = await reader.readline()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
        return json.loads(line) if line else None

    async with asyncio.timeout(timeout_s):
        return await go()


def raw(sock: Path, data: bytes) -> dict[str, Any] | None:
    return asyncio.run(raw_request(sock, data))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")
