"""The web app's page times with a large study, while the collector ingests.

    python -m tests.bench.web_pages --postgres            # a throwaway PostgreSQL cluster
    python -m tests.bench.web_pages                       # SQLite
    python -m tests.bench.web_pages --procedures 2000 --assessments 20000 --requests 100
    python -m tests.bench.web_pages --no-ingest           # pages on a quiet database

**The study.** ``--procedures`` (10,000) reach the database as the rooms send
them (real chain entries and rows through the ingest core and store, 500
messages a transaction), over 20 rooms at 4 sites; samples are for the first
procedure only (disk). Then ``--assessments`` (100,000) follow-up assessments,
ten time points per procedure (the example Morton's profile's seven and, for
a three-year study, 18, 24 and 36 months), as the collector stores them
(content, salt, salted digest), inserted in bulk: no audit entry each (the
pages measured do not read the chain; ``cryohub followup record`` would take
hours for 100,000).

**The load.** With ``--ingest-rooms`` > 0 (25) the collector runs as in a
study: mosquitto on a free port, ``cryohub run`` on the same database and
tests/hub/bench.py's load generator (``--generate``) playing that many rooms
freezing with 8 probes at 20 Hz (four 330-value sample batches a second per
room, one record message each). Timing starts once the generator's first
entries are in the database and every request is made while it publishes.

**The pages.** In process (Starlette's TestClient: no network), as a
study-wide investigator: ``--requests`` times each of the procedure list
(first page, a site filter, a date filter, the last page) and a procedure
page (which also writes its ``subject_read`` audit entry and anchor line).
Reports p50/p95/max per page in milliseconds against the 150 ms p95 target,
first on a quiet database (``quiet``), then while the collector ingests (the
headline ``list_ms`` and ``procedure_page_ms``), with the ingest rate
meanwhile (messages stored per second); the last line printed is JSON. The
first request (which decodes every row into the read model) is reported apart
as ``index_build_ms``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, insert, select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from cryod.hub.ingest import Accept, decide
from cryod.hub.messages import parse_message
from cryod.hub.store import received
from cryod.hub.store.db import make_engine, writer
from cryod.hub.store.migrate import upgrade
from cryod.hub.store.models import FollowUpAssessmentRow, ReceivedEntry
from cryod.hub.web.app import WebSettings, create_app
from cryod.research.followup import FollowUpAssessment
from cryod.research.profile import StudyProfile, builtin_study_path, load_study_profile
from cryod.research.vocab import VisitMode, VisitStatus
from tests.hub.conftest import NODE, T0
from tests.hub.fake_room import raw
from tests.hub.followup_study import register
from tests.hub.test_received import PROFILES
from tests.hub.web.conftest import login
from tests.hub.web.study import STUDY, Room, a_procedure, add_user

from .stats import percentile

REPO = Path(__file__).resolve().parents[2]
SITES = ("leeds", "york", "hull", "bath")
ROOMS = 20
TARGET_P95_MS = 150.0
#: a three-year study: the example profile's time points and three more
LATER_TIME_POINTS = (("m18", 547), ("m24", 730), ("m36", 1095))
BENCH_SITE = "bench"  # tests/hub/bench.py's rooms


def _ingest_many(engine: Engine, docs: list[tuple[Room, dict[str, Any]]]) -> None:
    with Session(writer(engine)) as s, s.begin():
        for room, doc in docs:
            msg = parse_message(raw(doc))
            d = decide(
                msg, received.room_view(s, msg.node), received_at=room.now, profiles=PROFILES
            )
            assert isinstance(d, Accept), d
            received.save(s, d)


def _node(i: int) -> str:
    return f"{SITES[i % 4]}-th{i}"


def build(engine: Engine, n: int) -> None:
    upgrade(engine, node=NODE, now=T0)
    rooms = [Room(_node(i), SITES[i % 4], start=T0) for i in range(ROOMS)]
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


def three_year_profile(workdir: Path) -> StudyProfile:
    """The example Morton's profile with 18-, 24- and 36-month time points added."""
    text = builtin_study_path("mortons-neuroma-example").read_text(encoding="utf-8")
    extra = "".join(
        f'\n[[follow_up.time_points]]\nid = "{tp}"\nlabel = "{tp}"\ntarget_day = {day}\n'
        "window_before_days = 30\nwindow_after_days = 30\n"
        for tp, day in LATER_TIME_POINTS
    )
    marker = "\n[instruments.pain]"
    assert marker in text
    path = workdir / "mn-three-years.toml"
    path.write_text(text.replace(marker, extra + marker, 1), encoding="utf-8")
    return load_study_profile(path)


