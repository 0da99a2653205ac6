"""The lease is renewed every quarter of its timeout, not on every poll.

A real ``ConsoleService`` polls a real cryosim over Modbus TCP (the rig of
test_console_backstop). The driver's ``renew_lease`` is wrapped on the instance
only to note when each renewal was sent; the renewal itself is the real write.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import pytest

from cryod.daemon import engine as E
from cryod.daemon.config import ConsoleConfig
from cryod.drivers.base import LinkError
from tests.timing import LoopLag

from .test_console_backstop import POLL_HZ, console, freeze_valve, submit, wait_for


@pytest.mark.parametrize(
    ("lease_ms", "poll_hz", "every_s"),
    [
        (1000, 20.0, 0.25),  # the default: every 5th poll
        (500, 20.0, 0.10),  # every 2nd poll
        (150, 20.0, 0.05),  # the shortest lease allowed at 20 Hz: every poll
        (100, 30.0, 1 / 30),  # a quarter is less than one period: every poll
        (2000, 2.0, 0.5),  # the longest lease the default limits allow
    ],
)
def test_renewal_interval_is_a_quarter_of_the_lease_in_whole_polls(
    lease_ms: int, poll_hz: float, every_s: float
) -> None:
    cfg = ConsoleConfig(id="c", driver="modbus-tcp", poll_hz=poll_hz, lease_timeout_ms=lease_ms)
    assert cfg.lease_renew_s == pytest.approx(every_s)
    assert cfg.lease_renew_s <= lease_ms / 1000 / 4 or cfg.lease_renew_s == cfg.poll_period_s


def _note_renewals(svc: object, sent: list[float], fail_next: list[int]) -> None:
    drv = svc.driver  # type: ignore[attr-defined]
    renew = drv.renew_lease

    async def noted() -> None:
        if fail_next[0]:
            fail_next[0] -= 1
            raise LinkError("injected: the renewal was not answered")
        sent.append(time.monotonic())
        await renew()

    drv.renew_lease = noted


async def test_freeze_runs_on_quarter_lease_renewals(tmp_path: Path) -> None:
    # lease 500 ms at 20 Hz: every 0.1 s
    async with console(tmp_path, lease_timeout_ms=500) as (svc, sim):
        assert svc.cfg.lease_renew_s == pytest.approx(0.1)
        sent: list[float] = []
        _note_renewals(svc, sent, [0])
        await submit(svc, E.AdHocFreeze(1, 60.0))
        await wait_for(lambda: freeze_valve(sim), 30, "the freeze valve to open")
        reads = _note_reads(svc)
        sent.clear()
        async with LoopLag() as lag:
            await asyncio.sleep(2.0)  # an observation window, not a condition
        polls = len(reads)
        assert svc.state.phase is E.Phase.FREEZING
        assert not sim.events("lease_expired")
        gaps = [b - a for a, b in itertools.pairwise(sent)]
        assert gaps, sent
        # about every other poll, never more than one poll late (plus the worst stall this
        # machine had meanwhile), never two polls in a row
        assert max(gaps) <= 0.1 + 1 / POLL_HZ + 0.03 + lag.max_s, (gaps, lag.max_s)
        assert min(gaps) >= 0.1 - 0.5 / POLL_HZ - 0.01, gaps
        # two renewals in a row need two polls 3/4 of a quarter lease apart: every poll gap
        # that long (a late or skipped poll) may add one; else at most every other poll
        long_gaps = sum(1 for a, b in itertools.pairwise(reads) if b - a >= 0.075)
        assert len(sent) <= polls / 2 + long_gaps + 2, (len(sent), polls, long_gaps)
        # and at least every third poll, however late the polls (a late one delays the next
        # renewal by one poll at most)
        assert len(sent) >= polls / 3 - 2, (len(sent), polls)


def _note_reads(svc: object) -> list[float]:
    """When each poll read the console from now on (one snapshot read per poll)."""
    drv = svc.driver  # type: ignore[attr-defined]
    read = drv.read_snapshot
    times: list[float] = []

    async def noted() -> Any:
        times.append(time.monotonic())
        return await read()

    drv.read_snapshot = noted
    return times


async def test_failed_renewal_is_retried_at_the_next_poll(tmp_path: Path) -> None:
    async with console(tmp_path) as (svc, sim):  # lease 2 s: a quarter lease is 10 polls
        reads = _note_reads(svc)  # the poll number: each poll reads once, then renews
        attempts: list[tuple[int, bool]] = []  # (poll number, sent)
        fail = [0]
        drv = svc.driver
        renew = drv.renew_lease

        async def noted() -> None:
            if fail[0]:
                fail[0] -= 1
                attempts.append((len(reads), False))
                raise LinkError("injected: the renewal was not answered")
            attempts.append((len(reads), True))
            await renew()

        drv.renew_lease = noted  # type: ignore[method-assign]
        await wait_for(lambda: sum(ok for _, ok in attempts) >= 2, 30, "two renewals")
        fail[0] = 1
        await wait_for(lambda: not attempts[-1][1] or None, 30, "the failing renewal")
        failed = len(attempts) - 1
        await wait_for(lambda: len(attempts) > failed + 1, 30, "the retry")
        (failed_poll, _), (retry_poll, retry_sent) = attempts[failed], attempts[failed + 1]
        assert retry_sent
        # counted in polls, not seconds: a slow machine cannot make this pass or fail
        assert retry_poll == failed_poll + 1, "the retry waited for a quarter lease"
        assert not sim.events("lease_expired")
