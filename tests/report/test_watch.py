"""The live view: rendering a status, the trend, dumb terminals, a daemon that goes away.

The end-to-end test runs ``run_watch`` in a subprocess against a real control
socket (``ControlServer``) and stops it with SIGINT, as Ctrl-C would.
"""

from __future__ import annotations

import asyncio
import copy
import io
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from cryod.daemon.control import ControlServer, Peer
from cryod.daemon.watch import Trends, render_plain, render_status, sparkline, watch

STATUS: dict[str, Any] = {
    "version": "0.1.0",
    "session": 3,
    "uptime_s": 12.5,
    "site": "demo",
    "consoles": [
        {
            "id": "demo",
            "driver": "modbus-tcp",
            "link": {
                "connected": True,
                "state": "up",
                "snapshot_age_s": 0.0,
                "stale_after_s": 0.25,
                "transactions": 100,
                "timeouts": 2,
                "retries": 1,
                "bad_frames": 5,
                "reconnects": 1,
                "last_error": None,
            },
            "poll": {"hz": 20.0, "late_polls": 0, "last_poll_age_ms": 12.0},
            "engine": {
                "state": "freezing",
                "phase": "freeze",
                "step": 1,
                "steps": 2,
                "remaining_s": 42.0,
                "protocol": "mortons-neuroma",
                "probes": [1, 2],
            },
            "snapshot": {
                "ts_ms": 1764000000000,
                "supply_kpa": 27000.0,
                "supply_validity": "valid",
                "cylinder_kpa": 38000.0,
                "cylinder_validity": "valid",
                "skin_c": 35.1,
                "skin_validity": "valid",
                "master_open": True,
                "lease": {"armed": True, "timeout_ms": 500, "expired": False, "expiry_count": 0},
                "faults": [],
                "probes": [
                    {
                        "probe": 1,
                        "tip_c": -120.3,
                        "tip_validity": "valid",
                        "return_kpa": 90.0,
                        "freeze_open": True,
                        "thaw_on": False,
                    },
                    {
                        "probe": 2,
                        "tip_c": None,
                        "tip_validity": "stale",
                        "return_kpa": 88.0,
                        "freeze_open": True,
                        "thaw_on": False,
                    },
                ],
            },
            "alarms": [
                {
                    "id": 7,
                    "code": "TIP_TOO_COLD",
                    "priority": "high",
                    "probe": 1,
                    "message": "tip below the floor",
                    "raised_at": "2026-11-25T22:00:00Z",
                    "acked": False,
                    "latched": True,
                },
                {
                    "id": 8,
                    "code": "SUPPLY_LOW",
                    "priority": "medium",
                    "probe": None,
                    "message": "supply pressure low",
                    "raised_at": "2026-11-25T22:00:01Z",
                    "acked": True,
                    "latched": False,
                },
                {
                    "id": 9,
                    "code": "SKIN_WARMING",
                    "priority": "low",
                    "probe": None,
                    "message": "skin warming on",
                    "raised_at": "2026-11-25T22:00:02Z",
                    "acked": True,
                    "latched": False,
                },
            ],
            "procedure": {"id": 3, "open": True},
        }
    ],
    "writer": {"healthy": True, "queued": 0, "dropped": 0},
    "mqtt": None,
}


def status_at(i: int, tip_c: float | None, *, validity: str = "valid") -> dict[str, Any]:
    s = copy.deepcopy(STATUS)
    snap = s["consoles"][0]["snapshot"]
    snap["ts_ms"] += 250 * i
    snap["probes"][0]["tip_c"] = tip_c if validity in ("valid", "questionable") else None
    snap["probes"][0]["tip_validity"] = validity
    return s


def recording(*, terminal: bool, width: int = 130) -> Console:
    return Console(
        record=True,
        force_terminal=terminal,
        color_system="standard" if terminal else None,
        width=width,
        file=io.StringIO(),
    )


def text_of(renderable: Any, *, terminal: bool) -> str:
    console = recording(terminal=terminal)
    console.print(renderable)
    return console.export_text(styles=False)


# ---- rendering ------------------------------------------------------------------------
@pytest.mark.parametrize("terminal", [True, False])
def test_status_shows_probes_alarms_and_countdown(terminal: bool) -> None:
    text = text_of(render_status(STATUS), terminal=terminal)
    assert "-120.3" in text
    assert "stale" in text  # a stale reading is shown as its validity, not a number
    for code in ("TIP_TOO_COLD", "SUPPLY_LOW", "SKIN_WARMING"):
        assert code in text
    assert "left 00:42" in text
    assert "FREEZING" in text
    assert "supply 27000 kPa" in text
    assert "cylinder 38000 kPa" in text
    assert "master valve OPEN" in text
    assert "link up" in text
    assert "timeouts 2" in text
    assert "bad frames 5" in text
    assert "reconnects 1" in text
    assert "lease armed" in text
    assert "procedure #3 open" in text


