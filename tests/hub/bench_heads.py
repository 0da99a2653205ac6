"""Each room's head on long chains: what the ingest path's ``room_views`` costs on PostgreSQL
(benchmark, not a test).

    python -m tests.hub.bench_heads                          # 50 rooms, 1,000,000 entries
    python -m tests.hub.bench_heads --rooms 500 --entries 5000000 --runs 9

A throwaway PostgreSQL cluster (``tests/pg.py``), the collector's schema at
head (``store/migrate.upgrade``), ``--rooms`` rooms registered
(``admin.add_room``) and ``--entries`` received entries spread evenly over
them, written in the order a collector receives them (the rooms interleaved,
seq by seq) by the ingest path's own ``COPY`` (``store/bulk.copy_rows``). The
entries are synthetic but valid for the table (chained hashes, no real
digests). Then ``ANALYZE`` (no ``VACUUM``: a live collector's newest entries
are not all-visible either, so the plan's heap fetches are the real ones).

**Measured**: ``received.room_views`` for all rooms, the call the ingest
shell makes once per batch (its two queries and the ``RoomView`` objects),
each run in its own transaction (``time.perf_counter``): the median of
``--runs``, after a first, cold read reported apart (the statement not yet
compiled, the fresh rows' hint bits not yet set). Every run's heads are checked against what
was written. The head query it sends (captured from that call, not a copy) is
run again under ``EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)``: its execution
time and every plan node that reads ``received_entries`` (node type, index,
scan direction, loops, heap fetches). **Compared**: the head query's earlier
form (``GROUP BY node`` with ``max(seq)``, joined back for the hash), timed
the same way.

The last line printed is the JSON result. Exit status: 0 measured, 1 no
PostgreSQL server binaries or a head read back wrong, 2 a bad option.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Engine, and_, event, func, select, text
from sqlalchemy.orm import Session

from cryod.hub import admin
from cryod.hub.access import Grant, Role
from cryod.hub.store import received
from cryod.hub.store.bulk import ENTRY_COLUMNS, copy_rows
from cryod.hub.store.db import make_engine, writer
from cryod.hub.store.migrate import upgrade
from cryod.hub.store.models import ReceivedEntry
from tests.pg import find_pg_bin, running_cluster

COLLECTOR = "bench-heads"
SITE = "bench"
T0 = dt.datetime(2026, 3, 1, 9, 0, 0, tzinfo=dt.UTC)
GENESIS = "0" * 64
PK = "pk_received_entries"


class HeadsWrong(Exception):
    """A query read back heads other than those written (the figure would mean nothing)."""


def node_name(i: int) -> str:
    return f"room-{i:04d}"


def chain_lengths(rooms: int, entries: int) -> list[int]:
    """Entries per room: as even as the numbers allow (the first rooms one more)."""
    per, extra = divmod(entries, rooms)
    return [per + (1 if i < extra else 0) for i in range(rooms)]


def _hash(room: int, seq: int) -> str:
    return f"{room:032x}{seq:032x}"


def _entries(lengths: Sequence[int]) -> Iterator[dict[str, Any]]:
    """Synthetic received entries, rooms interleaved seq by seq (the order they arrive in)."""
    for seq in range(1, max(lengths) + 1):
        at = T0 + dt.timedelta(seconds=seq)
        for room, n in enumerate(lengths):
            if seq > n:
                continue
            yield {
                "node": node_name(room),
                "seq": seq,
                "at": at,
                "kind": "samples",
                "payload": {"table": "sample_polls", "polls": 20},
                "prev_hash": GENESIS if seq == 1 else _hash(room, seq - 1),
                "hash": _hash(room, seq),
                "v": 2,
                "profile_id": None,
                "profile_version": None,
                "profile_hash": None,
                "received_at": at,
                "skew_s": 0.0,
                "skew_flagged": False,
                "withheld_reason": None,
                "withheld_by_seq": None,
            }


def fill(engine: Engine, lengths: Sequence[int]) -> float:
    """Register the rooms and write their entries; seconds the entries' COPY took."""
    actor = admin.Actor("bench", (Grant(Role.ADMIN),))
    with Session(writer(engine)) as s, s.begin():
        for i in range(len(lengths)):
            admin.add_room(s, actor, room=node_name(i), site=SITE, credential=node_name(i),
                           cert_sha256=None, first_seq=1, first_hash=None, now=T0,
                           node=COLLECTOR)  # fmt: skip
    started = time.perf_counter()
    with Session(writer(engine)) as s, s.begin():
        copy_rows(s, ReceivedEntry.__tablename__, ENTRY_COLUMNS, _entries(lengths))
    copied_s = time.perf_counter() - started
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))
    return copied_s


def _group_by_max(session: Session, nodes: Sequence[str]) -> list[tuple[str, int, str]]:
    """The head query before the per-room probe (git d4f17e6^): every entry of every room read."""
    last = (
        select(ReceivedEntry.node, func.max(ReceivedEntry.seq).label("seq"))
        .where(ReceivedEntry.node.in_(nodes))
        .group_by(ReceivedEntry.node)
        .subquery()
    )
    query = select(ReceivedEntry.node, ReceivedEntry.seq, ReceivedEntry.hash).join(
        last, and_(ReceivedEntry.node == last.c.node, ReceivedEntry.seq == last.c.seq)
    )
    return [(r.node, r.seq, r.hash) for r in session.execute(query)]


def _heads_of_views(session: Session, nodes: Sequence[str]) -> dict[str, tuple[int, str] | None]:
    views = received.room_views(session, nodes)
    return {n: None if v.head is None else (v.head.seq, v.head.hash) for n, v in views.items()}


def _heads_of_group_by(session: Session, nodes: Sequence[str]) -> dict[str, tuple[int, str]]:
    return {node: (seq, digest) for node, seq, digest in _group_by_max(session, nodes)}


