"""Pure builders of every MQTT payload, and the guard that keeps personal data out.

Nothing here does I/O or reads a clock: callers pass times in, so the
builders are tested without a broker. Every message carries ``schema``,
``ts_ms`` (UTC milliseconds since the epoch), ``seq`` (per topic per
session), ``session`` and units in the field names. ``docs/asyncapi.yaml``
is the contract; tests validate real messages against it.

The procedure is identified by its numeric id only. ``encode`` refuses any
payload carrying a key that looks like personal data, so a careless caller
cannot leak a patient reference onto the bus.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from cryod.drivers.base import LinkStats, ProbeState, Reading, Snapshot

__all__ = [
    "PREFIX",
    "SCHEMA",
    "ActiveAlarm",
    "AlarmEvent",
    "AlarmPriority",
    "CycleOutcome",
    "PersonalDataError",
    "Topics",
    "alarm_event_body",
    "alarms_active_body",
    "assert_no_personal_data",
    "audit_head_body",
    "audit_head_topic",
    "cycle_body",
    "encode",
    "is_personal_key",
    "last_seen_body",
    "snapshot_body",
    "stamp",
    "state_body",
    "status_body",
    "telemetry_body",
    "time_below",
    "ts_ms",
]

SCHEMA: Final = "cryod.mqtt/1"
PREFIX: Final = "cryod/v1"

AlarmPriority = Literal["high", "medium", "low", "info"]
AlarmEvent = Literal["raised", "acknowledged", "cleared"]
CycleOutcome = Literal["completed", "stopped", "aborted", "interrupted", "faulted"]


class PersonalDataError(ValueError):
    """A payload carried a key that may hold personal data; it is never published."""


# Keys that may carry personal data. Matched on whole words of the key
# (split on '_', '-', '.', camelCase) so "patient_ref", "PatientName" and
# "surname" are caught while "probe" or "engine_state" are not.
_FORBIDDEN_WORDS: Final = frozenset(
    {
        "patient",
        "patients",
        "name",
        "firstname",
        "lastname",
        "fullname",
        "surname",
        "forename",
        "dob",
        "birth",
        "birthdate",
        "mrn",
        "nhs",
        "ssn",
        "address",
        "email",
        "phone",
        "initials",
        "subject",
    }
)
_WORD_SPLIT: Final = re.compile(r"[_\-.\s]+|(?<=[a-z0-9])(?=[A-Z])")


@functools.lru_cache(maxsize=4096)
def _forbidden(key: str) -> bool:
    words = [w.lower() for w in _WORD_SPLIT.split(key) if w]
    joined = "".join(words)
    return joined in _FORBIDDEN_WORDS or any(w in _FORBIDDEN_WORDS for w in words)


def is_personal_key(key: str) -> bool:
    """Does this key (a field or column name) look like it holds personal data? The
    record channel's encoder asks the same question (daemon/record_channel/message.py)."""
    return _forbidden(key)


def assert_no_personal_data(payload: Any, *, path: str = "$") -> None:
    """Raise PersonalDataError if any key, at any depth, looks like personal data."""
    found = _personal_data(payload)
    if found is not None:
        where, why = found
        raise PersonalDataError(f"{path}{where}: {why}")


# values that hold no keys: skipped without the (slower) Mapping check
_LEAF_TYPES: Final = frozenset({str, int, float, bool, type(None)})


def _personal_data(payload: Any) -> tuple[str, str] | None:
    """(path below ``payload``, reason) of the first key that may carry personal data,
    or None. The path is built only for a key refused (telemetry runs this twice a
    second)."""
    if isinstance(payload, Mapping):
        for key, value in payload.items():
            if not isinstance(key, str):
                return "", f"non-string key {key!r}"
            if _forbidden(key):
                return (
                    f".{key}",
                    "key may carry personal data; MQTT payloads identify "
                    "the procedure by its numeric id only",
                )
            if type(value) not in _LEAF_TYPES and (found := _personal_data(value)):
                return f".{key}{found[0]}", found[1]
    elif isinstance(payload, (list, tuple)):
        for i, item in enumerate(payload):
            if type(item) not in _LEAF_TYPES and (found := _personal_data(item)):
                return f"[{i}]{found[0]}", found[1]
    return None


def encode(payload: Mapping[str, Any]) -> bytes:
    """Compact JSON, after the personal-data guard. NaN/Infinity are refused (not JSON)."""
    assert_no_personal_data(payload)
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()


def ts_ms(t_utc_s: float) -> int:
    """UTC seconds since the epoch -> integer milliseconds."""
    return round(t_utc_s * 1000)


def stamp(body: Mapping[str, Any], *, session: int, seq: int) -> dict[str, Any]:
    """Add the envelope every message carries. ``body`` must already hold ``ts_ms``."""
    if "ts_ms" not in body:
        raise ValueError("payload body needs ts_ms")
    out: dict[str, Any] = {"schema": SCHEMA, "session": session, "seq": seq}
    out.update(body)
    return out


