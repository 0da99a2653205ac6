"""What the ingest shell writes and reads: received entries, held, gaps, quarantine.

The ingest core (``cryod.hub.ingest``) decides; these functions apply a
decision in the caller's transaction, idempotently on (node, seq):

- ``room_view``: what the core needs for a room (registration, head, stored
  and held hashes);
- ``save``: an ``Accept`` (the entry, its rows, its block; closes the gaps it
  fills and removes its held copy), a ``Hold`` (the raw message, and the gap
  it opens), a ``Quarantine`` (the raw message and the reason);
  ``Duplicate`` and ``Ignore`` write nothing;
- ``held_message``: the raw bytes of a held message, to decide it again once
  the chain reaches it (``RoomView.releasable``);
- ``room_copy``: a room's received entries, rows and blocks for ``verify``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cryod.integrity import Entry, Head, format_time

from ..ingest import Accept, Decision, Hold, Quarantine, Registration, RoomView
from ..verify import StoredBlock, StoredRow
from .models import Gap, Held, Quarantined, ReceivedBlock, ReceivedEntry, ReceivedRow, Room

__all__ = [
    "RoomCopy",
    "held_message",
    "open_gaps",
    "registration",
    "room_copy",
    "room_view",
    "room_views",
    "save",
]


class _StoredHashes:
    """seq -> hash of a room's stored entries, read on demand (duplicates and forks only)."""

    def __init__(self, session: Session, node: str) -> None:
        self._session = session
        self._node = node

    def get(self, seq: int, /) -> str | None:
        return self._session.execute(
            select(ReceivedEntry.hash).where(
                ReceivedEntry.node == self._node, ReceivedEntry.seq == seq
            )
        ).scalar_one_or_none()


def registration(room: Room) -> Registration:
    return Registration(room.node, room.site, room.first_seq, room.first_hash)


def room_view(session: Session, node: str) -> RoomView | None:
    room = session.get(Room, node)
    if room is None:
        return None
    last = session.execute(
        select(ReceivedEntry.seq, ReceivedEntry.hash)
        .where(ReceivedEntry.node == node)
        .order_by(ReceivedEntry.seq.desc())
        .limit(1)
    ).first()
    held = {
        r.seq: r.hash for r in session.execute(select(Held.seq, Held.hash).where(Held.node == node))
    }
    return RoomView(
        registration=registration(room),
        head=None if last is None else Head(last.seq, last.hash),
        stored=_StoredHashes(session, node),
        held=held,
    )


def room_views(session: Session, nodes: Iterable[str]) -> dict[str, RoomView]:
    """``room_view`` for many rooms in two queries (the ingest shell, once per batch).

    Each room's head is read by a correlated ``ORDER BY seq DESC LIMIT 1`` on the
    ``(node, seq)`` primary key: two index probes per room (its seq, then its hash) on
    PostgreSQL and SQLite, however long the chains (a ``GROUP BY node`` would read every
    entry of them; ``python -m tests.hub.bench_heads`` measures both).
    Nodes that are not registered are left out."""
    wanted = sorted(set(nodes))
    if not wanted:
        return {}

    def newest(column: Any) -> Any:
        return (
            select(column)
            .where(ReceivedEntry.node == Room.node)
            .order_by(ReceivedEntry.seq.desc())
            .limit(1)
            .scalar_subquery()
        )

    found = session.execute(
        select(Room, newest(ReceivedEntry.seq), newest(ReceivedEntry.hash)).where(
            Room.node.in_(wanted)
        )
    ).all()
    held: dict[str, dict[int, str]] = {}
    for r in session.execute(select(Held.node, Held.seq, Held.hash).where(Held.node.in_(wanted))):
        held.setdefault(r.node, {})[r.seq] = r.hash
    return {
        room.node: RoomView(
            registration=registration(room),
            head=None if seq is None else Head(seq, digest),
            stored=_StoredHashes(session, room.node),
            held=held.get(room.node, {}),
        )
        for room, seq, digest in found
    }


def save(session: Session, decision: Decision, *, topic: str | None = None) -> None:
    """Apply one decision in the caller's transaction (flushed, not committed)."""
    if isinstance(decision, Accept):
        _accept(session, decision)
    elif isinstance(decision, Hold):
        _hold(session, decision)
    elif isinstance(decision, Quarantine):
        session.add(
            Quarantined(
                received_at=decision.received_at,
                reason=decision.reason,
                detail=decision.detail,
                node=decision.node,
                seq=decision.seq,
                hash=decision.hash,
                topic=topic,
                raw=decision.raw,
                skew_s=None if decision.skew is None else decision.skew.skew_s,
            )
        )
    session.flush()


