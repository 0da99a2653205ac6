"""Collector fixtures: every database test runs on SQLite and on PostgreSQL.

``db_url`` is parametrized over both backends: a SQLite file in the test's
temporary directory, and a fresh database in a throwaway PostgreSQL cluster
(tests/pg.py: one cluster per test session, one database per test, never the
machine's own server). ``engine`` is an engine on it (disposed after the test,
so no connection outlives it); ``migrated`` is that database at head.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import Engine

from cryod.hub.store.db import make_engine
from cryod.hub.store.migrate import upgrade
from tests.pg import PgCluster, require_postgres, running_cluster

if TYPE_CHECKING:
    from .rig import HubRig

BACKENDS = ("sqlite", "postgresql")
NODE = "hub-test"
T0 = dt.datetime(2026, 3, 1, 9, 15, 2, 123456, tzinfo=dt.UTC)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    with running_cluster(require_postgres()) as cluster:
        yield cluster


def database_url(request: pytest.FixtureRequest, backend: str, sqlite_file: Path) -> Iterator[str]:
    """An empty database on ``backend``: ``sqlite_file``, or a fresh database in the
    session's PostgreSQL cluster (dropped afterwards)."""
    if backend == "sqlite":
        yield f"sqlite:///{sqlite_file}"
        return
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    name = cluster.create_database()
    try:
        yield cluster.url(name)
    finally:
        cluster.drop_database(name)


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from database_url(request, request.param, tmp_path / "hub.db")


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def migrated(engine: Engine) -> Engine:
    upgrade(engine, node=NODE, now=T0)
    return engine


@pytest.fixture
def rig(tmp_path: Path, db_url: str) -> Iterator[HubRig]:
    """A collector under test (tests/hub/rig.py) on ``db_url``, closed afterwards."""
    from .rig import HubRig  # rig.py imports this module

    r = HubRig(tmp_path, db_url)
    try:
        yield r
    finally:
        r.close()
