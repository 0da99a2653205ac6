"""The ingest core's decisions, one by one (pure: no database, no broker, time injected)."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import pytest

from cryod.hub.ingest import (
    SKEW_LIMIT_S,
    Accept,
    Decision,
    Duplicate,
    Hold,
    Ignore,
    Quarantine,
    Registration,
    RoomView,
    SeqRange,
    decide,
    missing_ranges,
    repair_command,
)
from cryod.hub.messages import (
    ACCEPTED_SCHEMAS,
    MAX_MESSAGE_BYTES,
    MessageError,
    parse_message,
    parse_topic,
)
from cryod.integrity import Head

from .fake_room import PROFILE, FakeRoom, raw, tampered

PROFILES = {(PROFILE["id"], PROFILE["version"]): PROFILE["hash"]}


def received(doc: dict[str, Any], after_s: float = 0.5) -> dt.datetime:
    sent = dt.datetime.strptime(doc["sent_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    return sent + dt.timedelta(seconds=after_s)


class Collector:
    """The core driven like the shell will drive it, with dicts for storage."""

    def __init__(self, reg: Registration | None) -> None:
        self.reg = reg
        self.stored: dict[int, str] = {}
        self.held: dict[int, bytes] = {}
        self.held_hash: dict[int, str] = {}
        self.head: Head | None = None

    def view(self) -> RoomView | None:
        if self.reg is None:
            return None
        return RoomView(self.reg, self.head, self.stored, self.held_hash)

    def feed(self, doc: dict[str, Any], *, after_s: float = 0.5, **kw: Any) -> Decision:
        msg = parse_message(raw(doc))
        d = decide(
            msg,
            self.view(),
            received_at=received(doc, after_s),
            profiles=kw.get("profiles", PROFILES),
            topic=kw.get("topic"),
        )
        self.apply(d)
        return d

    def apply(self, d: Decision) -> None:
        if isinstance(d, Accept):
            self.stored[d.entry.seq] = d.entry.hash
            self.head = Head(d.entry.seq, d.entry.hash)
            self.held.pop(d.entry.seq, None)
            self.held_hash.pop(d.entry.seq, None)
            view = self.view()
            assert view is not None
            nxt = view.releasable()
            if nxt is not None:  # the shell decides a released message again
                msg = parse_message(self.held[nxt])
                self.apply(decide(msg, view, received_at=d.entry.received_at, profiles=PROFILES))
        elif isinstance(d, Hold):
            self.held[d.message.seq] = d.message.raw
            self.held_hash[d.message.seq] = d.message.entry.hash


@pytest.fixture
def room() -> FakeRoom:
    return FakeRoom()


@pytest.fixture
def hub(room: FakeRoom) -> Collector:
    return Collector(Registration(room.node, room.site))


# ---- accept ---------------------------------------------------------------------------------
def test_a_chain_received_in_order_is_accepted_entry_by_entry(
    room: FakeRoom, hub: Collector
) -> None:
    docs = [
        room.event(),
        room.row(),
        room.samples(),
        room.row(row_id=2),
        room.event("cycle_closed"),
    ]
    for doc in docs:
        d = hub.feed(doc)
        assert isinstance(d, Accept), d
    assert hub.head == Head(5, room.head)
    accepted = hub.stored
    assert accepted == room.hashes


def test_an_accepted_entry_carries_what_storage_writes(room: FakeRoom, hub: Collector) -> None:
    hub.feed(room.event())
    d = hub.feed(room.row())
    assert isinstance(d, Accept)
    e = d.entry
    assert (e.node, e.seq, e.kind, e.v) == (room.node, 2, "row", 2)
    assert len(e.rows) == 1
    assert e.rows[0].table == "cycles"
    assert e.rows[0].key == {"id": 1}
    assert e.rows[0].digest == e.payload["digest"]
    assert e.block is None
    s = hub.feed(room.samples(n=7))
    assert isinstance(s, Accept)
    assert s.entry.block is not None
    assert s.entry.block_digest == s.entry.payload["digest"]
    assert s.entry.at.tzinfo is not None


def test_a_redaction_entry_carries_no_row_and_is_accepted(room: FakeRoom, hub: Collector) -> None:
    hub.feed(room.row())
    assert isinstance(hub.feed(room.row(op="redact")), Accept)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("samples", "not_procedure"), ("samples", "redacted"), ("row", "superseded"),
     ("row", "redacted")],
)  # fmt: skip
def test_an_entry_withheld_with_its_reason_is_accepted_without_content(
    room: FakeRoom, hub: Collector, kind: str, reason: str
) -> None:
    hub.feed(room.event())
    d = hub.feed(room.withheld(kind, reason))
    assert isinstance(d, Accept), d
    assert d.entry.rows == ()
    assert d.entry.block is None


def test_a_withheld_entry_carrying_content_or_an_unknown_reason_is_corrupt(
    room: FakeRoom, hub: Collector
) -> None:
    hub.feed(room.event())
    doc = room.withheld("row", "not_procedure")  # a row is never "not a procedure's"
    d = hub.feed(doc)
    assert isinstance(d, Quarantine), d
    assert d.reason == "corrupt"
    assert "cannot be withheld" in d.detail
    room2, hub2 = FakeRoom(), Collector(Registration("room-1", "site-a"))
    hub2.feed(room2.event())
    doc = room2.samples()
    doc["withheld"] = {"reason": "not_procedure", "by_seq": None}
    d = hub2.feed(doc)
    assert isinstance(d, Quarantine)
    assert "carries no rows or sample block" in d.detail
    with pytest.raises(MessageError, match="withheld"):
        parse_message(raw(tampered(doc, "withheld", {"reason": "lost", "by_seq": None})))


# ---- duplicates -----------------------------------------------------------------------------
def test_a_redelivered_entry_is_a_duplicate_and_changes_nothing(
    room: FakeRoom, hub: Collector
) -> None:
    first, second = room.event(), room.row()
    hub.feed(first)
    hub.feed(second)
    for doc in (first, second, first):
        d = hub.feed(doc)
        assert isinstance(d, Duplicate)
        assert d.where == "stored"
    assert hub.head == Head(2, room.head)


def test_a_redelivered_held_entry_is_a_duplicate_of_the_held_copy(
    room: FakeRoom, hub: Collector
) -> None:
    room.event()
    third = (room.event(), room.event())[1]
    assert isinstance(hub.feed(third), Hold)
    d = hub.feed(third)
    assert isinstance(d, Duplicate)
    assert d.where == "held"


# ---- gaps -----------------------------------------------------------------------------------
def test_an_entry_past_the_next_is_held_and_the_gap_named_with_its_repair(
    room: FakeRoom, hub: Collector
) -> None:
    hub.feed(room.event())
    lost = [room.event(), room.event()]
    d = hub.feed(room.row())
    assert isinstance(d, Hold)
    assert d.reason == "gap"
    assert d.missing == (SeqRange(2, 3),)
    assert d.repair == ("cryoctl record resend --from 2 --to 3",)
    assert "2..3" in d.detail
    assert hub.head == Head(1, room.hashes[1])
    # the lost entries arrive (resent): the held one is released after them
    for doc in lost:
        assert isinstance(hub.feed(doc), Accept)
    assert hub.head == Head(4, room.head)
    assert hub.held == {}


def test_missing_ranges_skip_what_is_held(room: FakeRoom, hub: Collector) -> None:
    docs = [room.event() for _ in range(7)]
    hub.feed(docs[0])  # 1 stored; expected 2
    hub.feed(docs[3])  # 4 held
    d = hub.feed(docs[6])  # 7: missing 2..3 and 5..6
    assert isinstance(d, Hold)
    assert d.missing == (SeqRange(2, 3), SeqRange(5, 6))
    view = hub.view()
    assert view is not None
    assert view.gaps() == [SeqRange(2, 3), SeqRange(5, 6)]
    for doc in docs[1:3] + docs[4:6]:
        hub.feed(doc)
    assert hub.head == Head(7, room.head)


def test_missing_ranges_function() -> None:
    assert missing_ranges(5, []) == []
    assert missing_ranges(5, [7]) == [SeqRange(5, 6)]
    assert missing_ranges(5, [5, 6]) == []
    assert missing_ranges(5, [6, 9]) == [SeqRange(5, 5), SeqRange(7, 8)]
    assert missing_ranges(5, [3, 9], upto=8) == [SeqRange(5, 7)]
    assert missing_ranges(1, [2], upto=4) == [SeqRange(1, 1), SeqRange(3, 3)]
    assert repair_command(2, 3) == "cryoctl record resend --from 2 --to 3"
    assert str(SeqRange(4, 4)) == "4"


# ---- forks ----------------------------------------------------------------------------------
def test_the_same_seq_with_another_hash_is_a_fork_and_quarantined(
    room: FakeRoom, hub: Collector
) -> None:
    hub.feed(room.event())
    hub.feed(room.event())
    other = FakeRoom(room.node, room.site, start=room.now + dt.timedelta(hours=1))
    other.event()
    forked = other.event(kind_note="rewritten")  # seq 2 of another history, self-consistent
    d = hub.feed(forked)
    assert isinstance(d, Quarantine)
    assert d.reason == "fork"
    assert (d.node, d.seq) == (room.node, 2)
    assert hub.head == Head(2, room.hashes[2])


def test_an_entry_that_does_not_extend_the_head_is_a_fork(room: FakeRoom, hub: Collector) -> None:
    hub.feed(room.event())
    other = FakeRoom(room.node, room.site, start=room.now + dt.timedelta(hours=1))
    other.event(note="another first entry")
    d = hub.feed(other.event())  # seq 2, but its prev_hash is another entry 1's
    assert isinstance(d, Quarantine)
    assert d.reason == "fork"
    assert "prev_hash" in d.detail


def test_a_held_seq_with_another_hash_is_a_fork(room: FakeRoom, hub: Collector) -> None:
    room.event()
    room.event()
    hub.feed(room.event())  # seq 3 held
    other = FakeRoom(room.node, room.site, start=room.now + dt.timedelta(hours=1))
    for _ in range(3):
        doc = other.event(note="other")
    d = hub.feed(doc)
    assert isinstance(d, Quarantine)
    assert d.reason == "fork"


def test_a_first_entry_not_after_genesis_is_a_fork(room: FakeRoom, hub: Collector) -> None:
    doc = tampered(room.event(), "entry.prev_hash", "1" * 64)
    # recompute the hash so only the link is wrong
    from cryod.integrity import entry_hash

    e = doc["entry"]
    e["hash"] = entry_hash(e["seq"], e["at"], e["node"], e["kind"], e["payload"], e["prev_hash"])
    d = hub.feed(doc)
    assert isinstance(d, Quarantine)
    assert d.reason == "fork"
    assert "genesis" in d.detail


# ---- registration ------------------------------------------------------------------------------
def test_a_room_registered_from_its_head_starts_there(room: FakeRoom) -> None:
    docs = [room.event() for _ in range(5)]
    hub = Collector(Registration(room.node, room.site, first_seq=3, first_hash=room.hashes[3]))
    assert isinstance(hub.feed(docs[0]), Ignore)
    assert isinstance(hub.feed(docs[3]), Hold)  # 4 before 3: a gap
    assert isinstance(hub.feed(docs[2]), Accept)  # 3, the registered first entry, then 4
    assert hub.head == Head(4, room.hashes[4])
    assert isinstance(hub.feed(docs[4]), Accept)


def test_a_first_entry_other_than_the_registered_one_is_a_fork(room: FakeRoom) -> None:
    docs = [room.event() for _ in range(3)]
    hub = Collector(Registration(room.node, room.site, first_seq=3, first_hash="e" * 64))
    d = hub.feed(docs[2])
    assert isinstance(d, Quarantine)
    assert d.reason == "fork"


def test_a_registration_after_entry_1_needs_its_hash() -> None:
    with pytest.raises(ValueError, match="needs its hash"):
        Registration("r", "s", first_seq=3)
    with pytest.raises(ValueError, match="1 or more"):
        Registration("r", "s", first_seq=0)


# ---- unregistered, site, topic ---------------------------------------------------------------
def test_an_unregistered_node_is_quarantined(room: FakeRoom) -> None:
    d = Collector(None).feed(room.event())
    assert isinstance(d, Quarantine)
    assert d.reason == "unregistered"
    assert d.node == room.node


def test_a_room_naming_another_site_is_quarantined(room: FakeRoom) -> None:
    hub = Collector(Registration(room.node, "site-b"))
    d = hub.feed(room.event())
    assert isinstance(d, Quarantine)
    assert d.reason == "site"


def test_a_message_on_another_rooms_topic_is_quarantined(room: FakeRoom, hub: Collector) -> None:
    topic = parse_topic(f"cryod-record/v1/{room.site}/room-2/chain")
    d = hub.feed(room.event(), topic=topic)
    assert isinstance(d, Quarantine)
    assert d.reason == "malformed"
    ok = parse_topic(f"cryod-record/v1/{room.site}/{room.node}/chain")
    assert isinstance(hub.feed(room.event(), topic=ok), Hold)  # seq 2 after a quarantined 1


@pytest.mark.parametrize(
    "topic",
    [
        "cryod/v1/s/n/chain",
        "cryod-record/v1/s/n",
        "cryod-record/v1/s/+/chain",
        "cryod-record/v2/s/n/chain",
        "cryod-record/v1/s/n/chain/x",
    ],
)
def test_topics_that_are_not_record_topics(topic: str) -> None:
    with pytest.raises(MessageError):
        parse_topic(topic)


# ---- corrupt content -------------------------------------------------------------------------
CORRUPTIONS = {
    "payload edited": ("entry.payload.console", "c2"),
    "hash edited": ("entry.hash", "0" * 64),
    "at edited": ("entry.at", "2026-03-01T09:15:03.000000Z"),
    "kind edited": ("entry.kind", "procedure_closed"),
}


@pytest.mark.parametrize("what", CORRUPTIONS)
def test_an_entry_whose_hash_does_not_match_its_content_is_corrupt(
    room: FakeRoom, hub: Collector, what: str
) -> None:
    path, value = CORRUPTIONS[what]
    d = hub.feed(tampered(room.event(), path, value))
    assert isinstance(d, Quarantine)
    assert d.reason == "corrupt"
    assert hub.head is None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_row_copies_are_rehashed(room: FakeRoom, hub: Collector) -> None:
    doc = room.row()
    canonical = base64.b64decode(doc["rows"][0]["canonical_b64"])
    edited = canonical.replace(b"freeze", b"thawed")
    cases = {
        "canonical edited": tampered(doc, "rows.0.canonical_b64", _b64(edited)),
        "salt edited": tampered(doc, "rows.0.salt_hex", "ff" * 16),
        "another table": tampered(doc, "rows.0.table", "alarms"),
        "another key": tampered(doc, "rows.0.key", {"id": 2}),
        "no row": tampered(doc, "rows", []),
        "two rows": tampered(doc, "rows", doc["rows"] * 2),
        "not canonical": tampered(doc, "rows.0.canonical_b64", _b64(b"[junk")),
        "a block too": tampered(doc, "block", {"encoding": "cryod.samples/1", "data_b64": ""}),
    }
    for what, bad in cases.items():
        d = hub.feed(bad)
        assert isinstance(d, Quarantine), what
        assert d.reason == "corrupt", (what, d.detail)
    assert isinstance(hub.feed(doc), Accept)


def test_row_bytes_of_another_row_are_refused(room: FakeRoom, hub: Collector) -> None:
    a = room.row(row_id=1)
    hub.feed(a)
    b = room.row(row_id=2)
    # b's entry with a's row bytes (whose salted digest is a's): corrupt
    bad = tampered(b, "rows.0.canonical_b64", a["rows"][0]["canonical_b64"])
    d = hub.feed(bad)
    assert isinstance(d, Quarantine)
    assert d.reason == "corrupt"


def test_sample_blocks_are_rehashed(room: FakeRoom, hub: Collector) -> None:
    doc = room.samples()
    data = base64.b64decode(doc["block"]["data_b64"])
    cases = {
        "block edited": tampered(doc, "block.data_b64", _b64(data.replace(b"tip_c", b"tip_x"))),
        "no block": tampered(doc, "block", None),
        "another encoding": tampered(doc, "block.encoding", "cryod.samples/2"),
        "rows too": tampered(doc, "rows", FakeRoom().row()["rows"]),
    }
    assert b"tip_c" in data
    for what, bad in cases.items():
        d = hub.feed(bad)
        assert isinstance(d, Quarantine), what
        assert d.reason == "corrupt", (what, d.detail)
    assert isinstance(hub.feed(doc), Accept)


def test_an_event_entry_carries_no_rows_or_block(room: FakeRoom, hub: Collector) -> None:
    doc = room.event()
    bad = tampered(doc, "block", {"encoding": "cryod.samples/1", "data_b64": ""})
    d = hub.feed(bad)
    assert isinstance(d, Quarantine)
    assert d.reason == "corrupt"


# ---- study profiles ----------------------------------------------------------------------------
def test_an_unknown_profile_version_is_held_until_registered(
    room: FakeRoom, hub: Collector
) -> None:
    unknown = {**PROFILE, "version": "2.0"}
    doc = room.row(profile=unknown)
    d = hub.feed(doc)
    assert isinstance(d, Hold)
    assert d.reason == "profile"
    assert d.missing == ()
    assert "2.0" in d.detail
    # registered: the held message is decided again and accepted
    msg = parse_message(hub.held[1])
    book = {**PROFILES, (unknown["id"], "2.0"): unknown["hash"]}
    view = hub.view()
    assert view is not None
    again = decide(msg, view, received_at=received(doc, 3600), profiles=book)
    assert isinstance(again, Accept)
    assert again.entry.profile is not None
    assert again.entry.profile.version == "2.0"


def test_a_known_profile_version_with_another_hash_is_quarantined(
    room: FakeRoom, hub: Collector
) -> None:
    d = hub.feed(room.row(profile={**PROFILE, "hash": "sha256:" + "cd" * 32}))
    assert isinstance(d, Quarantine)
    assert d.reason == "profile"


def test_a_known_profile_is_accepted(room: FakeRoom, hub: Collector) -> None:
    d = hub.feed(room.row(profile=PROFILE))
    assert isinstance(d, Accept)


# ---- clock skew ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("after_s", "flagged"),
    [
        (0.5, False),
        (SKEW_LIMIT_S - 1, False),
        (SKEW_LIMIT_S + 1, True),
        (-SKEW_LIMIT_S + 1, False),
        (-SKEW_LIMIT_S - 1, True),
    ],
)
def test_clock_skew_over_60_s_is_flagged_never_refused(
    room: FakeRoom, hub: Collector, after_s: float, flagged: bool
) -> None:
    d = hub.feed(room.event(), after_s=after_s)
    assert isinstance(d, Accept)
    assert d.entry.skew.flagged is flagged
    assert d.entry.skew.skew_s == pytest.approx(after_s)
    assert d.entry.received_at - d.entry.at == dt.timedelta(seconds=after_s)


def test_an_entry_time_ahead_of_receipt_is_flagged_even_if_sent_at_is_right(
    room: FakeRoom, hub: Collector
) -> None:
    doc = room.event()
    future = dt.datetime.strptime(doc["sent_at"], "%Y-%m-%dT%H:%M:%S.%fZ") - dt.timedelta(
        seconds=120
    )
    doc["sent_at"] = future.strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # sent_at 2 min before at
    d = hub.feed(doc, after_s=0.0)  # received when sent: the entry is 2 min in the future
    assert isinstance(d, Accept)
    assert d.entry.skew.flagged
    assert "ahead" in d.entry.skew.detail


# ---- malformed -------------------------------------------------------------------------------
def test_malformed_messages_are_refused_by_the_parser(room: FakeRoom) -> None:
    doc = room.row()
    cases: dict[str, bytes] = {
        "not json": b"{not json",
        "not utf-8": b"\xff\xfe",
        "not an object": b"[1, 2]",
        "schema": raw({**doc, "schema": "cryod.record/9"}),
        "missing entry": raw({k: v for k, v in doc.items() if k != "entry"}),
        "bool seq": raw(tampered(doc, "entry.seq", True)),
        "seq 0": raw(tampered(doc, "entry.seq", 0)),
        "hash not hex": raw(tampered(doc, "entry.hash", "Z" * 64)),
        "time form": raw(tampered(doc, "entry.at", "2026-03-01 09:15:02")),
        "month 13": raw(tampered(doc, "sent_at", "2026-13-01T09:15:02.000000Z")),
        "unknown field": raw({**doc, "extra": 1}),
        "salt short": raw(tampered(doc, "rows.0.salt_hex", "00")),
        "base64": raw(tampered(doc, "rows.0.canonical_b64", "!!!")),
        "entry of another node": raw(tampered(doc, "entry.node", "room-2")),
        "node id": raw({**doc, "node": "room/1"}),
        "NaN": raw(doc).replace(b'"v": 2', b'"v": NaN'),
    }
    for what, data in cases.items():
        try:
            parse_message(data)
        except MessageError:
            continue
        pytest.fail(f"{what}: parsed")
    assert parse_message(raw(doc)).seq == doc["entry"]["seq"]


def test_an_oversized_message_is_refused_before_parsing() -> None:
    with pytest.raises(MessageError, match="larger than"):
        parse_message(b" " * (MAX_MESSAGE_BYTES + 1))


def test_the_current_record_schema_is_accepted() -> None:
    assert "cryod.record/1" in ACCEPTED_SCHEMAS


def test_parse_errors_name_the_field(room: FakeRoom) -> None:
    with pytest.raises(MessageError) as err:
        parse_message(raw(tampered(room.event(), "entry.prev_hash", "x")))
    assert err.value.field == "entry.prev_hash"
    doc = json.loads(raw(room.event()))
    assert doc["entry"]["seq"] == 2


def test_entries_after_one_held_for_its_profile_wait_without_a_gap(
    room: FakeRoom, hub: Collector
) -> None:
    assert isinstance(hub.feed(room.row(profile={**PROFILE, "version": "9"})), Hold)
    d = hub.feed(room.event())
    assert isinstance(d, Hold)
    assert d.reason == "gap"
    assert d.missing == ()
    assert d.detail == "entry 2 waits for entry 1, which is held"
    view = hub.view()
    assert view is not None
    assert view.gaps() == []
