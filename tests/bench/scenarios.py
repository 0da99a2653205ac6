"""One function per benchmark scenario; each starts and stops everything it uses."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.mqtt.broker import Mosquitto

from . import baseline, reaction, slowdisk, steady
from .procs import REPO, BenchDaemon, Sim, daemon_toml
from .stats import spread

TICK_S = 0.01  # cryosim's console tick (profile tick_s)


@contextlib.contextmanager
def workdir(root: Path, name: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
    yield path


@contextlib.contextmanager
def rig(
    wd: Path,
    transports: list[str],
    *,
    poll_hz: float = 20.0,
    mqtt: bool = True,
    lease_timeout_ms: int | None = None,  # the daemon's default, as deployed
    consoles: int | None = None,
    daemon_env: dict[str, str] | None = None,
) -> Iterator[tuple[list[Sim], BenchDaemon, Mosquitto | None]]:
    """cryosim(s) + mosquitto + cryod, all stopped after. One console per simulator, or
    ``consoles`` consoles sharing the simulators in turn."""
    sims: list[Sim] = []
    broker = None
    d = None
    try:
        for i, t in enumerate(transports):
            sdir = wd / f"sim{i + 1}"
            sdir.mkdir()
            sims.append(Sim(sdir, transport=t, speed=1.0, seed=i + 1))
        if mqtt:
            broker = Mosquitto(wd / "mqtt")
            broker.start()
        cfg = daemon_toml(
            wd,
            sims if consoles is None else [sims[i % len(sims)] for i in range(consoles)],
            poll_hz=poll_hz,
            lease_timeout_ms=lease_timeout_ms,
            mqtt_port=None if broker is None else broker.port,
        )
        if broker is not None and os.environ.get("CRYOD_BENCH_RECORD") == "1":
            # the record channel on, live (python -m tests.bench.compare: the CPU it adds)
            with cfg.open("a") as fh:
                fh.write("\n[record]\nenabled = true\n")
        d = BenchDaemon(cfg, wd, extra_env=daemon_env)
        d.wait_polling()
        yield sims, d, broker
    finally:
        if d is not None:
            d.stop()
        for s in sims:
            s.stop()
        if broker is not None:
            broker.stop()


def transport_suite(
    root: Path, transport: str, *, trials: int, window_s: float, repeats: int, rtt_n: int
) -> dict[str, Any]:
    """Baseline, reaction, jitter/CPU/RSS with the broker up, then down, on one transport."""
    out: dict[str, Any] = {"transport": transport, "poll_hz": 20.0}
    with workdir(root, transport) as wd, rig(wd, [transport]) as (sims, d, broker):
        sim = sims[0]
        out["startup_to_ready_s"] = round(d.ready_s, 3)
        out["reaction"] = reaction.summarise(
            reaction.run_trials(sim, d, n=trials, poll_hz=20.0), mode="daemon"
        )
        steady.start_freeze_all(d)
        time.sleep(1.0)
        up = [steady.window(d, window_s, 20.0) for _ in range(repeats)]
        assert broker is not None
        broker.stop()
        time.sleep(1.0)
        down = [steady.window(d, window_s, 20.0) for _ in range(repeats)]
        out["steady_broker_up"] = up
        out["steady_broker_down"] = down
        out["mqtt_after_broker_stop"] = d.status()["mqtt"][0]["state"]
        out["jitter_ms_p99_spread"] = spread([w["jitter_ms"]["p99"] for w in up])
        out["jitter_ms_p99_broker_down_spread"] = spread([w["jitter_ms"]["p99"] for w in down])
        out["cpu_pct_of_core_spread"] = spread([w["cpu_pct_of_core"] for w in up])
    # the link's own cost, on a fresh simulator with nothing else attached
    with workdir(root, f"{transport}-rtt") as wd:
        sim = Sim(wd, transport=transport, speed=1.0)
        try:
            out["baseline"] = baseline.measure(sim, rtt_n)
        finally:
            sim.stop()
    return out


def disk_slow(root: Path, *, window_s: float, repeats: int, fsync_ms: int = 100) -> dict[str, Any]:
    """The steady 8-probe freeze over Modbus TCP with every fsync of cryod delayed by
    ``fsync_ms`` (tests/bench/slowdisk.c, LD_PRELOAD): jitter, CPU and the writer."""
    with workdir(root, "disk-slow") as wd:
        lib = slowdisk.build(wd)
        if lib is None:
            return {"skipped": "no C compiler to build tests/bench/slowdisk.c"}
        with rig(wd, ["modbus-tcp"], daemon_env=slowdisk.env(lib, fsync_ms)) as (_s, d, _b):
            steady.start_freeze_all(d)
            time.sleep(1.0)
            windows = [steady.window(d, window_s, 20.0) for _ in range(repeats)]
            writer = d.polls()["writer"]
    return {
        "fsync_ms": fsync_ms,
        "windows": windows,
        "jitter_ms_p99_spread": spread([w["jitter_ms"]["p99"] for w in windows]),
        # proof the disk was slow: the writer's mean batch took at least one fsync
        "writer_mean_batch_ms": writer.get("mean_batch_ms"),
        "writer_healthy": writer.get("healthy"),
    }


def console_side(root: Path, *, trials: int) -> dict[str, Any]:
    """The console's own min_tip backstop (issue 10), the daemon polling slowly (4 Hz)."""
    with (
        workdir(root, "console-side") as wd,
        rig(wd, ["modbus-tcp"], poll_hz=4.0, mqtt=False, lease_timeout_ms=1000) as (sims, d, _),
    ):
        tr = reaction.run_trials(sims[0], d, n=trials, poll_hz=4.0, mode="console")
        res = reaction.summarise(tr, mode="console")
    res["daemon_poll_hz"] = 4.0
    res["console_tick_ms"] = TICK_S * 1000
    return res


