"""Reconnect back-off: how long a lost link waits before its next attempt.

One rule for every reconnect loop: after the n-th consecutive failure the wait
is drawn uniformly from [d/2, d], where d = min(max_s, first_s * 2**(n-1)).
The exponential part keeps a console (or broker) that is down from being
hammered; the jitter keeps a fleet of daemons that lost the same network from
reconnecting in step; the upper bound d means no wait is ever longer than
``max_s``. A success resets the count.

Pure: no clock, no I/O, no imports from the daemon. The random draw is
injected (a ``random.Random``, or the number itself in ``delay_s``), so a test
can fix it; the caller does the waiting.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

__all__ = ["Backoff", "BackoffPolicy"]

#: doublings beyond this change nothing (2**62 * any sane first_s exceeds any max_s)
_MAX_DOUBLINGS = 62


@dataclass(frozen=True, kw_only=True)
class BackoffPolicy:
    """Exponential back-off with jitter; ``first_s`` is the ceiling after one failure."""

    first_s: float
    max_s: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.first_s) and self.first_s > 0):
            raise ValueError(f"first_s must be a positive number of seconds, not {self.first_s}")
        if not (math.isfinite(self.max_s) and self.max_s >= self.first_s):
            raise ValueError(f"max_s ({self.max_s}) must be a number >= first_s ({self.first_s})")

    def ceiling_s(self, failures: int) -> float:
        """The longest wait after ``failures`` consecutive failures (0 after none)."""
        if failures <= 0:
            return 0.0
        doublings = min(failures - 1, _MAX_DOUBLINGS)
        return min(self.max_s, self.first_s * 2.0**doublings)

    def delay_s(self, failures: int, draw: float) -> float:
        """The wait for a uniform random ``draw`` in [0, 1]: from ceiling/2 (draw 0)
        to the ceiling (draw 1)."""
        if not 0.0 <= draw <= 1.0:
            raise ValueError(f"draw {draw} outside [0, 1]")
        return self.ceiling_s(failures) * (0.5 + 0.5 * draw)


@dataclass(kw_only=True)
class Backoff:
    """The consecutive failures of one link and the wait each one earns."""

    policy: BackoffPolicy
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def failed(self) -> float:
        """Count one more failure; the wait before the next attempt, in seconds."""
        self.failures += 1
        return self.policy.delay_s(self.failures, self.rng.random())

    def succeeded(self) -> None:
        """The link works again: the next failure starts from ``first_s``."""
        self.failures = 0
