"""The one safe state of a console, defined here and nowhere else.

Every output off: the master (supply) valve closed, every probe's freeze valve
closed, every probe's thaw output off (helium valve or electric heater alike).
The shell executes exactly this list on every path that demands the safe
state: on connect, on a supervisor trip, on a failed command or a storage
failure, on an operator abort and on shutdown (``coordinator.py`` expands the
``SafeState`` command into it; docs/safety.md lists the tests per path).

Order, and why. Each step is one write and one read-back, so on a slow or
failing link the order decides how long anything stays on:

1. the master valve first: one write stops the gas to every probe at once;
2. the freeze valves the console reports open (or the run's probes when
   there is no reading), then every other freeze valve;
3. the thaw outputs the console reports on, then every other thaw output.
   Thaw is switched off in the same pass: a thaw left on by an aborted run
   would keep warming (an electric heater) or keep gas flowing (helium).

Freeze before thaw: an open freeze valve is the faster harm (tissue freezing
past its plan) and, behind a closed master valve, the freeze lines are the
ones still holding gas. Outputs already off are commanded off too: the
console's report may be stale, and re-asserting costs one round trip each.
Every step is attempted even when an earlier one fails.
"""

from __future__ import annotations

from collections.abc import Iterable

from cryod.drivers.base import Snapshot

from .commands import OutputCommand, SetFreeze, SetMaster, SetThaw

__all__ = ["safe_state_commands"]


def safe_state_commands(
    probes: int, snapshot: Snapshot | None = None, first: Iterable[int] = ()
) -> list[OutputCommand]:
    """The safe state of a console with ``probes`` probes, in order.

    ``snapshot``: the console's last report, to close what it shows on first;
    ``first``: the run's probes, next (the report may predate this poll's commands).
    """
    every = range(1, probes + 1)
    run = [p for p in first if 1 <= p <= probes]
    shown_open = [] if snapshot is None else [p.probe for p in snapshot.probes if p.freeze_open]
    shown_on = [] if snapshot is None else [p.probe for p in snapshot.probes if p.thaw_on]
    freeze_order = list(dict.fromkeys([*shown_open, *run, *every]))
    thaw_order = list(dict.fromkeys([*shown_on, *run, *every]))
    return [
        SetMaster(on=False),
        *(SetFreeze(probe=p, on=False) for p in freeze_order),
        *(SetThaw(probe=p, on=False) for p in thaw_order),
    ]