def test_alarm_colours_follow_priority() -> None:
    console = recording(terminal=True)
    colours = {}
    for seg in console.render(render_status(STATUS)):
        for code in ("TIP_TOO_COLD", "SUPPLY_LOW", "SKIN_WARMING"):
            if seg.text == code and seg.style is not None and seg.style.color is not None:
                colours[code] = seg.style.color.name
    assert colours == {"TIP_TOO_COLD": "red", "SUPPLY_LOW": "yellow", "SKIN_WARMING": "cyan"}


def test_missing_keys_and_link_down_do_not_break_the_view() -> None:
    down = copy.deepcopy(STATUS)
    console = down["consoles"][0]
    console["snapshot"] = None
    console["link"] = {"connected": False, "last_error": "connection refused"}
    del console["engine"]
    del console["alarms"]
    text = text_of(render_status(down), terminal=False)
    assert "no data from the console" in text
    assert "link DOWN" in text
    assert "connection refused" in text
    assert "alarms: none" in text
    assert "left --:--" in text
    bare = text_of(render_status({"consoles": [{}]}), terminal=False)
    assert "console ?" in bare
    assert "no consoles configured" in text_of(render_status({}), terminal=False)


def test_plain_text_has_no_escape_codes() -> None:
    text = render_plain(STATUS, width=100)
    assert "\x1b" not in text
    assert "-120.3" in text
    assert "TIP_TOO_COLD" in text
    assert all(ord(ch) < 128 for ch in text)  # ASCII boxes and trend


# ---- the trend -------------------------------------------------------------------------
def test_sparkline_scales_to_the_window_and_keeps_gaps() -> None:
    assert sparkline([0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0]) == "▁▂▃▄▅▆▇█"
    flat = sparkline([5.0, None, 5.0])  # flat: the middle, not noise blown up
    assert flat[0] == flat[2]
    assert flat[0] in "▄▅"
    assert flat[1] == " "
    assert sparkline([None, None]) == "  "
    assert sparkline([-100.0, 0.0], ascii_only=True) == "_#"


def test_a_sequence_of_statuses_builds_the_trend() -> None:
    trends = Trends()
    temps = [30.0 - 5.0 * i for i in range(40)]
    for i, t in enumerate(temps):
        status = status_at(i, t)
        trends.add_status(status)
        trends.add_status(status)  # the same snapshot again: no new point
    series = trends.series("demo", 1)
    assert series == temps[-30:]
    assert trends.rate_c_per_s("demo", 1) == pytest.approx(-20.0)  # 5 C per 250 ms
    trends.add_status(status_at(41, -999.0, validity="invalid"))
    assert trends.series("demo", 1)[-1] is None
    line = sparkline(trends.series("demo", 1))
    assert line[0] == "█"
    assert line[-2] == "▁"
    assert line[-1] == " "
    text = text_of(render_status(status_at(41, -175.0), trends), terminal=True)
    assert line[:-1] in text
    assert "-20.0" in text  # C/s


# ---- the watch loop --------------------------------------------------------------------
class Source:
    """A daemon status source: answers, or raises like control.call when it is gone."""

    def __init__(self, *, fail_from: int | None = None, fail_until: int | None = None) -> None:
        self.calls = 0
        self.times: list[float] = []
        self.fail_from = fail_from
        self.fail_until = fail_until

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        self.times.append(time.monotonic())
        failing = self.fail_from is not None and self.calls >= self.fail_from
        if failing and (self.fail_until is None or self.calls < self.fail_until):
            raise ConnectionRefusedError(111, "Connection refused")
        return status_at(self.calls, -100.0 - self.calls)


async def test_once_with_an_unreachable_daemon_says_so_and_returns() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    code = await asyncio.wait_for(
        watch(Source(fail_from=1), console=console, once=True), timeout=5.0
    )
    assert code == 1
    assert "daemon unreachable: ConnectionRefusedError" in out.getvalue()
    assert "retrying" in out.getvalue()


async def test_once_with_a_hung_daemon_times_out() -> None:
    async def hung() -> dict[str, Any]:
        await asyncio.sleep(30)
        return {}

    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=120)
    started = time.monotonic()
    code = await watch(hung, console=console, once=True, timeout_s=0.3)
    assert code == 1
    assert time.monotonic() - started < 2.0
    assert "daemon unreachable: no answer (timed out)" in out.getvalue()


