"""Engine creation: every connection gets the same PRAGMAs, set by an event listener.

WAL with synchronous=FULL: a COMMIT that returned survives power loss
(NORMAL may roll back the last commits). PRAGMAs are per connection in
SQLite, so they are set on every new connection, never once at start.

``check_database`` is the one check that an existing file is a usable cryod
database (the daemon at start, through the migration, and every offline
``cryoctl --db`` command through ``open_for_reading``): anything else is an
``UnusableDatabase`` whose message is one line naming the file and the problem.
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
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import NullPool

from .errors import StoreError, UnusableDatabase
from .schema_version import HEAD_REVISION

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


#: the first 16 bytes of every SQLite 3 database file
SQLITE_HEADER = b"SQLite format 3\x00"
#: tables every cryod schema revision has
CRYOD_TABLES = frozenset({"alembic_version", "procedures", "cycles", "audit"})


def _sqlite_text(exc: BaseException) -> str:
    """SQLite's own words for an error (no SQL, no parameters)."""
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None else exc
    return str(orig.args[0]) if orig.args else type(orig).__name__


#: what SQLite errors look like, through SQLAlchemy or straight from the driver
DATABASE_ERRORS: tuple[type[Exception], ...] = (sa_exc.DBAPIError, sqlite3.Error)


def unreadable(
    path: str | os.PathLike[str], exc: BaseException, *, doing: str = "read"
) -> UnusableDatabase:
    """An SQLite error met while reading (``doing="written"``: writing) the database at
    ``path``, as one line."""
    text = _sqlite_text(exc)
    low = text.lower()
    if "malformed" in low or "not a database" in low or "corrupt" in low:
        return UnusableDatabase(path, f"corrupt SQLite database ({text})", kind="corrupt")
    return UnusableDatabase(path, f"cannot be {doing} ({text})", kind="io")


def check_database(path: str | os.PathLike[str]) -> str | None:
    """The schema revision of the cryod database at ``path`` (None: an SQLite
    database with no tables at all, which the daemon may initialise).

    Cheap, whatever the file's size: the header, the schema table and the
    schema revision are read, no page scan (corruption further in is reported
    when it is read: ``open_for_reading``). Raises ``UnusableDatabase`` for a
    file that is missing, unreadable, empty, not SQLite, corrupt or another
    application's database."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        raise UnusableDatabase(p, "no such file", kind="io") from None
    except IsADirectoryError:
        raise UnusableDatabase(p, "is a directory, not a database file", kind="io") from None
    except OSError as exc:
        raise UnusableDatabase(p, f"cannot be read ({exc.strerror})", kind="io") from None
    if not header:
        raise UnusableDatabase(p, "empty file, not a cryod database")
    if header != SQLITE_HEADER:
        raise UnusableDatabase(p, "not an SQLite database (no SQLite header)", kind="corrupt")
    engine = open_readonly(p)
    try:
        with engine.connect() as conn:
            tables = set(
                conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'")
                .scalars()
                .all()
            )
            if not tables:
                return None
            if not CRYOD_TABLES.issubset(tables):
                raise UnusableDatabase(
                    p, "an SQLite database, but not a cryod database (no cryod tables)"
                )
            revision = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    except DATABASE_ERRORS as exc:
        raise unreadable(p, exc) from exc
    finally:
        engine.dispose()
    if revision is None:
        raise UnusableDatabase(p, "a cryod database without a schema revision")
    return str(revision)


def check_at_head(path: str | os.PathLike[str]) -> None:
    """``check_database``, and the database is at this cryod's schema revision (what an
    offline tool reads or, for ``cryoctl redact``, writes). Raises ``UnusableDatabase``."""
    _require_head(Path(path), check_database(path))


def _require_head(path: Path, revision: str | None) -> None:
    if revision == HEAD_REVISION:
        return
    if revision is None:
        raise UnusableDatabase(path, "an SQLite database with no tables, not a cryod database")
    from .migrate import known_revisions  # Alembic: only on this error path

    if revision in known_revisions():
        raise UnusableDatabase(
            path,
            f"cryod database at schema revision {revision!r}, older than this cryoctl reads "
            f"({HEAD_REVISION!r}): upgrade a copy first "
            "(python -m cryod.daemon.store.migrate COPY)",
        )
    raise UnusableDatabase(
        path,
        f"cryod database at schema revision {revision!r}, unknown to this cryoctl "
        f"(it reads {HEAD_REVISION!r}): written by a newer cryod?",
    )


@contextlib.contextmanager
def open_for_reading(path: str | os.PathLike[str]) -> Iterator[Engine]:
    """A read-only engine on the cryod database at ``path`` (offline tools), after
    ``check_database`` and a check that it is at this cryod's schema revision.
    An SQLite error while reading it (a corrupt page further in, a lock held too
    long) becomes an ``UnusableDatabase`` naming the file; the engine is
    disposed of at the end."""
    p = Path(path)
    check_at_head(p)
    engine = open_readonly(p)
    try:
        yield engine
    except DATABASE_ERRORS as exc:
        raise unreadable(p, exc) from exc
    finally:
        engine.dispose()
