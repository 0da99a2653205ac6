"""Schema migrations: ``cryohub migrate`` creates the database or brings it to head.

No alembic.ini: the Alembic config is built here and points at the
``migrations`` directory inside the installed package. The upgrade runs in
one transaction with its audit entry (``database_created`` or ``migrated``),
so the collector's chain records every schema its data has lived in. Every
other command refuses a database that is not at this collector's head
(``require_head``) rather than guessing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect
from sqlalchemy.orm import Session

from cryod.integrity import Head

from . import audit
from .db import StoreError, writer

__all__ = ["MigrationReport", "current_revision", "head_revision", "require_head", "upgrade"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


@dataclass(frozen=True, slots=True)
class MigrationReport:
    from_revision: str | None  # None: created
    to_revision: str
    head: Head | None  # the audit entry written (None: already at head)


def alembic_config(conn: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise StoreError("no collector migrations found in the installed package")
    return head


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, *, node: str, now: dt.datetime) -> MigrationReport:
    """Create or upgrade to head in one transaction, with its audit entry."""
    head = head_revision()
    with writer(engine).begin() as conn:
        before = current_revision(conn)
        tables = inspect(conn).get_table_names()
        if before is None and "alembic_version" not in tables and tables:
            raise StoreError(
                "the database holds tables but no collector schema: not a cryohub database"
            )
        if before == head:
            return MigrationReport(before, head, None)
        if before is not None and before not in _known():
            raise StoreError(
                f"the database is at revision {before}, unknown to this cryohub (a newer one?)"
            )
        command.upgrade(alembic_config(conn), "head")
        with Session(bind=conn) as session:
            kind = "database_created" if before is None else "migrated"
            entry = audit.append(
                session,
                node=node,
                kind=kind,
                payload={"from": before, "to": head},
                at=now,
            )
            session.flush()
    return MigrationReport(before, head, entry)


def _known() -> set[str]:
    return {rev.revision for rev in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def require_head(engine: Engine) -> None:
    """Refuse a database that is unreachable or not at this collector's schema."""
    from sqlalchemy.exc import DBAPIError

    try:
        with engine.connect() as conn:
            rev = current_revision(conn)
    except DBAPIError as exc:
        raise StoreError(f"cannot reach the database: {_first_line(exc)}") from None
    head = head_revision()
    if rev is None:
        raise StoreError("the database has no collector schema yet: run cryohub migrate")
    if rev != head:
        raise StoreError(
            f"the database is at revision {rev}, this cryohub needs {head}: run cryohub migrate"
        )


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0]
