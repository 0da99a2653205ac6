"""The ``cryosim`` command, run as a real subprocess."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cryod import __version__
from cryod.simulators.control import ControlError, request

_SCRIPT = Path(sys.executable).with_name("cryosim")
CRYOSIM = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "cryod.simulators.cli"]


def cryosim(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CRYOSIM, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


class Served:
    """A running ``cryosim serve`` with its printed lines."""

    def __init__(self, args: list[str], ready_lines: int) -> None:
        self.proc = subprocess.Popen(
            [*CRYOSIM, "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.lines: list[str] = []
        self._buf = b""
        deadline = time.monotonic() + 20.0
        while len(self.lines) < ready_lines:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.stop()
                raise AssertionError(f"cryosim serve did not start: {self.lines} {self.err}")
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if r:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                self._buf += chunk
                *done, self._buf = self._buf.split(b"\n")
                self.lines += [d.decode() for d in done]
        self.err = ""

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        self.err = err.decode()
        return self.proc.returncode


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Served, Path, Path]]:
    sock = tmp_path / "ctl.sock"
    events = tmp_path / "events.jsonl"
    s = Served(
        ["--control", str(sock), "--speed", "50", "--seed", "3", "--event-log", str(events)], 2
    )
    try:
        yield s, sock, events
    finally:
        rc = s.stop()
    assert rc == 0, s.err
    assert not sock.exists()
    assert json.loads(events.read_text().splitlines()[-1])["event"] == "power_off"


def test_help_and_version() -> None:
    out = cryosim("--help")
    assert out.returncode == 0
    for word in ("serve", "fault", "clear", "state", "scenario"):
        assert word in out.stdout
    serve = cryosim("serve", "--help")
    for opt in (
        "--profile",
        "--modbus-tcp",
        "--modbus-rtu",
        "--serial",
        "--speed",
        "--seed",
        "--control",
        "--event-log",
    ):
        assert opt in serve.stdout
    fault = cryosim("fault", "--help")
    assert "valve-stuck-open" in fault.stdout
    assert "--for" in fault.stdout
    version = cryosim("--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"cryosim {__version__}"


def test_usage_errors() -> None:
    assert cryosim("fault", "--control", "/nonexistent.sock", "tc-melted").returncode == 2
    assert cryosim("serve", "--speed", "0").returncode == 2
    assert cryosim("serve", "--modbus-tcp", "nohost").returncode == 2
    missing = cryosim("serve", "--profile", "/nonexistent/profile.toml")
    assert missing.returncode == 2
    assert "/nonexistent/profile.toml: file not found" in missing.stderr
    nosock = cryosim("state", "--control", "/nonexistent.sock")
    assert nosock.returncode == 1
    assert "control socket" in nosock.stderr
    env = {k: v for k, v in os.environ.items() if k != "CRYOSIM_CONTROL"}
    unset = subprocess.run([*CRYOSIM, "state"], capture_output=True, text=True, env=env, timeout=30)
    assert unset.returncode == 1
    assert "--control" in unset.stderr


def test_state_fault_clear_against_a_served_console(served: tuple[Served, Path, Path]) -> None:
    s, sock, events = served
    assert s.lines[0].startswith(f"cryosim {__version__}: CRYOSIM-8 serial SIM00003")
    assert s.lines[1] == f"control listening on {sock}"
    state = cryosim("state", "--control", str(sock))
    assert state.returncode == 0, state.stderr
    data = json.loads(state.stdout)
    assert data["model"] == "CRYOSIM-8"
    assert data["speed"] == 50.0
    assert len(data["probes"]) == 8
    assert data["lease"]["armed"] is False
    out = cryosim(
        "fault",
        "--control",
        str(sock),
        "temp-offset",
        "--probe",
        "2",
        "--value",
        "-30",
        "--for",
        "60",
    )
    assert out.returncode == 0, out.stderr
    out = cryosim("fault", "--control", str(sock), "comms-slow", "--value", "250")
    assert out.returncode == 0, out.stderr
    injected = {i["kind"]: i for i in request(sock, {"cmd": "state"})["state"]["injected"]}
    assert injected["temp-offset"]["probe"] == 2
    assert injected["temp-offset"]["value"] == -30.0
    assert injected["comms-slow"]["value"] == 250.0
    bad = cryosim("fault", "--control", str(sock), "tc-open", "--probe", "12")
    assert bad.returncode == 1
    assert "outside 1..8" in bad.stderr
    assert cryosim("clear", "--control", str(sock), "comms-slow").returncode == 0
    kinds = [i["kind"] for i in request(sock, {"cmd": "state"})["state"]["injected"]]
    assert kinds == ["temp-offset"]
    assert cryosim("clear", "--control", str(sock)).returncode == 0
    assert request(sock, {"cmd": "state"})["state"]["injected"] == []
    with pytest.raises(ControlError, match="unknown fault kind"):
        request(sock, {"cmd": "fault", "kind": "nope"})
    names = [json.loads(line)["event"] for line in events.read_text().splitlines()]
    assert names.count("fault_injected") == 2
    assert names.count("fault_cleared") == 2


def test_scenario_plays_against_a_served_console(
    served: tuple[Served, Path, Path], tmp_path: Path
) -> None:
    _, sock, _ = served
    script = tmp_path / "scenario.toml"
    script.write_text(
        'description = "offset then silence"\n'
        '[[step]]\nat_s = 0.0\naction = "fault"\nkind = "temp-offset"\nprobe = 1\nvalue = -40\n'
        '[[step]]\nat_s = 0.4\naction = "clear"\nkind = "temp-offset"\n'
        '[[step]]\nat_s = 0.2\naction = "fault"\nkind = "comms-silent"\nfor_s = 30\n'
    )
    t0 = time.monotonic()
    out = cryosim("scenario", str(script), "--control", str(sock))
    assert out.returncode == 0, out.stderr
    assert time.monotonic() - t0 >= 0.4
    played = [line.split("s  ", 1)[1] for line in out.stdout.splitlines()]
    assert played == [
        "fault temp-offset probe=1 value=-40",
        "fault comms-silent for_s=30",
        "clear temp-offset",
    ]
    state = request(sock, {"cmd": "state"})["state"]
    assert [i["kind"] for i in state["injected"]] == ["comms-silent"]
    dry = cryosim("scenario", str(script))
    assert dry.returncode == 0
    assert "valid, 3 steps" in dry.stdout


def test_invalid_scenario_names_file_key_and_reason(tmp_path: Path) -> None:
    script = tmp_path / "bad.toml"
    script.write_text('[[step]]\nat_s = -1\naction = "fault"\nkind = "tc-open"\nprobez = 1\n')
    out = cryosim("scenario", str(script))
    assert out.returncode == 2
    assert f"{script}: step.0.at_s:" in out.stderr
    assert f"{script}: step.0.probez: unknown key" in out.stderr
    script.write_text('[[step]]\nat_s = 1\naction = "fault"\nkind = "tc-melted"\n')
    out = cryosim("scenario", str(script))
    assert out.returncode == 2
    assert "tc-melted" in out.stderr
    script.write_text("[[step]\n")
    out = cryosim("scenario", str(script))
    assert out.returncode == 2
    assert "not valid TOML" in out.stderr


def test_serve_with_wire_listeners_picks_a_free_port_and_cleans_up(tmp_path: Path) -> None:
    rtu, line = tmp_path / "ttyRTU", tmp_path / "ttyLINE"
    s = Served(
        [
            "--modbus-tcp",
            "127.0.0.1:0",
            "--modbus-rtu",
            str(rtu),
            "--serial",
            str(line),
            "--speed",
            "20",
        ],
        4,
    )
    try:
        tcp = next(x for x in s.lines if x.startswith("modbus-tcp listening on 127.0.0.1:"))
        port = int(tcp.rsplit(":", 1)[1])
        assert port > 0
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        assert f"modbus-rtu listening on {rtu}" in s.lines
        assert f"serial listening on {line}" in s.lines
        assert rtu.is_symlink()
        assert os.path.realpath(line).startswith("/dev/pts/")
    finally:
        rc = s.stop()
    assert rc == 0, s.err
    assert not rtu.is_symlink()
    assert not line.is_symlink()


def test_run_scenario_keeps_its_own_timeline() -> None:
    from cryod.simulators.scenario import Scenario, run_scenario

    now = [0.0]
    sent: list[tuple[float, dict]] = []

    def sleep(s: float) -> None:
        now[0] += s

    def send(req: dict) -> dict:
        sent.append((now[0], req))
        now[0] += 0.25  # a slow control socket must not shift later steps
        return {"ok": True}

    scenario = Scenario.model_validate(
        {
            "step": [
                {"at_s": 1.0, "action": "fault", "kind": "tc-open", "probe": 2},
                {"at_s": 0.0, "action": "fault", "kind": "supply-leak", "value": 80},
                {"at_s": 1.1, "action": "clear"},
            ]
        }
    )
    assert run_scenario(scenario, send, clock=lambda: now[0], sleep=sleep, echo=lambda _: None) == 3
    assert [t for t, _ in sent] == [0.0, 1.0, 1.25]
    assert sent[0][1] == {
        "cmd": "fault",
        "kind": "supply-leak",
        "probe": None,
        "value": 80.0,
        "for_s": None,
    }
    assert sent[2][1] == {"cmd": "clear", "kind": None}
