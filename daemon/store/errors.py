"""Storage errors with a kind the service can turn into an alarm."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Literal

from sqlalchemy import exc as sa_exc

ErrorKind = Literal[
    "disk_full", "read_only", "locked", "io", "corrupt", "integrity", "closed", "other"
]

# kinds that mean the storage itself is failing (the writer turns unhealthy)
STORAGE_KINDS: frozenset[str] = frozenset({"disk_full", "read_only", "locked", "io", "corrupt"})


class StoreError(Exception):
    """A storage failure, with a kind and a message safe to log (no SQL parameters)."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind: ErrorKind = kind
        self.message = message

    @property
    def storage_failure(self) -> bool:
        return self.kind in STORAGE_KINDS


class UnusableDatabase(StoreError):
    """A database file that cannot be used as cryod's: missing, empty, not SQLite,
    corrupt, another application's, or at a schema revision this cryod does not
    read. ``message`` is one line: the file, a colon, the problem."""

    def __init__(
        self, path: str | os.PathLike[str], problem: str, *, kind: ErrorKind = "other"
    ) -> None:
        super().__init__(kind, f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem


def classify(exc: BaseException) -> StoreError:
    """Map a database exception to a StoreError without its SQL or parameters."""
    if isinstance(exc, StoreError):
        return exc
    orig: BaseException = exc
    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        orig = exc.orig
    text = str(orig.args[0]) if orig.args else type(orig).__name__
    low = text.lower()
    kind: ErrorKind
    if isinstance(orig, sqlite3.IntegrityError):
        kind = "integrity"
    elif "full" in low:
        kind = "disk_full"
    elif "readonly" in low or "read-only" in low or "read only" in low:
        kind = "read_only"
    elif "locked" in low or "busy" in low:
        kind = "locked"
    elif "malformed" in low or "not a database" in low or "corrupt" in low:
        kind = "corrupt"
    elif "i/o" in low or "unable to open" in low or isinstance(orig, OSError):
        kind = "io"
    else:
        kind = "other"
    return StoreError(kind, f"{text} ({type(orig).__name__})")
