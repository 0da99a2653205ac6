"""``cryohub web``: the web app under uvicorn, on the collector's database.

Loopback (127.0.0.1:8080) by default. Behind a TLS reverse proxy
(docs/web.md) run with ``--behind-tls``: cookies become ``Secure`` and
``__Host-`` prefixed, HSTS is sent, and the client address (for login
throttling) is taken from the proxy's ``X-Forwarded-For`` when the proxy is
at one of ``--forwarded-allow-ips`` (default: loopback only).
"""

from __future__ import annotations

import datetime as dt
import socket
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import uvicorn

from ..config import LoadedConfig
from ..store.db import make_engine
from ..store.migrate import require_head
from .app import WebSettings, create_app
from .telemetry import BrokerSettings

__all__ = ["ListenError", "ServeOptions", "broker_settings", "listen", "serve"]


@dataclass(frozen=True, slots=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    behind_tls: bool = False
    forwarded_allow_ips: str = "127.0.0.1"
    idle_min: float = 15.0
    timezone: str = "UTC"
    telemetry: bool = True


def broker_settings(loaded: LoadedConfig) -> BrokerSettings | None:
    b = loaded.cfg.broker
    if b is None:
        return None
    tls = b.tls
    return BrokerSettings(
        host=b.host,
        port=b.port,
        username=b.username,
        password_file=b.password_file,
        ca_file=None if tls is None else tls.ca_file,
        cert_file=None if tls is None else tls.cert_file,
        key_file=None if tls is None else tls.key_file,
        client_id=f"{b.client_id}-web",
        session_expiry_s=0,  # a clean session: the board wants what is live, not a backlog
        keepalive_s=10,
    )


def settings_for(loaded: LoadedConfig, opts: ServeOptions) -> WebSettings:
    engine = make_engine(loaded.url, password_file=loaded.cfg.database.password_file)
    try:
        require_head(engine)
    except BaseException:
        engine.dispose()
        raise
    tz: dt.tzinfo = dt.UTC if opts.timezone == "UTC" else ZoneInfo(opts.timezone)
    return WebSettings(
        engine=engine,
        node=loaded.node,
        anchor_file=loaded.anchor_file,
        journal_socket=loaded.cfg.anchors.journal_socket,
        secure=opts.behind_tls,
        idle_s=opts.idle_min * 60.0,
        tz=tz,
        broker=broker_settings(loaded) if opts.telemetry else None,
        profiles=tuple(loaded.profiles),
    )


class ListenError(Exception):
    """The address cannot be listened on (the text says which and why)."""


def listen(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket for ``host:port``, or ``ListenError`` naming the problem."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(
            f"--host {host!r}: not an address of this machine ({exc.strerror})"
        ) from None
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def serve(loaded: LoadedConfig, opts: ServeOptions) -> None:
    """Listen first (a bad address is ``ListenError`` before anything else starts), then serve."""
    sock = listen(opts.host, opts.port)
    try:
        settings = settings_for(loaded, opts)
    except BaseException:
        sock.close()
        raise
    app = create_app(settings)
    print(f"cryohub web: http://{opts.host}:{opts.port}/ (read-only; Ctrl-C stops)", flush=True)
    config = uvicorn.Config(
        app,
        proxy_headers=opts.behind_tls,
        forwarded_allow_ips=opts.forwarded_allow_ips,
        server_header=False,
        log_level="warning",
        access_log=False,
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        settings.engine.dispose()
