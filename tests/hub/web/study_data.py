"""A followed study for the study pages: tests/hub/test_followup_cli's study (four
subjects at site-a and site-b, follow-up entered, a day-7 infection signed) with the
web app on it, on SQLite and PostgreSQL, and a site-a coordinator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from cryod.hub.config import load_config
from cryod.hub.store.db import make_engine
from cryod.hub.store.models import AuditEntry
from cryod.hub.web.app import WebSettings
from tests.hub.test_cli import NODE, ROOT_PW, out, run
from tests.hub.test_followup_cli import (  # noqa: F401  (fixtures)
    INV_PW,
    MON_PW,
    NOW,
    NURSE_PW,
    DrainedJournal,
    _follow_the_study,
    journal,
    study,
    study_config,
)

SITE_PW = "site-a-nurse-horse"
PASSWORDS = {"root": ROOT_PW, "nurse": NURSE_PW, "inv": INV_PW, "mon": MON_PW, "sita": SITE_PW}
STUDY_ID = "MN-CRYO-EXAMPLE"


@pytest.fixture
def followed(
    study: Path,  # noqa: F811
    db_url: str,
    journal: DrainedJournal,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> Iterator[WebSettings]:
    """The study followed up, a site-a coordinator added; the web app's settings on it."""
    argv = ["user", "add", "sita", "--role", "coordinator", "--study", STUDY_ID]
    assert run(study, *argv, "--site", "site-a", "--as", "root", passwords=[ROOT_PW, SITE_PW]) == 0
    _follow_the_study(study, capsys)
    out(capsys)
    loaded = load_config(study)
    engine = make_engine(db_url)
    try:
        yield WebSettings(
            engine=engine,
            node=NODE,
            anchor_file=loaded.anchor_file,
            journal_socket=journal.path,
            profiles=tuple(loaded.profiles),
            wall=lambda: NOW,
        )
    finally:
        engine.dispose()


def exports_audited(engine: Engine) -> list[dict[str, object]]:
    with Session(engine) as s:
        rows = s.execute(
            select(AuditEntry).where(AuditEntry.kind == "exported").order_by(AuditEntry.seq)
        ).scalars()
        return [dict(r.payload) for r in rows]
