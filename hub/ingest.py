"""The ingest core: what to do with each record message. Pure, time injected.

For a parsed message (``messages.parse_message``) and what the collector
holds for its room (``RoomView``), ``decide`` returns one decision:

- **Accept**: the entry extends the room's chain (``seq`` = last + 1 and
  ``prev_hash`` = the last entry's hash; the first entry as registered), its
  hash recomputed from its content matches, and so do the digests of the rows
  and the sample block it carries. ``AcceptedEntry`` is everything storage
  writes, already checked.
- **Duplicate**: the same (node, seq) with the same hash is already stored or
  held (QoS 1 redelivers): nothing to do.
- **Hold** ``gap``: ``seq`` is beyond the next expected one: keep the message
  until the missing ones arrive; ``missing`` names the ranges and ``repair``
  the command that re-publishes them at the room
  (``cryoctl record resend --from SEQ --to SEQ``).
- **Hold** ``profile``: the record names a study profile version the
  collector does not know: keep it until the profile is registered.
- **Quarantine**: never merged, always reported: a message that is not a
  record message (``malformed``), from an unregistered node
  (``unregistered``), naming another site than the room's (``site``), whose
  own hash or digests do not match its content (``corrupt``), that does not
  extend the chain the collector holds (``fork``: same seq with another
  hash, or a ``prev_hash`` that is not the last hash), or that names a
  registered profile version with another content hash (``profile``).
- **Ignore**: an entry before the one the room was registered from.

Every message parsed from a registered node also gets its **clock skew**:
the receive time minus the room's ``sent_at``, flagged past
``SKEW_LIMIT_S`` (60 s); an entry time ahead of the receive time by more
than that is flagged too (the room's clock is ahead: no delivery delay
explains it).

After an accept, a held message at the new head + 1 may now extend the
chain: ``RoomView.releasable()`` names it and the shell decides it again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

from cryod.integrity import (
    GENESIS_HASH,
    EncodingError,
    Head,
    batch_digest,
    decode_row,
    hash_of,
    row_digest,
)

from .messages import Block, ProfileRef, RecordMessage, RowCopy, Topic, Withheld

__all__ = [
    "SKEW_LIMIT_S",
    "Accept",
    "AcceptedEntry",
    "AcceptedRow",
    "Decision",
    "Duplicate",
    "Hold",
    "Ignore",
    "Quarantine",
    "Registration",
    "RoomView",
    "SeqRange",
    "Skew",
    "decide",
    "malformed",
    "missing_ranges",
    "repair_command",
]

SKEW_LIMIT_S: Final = 60.0


class HashLookup(Protocol):
    """seq -> hash of what is stored (the shell reads its database on demand)."""

    def get(self, seq: int, /) -> str | None: ...


class _NoneStored:
    def get(self, seq: int, /) -> str | None:
        return None


@dataclass(frozen=True, slots=True)
class Registration:
    """A registered room: its node and site, and the first entry the collector holds.

    ``first_seq`` 1 with no ``first_hash``: the whole chain, from the entry after
    the genesis hash. ``first_seq`` N with ``first_hash`` H: the collector's copy
    starts at the room's entry N, which must hash to H (e.g. the head
    ``cryoctl verify`` printed when the room was registered)."""

    node: str
    site: str
    first_seq: int = 1
    first_hash: str | None = None

    def __post_init__(self) -> None:
        if self.first_seq < 1:
            raise ValueError("first_seq is 1 or more")
        if self.first_seq > 1 and self.first_hash is None:
            raise ValueError("a first entry after 1 needs its hash")


@dataclass(frozen=True, slots=True)
class RoomView:
    """What the collector holds for one room when a message arrives."""

    registration: Registration
    head: Head | None = None  # the newest accepted entry; None: nothing yet
    stored: HashLookup = field(default_factory=lambda: _NoneStored())  # accepted: seq -> hash
    held: Mapping[int, str] = field(default_factory=dict)  # held messages, seq -> hash

    @property
    def expected(self) -> int:
        return self.registration.first_seq if self.head is None else self.head.seq + 1

    def releasable(self) -> int | None:
        """A held message that the chain now reaches, if any."""
        return self.expected if self.expected in self.held else None

    def gaps(self) -> list[SeqRange]:
        """Sequences missing before the newest held message."""
        return missing_ranges(self.expected, self.held)


@dataclass(frozen=True, slots=True)
class SeqRange:
    first: int
    last: int

    @property
    def repair(self) -> str:
        return repair_command(self.first, self.last)

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}..{self.last}"


def repair_command(first: int, last: int) -> str:
    """The operator command, at the room, that re-publishes entries first..last."""
    return f"cryoctl record resend --from {first} --to {last}"


def missing_ranges(expected: int, held: Iterable[int], upto: int | None = None) -> list[SeqRange]:
    """Sequences from ``expected`` up to the newest held one (or ``upto``, exclusive)
    that are not held, as ranges."""
    have = sorted({s for s in held if s >= expected})
    end = upto if upto is not None else (have[-1] if have else expected)
    out: list[SeqRange] = []
    cursor = expected
    for s in [*(h for h in have if h < end), end]:
        if s > cursor:
            out.append(SeqRange(cursor, s - 1))
        cursor = s + 1
    return out


@dataclass(frozen=True, slots=True)
class Skew:
    """Receive time minus the room's ``sent_at``; ``ahead_s``: the entry's time
    beyond the receive time (a room clock ahead)."""

    skew_s: float
    flagged: bool
    detail: str = ""


def skew_of(msg: RecordMessage, received_at: dt.datetime) -> Skew:
    skew_s = (received_at - msg.sent_at).total_seconds()
    ahead_s = (msg.at - received_at).total_seconds()
    if skew_s < -SKEW_LIMIT_S:
        return Skew(skew_s, True, f"room clock {-skew_s:.0f} s ahead (sent_at after receipt)")
    if ahead_s > SKEW_LIMIT_S:
        return Skew(skew_s, True, f"room clock {ahead_s:.0f} s ahead (entry time after receipt)")
    if skew_s > SKEW_LIMIT_S:
        return Skew(
            skew_s,
            True,
            f"received {skew_s:.0f} s after sent_at (room clock behind, or queued)",
        )
    return Skew(skew_s, False)


# ---- decisions --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AcceptedRow:
    table: str
    key: dict[str, int | str]
    canonical: bytes
    salt: bytes
    digest: str


@dataclass(frozen=True, slots=True)
class AcceptedEntry:
    """One verified chain entry and what it covers, as storage writes it."""

    node: str
    seq: int
    at: dt.datetime
    at_text: str
    kind: str
    payload: Any
    prev_hash: str
    hash: str
    v: int
    rows: tuple[AcceptedRow, ...]
    block: Block | None
    block_digest: str | None
    profile: ProfileRef | None
    received_at: dt.datetime
    skew: Skew
    #: why the room sent the entry without its row or sample block (None: it carries them)
    withheld: Withheld | None = None


@dataclass(frozen=True, slots=True)
class Accept:
    entry: AcceptedEntry
    action: Literal["accept"] = "accept"


@dataclass(frozen=True, slots=True)
class Duplicate:
    node: str
    seq: int
    where: Literal["stored", "held"]
    action: Literal["duplicate"] = "duplicate"


@dataclass(frozen=True, slots=True)
class Ignore:
    node: str
    seq: int
    reason: str
    action: Literal["ignore"] = "ignore"


@dataclass(frozen=True, slots=True)
class Hold:
    message: RecordMessage
    reason: Literal["gap", "profile"]
    detail: str
    missing: tuple[SeqRange, ...]
    received_at: dt.datetime
    skew: Skew
    action: Literal["hold"] = "hold"

    @property
    def repair(self) -> tuple[str, ...]:
        return tuple(r.repair for r in self.missing)


QuarantineReason = Literal["malformed", "unregistered", "site", "corrupt", "fork", "profile"]


@dataclass(frozen=True, slots=True)
class Quarantine:
    reason: QuarantineReason
    detail: str
    raw: bytes
    received_at: dt.datetime
    node: str | None = None
    seq: int | None = None
    hash: str | None = None
    skew: Skew | None = None
    action: Literal["quarantine"] = "quarantine"


Decision = Accept | Duplicate | Ignore | Hold | Quarantine


def malformed(raw: bytes, reason: str, received_at: dt.datetime) -> Quarantine:
    """The decision for bytes ``parse_message`` refused."""
    return Quarantine("malformed", reason, raw, received_at)


def _quarantine(
    msg: RecordMessage, reason: QuarantineReason, detail: str, now: dt.datetime, skew: Skew | None
) -> Quarantine:
    return Quarantine(reason, detail, msg.raw, now, msg.node, msg.entry.seq, msg.entry.hash, skew)


# ---- the checks ---------------------------------------------------------------------------
def content_problem(msg: RecordMessage) -> str | None:
    """Does the message hash to what it claims? The entry's hash from its content,
    each row's salted digest and the block's digest against the entry's payload."""
    e = msg.entry
    try:
        if hash_of(e) != e.hash:
            return f"entry {e.seq}: hash does not match its content"
    except EncodingError as exc:
        return f"entry {e.seq}: cannot be hashed: {exc}"
    p = e.payload if isinstance(e.payload, dict) else {}
    if msg.withheld is not None:
        return _withheld_problem(msg)
    if e.kind == "row":
        return _row_problem(e.seq, p, msg.rows, msg.block)
    if e.kind == "samples":
        return _block_problem(e.seq, p, msg.rows, msg.block)
    if msg.rows or msg.block is not None:
        return f"entry {e.seq}: a {e.kind!r} entry carries no rows or sample block"
    return None


