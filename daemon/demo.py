"""``cryod demo``: a whole procedure on the simulator, over a real loopback transport.

Starts ``cryosim`` in a subprocess, the daemon in this process, opens a
procedure through the control socket exactly as ``cryoctl`` would, under the
example Morton's neuroma study profile (selection and procedure details with
demo values, consent), records the baseline pain score the study requires
before the first freeze, runs the protocol, records a demo adverse event,
closes the procedure and writes the report. Needs no file from the checkout
and no broker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .config import load_config_data
from .control import ControlError, call

__all__ = ["run_demo"]

DONE = {"complete", "stopped", "aborted", "fault"}

#: the example Morton's neuroma study profile the demo's procedure is opened under
DEMO_STUDY = "mortons-neuroma-example"

#: the demo's procedure: its own fields and the study's (demo values, not a patient)
DEMO_OPEN: dict[str, Any] = {
    "patient_ref": "DEMO-0001",
    "indication": "mortons_neuroma",
    "site": "third intermetatarsal space",
    "side": "left",
    "imaging": "ultrasound",
    "anaesthesia": "local",
    "operator": "demo",
    "probe_model": "SIM-PROBE-17G",
    "probe_lot": "DEMO-LOT",
    "study": DEMO_STUDY,
    "consent": {"confirmed": True, "form_version": "1.0"},
    "selection": {
        "eligibility": {"items": {"*": True}},  # every item of the study's checklist
        "symptom_duration_months": 14,
        "prior_treatments": ["insoles_footwear", "steroid_injection"],
        "aetiology": "idiopathic_mortons",
        "nerve": "common_plantar_digital",
        "web_space": "third",
        "neuroma_size_mm": 6.5,
    },
    "details": {
        "technical_success": True,
        "anaesthetic_agent": "lidocaine 1%",
        "setting": "day_case",
        "probe_gauge": 17,
        "probe_count": 1,
    },
}

#: the baseline pain score the example study requires before the first freeze
DEMO_BASELINE_PAIN: dict[str, Any] = {"score": 7}


def demo_adverse_event() -> dict[str, Any]:
    """The demo's adverse event, noticed before close (onset: now, in UTC)."""
    import datetime as dt

    onset = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "category": "damage_to_adjacent_structures",
        "subcategory": "cold_injury",
        "verbatim_term": "demo: blanching of the skin over the probe entry site",
        "onset": onset,
        "ctcae_grade": 1,
        "serious": False,
        "relatedness_device": "possibly",
        "relatedness_procedure": "probably",
        "outcome": "recovering_resolving",
        "action_taken": "treatment_given",
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sim_command(args: argparse.Namespace, workdir: Path) -> tuple[list[str], dict[str, Any]]:
    cmd = [
        sys.executable,
        "-c",
        "import sys; from cryod.simulators.cli import main; sys.exit(main())",
        "serve",
        "--speed",
        str(args.speed),
        "--seed",
        "1",
        "--event-log",
        str(workdir / "console-events.jsonl"),
        "--control",
        str(workdir / "sim-control.sock"),
    ]
    if args.transport == "modbus-tcp":
        port = _free_port()
        cmd += ["--modbus-tcp", f"127.0.0.1:{port}"]
        return cmd, {"driver": "modbus-tcp", "options": {"host": "127.0.0.1", "port": port}}
    link = str(workdir / "ttyCRYO0")
    if args.transport == "modbus-rtu":
        cmd += ["--modbus-rtu", link]
        return cmd, {"driver": "modbus-rtu", "options": {"port": link}}
    cmd += ["--serial", link]
    return cmd, {"driver": "serial-line", "options": {"port": link}}


def _wait_for_link(proc: subprocess.Popen[bytes], drv: dict[str, Any], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"cryosim exited with {proc.returncode}")
        opts = drv["options"]
        if drv["driver"] == "modbus-tcp":
            with (
                contextlib.suppress(OSError),
                socket.create_connection((opts["host"], opts["port"]), timeout=0.2),
            ):
                return
        elif os.path.exists(opts["port"]):
            return
        time.sleep(0.05)
    raise RuntimeError("cryosim did not start in time")


