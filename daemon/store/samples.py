"""Polled values: a driver Snapshot as sample rows, and the compact form they are stored in.

**Rows** (``SampleRow``, one per polled value: console, times, probe, channel,
value, validity) are what the poll loop hands the writer and what readers get
back: the form of the samples table before revision 0006 (``cryod.samples/1``).
Measured values keep the validity the driver gave them (a stale or invalid
reading is stored with value NULL); states read back from the console (valves,
lease, faults) are 0/1 (or the status code) with validity ``valid``.

**Stored** (revision 0006, docs/data-model.md "Samples"): one ``sample_polls``
row per poll of a console (its times, procedure, the console's analog
channels), one ``sample_probes`` row per probe in that poll (tip and return
pressure), and ``sample_states`` rows for the state channels **when they
change**: a poll with ``full_state = 1`` lists every state channel, the
polls after it only the channels whose value or validity changed (a channel
that stops being polled gets a row with validity NULL). The writer marks the
first poll of each console in each batch, and the first poll after the
procedure changes, as full, so every committed batch (one chain entry) reads
back alone. Validity is a small code per value (``VALIDITY_CODES``); NULL
means the channel was not polled.

``pack_polls`` turns rows into stored polls, ``unpack_polls`` turns stored
polls back into exactly those rows; ``read_rows`` reads rows from a database.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from cryod.drivers.base import Snapshot, Validity
from cryod.integrity import SAMPLES_V2, encode_sample_batch

if TYPE_CHECKING:
    from sqlalchemy import Connection


class SampleRow(NamedTuple):
    """One polled value; ``probe`` 0 is a console-level channel.

    A NamedTuple (immutable, like the frozen dataclass it replaced) because the
    poll loop makes ~70 of these per poll: building one costs a fifth as much.
    """

    console: str
    t_utc: float
    t_mono: float
    probe: int
    channel: str
    value: float | None
    validity: str
    procedure_id: int | None = None

    def as_tuple(self) -> tuple[Any, ...]:
        return tuple(self)

    def as_row(self) -> dict[str, Any]:
        return self._asdict()


PROBE_CHANNELS = (
    "tip_c",
    "return_kpa",
    "tc_status",
    "freeze_open",
    "thaw_on",
    "limits_armed",
    "trip",
)
CONSOLE_CHANNELS = (
    "supply_kpa",
    "cylinder_kpa",
    "skin_c",
    "master_open",
    "supply_low",
    "lease_armed",
    "lease_expired",
    "fault_overpressure",
    "fault_console_limit",
    "console_time_s",
)

#: analog channels: columns of sample_polls (console, probe 0) and sample_probes (probe >= 1)
CONSOLE_ANALOG = ("supply_kpa", "cylinder_kpa", "skin_c", "console_time_s")
PROBE_ANALOG = ("tip_c", "return_kpa")
#: state channels: sample_states rows, stored when they change
CONSOLE_STATES = tuple(c for c in CONSOLE_CHANNELS if c not in CONSOLE_ANALOG)
PROBE_STATES = tuple(c for c in PROBE_CHANNELS if c not in PROBE_ANALOG)

#: validity -> stored code (a NULL code: the channel was not polled)
VALIDITY_CODES: dict[str, int] = {"valid": 0, "questionable": 1, "invalid": 2, "stale": 3}
VALIDITY_NAMES: dict[int, str] = {code: name for name, code in VALIDITY_CODES.items()}

_CONSOLE_INDEX = {c: i for i, c in enumerate(CONSOLE_ANALOG)}
_PROBE_INDEX = {c: i for i, c in enumerate(PROBE_ANALOG)}
_CONSOLE_ORDER = {c: i for i, c in enumerate(CONSOLE_CHANNELS)}
_PROBE_ORDER = {c: i for i, c in enumerate(PROBE_CHANNELS)}

# Validity -> (stored text, usable): a dict lookup instead of two properties per reading
_VALIDITY: dict[Validity, tuple[str, bool]] = {v: (v.value, v.usable) for v in Validity}
# SampleRow(...) runs a Python-level __new__ per row; tuple.__new__ builds the same
# SampleRow in C (the rows are made on every poll: 66 for 8 probes)
_new_row = tuple.__new__


def snapshot_rows(snap: Snapshot, console: str, procedure_id: int | None) -> list[SampleRow]:
    """One row per polled value: the console's channels, then each probe's.

    A measured value whose reading is not usable (stale, invalid) is stored
    as NULL with its validity; read-back states are 0/1 and ``valid``.
    """
    t_utc, t_mono, pid = snap.t_utc, snap.t_mono, procedure_id
    row, validity = SampleRow, _VALIDITY
    rows: list[SampleRow] = []
    add = rows.append
    measured = [("supply_kpa", snap.supply_kpa), ("cylinder_kpa", snap.cylinder_kpa)]
    if snap.skin_c is not None:
        measured.append(("skin_c", snap.skin_c))
    for channel, r in measured:
        text, usable = validity[r.validity]
        value = r.value if usable else None
        add(_new_row(row, (console, t_utc, t_mono, 0, channel, value, text, pid)))
    lease, faults = snap.lease, snap.faults
    for channel, state in (
        ("master_open", float(snap.master_open)),
        ("supply_low", float(snap.supply_low)),
        ("lease_armed", float(lease.armed)),
        ("lease_expired", float(lease.expired)),
        ("fault_overpressure", float(faults.overpressure)),
        ("fault_console_limit", float(faults.console_limit)),
        ("console_time_s", snap.console_time_s),
    ):
        add(_new_row(row, (console, t_utc, t_mono, 0, channel, state, "valid", pid)))
    for p in snap.probes:
        n = p.probe
        for channel, r in (("tip_c", p.tip_c), ("return_kpa", p.return_kpa)):
            text, usable = validity[r.validity]
            value = r.value if usable else None
            add(_new_row(row, (console, t_utc, t_mono, n, channel, value, text, pid)))
        for channel, state in (
            ("tc_status", float(p.tc_status)),
            ("freeze_open", float(p.freeze_open)),
            ("thaw_on", float(p.thaw_on)),
            ("limits_armed", float(p.limits_armed)),
            ("trip", float(p.trip)),
        ):
            add(_new_row(row, (console, t_utc, t_mono, n, channel, state, "valid", pid)))
    return rows


# ---- the stored form -----------------------------------------------------------------------
class StoredPoll(NamedTuple):
    """One ``sample_polls`` row with its ``sample_probes`` and ``sample_states`` rows, as
    stored; the unit a ``cryod.samples/2`` batch lists (``POLL_COLUMNS`` order)."""

    id: int
    procedure_id: int | None
    console: str
    t_utc: float
    t_mono: float
    full_state: int  # 1: ``states`` lists every state channel; 0: only the changes
    supply_kpa: float | None
    supply_v: int | None
    cylinder_kpa: float | None
    cylinder_v: int | None
    skin_c: float | None
    skin_v: int | None
    console_time_s: float | None
    console_time_v: int | None
    # (probe, tip_c, tip_v, return_kpa, return_v), ascending probe
    probes: tuple[tuple[int, float | None, int | None, float | None, int | None], ...]
    # (probe, channel, value, validity code or None: no longer polled), ascending
    states: tuple[tuple[int, str, float | None, int | None], ...]


#: the sample_polls columns, in StoredPoll order (without the nested rows)
POLL_COLUMNS = StoredPoll._fields[:-2]
PROBE_COLUMNS = ("poll_id", "probe", "tip_c", "tip_v", "return_kpa", "return_v")
STATE_COLUMNS = ("poll_id", "probe", "channel", "value", "validity")


def _code(validity: Any) -> int:
    try:
        return VALIDITY_CODES[validity]
    except (KeyError, TypeError):
        raise ValueError(f"unknown validity {validity!r}") from None


def known_rows(rows: Iterable[Sequence[Any]]) -> tuple[list[Sequence[Any]], int]:
    """(the rows whose validity the stored form knows, how many others were left out)."""
    kept: list[Sequence[Any]] = []
    left = 0
    for r in rows:
        if r[6] in VALIDITY_CODES:
            kept.append(r)
        else:
            left += 1
    return kept, left


def poll_groups(rows: Iterable[Sequence[Any]]) -> Iterator[list[Sequence[Any]]]:
    """Consecutive rows of one poll: same console, times and procedure, no channel twice."""
    current: list[Sequence[Any]] = []
    key: tuple[Any, ...] | None = None
    seen: set[tuple[Any, Any]] = set()
    for r in rows:
        k = (r[0], r[1], r[2], r[7])
        ch = (r[3], r[4])
        if k != key or ch in seen:
            if current:
                yield current
            current, key, seen = [], k, set()
        current.append(r)
        seen.add(ch)
    if current:
        yield current


def pack_polls(
    rows: Iterable[Sequence[Any]],
    first_id: int,
    last_state: dict[str, tuple[int | None, dict[tuple[int, str], tuple[float | None, int]]]]
    | None = None,
) -> list[StoredPoll]:
    """Rows (``SampleRow`` field order, one poll's rows consecutive) -> stored polls with
    ids from ``first_id``. ``last_state`` (per console: procedure and the states of its
    last poll) is what the polls continue from; None (a new batch): each console's
    first poll is full. A channel without a column of its own (the state channels,
    and any other) goes to ``states``. Raises ``ValueError`` for an unknown validity."""
    state = {} if last_state is None else last_state
    out: list[StoredPoll] = []
    rid = first_id
    for poll in poll_groups(rows):
        console, t_utc, t_mono, _p, _c, _v, _val, pid = poll[0]
        console_vals: list[Any] = [None] * 8
        probes: dict[int, list[Any]] = {}
        states: dict[tuple[int, str], tuple[float | None, int]] = {}
        for r in poll:
            probe, channel, value, validity = r[3], r[4], r[5], r[6]
            if value is not None and value != value:
                value = None  # a NaN: SQLite stores it as NULL
            if probe == 0 and channel in _CONSOLE_INDEX:
                i = 2 * _CONSOLE_INDEX[channel]
                console_vals[i], console_vals[i + 1] = value, _code(validity)
            elif probe != 0 and channel in _PROBE_INDEX:
                vals = probes.get(probe)
                if vals is None:
                    vals = probes[probe] = [None, None, None, None]
                i = 2 * _PROBE_INDEX[channel]
                vals[i], vals[i + 1] = value, _code(validity)
            else:  # a state channel, or any other: stored when it changes
                states[(probe, channel)] = (value, _code(validity))
        before = state.get(console)
        changed: list[tuple[int, str, float | None, int | None]]
        if before is None or before[0] != pid:
            full, changed = 1, sorted((p, c, v, code) for (p, c), (v, code) in states.items())
        else:
            full, old = 0, before[1]
            changed = sorted(
                [
                    (p, c, v, code)
                    for (p, c), (v, code) in states.items()
                    if old.get((p, c)) != (v, code)
                ]
                + [(p, c, None, None) for (p, c) in old if (p, c) not in states]
            )
        state[console] = (pid, states)
        out.append(
            StoredPoll._make(
                (
                    rid,
                    pid,
                    console,
                    t_utc,
                    t_mono,
                    full,
                    *console_vals,
                    tuple((p, *probes[p]) for p in sorted(probes)),
                    tuple(changed),
                )
            )
        )
        rid += 1
    return out


def _value(v: Any) -> float | None:
    return None if v is None else float(v)


def unpack_polls(polls: Iterable[StoredPoll]) -> Iterator[SampleRow]:
    """Stored polls (ascending id) -> the rows they were packed from, in
    ``snapshot_rows`` order. A console's states before its first full poll are not
    known: the rows of those polls list only the analog channels and the changes."""
    state: dict[str, dict[tuple[int, str], tuple[float | None, int]]] = {}
    for poll in polls:
        console = poll.console
        current = {} if poll.full_state else dict(state.get(console, {}))
        for probe, channel, value, code in poll.states:
            if code is None:
                current.pop((probe, channel), None)
            else:
                current[(probe, channel)] = (value, code)
        state[console] = current
        values: dict[tuple[int, str], tuple[Any, int]] = dict(current)
        scalars: Sequence[Any] = poll
        for i, channel in enumerate(CONSOLE_ANALOG):
            code = scalars[6 + 2 * i + 1]
            if code is not None:
                values[(0, channel)] = (scalars[6 + 2 * i], code)
        for probe, tip, tip_v, ret, ret_v in poll.probes:
            if tip_v is not None:
                values[(probe, "tip_c")] = (tip, tip_v)
            if ret_v is not None:
                values[(probe, "return_kpa")] = (ret, ret_v)
        head = (console, float(poll.t_utc), float(poll.t_mono))
        for probe, channel in sorted(
            values,
            key=lambda k: (
                k[0],
                (_CONSOLE_ORDER if k[0] == 0 else _PROBE_ORDER).get(k[1], len(_CONSOLE_ORDER)),
                k[1],
            ),
        ):
            value, code = values[(probe, channel)]
            yield SampleRow(
                *head, probe, channel, _value(value), VALIDITY_NAMES[code], poll.procedure_id
            )


# ---- writing stored polls -----------------------------------------------------------------
# plain SQL: the writer's hot path
_INSERT_POLL = (
    "INSERT INTO sample_polls (id, procedure_id, console, t_utc, t_mono, full_state,"
    " supply_kpa, supply_v, cylinder_kpa, cylinder_v, skin_c, skin_v, console_time_s,"
    " console_time_v) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_PROBE = (
    "INSERT INTO sample_probes (poll_id, probe, tip_c, tip_v, return_kpa, return_v)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_INSERT_STATE = (
    "INSERT INTO sample_states (poll_id, probe, channel, value, validity) VALUES (?, ?, ?, ?, ?)"
)
MAX_POLL_ID = "SELECT max(id) FROM sample_polls"


class ConnectionRunner:
    """``executemany`` and ``execute`` on a SQLAlchemy connection, as on a DB-API one
    (so the same code runs inside the connection's transaction and savepoints)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def executemany(self, sql: str, params: list[tuple[Any, ...]]) -> None:
        if params:
            self.conn.exec_driver_sql(sql, params)

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return self.conn.exec_driver_sql(sql, params)


def insert_polls(dbapi: Any, polls: Sequence[StoredPoll]) -> None:
    """The stored polls' rows, one ``executemany`` per table (a DB-API connection or a
    ``ConnectionRunner``)."""
    dbapi.executemany(_INSERT_POLL, [p[:14] for p in polls])
    dbapi.executemany(_INSERT_PROBE, [(p[0], *probe) for p in polls for probe in p.probes])
    dbapi.executemany(_INSERT_STATE, [(p[0], *state) for p in polls for state in p.states])


def insert_rows(conn: Connection, rows: Iterable[Sequence[Any]]) -> list[StoredPoll]:
    """Store rows as one batch (ids from max + 1), without a chain entry: for tools and
    tests that build a database; the daemon's samples go through the writer."""
    (before,) = conn.exec_driver_sql(MAX_POLL_ID).one()
    polls = pack_polls(rows, (before or 0) + 1)
    insert_polls(ConnectionRunner(conn), polls)
    return polls


# ---- reading stored polls -----------------------------------------------------------------
_POLL_SELECT = ", ".join(POLL_COLUMNS)


def read_polls(conn: Connection, where: str = "", params: Sequence[Any] = ()) -> list[StoredPoll]:
    """Stored polls (``where`` on ``sample_polls``, ascending id) with their probe and state
    rows. ``where`` is SQL of ours, never user text; values go in ``params``."""
    clause = f" WHERE {where}" if where else ""
    heads = conn.exec_driver_sql(
        f"SELECT {_POLL_SELECT} FROM sample_polls{clause} ORDER BY id",  # noqa: S608
        tuple(params),
    ).all()
    if not heads:
        return []
    lo, hi = heads[0][0], heads[-1][0]
    probes: dict[int, list[tuple[Any, ...]]] = {}
    for r in conn.exec_driver_sql(
        "SELECT poll_id, probe, tip_c, tip_v, return_kpa, return_v FROM sample_probes"
        " WHERE poll_id BETWEEN ? AND ? ORDER BY poll_id, probe",
        (lo, hi),
    ):
        probes.setdefault(r[0], []).append(tuple(r[1:]))
    states: dict[int, list[tuple[Any, ...]]] = {}
    for r in conn.exec_driver_sql(
        "SELECT poll_id, probe, channel, value, validity FROM sample_states"
        " WHERE poll_id BETWEEN ? AND ? ORDER BY poll_id, probe, channel",
        (lo, hi),
    ):
        states.setdefault(r[0], []).append(tuple(r[1:]))
    return [
        StoredPoll._make((*h, tuple(probes.get(h[0], ())), tuple(states.get(h[0], ()))))
        for h in heads
    ]


def read_batch(conn: Connection, first: int, last: int) -> list[StoredPoll]:
    """The polls one chain entry covers (its payload's ``first``..``last``): what the
    record channel re-sends for a chain sequence."""
    return read_polls(conn, "id BETWEEN ? AND ?", (first, last))


def batch_by_seq(conn: Connection, seq: int) -> tuple[dict[str, Any], bytes] | None:
    """A sample batch by its chain entry's ``seq``: (the entry's payload, the batch's
    canonical bytes as stored now), what the record channel re-sends; None if that
    entry is not a batch of the compact tables. The bytes hash to the payload's
    ``digest`` unless the polls were changed (or removed: retention, redaction)."""
    row = conn.exec_driver_sql("SELECT kind, payload FROM audit WHERE seq = ?", (seq,)).first()
    if row is None or row[0] != "samples":
        return None
    payload = json.loads(row[1])
    if payload.get("table") != "sample_polls" or payload.get("encoding") != SAMPLES_V2:
        return None
    polls = read_batch(conn, int(payload["first"]), int(payload["last"]))
    return payload, encode_sample_batch(polls, SAMPLES_V2)


def read_rows(conn: Connection, where: str = "", params: Sequence[Any] = ()) -> list[SampleRow]:
    """The rows of the polls ``where`` selects (see ``read_polls``)."""
    return list(unpack_polls(read_polls(conn, where, params)))


# ---- the queries of the report and the crash recovery ---------------------------------------
#: (probe, channel, t_utc, t_mono, value, validity): one plotted reading
Reading = tuple[int, str, float, float, float | None, str]


def _has_table(conn: Connection, name: str) -> bool:
    found = conn.exec_driver_sql(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).first()
    return found is not None


def procedure_readings(conn: Connection, procedure_id: int, tip: bool = True) -> list[Reading]:
    """A procedure's supply and cylinder pressure (probe 0) and, with ``tip``, every
    probe's tip temperature, ordered by probe, channel, time: from the compact tables
    and from rows of the old table not converted yet (``cryod migrate``)."""
    out: list[tuple[Any, ...]] = []
    names = VALIDITY_NAMES
    if _has_table(conn, "sample_polls"):
        for t_utc, t_mono, supply, supply_v, cyl, cyl_v, pid in conn.exec_driver_sql(
            "SELECT t_utc, t_mono, supply_kpa, supply_v, cylinder_kpa, cylinder_v, id"
            " FROM sample_polls WHERE procedure_id = ?",
            (procedure_id,),
        ):
            if supply_v is not None:
                out.append((0, "supply_kpa", t_utc, t_mono, supply, names[supply_v], 1, pid))
            if cyl_v is not None:
                out.append((0, "cylinder_kpa", t_utc, t_mono, cyl, names[cyl_v], 1, pid))
        for probe, t_utc, t_mono, value, code, pid in conn.exec_driver_sql(
            "SELECT r.probe, p.t_utc, p.t_mono, r.tip_c, r.tip_v, p.id FROM sample_polls p"
            " JOIN sample_probes r ON r.poll_id = p.id"
            " WHERE p.procedure_id = ? AND r.tip_v IS NOT NULL",
            (procedure_id,),
        ):
            out.append((probe, "tip_c", t_utc, t_mono, value, names[code], 1, pid))
    for row in conn.exec_driver_sql(
        "SELECT probe, channel, t_utc, t_mono, value, validity, id FROM samples"
        " WHERE procedure_id = ? AND channel IN ('supply_kpa', 'cylinder_kpa', 'tip_c')",
        (procedure_id,),
    ):
        probe, channel = row[0], row[1]
        if (channel == "tip_c") == (probe == 0):
            continue  # a console-level tip or a probe's supply: not a plotted channel
        out.append((*row[:6], 0, row[6]))
    out.sort(key=lambda r: (r[0], r[1], r[2], r[6], r[7]))
    return [(int(r[0]), str(r[1]), float(r[2]), float(r[3]), _value(r[4]), str(r[5])) for r in out]


def last_tip(
    conn: Connection, procedure_id: int, probe: int, since_utc: float
) -> tuple[float, float] | None:
    """(t_utc, t_mono) of the probe's last tip reading at or after ``since_utc``, any
    validity; None if there is none (both tables, as ``procedure_readings``)."""
    found: list[tuple[float, float]] = []
    if _has_table(conn, "sample_polls"):
        row = conn.exec_driver_sql(
            "SELECT p.t_utc, p.t_mono FROM sample_polls p"
            " JOIN sample_probes r ON r.poll_id = p.id AND r.probe = ?"
            " WHERE p.procedure_id = ? AND p.t_utc >= ? AND r.tip_v IS NOT NULL"
            " ORDER BY p.t_utc DESC LIMIT 1",
            (probe, procedure_id, since_utc),
        ).first()
        if row is not None:
            found.append((float(row[0]), float(row[1])))
    row = conn.exec_driver_sql(
        "SELECT t_utc, t_mono FROM samples WHERE procedure_id = ? AND probe = ?"
        " AND channel = 'tip_c' AND t_utc >= ? ORDER BY t_utc DESC LIMIT 1",
        (procedure_id, probe, since_utc),
    ).first()
    if row is not None:
        found.append((float(row[0]), float(row[1])))
    return max(found) if found else None


def min_tip(conn: Connection, procedure_id: int, probe: int, since_utc: float) -> float | None:
    """The probe's lowest usable (valid or questionable) tip reading at or after
    ``since_utc``; None if there is none."""
    found: list[float] = []
    if _has_table(conn, "sample_polls"):
        value = conn.exec_driver_sql(
            "SELECT min(r.tip_c) FROM sample_polls p"
            " JOIN sample_probes r ON r.poll_id = p.id AND r.probe = ?"
            " WHERE p.procedure_id = ? AND p.t_utc >= ? AND r.tip_v IN (0, 1)",
            (probe, procedure_id, since_utc),
        ).scalar()
        if value is not None:
            found.append(float(value))
    value = conn.exec_driver_sql(
        "SELECT min(value) FROM samples WHERE procedure_id = ? AND probe = ?"
        " AND channel = 'tip_c' AND t_utc >= ? AND validity IN ('valid', 'questionable')",
        (procedure_id, probe, since_utc),
    ).scalar()
    if value is not None:
        found.append(float(value))
    return min(found) if found else None
