"""The backup and restore drill (docs/collector.md §7), on PostgreSQL and SQLite.

The collector ingests; a backup is taken while it runs (``pg_dump -Fc``; on
SQLite the online backup API, what ``sqlite3 DB ".backup FILE"`` does); it
ingests more; then the database is lost. The backup is restored into a
**fresh** database (``pg_restore``; a copy of the file), and:

- ``cryohub verify --all`` and ``verify --self`` pass on the restored database
  (the collector's copy of each room to the seq of the backup, its own chain
  against its anchor file);
- ``cryohub run`` on it resumes: the room's next entries are held behind the
  gap the restore opened, ``cryohub gaps`` names the resend, and the resend
  (the room sends everything again, from entry 1) stores every missing entry
  once: the entries the backup held are duplicates, nothing is doubled.
"""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from cryod.hub.cli import main
from cryod.hub.store.db import make_engine
from cryod.hub.store.models import Held, ReceivedEntry
from tests.pg import find_pg_bin

from .conftest import database_url
from .rig import HubRig, chain, live_room, messages_of, run_publish, wait_until

pytestmark = [pytest.mark.needs_mosquitto, pytest.mark.slow, pytest.mark.timeout(300)]


def libpq_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def backup(db_url: str, dest: Path) -> None:
    u = make_url(db_url)
    if u.drivername.startswith("postgresql"):
        bin_dir = find_pg_bin()
        assert bin_dir is not None
        subprocess.run(
            [str(bin_dir / "pg_dump"), "--format=custom", f"--file={dest}",
             f"--dbname={libpq_url(db_url)}"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        return
    src, dst = sqlite3.connect(u.database or ""), sqlite3.connect(dest)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def restore(dump: Path, db_url: str) -> None:
    u = make_url(db_url)
    if u.drivername.startswith("postgresql"):
        bin_dir = find_pg_bin()
        assert bin_dir is not None
        subprocess.run(
            [str(bin_dir / "pg_restore"), "--exit-on-error", "--no-owner",
             f"--dbname={libpq_url(db_url)}", str(dump)],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        return
    src, dst = sqlite3.connect(dump), sqlite3.connect(u.database or "")
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


@pytest.fixture
def fresh_url(request: pytest.FixtureRequest, db_url: str, tmp_path: Path) -> Iterator[str]:
    """Another, empty database on the same backend: where the backup is restored."""
    backend = "sqlite" if db_url.startswith("sqlite") else "postgresql"
    yield from database_url(request, backend, tmp_path / "restored.db")


def test_backup_restore_verify_and_resume_without_duplicates(
    rig: HubRig, fresh_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    room = live_room("room-r")
    rig.register(room)
    docs, rows, blocks = chain(room, 90)
    rig.start()
    run_publish(rig.broker.port, messages_of(room, docs[:40]))
    rig.wait_stored(room, 40)
    dump = tmp_path / "cryohub.dump"
    backup(rig.db_url, dump)  # while the collector runs
    run_publish(rig.broker.port, messages_of(room, docs[40:80]))
    rig.wait_stored(room, 80)
    assert rig.stop() == 0

    # the database is lost: restore the backup into a fresh one, point the config at it
    restore(dump, fresh_url)
    rig.config.write_text(rig.config.read_text().replace(rig.db_url, fresh_url))
    rig.engine.dispose()
    rig.engine = make_engine(fresh_url)
    rig.db_url = fresh_url
    assert rig.count(ReceivedEntry) == 40
    capsys.readouterr()
    assert main(["verify", "--all", "--config", str(rig.config)]) == 0
    assert "collector copy consistent with room-r to seq 40" in capsys.readouterr().out
    assert main(["verify", "--self", "--config", str(rig.config)]) == 0

    rig.start()
    run_publish(rig.broker.port, messages_of(room, docs[80:]))  # the room goes on
    wait_until(lambda: rig.count(Held, room.node) == 10, 60, "held behind the restore's gap")
    assert main(["gaps", "room-r", "--config", str(rig.config)]) == 0
    assert "cryoctl record resend --from 41 --to 80" in capsys.readouterr().out
    run_publish(rig.broker.port, messages_of(room, docs[:80]))  # resent, from the start
    rig.wait_stored(room)
    wait_until(lambda: rig.stats().get("counts", {}).get("duplicate", 0) >= 40, 60)
    rig.assert_same_as(room, rows, blocks)
    assert rig.count(Held) == 0
    assert main(["verify", "--all", "--config", str(rig.config)]) == 0
