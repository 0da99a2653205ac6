"""mosquitto run with the shipped config/mosquitto files (cryod.conf, cryod-record.conf,
cryod.acl); only paths and ports are changed, and the users get test passwords."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from tests.conftest import require_binary
from tests.mqtt.broker import Mosquitto, free_port

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "config" / "mosquitto"
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


def shipped_broker(workdir: Path, pki: dict[str, Path]) -> Mosquitto:
    """Not started. ``.port``: the loopback listener; ``.tls_port``: the TLS one."""
    passwd_tool = require_binary("mosquitto_passwd")
    etc = workdir / "etc"
    (etc / "certs").mkdir(parents=True)
    for name in ("ca.crt", "server.crt", "server.key"):
        shutil.copy(pki[name.replace(".", "_")], etc / "certs" / name)
    shutil.copy(SAMPLE / "cryod.acl", etc / "cryod.acl")
    passwd = etc / "cryod.passwd"
    for i, (user, pw) in enumerate(USERS.items()):
        flags = ["-c"] if i == 0 else []
        subprocess.run([passwd_tool, *flags, "-b", str(passwd), user, pw], check=True, timeout=10)
    os.chmod(passwd, 0o600)
    port, tls_port = free_port(), free_port()
    text = (SAMPLE / "cryod.conf").read_text() + "\n" + (SAMPLE / "cryod-record.conf").read_text()
    text = text.replace("/etc/mosquitto/", f"{etc}/")
    # the test wrapper names its own directory as persistence_location (mosquitto refuses
    # two), so the shipped one goes; ``persistence true`` after the wrapper's false wins
    text, k = re.subn(r"^persistence_location /var/lib/mosquitto/$", "", text, flags=re.M)
    assert k == 1, "the shipped persistence_location changed; update this test"
    text, n = re.subn(r"^listener 8883$", f"listener {tls_port} 127.0.0.1", text, flags=re.M)
    text, m = re.subn(r"^listener 1883 127\.0\.0\.1$", f"listener {port} 127.0.0.1", text,
                      flags=re.M)  # fmt: skip
    assert (n, m) == (1, 1), "the shipped listener lines changed; update this test"
    broker = Mosquitto(workdir / "broker", port=port, config_text=text)
    broker.tls_port = tls_port  # type: ignore[attr-defined]
    return broker
