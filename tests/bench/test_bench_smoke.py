"""The benchmark harness end to end on a tiny run: every key of the result is there.

No timing is asserted (timings belong to ``make bench``, not the test suite);
this only proves the harness still runs against the current daemon and that
its JSON has the shape docs/performance.md describes.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import require_binary

from . import run, scenarios, storage
from .machine import describe

HEADLINE = (
    "transport",
    "poll_period_ms",
    "reaction_ms_p50",
    "reaction_ms_p99",
    "reaction_ms_max",
    "reaction_from_injection_ms_p99",
    "baseline_rtt_ms_p50",
    "jitter_ms_p99",
    "jitter_ms_p99_broker_down",
    "jitter_ms_p99_disk_slow",
    "cpu_pct_of_core",
    "cpu_us_per_poll",
    "poll_path_hot_us",
    "rss_mb",
    "max_poll_hz",
    "samples_logged_per_s",
    "startup_to_ready_s",
    "console_reaction_ms_p99",
    "by_transport",
    "ratios",
    "scaling",
    "targets",
    "machine",
)


def test_tiny_run_assembles_every_key(tmp_path: Path) -> None:
    require_binary("mosquitto")
    suite = scenarios.transport_suite(
        tmp_path, "modbus-tcp", trials=2, window_s=0.5, repeats=1, rtt_n=5
    )
    micro = scenarios.poll_path_steps(repeats=1)
    out = run.assemble(
        {"transports": {"modbus-tcp": suite}, "micro": micro},
        describe(),
        mode="smoke",
        duration_s=0.0,
    )
    json.loads(json.dumps(out))  # plain JSON all the way down
    missing = [k for k in HEADLINE if k not in out]
    assert missing == []
    tcp = out["by_transport"]["modbus-tcp"]
    for key in ("reaction_ms_p99", "jitter_ms_p99", "cpu_pct_of_core", "rss_mb"):
        assert tcp[key] is not None, key
    assert tcp["reaction_trials"] == 2
    assert out["machine"]["cores"] >= 1
    # scenarios not run are None, never a made-up figure
    assert out["max_poll_hz"] is None
    # the machine's yardstick: the poll path's own steps, hot, and the daemon's whole
    # CPU per poll in units of it
    assert set(run.HOT_STEPS) <= set(micro["steps"])
    assert out["poll_path_hot_us"] == round(
        sum(micro["steps"][s]["best_us"] for s in run.HOT_STEPS), 1
    )
    assert out["ratios"]["cpu_per_poll_over_hot_steps"] > 0
    assert out["jitter_ms_p99_disk_slow"] is None
    assert out["targets"]["max_poll_hz"]["met"] is None


def test_storage_figures_are_in_the_result_and_the_compact_model_meets_its_target() -> None:
    """Bytes are not timings: the same run gives the same file on any machine (within a
    page or two), so the target is asserted here too."""
    figures = storage.run(seconds=20.0)
    out = run.assemble({"storage": figures}, describe(), mode="smoke", duration_s=0.0)
    assert out["bytes_per_stored_poll"] == figures["compact"]["bytes_per_poll"]
    assert out["bytes_per_stored_poll_before"] == figures["rows"]["bytes_per_poll"]
    assert figures["compact"]["values_per_poll"] == 66  # 8 probes, the skin channel too
    assert out["targets"]["bytes_per_stored_poll"]["met"] is True, figures
    assert figures["ratio"] >= 10, figures
    assert out["storage_thread_ms_per_s"] is not None
