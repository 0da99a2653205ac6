"""The start-up migration in a child process: same outcomes and refusals as
in-process, and Alembic never loaded into the daemon's own process."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from cryod.daemon.store import migrate
from cryod.daemon.store.errors import StoreError
from cryod.daemon.store.migrate_proc import _parse, migrate_in_child
from cryod.daemon.store.schema_version import HEAD_REVISION, at_head

from .legacy import make_old_db
from .test_migrate import revision


async def test_new_database_is_created_at_head(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    report = await migrate_in_child(db)
    assert report.from_revision is None
    assert report.to_revision == HEAD_REVISION
    assert report.backup_path is None
    assert at_head(db)


async def test_older_database_is_backed_up_and_upgraded(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    make_old_db(db)
    report = await migrate_in_child(db)
    assert report.from_revision == "0001"
    assert report.to_revision == HEAD_REVISION
    assert report.backup_path is not None
    assert report.backup_path.exists()
    assert revision(report.backup_path) == "0001"
    assert at_head(db)


async def test_database_from_a_newer_version_is_refused_like_in_process(tmp_path: Path) -> None:
    db = tmp_path / "cryod.db"
    migrate.upgrade_on_start(db)
    con = sqlite3.connect(db)
    con.execute("UPDATE alembic_version SET version_num = '0099'")
    con.commit()
    con.close()
    with pytest.raises(StoreError) as in_process:
        migrate.upgrade_on_start(db)
    with pytest.raises(StoreError) as in_child:
        await migrate_in_child(db)
    assert (in_child.value.kind, in_child.value.message) == (
        in_process.value.kind,
        in_process.value.message,
    )
    assert "newer version" in in_child.value.message
    assert revision(db) == "0099"  # untouched


async def test_garbage_file_is_refused_as_corrupt(tmp_path: Path) -> None:
    db = tmp_path / "garbage.db"
    db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError) as info:
        await migrate_in_child(db)
    assert info.value.kind == "corrupt"


def test_a_child_that_crashes_is_reported_with_its_last_error_line() -> None:
    err = b"Traceback (most recent call last):\n  ...\nMemoryError: out of memory\n"
    with pytest.raises(StoreError) as info:
        _parse(1, b"", err)
    assert info.value.kind == "other"
    assert "exit 1" in info.value.message
    assert "MemoryError: out of memory" in info.value.message


def test_an_unknown_error_kind_from_the_child_is_not_trusted() -> None:
    with pytest.raises(StoreError) as info:
        _parse(3, b'{"error": "bogus", "message": "x"}\n', b"")
    assert info.value.kind == "other"


def test_the_daemon_process_never_imports_alembic(tmp_path: Path) -> None:
    """The service module and a migration through the child leave Alembic out."""
    code = (
        "import asyncio, sys, pathlib\n"
        "import cryod.daemon.service\n"
        "from cryod.daemon.store.migrate_proc import migrate_in_child\n"
        f"asyncio.run(migrate_in_child(pathlib.Path({str(tmp_path / 'x.db')!r})))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"
    assert at_head(tmp_path / "x.db")
