"""Procedures, cycles, alarms and samples, read from what the rooms sent.

The collector stores each room's research rows as the canonical bytes it
received (``received_rows``; docs/collector.md). ``RecordIndex`` decodes
them once into the newest version of each ``procedures``, ``cycles`` and
``alarms`` row per room, and then only what arrived since (per room, the
entries past the last one it folded): a page never decodes the whole
study. A row a room later redacted (its entry has ``op`` ``redact`` and no
row) leaves the index.

Samples are decoded on demand from the sample blocks whose entries fall
within a procedure's open..close time (``tip_series``).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cryod.integrity import EncodingError, decode, decode_row

from ..store.models import ReceivedBlock, ReceivedEntry, ReceivedRow, Room

__all__ = ["TABLES", "Filters", "Procedure", "RecordIndex", "parse_time", "tip_series"]

TABLES: Final = ("procedures", "cycles", "alarms")
#: sample blocks are committed a few times a second: an entry's time is within
#: this of its samples' times
BLOCK_SLACK: Final = dt.timedelta(seconds=60)


def parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def _values(columns: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    return {name: value for name, (_kind, value) in columns.items()}


@dataclass(frozen=True, slots=True)
class Procedure:
    node: str
    site: str
    id: int
    values: dict[str, Any]

    @property
    def study(self) -> str | None:
        s = self.values.get("study_id")
        return s if isinstance(s, str) else None

    @property
    def opened_at(self) -> dt.datetime | None:
        return parse_time(self.values.get("opened_at"))

    @property
    def closed_at(self) -> dt.datetime | None:
        return parse_time(self.values.get("closed_at"))

    @property
    def status(self) -> str:
        return "closed" if self.values.get("closed_at") is not None else "open"


@dataclass(frozen=True, slots=True)
class Filters:
    study: str | None = None
    site: str | None = None
    room: str | None = None
    status: str | None = None  # open | closed
    date_from: dt.date | None = None
    date_to: dt.date | None = None

    def keep(self, p: Procedure) -> bool:
        opened = p.opened_at
        day = None if opened is None else opened.date()
        return (
            (self.study is None or p.study == self.study)
            and (self.site is None or p.site == self.site)
            and (self.room is None or p.node == self.room)
            and (self.status is None or p.status == self.status)
            and (self.date_from is None or (day is not None and day >= self.date_from))
            and (self.date_to is None or (day is not None and day <= self.date_to))
        )


@dataclass
class _Room:
    site: str
    folded_to: int = 0
    rows: dict[str, dict[int, dict[str, Any]]] = field(
        default_factory=lambda: {t: {} for t in TABLES}
    )


class RecordIndex:
    """The newest version of every procedure, cycle and alarm row, per room."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rooms: dict[str, _Room] = {}
        self.undecodable = 0

    def refresh(self, session: Session) -> None:
        with self._lock:
            for node, site in session.execute(select(Room.node, Room.site)):
                self._rooms.setdefault(node, _Room(site)).site = site
            newest = select(ReceivedEntry.node, func.max(ReceivedEntry.seq)).group_by(
                ReceivedEntry.node
            )
            heads: dict[str, int] = dict(session.execute(newest).all())
            for node, head in heads.items():
                room = self._rooms.get(node)
                if room is None or head <= room.folded_to:
                    continue
                self._fold(session, node, room, head)

    def _fold(self, session: Session, node: str, room: _Room, head: int) -> None:
        events: list[tuple[int, int, str, Any]] = []  # (seq, position, op, payload)
        for seq, pos, table, canonical in session.execute(
            select(
                ReceivedRow.seq, ReceivedRow.position, ReceivedRow.table_name, ReceivedRow.canonical
            ).where(
                ReceivedRow.node == node,
                ReceivedRow.seq > room.folded_to,
                ReceivedRow.seq <= head,
                ReceivedRow.table_name.in_(TABLES),
            )
        ):
            events.append((seq, pos, "row", (table, canonical)))
        for seq, payload in session.execute(
            select(ReceivedEntry.seq, ReceivedEntry.payload).where(
                ReceivedEntry.node == node,
                ReceivedEntry.seq > room.folded_to,
                ReceivedEntry.seq <= head,
                ReceivedEntry.kind == "row",
            )
        ):
            if isinstance(payload, dict) and payload.get("op") == "redact":
                events.append((seq, -1, "redact", payload))
        for _seq, _pos, op, data in sorted(events, key=lambda e: (e[0], e[1])):
            if op == "row":
                table, canonical = data
                try:
                    row = decode_row(bytes(canonical))
                except EncodingError:
                    self.undecodable += 1
                    continue
                values = _values(row.columns)
                rid = values.get("id")
                if isinstance(rid, int):
                    room.rows[table][rid] = values
            else:
                key = data.get("key")
                table = data.get("table")
                if table in room.rows and isinstance(key, dict) and isinstance(key.get("id"), int):
                    room.rows[table].pop(key["id"], None)
        room.folded_to = head

    def procedures(self, readable: Callable[[Procedure], bool]) -> list[Procedure]:
        """Every procedure ``readable`` allows, newest opened first."""
        with self._lock:
            out = [
                Procedure(node, room.site, pid, values)
                for node, room in self._rooms.items()
                for pid, values in room.rows["procedures"].items()
            ]
        out = [p for p in out if readable(p)]
        far = dt.datetime.min.replace(tzinfo=dt.UTC)
        out.sort(key=lambda p: (p.opened_at or far, p.node, p.id), reverse=True)
        return out

    def procedure(self, node: str, pid: int) -> Procedure | None:
        with self._lock:
            room = self._rooms.get(node)
            if room is None or pid not in room.rows["procedures"]:
                return None
            return Procedure(node, room.site, pid, dict(room.rows["procedures"][pid]))

    def children(self, node: str, table: str, pid: int) -> list[dict[str, Any]]:
        with self._lock:
            room = self._rooms.get(node)
            if room is None:
                return []
            rows = [dict(v) for v in room.rows[table].values() if v.get("procedure_id") == pid]
        return sorted(rows, key=lambda r: r.get("id", 0))

    def choices(self, procedures: Iterable[Procedure]) -> dict[str, list[str]]:
        ps = list(procedures)
        return {
            "study": sorted({p.study for p in ps if p.study}),
            "site": sorted({p.site for p in ps}),
            "room": sorted({p.node for p in ps}),
        }


