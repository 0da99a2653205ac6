"""A reference receiver: a room's procedures rebuilt from the record channel alone.

It knows the message format and ``cryod.integrity`` and nothing of the room's store:
it checks each entry's hash and its link to the one before, each row's salted digest
and each block's digest against the entry, and keeps every research row as its newest
carried entry has it (a redaction removes it)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from cryod.integrity import GENESIS_HASH, Entry, batch_digest, decode_row, hash_of, row_digest


@dataclass
class Rebuilt:
    head: tuple[int, str]
    rows: dict[tuple[str, str], tuple[bytes, str]]  # (table, key json) -> (canonical, digest)
    blocks: dict[int, bytes] = field(default_factory=dict)  # seq -> block bytes


class Receiver:
    def __init__(self) -> None:
        self.docs: dict[int, dict[str, Any]] = {}
        self.arrivals: list[int] = []  # seqs in arrival order, duplicates included

    def take(self, payload: bytes) -> None:
        doc = json.loads(payload)
        seq = doc["entry"]["seq"]
        self.arrivals.append(seq)
        old = self.docs.setdefault(seq, doc)
        assert old["entry"]["hash"] == doc["entry"]["hash"], f"entry {seq} with two hashes"

    async def listen(self, port: int, topic: str, until_seq: int, **client: Any) -> None:
        async with aiomqtt.Client("127.0.0.1", port, **client) as c:
            await c.subscribe(topic, qos=1)
            async for m in c.messages:
                self.take(m.payload if isinstance(m.payload, bytes) else b"")
                if all(s in self.docs for s in range(1, until_seq + 1)):
                    return

    def rebuild(self) -> Rebuilt:
        rows: dict[tuple[str, str], tuple[bytes, str]] = {}
        blocks: dict[int, bytes] = {}
        prev = GENESIS_HASH
        for seq in range(1, max(self.docs) + 1):
            e = self.docs[seq]["entry"]  # KeyError: a gap
            entry = Entry(e["seq"], e["at"], e["kind"], e["payload"], e["prev_hash"], e["hash"],
                          e["node"] or None, e["v"])  # fmt: skip
            assert entry.prev_hash == prev, f"entry {seq} does not extend {prev[:12]}"
            assert hash_of(entry) == entry.hash, f"entry {seq}: hash"
            prev = entry.hash
            p = entry.payload
            for r in self.docs[seq]["rows"]:
                canonical, salt = base64.b64decode(r["canonical_b64"]), bytes.fromhex(r["salt_hex"])
                assert row_digest(salt, canonical) == p["digest"], f"entry {seq}: row digest"
                assert decode_row(canonical).table == r["table"]
                rows[(r["table"], json.dumps(r["key"], sort_keys=True))] = (canonical, p["digest"])
            if entry.kind == "row" and p.get("op") == "redact":
                rows.pop((p["table"], json.dumps(p["key"], sort_keys=True)), None)
            block = self.docs[seq]["block"]
            if block is not None:
                data = base64.b64decode(block["data_b64"])
                assert batch_digest(data) == p["digest"], f"entry {seq}: block digest"
                blocks[seq] = data
        return Rebuilt((max(self.docs), prev), rows, blocks)


def compare_with_export(rebuilt: Rebuilt, export_doc: dict[str, Any]) -> int:
    """Every row of the room's export is in the rebuilt record, byte for byte and digest
    for digest, and the rebuilt record holds no row of those tables the export has not.
    Returns the number of rows compared."""
    from cryod.daemon.store.chained import RESEARCH
    from cryod.daemon.store.export import CHILDREN, _values

    seen: set[tuple[str, str]] = set()
    for p in export_doc["procedures"]:
        objs = [("procedures", p)] + [(t, c) for t, name, _ in CHILDREN for c in p[name]]
        for table, obj in objs:
            spec = RESEARCH.by_name[table]
            values = _values(spec, obj, p)
            key = json.dumps({k: values[k] for k in spec.key}, sort_keys=True)
            got = rebuilt.rows.get((table, key))
            assert got is not None, f"{table} {key}: not rebuilt from the channel"
            assert got[0] == spec.encode(values), f"{table} {key}: other content"
            assert got[1] == obj["proof"]["digest"], f"{table} {key}: other digest"
            seen.add((table, key))
    tables = {"procedures", *(t for t, _, _ in CHILDREN)}
    extra = {k for k in rebuilt.rows if k[0] in tables} - seen
    assert not extra, f"rebuilt rows the export does not have: {sorted(extra)}"
    return len(seen)