def rate_point(root: Path, hz: float, window_s: float) -> dict[str, Any]:
    with (
        workdir(root, f"rate-{hz:g}") as wd,
        rig(wd, ["modbus-tcp"], poll_hz=hz, lease_timeout_ms=max(500, int(3000 / hz) + 1)) as (
            _s,
            d,
            _b,
        ),
    ):
        steady.start_freeze_all(d)
        time.sleep(1.0)
        w = steady.window(d, window_s, hz)
        st = d.status()["consoles"][0]
    rows_per_poll = 66  # 10 console channels + 8 probes x 7 (store/samples.py)
    w["rows_per_poll"] = rows_per_poll
    w["engine_state"] = st["engine"]["state"]
    w["alarms"] = [a["code"] for a in st["alarms"]]
    # rows in the writer's open batch (at most one batch: 500 rows or 0.2 s) are in flight
    in_flight = max(500, 0.3 * hz * rows_per_poll)
    w["sustained"] = bool(
        w["polls"] >= 0.99 * w["expected_polls"]
        and w["late_polls"] <= 0.02 * max(1, w["polls"])
        and w["samples_dropped"] == 0
        and w["samples_accounted"] >= w["polls"] * rows_per_poll - in_flight
        and st["engine"]["state"] == "freezing"
    )
    return w


def max_rate(root: Path, rates: list[float], window_s: float) -> dict[str, Any]:
    points = []
    best: dict[str, Any] | None = None
    for hz in rates:
        p = rate_point(root, hz, window_s)
        points.append(p)
        if not p["sustained"]:
            break
        best = p
    return {
        "max_poll_hz": None if best is None else best["poll_hz"],
        "samples_logged_per_s": None if best is None else best["samples_logged_per_s"],
        "points": points,
    }


def scaling(root: Path, counts: list[int], window_s: float) -> list[dict[str, Any]]:
    """CPU of one daemon polling N consoles (8 probes each, 20 Hz, log and telemetry on).

    The consoles poll idle (no freeze: the poll, supervision, log and telemetry
    work is the same) and share at most four simulators: sixteen simulators of
    their own would saturate a two-core machine by themselves (measured: leases
    expired), and it is the daemon's cost that is measured here.
    """
    out = []
    for n in counts:
        with (
            workdir(root, f"scale-{n}") as wd,
            rig(wd, ["modbus-tcp"] * min(n, 4), consoles=n, lease_timeout_ms=2000) as (_s, d, _b),
        ):
            time.sleep(1.0)
            w = steady.window(d, window_s, 20.0)
            st = d.status()["consoles"]
        w["cpu_pct_per_console"] = round(w["cpu_pct_of_core"] / n, 2)
        w["simulators"] = min(n, 4)
        w["alarms"] = sorted({a["code"] for c in st for a in c["alarms"]})
        out.append(w)
    return out


def startup(root: Path, repeats: int) -> dict[str, Any]:
    """``cryod run`` (unchanged CLI) from exec to READY=1: first start (new database,
    migrations) and restarts on the existing database."""
    times: list[float] = []
    with workdir(root, "startup") as wd:
        sim = Sim(wd, transport="modbus-tcp", speed=1.0)
        try:
            cfg = daemon_toml(wd, [sim])
            for _ in range(repeats + 1):
                d = BenchDaemon(cfg, wd, plain=True)
                times.append(d.ready_s)
                d.stop()
        finally:
            sim.stop()
    return {
        "first_start_s": round(times[0], 3),
        "restart_s": spread(times[1:], 3),
    }


def poll_path_steps(repeats: int) -> dict[str, Any]:
    """Per-step CPU of the poll path run hot (``python -m tests.bench.micro``, its own
    process): this machine's speed on the daemon's own code, so that runs on different
    machines can be compared (``ratios.cpu_per_poll_over_hot_steps``)."""
    proc = subprocess.run(
        [sys.executable, "-m", "tests.bench.micro", "--repeats", str(repeats)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        check=True,
    )
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out