#: what a room may withhold, per entry kind (messages.Withheld)
_WITHHOLDABLE: Final = {"row": ("superseded", "redacted"), "samples": ("not_procedure", "redacted")}


def _withheld_problem(msg: RecordMessage) -> str | None:
    """An entry travelling without its content says why, and carries none of it."""
    e, w = msg.entry, msg.withheld
    assert w is not None
    if w.reason not in _WITHHOLDABLE.get(e.kind, ()):
        return f"entry {e.seq}: a {e.kind!r} entry cannot be withheld as {w.reason!r}"
    if msg.rows or msg.block is not None:
        return f"entry {e.seq}: a withheld entry carries no rows or sample block"
    if w.by_seq is not None and w.by_seq <= e.seq:
        return f"entry {e.seq}: withheld by entry {w.by_seq}, which is not a later one"
    return None


def _row_problem(
    seq: int, p: Mapping[str, Any], rows: tuple[RowCopy, ...], block: Block | None
) -> str | None:
    if block is not None:
        return f"entry {seq}: a row entry carries no sample block"
    if p.get("op") == "redact":
        # content and salt were erased at the room; the digest alone stays in the chain
        return f"entry {seq}: a redaction carries no row" if rows else None
    if len(rows) != 1:
        return f"entry {seq}: a row entry carries exactly one row, not {len(rows)}"
    row = rows[0]
    if row.table != p.get("table") or row.key != p.get("key"):
        return f"entry {seq}: the row is {row.table} {row.key}, the entry covers another"
    try:
        decoded = decode_row(row.canonical)
    except EncodingError as exc:
        return f"entry {seq}: row bytes are not canonical: {exc}"
    if (
        decoded.table != row.table
        or dict(zip(decoded.key, decoded.key_values(), strict=True)) != row.key
    ):
        return f"entry {seq}: the row's canonical bytes are of another row"
    if row_digest(row.salt, row.canonical) != p.get("digest"):
        return f"entry {seq}: the row's digest does not match the entry's"
    return None


