"""What ``cryoctl status`` (and ``cryoctl watch``) shows of one console, from typed values.

Pure: no I/O, no clock of its own (callers pass the times). The engine's part
(``EngineStatus``) is also what MQTT's state topic is built from
(``telemetry/console_feed.py``); the snapshot has the one JSON shape MQTT
telemetry has (``telemetry.payloads.snapshot_body``).

The link's health is judged from the age of the last snapshot read, not from
the driver's idea of a connection: a console that stops answering on an open
connection is ``silent``, not ``up``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cryod.drivers.base import Identity, LinkStats, Snapshot

from .alarms import Alarm
from .engine import EngineState, Phase
from .protocols import HoldStep
from .telemetry.payloads import snapshot_body

__all__ = ["EngineStatus", "LinkHealth", "alarm_dict", "console_status", "engine_status"]

LinkState = Literal["up", "silent", "down"]


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineStatus:
    """The engine's state as shown: the run's step and time left, when one runs."""

    state: Phase
    reason: str
    step_kind: str | None = None  # "freeze", "thaw", "hold"
    step: int | None = None  # 1-based
    steps: int | None = None
    remaining_s: float | None = None  # of a timed freeze or thaw, on the engine clock
    protocol: str | None = None
    probes: tuple[int, ...] = ()

    @property
    def safe(self) -> bool:
        """No freeze is under way or about to start."""
        return self.state not in (Phase.FREEZING, Phase.PRECHECK)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": str(self.state), "reason": self.reason}
        if self.step is not None:
            out.update(
                phase=self.step_kind,
                step=self.step,
                steps=self.steps,
                remaining_s=self.remaining_s,
                protocol=self.protocol,
                probes=list(self.probes),
            )
        return out


def engine_status(state: EngineState, now_mono_s: float) -> EngineStatus:
    """``state`` at ``now_mono_s`` (the engine's clock)."""
    run = state.run
    if run is None:
        return EngineStatus(state=state.phase, reason=state.reason)
    step = run.step
    planned = run.planned_s
    if planned is None and not isinstance(step, HoldStep):
        planned = step.duration_s
    remaining = None
    if planned is not None and state.phase in (Phase.FREEZING, Phase.THAWING):
        remaining = max(0.0, planned - (now_mono_s - run.phase_start_mono_s))
    return EngineStatus(
        state=state.phase,
        reason=state.reason,
        step_kind=step.kind,
        step=run.step_index + 1,
        steps=len(run.protocol.steps),
        remaining_s=remaining,
        protocol=run.protocol.name,
        probes=run.probes,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkHealth:
    """The console link as the operator should see it, in wall-clock seconds."""

    connected: bool  # the driver's view of its connection
    snapshot_age_s: float | None  # since the last snapshot read; None: none yet
    stale_after_s: float  # older than this, the data is stale (the supervisor's rule)

    @property
    def state(self) -> LinkState:
        if not self.connected:
            return "down"
        if self.snapshot_age_s is None or self.snapshot_age_s > self.stale_after_s:
            return "silent"
        return "up"

    def as_dict(self, stats: LinkStats) -> dict[str, Any]:
        age = self.snapshot_age_s
        return {
            **stats.as_dict(),
            "state": self.state,
            "snapshot_age_s": None if age is None else round(age, 1),
            "stale_after_s": round(self.stale_after_s, 3),
        }


def alarm_dict(alarm: Alarm, row_id: int | None) -> dict[str, Any]:
    """An active alarm; ``row_id`` is its record in the log (None until written)."""
    return {
        "id": row_id,
        "code": str(alarm.code),
        "priority": str(alarm.priority),
        "probe": alarm.probe,
        "message": alarm.detail,
        "raised_at": alarm.raised_utc.isoformat(),
        "raised_ts_ms": int(alarm.raised_utc.timestamp() * 1000),
        "acked": alarm.acknowledged,
        "latched": alarm.latching,
        "present": alarm.present,
    }


def _identity(ident: Identity | None) -> dict[str, Any] | None:
    if ident is None:
        return None
    return {
        "model": ident.model,
        "serial": ident.serial,
        "firmware": ident.firmware,
        "probes": ident.probes,
        "gas": ident.gas,
        "capabilities": sorted(ident.capabilities),
    }


def console_status(
    *,
    console: str,
    driver: str,
    identity: Identity | None,
    stats: LinkStats,
    link: LinkHealth,
    poll: dict[str, Any],
    engine: EngineStatus,
    snapshot: Snapshot | None,
    alarms: Sequence[tuple[Alarm, int | None]],
    procedure_id: int | None,
    time_scale: float,
) -> dict[str, Any]:
    """One console's entry of ``cryoctl status``; ``snapshot`` is the last poll's
    (None when it failed), ``alarms`` the active ones with their log ids."""
    return {
        "id": console,
        "driver": driver,
        "identity": _identity(identity),
        "link": link.as_dict(stats),
        "poll": poll,
        "engine": engine.as_dict(),
        "snapshot": None if snapshot is None else snapshot_body(snapshot),
        "alarms": [alarm_dict(a, row) for a, row in alarms],
        "procedure": None if procedure_id is None else {"id": procedure_id, "open": True},
        "time_scale": time_scale,
    }
