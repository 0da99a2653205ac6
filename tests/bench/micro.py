"""CPU cost of each step of one poll, for a steady 8-probe freeze (issue 8).

    python -m tests.bench.micro                 # every step, ~10-20 s
    python -m tests.bench.micro --only supervisor

Everything is real: a SimConsole served by ``serve_modbus_tcp`` on loopback,
cryod's Modbus TCP driver reading it, the engine running 'classic-double-90'
on probes 1-8 and the supervisor checking every poll, the commands executed
through the driver. The poll clock is simulated (20 Hz, the console stepped by
hand), so one trace of polls is built in a few seconds and is the same on
every run. Each step is then timed on that trace, with windows full:

- decode: the driver turning one register image (as its reader returns it)
  into a Snapshot; no wire I/O
- supervisor: Supervisor.check, default limits (10 s windows)
- supervisor_long: the same with 60 s leak and stuck windows (its cost should
  not depend on them)
- engine: Engine.step with a Tick while the 8 probes freeze
- rows: store.samples.snapshot_rows
- insert: the store writer's worker-thread CPU for one poll's rows, written in
  batches of the writer's default interval (0.2 s = 4 polls) into a database
  made like the daemon's (make_engine, alembic upgrade)

Per-call CPU time (``time.thread_time``; the writer's thread clock for insert)
in microseconds, best of ``--repeats`` runs over ``--polls`` consecutive
polls. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import datetime as dt
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryod.daemon import commands as C
from cryod.daemon import engine as E
from cryod.daemon.alarms import Now
from cryod.daemon.coordinator import AlarmRaised, Coordinator, Done, Effect, LimitsHeld, Result
from cryod.daemon.limits import ConsoleEnvelope, SafetyLimits, Supervision
from cryod.daemon.protocol_files import load_protocol
from cryod.daemon.store import migrate, records
from cryod.daemon.store.db import make_engine
from cryod.daemon.store.samples import snapshot_rows
from cryod.daemon.store.writer import SampleRow, Writer
from cryod.daemon.supervisor import Supervisor
from cryod.drivers.base import Reading, Snapshot
from cryod.drivers.modbus import ModbusTcpDriver
from cryod.drivers.profile import load_profile
from cryod.simulators.console import SimConsole
from cryod.simulators.modbus_server import serve_modbus_tcp
from tests.e2e.harness import DEMO_PROCEDURE

STEPS = ("decode", "supervisor", "supervisor_long", "engine", "rows", "insert")
POLL_HZ = 20.0
PERIOD_S = 1.0 / POLL_HZ
LONG_WINDOW_S = 60.0
PROTOCOL = "classic-double-90"
CONSOLE = "c1"
UTC0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
PROCEDURE = {**DEMO_PROCEDURE, "console": CONSOLE, "operator": "bench"}


def _now(t: float) -> Now:
    return Now(t, UTC0 + dt.timedelta(seconds=t))


def _retime(snap: Snapshot, t: float) -> Snapshot:
    """The snapshot as read at simulated time ``t`` (the driver stamps wall time)."""
    t_utc = UTC0.timestamp() + t

    def r(x: Reading) -> Reading:
        return replace(x, t_mono=t, t_utc=t_utc)

    return replace(
        snap,
        t_mono=t,
        t_utc=t_utc,
        supply_kpa=r(snap.supply_kpa),
        cylinder_kpa=r(snap.cylinder_kpa),
        skin_c=None if snap.skin_c is None else r(snap.skin_c),
        probes=tuple(replace(p, tip_c=r(p.tip_c), return_kpa=r(p.return_kpa)) for p in snap.probes),
    )


@dataclass
class Poll:
    snap: Snapshot
    now: Now
    supervision: Supervision


@dataclass
class Trace:
    """Polls of the steady freeze, with the state of each component just before
    the first one, and the raw image the driver read for it."""

    polls: list[Poll]
    image: tuple[Any, ...]
    decode: Callable[..., Snapshot]
    supervisor: Supervisor
    supervisor_long: Supervisor
    engine: E.Engine
    state: E.EngineState


class _Shell:
    """The daemon's poll through the real coordinator (the supervisor first, then the
    engine's tick), its effects executed through the driver. A second supervisor
    with 60 s windows watches the same commands."""

    def __init__(self, console: SimConsole, clock: list[float], driver: ModbusTcpDriver) -> None:
        profile = console.profile
        self.console, self.clock, self.driver = console, clock, driver
        self.env = ConsoleEnvelope.from_profile(profile)
        self.limits = SafetyLimits()
        long_limits = self.limits.model_copy(
            update={"leak_window_s": LONG_WINDOW_S, "tc_stuck_window_s": LONG_WINDOW_S}
        )
        self.coord = Coordinator(
            engine=E.Engine(E.EngineConfig(self.limits, self.env, PERIOD_S)),
            supervisor=Supervisor(self.limits, self.env, PERIOD_S),
            probes=self.env.probes,
        )
        self.sup_long = Supervisor(long_limits, self.env, PERIOD_S)
        self.t = 0.0

    @property
    def engine(self) -> E.Engine:
        return self.coord.engine

    @property
    def sup(self) -> Supervisor:
        return self.coord.supervisor

    @property
    def state(self) -> E.EngineState:
        return self.coord.state

    async def run_effects(self, now: Now) -> None:
        while (effect := self.coord.next_effect()) is not None:
            if isinstance(effect, AlarmRaised):
                raise RuntimeError(f"alarm in the bench trace at {self.t:.2f} s: {effect.alarm}")
            result = await self.execute(effect, now)
            if result is not None:
                self.coord.report(effect, result, now)

    async def execute(self, effect: Effect, now: Now) -> Result | None:
        if isinstance(effect, C.OpenCycle):
            return Done()
        if isinstance(effect, C.WriteConsoleLimits):
            await self.driver.write_limits(effect.probe, effect.limits)
            return LimitsHeld(limits=await self.driver.read_limits(effect.probe))
        if isinstance(effect, C.SetFreeze):
            await self.driver.set_freeze(effect.probe, effect.on)
        elif isinstance(effect, C.SetThaw):
            await self.driver.set_thaw(effect.probe, effect.on)
        elif isinstance(effect, C.SetMaster):
            await self.driver.set_master(effect.on)
        else:
            return None
        self.sup_long.note_command(effect, now)
        return Done()

    async def feed(self, event: C.Event, now: Now) -> None:
        self.coord.feed(event, now)
        await self.run_effects(now)

    async def poll(self) -> Poll:
        self.t = round(self.t + PERIOD_S, 9)
        self.clock[0] = self.t  # the console's clock (its lease) follows the simulated polls
        self.console.step(PERIOD_S)
        snap = _retime(await self.driver.read_snapshot(), self.t)
        now = _now(self.t)
        sv = self.engine.supervision(self.state)
        verdict = self.sup_long.check(snap, now, sv)
        if verdict.raised:
            raise RuntimeError(f"alarm in the bench trace at {self.t:.2f} s: {verdict.raised}")
        self.coord.begin_poll(snap, now)
        await self.run_effects(now)
        self.coord.tick(now)
        await self.run_effects(now)
        await self.driver.renew_lease()
        return Poll(snap, now, sv)


async def build_trace(n_polls: int, warm_s: float) -> Trace:
    """Run the freeze until every window is full (``warm_s`` into the freeze), then
    record ``n_polls`` polls."""
    profile = load_profile("cryosim-8")
    clock = [0.0]
    console = SimConsole(profile, clock=lambda: clock[0])
    bound: dict[str, Any] = {}
    ready = asyncio.Event()
    server = asyncio.create_task(serve_modbus_tcp(console, "127.0.0.1", 0, ready, bound=bound))
    await asyncio.wait_for(ready.wait(), 5.0)
    driver = ModbusTcpDriver(
        "127.0.0.1",
        int(bound["port"]),
        profile=profile,
        unit_id=None,
        timeout_s=1.0,
        retries=0,
        reconnect_max_s=1.0,
    )
    sh = _Shell(console, clock, driver)
    try:
        await driver.connect()
        await driver.identify()
        await driver.arm_lease(1000)
        await sh.poll()
        await sh.feed(C.ProcedureOpened(), _now(sh.t))
        proto = load_protocol(PROTOCOL, sh.limits, sh.env.min_tip_c, sh.env.capabilities)
        await sh.feed(C.RunProtocol(proto, tuple(range(1, sh.env.probes + 1))), _now(sh.t))
        while sh.state.phase is not E.Phase.FREEZING:
            await sh.poll()
            if sh.t > 30.0:
                raise RuntimeError(f"the freeze did not start: {sh.state.phase}")
        freeze_t0 = sh.t
        while sh.t < freeze_t0 + warm_s:
            await sh.poll()
        # the decode seam (read_snapshot = _decode_snapshot(*_read_image())): no wire in it
        image = await driver._read_image()
        check = driver._decode_snapshot(*image)
        if not all(p.freeze_open for p in check.probes):
            raise RuntimeError("not every probe is freezing in the captured image")
        sups = copy.deepcopy((sh.sup, sh.sup_long))
        engine_state = sh.state
        polls = [await sh.poll() for _ in range(n_polls)]
        if sh.state.phase is not E.Phase.FREEZING:
            raise RuntimeError(f"the freeze ended inside the trace: {sh.state.phase}")
        return Trace(
            polls,
            image,
            driver._decode_snapshot,
            sups[0],
            sups[1],
            sh.engine,
            engine_state,
        )
    finally:
        await driver.close()
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
        console.close()


# ---- the steps -------------------------------------------------------------
def _best_us(run: Callable[[], float], repeats: int, calls: int) -> tuple[float, float]:
    """(best, median) of ``run()`` (CPU seconds for ``calls`` calls), in µs per call."""
    per = [run() / calls * 1e6 for _ in range(repeats)]
    return min(per), statistics.median(per)


def bench_decode(tr: Trace, repeats: int, calls: int) -> tuple[float, float]:
    decode, image = tr.decode, tr.image

    def run() -> float:
        t0 = time.thread_time()
        for _ in range(calls):
            decode(*image)
        return time.thread_time() - t0

    return _best_us(run, repeats, calls)


def _bench_supervisor(warm: Supervisor, tr: Trace, repeats: int) -> tuple[float, float]:
    def run() -> float:
        sup = copy.deepcopy(warm)  # the same full windows for every repeat
        check = sup.check
        t0 = time.thread_time()
        for p in tr.polls:
            check(p.snap, p.now, p.supervision)
        return time.thread_time() - t0

    return _best_us(run, repeats, len(tr.polls))


def bench_supervisor(tr: Trace, repeats: int, calls: int) -> tuple[float, float]:
    return _bench_supervisor(tr.supervisor, tr, repeats)


def bench_supervisor_long(tr: Trace, repeats: int, calls: int) -> tuple[float, float]:
    return _bench_supervisor(tr.supervisor_long, tr, repeats)


def bench_engine(tr: Trace, repeats: int, calls: int) -> tuple[float, float]:
    engine, ticks = tr.engine, [(C.Tick(p.snap), p.now) for p in tr.polls]

    def run() -> float:
        st = tr.state  # the engine is pure: every repeat starts from the same state
        t0 = time.thread_time()
        for ev, now in ticks:
            st, _ = engine.step(st, ev, now)
        return time.thread_time() - t0

    return _best_us(run, repeats, len(ticks))


def bench_rows(tr: Trace, repeats: int, calls: int) -> tuple[float, float]:
    snaps = [p.snap for p in tr.polls]

    def run() -> float:
        t0 = time.thread_time()
        for s in snaps:
            snapshot_rows(s, CONSOLE, 1)
        return time.thread_time() - t0

    return _best_us(run, repeats, len(snaps))


def _thread_clock(prefix: str) -> Callable[[], float]:
    """CPU clock of the writer's worker thread (found by its name)."""
    for th in threading.enumerate():
        if th.name.startswith(prefix) and th.ident is not None:
            cid = time.pthread_getcpuclockid(th.ident)
            return lambda: time.clock_gettime(cid)
    raise RuntimeError(f"no thread named {prefix}*: the writer's worker was not found")