async def test_a_cancel_landing_with_the_answer_ends_the_view() -> None:
    """Ctrl-C (a cancel of the main task) in the same loop pass as the daemon's answer
    ends the view. ``asyncio.wait_for`` on 3.11 returned the answer and dropped the
    cancel, and the view went on polling until a second Ctrl-C."""
    loop = asyncio.get_running_loop()
    answers: list[asyncio.Future[dict[str, Any]]] = []
    calls = 0

    async def source() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        answer: asyncio.Future[dict[str, Any]] = loop.create_future()
        answers.append(answer)
        return await answer

    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=120)
    task = asyncio.create_task(watch(source, console=console, refresh_hz=50.0))
    deadline = time.monotonic() + 10.0
    while not answers and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert answers, "the view never asked the daemon"
    answers[0].set_result(status_at(1, -101.0))
    task.cancel()  # the same pass: the answer and Ctrl-C arrive together
    try:
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), timeout=10.0)
    finally:
        for answer in answers[1:]:  # the old code polled on: release it to a second cancel
            answer.cancel()
        task.cancel()
    assert calls == 1  # no poll after the cancel


async def test_once_renders_the_status() -> None:
    out = io.StringIO()
    code = await watch(Source(), console=Console(file=out, force_terminal=True), once=True)
    assert code == 0
    assert "-101.0" in out.getvalue()


async def test_dumb_terminal_prints_plain_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "dumb")
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)  # a terminal, but a dumb one
    source = Source()
    task = asyncio.create_task(watch(source, console=console, refresh_hz=5.0))
    deadline = time.monotonic() + 15.0
    while out.getvalue().count("--- ") < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    text = out.getvalue()
    assert "\x1b" not in text
    blocks = text.count("--- ")
    assert blocks == source.calls
    assert blocks >= 3
    assert f"-{100 + source.calls}.0" in text


async def test_live_view_refreshes_and_survives_the_daemon_going_away() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="standard", width=120)
    source = Source(fail_from=4, fail_until=7)
    task = asyncio.create_task(watch(source, console=console, refresh_hz=8.0))
    deadline = time.monotonic() + 30.0
    lag_s = 0.0  # how late this loop wakes on this machine now: the slack for the cadence
    while source.calls < 9 and time.monotonic() < deadline:
        asked = time.monotonic()
        await asyncio.sleep(0.05)
        lag_s = max(lag_s, time.monotonic() - asked - 0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert source.calls >= 9
    text = out.getvalue()
    assert "\x1b[" in text  # drawn in place
    assert "daemon unreachable" in text
    assert "Connection refused" in text
    assert "-103.0" in text  # before it went away
    assert f"-{100 + source.calls - 1}.0" in text or f"-{100 + source.calls}.0" in text
    # at least twice a second while the daemon answers
    ok_gaps = [b - a for a, b in zip(source.times[:2], source.times[1:3], strict=True)]
    assert max(ok_gaps) < 0.5 + lag_s


# ---- end to end: run_watch against a real control socket, stopped with SIGINT ---------
async def _read_until(stream: asyncio.StreamReader, needle: str, timeout_s: float) -> str:
    seen = ""
    deadline = time.monotonic() + timeout_s
    while needle not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{needle!r} not seen; output so far:\n{seen}")
        try:
            chunk = await asyncio.wait_for(stream.read(4096), remaining)
        except TimeoutError:
            continue
        if not chunk:
            raise AssertionError(f"output ended before {needle!r}:\n{seen}")
        seen += chunk.decode()
    return seen


async def test_run_watch_against_a_control_socket(tmp_path: Path) -> None:
    async def status(args: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return STATUS

    sock = tmp_path / "cryod.sock"
    server = ControlServer(sock, {"status": status}, mode=0o600)
    await server.start()
    code = "import sys; from cryod.daemon.watch import run_watch; sys.exit(run_watch(sys.argv[1]))"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        str(sock),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "120"},
        # a shell that starts the suite in the background ignores SIGINT, and the child
        # inherits that: Ctrl-C must reach cryoctl watch as it does in a terminal
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert proc.stdout is not None
        first = await _read_until(proc.stdout, "TIP_TOO_COLD", 20.0)
        assert "-120.3" in first
        assert "\x1b" not in first  # a pipe is not a terminal: plain text
        await server.close()
        await _read_until(proc.stdout, "daemon unreachable", 10.0)
        proc.send_signal(signal.SIGINT)
        rc = await asyncio.wait_for(proc.wait(), 10.0)
        assert proc.stderr is not None
        err = (await proc.stderr.read()).decode()
        assert rc == 0, err
        assert "Traceback" not in err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await server.close()
