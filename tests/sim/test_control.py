"""The control socket over a real unix socket, in the test's own event loop."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cryod.drivers.profile import load_profile
from cryod.simulators.console import SimConsole
from cryod.simulators.control import ControlError, arequest, serve_control


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[SimConsole, Path]]:
    console = SimConsole(load_profile(), speed=100.0, seed=5)
    path = tmp_path / "ctl.sock"
    ready = asyncio.Event()
    ticker = asyncio.create_task(console.run())
    server = asyncio.create_task(serve_control(console, path, ready))
    await asyncio.wait_for(ready.wait(), 5.0)
    try:
        yield console, path
    finally:
        for task in (server, ticker):
            task.cancel()
        await asyncio.gather(server, ticker, return_exceptions=True)
        console.close()
    assert not path.exists()  # the socket file is removed on the way out


async def test_fault_state_clear_round_trip(served: tuple[SimConsole, Path]) -> None:
    console, path = served
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o600)
    resp = await arequest(path, {"cmd": "fault", "kind": "tc-open", "probe": 3, "for_s": 30})
    assert resp == {"ok": True}
    deadline = time.monotonic() + 30
    while True:  # the fault acts at the console's next tick
        state = (await arequest(path, {"cmd": "state"}))["state"]
        if state["probes"][2]["tc_status"] == "open" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.01)
    assert state["injected"][0]["kind"] == "tc-open"
    assert state["injected"][0]["probe"] == 3
    assert 0 < state["injected"][0]["remaining_s"] <= 30
    assert state["probes"][2]["tc_status"] == "open"
    assert state["probes"][2]["measured_tip_c"] is None
    assert state["sim_t_s"] > 1.0  # speed 100
    json.dumps(state)  # JSON-able all the way down
    await arequest(path, {"cmd": "fault", "kind": "temp-offset", "value": -12.5})
    assert {k for k, _, _ in console.injected()} == {"tc-open", "temp-offset"}
    await arequest(path, {"cmd": "clear", "kind": "tc-open"})
    assert [k for k, _, _ in console.injected()] == ["temp-offset"]
    await arequest(path, {"cmd": "clear"})
    assert console.injected() == []
    events = (await arequest(path, {"cmd": "events", "event": "fault_cleared"}))["events"]
    assert [e["kind"] for e in events] == ["tc-open", "temp-offset"]


@pytest.mark.parametrize(
    ("req", "error"),
    [
        ({"cmd": "fault", "kind": "tc-melted"}, "unknown fault kind"),
        ({"cmd": "fault"}, "kind is required"),
        ({"cmd": "fault", "kind": "tc-open", "probe": 42}, "outside 1..8"),
        ({"cmd": "fault", "kind": "tc-open", "probe": "2"}, "probe must be an integer"),
        ({"cmd": "fault", "kind": "comms-slow", "value": "fast"}, "value must be a number"),
        ({"cmd": "fault", "kind": "supply-low", "probe": 1}, "takes no probe"),
        ({"cmd": "clear", "kind": 7}, "kind must be a string"),
        ({"cmd": "reboot"}, "unknown cmd"),
    ],
)
async def test_bad_requests_get_an_error_not_a_crash(
    served: tuple[SimConsole, Path], req: dict, error: str
) -> None:
    _, path = served
    with pytest.raises(ControlError, match=error):
        await arequest(path, req)
    assert (await arequest(path, {"cmd": "state"}))["ok"] is True  # still serving


async def test_garbage_lines_on_one_connection(served: tuple[SimConsole, Path]) -> None:
    _, path = served
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        answers = []
        for line in (b"not json\n", b"[1, 2]\n", b'{"cmd": "state"}\n'):
            writer.write(line)
            await writer.drain()
            answers.append(json.loads(await asyncio.wait_for(reader.readline(), 5.0)))
        assert answers[0]["ok"] is False
        assert "not JSON" in answers[0]["error"]
        assert answers[1] == {"ok": False, "error": "request must be a JSON object"}
        assert answers[2]["ok"] is True
    finally:
        writer.close()
        await writer.wait_closed()


async def test_stale_socket_is_replaced_other_files_are_not(tmp_path: Path) -> None:
    console = SimConsole(load_profile())
    try:
        regular = tmp_path / "not-a-socket"
        regular.write_text("keep me")
        with pytest.raises(FileExistsError):
            await serve_control(console, regular)
        assert regular.read_text() == "keep me"
        path = tmp_path / "ctl.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
            stale.bind(str(path))  # a killed run leaves its socket file behind
        assert path.exists()
        ready = asyncio.Event()
        task = asyncio.create_task(serve_control(console, path, ready))
        await asyncio.wait_for(ready.wait(), 5.0)
        assert (await arequest(path, {"cmd": "state"}))["ok"]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert not path.exists()
    finally:
        console.close()


async def test_unreachable_socket_is_a_control_error(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="control socket"):
        await arequest(tmp_path / "nobody.sock", {"cmd": "state"}, limit_s=1.0)
