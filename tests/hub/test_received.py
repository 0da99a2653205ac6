"""Decisions applied to the database (PostgreSQL and SQLite), and the copy verified.

A small shell here plays the ingest shell's part (which arrives with the
record channel): parse, ``room_view``, ``decide``, ``save``, release what the
chain now reaches, commit. Replaying everything twice changes nothing.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from cryod.hub.ingest import Accept, Decision, Hold, Quarantine, decide, malformed
from cryod.hub.messages import MessageError, parse_message
from cryod.hub.store import received
from cryod.hub.store.db import writer
from cryod.hub.store.models import (
    Gap,
    Held,
    Quarantined,
    ReceivedBlock,
    ReceivedEntry,
    ReceivedRow,
)
from cryod.hub.verify import check_room_copy

from .conftest import T0
from .fake_room import PROFILE, FakeRoom, raw
from .followup_study import register

PROFILES = {(PROFILE["id"], PROFILE["version"]): PROFILE["hash"]}


def ingest(engine: Engine, data: bytes, now: dt.datetime = T0) -> list[Decision]:
    """One message through core and store, plus what it releases; one transaction."""
    out: list[Decision] = []
    with Session(writer(engine)) as s, s.begin():
        try:
            msg = parse_message(data)
        except MessageError as exc:
            d: Decision = malformed(data, str(exc), now)
            received.save(s, d)
            return [d]
        while True:
            d = decide(msg, received.room_view(s, msg.node), received_at=now, profiles=PROFILES)
            received.save(s, d)
            out.append(d)
            view = received.room_view(s, msg.node)
            nxt = None if view is None or not isinstance(d, Accept) else view.releasable()
            if nxt is None:
                return out
            held = received.held_message(s, msg.node, nxt)
            assert held is not None
            msg = parse_message(held)


def count(engine: Engine, model: Any) -> int:
    with Session(engine) as s:
        return int(s.execute(select(func.count()).select_from(model)).scalar_one())


def verify(engine: Engine, node: str) -> Any:
    with Session(engine) as s:
        copy = received.room_copy(s, node)
    assert copy is not None
    return check_room_copy(copy.registration, copy.entries, copy.rows, copy.blocks, copy.withheld)


@pytest.fixture
def room(migrated: Engine) -> FakeRoom:
    r = FakeRoom()
    register(migrated, r)
    return r


def test_a_room_chain_is_stored_and_verifies(migrated: Engine, room: FakeRoom) -> None:
    docs = [
        room.event(),
        room.row(profile=PROFILE),
        room.samples(n=50),
        room.row(row_id=2),
        room.event("cycle_closed"),
    ]
    for doc in docs:
        (d,) = ingest(migrated, raw(doc))
        assert isinstance(d, Accept)
    assert count(migrated, ReceivedEntry) == 5
    assert count(migrated, ReceivedRow) == 2
    assert count(migrated, ReceivedBlock) == 1
    report = verify(migrated, room.node)
    assert report.lines() == [f"collector copy consistent with {room.node} to seq 5"]
    assert report.exit_code == 0
    with Session(migrated) as s:
        e = s.get(ReceivedEntry, (room.node, 2))
        assert e is not None
        assert (e.profile_id, e.profile_version) == (PROFILE["id"], PROFILE["version"])
        assert e.received_at == T0
        assert e.payload == docs[1]["entry"]["payload"]


def test_replaying_everything_twice_stores_nothing_twice(migrated: Engine, room: FakeRoom) -> None:
    docs = [room.event(), room.row(), room.samples(), room.row(row_id=2)]
    for doc in docs + docs:
        ingest(migrated, raw(doc))
    assert count(migrated, ReceivedEntry) == 4
    assert count(migrated, ReceivedRow) == 2
    assert count(migrated, ReceivedBlock) == 1
    assert count(migrated, Quarantined) == 0
    assert verify(migrated, room.node).exit_code == 0


def test_a_gap_is_held_recorded_and_closed_when_resent(migrated: Engine, room: FakeRoom) -> None:
    docs = [room.event() for _ in range(6)]
    ingest(migrated, raw(docs[0]))
    for doc in docs[3:]:  # 2 and 3 lost
        (d,) = ingest(migrated, raw(doc))
        assert isinstance(d, Hold)
    assert count(migrated, Held) == 3
    with Session(migrated) as s:
        gaps = received.open_gaps(s, room.node)
        assert [(g.first_seq, g.last_seq) for g in gaps] == [(2, 3)]
        view = received.room_view(s, room.node)
        assert view is not None
        assert [r.repair for r in view.gaps()] == ["cryoctl record resend --from 2 --to 3"]
    ingest(migrated, raw(docs[1]))
    decisions = ingest(migrated, raw(docs[2]))  # 3, then the held 4, 5, 6 released
    assert [d.entry.seq for d in decisions if isinstance(d, Accept)] == [3, 4, 5, 6]
    assert count(migrated, Held) == 0
    with Session(migrated) as s:
        assert received.open_gaps(s, room.node) == []
        closed = s.execute(select(Gap)).scalars().one()
        assert closed.closed_at == T0
    assert verify(migrated, room.node).lines() == [
        f"collector copy consistent with {room.node} to seq 6"
    ]


def test_quarantine_keeps_the_raw_message_and_the_reason(migrated: Engine, room: FakeRoom) -> None:
    stranger = FakeRoom(node="room-9")
    forked = FakeRoom(room.node, room.site, start=T0 + dt.timedelta(hours=1))
    ingest(migrated, raw(room.event()))
    forked.event(note="x")
    cases = [raw(stranger.event()), raw(forked.event()), b"{not json"]
    for data in cases:
        (d,) = ingest(migrated, data)
        assert isinstance(d, Quarantine)
    with Session(migrated) as s:
        rows = s.execute(select(Quarantined).order_by(Quarantined.id)).scalars().all()
        assert [(q.reason, q.node, q.seq) for q in rows] == [
            ("unregistered", "room-9", 1),
            ("fork", room.node, 2),
            ("malformed", None, None),
        ]
        assert [q.raw for q in rows] == cases
    assert count(migrated, ReceivedEntry) == 1


def test_a_room_registered_from_its_head(migrated: Engine) -> None:
    r = FakeRoom(node="room-2")
    docs = [r.event() for _ in range(4)]
    register(migrated, r, first_seq=3, first_hash=r.hashes[3])
    for doc in docs:
        ingest(migrated, raw(doc))
    assert count(migrated, ReceivedEntry) == 2
    assert verify(migrated, r.node).lines() == ["collector copy consistent with room-2 to seq 4"]


def _unguard(engine: Engine, table: str) -> str:
    if engine.dialect.name == "postgresql":
        return f"ALTER TABLE {table} DISABLE TRIGGER USER"
    return f"DROP TRIGGER {table}_no_update"


@pytest.mark.parametrize(
    ("table", "sql", "expect"),
    [
        ("received_rows", "UPDATE received_rows SET canonical = :b WHERE seq = 2", "row cycles"),
        ("received_blocks", "UPDATE received_blocks SET data = :b WHERE seq = 3", "sample block"),
        ("received_entries", "UPDATE received_entries SET kind = 'x' WHERE seq = 1", "hash"),
    ],
)
def test_verify_names_an_edit_made_behind_the_collectors_back(
    migrated: Engine, room: FakeRoom, table: str, sql: str, expect: str
) -> None:
    for doc in (room.event(), room.row(), room.samples()):
        ingest(migrated, raw(doc))
    with migrated.begin() as conn:
        conn.execute(text(_unguard(migrated, table)))
        conn.execute(text(sql), {"b": b"[]"})
    report = verify(migrated, room.node)
    assert report.exit_code in (1, 4)
    assert expect in "\n".join(report.lines())


def test_entries_the_room_withheld_verify_as_withheld_not_missing(
    migrated: Engine, room: FakeRoom
) -> None:
    # samples outside a procedure stay in the room; a cycle closed after it was opened
    # travels as the later entry: neither is a missing block or row
    docs = [
        room.event(),
        room.withheld("samples"),
        room.withheld("row", "superseded"),
        room.row(row_id=1, op="update"),
    ]
    docs[2]["withheld"]["by_seq"] = docs[3]["entry"]["seq"]
    for doc in docs:
        (d,) = ingest(migrated, raw(doc))
        assert isinstance(d, Accept)
    report = verify(migrated, room.node)
    assert report.problems == []
    assert report.exit_code == 0
    assert report.withheld == {"not_procedure": 1, "superseded": 1}
    assert report.lines()[0] == f"collector copy consistent with {room.node} to seq 4"
    assert "1 not_procedure, 1 superseded" in report.lines()[1]


def test_a_withheld_claim_the_chain_does_not_bear_out_is_a_problem(
    migrated: Engine, room: FakeRoom
) -> None:
    docs = [room.event(), room.withheld("row", "superseded"), room.row(row_id=2)]
    docs[1]["withheld"]["by_seq"] = docs[2]["entry"]["seq"]  # another row, not this one
    for doc in docs:
        (d,) = ingest(migrated, raw(doc))
        assert isinstance(d, Accept)
    report = verify(migrated, room.node)
    assert report.problems == [
        "entry 2: superseded by entry 3, which does not cover the same content"
    ]
    assert report.exit_code == 4
