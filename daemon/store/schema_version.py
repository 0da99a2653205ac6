"""The schema revision this cryod writes, readable without importing Alembic.

Alembic costs about 10 MB and 0.3 s at every start; a database already at
this revision needs none of it. ``tests/store/test_schema_version.py`` keeps
the constant equal to Alembic's head.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = ["HEAD_REVISION", "at_head"]

HEAD_REVISION = "0007"


def at_head(path: str | Path) -> bool:
    """True when the database exists and its Alembic version is ``HEAD_REVISION``."""
    p = Path(path)
    if not p.exists() or p.stat().st_size == 0:
        return False
    try:
        con = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=5)
        try:
            row = con.execute("SELECT version_num FROM alembic_version").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return False
    return row is not None and row[0] == HEAD_REVISION
