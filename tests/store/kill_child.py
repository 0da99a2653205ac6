"""Child process for the kill -9 test: writes cycles and samples until killed.

Protocol on stdout, one line per fact, printed only after ``commit_now``
returned (i.e. after the COMMIT):
  ``P <procedure_id>``            procedure committed
  ``C <cycle_id> <n>``            cycle opened; samples 0..n-1 of this run are committed
  ``X <cycle_id> <n>``            cycle closed (completed); same for samples
Samples have channel ``seq`` and value = their sequence number in this run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import time

from cryod.daemon.store import records
from cryod.daemon.store.db import make_engine
from cryod.daemon.store.models import Outcome, Phase
from cryod.daemon.store.writer import SampleRow, Writer


async def main(db: str, console: str) -> None:
    engine = make_engine(db)
    async with Writer(engine, queue_max=1_000_000, batch_interval_s=0.02) as writer:
        log = records.ProcedureLog(writer)
        meta = records.ProcedureOpen(
            console=console,
            patient_ref="KL-0009",
            indication="other_traumatic_neuroma",
            site="sural nerve",
            side="right",
            imaging="ct",
            anaesthesia="regional",
            operator="op-k",
        )
        pid = await log.open_procedure(meta)
        print(f"P {pid}", flush=True)
        n = 0
        step = 0
        while True:
            probe = 1 + step % 4
            spec = records.CycleOpen(
                procedure_id=pid,
                probe=probe,
                phase=Phase.FREEZE,
                step_index=step,
                started_at=dt.datetime.now(dt.UTC),
                started_mono=time.monotonic(),
                planned_s=1.0,
            )
            submitted = n
            cid = await log.open_cycle(spec)
            print(f"C {cid} {submitted}", flush=True)
            for _ in range(40):
                for p in (probe, 0):
                    writer.submit_sample(
                        SampleRow(
                            console, time.time(), time.monotonic(), p, "seq", float(n), "valid", pid
                        )
                    )
                    n += 1
                writer.submit_sample(
                    SampleRow(
                        console, time.time(), time.monotonic(), probe, "tip_c", -50.0, "valid", pid
                    )
                )
                await asyncio.sleep(0.0005)
            submitted = n
            await log.close_cycle(
                records.CycleClose(
                    cid, Outcome.COMPLETED, dt.datetime.now(dt.UTC), time.monotonic()
                )
            )
            print(f"X {cid} {submitted}", flush=True)
            step += 1


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
