"""Our side of one console's MQTT publisher: what the daemon hands over, never awaiting.

The poll loop offers each snapshot (kept only at the publisher's rate, so
most polls build no body); the health loop (``Daemon._health``, 4 Hz) hands
over the engine's state and the active alarms, which are published (retained)
only when they change. It reads typed values: the engine's ``EngineStatus``
and the supervisor's alarms with their log ids.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol

from cryod.drivers.base import LinkStats, Snapshot

from ..alarms import Alarm, Priority
from ..console_status import EngineStatus
from .payloads import ActiveAlarm, AlarmPriority, alarms_active_body, state_body, telemetry_body

__all__ = ["ConsoleTelemetry", "TelemetryOut"]


class TelemetryOut(Protocol):
    """The publisher, as the daemon uses it (``publisher.Publisher``)."""

    def offer_telemetry(self, body: Mapping[str, Any]) -> bool: ...

    def publish_event(
        self, kind: Literal["state", "alarms_active"], body: Mapping[str, Any] | None = None
    ) -> None: ...

    def notify_outbox(self) -> None: ...


_PRIORITY: dict[Priority, AlarmPriority] = {
    Priority.HIGH: "high",
    Priority.MEDIUM: "medium",
    Priority.LOW: "low",
}


class ConsoleTelemetry:
    """One console's telemetry, state and active alarms, handed to its publisher."""

    def __init__(
        self,
        out: TelemetryOut,
        telemetry_hz: float,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        utc: Callable[[], float] = time.time,
    ) -> None:
        self.out = out
        self._period_s = 1.0 / telemetry_hz
        self._next_s = 0.0
        self._mono = monotonic
        self._utc = utc
        self._last_state: tuple[object, ...] | None = None
        self._last_alarms: tuple[object, ...] | None = None

    def offer_snapshot(self, snap: Snapshot, stats: LinkStats) -> None:
        """A poll's snapshot; the body is built only when the rate will take it (2 Hz of
        20 Hz polls)."""
        now = self._mono()
        if now < self._next_s:
            return
        self._next_s = now + self._period_s
        self.out.offer_telemetry(telemetry_body(snap, link=stats))

    def notify_outbox(self) -> None:
        self.out.notify_outbox()

    def update(
        self,
        *,
        engine: EngineStatus,
        procedure_id: int | None,
        alarms: Sequence[tuple[Alarm, int | None]],
    ) -> None:
        """The engine's state and the active alarms (with their log ids, None until
        written): each published when it changed."""
        state_key = (engine.state, engine.step, procedure_id)
        if state_key != self._last_state:
            self._last_state = state_key
            self.out.publish_event(
                "state",
                state_body(
                    t_utc_s=self._utc(),
                    engine_state=str(engine.state),
                    phase=engine.step_kind,
                    remaining_s=engine.remaining_s,
                    procedure_id=procedure_id,
                    protocol=engine.protocol,
                    safe=engine.safe,
                ),
            )
        alarms_key = tuple((a.code, a.probe, a.acknowledged, row) for a, row in alarms)
        if alarms_key != self._last_alarms:
            self._last_alarms = alarms_key
            active = [
                ActiveAlarm(
                    alarm_id=row,
                    code=str(a.code),
                    priority=_PRIORITY[a.priority],
                    probe=a.probe,
                    message=a.detail,
                    raised_ts_ms=int(a.raised_utc.timestamp() * 1000),
                    acknowledged=a.acknowledged,
                    latched=a.latching,
                )
                for a, row in alarms
            ]
            self.out.publish_event(
                "alarms_active", alarms_active_body(t_utc_s=self._utc(), alarms=active)
            )
