"""What ``cryoctl status``, ``cryoctl watch`` and MQTT show of a console, from typed values.

One snapshot shape for status and telemetry; the link judged by the age of the
last snapshot, not by the driver's connection flag; the engine's state and the
alarms of the one book handed to MQTT as typed values.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import pytest

from cryod.daemon import ctl
from cryod.daemon.alarms import ALARM_SPECS, Alarm, AlarmCode
from cryod.daemon.commands import ProcedureOpened, RunProtocol
from cryod.daemon.console_service import storage_fault
from cryod.daemon.console_status import (
    EngineStatus,
    LinkHealth,
    console_status,
    engine_status,
)
from cryod.daemon.engine import Phase
from cryod.daemon.store.errors import StoreError
from cryod.daemon.store.writer import WriterStatus
from cryod.daemon.telemetry.console_feed import ConsoleTelemetry
from cryod.daemon.telemetry.payloads import telemetry_body
from cryod.daemon.watch import render_plain
from cryod.drivers.base import LinkStats, Validity
from tests.core.helpers import Harness, freeze, proto, snap, thaw
from tests.mqtt import asyncapi
from tests.mqtt.samples import T_UTC

UTC0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
STALE_AFTER_S = 0.25


def _alarm(code: AlarmCode, probe: int | None = None, acked: bool = False) -> Alarm:
    spec = ALARM_SPECS[code]
    return Alarm(code, spec.priority, probe, f"{code} detail", 1.0, UTC0, acknowledged=acked)


def _status(
    *,
    link: LinkHealth | None = None,
    alarms: list[tuple[Alarm, int | None]] | None = None,
    tip_validity: dict[int, Validity] | None = None,
) -> dict[str, Any]:
    shown = snap(2.0, {1: -85.25}, tip_validity=tip_validity, probes=2, freeze_open=[1])
    return console_status(
        console="c1",
        driver="modbus-tcp",
        identity=None,
        stats=LinkStats(transactions=40, timeouts=3, connected=True),
        link=link or LinkHealth(connected=True, snapshot_age_s=0.05, stale_after_s=STALE_AFTER_S),
        poll={"hz": 20.0, "polls": 40, "late_polls": 0, "last_poll_age_ms": 12.0},
        engine=EngineStatus(state=Phase.IDLE, reason=""),
        snapshot=shown,
        alarms=alarms or [],
        procedure_id=None,
        time_scale=1.0,
    )


# ---- one snapshot shape -----------------------------------------------------------------
def test_status_snapshot_has_the_telemetry_shape_and_validity_keys() -> None:
    st = _status(tip_validity={2: Validity.STALE})
    shown = snap(2.0, {1: -85.25}, tip_validity={2: Validity.STALE}, probes=2, freeze_open=[1])
    body = telemetry_body(shown, link=LinkStats())
    assert st["snapshot"] == {k: v for k, v in body.items() if k != "link"}
    # unusable readings are null with their validity beside them, in both
    p1, p2 = st["snapshot"]["probes"]
    assert (p1["tip_c"], p1["tip_validity"]) == (-85.25, "valid")
    assert (p2["tip_c"], p2["tip_validity"]) == (None, "stale")
    assert st["snapshot"]["supply_validity"] == "valid"
    # and it is what the MQTT contract documents, envelope aside
    asyncapi.validate(
        "cryod/v1/demo/c1/telemetry", {"schema": "cryod.mqtt/1", "session": 1, "seq": 1, **body}
    )
    json.dumps(st, allow_nan=False)  # the control socket's JSON


# ---- the link ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("connected", "age_s", "state"),
    [
        (True, 0.05, "up"),
        (True, STALE_AFTER_S, "up"),  # at the rule, not past it
        (True, 3.2, "silent"),  # connected, but nothing read: not "up"
        (True, None, "silent"),  # connected, no snapshot yet
        (False, 3.2, "down"),
        (False, 0.05, "down"),
    ],
)
def test_link_state_follows_the_last_snapshots_age(
    connected: bool, age_s: float | None, state: str
) -> None:
    health = LinkHealth(connected=connected, snapshot_age_s=age_s, stale_after_s=STALE_AFTER_S)
    assert health.state == state
    shown = health.as_dict(LinkStats(connected=connected, timeouts=9))
    assert shown["state"] == state
    assert shown["timeouts"] == 9
    assert shown["snapshot_age_s"] == (None if age_s is None else round(age_s, 1))


def test_cryoctl_status_says_silent_not_up_while_nothing_arrives(
    capsys: pytest.CaptureFixture[str],
) -> None:
    silent = LinkHealth(connected=True, snapshot_age_s=3.24, stale_after_s=STALE_AFTER_S)
    stale = _alarm(AlarmCode.STALE_DATA)
    st = {
        "version": "0",
        "session": 1,
        "site": "t",
        "uptime_s": 9.0,
        "writer": {"healthy": True, "reason": "ok", "written": 1, "dropped": 0},
        "mqtt": None,
        "consoles": [_status(link=silent, alarms=[(stale, 4)])],
    }
    ctl._print_status(st)
    out = capsys.readouterr().out
    assert "link silent for 3.2 s" in out
    assert "link up" not in out
    assert "ALARM HIGH stale_data" in out
    assert "probe 1: -85.2 C (valid)" in out or "probe 1: -85.3 C (valid)" in out
    assert "supply 25000.0 kPa (valid)" in out
    # watch shows the same judgement
    text = render_plain(st, width=120)
    assert "link SILENT 3.2 s" in text
    assert "-85." in text
    # and once snapshots arrive again
    st["consoles"] = [_status()]
    ctl._print_status(st)
    assert "link up (timeouts 3" in capsys.readouterr().out
    down = LinkHealth(connected=False, snapshot_age_s=12.0, stale_after_s=STALE_AFTER_S)
    st["consoles"] = [_status(link=down)]
    ctl._print_status(st)
    assert "link DOWN, silent for 12.0 s" in capsys.readouterr().out


# ---- the engine -------------------------------------------------------------------------
def test_engine_status_of_a_running_freeze() -> None:
    h = Harness(supervise=False)
    h.feed(ProcedureOpened(), 0.0)
    h.tick(0.0)
    h.feed(RunProtocol(proto([freeze(60), thaw(30)]), (1, 2)), 0.0)
    assert h.state.phase is Phase.FREEZING
    es = engine_status(h.state, 15.0)
    assert es == EngineStatus(
        state=Phase.FREEZING,
        reason="",
        step_kind="freeze",
        step=1,
        steps=2,
        remaining_s=45.0,
        protocol=h.state.run.protocol.name,  # type: ignore[union-attr]
        probes=(1, 2),
    )
    assert not es.safe
    shown = es.as_dict()
    assert (shown["state"], shown["phase"], shown["remaining_s"]) == ("freezing", "freeze", 45.0)
    idle = EngineStatus(state=Phase.IDLE, reason="")
    assert idle.safe
    assert idle.as_dict() == {"state": "idle", "reason": ""}


# ---- MQTT from typed values -------------------------------------------------------------
class Out:
    def __init__(self) -> None:
        self.telemetry: list[dict[str, Any]] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.woken = 0

    def offer_telemetry(self, body: Any) -> bool:
        self.telemetry.append(dict(body))
        return True

    def publish_event(self, kind: str, body: Any = None) -> None:
        self.events.append((kind, dict(body)))

    def notify_outbox(self) -> None:
        self.woken += 1


def test_feed_publishes_state_and_alarms_when_they_change() -> None:
    out = Out()
    feed = ConsoleTelemetry(out, 2.0, utc=lambda: T_UTC)
    idle = EngineStatus(state=Phase.IDLE, reason="")
    a = _alarm(AlarmCode.STORAGE_FAILURE)
    feed.update(engine=idle, procedure_id=None, alarms=[])
    feed.update(engine=idle, procedure_id=None, alarms=[])  # unchanged: nothing new
    assert [k for k, _ in out.events] == ["state", "alarms_active"]
    feed.update(engine=idle, procedure_id=None, alarms=[(a, None)])
    feed.update(engine=idle, procedure_id=None, alarms=[(a, 17)])  # its log id arrived
    acked = dataclasses.replace(a, acknowledged=True)
    feed.update(engine=idle, procedure_id=None, alarms=[(acked, 17)])
    actives = [b for k, b in out.events if k == "alarms_active"]
    assert [x["alarms"][0]["alarm_id"] for x in actives[1:]] == [None, 17, 17]
    assert [x["alarms"][0]["acknowledged"] for x in actives[1:]] == [False, False, True]
    last = actives[-1]["alarms"][0]
    assert (last["code"], last["priority"], last["latched"]) == ("storage_failure", "high", True)
    fault = EngineStatus(state=Phase.FAULT, reason="supervisor: storage_failure")
    feed.update(engine=fault, procedure_id=3, alarms=[(a, 17)])
    state = [b for k, b in out.events if k == "state"][-1]
    assert (state["engine_state"], state["procedure_id"], state["safe"]) == ("fault", 3, True)
    for kind, body in out.events:
        topic = "cryod/v1/demo/c1/" + ("state" if kind == "state" else "alarms/active")
        asyncapi.validate(topic, {"schema": "cryod.mqtt/1", "session": 1, "seq": 1, **body})


def test_feed_builds_telemetry_only_at_the_publishers_rate() -> None:
    out = Out()
    clock = [0.0]
    feed = ConsoleTelemetry(out, 2.0, monotonic=lambda: clock[0])
    for i in range(20):  # one second of 20 Hz polls
        clock[0] = i * 0.05
        feed.offer_snapshot(snap(clock[0]), LinkStats())
    assert len(out.telemetry) == 2
    feed.notify_outbox()
    assert out.woken == 1


# ---- the record's writer, as the supervisor hears of it ---------------------------------
def _writer(**kw: Any) -> WriterStatus:
    base: dict[str, Any] = {
        "healthy": True,
        "reason": "ok",
        "last_error": None,
        "last_commit_age_s": 0.1,
        "busy_for_s": 0.0,
        "queued_samples": 0,
        "samples_written": 0,
        "samples_dropped_full": 0,
        "samples_dropped_error": 0,
        "samples_dropped_invalid": 0,
        "batches": 0,
        "commits": 0,
        "sample_rows_per_s": None,
        "audit_head": None,
    }
    base.update(kw)
    return WriterStatus(**base)


def test_storage_fault_is_a_failed_write_or_a_stopped_writer_not_a_slow_one() -> None:
    assert storage_fault(_writer()) is None
    err = StoreError("disk_full", "database or disk is full (OperationalError)")
    failed = _writer(healthy=False, reason=f"last write failed: {err}", last_error=err)
    assert storage_fault(failed) == "disk_full: database or disk is full (OperationalError)"
    stopped = _writer(healthy=False, reason="writer task ended")
    assert storage_fault(stopped) == "writer task ended"
    slow = _writer(healthy=False, reason="a write has been running for 6.0 s", busy_for_s=6.0)
    assert storage_fault(slow) is None  # the systemd watchdog's business, not a trip
