"""Web app fixtures: a study database (SQLite; the read model also on PostgreSQL),
the app on it with an injected clock, a logged-in client per role."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from sqlalchemy import Engine
from starlette.testclient import TestClient

from cryod.hub.store.db import make_engine
from cryod.hub.store.migrate import upgrade
from cryod.hub.web.app import WebSettings, create_app
from cryod.research.profile import load_study_profile
from tests.hub.conftest import NODE, T0

from .study import PASSWORD, Room, build_study


class Clock:
    """Monotonic time the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def study_settings(db_url: str, tmp_path: Path) -> Iterator[WebSettings]:
    """The demo study on SQLite and PostgreSQL (``db_url``), ten days after T0, with the
    Morton's example profile: the forms' and the admin pages' app settings."""
    engine = make_engine(db_url)
    try:
        upgrade(engine, node=NODE, now=T0)
        build_study(engine)
        yield WebSettings(
            engine=engine,
            node=NODE,
            anchor_file=tmp_path / "anchors.jsonl",
            mono=Clock(),
            wall=lambda: T0 + dt.timedelta(days=10),
            profiles=(load_study_profile("mortons-neuroma-example"),),
        )
    finally:
        engine.dispose()


@pytest.fixture
def study_engine(tmp_path: Path) -> Iterator[tuple[Engine, dict[str, Room]]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        upgrade(engine, node=NODE, now=T0)
        rooms = build_study(engine)
        yield engine, rooms
    finally:
        engine.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def settings(
    study_engine: tuple[Engine, dict[str, Room]], tmp_path: Path, clock: Clock
) -> WebSettings:
    return WebSettings(
        engine=study_engine[0],
        node=NODE,
        anchor_file=tmp_path / "anchors.jsonl",
        journal_socket=None,
        mono=clock,
        wall=lambda: T0 + dt.timedelta(days=10),
    )


@pytest.fixture
def client(settings: WebSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), base_url="http://testserver") as c:
        yield c


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    m = CSRF.search(html)
    assert m is not None, "no CSRF token in the page"
    return m.group(1)


def login(
    c: TestClient, user: str, password: str = PASSWORD, *, next_: str = "/board"
) -> httpx2.Response:
    page = c.get("/login")
    return c.post(
        "/login",
        data={"csrf": csrf_of(page.text), "username": user, "password": password, "next": next_},
        follow_redirects=False,
    )
