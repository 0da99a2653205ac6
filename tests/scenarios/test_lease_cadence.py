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

import pytest

from cryod.daemon import engine as E
from cryod.daemon.config import ConsoleConfig
from cryod.drivers.base import LinkError

from .test_console_backstop import POLL_HZ, console, freeze_valve, wait_for


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
    async with console(tmp_path) as (svc, sim):  # lease 500 ms at 20 Hz: every 0.1 s
        assert svc.cfg.lease_renew_s == pytest.approx(0.1)
        sent: list[float] = []
        _note_renewals(svc, sent, [0])
        await svc.submit(E.AdHocFreeze(1, 60.0))
        await wait_for(lambda: freeze_valve(sim), 5, "the freeze valve to open")
        polls0 = svc.polls
        await asyncio.sleep(2.0)
        polls = svc.polls - polls0
        assert svc.state.phase is E.Phase.FREEZING
        assert not sim.events("lease_expired")
        gaps = [b - a for a, b in itertools.pairwise(sent)]
        assert gaps, sent
        # about every other poll, never more than one poll late, never two in a row
        assert max(gaps) <= 0.1 + 1 / POLL_HZ + 0.03, gaps
        assert min(gaps) >= 0.1 - 0.5 / POLL_HZ - 0.01, gaps
        assert len(sent) <= polls * 0.6 + 2, (len(sent), polls)
        assert len(sent) >= polls * 0.4 - 2, (len(sent), polls)


async def test_failed_renewal_is_retried_at_the_next_poll(tmp_path: Path) -> None:
    async with console(tmp_path) as (svc, sim):
        sent: list[float] = []
        fail = [0]
        _note_renewals(svc, sent, fail)
        await wait_for(lambda: len(sent) >= 2, 5, "two renewals")
        fail[0] = 1
        await wait_for(lambda: fail[0] == 0, 5, "the failing renewal")
        failed_at = time.monotonic()
        polls = svc.polls
        await wait_for(lambda: sent and sent[-1] > failed_at, 5, "the retry")
        assert svc.polls - polls <= 1, "the retry waited for a quarter lease"
        assert not sim.events("lease_expired")
