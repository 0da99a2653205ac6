"""Reaction time: a limit crossing at the console to the freeze valve closed at the console.

Both ends come from cryosim's event log (one monotonic clock): the
``fault_injected`` event of a ``temp-offset`` and the ``valve`` event that
closes that probe's freeze valve. Each trial: an ad-hoc freeze on one probe
(the eight probes take turns, so no tip stays cold), a random wait of up to
one poll period (a random phase of the poll cycle), then a temp-offset that
puts the reading between the supervisor's floor and the console's own,
wider limit: the daemon must react, the console does not. Then clear, ack,
reset, next trial.

``console`` mode measures the console's own backstop (issue 10): the
offset goes past the console-held min_tip limit while the daemon polls
slowly, and the figure is injection to the ``console_limit`` event.

The console samples its sensors once per tick (10 ms on cryosim), so the
reading crosses the limit at the first tick after the injection, which the
simulator logs as ``fault_sensed``: ``reaction_ms`` starts there (the
crossing at the console), ``reaction_from_injection_ms`` at the injection
(adding up to one console tick that no host can see).
"""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass
from typing import Any

from cryod.daemon.control import ControlError
from cryod.daemon.limits import SafetyLimits
from cryod.drivers.profile import load_profile
from cryod.simulators.control import request

from .eventtail import EventTail
from .procs import DEMO_PROCEDURE, BenchDaemon, Sim
from .stats import summary


@dataclass
class Trial:
    probe: int
    t_inj: float
    t_sensed: float | None
    t_close: float | None
    cause: str | None
    t_console_limit: float | None


def limit_levels(profile: str = "cryosim-8") -> tuple[float, float]:
    """(supervisor floor, console-held min_tip) for an ad-hoc freeze with default limits."""
    lim = SafetyLimits()
    env_min = load_profile(profile).console.min_tip_c
    floor = max(lim.floor_tip_c, env_min)
    return floor, floor - lim.console_margin.tip_c


def _retry(d: BenchDaemon, cmd: str, args: dict[str, Any] | None, tries: int, pause: float) -> Any:
    for i in range(tries):
        try:
            return d.call(cmd, args)
        except ControlError:
            if i == tries - 1:
                raise
            time.sleep(pause)
    return None


def _ack_reset(d: BenchDaemon, period: float, tries: int = 20) -> None:
    """ack then reset; an alarm raised in between (the reading jumping back) needs another ack."""
    for i in range(tries):
        try:
            d.call("ack")
            d.call("reset")
            return
        except ControlError:
            if i == tries - 1:
                raise
            time.sleep(period)


def _wait_clean(d: BenchDaemon, timeout: float = 5.0) -> None:
    """Engine idle and no console fault in a snapshot taken after the reset."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c = d.status()["consoles"][0]
        snap = c["snapshot"]
        if c["engine"]["state"] == "idle" and snap is not None and not snap["faults"]:
            return
        time.sleep(0.02)
    raise RuntimeError(f"console not idle and clean: {d.status()['consoles'][0]['engine']}")


def run_trials(
    sim: Sim,
    d: BenchDaemon,
    *,
    n: int,
    poll_hz: float,
    mode: str = "daemon",
    seed: int = 8,
) -> list[Trial]:
    rng = random.Random(seed)
    period = 1.0 / poll_hz
    floor, console_min = limit_levels()
    target = floor - (floor - console_min) / 2 if mode == "daemon" else console_min - 20.0
    tail = EventTail(sim.event_log)
    d.call("procedure_open", DEMO_PROCEDURE)
    ctl = str(sim.control)
    trials: list[Trial] = []
    for i in range(n):
        p = 1 + i % 8
        _wait_clean(d)
        tail.skip_to_end()
        _retry(d, "freeze", {"probe": p, "seconds": 10}, 20, period)
        opened = tail.wait_for(
            lambda e, p=p: (
                e["event"] == "valve"
                and e.get("valve") == "freeze"
                and e.get("probe") == p
                and e["open"]
            ),
            5.0,
        )
        if opened is None:
            raise RuntimeError(f"trial {i}: probe {p} freeze valve never opened")
        time.sleep(rng.uniform(0.0, period))
        tip = request(ctl, {"cmd": "state"})["state"]["probes"][p - 1]["tip_c"]
        request(ctl, {"cmd": "fault", "kind": "temp-offset", "probe": p, "value": target - tip})
        inj = tail.wait_for(lambda e: e["event"] == "fault_injected", 2.0)
        assert inj is not None
        sensed = tail.wait_for(
            lambda e, p=p: e["event"] == "fault_sensed" and e.get("probe") == p, 2.0
        )
        t_limit = None
        close = None
        deadline = time.monotonic() + 3.0
        while close is None and time.monotonic() < deadline:
            ev = tail.wait_for(
                lambda e, p=p: (
                    e.get("probe") == p
                    and (
                        e["event"] == "console_limit"
                        or (e["event"] == "valve" and e.get("valve") == "freeze" and not e["open"])
                    )
                ),
                deadline - time.monotonic(),
            )
            if ev is None:
                break
            if ev["event"] == "console_limit":
                t_limit = ev["mono_t_s"]
            else:
                close = ev
        trials.append(
            Trial(
                probe=p,
                t_inj=inj["mono_t_s"],
                t_sensed=None if sensed is None else sensed["mono_t_s"],
                t_close=None if close is None else close["mono_t_s"],
                cause=None if close is None else close.get("cause"),
                t_console_limit=t_limit,
            )
        )
        request(ctl, {"cmd": "clear"})
        # three console ticks and two polls: the jump back is seen (and alarmed) before the ack
        time.sleep(0.03 + 2 * period)
        _ack_reset(d, period)
    with contextlib.suppress(ControlError):
        _wait_clean(d)
        d.call("procedure_close", {"notes": "benchmark", "adverse_events": []})
    return trials


def summarise(trials: list[Trial], *, mode: str) -> dict[str, Any]:
    if mode == "console":
        ok = [t for t in trials if t.t_console_limit is not None]
        ms = [(t.t_console_limit - t.t_inj) * 1000 for t in ok]  # type: ignore[operator]
        closed = [(t.t_close - t.t_inj) * 1000 for t in ok if t.t_close is not None]
        return {
            "trials": len(trials),
            "console_tripped": len(ok),
            "injection_to_console_limit_ms": summary(ms),
            "injection_to_valve_closed_ms": summary(closed),
        }
    by_daemon = [t for t in trials if t.t_close is not None and t.cause == "command" and t.t_sensed]
    ms = [(t.t_close - t.t_sensed) * 1000 for t in by_daemon]  # type: ignore[operator]
    out: dict[str, Any] = {
        "trials": len(trials),
        "closed_by_daemon": len(by_daemon),
        "closed_by_console": sum(1 for t in trials if t.cause == "console_limit"),
        "not_closed": sum(1 for t in trials if t.t_close is None),
        "not_sensed": sum(1 for t in trials if t.t_sensed is None),
        "reaction_ms": summary(ms),
        "reaction_from_injection_ms": summary(
            [(t.t_close - t.t_inj) * 1000 for t in by_daemon]  # type: ignore[operator]
        ),
    }
    per_probe = {}
    for p in sorted({t.probe for t in by_daemon}):
        vals = [(t.t_close - t.t_sensed) * 1000 for t in by_daemon if t.probe == p]  # type: ignore[operator]
        per_probe[str(p)] = summary(vals)["p50"]
    out["reaction_ms_p50_by_probe"] = per_probe
    return out