def _block_problem(
    seq: int, p: Mapping[str, Any], rows: tuple[RowCopy, ...], block: Block | None
) -> str | None:
    if rows:
        return f"entry {seq}: a samples entry carries no rows"
    if block is None:
        return f"entry {seq}: a samples entry carries its sample block"
    if block.encoding != p.get("encoding"):
        return f"entry {seq}: block encoding {block.encoding!r} is not the entry's"
    if batch_digest(block.data) != p.get("digest"):
        return f"entry {seq}: the block's digest does not match the entry's"
    return None


def _accepted(msg: RecordMessage, now: dt.datetime, skew: Skew) -> AcceptedEntry:
    e = msg.entry
    p = e.payload if isinstance(e.payload, dict) else {}
    rows = tuple(
        AcceptedRow(r.table, dict(r.key), r.canonical, r.salt, str(p.get("digest")))
        for r in msg.rows
    )
    return AcceptedEntry(
        node=msg.node,
        seq=e.seq,
        at=msg.at,
        at_text=e.at,
        kind=e.kind,
        payload=e.payload,
        prev_hash=e.prev_hash,
        hash=e.hash,
        v=e.v,
        rows=rows,
        block=msg.block,
        block_digest=None if msg.block is None else str(p.get("digest")),
        profile=msg.profile,
        received_at=now,
        skew=skew,
        withheld=msg.withheld,
    )


