"""The fast start-up check agrees with Alembic."""

from __future__ import annotations

from pathlib import Path

from cryod.daemon.store.migrate import head_revision, upgrade
from cryod.daemon.store.schema_version import HEAD_REVISION, at_head


def test_head_constant_matches_alembic() -> None:
    assert head_revision() == HEAD_REVISION


def test_at_head_only_for_a_database_at_head(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    assert not at_head(db)
    upgrade(db, "0001")
    assert not at_head(db)
    upgrade(db, "head")
    assert at_head(db)
    (tmp_path / "junk.db").write_bytes(b"not sqlite at all" * 10)
    assert not at_head(tmp_path / "junk.db")
