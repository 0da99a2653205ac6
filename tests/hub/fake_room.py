"""A room's chain as the record channel would carry it, built with cryod.integrity.

``FakeRoom`` appends real chain entries (``cryod.entry/1`` hashes, salted row
digests over ``cryod.row/1`` bytes, sample batches in ``cryod.samples/1``)
and returns each as a record message document (a dict, so a test can tamper
with it before ``raw``). Nothing here decides anything: the ingest core and
the store under test do.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
from typing import Any

from cryod.integrity import (
    GENESIS_HASH,
    SAMPLES_V1,
    Kind,
    batch_digest,
    encode_row,
    encode_sample_batch,
    entry_hash,
    format_time,
    row_digest,
)

T0 = dt.datetime(2026, 3, 1, 9, 15, 2, 123456, tzinfo=dt.UTC)
SALT = bytes(range(16))
PROFILE = {"id": "MN-CRYO-EXAMPLE", "version": "1.0", "hash": "sha256:" + "ab" * 32}


def raw(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


class FakeRoom:
    def __init__(self, node: str = "room-1", site: str = "site-a", start: dt.datetime = T0) -> None:
        self.node = node
        self.site = site
        self.seq = 0
        self.head = GENESIS_HASH
        self.now = start
        self.hashes: dict[int, str] = {}
        self._sample_id = 0

    def _entry(
        self,
        kind: str,
        payload: Any,
        *,
        rows: list[dict[str, Any]] | None = None,
        block: dict[str, Any] | None = None,
        profile: dict[str, Any] | None = None,
        withheld: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        self.seq += 1
        self.now += dt.timedelta(milliseconds=250)
        at = format_time(self.now)
        digest = entry_hash(self.seq, at, self.node, kind, payload, self.head)
        doc = {
            "schema": "cryod.record/1",
            "site": self.site,
            "node": self.node,
            "entry": {
                "seq": self.seq,
                "at": at,
                "node": self.node,
                "kind": kind,
                "payload": payload,
                "prev_hash": self.head,
                "hash": digest,
                "v": 2,
            },
            "rows": rows or [],
            "block": block,
            "profile": profile,
            "withheld": withheld,
            "sent_at": at,
        }
        self.head = digest
        self.hashes[self.seq] = digest
        return doc

    def event(self, kind: str = "procedure_opened", **payload: Any) -> dict[str, Any]:
        return self._entry(kind, payload or {"procedure_id": 1, "console": "c1"})

    def row(
        self,
        table: str = "cycles",
        row_id: int = 1,
        *,
        op: str = "insert",
        profile: dict[str, Any] | None = None,
        min_tip_c: float = -78.5,
    ) -> dict[str, Any]:
        columns = {
            "id": (Kind.INT, row_id),
            "procedure_id": (Kind.INT, 1),
            "phase": (Kind.TEXT, "freeze"),
            "started_at": (Kind.TIME, format_time(self.now)),
            "min_tip_c": (Kind.REAL, min_tip_c),
            "note": (Kind.TEXT, "naïve ✓"),
        }
        canonical = encode_row(table, ["id"], columns)
        digest = row_digest(SALT, canonical)
        payload = {
            "table": table,
            "key": {"id": row_id},
            "op": op,
            "digest": digest,
            "encoding": "cryod.row/1",
        }
        rows = [
            {
                "table": table,
                "key": {"id": row_id},
                "canonical_b64": base64.b64encode(canonical).decode(),
                "salt_hex": SALT.hex(),
            }
        ]
        return self._entry("row", payload, rows=[] if op == "redact" else rows, profile=profile)

    def withheld(self, kind: str = "samples", reason: str = "not_procedure") -> dict[str, Any]:
        """An entry that travels without its content (``withheld``): a non-procedure
        sample batch, or a row changed since (``superseded``) or erased."""
        if kind == "samples":
            payload: dict[str, Any] = {
                "table": "samples", "first": self._sample_id + 1, "last": self._sample_id + 4,
                "rows": 4, "digest": "0" * 64, "encoding": SAMPLES_V1, "op": "insert",
            }  # fmt: skip
            self._sample_id += 4
        else:
            payload = {"table": "cycles", "key": {"id": 1}, "op": "insert",
                       "digest": "0" * 64, "encoding": "cryod.row/1"}  # fmt: skip
        by_seq = None if reason == "not_procedure" else self.seq + 2
        return self._entry(kind, payload, withheld={"reason": reason, "by_seq": by_seq})

    def samples(self, n: int = 4) -> dict[str, Any]:
        rows = []
        for i in range(n):
            self._sample_id += 1
            t = self.now.timestamp() + i * 0.05
            rows.append(
                (self._sample_id, 1, "c1", t, 1000.0 + t % 100, i % 8, "tip_c", -40.0 - i, "ok")
            )
        data = encode_sample_batch(rows, SAMPLES_V1)
        payload = {
            "table": "samples",
            "first": rows[0][0],
            "last": rows[-1][0],
            "rows": n,
            "digest": batch_digest(data),
            "encoding": SAMPLES_V1,
            "op": "insert",
        }
        block = {"encoding": SAMPLES_V1, "data_b64": base64.b64encode(data).decode()}
        return self._entry("samples", payload, block=block)


def tampered(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy with the dotted ``path`` set to ``value`` (``rows.0.salt_hex``)."""
    out = copy.deepcopy(doc)
    where: Any = out
    parts = path.split(".")
    for part in parts[:-1]:
        where = where[int(part)] if isinstance(where, list) else where[part]
    last = parts[-1]
    if isinstance(where, list):
        where[int(last)] = value
    else:
        where[last] = value
    return out
