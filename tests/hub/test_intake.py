"""The ingest transaction (``cryod.hub.intake``) on PostgreSQL and SQLite.

Batches as the subscriber hands them over: decided in order with the rooms'
views kept in memory, written in bulk (COPY on PostgreSQL, executemany on
SQLite), one transaction. What they store verifies like what the one-message
path stores; duplicates and reordering inside one batch and across batches
change nothing; a message the database refuses is quarantined on its own.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from cryod.hub.ingest import Accept, Duplicate, Hold, Quarantine
from cryod.hub.intake import Incoming, Intake, summarize
from cryod.hub.store.models import Gap, Held, Quarantined, ReceivedBlock, ReceivedEntry, ReceivedRow

from .conftest import T0
from .fake_room import PROFILE, FakeRoom, raw
from .followup_study import register
from .test_received import PROFILES, count, verify


def topic(room: FakeRoom) -> str:
    return f"cryod-record/v1/{room.site}/{room.node}/chain"


def incoming(room: FakeRoom, doc: dict[str, Any], at: dt.datetime = T0) -> Incoming:
    return Incoming(topic(room), raw(doc), at)


@pytest.fixture
def intake(migrated: Engine) -> Intake:
    return Intake(migrated, lambda: PROFILES)


def chain_of(room: FakeRoom, n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            out.append(room.event())
        elif kind == 1:
            out.append(room.row(row_id=i, profile=PROFILE))
        elif kind == 2:
            out.append(room.samples(n=40))
        else:
            out.append(room.row(row_id=i))
    return out


def test_a_batch_of_several_rooms_is_stored_and_verifies(migrated: Engine, intake: Intake) -> None:
    rooms = [FakeRoom(node=f"room-{i}") for i in range(3)]
    for r in rooms:
        register(migrated, r)
    docs = {r.node: chain_of(r, 12) for r in rooms}
    # interleaved as a broker delivers several rooms
    batch = [incoming(r, docs[r.node][i]) for i in range(12) for r in rooms]
    outcomes = intake.process(batch)
    assert summarize(outcomes) == {"accept": 36, "duplicate": 0, "hold": 0, "quarantine": 0,
                                   "ignore": 0}  # fmt: skip
    assert count(migrated, ReceivedEntry) == 36
    assert count(migrated, ReceivedRow) == 18
    assert count(migrated, ReceivedBlock) == 9
    for r in rooms:
        assert verify(migrated, r.node).lines() == [
            f"collector copy consistent with {r.node} to seq 12"
        ]
    with Session(migrated) as s:
        e = s.get(ReceivedEntry, ("room-1", 2))
        assert e is not None
        assert (e.profile_id, e.profile_hash) == (PROFILE["id"], PROFILE["hash"])
        assert e.received_at == T0
        assert e.payload == docs["room-1"][1]["entry"]["payload"]
        stored = dict(s.execute(select(ReceivedEntry.seq, ReceivedEntry.hash).where(
            ReceivedEntry.node == "room-0")).all())  # fmt: skip
    assert stored == rooms[0].hashes


def test_duplicated_and_reordered_deliveries_store_each_entry_once(
    migrated: Engine, intake: Intake
) -> None:
    room = FakeRoom()
    register(migrated, room)
    docs = chain_of(room, 40)
    deliveries = [incoming(room, d) for d in docs] * 2
    random.Random(21).shuffle(deliveries)
    # in batches of 7, as a broker redelivering out of order would hand them over
    outcomes = []
    for i in range(0, len(deliveries), 7):
        outcomes += intake.process(deliveries[i : i + 7])
    counts = summarize(outcomes)
    assert counts["accept"] == 40
    assert counts["quarantine"] == 0
    assert count(migrated, ReceivedEntry) == 40
    assert count(migrated, Held) == 0
    with Session(migrated) as s:
        assert s.execute(select(func.count()).select_from(Gap).where(
            Gap.closed_at.is_(None))).scalar_one() == 0  # fmt: skip
    assert verify(migrated, room.node).lines() == [
        f"collector copy consistent with {room.node} to seq 40"
    ]


def test_the_same_entry_twice_in_one_batch_is_a_duplicate(migrated: Engine, intake: Intake) -> None:
    room = FakeRoom()
    register(migrated, room)
    a, b = room.event(), room.samples()
    outcomes = intake.process([incoming(room, a), incoming(room, a), incoming(room, b),
                               incoming(room, b)])  # fmt: skip
    assert [o.decision.action for o in outcomes] == ["accept", "duplicate", "accept", "duplicate"]
    assert isinstance(outcomes[1].decision, Duplicate)
    assert count(migrated, ReceivedEntry) == 2


def test_a_gap_inside_a_batch_is_held_then_released_by_a_later_batch(
    migrated: Engine, intake: Intake
) -> None:
    room = FakeRoom()
    register(migrated, room)
    docs = chain_of(room, 8)
    first = intake.process([incoming(room, d) for d in docs[:2] + docs[4:]])
    assert summarize(first)["hold"] == 4
    gaps = [o.decision for o in first if isinstance(o.decision, Hold)]
    assert gaps[0].repair == ("cryoctl record resend --from 3 --to 4",)
    second = intake.process([incoming(room, docs[2]), incoming(room, docs[3])])
    assert [o.decision.entry.seq for o in second if isinstance(o.decision, Accept)] == [
        3, 4, 5, 6, 7, 8,
    ]  # fmt: skip
    assert count(migrated, Held) == 0
    with Session(migrated) as s:
        (gap,) = s.execute(select(Gap)).scalars().all()
        assert (gap.first_seq, gap.last_seq, gap.closed_at) == (3, 4, T0)
    assert verify(migrated, room.node).exit_code == 0


def test_a_message_on_another_rooms_topic_and_garbage_are_quarantined(
    migrated: Engine, intake: Intake
) -> None:
    room = FakeRoom()
    register(migrated, room)
    doc = room.event()
    outcomes = intake.process([
        Incoming("cryod-record/v1/site-a/room-x/chain", raw(doc), T0),
        Incoming(topic(room), b"\xff\xfe", T0),
        Incoming("cryod-record/v1/bad topic", raw(doc), T0),
        incoming(room, doc),
    ])  # fmt: skip
    assert [o.decision.action for o in outcomes] == [
        "quarantine", "quarantine", "quarantine", "accept",
    ]  # fmt: skip
    with Session(migrated) as s:
        reasons = s.execute(select(Quarantined.reason, Quarantined.topic).order_by(
            Quarantined.id)).all()  # fmt: skip
    assert [r for r, _ in reasons] == ["malformed"] * 3
    assert reasons[0][1] == "cryod-record/v1/site-a/room-x/chain"


def test_a_message_the_database_refuses_is_quarantined_alone(
    migrated: Engine, intake: Intake
) -> None:
    """PostgreSQL's JSONB refuses a NUL character; SQLite stores it."""
    room = FakeRoom()
    register(migrated, room)
    a = room.event()
    b = room.event(note="nul \u0000 inside")
    c = room.event()
    outcomes = intake.process([incoming(room, a), incoming(room, b), incoming(room, c)])
    if migrated.dialect.name == "postgresql":
        assert [o.decision.action for o in outcomes] == ["accept", "quarantine", "hold"]
        q = outcomes[1].decision
        assert isinstance(q, Quarantine)
        assert "database refused" in q.detail
        assert (q.node, q.seq) == (room.node, 2)
        assert count(migrated, ReceivedEntry) == 1
    else:
        assert [o.decision.action for o in outcomes] == ["accept"] * 3
        assert verify(migrated, room.node).exit_code == 0