def build_followup(engine: Engine, profile: StudyProfile, procedures: int, total: int) -> int:
    """``total`` assessments, ten time points per procedure, as the collector stores them
    (content with the instrument beside each score, salt, salted digest). Rows made."""
    from cryod.hub.followup import ASSESSMENT_TABLE, content_digest
    from cryod.hub.followup_store import _assessment_content

    points = [(tp.id, tp.target_day) for tp in profile.follow_up.time_points]
    rng = random.Random(11)
    made = 0
    rows: list[dict[str, Any]] = []

    def flush() -> None:
        with Session(writer(engine)) as s, s.begin():
            s.execute(insert(FollowUpAssessmentRow), rows)
        rows.clear()

    for i in range(procedures):
        if made >= total:
            break
        node, pid = _node(i % ROOMS), i // ROOMS + 1
        proc_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"cryod:{node}/{pid}"))
        opened = T0 + dt.timedelta(hours=6 * i / ROOMS)
        subject = "MN-0000" if i == 0 else f"MN-{i:05d}"
        for tp, day in points[: total - made]:
            on = (opened + dt.timedelta(days=day)).date()
            if rng.random() < 0.1:
                a = FollowUpAssessment(time_point=tp, assessed_on=on, status=VisitStatus.MISSED,
                                       reason="not reached")  # fmt: skip
            else:
                a = FollowUpAssessment(time_point=tp, assessed_on=on, status=VisitStatus.DONE,
                                       mode=VisitMode.CLINIC, pain_score=float(rng.randint(0, 10)),
                                       qol_total=round(rng.uniform(0.3, 1.0), 3))  # fmt: skip
            content = _assessment_content(profile, a)
            made += 1
            salt = secrets.token_bytes(16)
            rows.append(
                {
                    "id": made,
                    "study": STUDY,
                    "site": SITES[i % 4],
                    "subject": subject,
                    "procedure_uuid": proc_uuid,
                    "time_point": tp,
                    "content": content,
                    "salt": salt.hex(),
                    "digest": content_digest(ASSESSMENT_TABLE, made, content, salt),
                    "recorded_at": dt.datetime.combine(on, dt.time(12), dt.UTC),
                    "recorded_by": "bench",
                    "audit_seq": 0,
                }
            )
        if len(rows) >= 5000:
            flush()
    if rows:
        flush()
    return made


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


def _bench_entries(engine: Engine) -> int:
    with Session(engine) as s:
        got = s.execute(
            select(func.count()).select_from(ReceivedEntry).where(ReceivedEntry.node.like("room-%"))
        )
        return int(got.scalar_one())