def run_demo(args: argparse.Namespace) -> int:
    workdir = (
        Path(args.db).resolve().parent if args.db else Path(tempfile.mkdtemp(prefix="cryod-demo-"))
    )
    workdir.mkdir(parents=True, exist_ok=True)
    db = Path(args.db).resolve() if args.db else workdir / "cryod-demo.db"
    report = Path(args.report).resolve() if args.report else workdir / "cryod-demo-report.html"
    sim_cmd, drv = _sim_command(args, workdir)
    sim = subprocess.Popen(sim_cmd, stdout=subprocess.DEVNULL)
    try:
        _wait_for_link(sim, drv, 10.0)
        raw = {
            "daemon": {
                "database": str(db),
                "control_socket": str(workdir / "cryod.sock"),
                "site": "demo",
                "log_level": "warning",
            },
            "consoles": [
                {
                    "id": "demo",
                    "simulated": True,
                    "time_scale": args.speed,
                    "poll_hz": 20.0,
                    "lease_timeout_ms": 500,
                    **drv,
                }
            ],
        }
        from .logging import configure_logging

        configure_logging("warning", stream=sys.stderr)
        loaded = load_config_data(raw, source="<demo>", base=workdir / "demo.toml")
        probes = [int(p) for p in str(args.probes).split(",") if p.strip()]
        pid = asyncio.run(_drive(loaded, args, probes, workdir / "cryod.sock"))
    finally:
        sim.terminate()
        try:
            sim.wait(5)
        except subprocess.TimeoutExpired:
            sim.kill()
            sim.wait()
    print(f"database: {db}")
    try:
        from .report import write_report

        out = write_report(db, pid, report)
        print(f"report:   {out}")
    except ImportError as exc:
        print(f"report:   not written ({exc})")
    print(f"console event log: {workdir / 'console-events.jsonl'}")
    print("Research use only (NICE IPG747/HTG652). Demo data, not a patient.")
    return 0


async def _drive(loaded: Any, args: argparse.Namespace, probes: list[int], sock: Path) -> int:
    from .service import Daemon

    daemon = Daemon(loaded)
    task = asyncio.create_task(daemon.run(), name="daemon")
    try:
        await _wait_ready(sock, task)
        pid = int((await call(sock, "procedure_open", DEMO_OPEN))["procedure_id"])
        await call(sock, "baseline_pain", DEMO_BASELINE_PAIN)
        await call(sock, "run", {"protocol": args.protocol, "probes": probes})
        final = await _progress(sock, quiet=args.quiet)
        await call(sock, "ae_add", {"event": demo_adverse_event()})
        await call(sock, "procedure_close", {"notes": f"demo run, final state {final}"})
        if final != "complete":
            print(f"protocol ended in state {final}", file=sys.stderr)
        return pid
    finally:
        daemon.request_stop()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(15):
                await task


async def _wait_ready(sock: Path, task: asyncio.Task[Any]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if task.done():
            task.result()
            raise RuntimeError("daemon stopped during start-up")
        try:
            st = await call(sock, "status", timeout_s=2)
            c = st["consoles"][0]
            if c["snapshot"] is not None and c["poll"]["polls"] > 2:
                return
        except (OSError, ControlError, TimeoutError):
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("daemon did not become ready (is the simulator reachable?)")


async def _progress(sock: Path, *, quiet: bool) -> str:
    last = ""
    while True:
        st = await call(sock, "status")
        c = st["consoles"][0]
        eng = c["engine"]
        state = eng["state"]
        if not quiet:
            snap = c.get("snapshot") or {}
            tips = " ".join(
                f"P{p['probe']} {p['tip_c']:7.1f}°C"
                if p["tip_c"] is not None
                else f"P{p['probe']}    ---"
                for p in (snap.get("probes") or [])
                if p["probe"] in (eng.get("probes") or [1])
            )
            rem = eng.get("remaining_s")
            rem_txt = f"{rem:6.1f} s left" if rem is not None else ""
            alarms = ",".join(f"{a['code']}({a['priority']})" for a in c["alarms"])
            line = (
                f"[{state:9}] step {eng.get('step', '-')}/{eng.get('steps', '-')} "
                f"{eng.get('phase', ''):7} {rem_txt:14} {tips} {alarms}"
            )
            if line != last:
                print(line, flush=True)
                last = line
        if state in DONE:
            return str(state)
        await asyncio.sleep(0.5)
