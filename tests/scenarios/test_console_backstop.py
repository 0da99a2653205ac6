"""Defence in depth (issue 10): the console enforces the limits the daemon hands it.

A real ``ConsoleService`` runs in-process, built the way ``daemon/service.py``
builds it: the shipped Modbus TCP driver against a real cryosim subprocess, a
real Writer on a tmp SQLite database. "The daemon is alive and wrong" is made
by monkeypatching the instance only: the supervisor never acts and the
engine stops closing the valve, while the poll loop keeps renewing the lease.
The console must still end the freeze on its own, read from its event log.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cryod.daemon import engine as E
from cryod.daemon.config import ConsoleConfig, driver_options
from cryod.daemon.console_service import ConsoleService
from cryod.daemon.control import ControlError
from cryod.daemon.limits import ConsoleEnvelope, SafetyLimits
from cryod.daemon.store.db import make_engine
from cryod.daemon.store.migrate import upgrade_on_start
from cryod.daemon.store.records import ProcedureLog
from cryod.daemon.store.writer import Writer
from cryod.daemon.supervisor import Permit, Verdict
from cryod.drivers.base import ConsoleLimits
from cryod.drivers.modbus import ModbusTcpDriver
from cryod.drivers.profile import load_profile
from cryod.simulators import control as simctl
from tests.e2e.harness import DEMO_PROCEDURE, Sim
from tests.timing import LoopLag

SPEED = 20.0
POLL_HZ = 20.0
PROFILE = Path(__file__).resolve().parents[2] / "config" / "consoles" / "cryosim-8.toml"
TICK_S = load_profile(str(PROFILE)).console.tick_s  # console tick, wall seconds
SCHED_S = 0.030  # scheduling allowance (two processes on a shared box)


@contextlib.asynccontextmanager
async def console(
    tmp_path: Path,
    *,
    profile: Path = PROFILE,
    limits: SafetyLimits | None = None,
    driver_cls: type[ModbusTcpDriver] = ModbusTcpDriver,
    lease_timeout_ms: int = 2000,  # the longest allowed: a stalled shared machine keeps it
) -> AsyncIterator[tuple[ConsoleService, Sim]]:
    sim = Sim(tmp_path, speed=SPEED, extra=["--profile", str(profile)])
    db = tmp_path / "cryod.db"
    eng = None
    writer = None
    task = None
    try:
        await asyncio.to_thread(upgrade_on_start, db)
        eng = make_engine(db)
        writer = Writer(eng)
        await writer.start()
        plog = ProcedureLog(writer, study_id_required=True)
        cfg = ConsoleConfig(
            id="c1",
            driver="modbus-tcp",
            profile=str(profile),
            simulated=True,
            time_scale=SPEED,
            poll_hz=POLL_HZ,
            lease_timeout_ms=lease_timeout_ms,
            options=dict(sim.driver["options"]),  # type: ignore[arg-type]
            limits=limits or SafetyLimits(),
        )
        drv = driver_cls.from_options(driver_options(cfg, tmp_path / "x.toml"), source="test")
        envelope = ConsoleEnvelope.from_profile(load_profile(str(profile)))
        svc = ConsoleService(cfg, drv, envelope, writer=writer, plog=plog)
        task = asyncio.create_task(svc.run(), name="console-under-test")
        deadline = time.monotonic() + 10
        while not (svc.connected and svc.polls > 3):
            assert time.monotonic() < deadline, "console service did not start"
            assert not task.done(), task
            await asyncio.sleep(0.02)
        await svc.open_procedure({**DEMO_PROCEDURE, "operator": "test"})
        yield svc, sim
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if writer is not None:
            await writer.aclose()
        if eng is not None:
            eng.dispose()
        sim.stop()


async def submit(svc: ConsoleService, event: E.Event, timeout_s: float = 30.0) -> Any:
    """``svc.submit``, again while refused as ``snapshot_stale`` only: the rule refuses a
    command when this loaded machine stalled the poll loop for three polls (0.15 s), as
    it would refuse an operator, who tries again."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await svc.submit(event)
        except ControlError as exc:
            if exc.code != "snapshot_stale" or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)


