"""The control socket is refused to a user outside its group, twice over.

The client runs as ``nobody`` (a real other user: a forked child that drops
to nobody's uid and gid; the tests run as root). With the socket's mode 0660 the
operating system refuses the connection; with the socket chmod 0666 (a
mistake the second layer exists for) the daemon's SO_PEERCRED check refuses
it with ``unauthorised``. ``nobody`` with the socket's group is let in
(positive control: the rule is the group, not "root only").
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pwd
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import DEMO_PROCEDURE, Daemon, Sim, daemon_config

from .rig import actions, fingerprint, valve_events

pytestmark = pytest.mark.timeout(120)

NOBODY = pwd.getpwnam("nobody")


@pytest.fixture(scope="module")
def rig() -> Iterator[tuple[Sim, Daemon, Path]]:
    if os.geteuid() != 0:
        pytest.fail("these tests switch users: run them as root (as CI does)")
    # pytest's tmp dirs are 0700; the socket's own mode is what is under test here
    wd = Path(tempfile.mkdtemp(prefix="cryod-perm-"))
    os.chmod(wd, 0o755)
    sim = Sim(wd, speed=20.0)
    d = None
    try:
        d = Daemon(daemon_config(wd, sim, speed=20.0), wd)
        d.call("procedure_open", DEMO_PROCEDURE)
        yield sim, d, wd
    finally:
        if d is not None:
            d.stop()
        sim.stop()
        shutil.rmtree(wd, ignore_errors=True)


def _as_nobody(sock: Path, cmd: str, args: dict[str, Any], *, gid: int = NOBODY.pw_gid) -> Any:
    """One control request from a child process running as ``nobody``.

    A forked child drops to nobody itself (setgroups, setgid, setuid): the
    venv's interpreter lives under /root (mode 0700), so ``nobody`` could not
    exec ``cryoctl``; the wire request is the one cryoctl sends.
    Returns the daemon's answer, or ``{"errno": N}`` if the OS refused.
    """
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no pytest, no asyncio, only os and socket calls
        code = 0
        try:
            os.close(rfd)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(NOBODY.pw_uid)
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(10)
                    s.connect(str(sock))
                    # a refused peer is answered and closed before it sends: read anyway
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        s.sendall(json.dumps({"id": 1, "cmd": cmd, "args": args}).encode() + b"\n")
                    data = b""
                    while not data.endswith(b"\n"):
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                out: Any = {"uid": os.getuid(), "answer": json.loads(data) if data else None}
            except OSError as exc:
                out = {"uid": os.getuid(), "errno": exc.errno, "error": str(exc)}
            os.write(wfd, json.dumps(out).encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as fh:
        data = fh.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, data
    result = json.loads(data)
    assert result["uid"] == NOBODY.pw_uid
    return result


def test_socket_refused_to_a_user_outside_its_group(rig: tuple[Sim, Daemon, Path]) -> None:
    sim, d, wd = rig
    st = d.socket.stat()
    assert stat.S_IMODE(st.st_mode) == 0o660, oct(st.st_mode)
    assert st.st_gid != NOBODY.pw_gid
    before, valves, n = fingerprint(d), len(valve_events(sim)), len(actions(wd / "cryod.db"))
    # layer 1: the operating system refuses (mode 0660, nobody is not in the group)
    out = _as_nobody(d.socket, "freeze", {"probe": 1, "seconds": 30})
    assert out.get("errno") == errno.EACCES, out
    # layer 2: a socket left world-writable by mistake; the daemon checks the peer itself
    os.chmod(d.socket, 0o666)
    try:
        for cmd, args in (("status", {}), ("freeze", {"probe": 1, "seconds": 30}), ("abort", {})):
            out = _as_nobody(d.socket, cmd, args)
            ans = out.get("answer")
            assert ans is not None, (cmd, out)
            assert ans["ok"] is False, (cmd, out)
            assert ans["error"]["code"] == "unauthorised", (cmd, out)
            assert f"uid={NOBODY.pw_uid}" in ans["error"]["message"], (cmd, out)
        # positive control: nobody *with the socket's group* is let in by the same rule
        out = _as_nobody(d.socket, "status", {}, gid=st.st_gid)
        assert out["answer"]["ok"] is True, out
        assert out["answer"]["result"]["consoles"][0]["id"] == "c1"
    finally:
        os.chmod(d.socket, 0o660)
    d.after_polls()  # a valve commanded by mistake shows by now
    assert fingerprint(d) == before
    assert len(valve_events(sim)) == valves
    assert not any(a["accepted"] for a in actions(wd / "cryod.db")[n:])


def test_an_unauthorised_attempt_leaves_a_trace(rig: tuple[Sim, Daemon, Path]) -> None:
    _sim, d, wd = rig
    os.chmod(d.socket, 0o666)
    try:
        out = _as_nobody(d.socket, "freeze", {"probe": 1, "seconds": 30})
    finally:
        os.chmod(d.socket, 0o660)
    assert out["answer"]["error"]["code"] == "unauthorised", out

    def traced() -> bool:
        log = d.log.read_text()
        recorded = any("unauthorised" in (a["reason"] or "") for a in actions(wd / "cryod.db"))
        return recorded or ("unauthorised" in log and f"{NOBODY.pw_uid}" in log)

    deadline = time.monotonic() + 30
    while not traced():
        assert time.monotonic() < deadline, "no trace of the unauthorised attempt"
        time.sleep(0.05)
