"""The simulator's ground-truth event log: JSON lines, flushed one by one.

Tests and benchmarks tail the file while the simulator runs, so every line
is flushed as it is written. The last events are also kept in memory (a
bounded deque, so an hour-long run does not grow) for in-process tests.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["EventLog"]


class EventLog:
    """Append-only JSON-lines writer with an in-memory tail."""

    def __init__(self, path: str | Path | None = None, *, keep: int = 2000) -> None:
        self._recent: deque[dict[str, Any]] = deque(maxlen=keep)
        self._fh: IO[str] | None = None
        self.path = Path(path) if path is not None else None
        if self.path is not None:
            self._fh = self.path.open("a", encoding="utf-8")
        self.written = 0

    def write(self, record: dict[str, Any]) -> None:
        self._recent.append(record)
        self.written += 1
        if self._fh is not None:
            self._fh.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
            self._fh.flush()

    def recent(self, event: str | None = None) -> list[dict[str, Any]]:
        """The events still held in memory, oldest first (optionally one kind)."""
        return [r for r in self._recent if event is None or r["event"] == event]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(list(self._recent))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