def decide(
    msg: RecordMessage,
    room: RoomView | None,
    *,
    received_at: dt.datetime,
    profiles: Mapping[tuple[str, str], str],
    topic: Topic | None = None,
) -> Decision:
    """The decision for one parsed message.

    ``room``: the registered room named by ``msg.node`` (None: not registered);
    ``profiles``: (profile id, version) -> content hash of every profile the
    collector knows; ``topic``: where it arrived (its site and node must be the
    message's own).
    """
    now = received_at
    if topic is not None and (topic.site, topic.node) != (msg.site, msg.node):
        return _quarantine(
            msg,
            "malformed",
            f"arrived on {topic.site}/{topic.node}, names {msg.site}/{msg.node}",
            now,
            None,
        )
    if room is None:
        return _quarantine(msg, "unregistered", f"node {msg.node!r} is not registered", now, None)
    reg = room.registration
    skew = skew_of(msg, now)
    if msg.site != reg.site:
        return _quarantine(
            msg, "site", f"node {msg.node!r} is registered at site {reg.site!r}", now, skew
        )
    problem = content_problem(msg)
    if problem is not None:
        return _quarantine(msg, "corrupt", problem, now, skew)

    seq, digest = msg.entry.seq, msg.entry.hash
    expected = room.expected
    if seq < reg.first_seq:
        return Ignore(msg.node, seq, f"before entry {reg.first_seq}, where the room was registered")
    if seq < expected:
        stored = room.stored.get(seq)
        if stored == digest:
            return Duplicate(msg.node, seq, "stored")
        return _quarantine(
            msg,
            "fork",
            f"entry {seq} has another hash than the one stored ({_short(stored)}): "
            "the room's chain was rewritten or forked",
            now,
            skew,
        )
    if seq > expected:
        held = room.held.get(seq)
        if held == digest:
            return Duplicate(msg.node, seq, "held")
        if held is not None:
            return _quarantine(
                msg, "fork", f"entry {seq} was held with another hash ({_short(held)})", now, skew
            )
        missing = tuple(missing_ranges(expected, [*room.held, seq], upto=seq))
        detail = (
            f"entry {seq} arrived before {', '.join(str(r) for r in missing)}; held until "
            "they arrive"
            if missing
            else f"entry {seq} waits for entry {expected}, which is held"
        )
        return Hold(msg, "gap", detail, missing, now, skew)
    # seq == expected: does it extend what is held?
    link = _link_problem(room, msg)
    if link is not None:
        return _quarantine(msg, "fork", link, now, skew)
    if msg.profile is not None:
        known = profiles.get((msg.profile.id, msg.profile.version))
        if known is None:
            return Hold(
                msg,
                "profile",
                f"study profile {msg.profile.id} version {msg.profile.version} is not "
                "registered; held until it is",
                (),
                now,
                skew,
            )
        if known != msg.profile.hash:
            return _quarantine(
                msg,
                "profile",
                f"study profile {msg.profile.id} version {msg.profile.version} has content "
                f"hash {msg.profile.hash}, the registered one {known}",
                now,
                skew,
            )
    return Accept(_accepted(msg, now, skew))


def _link_problem(room: RoomView, msg: RecordMessage) -> str | None:
    e = msg.entry
    reg = room.registration
    if room.head is not None:
        if e.prev_hash != room.head.hash:
            return (
                f"entry {e.seq}: prev_hash is not entry {room.head.seq}'s hash "
                f"({_short(room.head.hash)}): it does not extend the chain held"
            )
        return None
    if reg.first_hash is not None:
        if e.hash != reg.first_hash:
            return (
                f"entry {e.seq} has hash {_short(e.hash)}, the room was registered from "
                f"{_short(reg.first_hash)}"
            )
        return None
    if e.prev_hash != GENESIS_HASH:
        return f"entry {e.seq}: the first entry of a chain follows the genesis hash"
    return None


def _short(digest: str | None) -> str:
    return "none" if digest is None else digest[:12] + "…"
