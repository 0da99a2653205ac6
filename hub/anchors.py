"""Where the collector's chain head goes after each change: outside its database.

Two routes, as at the room (docs/integrity.md §4):

- **journal**: one line ``{"event": "audit_head", "node", "seq", "hash"}``
  sent to the syslog socket journald reads (``journal.py``);
- **anchor file** (``[anchors] file``): one JSON line ``{"anchor":
  "cryod.anchor/1", "node", "seq", "hash", "at"}`` appended with
  ``O_APPEND`` and fsynced; meant for another filesystem or a write-once share.

Both are read back by ``cryod.integrity.parse_heads``, so ``cryohub verify
--self`` (and ``cryoctl verify --anchors`` on a copy) check the chain against
them with the room's own rules (rewritten, truncated, forked).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryod.integrity import AnchorHead, Head, format_time, parse_heads

from . import journal

__all__ = ["ANCHOR_FORMAT", "AnchorFile", "Anchored", "anchor_head", "anchor_line"]

ANCHOR_FORMAT: Final = "cryod.anchor/1"


def anchor_line(node: str, head: Head, at: dt.datetime) -> str:
    return json.dumps(
        {
            "anchor": ANCHOR_FORMAT,
            "node": node,
            "seq": head.seq,
            "hash": head.hash,
            "at": format_time(at),
        },
        sort_keys=True,
        separators=(",", ":"),
    )


class AnchorFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, line: str) -> None:
        """Append one line and fsync it; raises OSError."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            data = (line + "\n").encode("utf-8")
            if os.write(fd, data) != len(data):
                raise OSError(f"short write to {self.path}")
            os.fsync(fd)
        finally:
            os.close(fd)

    def heads(self, node: str) -> list[AnchorHead]:
        """Every head of ``node`` in the file (an absent file holds none)."""
        try:
            with self.path.open(encoding="utf-8", errors="replace") as fh:
                return parse_heads(fh, node)
        except FileNotFoundError:
            return []


@dataclass(frozen=True, slots=True)
class Anchored:
    head: Head
    failures: tuple[str, ...]  # one line per route that could not anchor it

    @property
    def ok(self) -> bool:
        return not self.failures


def anchor_head(
    node: str, head: Head, *, anchor_file: Path, journal_socket: Path | None, at: dt.datetime
) -> Anchored:
    """Send a committed head out through both routes; report, never raise, a failure."""
    failures = []
    try:
        AnchorFile(anchor_file).append(anchor_line(node, head, at))
    except OSError as exc:
        failures.append(f"anchor file {anchor_file}: {exc.strerror or exc}")
    if journal_socket is not None:
        problem = journal.send(journal.head_line(node, head), journal_socket)
        if problem is not None:
            failures.append(f"journal ({journal_socket}): {problem}")
    return Anchored(head, tuple(failures))
