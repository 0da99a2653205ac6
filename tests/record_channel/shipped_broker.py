"""mosquitto run with the shipped config/mosquitto files (cryod.conf, cryod-record.conf,
cryod.acl); only paths and ports are changed, and the users get test passwords."""

from __future__ import annotations

import os
import re
from pathlib import Path

from tests.mqtt.broker import SHIPPED_CONFIG, Mosquitto, free_port, install_shipped_files

USERS = {
    "unnamed": "node-pw",  # the record channel's node (the test store's chain node)
    "ws-other": "other-pw",  # another node
    "cryohub": "hub-pw",
    "dashboard": "dash-pw",
    "cryod-demo-c1": "daemon-pw",
}


def password_file(path: Path, user: str) -> Path:
    path.write_text(USERS[user] + "\n")
    os.chmod(path, 0o600)
    return path


def shipped_broker(workdir: Path, pki: dict[str, Path], *, extra: str = "") -> Mosquitto:
    """Not started. ``.port``: the loopback listener; ``.tls_port``: the TLS one;
    ``extra``: more configuration (a bridge) appended."""
    etc = install_shipped_files(workdir / "etc", pki, USERS)
    port, tls_port = free_port(), free_port()
    text = "\n".join((SHIPPED_CONFIG / n).read_text() for n in ("cryod.conf", "cryod-record.conf"))
    text = text.replace("/etc/mosquitto/", f"{etc}/")
    # the test wrapper names its own directory as persistence_location (mosquitto refuses
    # two), so the shipped one goes; ``persistence true`` after the wrapper's false wins
    text, k = re.subn(r"^persistence_location /var/lib/mosquitto/$", "", text, flags=re.M)
    assert k == 1, "the shipped persistence_location changed; update this test"
    text, n = re.subn(r"^listener 8883$", f"listener {tls_port} 127.0.0.1", text, flags=re.M)
    text, m = re.subn(r"^listener 1883 127\.0\.0\.1$", f"listener {port} 127.0.0.1", text,
                      flags=re.M)  # fmt: skip
    assert (n, m) == (1, 1), "the shipped listener lines changed; update this test"
    broker = Mosquitto(workdir / "broker", port=port, config_text=text + "\n" + extra)
    broker.tls_port = tls_port  # type: ignore[attr-defined]
    return broker


def shipped_bridge(central: Mosquitto, pki: dict[str, Path], *, user: str = "unnamed") -> str:
    """The shipped bridge drop-in pointed at ``central``'s TLS listener, as node ``user``."""
    text = (SHIPPED_CONFIG / "cryod-record-bridge.conf").read_text()
    swaps = {
        r"^address .*$": f"address 127.0.0.1:{central.tls_port}",  # type: ignore[attr-defined]
        r"^remote_username .*$": f"remote_username {user}",
        r"^remote_password .*$": f"remote_password {USERS[user]}",
        r"^bridge_cafile .*$": f"bridge_cafile {pki['ca_crt']}",
        r"^bridge_certfile .*$": f"bridge_certfile {pki['client_crt']}",
        r"^bridge_keyfile .*$": f"bridge_keyfile {pki['client_key']}",
    }
    for pattern, line in swaps.items():
        text, n = re.subn(pattern, line, text, flags=re.M)
        assert n == 1, f"the shipped bridge changed ({pattern}); update this test"
    return text
