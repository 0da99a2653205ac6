"""Engines for the collector's database: PostgreSQL for a study, SQLite embedded.

- **PostgreSQL** (``postgresql+psycopg://``): the password, if any, comes from
  ``[database] password_file`` (never the URL); connections are checked
  before use (a restarted server is not an error on the next command).
- **SQLite** (``sqlite:///``): every connection gets WAL, ``synchronous =
  FULL`` (a returned COMMIT survives power loss), foreign keys and a busy
  timeout; writers ask for ``BEGIN IMMEDIATE`` (``writer(engine)``) so a
  transaction never fails half-way on a lock upgrade.

``StoreError`` is what callers see for a database that cannot be reached or
is not at the schema this collector needs: one line, no traceback.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL

__all__ = ["BUSY_TIMEOUT_MS", "StoreError", "is_postgres", "make_engine", "writer"]

BUSY_TIMEOUT_MS = 5000


class StoreError(RuntimeError):
    """The database cannot be used: unreachable, not migrated, another collector's."""


def is_postgres(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "postgresql"


def make_engine(url: URL | str, *, password_file: Path | None = None) -> Engine:
    from sqlalchemy.engine import make_url

    u = make_url(url) if isinstance(url, str) else url
    if u.drivername.startswith("postgresql"):
        if password_file is not None:
            u = u.set(password=password_file.read_text(encoding="utf-8").strip())
        return create_engine(
            u.set(drivername="postgresql+psycopg"),
            pool_pre_ping=True,
            hide_parameters=True,
            connect_args={"application_name": "cryohub", "connect_timeout": 10},
        )
    if u.drivername.startswith("sqlite"):
        return _sqlite_engine(u)
    raise StoreError(f"unsupported database {u.drivername!r}: postgresql+psycopg or sqlite")


def _sqlite_engine(url: URL) -> Engine:
    path = Path(url.database or "")
    if not path.parent.is_dir() or not os.access(path.parent, os.W_OK | os.X_OK):
        raise StoreError(f"database directory {path.parent} is missing or not writable")
    engine = create_engine(
        url.set(drivername="sqlite"),
        connect_args={"check_same_thread": False},
        hide_parameters=True,
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" below emits BEGIN
        cur = dbapi_conn.cursor()
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        if mode not in ("DEFERRED", "IMMEDIATE"):
            raise ValueError(f"sqlite_begin must be DEFERRED or IMMEDIATE, not {mode!r}")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def writer(engine: Engine) -> Engine:
    """The same engine for a writing transaction (SQLite: ``BEGIN IMMEDIATE``)."""
    if is_postgres(engine):
        return engine
    return engine.execution_options(sqlite_begin="IMMEDIATE")
