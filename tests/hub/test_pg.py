"""The throwaway PostgreSQL cluster itself: its own socket, no TCP, never the machine's server."""

from __future__ import annotations

from pathlib import Path

import pytest
from _pytest.outcomes import Failed

import tests.pg
from tests.pg import PgCluster


def test_the_cluster_listens_on_its_own_unix_socket_only(pg_cluster: PgCluster) -> None:
    # postmaster.pid: pid, data dir, start time, port, socket dir, listen address, ...
    lines = (pg_cluster.data / "postmaster.pid").read_text().splitlines()
    assert Path(lines[1]) == pg_cluster.data
    assert int(lines[3]) == pg_cluster.port
    assert Path(lines[4]) == pg_cluster.base
    assert lines[5] == ""  # listen_addresses = '': no TCP socket at all
    assert (pg_cluster.base / f".s.PGSQL.{pg_cluster.port}").is_socket()
    assert f"host={pg_cluster.base}" in pg_cluster.url("x")


def test_each_test_gets_a_fresh_database(pg_cluster: PgCluster) -> None:
    a, b = pg_cluster.create_database(), pg_cluster.create_database()
    assert a != b
    pg_cluster.drop_database(a)
    pg_cluster.drop_database(b)


def test_missing_postgres_fails_in_ci_and_skips_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tests.pg, "find_pg_bin", lambda: None)
    monkeypatch.setattr(tests.pg, "IN_CI", True)
    with pytest.raises(Failed, match="required in CI"):
        tests.pg.require_postgres()
    monkeypatch.setattr(tests.pg, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        tests.pg.require_postgres()
