"""The shell's clock: monotonic time for durations (scaled on a simulated console),
UTC for records.

The pure core never reads a clock; the shell hands it ``Now`` values from here.
On a simulated console (``time_scale`` > 1, cryosim ``--speed``) the engine and
the supervisor run on the scaled clock, so a snapshot's determination times are
put on it too (``rescale``). The console lease, the poll schedule and the link's
health are on the wall clock (``time.monotonic``), not on this one.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import replace

from cryod.drivers.base import Reading, Snapshot

from .alarms import Now

__all__ = ["Clock"]


class Clock:
    """Monotonic time for durations (optionally scaled for a simulated console), UTC for records."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale
        self._t0 = time.monotonic()

    def now(self) -> Now:
        return Now(self.mono(time.monotonic()), dt.datetime.now(dt.UTC))

    def mono(self, t: float) -> float:
        """A raw monotonic time on this clock."""
        return self._t0 + (t - self._t0) * self.scale

    def wall_s(self, seconds: float) -> float:
        """A duration on this clock in wall-clock seconds."""
        return seconds / self.scale

    def rescale(self, snap: Snapshot) -> Snapshot:
        """Put a snapshot's determination times on the scaled clock (simulated consoles only),
        so the core compares like with like."""
        if self.scale == 1.0:
            return snap

        def r(x: Reading) -> Reading:
            return replace(x, t_mono=self.mono(x.t_mono))

        return replace(
            snap,
            t_mono=self.mono(snap.t_mono),
            supply_kpa=r(snap.supply_kpa),
            cylinder_kpa=r(snap.cylinder_kpa),
            skin_c=None if snap.skin_c is None else r(snap.skin_c),
            probes=tuple(
                replace(p, tip_c=r(p.tip_c), return_kpa=r(p.return_kpa)) for p in snap.probes
            ),
        )
