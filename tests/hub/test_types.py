"""The column types that differ between PostgreSQL and SQLite, round-tripped on both."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, Table, insert, select
from sqlalchemy.exc import StatementError

from cryod.hub.store.types import Bytes, Json, UtcDateTime
from cryod.integrity import encode_json, entry_hash, format_time

TIMES = [
    dt.datetime(2026, 3, 1, 9, 15, 2, 123456, tzinfo=dt.UTC),
    dt.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
    dt.datetime(2026, 3, 29, 1, 30, 0, 1, tzinfo=dt.timezone(dt.timedelta(hours=2))),
]
PAYLOADS: list[Any] = [
    {"b": 1, "a": [1.5, -0.0, 1e-7, 2**53, None, True, False], "é": "naïve ✓ 𝄞"},
    {"nested": {"deep": [{"x": 0.1}, {"y": "30"}]}, "n": 30, "m": 30.0},
    [],
    {"empty": {}, "text": 'line\nbreak \\ "quoted"'},
]


@pytest.fixture
def table(engine: Engine) -> Table:
    md = MetaData()
    t = Table(
        "probe",
        md,
        Column("id", Integer, primary_key=True),
        Column("at", UtcDateTime),
        Column("doc", Json),
        Column("data", Bytes),
    )
    md.create_all(engine)
    return t


def test_times_come_back_aware_utc_to_the_microsecond(engine: Engine, table: Table) -> None:
    with engine.begin() as conn:
        for i, t in enumerate(TIMES):
            conn.execute(insert(table).values(id=i, at=t))
    with engine.connect() as conn:
        got = [r.at for r in conn.execute(select(table.c.at).order_by(table.c.id))]
    assert got == TIMES
    assert all(g.utcoffset() == dt.timedelta(0) for g in got)
    assert [format_time(g) for g in got] == [format_time(t) for t in TIMES]


def test_times_sort_as_time(engine: Engine, table: Table) -> None:
    with engine.begin() as conn:
        for i, t in enumerate(TIMES):
            conn.execute(insert(table).values(id=i, at=t))
    with engine.connect() as conn:
        got = list(conn.execute(select(table.c.at).order_by(table.c.at)).scalars())
    assert got == sorted(TIMES)


def test_a_naive_time_is_refused(engine: Engine, table: Table) -> None:
    with pytest.raises(StatementError, match="aware UTC"), engine.begin() as conn:
        conn.execute(insert(table).values(id=1, at=dt.datetime(2026, 3, 1, 9, 15)))


def test_json_payloads_keep_their_canonical_bytes_and_entry_hash(
    engine: Engine, table: Table
) -> None:
    with engine.begin() as conn:
        for i, p in enumerate(PAYLOADS):
            conn.execute(insert(table).values(id=i, doc=p))
    with engine.connect() as conn:
        got = list(conn.execute(select(table.c.doc).order_by(table.c.id)).scalars())
    at = "2026-03-01T09:15:02.123456Z"
    for stored, original in zip(got, PAYLOADS, strict=True):
        assert encode_json(stored) == encode_json(original)
        assert entry_hash(7, at, "n", "k", stored, "0" * 64) == entry_hash(
            7, at, "n", "k", original, "0" * 64
        )


def test_bytes_round_trip(engine: Engine, table: Table) -> None:
    data = bytes(range(256)) * 4
    with engine.begin() as conn:
        conn.execute(insert(table).values(id=1, data=data))
        conn.execute(insert(table).values(id=2, data=b""))
    with engine.connect() as conn:
        got = list(conn.execute(select(table.c.data).order_by(table.c.id)).scalars())
    assert got == [data, b""]
