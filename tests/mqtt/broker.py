"""A real mosquitto per test, on a free 127.0.0.1 port or a unix socket.

Never the system broker on 1883: each ``Mosquitto`` writes its own config
into a temporary directory, logs everything to a file there (so tests can
read what clients did, e.g. that cryod never subscribed), and is terminated
and waited for on ``stop()``. ``start()`` can be called again on the same
port after ``stop()`` to simulate a broker restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt

from tests.conftest import require_binary


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    """One broker process. ``extra`` is appended to the listener section of the config."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        unix_socket: Path | None = None,
        extra: str = "",
        anonymous: bool = True,
        config_text: str | None = None,
        persistence: bool = False,
    ) -> None:
        self.binary = require_binary("mosquitto")
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.unix_socket = unix_socket
        self.port = port if port is not None else (0 if unix_socket else free_port())
        self.log_path = self.dir / "mosquitto.log"
        self.conf_path = self.dir / "mosquitto.conf"
        self.proc: subprocess.Popen[bytes] | None = None
        if config_text is None:
            listener = (
                f"listener 0 {unix_socket}" if unix_socket else f"listener {self.port} 127.0.0.1"
            )
            config_text = (
                f"{listener}\nallow_anonymous {'true' if anonymous else 'false'}\n{extra}\n"
            )
        self.conf_path.write_text(
            "# written by tests/mqtt/broker.py\n"
            "user root\n"  # as root, mosquitto would otherwise drop to the mosquitto user
            f"persistence {'true' if persistence else 'false'}\n"
            f"persistence_location {self.dir}/\n"
            f"log_dest file {self.log_path}\n"
            "log_type all\n"
            "connection_messages true\n" + config_text
        )

    def start(self, timeout_s: float = 20.0) -> None:
        assert self.proc is None, "already running"
        mark = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                raise RuntimeError(f"mosquitto exited with {code}: {self.log()[mark:]}")
            if " running" in self.log()[mark:] and self._listening():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not start: {self.log()[mark:]}")

    def _listening(self) -> bool:
        if self.unix_socket is not None:
            return self.unix_socket.exists()
        # read the kernel's listening table instead of connecting (a probe would be a client)
        want = f"0100007F:{self.port:04X}"
        for table in ("/proc/net/tcp",):
            with open(table) as fh:
                for line in fh.readlines()[1:]:
                    fields = line.split()
                    if fields[1] == want and fields[3] == "0A":
                        return True
        return False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self.unix_socket is not None:
            with contextlib.suppress(FileNotFoundError):
                self.unix_socket.unlink()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@contextlib.contextmanager
def running_broker(workdir: Path, **kwargs: object) -> Iterator[Mosquitto]:
    broker = Mosquitto(workdir, **kwargs)  # type: ignore[arg-type]
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def locked_broker(
    workdir: Path, users: dict[str, str], *, persistence: bool = False
) -> tuple[Mosquitto, dict[str, Path]]:
    """A broker (not started) on a free port that wants a password (``users``: name ->
    password) AND a client certificate of the ``make_pki`` CA, over TLS; and that PKI."""
    passwd_tool = require_binary("mosquitto_passwd")
    pki = make_pki(workdir / "pki")
    passwd = workdir / "mosquitto.passwd"
    for i, (user, pw) in enumerate(users.items()):
        flags = ["-c"] if i == 0 else []
        subprocess.run([passwd_tool, *flags, "-b", str(passwd), user, pw], check=True, timeout=10)
    port = free_port()
    broker = Mosquitto(
        workdir / "mq",
        port=port,
        persistence=persistence,
        config_text=(
            f"per_listener_settings false\nallow_anonymous false\npassword_file {passwd}\n"
            f"listener {port} 127.0.0.1\ncafile {pki['ca_crt']}\ncertfile {pki['server_crt']}\n"
            f"keyfile {pki['server_key']}\nrequire_certificate true\n"
        ),
    )
    return broker, pki


#: the shipped broker configuration (docs/mqtt.md)
SHIPPED_CONFIG = Path(__file__).resolve().parents[2] / "config" / "mosquitto"


def install_shipped_files(etc: Path, pki: dict[str, Path], users: dict[str, str]) -> Path:
    """What the shipped config reads under /etc/mosquitto/, made under ``etc``: the
    ``make_pki`` CA and server certificate in certs/, the shipped ACL, and a password
    file (mosquitto_passwd, mode 0600) holding ``users`` (name -> password). Returns ``etc``."""
    passwd_tool = require_binary("mosquitto_passwd")
    (etc / "certs").mkdir(parents=True)
    for name in ("ca.crt", "server.crt", "server.key"):
        shutil.copy(pki[name.replace(".", "_")], etc / "certs" / name)
    shutil.copy(SHIPPED_CONFIG / "cryod.acl", etc / "cryod.acl")
    passwd = etc / "cryod.passwd"
    for i, (user, pw) in enumerate(users.items()):
        flags = ["-c"] if i == 0 else []
        subprocess.run([passwd_tool, *flags, "-b", str(passwd), user, pw], check=True, timeout=10)
    os.chmod(passwd, 0o600)
    return etc


