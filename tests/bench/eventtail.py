"""Follow cryosim's event log (JSON lines, flushed per line) without re-reading it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Event = dict[str, Any]


class EventTail:
    """Every event of the log in ``history``; ``wait_for`` scans forward from a cursor."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.history: list[Event] = []
        self.cursor = 0
        self._pos = 0
        self._partial = b""

    def _pull(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as fh:
            fh.seek(self._pos)
            data = fh.read()
        self._pos += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if line.strip():
                try:
                    self.history.append(json.loads(line))
                except ValueError:
                    continue

    def skip_to_end(self) -> None:
        self._pull()
        self.cursor = len(self.history)

    def wait_for(self, pred: Callable[[Event], bool], timeout_s: float) -> Event | None:
        """The first event after the cursor matching ``pred``; the cursor moves past it."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._pull()
            while self.cursor < len(self.history):
                ev = self.history[self.cursor]
                self.cursor += 1
                if pred(ev):
                    return ev
            if time.monotonic() > deadline:
                return None
            time.sleep(0.002)
