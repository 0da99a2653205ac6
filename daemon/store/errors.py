"""Storage errors with a kind the service can turn into an alarm."""

from __future__ import annotations

import sqlite3
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
