"""The delivered-up-to cursor, kept in a small file beside the database.

One JSON object ``{"cursor": "cryod.record-cursor/1", "node", "delivered_seq",
"delivered_hash", "at"}``, replaced atomically (written to a temporary file,
fsynced, renamed, the directory fsynced). It only ever says less than the
broker acknowledged (it is written after the PUBACKs), so a crash costs
duplicates, never a gap. A file that cannot be read, or that names another
node, is not trusted: the channel starts again from entry 1 and says so.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["FORMAT", "CursorFileError", "SavedCursor", "load_cursor", "save_cursor"]

FORMAT: Final = "cryod.record-cursor/1"


class CursorFileError(ValueError):
    """The cursor file exists but cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class SavedCursor:
    node: str
    delivered_seq: int
    delivered_hash: str | None
    at: str


def load_cursor(path: Path, node: str) -> SavedCursor | None:
    """The saved cursor, None if there is no file; ``CursorFileError`` if unusable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CursorFileError(f"{path}: cannot be read: {exc.strerror}") from None
    try:
        doc = json.loads(text)
        if doc.get("cursor") != FORMAT:
            raise CursorFileError(f"{path}: not a {FORMAT} file")
        saved = SavedCursor(
            node=str(doc["node"]),
            delivered_seq=int(doc["delivered_seq"]),
            delivered_hash=None if doc["delivered_hash"] is None else str(doc["delivered_hash"]),
            at=str(doc["at"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        if isinstance(exc, CursorFileError):
            raise
        raise CursorFileError(f"{path}: not a {FORMAT} file ({exc})") from None
    if saved.node != node:
        raise CursorFileError(f"{path}: names node {saved.node!r}, not {node!r}")
    if saved.delivered_seq < 0:
        raise CursorFileError(f"{path}: delivered_seq is negative")
    return saved


def save_cursor(path: Path, cursor: SavedCursor) -> None:
    """Replace the file atomically and durably."""
    doc = {
        "cursor": FORMAT,
        "node": cursor.node,
        "delivered_seq": cursor.delivered_seq,
        "delivered_hash": cursor.delivered_hash,
        "at": cursor.at,
    }
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (json.dumps(doc, sort_keys=True) + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # a directory fsync is not possible everywhere
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
