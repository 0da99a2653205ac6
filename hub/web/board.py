"""The rooms board: what each room last published, folded; pure, time injected.

Messages come from the rooms' telemetry tree (docs/mqtt.md,
``cryod/v1/{site}/{console}/...``): ``telemetry`` (per-probe tip, supply
pressure, link counters), ``state`` (phase, probe, cycle, remaining time),
``alarms/active`` (the whole list), ``status`` (online/offline and why).
Every payload is untrusted input: a value is taken only with the type it
must have (a number finite, a text short), anything else is ignored.

**Offline.** A room is live while its messages keep coming: a room silent
for ``OFFLINE_AFTER_S`` (3 s; telemetry is 2 Hz) is shown "offline since
HH:MM" with its last values greyed. Retained messages (sent by the broker
when the board subscribes) fill in the last values but never count as a
sign of life; their room is offline since its ``last_seen`` until it
publishes again.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["OFFLINE_AFTER_S", "TREND_POINTS", "Board", "RoomState", "parse_topic"]

OFFLINE_AFTER_S: Final = 3.0
#: points in a probe's short trend (about 30 s of 2 Hz telemetry)
TREND_POINTS: Final = 60
MAX_PROBES: Final = 16
MAX_ALARMS: Final = 20
MAX_TEXT: Final = 200
PREFIX: Final = "cryod/v1/"
PRIORITIES: Final = ("high", "medium", "low", "info")


def parse_topic(topic: str) -> tuple[str, str, str] | None:
    """(site, console, what) of a telemetry-tree topic, or None."""
    if not topic.startswith(PREFIX):
        return None
    parts = topic[len(PREFIX) :].split("/", 2)
    if len(parts) != 3 or not all(parts):
        return None
    return parts[0], parts[1], parts[2]


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return value[:MAX_TEXT] if isinstance(value, str) else None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _wall(ts_ms: Any) -> dt.datetime | None:
    n = _num(ts_ms)
    if n is None:
        return None
    try:
        return dt.datetime.fromtimestamp(n / 1000.0, dt.UTC)
    except (OverflowError, OSError, ValueError):
        return None


@dataclass
class RoomState:
    site: str
    console: str
    last_mono: float | None = None  # last live (not retained) message
    last_wall: dt.datetime | None = None
    status: str | None = None
    status_reason: str | None = None
    engine_state: str | None = None
    phase: str | None = None
    probe: int | None = None
    cycle: int | None = None
    remaining_s: float | None = None
    state_mono: float | None = None
    procedure_id: int | None = None
    protocol: str | None = None
    supply_kpa: float | None = None
    supply_validity: str | None = None
    probes: dict[int, dict[str, Any]] = field(default_factory=dict)
    trends: dict[int, deque[float | None]] = field(default_factory=dict)
    alarms: list[dict[str, Any]] = field(default_factory=list)
    link: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.site}/{self.console}"

    def online(self, now_mono: float) -> bool:
        return self.last_mono is not None and now_mono - self.last_mono <= OFFLINE_AFTER_S


class Board:
    """Every room heard of, by ``site/console``."""

    def __init__(self) -> None:
        self.rooms: dict[str, RoomState] = {}
        self.version = 0  # bumped on every applied message

    def apply(
        self,
        topic: str,
        payload: Any,
        *,
        now_mono: float,
        now_wall: dt.datetime,
        retained: bool = False,
    ) -> bool:
        """Fold one message in; False if it is not a board message (ignored)."""
        where = parse_topic(topic)
        if where is None or not isinstance(payload, dict):
            return False
        site, console, what = where
        if what not in ("telemetry", "state", "alarms/active", "status", "last_seen"):
            return False
        room = self.rooms.get(f"{site}/{console}")
        if room is None:
            room = self.rooms[f"{site}/{console}"] = RoomState(site, console)
        if what == "telemetry":
            self._telemetry(room, payload)
        elif what == "state":
            self._state(room, payload, now_mono)
        elif what == "alarms/active":
            self._alarms(room, payload)
        elif what == "status":
            room.status = _text(payload.get("status"))
            room.status_reason = _text(payload.get("reason"))
        if retained:
            if room.last_wall is None and what == "last_seen":
                room.last_wall = _wall(payload.get("ts_ms"))
        else:
            room.last_mono = now_mono
            room.last_wall = now_wall
        self.version += 1
        return True

    def _telemetry(self, room: RoomState, p: dict[str, Any]) -> None:
        room.supply_kpa = _num(p.get("supply_kpa"))
        room.supply_validity = _text(p.get("supply_validity"))
        probes = p.get("probes")
        if isinstance(probes, list):
            seen = set()
            for item in probes[:MAX_PROBES]:
                if not isinstance(item, dict) or (n := _int(item.get("probe"))) is None:
                    continue
                seen.add(n)
                tip = _num(item.get("tip_c"))
                room.probes[n] = {
                    "probe": n,
                    "tip_c": tip,
                    "tip_validity": _text(item.get("tip_validity")),
                    "freeze_open": _bool(item.get("freeze_open")),
                    "thaw_on": _bool(item.get("thaw_on")),
                }
                room.trends.setdefault(n, deque(maxlen=TREND_POINTS)).append(tip)
            for gone in set(room.probes) - seen:
                del room.probes[gone]
                room.trends.pop(gone, None)
        link = p.get("link")
        if isinstance(link, dict):
            room.link = {
                "connected": _bool(link.get("connected")),
                **{
                    k: _int(link.get(k))
                    for k in ("timeouts", "retries", "reconnects", "bad_frames", "seq_gaps")
                },
            }

    def _state(self, room: RoomState, p: dict[str, Any], now_mono: float) -> None:
        room.engine_state = _text(p.get("engine_state"))
        room.phase = _text(p.get("phase"))
        room.probe = _int(p.get("probe"))
        room.cycle = _int(p.get("cycle"))
        room.remaining_s = _num(p.get("remaining_s"))
        room.procedure_id = _int(p.get("procedure_id"))
        room.protocol = _text(p.get("protocol"))
        room.state_mono = now_mono

    def _alarms(self, room: RoomState, p: dict[str, Any]) -> None:
        items = p.get("alarms")
        out = []
        if isinstance(items, list):
            for a in items[:MAX_ALARMS]:
                if not isinstance(a, dict):
                    continue
                priority = a.get("priority")
                out.append(
                    {
                        "priority": priority if priority in PRIORITIES else "info",
                        "code": _text(a.get("code")) or "",
                        "message": _text(a.get("message")) or "",
                        "probe": _int(a.get("probe")),
                        "acknowledged": _bool(a.get("acknowledged")) or False,
                    }
                )
        out.sort(key=lambda a: PRIORITIES.index(a["priority"]))
        room.alarms = out

    def view(
        self, now_mono: float, *, sites: Iterable[str] | None = None, tz: dt.tzinfo = dt.UTC
    ) -> list[dict[str, Any]]:
        """The rooms as the page shows them (``sites``: only these; None: all)."""
        allowed = None if sites is None else set(sites)
        out = []
        for key in sorted(self.rooms):
            room = self.rooms[key]
            if allowed is not None and room.site not in allowed:
                continue
            out.append(room_view(room, now_mono, tz))
        return out


def _countdown(room: RoomState, now_mono: float, online: bool) -> float | None:
    if room.remaining_s is None or room.state_mono is None:
        return None
    if not online or room.engine_state != "running":
        return room.remaining_s
    return max(0.0, room.remaining_s - (now_mono - room.state_mono))


def _step(room: RoomState) -> str | None:
    parts = []
    if room.cycle is not None:
        parts.append(f"cycle {room.cycle}")
    if room.probe is not None:
        parts.append(f"probe {room.probe}")
    return ", ".join(parts) or None


def room_view(room: RoomState, now_mono: float, tz: dt.tzinfo = dt.UTC) -> dict[str, Any]:
    online = room.online(now_mono)
    since = None
    if not online and room.last_wall is not None:
        since = room.last_wall.astimezone(tz).strftime("%H:%M")
    return {
        "key": room.key,
        "site": room.site,
        "console": room.console,
        "online": online,
        "offline_since": since,
        "status": room.status,
        "status_reason": room.status_reason,
        "engine_state": room.engine_state,
        "phase": room.phase,
        "step": _step(room),
        "protocol": room.protocol,
        "procedure_id": room.procedure_id,
        "countdown_s": _countdown(room, now_mono, online),
        "supply_kpa": room.supply_kpa,
        "supply_validity": room.supply_validity,
        "probes": [
            {**room.probes[n], "trend": list(room.trends.get(n, ()))} for n in sorted(room.probes)
        ],
        "alarms": room.alarms,
        "link": room.link,
    }