def tip_series(
    session: Session, proc: Procedure, now: dt.datetime
) -> tuple[int, dict[int, list[tuple[float, float | None]]], float]:
    """(newest block seq, probe -> [(seconds since open, tip °C or None)], duration s).

    A sample whose value is null, or whose validity is not ``valid`` or
    ``questionable``, is None: a gap in the plot, never a number.
    """
    opened = proc.opened_at
    if opened is None:
        return 0, {}, 0.0
    closed = proc.closed_at or now
    t0 = opened.timestamp()
    duration = max(0.0, closed.timestamp() - t0)
    series: dict[int, list[tuple[float, float | None]]] = {}
    newest = 0
    for seq, data in session.execute(
        select(ReceivedBlock.seq, ReceivedBlock.data)
        .join(
            ReceivedEntry,
            (ReceivedEntry.node == ReceivedBlock.node) & (ReceivedEntry.seq == ReceivedBlock.seq),
        )
        .where(
            ReceivedBlock.node == proc.node,
            ReceivedEntry.kind == "samples",
            ReceivedEntry.at >= opened - BLOCK_SLACK,
            ReceivedEntry.at <= closed + BLOCK_SLACK,
        )
        .order_by(ReceivedBlock.seq)
    ):
        newest = max(newest, seq)
        try:
            batch = decode(bytes(data))
        except EncodingError:
            continue
        if not isinstance(batch, list) or len(batch) < 3 or not isinstance(batch[2], list):
            continue
        cols = batch[2]
        try:
            i_pid, i_t, i_probe = (
                cols.index("procedure_id"),
                cols.index("t_utc"),
                cols.index("probe"),
            )
            i_ch, i_v, i_val = cols.index("channel"), cols.index("value"), cols.index("validity")
        except ValueError:
            continue
        for row in batch[3:]:
            if not isinstance(row, list) or len(row) != len(cols):
                continue
            if row[i_pid] != proc.id or row[i_ch] != "tip_c":
                continue
            t, probe, value = row[i_t], row[i_probe], row[i_v]
            if not isinstance(t, float) or not isinstance(probe, int):
                continue
            usable = isinstance(value, float) and row[i_val] in ("valid", "questionable")
            series.setdefault(probe, []).append((t - t0, value if usable else None))
    return newest, series, duration
