"""The daemon's start-up migration, run in a short-lived child process.

Alembic and the migration scripts cost about 9 MB resident and 0.3 s of
imports, and a daemon runs for months after one migration: run in-process,
that memory would stay with it for good. The child is
``python -m cryod.daemon.store.migrate DB`` (same interpreter, same
environment); it answers with one JSON line, and its refusals (a database
from a newer cryod, not a cryod database, unwritable directory) come back as
the same ``StoreError`` kind and message as in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from .errors import ErrorKind, StoreError

_KINDS: frozenset[str] = frozenset(get_args(ErrorKind))


@dataclass(frozen=True, slots=True)
class ChildMigration:
    from_revision: str | None  # None: the database was created
    to_revision: str
    backup_path: Path | None


async def migrate_in_child(path: Path, node: str | None = None) -> ChildMigration:
    """Bring the database at ``path`` to head in a child process (see module doc);
    ``node`` names the chain if the migration starts it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cryod.daemon.store.migrate",
        str(path),
        *(() if node is None else (node,)),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await proc.communicate()
    except BaseException:  # cancelled while migrating: do not leave the child behind
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    return _parse(proc.returncode, out, err)


def _parse(returncode: int | None, out: bytes, err: bytes) -> ChildMigration:
    last = out.decode(errors="replace").strip().splitlines()[-1:] or [""]
    try:
        answer: Any = json.loads(last[0])
    except ValueError:
        answer = None
    if returncode == 3 and isinstance(answer, dict) and answer.get("error") in _KINDS:
        kind: ErrorKind = answer["error"]
        raise StoreError(kind, str(answer.get("message", "")))
    if returncode == 0 and isinstance(answer, dict) and "to_revision" in answer:
        backup = answer.get("backup_path")
        return ChildMigration(
            from_revision=answer.get("from_revision"),
            to_revision=str(answer["to_revision"]),
            backup_path=None if backup is None else Path(backup),
        )
    tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
    raise StoreError("other", f"database migration failed (exit {returncode}): {tail[0]}")
