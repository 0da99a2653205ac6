"""The journal route: one syslog datagram to the socket journald reads (``/dev/log``).

A ``cryohub`` command is not a service, so its standard error is a terminal,
not the journal; a datagram on the syslog socket reaches the journal from
anywhere (``journalctl -t cryohub -o cat`` reads it back, and is a ``--log``
source for ``cryohub verify --self``). The line is the room's
``audit_head`` event, so ``cryod.integrity.parse_heads`` reads both.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Final

from cryod.integrity import Head

__all__ = ["IDENT", "head_line", "send"]

IDENT: Final = "cryohub"
#: facility user (1), severity info (6)
_PRIORITY: Final = 1 * 8 + 6


def head_line(node: str, head: Head) -> str:
    return json.dumps(
        {"event": "audit_head", "node": node, "seq": head.seq, "hash": head.hash},
        sort_keys=True,
        separators=(",", ":"),
    )


def send(line: str, socket_path: Path) -> str | None:
    """Send one line; return why it could not be sent, or None."""
    data = f"<{_PRIORITY}>{IDENT}[{os.getpid()}]: {line}".encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(data, str(socket_path))
    except OSError as exc:
        return exc.strerror or str(exc)
    return None
