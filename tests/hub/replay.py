"""Rooms replayed from one recording (``tests/hub/record_traffic.py``): each its own node.

Pure: no I/O, no clock of its own (the caller passes the entry time). The
recording is parsed once (``Track``); a ``Room`` turns the recorded messages
into its own:

- ``node`` (topic, message, entry) and ``site`` (topic, message) are the
  room's; ``entry.at`` and ``sent_at`` are the time the caller gives (the
  wall clock at publication, so the collector's skew check is honest);
- the chain is the room's own: ``seq`` continues, each ``hash`` is recomputed
  with ``cryod.integrity.entry_hash`` over the new node and time, and
  ``prev_hash`` links to the room's previous entry;
- rows and sample blocks keep the recorded bytes: their digests cover the
  row's canonical bytes and the batch's bytes, neither of which names the
  node (a console id, procedure and poll ids, times and values), so the
  entry payload that carries those digests is unchanged;
- a withheld entry's ``by_seq`` moves with the entry.

**Phases.** The *prelude* (the daemon's start, the procedure's opening, the
baseline pain score, the run and its cycle rows: everything before the
recording's freeze part) is played once; then the *freeze part* loops for as
long as the run lasts, at its recorded offsets, one ``period_s`` (its length
plus one mean interval) per turn. Looping repeats the recorded payloads (the
same poll ids and sample times in each turn's batches); the collector checks
the chain, digests and encodings, not the ids' order across entries.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from cryod.integrity import GENESIS_HASH, SAMPLES_V1, SAMPLES_V2, entry_hash
from cryod.integrity.canonical import decode

from .record_traffic import Message, Recording, RecordingError

__all__ = ["Recorded", "Room", "Track", "topic_of", "values_of"]


def topic_of(site: str, node: str) -> str:
    return f"cryod-record/v1/{site}/{node}/chain"


def values_of(doc: dict[str, Any]) -> int:
    """How many logged values the message's sample block holds (0: none travels).

    ``cryod.samples/2`` lists polls with states only when they change:
    unpacked (``daemon.store.samples.unpack_polls``) each poll is every value
    the daemon logged for it (66 for 8 probes), as ``cryod.samples/1`` rows were."""
    from cryod.daemon.store.samples import StoredPoll, unpack_polls

    block = doc.get("block")
    if not block:
        return 0
    batch = decode(base64.b64decode(block["data_b64"]))
    encoding, rows = batch[0], batch[3:]
    if encoding == SAMPLES_V1:
        return len(rows)
    if encoding == SAMPLES_V2:
        polls = [
            StoredPoll._make(
                [*p[:14], tuple(tuple(x) for x in p[14]), tuple(tuple(x) for x in p[15])]
            )
            for p in rows
        ]
        return sum(1 for _ in unpack_polls(polls))
    raise RecordingError(f"entry {doc['entry']['seq']}: unknown sample encoding {encoding!r}")


@dataclass(frozen=True)
class Recorded:
    """One recorded message, parsed once."""

    t_s: float
    doc: dict[str, Any]
    values: int


class Track:
    """The recording as every room plays it: the prelude, then the freeze part looped."""

    def __init__(self, rec: Recording) -> None:
        def parsed(m: Message) -> Recorded:
            doc = json.loads(m.payload)
            return Recorded(m.t_s, doc, values_of(doc))

        seqs = [json.loads(m.payload)["entry"]["seq"] for m in rec.messages]
        if seqs != list(range(1, len(seqs) + 1)):
            raise RecordingError("the recording is not one chain from entry 1 without a gap")
        self.prelude = [parsed(m) for m in rec.messages[: rec.freeze_from]]
        self.freeze = [parsed(m) for m in rec.freeze]
        if len(self.freeze) < 2:
            raise RecordingError("the freeze part has fewer than two messages")
        t0, t1 = self.freeze[0].t_s, self.freeze[-1].t_s
        self.period_s = (t1 - t0) * len(self.freeze) / (len(self.freeze) - 1)

    @property
    def prelude_s(self) -> float:
        return self.prelude[-1].t_s - self.prelude[0].t_s if self.prelude else 0.0

    def freeze_due_s(self, position: int) -> float:
        """When the freeze part's ``position``-th message (counting over turns) is due,
        from the freeze part's start."""
        turn, i = divmod(position, len(self.freeze))
        return turn * self.period_s + self.freeze[i].t_s - self.freeze[0].t_s

    def recorded(self, seq: int) -> Recorded:
        """The recorded message a room's entry ``seq`` replays."""
        if seq <= len(self.prelude):
            return self.prelude[seq - 1]
        return self.freeze[(seq - len(self.prelude) - 1) % len(self.freeze)]

    def values_per_s(self) -> float:
        return sum(r.values for r in self.freeze) / self.period_s


class Room:
    """One replayed room: its node, site and chain head."""

    def __init__(
        self, track: Track, node: str, site: str, seq: int = 0, prev_hash: str = GENESIS_HASH
    ) -> None:
        self.track, self.node, self.site = track, node, site
        self.topic = topic_of(site, node)
        self.seq, self.prev_hash = seq, prev_hash

    def next_message(self, at: str) -> tuple[bytes, Recorded]:
        """The room's next entry as a message (bytes as the daemon encodes them), made at ``at``."""
        seq = self.seq + 1
        rec = self.track.recorded(seq)
        doc, e = rec.doc, rec.doc["entry"]
        h = entry_hash(seq, at, self.node, e["kind"], e["payload"], self.prev_hash)
        entry = {**e, "seq": seq, "at": at, "node": self.node, "prev_hash": self.prev_hash,
                 "hash": h}  # fmt: skip
        out = {**doc, "site": self.site, "node": self.node, "entry": entry, "sent_at": at}
        withheld = doc.get("withheld")
        if withheld and withheld.get("by_seq") is not None:
            out["withheld"] = {**withheld, "by_seq": withheld["by_seq"] + seq - e["seq"]}
        self.seq, self.prev_hash = seq, h
        raw = json.dumps(out, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return raw.encode("utf-8"), rec
