"""The web app's page times with a large study: the procedure list and a procedure page.

    python -m tests.bench.web_pages                       # SQLite, 10,000 procedures
    python -m tests.bench.web_pages --postgres            # a throwaway PostgreSQL cluster
    python -m tests.bench.web_pages --procedures 2000 --requests 100

Procedures reach the database as the rooms send them (real chain entries and
rows through the ingest core and store, 500 messages a transaction), over 20
rooms at 4 sites; the few samples are for the first procedure only. Then, in
process (Starlette's TestClient: no network), as a study-wide investigator:
``--requests`` times each of the procedure list (first page, a site filter, a
date filter, the last page) and a procedure page (which also writes its
``subject_read`` audit entry and anchor line). Reports p50/p95/max per page in
milliseconds; the last line printed is JSON. The first request (which decodes
every row into the read model) is reported apart as ``index_build_ms``.
Not follow-up assessments: those come with the follow-up pages.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import random
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from cryod.hub.ingest import Accept, decide
from cryod.hub.messages import parse_message
from cryod.hub.store import received
from cryod.hub.store.db import make_engine, writer
from cryod.hub.store.migrate import upgrade
from cryod.hub.web.app import WebSettings, create_app
from tests.hub.conftest import NODE, T0
from tests.hub.fake_room import raw
from tests.hub.followup_study import register
from tests.hub.test_received import PROFILES
from tests.hub.web.conftest import login
from tests.hub.web.study import STUDY, Room, a_procedure, add_user

from .stats import percentile

SITES = ("leeds", "york", "hull", "bath")


def _ingest_many(engine: Engine, docs: list[tuple[Room, dict[str, Any]]]) -> None:
    with Session(writer(engine)) as s, s.begin():
        for room, doc in docs:
            msg = parse_message(raw(doc))
            d = decide(
                msg, received.room_view(s, msg.node), received_at=room.now, profiles=PROFILES
            )
            assert isinstance(d, Accept), d
            received.save(s, d)


def build(engine: Engine, n: int) -> None:
    upgrade(engine, node=NODE, now=T0)
    rooms = [Room(f"{SITES[i % 4]}-th{i}", SITES[i % 4], start=T0) for i in range(20)]
    for r in rooms:
        register(engine, r)
    batch: list[tuple[Room, dict[str, Any]]] = []
    for i in range(n):
        room = rooms[i % len(rooms)]
        pid = i // len(rooms) + 1
        opened = T0 + dt.timedelta(hours=6 * i / len(rooms))
        if i == 0:
            docs = a_procedure(room, pid, study=STUDY, opened=opened, patient_ref="MN-0000")
        else:
            room.now = opened
            docs = [
                room.procedure(
                    pid,
                    study=STUDY,
                    patient_ref=f"MN-{i:05d}",
                    opened=opened,
                    closed=opened + dt.timedelta(minutes=40),
                ),
                room.cycle(2 * pid - 1, pid, probe=1, phase="freeze", start=opened,
                           end=opened + dt.timedelta(seconds=90), min_tip_c=-80.0),
                room.cycle(2 * pid, pid, probe=1, phase="thaw",
                           start=opened + dt.timedelta(seconds=90),
                           end=opened + dt.timedelta(seconds=120), min_tip_c=None),
            ]  # fmt: skip
        batch += [(room, d) for d in docs]
        if len(batch) >= 500:
            _ingest_many(engine, batch)
            batch = []
    if batch:
        _ingest_many(engine, batch)
    from cryod.hub.access import Grant, Role

    add_user(engine, "ivan", Grant(Role.INVESTIGATOR, STUDY, None))


def _timed(c: TestClient, url: str) -> float:
    t = time.perf_counter()
    r = c.get(url)
    ms = (time.perf_counter() - t) * 1000.0
    assert r.status_code == 200, (url, r.status_code)
    return ms


@contextlib.contextmanager
def _database(postgres: bool, tmp: Path) -> Iterator[str]:
    if not postgres:
        yield f"sqlite:///{tmp / 'hub.db'}"
        return
    from tests.pg import require_postgres, running_cluster

    with running_cluster(require_postgres()) as cluster:
        name = cluster.create_database()
        yield cluster.url(name)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--procedures", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--postgres", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d, _database(args.postgres, Path(d)) as url:
        engine = make_engine(url)
        try:
            t = time.perf_counter()
            build(engine, args.procedures)
            build_s = time.perf_counter() - t
            settings = WebSettings(engine=engine, node=NODE, anchor_file=Path(d) / "a.jsonl")
            with TestClient(create_app(settings)) as c:
                assert login(c, "ivan").status_code == 303
                index_ms = _timed(c, "/procedures")
                last = re.search(r"page 1 of (\d+)", c.get("/procedures").text)
                pages = int(last.group(1)) if last else 1
                lists = [
                    "/procedures",
                    "/procedures?site=york",
                    "/procedures?from=2026-03-10&to=2026-03-20",
                    f"/procedures?page={pages}",
                ]
                rng = random.Random(7)
                list_ms, page_ms = [], []
                for i in range(args.requests):
                    list_ms.append(_timed(c, lists[i % len(lists)]))
                    k = rng.randrange(args.procedures)
                    node = f"{SITES[(k % 20) % 4]}-th{k % 20}"
                    page_ms.append(_timed(c, f"/procedures/{node}/{k // 20 + 1}"))
                plot_ms = _timed(c, f"/procedures/{SITES[0]}-th0/1/plot.svg")
        finally:
            engine.dispose()
    result = {
        "database": "postgresql" if args.postgres else "sqlite",
        "procedures": args.procedures,
        "requests": args.requests,
        "build_s": round(build_s, 1),
        "index_build_ms": round(index_ms, 1),
        "list_ms": {q: round(percentile(list_ms, q), 1) for q in (50, 95, 100)},
        "procedure_page_ms": {q: round(percentile(page_ms, q), 1) for q in (50, 95, 100)},
        "plot_first_ms": round(plot_ms, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