def _timed(engine: Engine, read: Any, nodes: Sequence[str], runs: int, want: Any) -> list[float]:
    """Milliseconds of a first read and then of ``runs`` more, each in its own transaction."""
    times_ms = []
    for _ in range(runs + 1):
        with Session(writer(engine)) as s, s.begin():
            started = time.perf_counter()
            got = read(s, nodes)
            elapsed_ms = (time.perf_counter() - started) * 1000
        if got != want:
            raise HeadsWrong(f"{read.__name__} read heads that were not written")
        times_ms.append(round(elapsed_ms, 3))
    return times_ms


def captured_statements(engine: Engine, call: Any) -> list[tuple[str, Any]]:
    """The SQL statements (and parameters) ``call(session)`` sends, in order."""
    sent: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        with Session(writer(engine)) as s, s.begin():
            call(s)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    return sent


def _plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _plan_nodes(child)


def explain(engine: Engine, statement: str, parameters: Any) -> dict[str, Any]:
    """EXPLAIN ANALYZE of one statement: its execution time and its reads of received_entries."""
    with engine.connect() as conn:
        doc = conn.exec_driver_sql(
            f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement}", parameters
        ).scalar_one()
        conn.rollback()
    top = doc[0]
    scans = [
        {
            "node_type": n["Node Type"],
            "index": n.get("Index Name"),
            "direction": n.get("Scan Direction"),
            "loops": n.get("Actual Loops"),
            "rows": n.get("Actual Rows"),
            "heap_fetches": n.get("Heap Fetches"),
            "shared_buffers": n.get("Shared Hit Blocks", 0) + n.get("Shared Read Blocks", 0),
        }
        for n in _plan_nodes(top["Plan"])
        if n.get("Relation Name") == ReceivedEntry.__tablename__
    ]
    return {"execution_ms": round(top["Execution Time"], 3), "received_entries_scans": scans}


def _summary(times_ms: list[float]) -> dict[str, Any]:
    """The first, cold read apart; the median of the others."""
    first, *runs = times_ms
    return {"median_ms": round(statistics.median(runs), 3), "runs_ms": runs, "first_ms": first}


def measure(url: str, rooms: int, entries: int, runs: int) -> dict[str, Any]:
    """Fill a fresh database at ``url`` and measure; the JSON result."""
    lengths = chain_lengths(rooms, entries)
    nodes = [node_name(i) for i in range(rooms)]
    want = {node_name(i): (n, _hash(i, n)) for i, n in enumerate(lengths)}
    engine = make_engine(url)
    try:
        upgrade(engine, node=COLLECTOR, now=T0)
        copy_s = fill(engine, lengths)
        with engine.connect() as conn:
            version = conn.execute(text("SHOW server_version")).scalar_one()
            size = conn.execute(
                text("SELECT pg_total_relation_size('received_entries')")
            ).scalar_one()
        views_ms = _timed(engine, _heads_of_views, nodes, runs, want)
        sent = captured_statements(engine, lambda s: received.room_views(s, nodes))
        head_query = [(q, p) for q, p in sent if ReceivedEntry.__tablename__ in q]
        if len(head_query) != 1:
            raise HeadsWrong(f"room_views sent {len(head_query)} queries on received_entries")
        plan = explain(engine, *head_query[0])
        old_ms = _timed(engine, _heads_of_group_by, nodes, runs, want)
        old_sent = captured_statements(engine, lambda s: _group_by_max(s, nodes))
        old_plan = explain(engine, *old_sent[-1])
    finally:
        engine.dispose()
    scans = plan["received_entries_scans"]
    return {
        "bench": "heads",
        "rooms": rooms,
        "entries": entries,
        "entries_per_room": [min(lengths), max(lengths)],
        "received_entries_mb": round(size / 1e6, 1),
        "postgresql": version,
        "copy_entries_per_s": round(entries / copy_s),
        "runs": runs,
        "room_views": _summary(views_ms),
        "head_query_plan": plan,
        "head_query_uses_only_pk": bool(scans) and all(s["index"] == PK for s in scans),
        "index_only_backward_scan": any(
            s["node_type"] == "Index Only Scan" and s["direction"] == "Backward" for s in scans
        ),
        "group_by_max": {**_summary(old_ms), "plan": old_plan},
        "heads_correct": True,
    }


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.hub.bench_heads")
    p.add_argument("--rooms", type=int, default=50, help="rooms registered (default 50)")
    p.add_argument("--entries", type=int, default=1_000_000,
                   help="received entries, spread over the rooms (default 1,000,000)")  # fmt: skip
    p.add_argument("--runs", type=int, default=9, help="timed runs of each query (default 9)")
    args = p.parse_args(argv)
    if args.rooms < 1 or args.runs < 1:
        print("bench-heads: --rooms and --runs: must be at least 1", file=sys.stderr)
        return 2
    if args.entries < args.rooms:
        print(f"bench-heads: --entries: {args.entries} is fewer than --rooms ({args.rooms}): "
              "every room needs a head", file=sys.stderr)  # fmt: skip
        return 2
    bin_dir = find_pg_bin()
    if bin_dir is None:
        print("bench-heads: needs the PostgreSQL server binaries (apt-get install postgresql)",
              file=sys.stderr)  # fmt: skip
        return 1
    load_before = _load()
    with running_cluster(bin_dir) as cluster:
        try:
            result = measure(cluster.url(cluster.create_database()), args.rooms,
                             args.entries, args.runs)  # fmt: skip
        except HeadsWrong as exc:
            print(f"bench-heads: {exc}", file=sys.stderr)
            return 1
    result.update(cores=os.cpu_count(), load_before=load_before, load_after=_load())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