@dataclass(frozen=True, slots=True)
class Topics:
    """The topic tree of one console: ``cryod/v1/{site}/{console}/...``."""

    site: str
    console: str

    @property
    def base(self) -> str:
        return f"{PREFIX}/{self.site}/{self.console}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def telemetry(self) -> str:
        return f"{self.base}/telemetry"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def alarms(self) -> str:
        return f"{self.base}/alarms"

    @property
    def alarms_active(self) -> str:
        return f"{self.base}/alarms/active"

    @property
    def cycles(self) -> str:
        return f"{self.base}/cycles"

    @property
    def last_seen(self) -> str:
        return f"{self.base}/last_seen"

    def all(self) -> tuple[str, ...]:
        return (
            self.status,
            self.telemetry,
            self.state,
            self.alarms,
            self.alarms_active,
            self.cycles,
            self.last_seen,
        )


def audit_head_topic(site: str, node: str) -> str:
    """The node's anchor topic ``cryod/v1/{site}/{node}/audit/head`` (one per node,
    whatever its consoles): the record's chain head, retained."""
    return f"{PREFIX}/{site}/{node}/audit/head"


def audit_head_body(*, t_utc_s: float, node: str, seq: int, digest: str) -> dict[str, Any]:
    """A chain head as an anchor (docs/integrity.md): which node, which entry, its hash.
    No personal data: a head says nothing about what the entries hold."""
    return {"ts_ms": ts_ms(t_utc_s), "node": node, "chain_seq": seq, "chain_hash": digest}


def _num(value: float | None, ndigits: int = 3) -> float | None:
    """A finite rounded number, or None (never NaN: stale or invalid is null, not a number)."""
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), ndigits)


def _reading(r: Reading) -> float | None:
    return _num(r.value) if r.usable else None


def status_body(
    *,
    online: bool,
    software_version: str,
    client_id: str,
    t_utc_s: float,
    reason: Literal["connected", "clean_shutdown", "will"],
) -> dict[str, Any]:
    """Retained status. ``reason`` "will" marks the broker-sent last will: its ts_ms is
    when that connection was made, not when the daemon died."""
    return {
        "ts_ms": ts_ms(t_utc_s),
        "status": "online" if online else "offline",
        "online": online,
        "reason": reason,
        "software_version": software_version,
        "client_id": client_id,
    }


def last_seen_body(*, t_utc_s: float, interval_s: float) -> dict[str, Any]:
    """Retained, refreshed every ``interval_s`` while the daemon publishes: when it was
    last alive. The will's ``ts_ms`` is the connect time, so a subscriber that finds
    ``offline`` with reason ``will`` takes the death time from here (between ``ts_ms``
    and ``ts_ms + interval_s``, plus the broker's keepalive check)."""
    return {"ts_ms": ts_ms(t_utc_s), "interval_s": interval_s}


def _probe(p: ProbeState) -> dict[str, Any]:
    return {
        "probe": p.probe,
        "tip_c": _reading(p.tip_c),
        "tip_validity": str(p.tip_c.validity),
        "return_kpa": _reading(p.return_kpa),
        "return_validity": str(p.return_kpa.validity),
        "tc_status": p.tc_status.name.lower(),
        "freeze_open": p.freeze_open,
        "thaw_on": p.thaw_on,
        "limits_armed": p.limits_armed,
        "trip": p.trip.name.lower(),
    }


def snapshot_body(snapshot: Snapshot) -> dict[str, Any]:
    """A poll snapshot as JSON: the one shape, for MQTT telemetry and ``cryoctl status``.

    Every reading is a number only when usable, else null, with its validity
    beside it under ``<name>_validity`` (``tip_validity``, ``supply_validity``...).
    """
    lease = snapshot.lease
    skin = snapshot.skin_c
    return {
        "ts_ms": ts_ms(snapshot.t_utc),
        "poll_seq": snapshot.seq,
        "console_time_s": _num(snapshot.console_time_s),
        "supply_kpa": _reading(snapshot.supply_kpa),
        "supply_validity": str(snapshot.supply_kpa.validity),
        "cylinder_kpa": _reading(snapshot.cylinder_kpa),
        "cylinder_validity": str(snapshot.cylinder_kpa.validity),
        "skin_c": _reading(skin) if skin is not None else None,
        "skin_validity": str(skin.validity) if skin is not None else None,
        "master_open": snapshot.master_open,
        "supply_low": snapshot.supply_low,
        "lease": {
            "armed": lease.armed,
            "timeout_ms": lease.timeout_ms,
            "expired": lease.expired,
            "expiry_count": lease.expiry_count,
        },
        "faults": snapshot.faults.names(),
        "probes": [_probe(p) for p in snapshot.probes],
    }