def alive_and_wrong(svc: ConsoleService) -> None:
    """The supervisor never acts and the engine never closes a valve once it is open;
    the poll loop still runs, so the lease keeps being renewed."""
    svc.supervisor.check = lambda snap, now, sup: Verdict((), (), (), None, ())  # type: ignore[method-assign]
    svc.supervisor.permits = lambda cmd: Permit(True)  # type: ignore[method-assign]
    step = svc.engine.step

    def wrong(st: E.EngineState, ev: E.Event, now: Any) -> tuple[E.EngineState, list[E.Command]]:
        if isinstance(ev, E.Tick) and st.phase is E.Phase.FREEZING:
            return replace(st, snapshot=ev.snapshot or st.snapshot), []
        return step(st, ev, now)

    svc.engine.step = wrong  # type: ignore[method-assign,assignment]


async def held_limits(sim: Sim, probe: int = 1) -> dict[str, Any]:
    """What the console holds (never a blocking call: the driver shares this loop)."""
    state = (await simctl.arequest(sim.control, {"cmd": "state"}))["state"]
    limits = state["probes"][probe - 1]["limits"]
    assert limits is not None, "the console holds no limits"
    return dict(limits)


def freeze_valve(sim: Sim, probe: int = 1) -> list[dict[str, Any]]:
    return [e for e in sim.events("valve") if e.get("valve") == "freeze" and e["probe"] == probe]