def test_a_poison_message_is_quarantined_and_ingest_goes_on(
    migrated: Engine, intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected failure for one message: that message quarantined, the rest stored."""
    from cryod.hub import intake as module

    real = module.decide

    def failing(msg: Any, *args: Any, **kw: Any) -> Any:
        if msg.seq == 2:
            raise RuntimeError("boom: PSN-0042")
        return real(msg, *args, **kw)

    monkeypatch.setattr(module, "decide", failing)
    room = FakeRoom()
    register(migrated, room)
    docs = [room.event(), room.event(), room.event()]
    outcomes = intake.process([incoming(room, d) for d in docs])
    assert [o.decision.action for o in outcomes] == ["accept", "quarantine", "hold"]
    q = outcomes[1].decision
    assert isinstance(q, Quarantine)
    assert q.detail == "could not be processed: RuntimeError"
    assert (q.node, q.seq) == (room.node, 2)
    assert count(migrated, ReceivedEntry) == 1


def test_held_for_a_profile_until_it_is_added(migrated: Engine) -> None:
    book: dict[tuple[str, str], str] = {}
    intake = Intake(migrated, lambda: book)
    room = FakeRoom()
    register(migrated, room)
    docs = [room.event(), room.row(profile=PROFILE), room.samples(), room.event()]
    outcomes = intake.process([incoming(room, d) for d in docs])
    assert [o.decision.action for o in outcomes] == ["accept", "hold", "hold", "hold"]
    assert outcomes[1].decision.reason == "profile"  # type: ignore[union-attr]
    assert intake.redecide_profile_holds() == []  # still unknown: nothing changes
    assert count(migrated, Held) == 3
    book.update(PROFILES)
    again = intake.redecide_profile_holds()
    assert [o.decision.entry.seq for o in again if isinstance(o.decision, Accept)] == [2, 3, 4]
    assert count(migrated, Held) == 0
    assert verify(migrated, room.node).lines() == [
        f"collector copy consistent with {room.node} to seq 4"
    ]


def test_a_held_message_that_fails_again_stays_held_and_the_others_go_on(
    migrated: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryod.hub import intake as module

    book: dict[tuple[str, str], str] = {}
    intake = Intake(migrated, lambda: book)
    bad, good = FakeRoom(node="room-bad"), FakeRoom(node="room-good")
    for r in (bad, good):
        register(migrated, r)
    intake.process([incoming(r, r.row(profile=PROFILE)) for r in (bad, good)])
    assert count(migrated, Held) == 2
    book.update(PROFILES)
    real = module.parse_message

    def failing(raw: bytes) -> Any:
        msg = real(raw)
        if msg.node == "room-bad":
            raise RuntimeError("boom")
        return msg

    monkeypatch.setattr(module, "parse_message", failing)
    again = intake.redecide_profile_holds()
    assert [(o.decision.entry.node, o.decision.entry.seq) for o in again
            if isinstance(o.decision, Accept)] == [("room-good", 1)]  # fmt: skip
    with Session(migrated) as s:
        assert s.execute(select(Held.node)).scalars().all() == ["room-bad"]


def test_an_unreachable_database_raises_and_commits_nothing(tmp_path: Any) -> None:
    engine = create_engine("postgresql+psycopg://nobody@/none?host=/nonexistent&connect_timeout=1")
    room = FakeRoom()
    with pytest.raises(OperationalError):
        Intake(engine, lambda: PROFILES).process([incoming(room, room.event())])
    engine.dispose()
