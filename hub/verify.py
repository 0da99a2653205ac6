"""Verification: the collector's own chain, its tables and anchors; its copy of a room.

Pure: the caller reads the database and the anchor sources, these functions
compare (with ``cryod.integrity``'s checks, the room's own rules).

``check_self``: the audit chain consistent on its own (``check_chain``),
every entry the collector's node; the ``users``, ``user_grants`` and
``rooms`` tables as the chain last described them (a user, grant, password
hash or room added, changed or removed outside ``cryohub`` is named); the
chain against each anchor source (``check_anchors``: rewritten, truncated,
forked).

``check_room_copy``: a room's received entries from its first registered
one, each hash recomputed, each linked to the one before; every stored row
re-hashed with its salt against the entry's digest, every sample block
against its entry's digest. "collector copy consistent with NODE to seq N".
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryod.integrity import (
    GENESIS_HASH,
    AnchorHead,
    AnchorReport,
    ChainCheck,
    EncodingError,
    Entry,
    batch_digest,
    check_anchors,
    check_chain,
    hash_of,
    row_digest,
)

from .ingest import Registration

__all__ = [
    "EXIT_ANCHORS",
    "EXIT_CHAIN",
    "EXIT_TABLES",
    "RoomCopyReport",
    "SelfReport",
    "StoredBlock",
    "StoredRoom",
    "StoredRow",
    "StoredUser",
    "check_room_copy",
    "check_self",
]

EXIT_CHAIN = 1
EXIT_TABLES = 4
EXIT_ANCHORS = 5


@dataclass(frozen=True, slots=True)
class StoredUser:
    name: str
    grants: frozenset[tuple[str, str | None, str | None]]
    password_hash: str
    disabled: bool


@dataclass(frozen=True, slots=True)
class StoredRoom:
    node: str
    fields: Mapping[str, Any]  # site, credential, cert_sha256, first_seq, first_hash


@dataclass
class SelfReport:
    node: str
    chain: ChainCheck
    tables: list[str] = field(default_factory=list)
    anchors: list[AnchorReport] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if not self.chain.ok:
            return EXIT_CHAIN
        if self.tables:
            return EXIT_TABLES
        if any(not a.ok for a in self.anchors):
            return EXIT_ANCHORS
        return 0

    def lines(self) -> list[str]:
        c = self.chain
        head = "none" if c.head is None else f"{c.head.seq}:{c.head.hash[:12]}…"
        out = [
            f"chain: ok ({c.entries} entries; node {self.node}; head {head})"
            if c.ok
            else f"chain: NOT consistent: {c.reason}"
        ]
        if self.tables:
            out.append(f"tables: {len(self.tables)} problem(s) against the chain")
            out.extend(f"  {t}" for t in self.tables)
        else:
            out.append("tables: ok (users, grants and rooms as the chain describes them)")
        for a in self.anchors:
            if a.ok:
                tail = (
                    f"; entries {a.unanchored_tail[0]}..{a.unanchored_tail[1]} not anchored by it"
                    if a.unanchored_tail
                    else ""
                )
                out.append(f"anchors {a.source}: ok ({a.agreeing} heads agree{tail})")
            else:
                out.append(f"anchors {a.source}: {len(a.problems)} problem(s)")
                out.extend(f"  {p.problem}: {p.detail}" for p in a.problems)
        return out

    def as_dict(self) -> dict[str, Any]:
        c = self.chain
        return {
            "node": self.node,
            "chain": {
                "ok": c.ok,
                "entries": c.entries,
                "reason": c.reason,
                "first_bad_seq": c.first_bad_seq,
                "head": None if c.head is None else {"seq": c.head.seq, "hash": c.head.hash},
            },
            "tables": self.tables,
            "anchors": [a.as_dict() for a in self.anchors],
            "exit_code": self.exit_code,
        }


def _claims(
    entries: Iterable[Entry],
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    users: dict[str, dict[str, Any]] = {}
    rooms: dict[str, dict[str, Any]] = {}
    for e in entries:
        p = e.payload if isinstance(e.payload, dict) else {}
        name = p.get("user")
        if e.kind == "user_added" and isinstance(name, str):
            grants = frozenset(
                (g.get("role"), g.get("study"), g.get("site"))
                for g in p.get("grants", [])
                if isinstance(g, dict)
            )
            users[name] = {
                "grants": grants,
                "password": p.get("password"),
                "disabled": False,
                "seq": e.seq,
            }
        elif e.kind == "password_changed" and name in users:
            users[name].update(password=p.get("password"), seq=e.seq)
        elif e.kind == "user_disabled" and name in users:
            users[name].update(disabled=True, seq=e.seq)
        elif e.kind == "room_registered" and isinstance(p.get("room"), str):
            rooms[p["room"]] = {
                **{
                    k: p.get(k)
                    for k in ("site", "credential", "cert_sha256", "first_seq", "first_hash")
                },
                "seq": e.seq,
            }
    return users, rooms


def check_tables(
    entries: Sequence[Entry], users: Iterable[StoredUser], rooms: Iterable[StoredRoom]
) -> list[str]:
    claimed_users, claimed_rooms = _claims(entries)
    out: list[str] = []
    seen = set()
    for u in users:
        seen.add(u.name)
        claim = claimed_users.get(u.name)
        if claim is None:
            out.append(f"users {u.name}: inserted: no chain entry added this user")
            continue
        where = f"differs from entry {claim['seq']}"
        if u.grants != claim["grants"]:
            out.append(f"user_grants {u.name}: edited: roles {where}")
        digest = hashlib.sha256(u.password_hash.encode("utf-8")).hexdigest()
        if digest != claim["password"]:
            out.append(f"users {u.name} column password_hash: edited: {where}")
        if u.disabled != claim["disabled"]:
            out.append(f"users {u.name} column disabled_at: edited: {where}")
    out.extend(
        f"users {name}: deleted: added by entry {c['seq']}"
        for name, c in claimed_users.items()
        if name not in seen
    )
    seen_rooms = set()
    for r in rooms:
        seen_rooms.add(r.node)
        claim = claimed_rooms.get(r.node)
        if claim is None:
            out.append(f"rooms {r.node}: inserted: no chain entry registered this room")
            continue
        for key, value in r.fields.items():
            if claim.get(key) != value:
                out.append(
                    f"rooms {r.node} column {key}: edited: differs from entry {claim['seq']}"
                )
    out.extend(
        f"rooms {node}: deleted: registered by entry {c['seq']}"
        for node, c in claimed_rooms.items()
        if node not in seen_rooms
    )
    return out


def check_self(
    node: str,
    entries: Sequence[Entry],
    users: Iterable[StoredUser],
    rooms: Iterable[StoredRoom],
    sources: Mapping[str, Sequence[AnchorHead]],
) -> SelfReport:
    chain = check_chain(entries)
    if chain.ok and chain.node not in (None, node):
        chain = ChainCheck(
            False,
            1,
            f"the chain is collector {chain.node!r}'s, not {node!r}",
            chain.entries,
            chain.head,
            chain.node,
            chain.legacy_entries,
        )
    report = SelfReport(node, chain, check_tables(entries, users, rooms))
    by_seq = {e.seq: e.hash for e in entries}
    for source, heads in sources.items():
        report.anchors.append(check_anchors(source, by_seq, chain.head, heads))
    return report


# ---- a room's copy ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StoredRow:
    seq: int
    table: str
    key: Mapping[str, Any]
    canonical: bytes
    salt: bytes
    digest: str


@dataclass(frozen=True, slots=True)
class StoredBlock:
    seq: int
    encoding: str
    data: bytes
    digest: str


@dataclass
class RoomCopyReport:
    node: str
    entries: int = 0
    last_seq: int | None = None  # the newest entry that checked out
    chain_problem: str | None = None
    problems: list[str] = field(default_factory=list)
    #: entries the room sent without their content, by reason (not a problem: the
    #: collector holds the entry and its hash, not what it covers)
    withheld: dict[str, int] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        if self.chain_problem is not None:
            return EXIT_CHAIN
        return EXIT_TABLES if self.problems else 0

    def lines(self) -> list[str]:
        if self.chain_problem is not None:
            return [f"{self.node}: chain NOT consistent: {self.chain_problem}"]
        if self.problems:
            return [f"{self.node}: {len(self.problems)} problem(s)"] + [
                f"  {p}" for p in self.problems
            ]
        if self.last_seq is None:
            return [f"{self.node}: nothing received yet"]
        out = [f"collector copy consistent with {self.node} to seq {self.last_seq}"]
        if self.withheld:
            counts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.withheld.items()))
            out.append(
                f"  entries received without their content, as the room sent them: {counts}"
                " (their hashes are in the chain; the content is not held here)"
            )
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "entries": self.entries,
            "last_seq": self.last_seq,
            "chain_problem": self.chain_problem,
            "problems": self.problems,
            "withheld": dict(self.withheld),
            "exit_code": self.exit_code,
        }


def check_room_copy(
    reg: Registration,
    entries: Iterable[Entry],
    rows: Mapping[int, Sequence[StoredRow]],
    blocks: Mapping[int, StoredBlock],
    withheld: Mapping[int, tuple[str, int | None]] | None = None,
) -> RoomCopyReport:
    """``withheld``: seq -> (reason, by_seq) of the entries the room sent without their
    row or sample block; such an entry is counted, not reported missing, and the later
    entry it names must be one the collector holds once the copy reaches it."""
    report = RoomCopyReport(reg.node)
    withheld = withheld or {}
    held: dict[int, Entry] = {}
    expect = reg.first_seq
    prev: str | None = None
    for e in entries:
        report.entries += 1
        if e.seq != expect:
            report.chain_problem = f"entry {expect} is missing; next stored is {e.seq}"
            return report
        if prev is None:
            if reg.first_hash is not None and e.hash != reg.first_hash:
                report.chain_problem = f"entry {e.seq} is not the registered first entry"
                return report
            if reg.first_hash is None and e.prev_hash != GENESIS_HASH:
                report.chain_problem = f"entry {e.seq} does not follow the genesis hash"
                return report
        elif e.prev_hash != prev:
            report.chain_problem = f"entry {e.seq}: prev_hash is not entry {e.seq - 1}'s hash"
            return report
        try:
            if hash_of(e) != e.hash:
                report.chain_problem = f"entry {e.seq}: hash does not match its content"
                return report
        except EncodingError as exc:
            report.chain_problem = f"entry {e.seq}: {exc}"
            return report
        claim = withheld.get(e.seq)
        if claim is None:
            report.problems.extend(_covered_problems(e, rows.get(e.seq, ()), blocks.get(e.seq)))
        else:
            report.withheld[claim[0]] = report.withheld.get(claim[0], 0) + 1
        held[e.seq] = e
        prev = e.hash
        expect += 1
        report.last_seq = e.seq
    for seq, (reason, by_seq) in sorted(withheld.items()):
        if report.last_seq is None or seq > report.last_seq:
            continue
        problem = _withheld_claim_problem(held[seq], reason, by_seq, held, report.last_seq)
        if problem is not None:
            report.problems.append(problem)
    return report


def _withheld_claim_problem(
    e: Entry, reason: str, by_seq: int | None, held: Mapping[int, Entry], last_seq: int
) -> str | None:
    """Whether the room's reason for sending ``e`` without its content is borne out by the
    chain: ``not_procedure`` only for a sample batch; ``superseded`` / ``redacted`` name a
    later entry for the same row (a redaction of it, or of the samples), once the copy
    reaches that entry."""
    p = e.payload if isinstance(e.payload, dict) else {}
    if reason == "not_procedure":
        return None if e.kind == "samples" else f"entry {e.seq}: a {e.kind!r} entry is not samples"
    if by_seq is None or by_seq <= e.seq:
        return f"entry {e.seq}: {reason} names no later entry"
    if by_seq > last_seq:
        return None  # not received yet: decided when the copy reaches it
    later = held[by_seq]
    lp = later.payload if isinstance(later.payload, dict) else {}
    if e.kind == "samples":
        ok = reason == "redacted" and later.kind == "samples_redacted"
    else:
        same_row = lp.get("table") == p.get("table") and lp.get("key") == p.get("key")
        ok = later.kind == "row" and same_row and (reason != "redacted" or lp.get("op") == "redact")
    if ok:
        return None
    return f"entry {e.seq}: {reason} by entry {by_seq}, which does not cover the same content"


def _covered_problems(e: Entry, rows: Sequence[StoredRow], block: StoredBlock | None) -> list[str]:
    p = e.payload if isinstance(e.payload, dict) else {}
    out = []
    digest = p.get("digest")
    for r in rows:
        if r.digest != digest or row_digest(r.salt, r.canonical) != digest:
            out.append(
                f"entry {e.seq}: row {r.table} {dict(r.key)}: does not re-hash to its digest"
            )
    if e.kind == "row" and p.get("op") != "redact" and not rows:
        out.append(f"entry {e.seq}: the row it covers is missing")
    if block is not None and (block.digest != digest or batch_digest(block.data) != digest):
        out.append(f"entry {e.seq}: sample block does not re-hash to its digest")
    if e.kind == "samples" and block is None:
        out.append(f"entry {e.seq}: the sample block it covers is missing")
    return out