def make_pki(workdir: Path) -> dict[str, Path]:
    """A test CA, a broker cert for 127.0.0.1/localhost, a client cert, and a rogue CA + client.

    Uses the openssl CLI (EC P-256 keys: fast). Keys are written mode 0600.
    """
    openssl = require_binary("openssl")
    workdir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, cwd=workdir, capture_output=True, timeout=30)

    def key(name: str) -> Path:
        path = workdir / f"{name}.key"
        run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(path))
        os.chmod(path, 0o600)
        return path

    def ca(name: str) -> None:
        k = key(name)
        crt = workdir / f"{name}.crt"
        run(
            "req", "-x509", "-new", "-key", str(k), "-sha256", "-days", "2",
            "-subj", f"/CN=cryod test {name}", "-out", str(crt),
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
        out[f"{name}_key"], out[f"{name}_crt"] = k, crt

    def leaf(name: str, issuer: str, cn: str, ext: str) -> None:
        k = key(name)
        csr = workdir / f"{name}.csr"
        crt = workdir / f"{name}.crt"
        extfile = workdir / f"{name}.ext"
        extfile.write_text(ext)
        run("req", "-new", "-key", str(k), "-subj", f"/CN={cn}", "-out", str(csr))
        run(
            "x509", "-req", "-in", str(csr), "-CA", str(out[f"{issuer}_crt"]),
            "-CAkey", str(out[f"{issuer}_key"]), "-CAcreateserial", "-days", "2",
            "-sha256", "-extfile", str(extfile), "-out", str(crt),
        )  # fmt: skip
        out[f"{name}_key"], out[f"{name}_crt"] = k, crt

    ca("ca")
    ca("rogue_ca")
    leaf(
        "server", "ca", "localhost",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )  # fmt: skip
    leaf("client", "ca", "cryod-demo", "extendedKeyUsage=clientAuth\n")
    leaf("rogue_client", "rogue_ca", "cryod-demo", "extendedKeyUsage=clientAuth\n")
    return out


@dataclass(frozen=True)
class Received:
    topic: str
    payload: dict[str, Any]
    retain: bool
    qos: int
    t_mono: float


class Collector:
    """A test subscriber that records every message; optionally reconnects on its own.

    With ``clean_session=False`` and a broker with persistence, QoS 1 messages
    published while it was away are delivered when it comes back: what a
    research data collector should do.
    """

    def __init__(
        self,
        port: int,
        topic: str = "cryod/v1/#",
        *,
        client_id: str = "test-collector",
        reconnect: bool = False,
        clean_session: bool = True,
        host: str = "127.0.0.1",
        **client_kwargs: Any,
    ) -> None:
        self.port, self.topic, self.host = port, topic, host
        self.client_id = client_id
        self.reconnect = reconnect
        self.clean_session = clean_session
        self.client_kwargs = client_kwargs
        self.messages: list[Received] = []
        self.connected = asyncio.Event()
        self.granted: list[Any] = []
        self.error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def __aenter__(self) -> Collector:
        self._task = asyncio.create_task(self._pump(), name=f"collector-{self.client_id}")
        waiter = asyncio.create_task(self.connected.wait())
        done, _ = await asyncio.wait({waiter, self._task}, timeout=5, return_when="FIRST_COMPLETED")
        if waiter not in done:
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
            await self.__aexit__(None, None, None)
            raise RuntimeError(f"collector could not connect: {self.error!r}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _pump(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    self.host,
                    self.port,
                    identifier=self.client_id,
                    clean_session=self.clean_session,
                    **self.client_kwargs,
                ) as client:
                    self.granted = list(await client.subscribe(self.topic, qos=1))
                    self.connected.set()
                    async for m in client.messages:
                        raw = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
                        self.messages.append(
                            Received(
                                str(m.topic), json.loads(raw), m.retain, m.qos, time.monotonic()
                            )
                        )
                        self._changed.set()
            except aiomqtt.MqttError as exc:
                self.error = exc
                self.connected.clear()
                if not self.reconnect:
                    return
                await asyncio.sleep(0.05)

    def on(self, suffix: str) -> list[Received]:
        """Messages whose topic ends with ``/suffix``."""
        return [m for m in self.messages if m.topic.endswith("/" + suffix)]

    async def wait_for(
        self, pred: Callable[[Received], bool], timeout_s: float = 20.0, *, start: int = 0
    ) -> Received:
        """The first message (from index ``start``) matching ``pred``; TimeoutError otherwise."""
        async with asyncio.timeout(timeout_s):
            while True:
                for m in self.messages[start:]:
                    if pred(m):
                        return m
                self._changed.clear()
                await self._changed.wait()

    async def wait_count(
        self, pred: Callable[[Received], bool], count: int, timeout_s: float = 20.0
    ) -> list[Received]:
        async with asyncio.timeout(timeout_s):
            while True:
                got = [m for m in self.messages if pred(m)]
                if len(got) >= count:
                    return got
                self._changed.clear()
                await self._changed.wait()