def _accept(session: Session, decision: Accept) -> None:
    e = decision.entry
    p = e.profile
    session.add(
        ReceivedEntry(
            node=e.node,
            seq=e.seq,
            at=e.at,
            kind=e.kind,
            payload=e.payload,
            prev_hash=e.prev_hash,
            hash=e.hash,
            v=e.v,
            profile_id=None if p is None else p.id,
            profile_version=None if p is None else p.version,
            profile_hash=None if p is None else p.hash,
            received_at=e.received_at,
            skew_s=e.skew.skew_s,
            skew_flagged=e.skew.flagged,
            withheld_reason=None if e.withheld is None else e.withheld.reason,
            withheld_by_seq=None if e.withheld is None else e.withheld.by_seq,
        )
    )
    session.flush()  # the entry before what references it
    for i, r in enumerate(e.rows):
        session.add(
            ReceivedRow(
                node=e.node,
                seq=e.seq,
                position=i,
                table_name=r.table,
                key=r.key,
                canonical=r.canonical,
                salt=r.salt,
                digest=r.digest,
            )
        )
    if e.block is not None and e.block_digest is not None:
        session.add(
            ReceivedBlock(
                node=e.node,
                seq=e.seq,
                encoding=e.block.encoding,
                data=e.block.data,
                digest=e.block_digest,
            )
        )
    held = session.get(Held, (e.node, e.seq))
    if held is not None:
        session.delete(held)
    _close_filled_gaps(session, e.node, e.seq, e.received_at)


def _close_filled_gaps(session: Session, node: str, seq: int, now: object) -> None:
    """A gap is closed when its last missing entry is stored."""
    session.execute(
        update(Gap)
        .where(Gap.node == node, Gap.closed_at.is_(None), Gap.last_seq == seq)
        .values(closed_at=now)
    )


def _hold(session: Session, decision: Hold) -> None:
    m = decision.message
    if session.get(Held, (m.node, m.seq)) is None:
        session.add(
            Held(
                node=m.node,
                seq=m.seq,
                hash=m.entry.hash,
                reason=decision.reason,
                detail=decision.detail,
                raw=m.raw,
                received_at=decision.received_at,
            )
        )
    known = {(g.first_seq, g.last_seq) for g in open_gaps(session, m.node)}
    for r in decision.missing:
        if (r.first, r.last) not in known:
            session.add(
                Gap(
                    node=m.node,
                    first_seq=r.first,
                    last_seq=r.last,
                    detected_at=decision.received_at,
                )
            )


def open_gaps(session: Session, node: str) -> list[Gap]:
    return list(
        session.execute(
            select(Gap).where(Gap.node == node, Gap.closed_at.is_(None)).order_by(Gap.first_seq)
        ).scalars()
    )


def held_message(session: Session, node: str, seq: int) -> bytes | None:
    return session.execute(
        select(Held.raw).where(Held.node == node, Held.seq == seq)
    ).scalar_one_or_none()


@dataclass(frozen=True, slots=True)
class RoomCopy:
    registration: Registration
    entries: list[Entry]
    rows: dict[int, list[StoredRow]]
    blocks: dict[int, StoredBlock]
    #: seq -> (reason, by_seq) of the entries the room sent without their content
    withheld: dict[int, tuple[str, int | None]] = field(default_factory=dict)


def room_copy(session: Session, node: str) -> RoomCopy | None:
    room = session.get(Room, node)
    if room is None:
        return None
    stored = session.execute(
        select(ReceivedEntry).where(ReceivedEntry.node == node).order_by(ReceivedEntry.seq)
    ).scalars()
    entries = []
    withheld: dict[int, tuple[str, int | None]] = {}
    for got in stored:
        entries.append(
            Entry(
                seq=got.seq,
                at=format_time(got.at),
                kind=got.kind,
                payload=got.payload,
                prev_hash=got.prev_hash,
                hash=got.hash,
                node=node if got.v == 2 else None,
                v=got.v,
            )
        )
        if got.withheld_reason is not None:
            withheld[got.seq] = (got.withheld_reason, got.withheld_by_seq)
    rows: dict[int, list[StoredRow]] = {}
    for r in session.execute(
        select(ReceivedRow)
        .where(ReceivedRow.node == node)
        .order_by(ReceivedRow.seq, ReceivedRow.position)
    ).scalars():
        rows.setdefault(r.seq, []).append(
            StoredRow(r.seq, r.table_name, r.key, r.canonical, r.salt, r.digest)
        )
    blocks = {
        b.seq: StoredBlock(b.seq, b.encoding, b.data, b.digest)
        for b in session.execute(select(ReceivedBlock).where(ReceivedBlock.node == node)).scalars()
    }
    return RoomCopy(registration(room), entries, rows, blocks, withheld)
