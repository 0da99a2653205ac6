"""``make bench-hub``: how many rooms the collector sustains on PostgreSQL (benchmark, not a test).

    python -m tests.hub.bench                       # rooms 25, 50, 100, 200, 300, 500; 30 s each
    python -m tests.hub.bench --rooms 100 --seconds 20

Every process is real and started here: a PostgreSQL cluster of its own
(``tests/pg.py``, but with ``fsync`` and ``full_page_writes`` **on**: a
committed batch is durable, as in a study), mosquitto on a free port,
``cryohub run`` (the unit's ExecStart) and a load generator process
(``--generate``) playing N rooms.

**The load.** Each room freezes with 8 probes at 20 Hz and logs every value
the daemon logs (``daemon/store/samples.py``: 66 values per poll: 12 console
channels, 7 per probe), committed as the daemon commits them, four sample
batches a second (330 rows each, ``cryod.samples/1``), each one chain entry
and one record message (``hub/messages.py``) on
``cryod-record/v1/{site}/{node}/chain``, QoS 1, at real rate, one room after
another's message in arrival order. The batches' rows come from a pool of 16
batches encoded once (times, ids and values vary within them): encoding them
again per message would measure the generator; the collector does its full
work for every message (base64, JSON, the entry's hash, the block's digest
against the entry, the chain link, the insert).

**A step** (N rooms) runs ``--seconds`` at real rate, then the generator stops
and the collector is given ``--drain-s`` to commit what is in flight. It is
*sustained* when every published message is in the database (zero loss, rows
counted), the generator kept the real rate (at least 95 %), and the
record-to-committed latency (entry time to the COMMIT of its batch,
``cryohub run --stats-file``) has p99 <= 2 s. The sweep stops at the first
step that is not.

**Also measured**: a bare psycopg ``COPY`` of the same rows (entries and
blocks of 2,000 messages) into the same kind of database, and the
collector's sustained rate as a fraction of it; CPU seconds per wall second
and peak RSS of each process (load generator, broker, collector, PostgreSQL:
all its processes, RSS summed, so shared buffers count once per process that
touched them); bytes per stored value (the two tables' total relation size
over the sample values they hold) and bytes per value as received.

The machine is shared: the load average is in the result; do not tune
against one run. The last line printed is the JSON result.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")
BATCHES_PER_S = 4
POLL_HZ = 20
PROBES = 8
CONSOLE_CHANNELS = ("supply_kpa", "cylinder_kpa", "skin_c", "master_open", "supply_low",
                    "lease_armed", "lease_expired", "fault_overpressure", "fault_console_limit",
                    "console_time_s")  # fmt: skip
PROBE_CHANNELS = ("tip_c", "return_kpa", "tc_status", "freeze_open", "thaw_on",
                  "limits_armed", "trip")  # fmt: skip
VALUES_PER_POLL = len(CONSOLE_CHANNELS) + PROBES * len(PROBE_CHANNELS)  # 66
ROWS_PER_BATCH = VALUES_PER_POLL * POLL_HZ // BATCHES_PER_S  # 330
SITE = "bench"


# ---- the load generator (a process of its own) ----------------------------------------------
def _block_pool(n: int = 16) -> list[tuple[str, str, int]]:
    """(data_b64, digest, rows) of n sample batches as a freezing room commits them."""
    from cryod.integrity import SAMPLES_V1, batch_digest, encode_sample_batch

    rng = random.Random(21)
    pool = []
    t0 = time.time()
    rid = 0
    for b in range(n):
        rows = []
        for poll in range(POLL_HZ // BATCHES_PER_S):
            t = t0 + b * 0.25 + poll / POLL_HZ
            for ch in CONSOLE_CHANNELS:
                rid += 1
                rows.append((rid, 1, "c1", t, 1000 + t % 1000, 0, ch, rng.uniform(0, 30000),
                             "valid"))  # fmt: skip
            for probe in range(1, PROBES + 1):
                for ch in PROBE_CHANNELS:
                    rid += 1
                    value = rng.uniform(-80, 20) if ch == "tip_c" else float(rng.randint(0, 1))
                    rows.append((rid, 1, "c1", t, 1000 + t % 1000, probe, ch, value, "valid"))
        data = encode_sample_batch(rows, SAMPLES_V1)
        pool.append((base64.b64encode(data).decode(), batch_digest(data), len(rows)))
    return pool


async def _generate(port: int, rooms: int, seconds: float, out: Path) -> None:
    import aiomqtt

    from cryod.integrity import GENESIS_HASH, SAMPLES_V1, entry_hash, format_time

    pool = _block_pool()
    published = 0
    lag_s = 0.0
    heads = {f"room-{i:03d}": (0, GENESIS_HASH) for i in range(rooms)}
    start = time.monotonic() + 1.0
    end = start + seconds

    async with aiomqtt.Client(
        "127.0.0.1", port, identifier="bench-rooms", protocol=aiomqtt.ProtocolVersion.V5,
        max_inflight_messages=65535, timeout=60,
    ) as client:  # fmt: skip

        async def room(node: str, index: int) -> None:
            nonlocal published, lag_s
            topic = f"cryod-record/v1/{SITE}/{node}/chain"
            k = 0
            while True:
                due = start + index / rooms / BATCHES_PER_S + k / BATCHES_PER_S
                if due >= end:
                    return
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                else:
                    lag_s = max(lag_s, -wait)
                seq, prev = heads[node]
                seq += 1
                data_b64, digest, n = pool[(k + index) % len(pool)]
                at = format_time(dt.datetime.now(dt.UTC))
                payload = {
                    "table": "samples", "first": seq * 1000, "last": seq * 1000 + n - 1,
                    "rows": n, "digest": digest, "encoding": SAMPLES_V1, "op": "insert",
                }  # fmt: skip
                h = entry_hash(seq, at, node, "samples", payload, prev)
                doc = {
                    "schema": "cryod.record/1", "site": SITE, "node": node,
                    "entry": {"seq": seq, "at": at, "node": node, "kind": "samples",
                              "payload": payload, "prev_hash": prev, "hash": h, "v": 2},
                    "rows": [], "block": {"encoding": SAMPLES_V1, "data_b64": data_b64},
                    "profile": None, "sent_at": at,
                }  # fmt: skip
                heads[node] = (seq, h)
                await client.publish(topic, json.dumps(doc).encode(), qos=1)
                published += 1
                k += 1

        tasks = [asyncio.create_task(room(node, i)) for i, node in enumerate(heads)]
        await asyncio.gather(*tasks)
    wall = time.monotonic() - start
    out.write_text(
        json.dumps(
            {
                "published": published,
                "expected": rooms * int(seconds * BATCHES_PER_S),
                "wall_s": wall,
                "max_lag_s": lag_s,
                "cpu_s": time.process_time(),
                "rows_per_message": pool[0][2],
                "heads": {n: s for n, (s, _h) in heads.items()},
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
            admin.add_room(s, actor, room=f"room-{i:03d}", site=SITE, credential=f"room-{i:03d}",
                           cert_sha256=None, first_seq=1, first_hash=None, now=now,
                           node="bench-hub")  # fmt: skip
    engine.dispose()


def _stored(url: str) -> dict[str, Any]:
    from sqlalchemy import text

    from cryod.hub.store.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as c:
            entries = c.execute(text("SELECT count(*) FROM received_entries")).scalar_one()
            blocks = c.execute(text("SELECT count(*) FROM received_blocks")).scalar_one()
            size = c.execute(text(
                "SELECT pg_total_relation_size('received_entries') "
                "+ pg_total_relation_size('received_blocks')"
            )).scalar_one()  # fmt: skip
            raw = c.execute(text("SELECT coalesce(sum(length(data)), 0) FROM received_blocks"))
            return {"entries": int(entries), "blocks": int(blocks), "bytes": int(size),
                    "raw_block_bytes": int(raw.scalar_one())}  # fmt: skip
    finally:
        engine.dispose()


def _step(
    cluster: Any, rooms: int, seconds: float, drain_s: float, workdir: Path
) -> dict[str, Any]:
    from tests.mqtt.broker import Mosquitto

    wd = Path(tempfile.mkdtemp(prefix=f"rooms{rooms}-", dir=workdir))
    db = cluster.create_database()
    url = cluster.url(db)
    _prepare(url, rooms)
    broker = Mosquitto(wd / "mq", extra="max_queued_messages 0\nmax_inflight_messages 0\n")
    broker.start()
    (wd / "anchors").mkdir()
    cfg = wd / "cryohub.toml"
    cfg.write_text(
        f'[collector]\nid = "bench-hub"\nlog_level = "warning"\n[database]\nurl = "{url}"\n'
        f'[broker]\nhost = "127.0.0.1"\nport = {broker.port}\nclient_id = "cryohub-bench"\n'
        f"session_expiry_s = 3600\nreceive_maximum = 1000\n"
        f'[anchors]\nfile = "anchors/a.jsonl"\njournal_socket = "{wd}/none.sock"\n'
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    stats_file = wd / "stats.json"
    collector = subprocess.Popen(
        [sys.executable, "-m", "cryod.hub.cli", "run", "--config", str(cfg),
         "--stats-file", str(stats_file)],
        stdout=subprocess.DEVNULL, stderr=(wd / "cryohub.log").open("wb"), env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not stats_file.exists() or json.loads(stats_file.read_text())["broker"] != "connected":
        if time.monotonic() > deadline or collector.poll() is not None:
            raise SystemExit(f"cryohub run did not connect: {(wd / 'cryohub.log').read_text()}")
        time.sleep(0.1)
    gen_out = wd / "generator.json"
    generator = subprocess.Popen(
        [sys.executable, "-m", "tests.hub.bench", "--generate", "--port", str(broker.port),
         "--rooms", str(rooms), "--seconds", str(seconds), "--out", str(gen_out)],
        env=env,
    )  # fmt: skip
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
    gen = json.loads(gen_out.read_text())
    # the generator counts its own CPU (it has exited by now)
    usage["load_generator"]["cpu_s_per_s"] = round(gen["cpu_s"] / gen["wall_s"], 3)
    deadline = time.monotonic() + drain_s
    stored = _stored(url)
    while stored["entries"] < gen["published"] and time.monotonic() < deadline:
        time.sleep(0.5)
        stored = _stored(url)
    collector.terminate()
    collector.wait(timeout=60)
    broker.stop()
    stats = json.loads(stats_file.read_text())
    values = stored["blocks"] * gen["rows_per_message"]
    p99 = stats["record_to_committed"]["p99_s"]
    rate_ok = gen["published"] >= 0.95 * gen["expected"]
    lost = gen["published"] - stored["entries"]
    result = {
        "rooms": rooms,
        "seconds": seconds,
        "published": gen["published"],
        "expected": gen["expected"],
        "generator_max_lag_s": round(gen["max_lag_s"], 3),
        "stored": stored["entries"],
        "lost": lost,
        "messages_per_s": round(gen["published"] / seconds, 1),
        "values_per_s": round(gen["published"] * gen["rows_per_message"] / seconds),
        "record_to_committed_p50_s": stats["record_to_committed"]["p50_s"],
        "record_to_committed_p99_s": p99,
        "record_to_committed_max_s": stats["record_to_committed"]["max_s"],
        "batches": stats["batches"],
        "bytes_per_stored_value": round(stored["bytes"] / values, 2) if values else None,
        "bytes_per_value_as_received": round(stored["raw_block_bytes"] / values, 2)
        if values
        else None,
        "processes": usage,
    }
    result["sustained"] = bool(lost == 0 and rate_ok and p99 is not None and p99 <= 2.0)
    cluster.drop_database(db)
    return result


def _bare_copy(cluster: Any, messages: int = 2000) -> dict[str, Any]:
    """The same rows (entries and blocks) by a bare psycopg COPY, no collector."""
    import psycopg
    from psycopg.types.json import Jsonb

    from cryod.integrity import GENESIS_HASH, SAMPLES_V1, entry_hash, format_time

    db = cluster.create_database()
    url = cluster.url(db)
    _prepare(url, 1)
    pool = _block_pool()
    entries, blocks = [], []
    prev = GENESIS_HASH
    now = dt.datetime.now(dt.UTC)
    for seq in range(1, messages + 1):
        data_b64, digest, n = pool[seq % len(pool)]
        at = format_time(now)
        payload = {"table": "samples", "first": seq * 1000, "last": seq * 1000 + n - 1,
                   "rows": n, "digest": digest, "encoding": SAMPLES_V1, "op": "insert"}  # fmt: skip
        h = entry_hash(seq, at, "room-000", "samples", payload, prev)
        entries.append(("room-000", seq, now, "samples", Jsonb(payload), prev, h, 2, None, None,
                        None, now, 0.0, False))  # fmt: skip
        blocks.append(("room-000", seq, SAMPLES_V1, base64.b64decode(data_b64), digest))
        prev = h
    conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(conninfo) as conn:
        t0 = time.perf_counter()
        with conn.cursor() as cur:
            with cur.copy(
                "COPY received_entries (node, seq, at, kind, payload, prev_hash, hash, v, "
                "profile_id, profile_version, profile_hash, received_at, skew_s, skew_flagged) "
                "FROM STDIN"
            ) as cp:
                for e in entries:
                    cp.write_row(e)
            with cp_blocks(cur) as cp:
                for b in blocks:
                    cp.write_row(b)
        conn.commit()
        elapsed = time.perf_counter() - t0
    cluster.drop_database(db)
    return {
        "messages": messages,
        "seconds": round(elapsed, 3),
        "messages_per_s": round(messages / elapsed, 1),
        "values_per_s": round(messages * pool[0][2] / elapsed),
    }


def cp_blocks(cur: Any) -> Any:
    return cur.copy("COPY received_blocks (node, seq, encoding, data, digest) FROM STDIN")


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.hub.bench")
    p.add_argument(
        "--rooms", default="25,50,100,200,300,500", help="comma-separated room counts, ascending"
    )
    p.add_argument("--seconds", type=float, default=30.0, help="real-rate window per step")
    p.add_argument("--drain-s", type=float, default=30.0)
    p.add_argument("--out", type=Path, default=Path("bench-hub-results.json"))
    p.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.generate:
        asyncio.run(_generate(args.port, int(args.rooms), args.seconds, args.out))
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="bench-hub-"))
    cluster = _cluster()
    result: dict[str, Any] = {"bench": "cryohub", "load_before": _load(), "cores": os.cpu_count()}
    try:
        steps = []
        for n in (int(x) for x in args.rooms.split(",")):
            step = _step(cluster, n, args.seconds, args.drain_s, workdir)
            print(json.dumps(step), flush=True)
            steps.append(step)
            if not step["sustained"]:
                break
        copy = _bare_copy(cluster)
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
