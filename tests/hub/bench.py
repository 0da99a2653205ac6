"""``make bench-hub``: how many rooms the collector sustains on PostgreSQL (benchmark, not a test).

    python -m tests.hub.bench              # rooms 25 ... 500, 1000, 1500, 2000; 30 s each
    python -m tests.hub.bench --rooms 100 --seconds 20

Every process is real and started here: a PostgreSQL cluster of its own
(``tests/pg.py``, but with ``fsync`` and ``full_page_writes`` **on**: a
committed batch is durable, as in a study), mosquitto on a free port,
``cryohub run`` (the unit's ExecStart) and a load generator process
(``--generate``) playing N rooms.

**The load is recorded daemon traffic** (``tests/hub/record_traffic.py``): a
real room (cryosim with the 8-probe console profile, cryod with the record
channel on) opens a procedure under the example Morton's neuroma study
profile, records the baseline pain score and freezes all 8 probes at 20 Hz in
real time; every record message it sends is kept with its time offset and
validated against docs/asyncapi.yaml (a recording with one that fails is
refused). The recording is made at the bench's start (``--recording-s`` of
freeze, about that + 15 s) and cached under ``.cache/bench-hub/`` by the
code version. Each room replays it (``tests/hub/replay.py``) as its own node,
its own chain (every entry hash recomputed, the rows' and blocks' bytes as
recorded), its entry times the wall clock at publication: the daemon's
``cryod.samples/2`` batches once a second, with every value the daemon logs
(66 per poll: 12 console channels, 7 per probe). Rooms' phases are spread
over one batch interval.

**A step** (N rooms) has two parts. *Warm-up*: every room plays its prelude
(the daemon's start, the procedure's opening, the baseline pain, the run and
its cycle rows) and the collector stores it; that collector is then stopped.
*Measured*: a fresh ``cryohub run`` (its latency figures cover this part
only) and the rooms' freeze part, looped at the recorded offsets for
``--seconds`` of real rate; then the generator stops and the collector is
given ``--drain-s`` to commit what is in flight. It is *sustained* when every
published message is in the database (zero loss, entries counted; nothing
held or quarantined), the generator kept the real rate (it publishes every
scheduled message, late or not: at least 95 % of the scheduled rate over the
time it took), and the record-to-committed latency (entry time to the COMMIT
of its batch, ``cryohub run --stats-file``) has p99 <= 2 s. The sweep stops
at the first step that is not.

**Also measured**: a bare psycopg ``COPY`` of the same entries and blocks
(2,000 messages of the freeze part) into the same kind of database, and the
collector's sustained rate as a fraction of it; CPU seconds per wall second
and peak RSS of each process (load generator, broker, collector, PostgreSQL:
all its processes, RSS summed, so shared buffers count once per process that
touched them); **bytes per stored value**: what the measured part added to
the received tables (``pg_total_relation_size``, table, TOAST and indexes)
over the sample values it stored (each batch unpacked: every logged value of
every poll), with the size of each table; bytes per value as received (the
batches' canonical bytes) and as sent (the MQTT payloads).

``--validate`` checks every replayed message against docs/asyncapi.yaml in
the generator (the smoke test's setting: it costs the generator CPU). The
machine is shared: the load average is in the result; do not tune against
one run. The last line printed is the JSON result. Exit status: 0 the sweep
ran (whatever it sustained), 1 no valid recording, 2 a bad option.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.hub.record_traffic import MAX_SECONDS, RecordingError, cached, load, summary
from tests.hub.replay import Room, Track

REPO = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")
SITE = "bench"
#: the received tables a room's record fills (bytes per stored value)
TABLES = ("received_entries", "received_rows", "received_blocks")
#: the study profile the recorded procedure was opened under
STUDY = "mortons-neuroma-example"


def _node(i: int) -> str:
    return f"room-{i:03d}"


# ---- the load generator (a process of its own) ----------------------------------------------
async def _generate(
    port: int, recording: Path, rooms: int, phase: str, seconds: float, heads: Path, out: Path,
    validate: bool,
) -> None:  # fmt: skip
    """``phase`` "prelude": every room's prelude, staggered; writes the heads to ``heads``.
    "freeze": from those heads, the freeze part looped at real rate for ``seconds``."""
    import aiomqtt

    from cryod.integrity import format_time
    from tests.mqtt import asyncapi

    track = Track(load(recording))
    # aiomqtt warns at every publish beyond 10 pending: hundreds of rooms always have more
    quiet = logging.getLogger("bench-hub.generator")
    quiet.setLevel(logging.ERROR)
    if phase == "prelude":
        players = [Room(track, _node(i), SITE) for i in range(rooms)]
    else:
        known = json.loads(heads.read_text())
        players = [Room(track, n, SITE, s, h) for n, (s, h) in known.items()]
    published = values = sent_bytes = invalid = expected = 0
    lag_s = 0.0
    start = time.monotonic() + 1.0
    end = start + seconds if phase == "freeze" else float("inf")
    spread_s = track.period_s / len(track.freeze)  # one batch interval

    def due(room_index: int, position: int) -> float:
        phase_s = room_index / len(players) * spread_s
        if phase == "prelude":
            t0 = track.prelude[0].t_s
            return start + phase_s + track.prelude[position].t_s - t0
        return start + phase_s + track.freeze_due_s(position)

    async with aiomqtt.Client(
        "127.0.0.1", port, identifier=f"bench-rooms-{phase}", protocol=aiomqtt.ProtocolVersion.V5,
        max_inflight_messages=65535, timeout=60, logger=quiet,
    ) as client:  # fmt: skip

        async def play(index: int, room: Room) -> None:
            nonlocal published, values, sent_bytes, invalid, lag_s
            count = len(track.prelude) if phase == "prelude" else None
            position = 0
            while count is None or position < count:
                when = due(index, position)
                if when >= end:
                    return
                wait = when - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                elif phase == "freeze":
                    lag_s = max(lag_s, -wait)
                raw, rec = room.next_message(format_time(dt.datetime.now(dt.UTC)))
                if validate:
                    try:
                        asyncapi.validate(room.topic, json.loads(raw))
                    except Exception:  # counted: the step reports it and fails
                        invalid += 1
                await client.publish(room.topic, raw, qos=1)
                published += 1
                values += rec.values
                sent_bytes += len(raw)
                position += 1

        if phase == "freeze":
            for index in range(len(players)):
                position = 0
                while due(index, position) < end:
                    position += 1
                expected += position
        else:
            expected = len(players) * len(track.prelude)
        await asyncio.gather(*(play(i, r) for i, r in enumerate(players)))
    wall = time.monotonic() - start
    if phase == "prelude":
        heads.write_text(json.dumps({r.node: [r.seq, r.prev_hash] for r in players}))
    out.write_text(
        json.dumps(
            {
                "published": published,
                "expected": expected,
                "values": values,
                "sent_bytes": sent_bytes,
                "invalid": invalid,
                "wall_s": wall,
                "max_lag_s": lag_s,
                "cpu_s": time.process_time(),
                "heads": {r.node: r.seq for r in players},
            }
        )
    )


# ---- process accounting ----------------------------------------------------------------------
def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _children_of(root: int) -> list[int]:
    """root and every process whose parent is root (PostgreSQL's backends)."""
    out = [root]
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int(d.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == root:
                out.append(int(d.name))
    return out


class Meter:
    """CPU seconds and peak RSS of named process groups, sampled."""

    def __init__(self, groups: dict[str, Any]) -> None:
        self.groups = groups  # name -> callable returning pids
        self.cpu0: dict[str, dict[int, float]] = {}
        self.peak: dict[str, float] = dict.fromkeys(groups, 0.0)
        self.seen: dict[str, dict[int, float]] = {g: {} for g in groups}

    def sample(self) -> None:
        for g, pids in self.groups.items():
            total = 0.0
            for pid in pids():
                cpu = _cpu_s(pid)
                if cpu is not None:  # an exited process keeps its last reading
                    self.seen[g][pid] = cpu
                total += _rss_mb(pid)
            self.peak[g] = max(self.peak[g], total)

    def start(self) -> None:
        self.sample()
        self.cpu0 = {g: dict(v) for g, v in self.seen.items()}
        self.t0 = time.monotonic()

    def result(self) -> dict[str, Any]:
        self.sample()
        wall = time.monotonic() - self.t0
        out = {}
        for g in self.groups:
            used = sum(c - self.cpu0[g].get(pid, 0.0) for pid, c in self.seen[g].items())
            out[g] = {"cpu_s_per_s": round(used / wall, 3), "peak_rss_mb": round(self.peak[g], 1)}
        return out


# ---- one step -----------------------------------------------------------------------------------
def _cluster() -> Any:
    from tests.pg import PgCluster, find_pg_bin

    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise SystemExit(
            "bench-hub needs the PostgreSQL server binaries (apt-get install postgresql)"
        )

    class DurableCluster(PgCluster):
        """tests/pg.py's throwaway cluster, but durable: fsync and full pages on."""

        def start(self) -> None:
            self._run("initdb", "-D", str(self.data), "-U", self.superuser, "--auth=trust",
                      "--encoding=UTF8", "--locale=C", "--no-instructions")  # fmt: skip
            options = f"-k {self.base} -p {self.port} -c listen_addresses='' -c max_connections=40"
            self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-w", "-t",
                      "60", "-o", options, "start")  # fmt: skip

        def postmaster(self) -> int:
            return int((self.data / "postmaster.pid").read_text().split()[0])

    cluster = DurableCluster(bin_dir)
    cluster.start()
    return cluster


def _prepare(url: str, rooms: int) -> None:
    from sqlalchemy.orm import Session

    from cryod.hub import admin
    from cryod.hub.store.db import make_engine, writer
    from cryod.hub.store.migrate import upgrade

    engine = make_engine(url)
    now = dt.datetime.now(dt.UTC)
    upgrade(engine, node="bench-hub", now=now)
    actor = admin.Actor("bench", (admin.Grant(admin.Role.ADMIN),))
    with Session(writer(engine)) as s, s.begin():
        for i in range(rooms):
            admin.add_room(s, actor, room=_node(i), site=SITE, credential=_node(i),
                           cert_sha256=None, first_seq=1, first_hash=None, now=now,
                           node="bench-hub")  # fmt: skip
    engine.dispose()


def _stored(url: str, track: Track | None = None) -> dict[str, Any]:
    """Entries stored, the received tables' sizes; with ``track``: the sample values
    the stored blocks hold and their canonical bytes, per entry ``seq`` (summed)."""
    from sqlalchemy import text

    from cryod.hub.store.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as c:
            out: dict[str, Any] = {
                "entries": c.execute(text("SELECT count(*) FROM received_entries")).scalar_one(),
                "held": c.execute(text("SELECT count(*) FROM held")).scalar_one(),
                "quarantined": c.execute(text("SELECT count(*) FROM quarantine")).scalar_one(),
                "table_bytes": {
                    t: int(c.execute(text(f"SELECT pg_total_relation_size('{t}')")).scalar_one())
                    for t in TABLES
                },
            }
            if track is not None:
                by_seq = c.execute(text(
                    "SELECT seq, count(*), sum(length(data)) FROM received_blocks GROUP BY seq"
                )).all()  # fmt: skip
                out["values"] = sum(n * track.recorded(seq).values for seq, n, _b in by_seq)
                out["block_bytes"] = sum(int(b) for _s, _n, b in by_seq)
            return out
    finally:
        engine.dispose()


def _collector(wd: Path, cfg: Path, name: str) -> tuple[subprocess.Popen[bytes], Path]:
    """``cryohub run`` with a stats file of its own, once it is connected to the broker."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    stats_file = wd / f"stats-{name}.json"
    log = wd / f"cryohub-{name}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cryod.hub.cli", "run", "--config", str(cfg),
         "--stats-file", str(stats_file)],
        stdout=subprocess.DEVNULL, stderr=log.open("wb"), env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not stats_file.exists() or json.loads(stats_file.read_text())["broker"] != "connected":
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            proc.wait(timeout=30)
            raise SystemExit(f"cryohub run did not connect: {log.read_text()}")
        time.sleep(0.1)
    return proc, stats_file


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


def _generator(
    port: int, recording: Path, rooms: int, phase: str, seconds: float, heads: Path, out: Path,
    validate: bool,
) -> subprocess.Popen[bytes]:  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.hub.bench", "--generate", "--port", str(port),
         "--recording", str(recording), "--phase", phase, "--heads", str(heads),
         "--rooms", str(rooms), "--seconds", str(seconds), "--out", str(out),
         *(["--validate"] if validate else [])],
        env=env,
    )  # fmt: skip


def _until_stored(url: str, want: int, drain_s: float) -> dict[str, Any]:
    """Until ``want`` messages are decided (stored, held or quarantined), at most ``drain_s``."""
    deadline = time.monotonic() + drain_s

    def decided(s: dict[str, Any]) -> int:
        return int(s["entries"] + s["held"] + s["quarantined"])

    stored = _stored(url)
    while decided(stored) < want and time.monotonic() < deadline:
        time.sleep(0.5)
        stored = _stored(url)
    return stored


def _step(
    cluster: Any, rooms: int, seconds: float, drain_s: float, workdir: Path, recording: Path,
    track: Track, validate: bool = False,
) -> dict[str, Any]:  # fmt: skip
    from cryod.research.profile import builtin_study_path
    from tests.mqtt.broker import Mosquitto

    wd = Path(tempfile.mkdtemp(prefix=f"rooms{rooms}-", dir=workdir))
    db = cluster.create_database()
    url = cluster.url(db)
    _prepare(url, rooms)
    broker = Mosquitto(wd / "mq", extra="max_queued_messages 0\nmax_inflight_messages 0\n")
    broker.start()
    (wd / "anchors").mkdir()
    (wd / "studies").mkdir()
    shutil.copy(builtin_study_path(STUDY), wd / "studies" / f"{STUDY}.toml")
    cfg = wd / "cryohub.toml"
    cfg.write_text(
        f'[collector]\nid = "bench-hub"\nlog_level = "warning"\n[database]\nurl = "{url}"\n'
        f'[broker]\nhost = "127.0.0.1"\nport = {broker.port}\nclient_id = "cryohub-bench"\n'
        f"session_expiry_s = 3600\nreceive_maximum = 1000\n"
        f'[studies]\nprofiles_dir = "{wd / "studies"}"\n'
        f'[anchors]\nfile = "anchors/a.jsonl"\njournal_socket = "{wd}/none.sock"\n'
    )
    heads = wd / "heads.json"
    started: list[subprocess.Popen[bytes]] = []  # stopped whatever happens
    try:
        # warm-up: every room's prelude, stored; then a fresh collector for the measured part
        collector, _warm_stats = _collector(wd, cfg, "warm-up")
        started.append(collector)
        pre_out = wd / "prelude.json"
        gen = _generator(broker.port, recording, rooms, "prelude", 0, heads, pre_out, validate)
        started.append(gen)
        if gen.wait() != 0:
            raise SystemExit(f"the load generator (prelude) exited {gen.returncode}")
        pre = json.loads(pre_out.read_text())
        warm = _until_stored(url, pre["published"], drain_s)
        _stop(collector)
        prelude_lost = pre["published"] - warm["entries"]
        if prelude_lost or pre["invalid"]:
            quarantined, held = warm["quarantined"], warm["held"]
            return {"rooms": rooms, "seconds": seconds, "prelude_published": pre["published"],
                    "prelude_lost": prelude_lost, "invalid_messages": pre["invalid"],
                    "held": held, "quarantined": quarantined, "sustained": False,
                    "reason": "the warm-up (every room's prelude) was not all stored"}  # fmt: skip
        before = _stored(url, track)

        collector, stats_file = _collector(wd, cfg, "measured")
        started.append(collector)
        gen_out = wd / "generator.json"
        generator = _generator(broker.port, recording, rooms, "freeze", seconds, heads, gen_out,
                               validate)  # fmt: skip
        started.append(generator)
        assert broker.proc is not None
        meter = Meter({
            "load_generator": lambda: [generator.pid],
            "broker": lambda: [broker.proc.pid] if broker.proc else [],
            "collector": lambda: [collector.pid],
            "postgresql": lambda: _children_of(cluster.postmaster()),
        })  # fmt: skip
        meter.start()
        while generator.poll() is None:
            time.sleep(0.2)
            meter.sample()
        usage = meter.result()
        if generator.returncode != 0:
            raise SystemExit(f"the load generator exited {generator.returncode}")
        gen = json.loads(gen_out.read_text())
        # the generator counts its own CPU (it has exited by now)
        usage["load_generator"]["cpu_s_per_s"] = round(gen["cpu_s"] / gen["wall_s"], 3)
        _until_stored(url, pre["published"] + gen["published"], drain_s)
        _stop(collector)
        after = _stored(url, track)
    finally:
        for proc in started:
            if proc.poll() is None:
                _stop(proc)
        broker.stop()
        cluster.drop_database(db)
    stats = json.loads(stats_file.read_text())
    stored = after["entries"] - before["entries"]
    values = after["values"] - before["values"]
    added = {t: after["table_bytes"][t] - before["table_bytes"][t] for t in TABLES}
    p99 = stats["record_to_committed"]["p99_s"]
    # every scheduled message is published, late or not: the real rate is the time it took
    rate_ok = gen["published"] / gen["wall_s"] >= 0.95 * gen["expected"] / seconds
    lost = gen["published"] - stored

    def per_value(n: int) -> float | None:
        return round(n / values, 2) if values else None

    result = {
        "rooms": rooms,
        "seconds": seconds,
        "prelude_published": pre["published"],
        "prelude_lost": prelude_lost,
        "published": gen["published"],
        "expected": gen["expected"],
        "generator_max_lag_s": round(gen["max_lag_s"], 3),
        "generator_wall_s": round(gen["wall_s"], 3),
        "stored": stored,
        "lost": lost,
        "held": after["held"],
        "quarantined": after["quarantined"],
        "invalid_messages": pre["invalid"] + gen["invalid"],
        "messages_per_s": round(gen["published"] / seconds, 1),
        "values_per_s": round(gen["values"] / seconds),
        "record_to_committed_p50_s": stats["record_to_committed"]["p50_s"],
        "record_to_committed_p99_s": p99,
        "record_to_committed_max_s": stats["record_to_committed"]["max_s"],
        "batches": stats["batches"],
        "values_stored": values,
        "bytes_per_stored_value": per_value(sum(added.values())),
        "bytes_per_stored_value_by_table": {t: per_value(b) for t, b in added.items()},
        "table_bytes": after["table_bytes"],
        "bytes_per_value_as_received": per_value(after["block_bytes"] - before["block_bytes"]),
        "message_bytes_per_value": round(gen["sent_bytes"] / gen["values"], 2)
        if gen["values"]
        else None,
        "processes": usage,
    }
    result["sustained"] = bool(
        lost == 0
        and result["invalid_messages"] == 0
        and after["quarantined"] == 0
        and after["held"] == 0
        and rate_ok
        and p99 is not None
        and p99 <= 2.0
    )
    return result


def _bare_copy(cluster: Any, track: Track, messages: int = 2000) -> dict[str, Any]:
    """The freeze part's entries and blocks (one room) by a bare psycopg COPY, no collector."""
    import psycopg
    from psycopg.types.json import Jsonb

    from cryod.integrity import format_time

    db = cluster.create_database()
    url = cluster.url(db)
    _prepare(url, 1)
    room = Room(track, _node(0), SITE, seq=len(track.prelude))
    entries, blocks = [], []
    values = 0
    now = dt.datetime.now(dt.UTC)
    for _ in range(messages):
        raw, rec = room.next_message(format_time(now))
        doc = json.loads(raw)
        e = doc["entry"]
        entries.append((e["node"], e["seq"], now, e["kind"], Jsonb(e["payload"]), e["prev_hash"],
                        e["hash"], e["v"], None, None, None, now, 0.0, False))  # fmt: skip
        if doc["block"]:
            data = base64.b64decode(doc["block"]["data_b64"])
            blocks.append((e["node"], e["seq"], doc["block"]["encoding"], data,
                           e["payload"]["digest"]))  # fmt: skip
        values += rec.values
    conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(conninfo) as conn:
        t0 = time.perf_counter()
        with conn.cursor() as cur:
            with cur.copy(
                "COPY received_entries (node, seq, at, kind, payload, prev_hash, hash, v, "
                "profile_id, profile_version, profile_hash, received_at, skew_s, skew_flagged) "
                "FROM STDIN"
            ) as cp:
                for row in entries:
                    cp.write_row(row)
            with cur.copy(
                "COPY received_blocks (node, seq, encoding, data, digest) FROM STDIN"
            ) as cp:
                for b in blocks:
                    cp.write_row(b)
        conn.commit()
        elapsed = time.perf_counter() - t0
    cluster.drop_database(db)
    return {
        "messages": messages,
        "seconds": round(elapsed, 3),
        "messages_per_s": round(messages / elapsed, 1),
        "values_per_s": round(values / elapsed),
    }


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.hub.bench")
    p.add_argument(
        "--rooms",
        default="25,50,100,200,300,500,1000,1500,2000",
        help="comma-separated room counts, ascending",
    )
    p.add_argument("--seconds", type=float, default=30.0, help="real-rate window per step")
    p.add_argument("--drain-s", type=float, default=30.0)
    p.add_argument("--out", type=Path, default=Path("bench-hub-results.json"))
    p.add_argument(
        "--recording", type=Path, help="a recording to replay (default: this code version's, "
        "from .cache/bench-hub/ or made now)",
    )  # fmt: skip
    p.add_argument("--recording-s", type=float, default=30.0,
                   help="seconds of freeze the recording made now holds")  # fmt: skip
    p.add_argument("--validate", action="store_true",
                   help="validate every replayed message against docs/asyncapi.yaml")  # fmt: skip
    p.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--phase", choices=("prelude", "freeze"), help=argparse.SUPPRESS)
    p.add_argument("--heads", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.generate:
        asyncio.run(_generate(args.port, args.recording, int(args.rooms), args.phase,
                              args.seconds, args.heads, args.out, args.validate))  # fmt: skip
        return 0
    try:
        rooms = [int(x) for x in args.rooms.split(",")]
    except ValueError:
        print(f"bench-hub: --rooms: not a list of numbers: {args.rooms!r}", file=sys.stderr)
        return 2
    if not 0 < args.recording_s <= MAX_SECONDS:
        print(f"bench-hub: --recording-s: {args.recording_s:g} is not between 0 and "
              f"{MAX_SECONDS:g} (the protocol's freeze is 150 s)", file=sys.stderr)  # fmt: skip
        return 2
    if args.seconds <= 0 or min(rooms) < 1:
        print("bench-hub: --seconds and --rooms: must be more than 0", file=sys.stderr)
        return 2
    say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    try:
        if args.recording is not None:
            recording, path = load(args.recording), args.recording
        else:
            recording, path = cached(args.recording_s, say)
        track = Track(recording)
    except RecordingError as exc:
        print(f"bench-hub: {exc}", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="bench-hub-"))
    cluster = _cluster()
    played = {"file": str(path), **summary(recording),
              "room_values_per_s": round(track.values_per_s(), 1)}  # fmt: skip
    result: dict[str, Any] = {"bench": "cryohub", "load_before": _load(), "cores": os.cpu_count(),
                              "recording": played}  # fmt: skip
    try:
        steps = []
        for n in rooms:
            step = _step(cluster, n, args.seconds, args.drain_s, workdir, path, track,
                         args.validate)  # fmt: skip
            print(json.dumps(step), flush=True)
            steps.append(step)
            if not step["sustained"]:
                break
        copy = _bare_copy(cluster, track)
    finally:
        cluster.stop()
    sustained = [s for s in steps if s["sustained"]]
    best = max(sustained, key=lambda s: s["rooms"]) if sustained else None
    result.update(
        steps=steps,
        rooms_sustained=None if best is None else best["rooms"],
        required_rooms=100,
        goal_rooms=500,
        bare_copy=copy,
        collector_fraction_of_bare_copy=None
        if best is None
        else round(best["messages_per_s"] / copy["messages_per_s"], 3),
        bytes_per_stored_value=None if best is None else best["bytes_per_stored_value"],
        load_after=_load(),
    )
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
