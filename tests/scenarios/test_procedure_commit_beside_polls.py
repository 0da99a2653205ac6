"""A procedure's open and close are committed beside the poll loop, not in it.

Found by ``make test`` beside a CPU hog (tests/reliability/test_crash_lease.py,
link-serial, trial 2): the close and open of a fresh procedure were awaited in the
poll loop behind the writer's backlog; no poll and no lease renewal ran for over
half a second, and the idle console's 500 ms lease expired, latching
``lease_expired`` before the next freeze. Here the commit is held (the record's
``close_procedure`` / ``open_procedure`` wait for the test to let them go) while
the test counts polls and renewals: counted, not timed, so a slow machine only
makes the wait longer.

A real ``ConsoleService`` on a real cryosim over Modbus TCP (the rig of
test_console_backstop); only the record's two calls are wrapped on the instance.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cryod.daemon import engine as E
from cryod.daemon.console_service import ConsoleService
from cryod.daemon.control import ControlError
from tests.e2e.harness import DEMO_PROCEDURE

from .test_console_backstop import console, freeze_valve, submit, wait_for
from .test_lease_cadence import _note_renewals

LEASE_MS = 500  # renewed every 2nd poll at 20 Hz
POLLS_HELD = 14  # 0.7 s of polls at 20 Hz: longer than the lease
CLOSE = {"closed_by": "test", "notes": "closed while the writer was slow"}


class Held:
    """One record call that waits until the test lets it go."""

    def __init__(self, real: Callable[..., Awaitable[Any]]) -> None:
        self.real = real
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.entered.set()
        await self.release.wait()
        return await self.real(*args, **kwargs)


async def _polls_go_on(svc: ConsoleService, sent: list[float]) -> None:
    polls, renewals = svc.polls, len(sent)
    await wait_for(
        lambda: svc.polls >= polls + POLLS_HELD and len(sent) >= renewals + POLLS_HELD // 2 - 2,
        30,
        f"{POLLS_HELD} polls and their lease renewals while the commit is held",
    )


async def test_polls_and_renewals_go_on_while_a_procedure_is_closed_and_opened(
    tmp_path: Path,
) -> None:
    async with console(tmp_path, lease_timeout_ms=LEASE_MS) as (svc, sim):
        sent: list[float] = []
        _note_renewals(svc, sent, [0])
        pid = svc.procedure_id
        assert pid is not None

        held_close = Held(svc.plog.close_procedure)
        svc.plog.close_procedure = held_close  # type: ignore[method-assign]
        closing = asyncio.create_task(svc.close_procedure(CLOSE))
        await wait_for(held_close.entered.is_set, 30, "the close to reach the record")
        await _polls_go_on(svc, sent)
        # closed in the engine already: no cycle starts on a procedure being closed
        with pytest.raises(ControlError) as refused:
            await submit(svc, E.AdHocFreeze(1, 60.0))
        assert refused.value.code == "no_procedure"
        assert svc.status()["procedure"] is None
        held_close.release.set()
        assert await closing == pid

        held_open = Held(svc.plog.open_procedure)
        svc.plog.open_procedure = held_open  # type: ignore[method-assign]
        opening = asyncio.create_task(svc.open_procedure({**DEMO_PROCEDURE, "operator": "test"}))
        await wait_for(held_open.entered.is_set, 30, "the open to reach the record")
        await _polls_go_on(svc, sent)
        # one procedure change at a time: a second open waits and is then refused
        second = asyncio.create_task(svc.open_procedure({**DEMO_PROCEDURE, "operator": "test"}))
        held_open.release.set()
        new_pid = await opening
        assert new_pid > pid
        assert svc.procedure_id == new_pid
        with pytest.raises(ControlError) as twice:
            await second
        assert twice.value.code == "procedure_open"

        assert not sim.events("lease_expired")
        # and the new procedure freezes
        await submit(svc, E.AdHocFreeze(1, 60.0))
        await wait_for(lambda: freeze_valve(sim), 30, "the freeze valve to open")


async def test_a_close_the_record_refused_leaves_the_procedure_open_with_its_freeze_time(
    tmp_path: Path,
) -> None:
    async with console(tmp_path) as (svc, sim):
        pid = svc.procedure_id
        svc.coord.state = replace(svc.coord.state, cumulative_s=((1, 30.0),))

        async def refused(*args: Any, **kwargs: Any) -> None:
            raise OSError("disk full")

        svc.plog.close_procedure = refused  # type: ignore[method-assign]
        with pytest.raises(OSError, match="disk full"):
            await svc.close_procedure(CLOSE)
        assert svc.procedure_id == pid
        assert svc.state.procedure_open
        assert svc.state.cumulative(1) == 30.0
        await submit(svc, E.AdHocFreeze(1, 60.0))
        await wait_for(lambda: freeze_valve(sim), 30, "the freeze valve to open")
