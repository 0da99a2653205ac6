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


def test_outbox_pending_per_console(tmp_path: Path) -> None:
    """Each console's publisher sees only its own alarm and cycle events."""
    import datetime as dt

    from sqlalchemy.orm import Session

    from cryod.daemon.store import outbox
    from cryod.daemon.store.db import make_engine
    from cryod.daemon.store.models import Procedure

    db = tmp_path / "o.db"
    upgrade(db, "head")
    engine = make_engine(db)
    with Session(engine) as s, s.begin():
        for pid, console in ((1, "a"), (2, "b")):
            s.add(
                Procedure(
                    id=pid,
                    uuid=f"u{pid}",
                    console=console,
                    opened_at=dt.datetime.now(dt.UTC),
                    patient_ref="PSN-1",
                    indication="other",
                    indication_other="x",
                    site="s",
                    side="left",
                    imaging="ct",
                    anaesthesia="local",
                    operator="op",
                    software_version="0",
                )
            )
        outbox.add(s, "alarm", {"console": "a", "code": "x", "ts_ms": 1})
        outbox.add(s, "cycle", {"procedure_id": 2, "ts_ms": 2})
        outbox.add(s, "cycle", {"procedure_id": 1, "ts_ms": 3})
    with Session(engine) as s:
        assert [i.payload["ts_ms"] for i in outbox.pending(s, 10, "a")] == [1, 3]
        assert [i.payload["ts_ms"] for i in outbox.pending(s, 10, "b")] == [2]
        assert len(outbox.pending(s, 10)) == 3
    engine.dispose()