async def _bench_insert(tr: Trace, repeats: int) -> tuple[float, float]:
    polls_per_batch = 20  # the writer's default batch interval (1 s) at 20 Hz
    with tempfile.TemporaryDirectory(prefix="cryod-micro-") as tmp:
        path = Path(tmp) / "cryod.db"
        migrate.upgrade(path)
        engine = make_engine(path)
        try:
            meta = records.ProcedureOpen.model_validate(PROCEDURE)
            rows_per_poll = len(snapshot_rows(tr.polls[0].snap, CONSOLE, None))
            writer = Writer(
                engine, batch_max=rows_per_poll * polls_per_batch, batch_interval_s=3600.0
            )
            async with writer:
                pid = await writer.commit_now(lambda s: records.open_procedure(s, meta))
                polls: list[list[SampleRow]] = [
                    snapshot_rows(p.snap, CONSOLE, pid) for p in tr.polls
                ]
                clock = _thread_clock("cryod-store")

                async def write(batch: list[list[SampleRow]]) -> None:
                    before = writer.status().batches
                    for rows in batch:
                        writer.submit_samples(rows)
                    while writer.status().batches == before:
                        await asyncio.sleep(0.0005)

                async def run() -> float:
                    t0 = clock()
                    for i in range(0, len(polls) - polls_per_batch + 1, polls_per_batch):
                        await write(polls[i : i + polls_per_batch])
                    return clock() - t0

                await write(polls[:polls_per_batch])  # warm-up (statement cache, pages)
                n = (len(polls) // polls_per_batch) * polls_per_batch
                per = [await run() / n * 1e6 for _ in range(repeats)]
                if writer.status().samples_written < repeats * n * rows_per_poll:
                    raise RuntimeError(f"rows were not all written: {writer.status()}")
                return min(per), statistics.median(per)
        finally:
            engine.dispose()


def bench_insert(tr: Trace, repeats: int, calls: int) -> tuple[float, float]:
    return asyncio.run(_bench_insert(tr, repeats))


BENCHES: dict[str, Callable[[Trace, int, int], tuple[float, float]]] = {
    "decode": bench_decode,
    "supervisor": bench_supervisor,
    "supervisor_long": bench_supervisor_long,
    "engine": bench_engine,
    "rows": bench_rows,
    "insert": bench_insert,
}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.bench.micro", description=__doc__)
    ap.add_argument("--only", choices=STEPS, action="append", help="run this step (repeatable)")
    ap.add_argument("--repeats", type=int, default=15, help="timed runs per step (best is kept)")
    ap.add_argument("--polls", type=int, default=40, help="polls per timed run")
    args = ap.parse_args(argv)
    steps = [s for s in STEPS if s in args.only] if args.only else list(STEPS)
    limits = SafetyLimits()
    warm_s = max(limits.leak_window_s, limits.tc_stuck_window_s) + 1.0
    if "supervisor_long" in steps:
        warm_s = LONG_WINDOW_S + 1.0
    t0 = time.monotonic()
    trace = asyncio.run(build_trace(args.polls, warm_s))
    built_s = time.monotonic() - t0
    results: dict[str, dict[str, float]] = {}
    print(f"trace: {len(trace.polls)} polls of a steady 8-probe freeze ({built_s:.1f} s to build)")
    print(f"{'step':<16} {'best µs':>10} {'median µs':>10}")
    for name in steps:
        best, med = BENCHES[name](trace, args.repeats, args.polls)
        results[name] = {"best_us": round(best, 1), "median_us": round(med, 1)}
        print(f"{name:<16} {best:>10.1f} {med:>10.1f}")
    print(
        json.dumps(
            {
                "unit": "us_cpu_per_poll",
                "repeats": args.repeats,
                "polls": args.polls,
                "steps": results,
                "elapsed_s": round(time.monotonic() - t0, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
