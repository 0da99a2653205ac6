"""A small scenario runner: one TOML file in ``data/`` = one fault or limit, provoked
against a real ``cryosim`` and a real ``cryod run`` with every safety check on.

What happened is read from two independent witnesses: the simulator's event
log (ground truth at the console: which valve closed, why, and when on the
wall monotonic clock) and the daemon (``status`` alarms, the DB alarms table,
``show``). The runner only observes and returns an ``Outcome``; the tests
assert on it, so a failing scenario names what differed.

Format: docs/scenarios.md.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import statistics
import subprocess
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cryod.daemon.control import ControlError
from cryod.drivers.profile import load_profile
from cryod.drivers.registry import load_driver
from cryod.simulators import control as simctl
from cryod.simulators.console import FAULT_KINDS
from tests.e2e.harness import DEMO_PROCEDURE, Daemon, Sim, daemon_config
from tests.timing import ThreadLag

DATA = Path(__file__).parent / "data"
TERMINAL = {"complete", "fault", "aborted", "stopped", "idle"}
Anchor = Literal["start", "freeze_open", "freeze_close_cmd", "run_end", "previous"]
#: scheduling allowance added to every bound (loaded CI box, two Python processes)
SCHED_ALLOWANCE_S = 0.030


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FaultSpec(_Strict):
    kind: str
    probe: int | None = None
    value: float | None = None
    #: instead of a value: the offset that puts the measured tip at this temperature
    target_tip_c: float | None = None
    for_s: float | None = None

    @model_validator(mode="after")
    def _check(self) -> FaultSpec:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"kind {self.kind!r} not one of {', '.join(FAULT_KINDS)}")
        if self.target_tip_c is not None and (self.kind != "temp-offset" or self.probe is None):
            raise ValueError("target_tip_c needs kind temp-offset and a probe")
        return self


class Action(_Strict):
    after: Anchor = "previous"
    delay_s: float = Field(default=0.0, ge=0, le=30)  # wall seconds
    fault: FaultSpec | None = None
    clear: bool = False
    call: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None  # the call must be refused with this code

    @model_validator(mode="after")
    def _one(self) -> Action:
        if sum([self.fault is not None, self.clear, self.call is not None]) != 1:
            raise ValueError("an action is exactly one of fault, clear, call")
        return self


class RunSpec(_Strict):
    mode: Literal["freeze", "protocol", "idle"] = "freeze"
    probe: int = 1
    seconds: float = 60.0
    protocol: str | None = None  # built-in name, or a path relative to data/
    probes: list[int] = Field(default_factory=lambda: [1])


class Reaction(_Strict):
    start: Literal["fault", "freeze_open", "freeze_close_cmd"] = "fault"
    #: gas_stopped: the first of the freeze valve or the master valve closing (gas reaches
    #: a probe only through both)
    end: Literal["freeze_close", "master_close", "gas_stopped"] = "freeze_close"
    #: one_sample: console tick + poll period + one snapshot read + ``writes`` writes;
    #: window: the documented detection window (simulated s) on top of one_sample;
    #: lease: the console's lease timeout + one console tick
    bound: Literal["one_sample", "window", "lease"] = "one_sample"
    window_sim_s: float = 0.0
    writes: int = Field(default=1, ge=1, le=20)


class Expect(_Strict):
    alarms: list[str] = Field(default_factory=list)  # "code:priority", all raised
    alarms_any: list[str] = Field(default_factory=list)  # at least one raised
    close_cause: list[str] = Field(default_factory=list)  # [] = the valve must not close
    master_closed: bool = False
    engine_state: str | None = None
    limits_on_time_s: list[float] | None = None  # max_on_time_s the console armed, in order
    freeze_opens: int | None = None  # how many times the freeze valve was commanded open
    reaction: Reaction | None = None
    timeout_s: float = 15.0


class Recover(_Strict):
    clear: bool = True
    ack_reset: bool = True
    state: str = "idle"


class Scenario(_Strict):
    name: str
    description: str
    transport: Literal["modbus-tcp", "modbus-rtu", "serial-line"] = "modbus-tcp"
    speed: float = Field(default=20.0, gt=0, le=200)
    poll_hz: float = 20.0
    lease_timeout_ms: int = 500
    options: dict[str, Any] = Field(default_factory=dict)  # extra driver options
    #: site limits that differ from the defaults ([consoles.limits]); a setting, never a
    #: switch that turns a check off (every check stays on)
    limits: dict[str, float] = Field(default_factory=dict)
    run: RunSpec = RunSpec()
    actions: list[Action] = Field(default_factory=list)
    expect: Expect
    recover: Recover | None = None
    #: a daemon bug this scenario exposes (file, function, what happens): the test is
    #: marked xfail(strict=True) with this reason until it is fixed
    known_bug: str | None = None


def load_scenario(path: Path) -> Scenario:
    """Validate one scenario file; errors name the file, key and reason."""
    try:
        return Scenario.model_validate(tomllib.loads(path.read_text()))
    except ValidationError as exc:
        lines = [f"{path}: {'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ValueError("\n".join(lines)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from exc


def all_scenarios() -> list[Path]:
    return sorted(DATA.glob("*.toml"))


# ---------------------------------------------------------------- link timing
@dataclass(frozen=True)
class LinkTiming:
    """Measured transaction times of one transport (wall seconds)."""

    transport: str
    read_p50_s: float
    read_p99_s: float
    write_p50_s: float
    write_p99_s: float
    tick_s: float

    def one_sample_bound(self, poll_period_s: float, writes: int) -> float:
        return (
            self.tick_s
            + poll_period_s
            + self.read_p99_s
            + writes * self.write_p99_s
            + SCHED_ALLOWANCE_S
        )


def _p(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def measure_link(workdir: Path, transport: str, n: int = 200) -> LinkTiming:
    """Time snapshot reads and valve-close writes with the shipped driver over a
    real transport to a real cryosim (the same path the daemon's safe state takes)."""
    workdir.mkdir(parents=True, exist_ok=True)
    sim = Sim(workdir, transport=transport, speed=1.0)
    try:
        opts: dict[str, Any] = dict(sim.driver["options"])  # type: ignore[arg-type]
        if transport.startswith("modbus"):
            opts["profile"] = "cryosim-8"
        drv = load_driver(str(sim.driver["driver"])).from_options(opts, source="scenario")

        async def go() -> tuple[list[float], list[float]]:
            reads: list[float] = []
            writes: list[float] = []
            await drv.connect()
            try:
                await drv.identify()
                await drv.read_snapshot()
                for _ in range(n):
                    t0 = time.monotonic()
                    await drv.read_snapshot()
                    reads.append(time.monotonic() - t0)
                    t0 = time.monotonic()
                    await drv.set_freeze(1, False)
                    writes.append(time.monotonic() - t0)
                    await asyncio.sleep(0.002)
            finally:
                await drv.close()
            return reads, writes

        reads, writes = asyncio.run(go())
    finally:
        sim.stop()
    tick = load_profile("cryosim-8").console.tick_s
    return LinkTiming(
        transport,
        statistics.median(reads),
        _p(reads, 0.99),
        statistics.median(writes),
        _p(writes, 0.99),
        tick,
    )


# ---------------------------------------------------------------- running
@dataclass
class Outcome:
    scenario: Scenario
    events: list[dict[str, Any]]
    status: dict[str, Any]
    db_alarms: list[tuple[str, str, int | None]]
    anchors: dict[str, float] = field(default_factory=dict)  # mono_t_s of sim events
    call_errors: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    reaction_s: float | None = None
    bound_s: float | None = None  # includes lag_s
    lag_s: float = 0.0  # the worst lateness of this machine measured during the run
    close_event: dict[str, Any] | None = None
    recovered_state: str | None = None
    recovered_alarms: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def probe(self) -> int:
        r = self.scenario.run
        return r.probes[0] if r.mode == "protocol" else r.probe

    @property
    def raised(self) -> set[str]:
        """Every alarm raised, as "code:priority", from status and the DB."""
        st = {f"{a['code']}:{a['priority']}" for a in self.status.get("alarms", [])}
        return st | {f"{c}:{p}" for c, p, _ in self.db_alarms}


def _freeze_events(sim: Sim, probe: int) -> list[dict[str, Any]]:
    return [
        e for e in sim.events("valve") if e.get("valve") == "freeze" and e.get("probe") == probe
    ]


def _wait(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class _Run:
    def __init__(self, sc: Scenario, sim: Sim, d: Daemon, timing: LinkTiming) -> None:
        self.sc, self.sim, self.d, self.timing = sc, sim, d, timing
        self.probe = sc.run.probe if sc.run.mode != "protocol" else sc.run.probes[0]
        self.anchors: dict[str, float] = {}
        self.errors: list[tuple[str, str | None, str | None]] = []
        self.notes: list[str] = []

    def anchor(self, name: Anchor) -> None:
        """Wait for an anchor; remember its console-side time (mono_t_s)."""
        if name == "previous":
            return
        if name == "start":
            self.anchors.setdefault("start", time.monotonic())
            return
        if name == "run_end":
            self.d.wait_state(TERMINAL - {"idle"}, timeout=self.sc.expect.timeout_s)
            self.anchors["run_end"] = time.monotonic()
            return
        if name == "freeze_open":
            ev = _wait(
                lambda: [e for e in _freeze_events(self.sim, self.probe) if e["commanded"]],
                10,
                "the freeze valve to be commanded open",
            )[0]
        else:  # freeze_close_cmd: the first command that closed it (engine or supervisor)
            ev = _wait(
                lambda: [
                    e
                    for e in _freeze_events(self.sim, self.probe)
                    if not e["commanded"] and e["cause"] == "command"
                ],
                self.sc.expect.timeout_s,
                "the freeze valve to be commanded closed",
            )[0]
        self.anchors[name] = ev["mono_t_s"]
        # wall time on this host's clock: the sim runs on the same machine, same clock
        self.anchors.setdefault(name + "_host", time.monotonic())

    def act(self, a: Action) -> None:
        self.anchor(a.after)
        if a.delay_s:
            time.sleep(a.delay_s)
        if a.fault is not None:
            f = a.fault
            value = f.value
            if f.target_tip_c is not None:
                assert f.probe is not None
                probe = self.sim.state()["probes"][f.probe - 1]
                true_tip = probe["tip_c"]
                value = round(f.target_tip_c - true_tip, 1)
                self.notes.append(f"offset {value} C (true tip {true_tip} C)")
                if not probe["freeze_open"]:  # the scenario's freeze is too short for the delay
                    self.notes.append("the freeze had ended before the fault was injected")
            simctl.request(
                self.sim.control,
                {
                    "cmd": "fault",
                    "kind": f.kind,
                    "probe": f.probe,
                    "value": value,
                    "for_s": f.for_s,
                },
            )
        elif a.clear:
            simctl.request(self.sim.control, {"cmd": "clear"})
        else:
            assert a.call is not None
            args = {
                k: str(DATA / v[len("@data/") :])
                if isinstance(v, str) and v.startswith("@data/")
                else v
                for k, v in a.args.items()
            }
            try:
                self.d.call(a.call, args)
                self.errors.append((a.call, None, a.error))
            except ControlError as exc:
                self.errors.append((a.call, exc.code, a.error))

    def start_run(self) -> None:
        r = self.sc.run
        if r.mode == "idle":
            return
        if r.mode == "freeze":
            self.d.call("freeze", {"probe": r.probe, "seconds": r.seconds})
            return
        assert r.protocol is not None
        name = r.protocol
        if name.endswith(".toml"):
            name = str(DATA / name)
        self.d.call("run", {"protocol": name, "probes": r.probes})


def _reaction(run: _Run, out: Outcome, events: list[dict[str, Any]]) -> None:
    sc, rx = run.sc, run.sc.expect.reaction
    if rx is None:
        return
    freeze = [
        e
        for e in events
        if e["event"] == "valve" and e.get("valve") == "freeze" and e.get("probe") == run.probe
    ]
    if rx.start == "fault":
        starts = [e for e in events if e["event"] == "fault_injected"]
    elif rx.start == "freeze_open":
        starts = [e for e in freeze if e["commanded"]]
    else:  # the first command that closed it (engine or supervisor)
        starts = [e for e in freeze if not e["commanded"] and e["cause"] == "command"]
    t0 = starts[0]["mono_t_s"] if starts else None
    if t0 is None:
        out.notes.append(f"no {rx.start} anchor")
        return
    freeze_ends = [
        e
        for e in events
        if e["event"] == "valve"
        and e.get("valve") == "freeze"
        and e.get("probe") == run.probe
        and not e["commanded"]
        and e["mono_t_s"] >= t0
    ]
    master_ends = [
        e
        for e in events
        if e["event"] == "valve"
        and e.get("valve") == "master"
        and not e["open"]
        and e["mono_t_s"] >= t0
    ]
    if rx.end == "freeze_close":
        ends = freeze_ends
    elif rx.end == "master_close":
        ends = master_ends
    else:
        ends = sorted(freeze_ends[:1] + master_ends[:1], key=lambda e: e["mono_t_s"])
    if not ends:
        return
    out.close_event = ends[0]
    out.reaction_s = ends[0]["mono_t_s"] - t0
    # (the line driver's snapshot read waits for the next telemetry frame, so its
    # measured read time already includes the console's telemetry period)
    period = 1.0 / sc.poll_hz
    one = run.timing.one_sample_bound(period, rx.writes)
    if rx.bound == "one_sample":
        out.bound_s = one
    elif rx.bound == "window":
        out.bound_s = rx.window_sim_s / sc.speed + one
    else:
        out.bound_s = sc.lease_timeout_ms / 1000.0 + run.timing.tick_s + SCHED_ALLOWANCE_S


def _db_alarms(db: Path) -> list[tuple[str, str, int | None]]:
    con = sqlite3.connect(db)
    try:
        return [tuple(r) for r in con.execute("SELECT code, priority, probe FROM alarms")]
    finally:
        con.close()


def run_scenario(sc: Scenario, workdir: Path, timing: LinkTiming) -> Outcome:
    """Run one scenario end to end; always stops both processes."""
    extra_console = ""
    if sc.limits:
        extra_console = "[consoles.limits]\n" + "".join(
            f"{k} = {v!r}\n" for k, v in sc.limits.items()
        )
    sim = Sim(workdir, transport=sc.transport, speed=sc.speed)
    d: Daemon | None = None
    lag = ThreadLag()
    try:
        if sc.options:
            sim.driver["options"].update(sc.options)  # type: ignore[attr-defined]
        cfg = daemon_config(
            workdir,
            sim,
            speed=sc.speed,
            poll_hz=sc.poll_hz,
            lease_timeout_ms=sc.lease_timeout_ms,
            extra_console=extra_console,
        )
        d = Daemon(cfg, workdir)
        lag.start()  # how late this machine ran while the scenario did
        run = _Run(sc, sim, d, timing)
        d.call("procedure_open", DEMO_PROCEDURE)
        run.anchor("start")
        actions = list(sc.actions)
        while actions and actions[0].after == "start":  # faults present before the run
            run.act(actions.pop(0))
        run.start_run()
        for a in actions:
            run.act(a)
        ex = sc.expect

        def settled() -> bool:
            st = d.status()
            if ex.engine_state is not None and st["engine"]["state"] != ex.engine_state:
                return False
            if ex.close_cause:
                fe = [e for e in _freeze_events(sim, run.probe) if not e["commanded"]]
                if not fe:
                    return False
            if ex.master_closed and not any(
                e.get("valve") == "master" and not e["open"] for e in sim.events("valve")
            ):
                return False
            if ex.freeze_opens is not None and ex.freeze_opens != len(
                [e for e in _freeze_events(sim, run.probe) if e["commanded"]]
            ):
                return False
            raised = {f"{a['code']}:{a['priority']}" for a in st["alarms"]}
            return set(ex.alarms) <= raised and (
                not ex.alarms_any or bool(set(ex.alarms_any) & raised)
            )

        try:
            _wait(settled, ex.timeout_s, f"scenario {sc.name} to settle")
        except AssertionError as exc:
            run.notes.append(str(exc))
        # the recorder writes an alarm after status shows it: wait until it has (or the
        # check below says which one is missing)
        deadline = time.monotonic() + 30
        while True:
            status = d.status()
            db_alarms = _db_alarms(workdir / "cryod.db")
            written = {f"{c}:{p}" for c, p, _ in db_alarms}
            shown = {f"{a['code']}:{a['priority']}" for a in status["alarms"]}
            if shown <= written or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        events = sim.events()
        out = Outcome(
            sc,
            events,
            status,
            db_alarms,
            anchors=run.anchors,
            call_errors=run.errors,
            notes=run.notes,
        )
        lag.stop()
        _reaction(run, out, events)
        if out.bound_s is not None:
            out.lag_s = lag.max_s
            out.bound_s += lag.max_s
        if sc.recover is not None:
            _recover(sc.recover, sim, d, out)
        return out
    finally:
        lag.stop()
        if d is not None:
            _stop_daemon(d)
        sim.stop()


def _stop_daemon(d: Daemon, grace_s: float = 8.0) -> None:
    """SIGTERM with a bounded grace (a hung poll loop must not stall the suite), then kill."""
    if d.proc.poll() is None:
        d.proc.send_signal(signal.SIGTERM)
        try:
            d.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            d.proc.kill()
            d.proc.wait()
    d.stop()


def _recover(rc: Recover, sim: Sim, d: Daemon, out: Outcome) -> None:
    if rc.clear:
        simctl.request(sim.control, {"cmd": "clear"})
    if rc.ack_reset:
        # the link needs a moment to come back (reconnect back-off) before reset can see it
        deadline = time.monotonic() + 10
        last: str | None = None
        while time.monotonic() < deadline:
            try:
                d.call("ack", timeout_s=5)
                d.call("reset", timeout_s=5)
                last = None
                break
            except (TimeoutError, OSError) as exc:
                last = f"no answer: {exc!r}"
                break
            except ControlError as exc:
                last = f"{exc.code}: {exc}"
                if exc.code == "timeout":  # the poll loop is not serving commands
                    break
                time.sleep(0.2)
        if last is not None:
            out.notes.append(f"reset refused: {last}")
    try:
        st = d.wait_state({rc.state}, timeout=5)
    except AssertionError:
        st = d.status()
    out.recovered_state = st["engine"]["state"]
    out.recovered_alarms = [a["code"] for a in st["alarms"]]


__all__ = [
    "DATA",
    "LinkTiming",
    "Outcome",
    "Scenario",
    "all_scenarios",
    "load_scenario",
    "measure_link",
    "run_scenario",
]
