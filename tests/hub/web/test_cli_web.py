"""``cryohub web``: bad options are one line and exit 2, a database not at head exit 3,
and a real process serves its pages on loopback and stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest

from cryod.hub.cli import main
from tests.mqtt.broker import free_port


def write_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "cryohub.toml"
    cfg.write_text(
        f'[collector]\nid = "hub-web"\n\n[database]\nurl = "sqlite:///{tmp_path / "hub.db"}"\n\n'
        '[anchors]\nfile = "anchors/cryohub.jsonl"\n'
    )
    (tmp_path / "anchors").mkdir(exist_ok=True)
    return cfg


def test_bad_options_and_an_unmigrated_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path)
    assert main(["web", "--config", str(cfg), "--timezone", "Mars/Olympus"]) == 2
    assert "not an IANA time zone" in capsys.readouterr().err
    assert main(["web", "--config", str(cfg), "--idle-min", "0"]) == 2
    assert main(["web", "--config", str(cfg), "--port", "70000"]) == 2
    assert main(["web", "--config", str(cfg)]) == 3  # not migrated
    err = capsys.readouterr().err
    assert "cryohub migrate" in err
    assert "Traceback" not in err


IDLE_WHY = "give minutes more than 0, at most 1440"


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["--port", "70000"], "cryohub: --port 70000: give a port from 1 to 65535"),
        (["--port", "0"], "cryohub: --port 0: give a port from 1 to 65535"),
        (["--idle-min", "0"], f"cryohub: --idle-min 0: {IDLE_WHY}"),
        (["--idle-min", "nan"], f"cryohub: --idle-min nan: {IDLE_WHY}"),
        (["--idle-min", "1441"], f"cryohub: --idle-min 1441: {IDLE_WHY}"),
    ],
)
def test_a_bad_port_or_idle_time_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], line: str
) -> None:
    cfg = write_config(tmp_path)
    assert main(["web", "--config", str(cfg), *argv]) == 2
    out = capsys.readouterr()
    assert out.err.splitlines() == [line]
    assert out.out == ""


def test_an_address_it_cannot_listen_on_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked before the database or the app: no uvicorn log line, no URL printed."""
    cfg = write_config(tmp_path)
    assert main(["migrate", "--config", str(cfg)]) == 0
    capsys.readouterr()
    assert main(["web", "--config", str(cfg), "--host", "256.1.1.1"]) == 2
    out = capsys.readouterr()
    assert out.err.strip().startswith("cryohub: --host '256.1.1.1': not an address of this machine")
    assert "http://" not in out.out
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["web", "--config", str(cfg), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"cryohub: cannot listen on 127.0.0.1:{port}: Address already in use"


@pytest.mark.timeout(300)
def test_cryohub_web_serves_on_loopback_and_stops_on_sigterm(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    assert main(["migrate", "--config", str(cfg)]) == 0
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cryod.hub.cli", "web", "--config", str(cfg), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 120.0
        while True:
            try:
                r = httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=5.0)
                break
            except httpx2.TransportError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "cryohub web never answered"
                time.sleep(0.1)  # polling for the port to open, not standing in for it
        assert r.text == "ok"
        r = httpx2.get(f"http://127.0.0.1:{port}/board", follow_redirects=False)
        assert r.status_code == 303
        assert "server" not in r.headers  # no software banner
        assert r.headers["x-frame-options"] == "DENY"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    # uvicorn shuts down gracefully, then re-raises the signal it caught (systemd: clean)
    assert proc.returncode in (0, -signal.SIGTERM), err
    assert b"Traceback" not in err
    assert f"http://127.0.0.1:{port}/" in out.decode()
