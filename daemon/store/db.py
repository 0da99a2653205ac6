"""Engine creation: every connection gets the same PRAGMAs, set by an event listener.

WAL with synchronous=FULL: a COMMIT that returned survives power loss
(NORMAL may roll back the last commits). PRAGMAs are per connection in
SQLite, so they are set on every new connection, never once at start.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.pool import NullPool

from .errors import StoreError

BUSY_TIMEOUT_MS = 5000

DbSpec = str | os.PathLike[str] | Engine


def _pragmas(readonly: bool, busy_timeout_ms: int) -> list[tuple[str, str | int]]:
    if readonly:
        return [("query_only", 1), ("foreign_keys", "ON"), ("busy_timeout", busy_timeout_ms)]
    return [
        ("journal_mode", "WAL"),
        ("synchronous", "FULL"),
        ("foreign_keys", "ON"),
        ("busy_timeout", busy_timeout_ms),
    ]


def check_writable_dir(path: Path) -> None:
    """WAL needs to create ``-wal`` and ``-shm`` files next to the database."""
    directory = path.resolve().parent
    if not directory.is_dir():
        raise StoreError("io", f"database directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StoreError(
            "read_only", f"database directory {directory} is not writable (WAL needs it)"
        )


def make_engine(
    path: str | os.PathLike[str],
    *,
    readonly: bool = False,
    busy_timeout_ms: int = BUSY_TIMEOUT_MS,
    extra_pragmas: Mapping[str, str | int] | None = None,
    immutable: bool = False,
) -> Engine:
    """An engine on a database file.

    ``readonly`` opens ``file:...?mode=ro`` (offline tools on copies, auditors);
    ``immutable`` additionally tells SQLite nobody writes the file, which lets a
    WAL database be read from a read-only directory. ``extra_pragmas`` is for
    tests (``max_page_count`` to simulate a full disk).
    """
    db_path = Path(path)
    if readonly:
        if not db_path.exists():
            raise StoreError("io", f"database {db_path} does not exist")
        uri = f"file:{quote(str(db_path.resolve()))}?mode=ro"
        if immutable:
            uri += "&immutable=1"

        def creator() -> sqlite3.Connection:
            return sqlite3.connect(uri, uri=True, check_same_thread=False)

        engine = create_engine(
            "sqlite://", creator=creator, poolclass=NullPool, hide_parameters=True
        )
    else:
        check_writable_dir(db_path)
        engine = create_engine(
            f"sqlite:///{db_path}",
            connect_args={"check_same_thread": False},
            hide_parameters=True,
        )
    pragmas = _pragmas(readonly, busy_timeout_ms) + list((extra_pragmas or {}).items())

    @event.listens_for(engine, "connect")
    def _set_pragmas(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        # the driver's own implicit BEGIN is turned off: SQLAlchemy's "begin"
        # event below emits it, so SAVEPOINTs and transactional DDL work
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            for name, value in pragmas:
                cur.execute(f"PRAGMA {name}={value}")
                if name == "journal_mode":
                    mode = cur.fetchone()
                    if mode is None or str(mode[0]).lower() != "wal":
                        raise StoreError("io", f"could not switch the database to WAL: {mode}")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # the writer asks for IMMEDIATE (execution option ``sqlite_begin``): it
        # takes the write lock up front, so a transaction never fails half-way
        # on a lock upgrade; everyone else reads with a deferred BEGIN
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        if mode not in ("DEFERRED", "IMMEDIATE"):
            raise ValueError(f"sqlite_begin must be DEFERRED or IMMEDIATE, not {mode!r}")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


@contextlib.contextmanager
def immediate_transaction(engine: Engine) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` on a pooled DBAPI connection, rolled back
    if anything raises: the SQL of ``Connection.begin()`` with ``sqlite_begin``
    IMMEDIATE, on a connection set up by the same listener, without SQLAlchemy's
    execution layer. For the writer's sample batches only (4-5 a second, one or
    two INSERTs each), where that layer cost ~12 % of the storage thread's CPU."""
    pooled = engine.raw_connection()
    try:
        dbapi = pooled.driver_connection
        if not isinstance(dbapi, sqlite3.Connection):
            raise TypeError(f"not a sqlite3 connection: {type(dbapi).__name__}")
        dbapi.execute("BEGIN IMMEDIATE")
        try:
            yield dbapi
            dbapi.commit()
        except BaseException:
            # SQLite may already have rolled back (e.g. disk full); never mask the cause
            with contextlib.suppress(sqlite3.Error):
                dbapi.rollback()
            raise
    finally:
        pooled.close()


def engine_for(db: DbSpec, *, readonly: bool = True) -> tuple[Engine, bool]:
    """(engine, owned): an engine for a path, or the caller's engine as is."""
    if isinstance(db, Engine):
        return db, False
    return open_readonly(db) if readonly else make_engine(db), True


def open_readonly(path: str | os.PathLike[str]) -> Engine:
    """Read-only engine for offline use; falls back to immutable if WAL files cannot be made."""
    engine = make_engine(path, readonly=True)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").all()
    except Exception:  # noqa: BLE001 - retry in the only other way a copy can be read
        engine.dispose()
        engine = make_engine(path, readonly=True, immutable=True)
    return engine
