"""How late this machine runs now, measured by the test itself.

A timing bound in a test is the product's promise plus what the shared machine
added while the test ran: ``LoopLag`` measures the second part (how late the
event loop wakes a sleeper), so the bound holds on a loaded two-core machine and
still fails when the product, not the scheduler, is late.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from types import TracebackType


class LoopLag:
    """``async with LoopLag() as lag: ...``; then ``lag.max_s``: the worst lateness of
    a sleeper woken every ``period_s`` while the block ran (0 on an idle machine)."""

    def __init__(self, period_s: float = 0.01) -> None:
        self.period_s = period_s
        self.max_s = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _measure(self) -> None:
        while True:
            asked = time.monotonic()
            await asyncio.sleep(self.period_s)
            self.max_s = max(self.max_s, time.monotonic() - asked - self.period_s)

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._measure(), name="loop-lag")
        await asyncio.sleep(0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def until(
    pred: Callable[[], object], what: str, timeout_s: float = 30.0, every_s: float = 0.01
) -> None:
    """Wait for ``pred()`` to hold. The deadline only bounds a test that fails: a loaded
    machine takes longer, it never makes the condition true by waiting a fixed time."""
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(every_s)


class ThreadLag:
    """``with ThreadLag() as lag: ...`` for synchronous tests that drive subprocesses:
    a thread woken every ``period_s`` measures how late this machine runs meanwhile
    (``lag.max_s``), a stand-in for the lateness of the processes under test."""

    def __init__(self, period_s: float = 0.01) -> None:
        self.period_s = period_s
        self.max_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._measure, name="thread-lag", daemon=True)

    def _measure(self) -> None:
        while True:
            asked = time.monotonic()
            if self._stop.wait(self.period_s):
                return
            self.max_s = max(self.max_s, time.monotonic() - asked - self.period_s)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End the measurement (again: nothing)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def __enter__(self) -> ThreadLag:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