class Ingest:
    """mosquitto, ``cryohub run`` on ``url`` and tests/hub/bench.py's load generator replaying
    ``recording`` (tests/hub/record_traffic.py): every room's prelude first (the procedure and
    its study record, stored), then the freeze looped at real rate for ``seconds``."""

    def __init__(
        self, url: str, engine: Engine, rooms: int, seconds: float, wd: Path, recording: Path
    ) -> None:
        from cryod.hub import admin
        from cryod.hub.access import Grant, Role
        from cryod.research.profile import builtin_study_path
        from tests.hub import bench
        from tests.mqtt.broker import Mosquitto

        self.engine, self.wd, self.rooms = engine, wd, rooms
        actor = admin.Actor("bench", (Grant(Role.ADMIN),))
        now = dt.datetime.now(dt.UTC)
        with Session(writer(engine)) as s, s.begin():
            for i in range(rooms):
                admin.add_room(s, actor, room=bench._node(i), site=BENCH_SITE,
                               credential=bench._node(i), cert_sha256=None, first_seq=1,
                               first_hash=None, now=now, node=NODE)  # fmt: skip
        self.generator: subprocess.Popen[bytes] | None = None
        self.broker = Mosquitto(wd / "mq", extra="max_queued_messages 0\nmax_inflight_messages 0\n")
        self.broker.start()
        self.collector: subprocess.Popen[bytes] | None = None
        try:
            (wd / "anchors").mkdir()
            (wd / "studies").mkdir()  # the recorded procedure's study profile: nothing held
            shutil.copy(builtin_study_path(bench.STUDY), wd / "studies" / f"{bench.STUDY}.toml")
            cfg = wd / "cryohub.toml"
            cfg.write_text(
                f'[collector]\nid = "{NODE}"\nlog_level = "warning"\n[database]\nurl = "{url}"\n'
                f'[broker]\nhost = "127.0.0.1"\nport = {self.broker.port}\n'
                'client_id = "cryohub-bench"\nsession_expiry_s = 3600\nreceive_maximum = 1000\n'
                f'[studies]\nprofiles_dir = "{wd / "studies"}"\n'
                f'[anchors]\nfile = "anchors/a.jsonl"\njournal_socket = "{wd}/none.sock"\n'
            )
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            self.stats_file = wd / "stats.json"
            self.collector = subprocess.Popen(
                [sys.executable, "-m", "cryod.hub.cli", "run", "--config", str(cfg),
                 "--stats-file", str(self.stats_file)],
                stdout=subprocess.DEVNULL, stderr=(wd / "cryohub.log").open("wb"), env=env,
                cwd=REPO,
            )  # fmt: skip
            self._wait(self._connected, 60, "cryohub run connected to the broker")
            heads = wd / "heads.json"
            prelude = bench._generator(self.broker.port, recording, rooms, "prelude", 0, heads,
                                       wd / "prelude.json", validate=False)  # fmt: skip
            if prelude.wait(timeout=300) != 0:
                raise SystemExit("the load generator's prelude failed")
            self.gen_out = wd / "generator.json"
            self.generator = bench._generator(
                self.broker.port, recording, rooms, "freeze", seconds, heads, self.gen_out,
                validate=False,
            )  # fmt: skip
            self._wait(lambda: _bench_entries(engine) > rooms, 60, "the generator's entries stored")
        except BaseException:
            self.stop()
            raise

    def _connected(self) -> bool:
        if not self.stats_file.exists():
            return False
        with contextlib.suppress(ValueError):
            return bool(json.loads(self.stats_file.read_text())["broker"] == "connected")
        return False

    def _wait(self, pred: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not pred():
            if self.collector is not None and self.collector.poll() is not None:
                raise SystemExit(f"cryohub run exited: {(self.wd / 'cryohub.log').read_text()}")
            if time.monotonic() > deadline:
                raise SystemExit(f"not within {timeout_s:.0f} s: {what}")
            time.sleep(0.1)

    def running(self) -> bool:
        return self.generator is not None and self.generator.poll() is None

    def stop(self) -> dict[str, Any]:
        if self.generator is not None and self.generator.poll() is None:
            self.generator.terminate()
            self.generator.wait(timeout=60)
        if self.collector is not None and self.collector.poll() is None:
            self.collector.terminate()
            self.collector.wait(timeout=60)
        self.broker.stop()
        stats: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            stats = json.loads(self.stats_file.read_text())
        return stats


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m tests.bench.web_pages")
    ap.add_argument("--procedures", type=int, default=10_000)
    ap.add_argument("--assessments", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--postgres", action="store_true")
    ap.add_argument("--ingest-rooms", type=int, default=25,
                    help="rooms the load generator plays meanwhile (0: no ingest)")  # fmt: skip
    ap.add_argument("--no-ingest", dest="ingest_rooms", action="store_const", const=0)
    ap.add_argument("--recording-s", type=float, default=10.0,
                    help="seconds of freeze in the replayed recording (cached)")  # fmt: skip
    args = ap.parse_args(argv)
    recording: Path | None = None
    freeze_messages_per_s = 0.0
    if args.ingest_rooms > 0:
        from tests.hub.record_traffic import cached
        from tests.hub.replay import Track

        rec, recording = cached(args.recording_s, lambda line: print(line, file=sys.stderr))
        track = Track(rec)
        freeze_messages_per_s = len(track.freeze) / track.period_s
    with tempfile.TemporaryDirectory() as d, _database(args.postgres, Path(d)) as url:
        engine = make_engine(url)
        ingest: Ingest | None = None
        try:
            t = time.perf_counter()
            build(engine, args.procedures)
            profile = three_year_profile(Path(d))
            assessments = build_followup(engine, profile, args.procedures, args.assessments)
            build_s = time.perf_counter() - t
            settings = WebSettings(
                engine=engine, node=NODE, anchor_file=Path(d) / "a.jsonl", profiles=(profile,)
            )
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

                def measure() -> tuple[list[float], list[float]]:
                    list_ms, page_ms = [], []
                    for i in range(args.requests):
                        list_ms.append(_timed(c, lists[i % len(lists)]))
                        k = rng.randrange(args.procedures)
                        node, pid = _node(k % ROOMS), k // ROOMS + 1
                        page_ms.append(_timed(c, f"/procedures/{node}/{pid}"))
                        if ingest is not None and not ingest.running():
                            raise SystemExit("the load generator ended before the requests did")
                    return list_ms, page_ms

                quiet = measure()
                if args.ingest_rooms > 0:
                    # long enough for every request; stopped once they are done
                    seconds = 60.0 + args.requests * 2.0
                    wd = Path(d) / "ingest"
                    wd.mkdir()
                    assert recording is not None
                    ingest = Ingest(url, engine, args.ingest_rooms, seconds, wd, recording)
                    stored_before, t_ingest = _bench_entries(engine), time.monotonic()
                list_ms, page_ms = measure() if ingest is not None else quiet
                ingest_result: dict[str, Any] | None = None
                if ingest is not None:
                    window_s = time.monotonic() - t_ingest
                    stored = _bench_entries(engine) - stored_before
                    stats = ingest.stop()
                    ingest = None
                    ingest_result = {
                        "rooms": args.ingest_rooms,
                        "offered_messages_per_s": round(
                            args.ingest_rooms * freeze_messages_per_s, 1
                        ),
                        "stored_messages_per_s": round(stored / window_s, 1),
                        "values_per_s": round(stored * 330 / window_s),
                        "record_to_committed": stats.get("record_to_committed"),
                    }
                plot_ms = _timed(c, f"/procedures/{_node(0)}/1/plot.svg")
                # the Study page (the summary over every procedure and assessment) and a
                # JSON export of the whole study: a few times each, quiet (no target)
                study_ms = [_timed(c, f"/studies/{STUDY}?on=2030-01-01") for _ in range(3)]
                token = re.search(r'name="csrf" value="([^"]+)"', c.get("/account").text)
                assert token is not None
                export_ms = []
                for _ in range(2):
                    t = time.perf_counter()
                    form = {"csrf": token.group(1), "site": "", "format": "json"}
                    r = c.post(f"/studies/{STUDY}/export", data=form)
                    export_ms.append((time.perf_counter() - t) * 1000.0)
                    assert r.status_code == 200, r.text[:500]
        finally:
            if ingest is not None:
                ingest.stop()
            engine.dispose()

    def ps(ms: list[float]) -> dict[int, float]:
        return {q: round(percentile(ms, q), 1) for q in (50, 95, 100)}

    list_p, page_p = ps(list_ms), ps(page_ms)
    result = {
        "database": "postgresql" if args.postgres else "sqlite",
        "procedures": args.procedures,
        "assessments": assessments,
        "requests": args.requests,
        "build_s": round(build_s, 1),
        "index_build_ms": round(index_ms, 1),
        "list_ms": list_p,
        "procedure_page_ms": page_p,
        "plot_first_ms": round(plot_ms, 1),
        "study_page_ms": ps(study_ms),
        "export_json_ms": ps(export_ms),
        "ingest": ingest_result,
        "quiet": {"list_ms": ps(quiet[0]), "procedure_page_ms": ps(quiet[1])},
        "target_p95_ms": TARGET_P95_MS,
        "within_target": bool(list_p[95] <= TARGET_P95_MS and page_p[95] <= TARGET_P95_MS),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "cores": os.cpu_count(),
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
