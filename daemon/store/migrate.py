"""Schema migrations on start: create a fresh database at head, or back up an
older one (SQLite's online backup API) and upgrade it.

No alembic.ini is needed: the Alembic config is built here and points at the
``migrations`` directory inside the installed package.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from . import audit
from .chain import ChainedSession
from .db import check_database, check_writable_dir, make_engine
from .errors import StoreError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


@dataclass(frozen=True, slots=True)
class MigrationReport:
    path: Path
    from_revision: str | None  # None: the database was created
    to_revision: str
    backup_path: Path | None


def alembic_config(
    db_path: str | os.PathLike[str] | None = None, node: str | None = None
) -> Config:
    """``node`` names the chain when a migration writes its first v2 entries (0004)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if db_path is not None:
        cfg.set_main_option("sqlalchemy.url", f"sqlite:///{db_path}")
    if node is not None:
        cfg.attributes["node"] = node
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise StoreError("other", "no migrations found in the installed package")
    return head


def known_revisions() -> set[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return {rev.revision for rev in script.walk_revisions()}


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(
    path: str | os.PathLike[str], revision: str = "head", *, node: str | None = None
) -> None:
    """Upgrade (or create) the database to ``revision`` in one transaction."""
    engine = make_engine(path)
    try:
        with engine.begin() as conn:
            cfg = alembic_config(path, node)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()


def backup(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """A consistent copy with SQLite's online backup API (sees committed WAL content)."""
    source = sqlite3.connect(f"file:{Path(src).resolve()}?mode=ro", uri=True)
    try:
        target = sqlite3.connect(str(dest))
        try:
            source.backup(target)
            # a self-contained single file: no -wal/-shm to lose when copying it
            target.execute("PRAGMA journal_mode=DELETE")
        finally:
            target.close()
    finally:
        source.close()


def _backup_name(path: Path, now: dt.datetime) -> Path:
    stamp = now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    candidate = path.with_name(f"{path.name}.bak-{stamp}")
    n = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.bak-{stamp}-{n}")
        n += 1
    return candidate


def _audit(path: Path, kind: str, payload: dict[str, object]) -> None:
    engine = make_engine(path)
    try:
        with ChainedSession(engine) as session, session.begin():
            audit.append(session, kind, payload)
    finally:
        engine.dispose()


def upgrade_on_start(
    path: str | os.PathLike[str], *, now: dt.datetime | None = None, node: str | None = None
) -> MigrationReport:
    """Bring the database at ``path`` to head; back it up first if it is older.

    Refuses (``StoreError``) a database from a newer cryod, and
    (``UnusableDatabase``, from ``check_database``) a file that is not SQLite,
    is corrupt or is another application's database, rather than guessing.
    ``node`` (``[node] id``) names the chain if this migration starts it (a new
    database, or one before 0004).
    """
    db_path = Path(path)
    check_writable_dir(db_path)
    head = head_revision()
    if not db_path.exists() or db_path.stat().st_size == 0:
        upgrade(db_path, "head", node=node)
        _audit(db_path, "database_created", {"revision": head})
        return MigrationReport(db_path, None, head, None)
    revision = check_database(db_path)  # UnusableDatabase: not SQLite, corrupt, foreign
    if revision == head:
        return MigrationReport(db_path, head, head, None)
    if revision is None:  # an SQLite file with no tables yet
        upgrade(db_path, "head", node=node)
        _audit(db_path, "database_created", {"revision": head})
        return MigrationReport(db_path, None, head, None)
    if revision not in known_revisions():
        raise StoreError(
            "other",
            f"{db_path} is at schema revision {revision!r}, unknown to this cryod "
            f"(head {head!r}): written by a newer version? Refusing to start",
        )
    dest = _backup_name(db_path, now or dt.datetime.now(dt.UTC))
    backup(db_path, dest)
    upgrade(db_path, "head", node=node)
    _audit(
        db_path,
        "schema_upgraded",
        {"from_revision": revision, "to_revision": head, "backup": dest.name},
    )
    return MigrationReport(db_path, revision, head, dest)


def main(argv: list[str] | None = None) -> int:
    """``python -m cryod.daemon.store.migrate DB [NODE]``: the daemon's start-up
    migration, run in a child process (daemon/store/migrate_proc.py). One JSON line
    on stdout: the report, or the StoreError's kind and message (exit status 3)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        print("usage: python -m cryod.daemon.store.migrate DATABASE [NODE]", file=sys.stderr)
        return 2
    try:
        report = upgrade_on_start(args[0], node=args[1] if len(args) == 2 else None)
    except StoreError as exc:
        print(json.dumps({"error": exc.kind, "message": exc.message}))
        return 3
    print(
        json.dumps(
            {
                "from_revision": report.from_revision,
                "to_revision": report.to_revision,
                "backup_path": None if report.backup_path is None else str(report.backup_path),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