def telemetry_body(snapshot: Snapshot, *, link: LinkStats | None = None) -> dict[str, Any]:
    """One telemetry sample: the snapshot (``snapshot_body``) and the link's counters."""
    body = snapshot_body(snapshot)
    if link is not None:
        body["link"] = {
            "connected": link.connected,
            "transactions": link.transactions,
            "timeouts": link.timeouts,
            "retries": link.retries,
            "bad_frames": link.bad_frames,
            "reconnects": link.reconnects,
            "seq_gaps": link.seq_gaps,
        }
    return body


def state_body(
    *,
    t_utc_s: float,
    engine_state: str,
    phase: str | None = None,
    probe: int | None = None,
    cycle: int | None = None,
    remaining_s: float | None = None,
    procedure_id: int | None = None,
    protocol: str | None = None,
    safe: bool = True,
) -> dict[str, Any]:
    """Engine state; retained so a dashboard that connects late sees it at once."""
    return {
        "ts_ms": ts_ms(t_utc_s),
        "engine_state": engine_state,
        "phase": phase,
        "probe": probe,
        "cycle": cycle,
        "remaining_s": _num(remaining_s, 1),
        "procedure_id": procedure_id,
        "protocol": protocol,
        "safe": safe,
    }


def alarm_event_body(
    *,
    t_utc_s: float,
    event: AlarmEvent,
    alarm_id: int,
    code: str,
    priority: AlarmPriority,
    probe: int | None = None,
    message: str = "",
    latched: bool = False,
    procedure_id: int | None = None,
) -> dict[str, Any]:
    """An alarm event as stored in the outbox; the publisher adds the envelope and event_id."""
    return {
        "ts_ms": ts_ms(t_utc_s),
        "event": event,
        "alarm_id": alarm_id,
        "code": code,
        "priority": priority,
        "probe": probe,
        "message": message,
        "latched": latched,
        "procedure_id": procedure_id,
    }


@dataclass(frozen=True, slots=True)
class ActiveAlarm:
    alarm_id: int | None  # its id in the log; None until written there (or never written)
    code: str
    priority: AlarmPriority
    probe: int | None
    raised_ts_ms: int
    acknowledged: bool
    latched: bool
    message: str = ""


_PRIORITY_ORDER: Final = {"high": 0, "medium": 1, "low": 2, "info": 3}


def alarms_active_body(*, t_utc_s: float, alarms: Iterable[ActiveAlarm]) -> dict[str, Any]:
    """The whole list of active alarms (retained), highest priority first."""
    ordered = sorted(
        alarms, key=lambda a: (_PRIORITY_ORDER[a.priority], a.raised_ts_ms, a.alarm_id or 0)
    )
    return {
        "ts_ms": ts_ms(t_utc_s),
        "count": len(ordered),
        "alarms": [
            {
                "alarm_id": a.alarm_id,
                "code": a.code,
                "priority": a.priority,
                "probe": a.probe,
                "raised_ts_ms": a.raised_ts_ms,
                "acknowledged": a.acknowledged,
                "latched": a.latched,
                "message": a.message,
            }
            for a in ordered
        ],
    }


def cycle_body(
    *,
    t_utc_s: float,
    cycle_id: int,
    procedure_id: int | None,
    probe: int,
    cycle: int,
    phase: str,
    started_ts_ms: int,
    freeze_s: float,
    thaw_s: float,
    min_tip_c: float | None,
    time_below_m20c_s: float,
    time_below_m40c_s: float,
    outcome: CycleOutcome,
    target_freeze_s: float | None = None,
) -> dict[str, Any]:
    """Summary of one completed cycle (as stored in the outbox)."""
    return {
        "ts_ms": ts_ms(t_utc_s),
        "cycle_id": cycle_id,
        "procedure_id": procedure_id,
        "probe": probe,
        "cycle": cycle,
        "phase": phase,
        "started_ts_ms": started_ts_ms,
        "ended_ts_ms": ts_ms(t_utc_s),
        "freeze_s": _num(freeze_s, 2),
        "thaw_s": _num(thaw_s, 2),
        "target_freeze_s": _num(target_freeze_s, 2),
        "min_tip_c": _num(min_tip_c, 2),
        "time_below_m20c_s": _num(time_below_m20c_s, 2),
        "time_below_m40c_s": _num(time_below_m40c_s, 2),
        "outcome": outcome,
    }


def time_below(samples: Sequence[tuple[float, float | None]], threshold_c: float) -> float:
    """Seconds at or below ``threshold_c`` from (t_mono_s, tip_c) samples, each held until the next.

    For cycle summaries (``time_below_m20c_s``, ``time_below_m40c_s``); an
    unusable sample (None) counts as not below.
    """
    total = 0.0
    for (t0, c0), (t1, _c1) in itertools.pairwise(samples):
        if c0 is not None and c0 <= threshold_c and t1 > t0:
            total += t1 - t0
    return total
