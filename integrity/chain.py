"""The chain: entries, their hashes, and the walk that checks a chain on its own.

A database has one chain, named by its node. Each entry is
``(seq, at, node, kind, payload, prev_hash)`` and its ``hash``; ``prev_hash``
is the previous entry's hash (64 zeros for the first). Two formats exist:

- **v1** (entries written before integrity, ``node`` empty): ``hash`` is the
  SHA-256 of the canonical JSON (sorted keys, no spaces, UTF-8) of
  ``{"seq", "at", "kind", "payload", "prev_hash"}``.
- **v2** (``cryod.entry/1``): ``hash`` is the SHA-256 of the canonical bytes
  ``[ s"cryod.entry/1" i<seq> t<at> s<node> s<kind> <payload> s<prev_hash> ]``
  (``canonical``: the payload as a JSON value, numbers as reals).

A chain holds v1 entries only before its first v2 entry, and every v2 entry
names the same node.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from .canonical import EncodingError, int_token, json_value_token, text_token, time_token

__all__ = [
    "ENTRY_ENCODING",
    "GENESIS_HASH",
    "UNPARSABLE",
    "ChainCheck",
    "Entry",
    "Head",
    "check_chain",
    "entry_bytes",
    "entry_hash",
    "hash_of",
    "legacy_entry_hash",
    "legacy_json",
]

ENTRY_ENCODING: Final = "cryod.entry/1"
GENESIS_HASH: Final = "0" * 64


class _Unparsable:
    def __repr__(self) -> str:
        return "UNPARSABLE"


#: an entry's payload when its stored text is not JSON
UNPARSABLE: Final = _Unparsable()


@dataclass(frozen=True, slots=True)
class Head:
    """A chain head: the newest entry's seq and hash (what anchors keep)."""

    seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    at: str
    kind: str
    payload: Any  # the parsed JSON value (UNPARSABLE if the stored text is not JSON)
    prev_hash: str
    hash: str
    node: str | None = None
    v: int = 2


def legacy_json(value: Any) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def legacy_entry_hash(seq: int, at: str, kind: str, payload: Any, prev_hash: str) -> str:
    body = {"seq": seq, "at": at, "kind": kind, "payload": payload, "prev_hash": prev_hash}
    return hashlib.sha256(legacy_json(body).encode("utf-8")).hexdigest()


def entry_bytes(seq: int, at: str, node: str, kind: str, payload: Any, prev_hash: str) -> bytes:
    return (
        "["
        + text_token(ENTRY_ENCODING)
        + int_token(seq)
        + time_token(at)
        + text_token(node)
        + text_token(kind)
        + json_value_token(payload)
        + text_token(prev_hash)
        + "]"
    ).encode("utf-8")


def entry_hash(seq: int, at: str, node: str, kind: str, payload: Any, prev_hash: str) -> str:
    return hashlib.sha256(entry_bytes(seq, at, node, kind, payload, prev_hash)).hexdigest()


def hash_of(entry: Entry) -> str:
    """The hash an entry should have, by its format; raises EncodingError if it has none."""
    if entry.payload is UNPARSABLE:
        raise EncodingError("payload is not valid JSON")
    if entry.v == 1:
        try:
            return legacy_entry_hash(
                entry.seq, entry.at, entry.kind, entry.payload, entry.prev_hash
            )
        except ValueError as exc:
            raise EncodingError(str(exc)) from None
    if entry.v == 2:
        if not entry.node:
            raise EncodingError("a v2 entry names its node")
        return entry_hash(
            entry.seq, entry.at, entry.node, entry.kind, entry.payload, entry.prev_hash
        )
    raise EncodingError(f"unknown entry format v{entry.v}")


@dataclass(frozen=True, slots=True)
class ChainCheck:
    ok: bool
    first_bad_seq: int | None
    reason: str
    entries: int
    head: Head | None  # the last entry that checked out
    node: str | None
    legacy_entries: int  # v1 entries (written before integrity)


def check_chain(entries: Iterable[Entry]) -> ChainCheck:
    """Walk the chain in seq order; the first entry edited, deleted, inserted or
    reordered is named. A chain recomputed after an edit passes: anchors catch that."""
    prev_hash = GENESIS_HASH
    expect = 1
    head: Head | None = None
    node: str | None = None
    legacy = 0
    n = 0

    def bad(seq: int, reason: str) -> ChainCheck:
        return ChainCheck(False, seq, reason, n, head, node, legacy)

    for e in entries:
        n += 1
        if e.seq != expect:
            return bad(
                expect, f"entry {expect} is missing (deleted or renumbered); next is {e.seq}"
            )
        if e.prev_hash != prev_hash:
            return bad(
                e.seq,
                f"entry {e.seq}: prev_hash is not entry {e.seq - 1}'s hash "
                "(an entry was deleted, inserted or reordered)",
            )
        if e.v == 1 and node is not None:
            return bad(e.seq, f"entry {e.seq}: a v1 entry after v2 entries (format downgraded)")
        if e.v == 2:
            if node is None:
                node = e.node
            elif e.node != node:
                return bad(e.seq, f"entry {e.seq}: node {e.node!r}, the chain's is {node!r}")
        try:
            expected = hash_of(e)
        except EncodingError as exc:
            return bad(e.seq, f"entry {e.seq}: {exc.reason} (entry edited)")
        if expected != e.hash:
            return bad(e.seq, f"entry {e.seq}: hash does not match its content (entry edited)")
        legacy += e.v == 1
        prev_hash = e.hash
        head = Head(e.seq, e.hash)
        expect += 1
    return ChainCheck(True, None, "ok", n, head, node, legacy)
