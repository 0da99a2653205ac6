"""No network listener by default: the daemon's only listening socket is its Unix socket.

Reads the kernel's tables (/proc/net/tcp, tcp6, udp, udp6, unix) and maps
their inodes to the daemon's own file descriptors (/proc/PID/fd), so a
listener opened by any library inside the daemon would show.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.harness import sim_and_daemon

pytestmark = pytest.mark.timeout(120)

TCP_LISTEN = "0A"
UDP_UNCONNECTED = "07"
SO_ACCEPTCON = 0x10000


def socket_inodes(pid: int) -> set[int]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def inet_sockets(inodes: set[int]) -> list[tuple[str, str, str]]:
    """(table, local address, state) of the given inodes in the tcp/udp tables."""
    found = []
    for table in ("tcp", "tcp6", "udp", "udp6"):
        path = Path(f"/proc/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            f = line.split()
            if int(f[9]) in inodes:
                found.append((table, f[1], f[3]))
    return found


def unix_listeners(inodes: set[int]) -> list[str]:
    out = []
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        f = line.split()
        if int(f[6]) in inodes and int(f[3], 16) & SO_ACCEPTCON:
            out.append(f[7] if len(f) > 7 else "<unnamed>")
    return out


def test_no_network_listener_by_default(tmp_path: Path) -> None:
    with sim_and_daemon(tmp_path, speed=20.0) as (sim, d):
        pid = d.proc.pid
        inodes = socket_inodes(pid)
        inet = inet_sockets(inodes)
        listeners = [s for s in inet if s[0].startswith("tcp") and s[2] == TCP_LISTEN]
        udp = [s for s in inet if s[0].startswith("udp")]
        unix = unix_listeners(inodes)
        # positive controls: the tables are read right (the sim listens; the daemon is a client)
        sim_listen = [
            s
            for s in inet_sockets(socket_inodes(sim.proc.pid))
            if s[0].startswith("tcp") and s[2] == TCP_LISTEN
        ]
        daemon_tcp_clients = [s for s in inet if s[0].startswith("tcp") and s[2] == "01"]
    assert sim_listen, "could not see the simulator's Modbus TCP listener"
    assert daemon_tcp_clients, "could not see the daemon's Modbus TCP client connection"
    assert listeners == [], f"the daemon listens on the network: {listeners}"
    assert udp == [], f"the daemon has UDP sockets: {udp}"
    assert unix == [str(d.socket)], unix
    print(f"daemon pid {pid}: {len(inodes)} sockets, tcp listeners 0, udp 0, unix {unix}")
