"""Malformed, oversized and out-of-state control requests against a real cryod + cryosim.

Each is refused with a stable code; the daemon's state is unchanged (status
before/after), no valve moved at the console (the simulator's event log),
and every refused operator command is in the operator-actions table with its
reason. Unauthorised peers are in test_control_socket_perms.py.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cryod.daemon.control import MAX_REQUEST_BYTES, ControlError
from cryod.daemon.protocol_files import builtin_protocol_path
from tests.e2e.harness import DEMO_PROCEDURE, Daemon, Sim, sim_and_daemon

from .rig import actions, after_polls, cryoctl, fingerprint, raw, valve_events

SPEED = 20.0

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sim, Daemon, Path]]:
    wd = tmp_path_factory.mktemp("ctl")
    with sim_and_daemon(wd, speed=SPEED) as (sim, d):
        yield sim, d, wd


def _refuse(
    sim: Sim, d: Daemon, db: Path, cmd: str, args: dict[str, Any], codes: set[str]
) -> dict[str, Any]:
    """Send one request that must be refused; check nothing changed and it was recorded."""
    before, valves, n_actions = fingerprint(d), len(valve_events(sim)), len(actions(db))
    with pytest.raises(ControlError) as info:
        d.call(cmd, args)
    assert info.value.code in codes, (cmd, args, info.value.code, info.value.message)
    assert info.value.message, (cmd, args)
    after_polls(d)  # a valve commanded by mistake shows by now
    assert fingerprint(d) == before, (cmd, args)
    assert len(valve_events(sim)) == valves, (cmd, args, valve_events(sim)[valves:])
    new = actions(db)[n_actions:]
    assert [(a["action"], a["accepted"]) for a in new] == [(cmd, 0)], (cmd, args, new)
    reason = new[0]["reason"]
    assert reason, new[0]
    assert reason.startswith(info.value.code) or reason == info.value.message, new[0]
    return new[0]


FRAMES = [
    ("not-json", b"freeze probe 1\n", "bad_request"),
    ("json-array", b'["freeze", 1]\n', "bad_request"),
    ("json-number", b"42\n", "bad_request"),
    ("no-cmd", b'{"id": 1, "args": {}}\n', "bad_request"),
    ("cmd-not-string", b'{"id": 1, "cmd": ["freeze"], "args": {}}\n', "bad_request"),
    ("args-not-object", b'{"id": 1, "cmd": "freeze", "args": [1, 30]}\n', "bad_request"),
    ("unknown-field", b'{"id": 1, "cmd": "status", "sudo": true}\n', "bad_request"),
    ("unknown-command", b'{"id": 1, "cmd": "open_valve", "args": {"probe": 1}}\n',
     "unknown_command"),
    ("not-utf8", b'{"id": 1, "cmd": "\xff\xfe"}\n', "bad_request"),
    ("nul-bytes", b"\x00" * 1000 + b"\n", "bad_request"),
    ("oversized-garbage", b"A" * (MAX_REQUEST_BYTES + 4096) + b"\n", "too_large"),
    ("oversized-json", json.dumps({"id": 1, "cmd": "procedure_open", "args": {
        **DEMO_PROCEDURE, "site": "x" * (MAX_REQUEST_BYTES + 10)}}).encode() + b"\n",
     "too_large"),
    ("huge-no-newline", b"{" * (4 * MAX_REQUEST_BYTES), "too_large"),
]  # fmt: skip


def test_malformed_and_oversized_frames_are_refused(rig: tuple[Sim, Daemon, Path]) -> None:
    sim, d, wd = rig
    before, valves, n_actions = (
        fingerprint(d),
        len(valve_events(sim)),
        len(actions(wd / "cryod.db")),
    )
    for name, data, code in FRAMES:
        resp = raw(d.socket, data)
        assert resp is not None, name
        assert resp["ok"] is False, (name, resp)
        assert resp["error"]["code"] == code, (name, resp)
        assert resp["error"]["message"], name
        assert len(json.dumps(resp)) < 4096, name  # the request is not echoed back
    # the daemon still answers, and nothing changed
    assert fingerprint(d) == before
    assert len(valve_events(sim)) == valves
    # frames that name no command reach no handler, so nothing was accepted or recorded
    assert len(actions(wd / "cryod.db")) == n_actions


def test_out_of_state_and_invalid_requests_are_refused_and_recorded(
    rig: tuple[Sim, Daemon, Path], tmp_path: Path
) -> None:
    sim, d, wd = rig
    db = wd / "cryod.db"
    assert fingerprint(d)["state"] == "idle"
    # no procedure open
    _refuse(sim, d, db, "freeze", {"probe": 1, "seconds": 30}, {"no_procedure"})
    _refuse(sim, d, db, "thaw", {"probe": 1, "seconds": 30}, {"no_procedure"})
    _refuse(sim, d, db, "run", {"protocol": "classic-double-90", "probes": [1]},
            {"no_procedure"})  # fmt: skip
    _refuse(sim, d, db, "procedure_close", {}, {"no_procedure"})
    _refuse(sim, d, db, "reset", {}, {"no_fault"})
    _refuse(sim, d, db, "continue", {}, {"not_in_hold"})
    _refuse(sim, d, db, "stop", {}, {"nothing_to_stop"})
    _refuse(sim, d, db, "extend", {"seconds": 10}, {"nothing_to_extend", "not_freezing",
                                                   "bad_state", "no_freeze"})  # fmt: skip
    # a patient name where a pseudonym belongs; missing and unknown fields
    row = _refuse(sim, d, db, "procedure_open", {**DEMO_PROCEDURE, "patient_ref": "John Smith"},
                  {"rejected"})  # fmt: skip
    assert "John Smith" not in json.dumps(row)
    _refuse(sim, d, db, "procedure_open", {"indication": "mortons_neuroma"}, {"rejected"})

    pid = d.call("procedure_open", DEMO_PROCEDURE)["procedure_id"]
    assert fingerprint(d)["procedure"] == {"id": pid, "open": True}
    # invalid arguments with a procedure open
    for args in (
        {"probe": "x", "seconds": 30},
        {"probe": 99, "seconds": 30},
        {"probe": 0, "seconds": 30},
        {"probe": 1, "seconds": -1},
        {"probe": 1, "seconds": 0},
        {"probe": 1, "seconds": 1e9},
        {"probe": 1, "seconds": "forever"},
    ):
        _refuse(sim, d, db, "freeze", args, {"bad_request", "bad_probe", "invalid", "rejected"})
    _refuse(sim, d, db, "thaw", {"probe": 1, "mode": "plasma"}, {"bad_request", "invalid",
                                                                "rejected"})  # fmt: skip
    _refuse(sim, d, db, "run", {"protocol": "no-such-protocol"}, {"rejected"})
    _refuse(sim, d, db, "run", {"protocol": "../../../etc/passwd"}, {"rejected"})
    _refuse(sim, d, db, "run", {"protocol": "classic-double-90", "probes": [42]},
            {"bad_probe", "rejected", "invalid"})  # fmt: skip
    # a bad protocol file through the operator's CLI: refused, nothing runs
    good = builtin_protocol_path("classic-double-90").read_text()
    bad_files = {
        "malformed": good.replace("[[steps]]", "[[steps", 1),
        "out-of-range": good.replace("target_tip_c = -60.0", "target_tip_c = -300.0", 1),
        "over-limit": good.replace("duration_s = 90", "duration_s = 400", 1),
    }
    for name, text in bad_files.items():
        path = tmp_path / f"{name}.toml"
        path.write_text(text)
        before, valves, n = fingerprint(d), len(valve_events(sim)), len(actions(db))
        r = cryoctl(d.socket, "run", str(path), "--probes", "1")
        assert r.returncode == 1, (name, r.stdout, r.stderr)
        assert "refused: rejected" in r.stderr, (name, r.stderr)
        assert str(path) in r.stderr, (name, r.stderr[:500])
        assert len(r.stderr) < 64 * 1024
        after_polls(d)
        assert fingerprint(d) == before, name
        assert len(valve_events(sim)) == valves, name
        new = actions(db)[n:]
        assert [(a["action"], a["accepted"]) for a in new] == [("run", 0)], (name, new)
    # the refusals never moved a valve: positive control that a good run does
    assert not any(e["open"] for e in valve_events(sim) if e.get("valve") == "freeze")


def test_requests_while_a_protocol_runs_are_refused(rig: tuple[Sim, Daemon, Path]) -> None:
    sim, d, wd = rig
    db = wd / "cryod.db"
    if fingerprint(d)["procedure"] is None:
        d.call("procedure_open", DEMO_PROCEDURE)
    d.call("run", {"protocol": "classic-double-90", "probes": [1]})
    d.wait_state({"freezing"}, timeout=20)
    # the refusals start once the protocol's own valve commands have reached the console
    deadline = time.monotonic() + 10
    while not (_freeze_valve_opened(sim) and d.status()["snapshot"]["probes"][0]["freeze_open"]):
        assert time.monotonic() < deadline, "the protocol never opened the freeze valve"
        time.sleep(0.05)
    st = d.status()
    remaining0 = st["engine"]["remaining_s"]
    assert remaining0 > 30  # enough simulated time left for every refusal below
    run_active = {"run_active", "busy"}
    _refuse(sim, d, db, "run", {"protocol": "classic-double-90", "probes": [1]}, run_active)
    _refuse(sim, d, db, "run", {"protocol": "morton-neuroma-cazzato2016", "probes": [2]},
            run_active)  # fmt: skip
    _refuse(sim, d, db, "freeze", {"probe": 2, "seconds": 30}, run_active)
    _refuse(sim, d, db, "thaw", {"probe": 1, "seconds": 30}, run_active)
    _refuse(sim, d, db, "procedure_close", {}, {"busy"})
    _refuse(sim, d, db, "procedure_open", DEMO_PROCEDURE, {"procedure_open"})
    _refuse(sim, d, db, "continue", {}, {"not_in_hold"})
    _refuse(sim, d, db, "reset", {}, {"no_fault"})
    for secs in (60.001, 61, 1e9, 0, -5):
        _refuse(sim, d, db, "extend", {"seconds": secs}, {"bad_extension"})
    _refuse(sim, d, db, "extend", {"seconds": "lots"}, {"bad_request", "rejected"})
    st = d.status()
    assert st["engine"]["state"] == "freezing"
    assert st["engine"]["remaining_s"] <= remaining0  # no extension slipped through
    # an extension within the maximum is accepted (positive control), then abort
    d.call("extend", {"seconds": 5})
    d.call("abort")
    st = d.wait_state({"aborted"}, timeout=10)
    # the status's snapshot may be the one read just before the abort: allow one more poll
    deadline = time.monotonic() + 2
    while any(p["freeze_open"] for p in st["snapshot"]["probes"]) and time.monotonic() < deadline:
        time.sleep(0.05)
        st = d.status()
    assert not any(p["freeze_open"] for p in st["snapshot"]["probes"])


def test_requests_during_a_fault_are_refused(rig: tuple[Sim, Daemon, Path]) -> None:
    sim, d, wd = rig
    db = wd / "cryod.db"
    if fingerprint(d)["procedure"] is None:
        d.call("procedure_open", DEMO_PROCEDURE)
    sim.ctl("fault", "overpressure")
    st = d.wait_state({"fault"}, timeout=20)
    # the supervisor may trip on supply_high a poll before the console latches its own
    # over-pressure fault: wait until the picture is stable before comparing
    deadline = time.monotonic() + 10
    while "overpressure" not in (st["snapshot"] or {}).get("faults", []):
        assert time.monotonic() < deadline, st
        time.sleep(0.1)
        st = d.status()
    assert any(a["priority"] == "high" for a in st["alarms"])
    fault_codes = {"fault_latched", "fault", "in_fault", "faulted", "busy", "run_active",
                   "not_safe", "console_fault"}  # fmt: skip
    _refuse(sim, d, db, "freeze", {"probe": 1, "seconds": 30}, fault_codes)
    _refuse(sim, d, db, "run", {"protocol": "classic-double-90", "probes": [1]}, fault_codes)
    _refuse(
        sim,
        d,
        db,
        "extend",
        {"seconds": 10},
        fault_codes | {"bad_extension", "not_freezing", "nothing_to_extend"},
    )
    _refuse(sim, d, db, "continue", {}, {"not_in_hold"})
    # a reset while the cause is present and unacknowledged is refused
    _refuse(sim, d, db, "reset", {}, {"not_acknowledged", "unacknowledged", "cause_present",
                                      "not_acked"})  # fmt: skip
    sim.ctl("clear")
    d.call("ack")
    deadline = time.monotonic() + 20
    while True:
        try:
            d.call("reset")
            break
        except ControlError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert d.status()["engine"]["state"] != "fault"


def test_oversized_protocol_file_is_refused_without_stalling(tmp_path: Path) -> None:
    good = builtin_protocol_path("classic-double-90").read_text()
    path = tmp_path / "oversized.toml"
    path.write_text(good.replace('description = "', 'description = "' + "d" * 10_000_000, 1))
    with sim_and_daemon(tmp_path, speed=SPEED) as (sim, d):
        d.call("procedure_open", DEMO_PROCEDURE)
        before, valves = fingerprint(d), len(valve_events(sim))
        r = cryoctl(d.socket, "run", str(path), "--probes", "1")
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert "refused" in r.stderr
        after_polls(d, polls=20)  # a second of polls at 20 Hz: no stall, no lease expiry
        assert fingerprint(d) == before
        assert len(valve_events(sim)) == valves
        assert sim.events("lease_expired") == []


def test_missing_or_mistyped_arguments_are_recorded(rig: tuple[Sim, Daemon, Path]) -> None:
    sim, d, wd = rig
    db = wd / "cryod.db"
    for cmd, args in (
        ("freeze", {"probe": 1}),
        ("extend", {}),
        ("run", {"protocol": "classic-double-90", "probes": 5}),
    ):
        _refuse(sim, d, db, cmd, args, {"bad_request", "rejected"})


def _freeze_valve_opened(sim: Sim) -> bool:
    return any(e["open"] for e in valve_events(sim) if e.get("valve") == "freeze")


def test_non_finite_argument_is_refused_before_acting(tmp_path: Path) -> None:
    """NaN anywhere in a request (an argument the command uses, or one it only records)
    is refused, recorded as refused, and nothing happens at the console."""
    with sim_and_daemon(tmp_path, speed=SPEED) as (sim, d):
        db = tmp_path / "cryod.db"
        d.call("procedure_open", DEMO_PROCEDURE)
        for args in (
            {"probe": 1, "seconds": 30, "note": math.nan},
            {"probe": 1, "seconds": math.nan},
            {"probe": 1, "seconds": math.inf},
        ):
            _refuse(sim, d, db, "freeze", args, {"bad_request"})
        st = d.status()
        assert st["engine"]["state"] == "idle", st["engine"]
        assert not _freeze_valve_opened(sim)
        # positive control: the same request without the NaN does freeze
        d.call("freeze", {"probe": 1, "seconds": 30})
        d.wait_state({"freezing"}, timeout=20)
