"""An hour of simulated time at speed 100 must not grow memory."""

from __future__ import annotations

import gc
import tracemalloc

from .helpers import TICK_S, make, tick


def _hour_half(c, clock, start_s: float, end_s: float) -> None:
    """Freeze/thaw cycles on rotating probes, faults coming and going, the host
    renewing the lease and reading everything, as a daemon would."""
    cycle = 0
    while c.now_s < end_s:
        probe = cycle % 8 + 1
        c.set_freeze(probe, True)
        c.inject("tc-noise", probe=probe, value=1.0, for_s=0.3)
        for i in range(60):  # 60 ticks at speed 100 = 60 s of freezing
            tick(c, clock)
            if i % 10 == 0:
                c.renew_lease()
            c.probe(probe), c.true_state(), c.comms_faults()
        c.set_freeze(probe, False)
        c.set_thaw(probe, True)
        for i in range(30):
            tick(c, clock)
            if i % 10 == 0:
                c.renew_lease()
        c.set_thaw(probe, False)
        cycle += 1


def test_one_simulated_hour_does_not_grow_memory(tmp_path) -> None:
    c, clock = make(speed=100.0, event_log_path=str(tmp_path / "events.jsonl"))
    try:
        c.set_lease_timeout(1000)
        c.set_master(True)
        _hour_half(c, clock, 0.0, 1800.0)
        gc.collect()
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            _hour_half(c, clock, 1800.0, 3600.0)
            gc.collect()
            after, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert c.now_s >= 3600.0
        assert c.faults() == frozenset()  # the run was healthy, not stuck in a latch
        assert c.true_state()["counters"]["ticks"] >= 3600.0 / (100.0 * TICK_S)
        print(f"memory growth {after - before} B, peak {peak - before} B")
        assert after - before < 1_000_000, f"grew {after - before} bytes in the second half hour"
        assert peak - before < 5_000_000
    finally:
        c.close()
