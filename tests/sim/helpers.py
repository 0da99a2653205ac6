"""Shared helpers for the pure-model tests: a hand-driven wall clock and ticker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from cryod.drivers.profile import Profile, load_profile
from cryod.simulators.console import SimConsole

TICK_S = 0.01
T = TypeVar("T")


class Clock:
    """A wall monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(
    profile: Profile | None = None, *, speed: float = 10.0, seed: int = 1, **kw: Any
) -> tuple[SimConsole, Clock]:
    clock = Clock()
    return SimConsole(profile or load_profile(), speed=speed, seed=seed, clock=clock, **kw), clock


def tick(c: SimConsole, clock: Clock, n: int = 1) -> None:
    """n console ticks with no host write (the lease is not renewed)."""
    for _ in range(n):
        clock.t += TICK_S
        c.step(TICK_S)


def run(
    c: SimConsole,
    clock: Clock,
    sim_s: float,
    *,
    every: Callable[[], T] | None = None,
    renew: bool = True,
) -> list[T]:
    """Advance sim_s simulated seconds in real-size ticks, renewing an armed lease
    by a write every 0.1 s of wall time; optionally sample ``every`` each tick."""
    n = round(sim_s / c.speed / TICK_S)
    out: list[T] = []
    for i in range(n):
        clock.t += TICK_S
        c.step(TICK_S)
        if renew and i % 10 == 0 and c.lease_armed() and not c.faults():
            c.renew_lease()
        if every is not None:
            out.append(every())
    return out


def start_freeze(c: SimConsole, probe: int = 1) -> None:
    c.set_lease_timeout(1000)
    c.set_master(True)
    c.set_freeze(probe, True)


def variant(**console: Any) -> Profile:
    """The built-in profile with some console fields changed (not re-validated)."""
    p = load_profile()
    return p.model_copy(update={"console": p.console.model_copy(update=console)})