async def wait_for(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def test_freeze_ends_at_console_max_on_time_when_host_is_wrong(tmp_path: Path) -> None:
    async with console(tmp_path) as (svc, sim):
        alive_and_wrong(svc)
        await submit(svc, E.AdHocFreeze(1, 10.0))
        held = await held_limits(sim)
        on_time = held["max_on_time_s"]
        assert on_time == 15.0  # 10 s planned + max(5 s, 5 %) margin
        polls0 = svc.polls
        async with LoopLag() as lag:
            closes = await wait_for(
                lambda: [e for e in freeze_valve(sim) if not e["commanded"]],
                on_time / SPEED + 30.0,
                "the console to close the freeze valve",
            )
        # the host really kept polling and renewing the lease meanwhile: as many polls as
        # the window allows when every period is stretched by the worst stall measured
        window_s = on_time / SPEED
        assert svc.polls - polls0 >= int(0.8 * window_s / (1 / POLL_HZ + lag.max_s)), lag.max_s
        assert not sim.events("lease_expired")
        assert svc.state.phase is E.Phase.FREEZING  # the engine never closed it
    opened = next(e for e in freeze_valve(sim) if e["commanded"])
    close = closes[0]
    assert close["cause"] == "console_limit"
    trip = sim.events("console_limit")[0]
    assert trip["cause"] == "max_on_time"
    assert trip["probe"] == 1
    sim_on = close["sim_t_s"] - opened["sim_t_s"]
    wall_on = close["mono_t_s"] - opened["mono_t_s"]
    tick_sim = TICK_S * SPEED
    print(
        f"\nconsole max on-time: {sim_on:.3f} s simulated (limit {on_time} s), {wall_on:.3f} s wall"
    )
    assert on_time - 1e-6 <= sim_on <= on_time + tick_sim
    assert abs(wall_on - on_time / SPEED) <= TICK_S + SCHED_S + lag.max_s, lag.max_s


async def test_temp_offset_past_console_minimum_closes_within_consecutive_ticks(
    tmp_path: Path,
) -> None:
    async with console(tmp_path) as (svc, sim):
        alive_and_wrong(svc)
        await submit(svc, E.AdHocFreeze(1, 60.0))
        held = await held_limits(sim)
        assert held["min_tip_c"] == -160.0  # floor -150 C (console minimum) - 10 C margin
        await wait_for(lambda: [e for e in freeze_valve(sim) if e["commanded"]], 5, "open")
        await asyncio.sleep(0.5)  # freezing a while: not a condition
        async with LoopLag() as lag:
            await simctl.arequest(
                sim.control, {"cmd": "fault", "kind": "temp-offset", "probe": 1, "value": -250.0}
            )
            closes = await wait_for(
                lambda: [e for e in freeze_valve(sim) if not e["commanded"]], 30, "console close"
            )
        assert not sim.events("lease_expired")
    inj = sim.events("fault_injected")[0]
    close = closes[0]
    assert close["cause"] == "console_limit"
    trip = sim.events("console_limit")[0]
    assert trip["cause"] == "min_tip"
    assert trip["measured"] < held["min_tip_c"]
    reaction = close["mono_t_s"] - inj["mono_t_s"]
    # the simulator is another process on this machine: as late as the machine runs now
    bound = (held["consecutive"] + 1) * TICK_S + SCHED_S + lag.max_s
    print(
        f"\nconsole min-tip reaction: {reaction * 1000:.1f} ms wall "
        f"(bound {bound * 1000:.0f} ms = ({held['consecutive']} + 1) ticks "
        f"+ {SCHED_S * 1000:.0f} ms)"
    )
    assert reaction <= bound


class _NoEcho(ModbusTcpDriver):
    """A console that takes the limits but does not confirm them (None)."""

    async def read_limits(self, probe: int) -> ConsoleLimits | None:
        await super().read_limits(probe)
        return None


class _WrongEcho(ModbusTcpDriver):
    """A console that reads back other limits than were written."""

    async def read_limits(self, probe: int) -> ConsoleLimits | None:
        held = await super().read_limits(probe)
        assert held is not None
        return replace(held, min_tip_c=held.min_tip_c - 20.0)


@pytest.mark.parametrize("driver_cls", [_NoEcho, _WrongEcho], ids=["none", "different"])
async def test_console_that_does_not_echo_limits_gets_no_freeze(
    tmp_path: Path, driver_cls: type[ModbusTcpDriver]
) -> None:
    async with console(tmp_path, driver_cls=driver_cls) as (svc, sim):
        await submit(svc, E.AdHocFreeze(1, 30.0))
        ended = E.RESTING - {E.Phase.IDLE} | {E.Phase.FAULT}
        await wait_for(lambda: svc.state.phase in ended, 30, "the freeze to end")
        assert svc.state.phase is E.Phase.ABORTED, svc.state
        reason = svc.state.reason
        assert reason.startswith("limits_refused: probe 1:"), reason
        assert "not confirmed" in reason or "echo the limits" in reason, reason
        await svc.recorder.barrier()
    assert not [e for e in freeze_valve(sim) if e["commanded"]], "a freeze valve opened"
    db = sqlite3.connect(tmp_path / "cryod.db")
    try:
        rows = db.execute("SELECT phase, outcome FROM cycles").fetchall()
    finally:
        db.close()
    assert rows == [("freeze", "aborted")]


def _profile_without_limits(tmp_path: Path) -> Path:
    text = PROFILE.read_text()
    caps = 'capabilities = ["active_thaw_helium", "skin_channel", "console_limits"]'
    assert caps in text
    path = tmp_path / "cryosim-8-no-limits.toml"
    path.write_text(text.replace(caps, 'capabilities = ["active_thaw_helium", "skin_channel"]'))
    return path


async def test_console_without_limits_refused_unless_site_allows(tmp_path: Path) -> None:
    profile = _profile_without_limits(tmp_path)
    (tmp_path / "a").mkdir()
    async with console(tmp_path / "a", profile=profile) as (svc, sim):
        with pytest.raises(ControlError, match="no_console_limits"):
            await submit(svc, E.AdHocFreeze(1, 5.0))
        assert svc.state.phase is E.Phase.IDLE
    assert not [e for e in freeze_valve(sim) if e["commanded"]]
    (tmp_path / "b").mkdir()
    allowed = SafetyLimits(allow_host_only_limits=True)
    async with console(tmp_path / "b", profile=profile, limits=allowed) as (svc, sim):
        await submit(svc, E.AdHocFreeze(1, 5.0))
        await wait_for(lambda: svc.state.phase is E.Phase.COMPLETE, 30, "the freeze to complete")
        await svc.recorder.barrier()
    assert [e for e in freeze_valve(sim) if e["commanded"]], "the allowed freeze never opened"
    assert not sim.events("limits")  # nothing was handed down: the console cannot hold it
    db = sqlite3.connect(tmp_path / "b" / "cryod.db")
    try:
        cycles = db.execute("SELECT phase, outcome, host_only_limits FROM cycles").fetchall()
        procs = db.execute("SELECT host_only_limits FROM procedures").fetchall()
    finally:
        db.close()
    assert cycles
    assert all(c[2] == 1 for c in cycles), cycles
    assert ("freeze", "completed", 1) in cycles
    assert procs == [(1,)]
