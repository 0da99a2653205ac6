"""Bench scenario: jitter and reaction while the record channel drains a backlog.

A room back from a day offline has a chain the collector has not seen. The
database is prepared with ``batches`` procedure sample batches of an 8-probe
20 Hz console (264 samples each, as the daemon writes them every 0.2 s), then
cryod starts with the record channel on and no cursor file, so the whole chain is
its backlog; it drains at ``rate_per_s`` (the config's default) to a real
mosquitto while the reaction trials and the steady 8-probe windows run. The
result says how much was drained and whether the backlog lasted the measurement.

    python -m tests.bench.record_backlog [BATCHES]   # one database; CPU per batch message
    python -m tests.bench.record_backlog 800 --suite 2   # the case, channel off and on
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from cryod.daemon.store import migrate
from cryod.daemon.store.db import make_engine
from cryod.daemon.store.models import Outcome  # noqa: F401 - the store's models load first
from cryod.daemon.store.records import ProcedureClose, ProcedureLog, ProcedureOpen
from cryod.daemon.store.samples import CONSOLE_CHANNELS, PROBE_CHANNELS
from cryod.daemon.store.writer import SampleRow, Writer
from tests.mqtt.broker import Mosquitto

from . import reaction, steady
from .procs import DEMO_PROCEDURE, BenchDaemon, Sim, daemon_toml
from .stats import spread

NODE = "bench-node"
RATE_PER_S = 20.0  # [record] rate_per_s default


def _poll(t: float, pid: int) -> list[SampleRow]:
    rows = [SampleRow("c1", t, t - 1.7e9, 0, ch, 25000.0, "valid", pid) for ch in CONSOLE_CHANNELS]
    for probe in range(1, 9):
        rows += [SampleRow("c1", t, t - 1.7e9, probe, ch, -78.25, "valid", pid)
                 for ch in PROBE_CHANNELS]  # fmt: skip
    return rows


async def _fill(db: Path, batches: int) -> None:
    engine = make_engine(db)
    writer = Writer(engine, queue_max=1_000_000, batch_max=264, batch_interval_s=10.0)
    await writer.start()
    try:
        plog = ProcedureLog(writer)
        meta = {k: v for k, v in DEMO_PROCEDURE.items() if k != "console"}
        pid = await plog.open_procedure(ProcedureOpen(console="c1", operator="bench", **meta))
        t = time.time() - batches * 0.2
        for _ in range(batches):
            for _poll_no in range(4):
                writer.submit_samples(_poll(t, pid))
                t += 0.05
            await writer.flush()
        await plog.close_procedure(
            ProcedureClose(procedure_id=pid, closed_by="bench", adverse_events=[])
        )
    finally:
        await writer.aclose()
        engine.dispose()


def make_backlog(db: Path, batches: int) -> float:
    """A database whose chain holds ``batches`` procedure sample batches; seconds taken."""
    t0 = time.monotonic()
    migrate.upgrade_on_start(db, node=NODE)
    asyncio.run(_fill(db, batches))
    return time.monotonic() - t0


def backlog_suite(
    wd: Path, *, trials: int, window_s: float, repeats: int, batches: int, record: bool = True
) -> dict[str, Any]:
    """Reaction and steady windows over Modbus TCP while the record channel drains
    (``record=False``: the same database and load with the channel off, to compare)."""
    made_s = make_backlog(wd / "cryod.db", batches)
    (wd / "sim").mkdir()
    sim = Sim(wd / "sim", transport="modbus-tcp", speed=1.0, seed=1)
    broker = Mosquitto(wd / "mqtt")
    broker.start()
    d = None
    try:
        cfg = daemon_toml(wd, [sim], mqtt_port=broker.port)
        with cfg.open("a") as fh:
            fh.write(f'\n[node]\nid = "{NODE}"\n\n[record]\nenabled = {str(record).lower()}\n'
                     f"rate_per_s = {RATE_PER_S}\n")  # fmt: skip
        d = BenchDaemon(cfg, wd)
        d.wait_polling()
        idle = {"delivered_seq": 0, "backlog": None, "published": 0, "connected": False,
                "last_error": None}  # fmt: skip
        rec0, t0 = d.call("status")["record"] or idle, time.monotonic()
        out: dict[str, Any] = {"batches": batches, "prepare_s": round(made_s, 1)}
        out["reaction"] = reaction.summarise(
            reaction.run_trials(sim, d, n=trials, poll_hz=20.0), mode="daemon"
        )
        steady.start_freeze_all(d)
        time.sleep(1.0)
        windows = [steady.window(d, window_s, 20.0) for _ in range(repeats)]
        rec1, t1 = d.call("status")["record"] or idle, time.monotonic()
        out["steady"] = windows
        out["jitter_ms_p99_spread"] = spread([w["jitter_ms"]["p99"] for w in windows])
        drained = (rec1["delivered_seq"] or 0) - (rec0["delivered_seq"] or 0)
        out["record"] = {
            "rate_per_s": RATE_PER_S,
            "backlog_at_start": rec0["backlog"],
            "backlog_at_end": rec1["backlog"],
            "published": rec1["published"],
            "delivered_per_s": round(drained / (t1 - t0), 1),
            "drained_throughout": bool(rec1["backlog"] and rec1["backlog"] > 0),
            "connected": rec1["connected"],
            "last_error": rec1["last_error"],
        }
        return out
    finally:
        if d is not None:
            d.stop()
        sim.stop()
        broker.stop()


def message_cost_ms(db: Path, n: int = 100) -> float:
    """CPU ms to read and encode one sample-batch message (the channel's worker thread's
    work per message: ``source.content_of``, ``record_document``, the encoder)."""
    from cryod.daemon.record_channel.message import RecordEncoder, record_document
    from cryod.daemon.record_channel.source import content_of, read_entries
    from cryod.daemon.store.records import REDACTED, check_patient_ref

    enc = RecordEncoder(check_patient_ref, REDACTED)
    engine = make_engine(db)
    try:
        with engine.connect() as conn:
            entries = [e for e in read_entries(conn, 1, 10 * n) if e.kind == "samples"][:n]
            t0 = time.process_time()
            for e in entries:
                rows, block, withheld = content_of(conn, e)
                doc = record_document(
                    site="bench", node=NODE, entry=e, rows=rows, block=block,
                    withheld=withheld, sent_at="2026-03-01T09:15:02.123456Z",
                )  # fmt: skip
                enc.encode(doc)
            return (time.process_time() - t0) / len(entries) * 1000
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import tempfile

    ap = argparse.ArgumentParser(prog="python -m tests.bench.record_backlog", description=__doc__)
    ap.add_argument("batches", nargs="?", type=int, default=200)
    ap.add_argument(
        "--suite", type=int, default=0, metavar="ROUNDS",
        help="run the bench case ROUNDS times with the channel off, then on (alternately)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "cryod.db"
        s = make_backlog(db, args.batches)
        print(f"{args.batches} batches in {s:.1f} s, database {db.stat().st_size / 1e6:.0f} MB")
        print(f"read + encode one sample-batch message: {message_cost_ms(db):.2f} ms CPU")
        for i in range(args.suite * 2):
            record = i % 2 == 1
            wd = Path(tmp) / f"run{i}"
            wd.mkdir()
            out = backlog_suite(
                wd, trials=12, window_s=3.0, repeats=2, batches=args.batches, record=record
            )
            print(json.dumps({
                "record": record,
                "reaction_ms_p99": out["reaction"].get("reaction_ms", {}).get("p99"),
                "jitter_ms_p99": [w["jitter_ms"]["p99"] for w in out["steady"]],
                "cpu_pct_of_core": [w["cpu_pct_of_core"] for w in out["steady"]],
                "delivered_per_s": out["record"]["delivered_per_s"],
                "loadavg": list(os.getloadavg()),
            }), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
