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
    site: str  # the site the room is registered at
    id: int
    values: dict[str, Any]
    study: str | None
    opened_at: dt.datetime | None
    closed_at: dt.datetime | None

    @classmethod
    def of(cls, node: str, site: str, pid: int, values: dict[str, Any]) -> Procedure:
        study = values.get("study_id")
        return cls(
            node=node,
            site=site,
            id=pid,
            values=values,
            study=study if isinstance(study, str) else None,
            opened_at=parse_time(values.get("opened_at")),
            closed_at=parse_time(values.get("closed_at")),
        )

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

    def __init__(self, *, refresh_s: float = 1.0) -> None:
        self._lock = threading.Lock()
        self._rooms: dict[str, _Room] = {}
        self._sorted: list[Procedure] | None = None  # every procedure, newest first
        self._refreshed: float | None = None
        #: at most one look for new entries this often (pages show rows at most this late)
        self.refresh_s = refresh_s
        self.undecodable = 0

    def refresh(self, session: Session, now_mono: float | None = None) -> None:
        """Fold what arrived since; with ``now_mono``, not again within ``refresh_s``."""
        with self._lock:
            if (
                now_mono is not None
                and self._refreshed is not None
                and now_mono - self._refreshed < self.refresh_s
            ):
                return
            for node, site in session.execute(select(Room.node, Room.site)):
                room = self._rooms.setdefault(node, _Room(site))
                if room.site != site:
                    room.site = site
                    self._sorted = None
            for node, room in self._rooms.items():
                # one index lookup per room (a GROUP BY would scan every entry)
                head = session.execute(
                    select(func.max(ReceivedEntry.seq)).where(ReceivedEntry.node == node)
                ).scalar_one_or_none()
                if head is None or head <= room.folded_to:
                    continue
                # the sorted list is rebuilt only when a procedure row changed (a room
                # streaming sample blocks changes none)
                if self._fold(session, node, room, head):
                    self._sorted = None
            self._refreshed = now_mono

    def _fold(self, session: Session, node: str, room: _Room, head: int) -> bool:
        """Fold the room's entries up to ``head``; whether a procedure row changed."""
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
        procedures_changed = False
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
                    procedures_changed |= table == "procedures"
            else:
                key = data.get("key")
                table = data.get("table")
                if table in room.rows and isinstance(key, dict) and isinstance(key.get("id"), int):
                    gone = room.rows[table].pop(key["id"], None)
                    procedures_changed |= gone is not None and table == "procedures"
        room.folded_to = head
        return procedures_changed

    def procedures(self, scope_ok: Callable[[str | None, str], bool]) -> list[Procedure]:
        """Every procedure whose (study, site) ``scope_ok`` allows, newest opened first."""
        with self._lock:
            if self._sorted is None:
                every = [
                    Procedure.of(node, room.site, pid, values)
                    for node, room in self._rooms.items()
                    for pid, values in room.rows["procedures"].items()
                ]
                far = dt.datetime.min.replace(tzinfo=dt.UTC)
                every.sort(key=lambda p: (p.opened_at or far, p.node, p.id), reverse=True)
                self._sorted = every
            every = self._sorted
        scopes = {(p.study, p.site) for p in every}
        allowed = {sc for sc in scopes if scope_ok(*sc)}
        if allowed == scopes:
            return list(every)
        return [p for p in every if (p.study, p.site) in allowed]

    def procedure(self, node: str, pid: int) -> Procedure | None:
        with self._lock:
            room = self._rooms.get(node)
            if room is None or pid not in room.rows["procedures"]:
                return None
            return Procedure.of(node, room.site, pid, dict(room.rows["procedures"][pid]))

    def children(self, node: str, table: str, pid: int) -> list[dict[str, Any]]:
        with self._lock:
            room = self._rooms.get(node)
            if room is None:
                return []
            rows = [dict(v) for v in room.rows[table].values() if v.get("procedure_id") == pid]
        return sorted(rows, key=lambda r: r.get("id", 0))

    def choices(self, procedures: Iterable[Procedure]) -> dict[str, list[str]]:
        triples = {(p.study, p.site, p.node) for p in procedures}
        return {
            "study": sorted({t[0] for t in triples if t[0]}),
            "site": sorted({t[1] for t in triples}),
            "room": sorted({t[2] for t in triples}),
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
