"""``make bench``: cryod against cryosim over real transports, one JSON object at the end.

    python -m tests.bench.run            # full (~15 min)
    python -m tests.bench.run --quick    # ~2-3 min, fewer trials and shorter windows

The last line printed is the JSON result, also written to ``bench-results.json``
(``--out``). docs/performance.md explains the method and every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import record_backlog, scenarios, storage
from .machine import describe
from .stats import percentile

TRANSPORTS = ("modbus-tcp", "modbus-rtu", "serial")
POLL_HZ = 20.0
# the poll path's own steps (tests/bench/micro.py) that every poll runs on the event loop
HOT_STEPS = ("decode", "supervisor", "engine", "rows")


def _plan(args: argparse.Namespace) -> dict[str, Any]:
    if args.quick:
        return {
            "trials": 25,
            "window_s": 3.0,
            "repeats": 2,
            "rtt_n": 50,
            "console_trials": 12,
            "rates": [50.0, 100.0, 200.0],
            "rate_window_s": 3.0,
            "scaling": [1, 4],
            "scale_window_s": 3.0,
            "startup_repeats": 1,
            "micro_repeats": 5,
            "storage_s": 30.0,
            "record_batches": 1500,
            "record_trials": 12,
        }
    return {
        "trials": 200,
        "window_s": 15.0,
        "repeats": 3,
        "rtt_n": 300,
        "console_trials": 60,
        "rates": [50.0, 100.0, 200.0, 300.0, 400.0, 600.0, 800.0, 1000.0],
        "rate_window_s": 8.0,
        "scaling": [1, 4, 16],
        "scale_window_s": 10.0,
        "startup_repeats": 5,
        "micro_repeats": 15,
        "storage_s": 120.0,
        "record_batches": 5000,
        "record_trials": 50,
    }


def _median(xs: list[float]) -> float | None:
    return None if not xs else round(percentile(xs, 50), 3)


def _get(d: Any, *path: Any) -> Any:
    for p in path:
        if d is None:
            return None
        d = d[p] if isinstance(d, list) else d.get(p)
    return d


def transport_figures(t: dict[str, Any]) -> dict[str, Any]:
    """The per-transport figures of the result from one transport_suite run."""
    up = t.get("steady_broker_up") or []
    down = t.get("steady_broker_down") or []
    r = _get(t, "reaction", "reaction_ms") or {}
    ri = _get(t, "reaction", "reaction_from_injection_ms") or {}
    out = {
        "reaction_ms_p50": r.get("p50"),
        "reaction_ms_p99": r.get("p99"),
        "reaction_ms_max": r.get("max"),
        "reaction_from_injection_ms_p50": ri.get("p50"),
        "reaction_from_injection_ms_p99": ri.get("p99"),
        "reaction_trials": _get(t, "reaction", "trials"),
        "reaction_closed_by_daemon": _get(t, "reaction", "closed_by_daemon"),
        "baseline_rtt_ms_p50": _get(t, "baseline", "snapshot_read_ms", "p50"),
        "baseline_write_ms_p50": _get(t, "baseline", "heartbeat_write_ms", "p50"),
        "jitter_ms_p99": _median([w["jitter_ms"]["p99"] for w in up]),
        "jitter_ms_p99_broker_down": _median([w["jitter_ms"]["p99"] for w in down]),
        "cpu_pct_of_core": _median([w["cpu_pct_of_core"] for w in up]),
        "cpu_pct_of_core_broker_down": _median([w["cpu_pct_of_core"] for w in down]),
        "rss_mb": max((w["rss_mb"] for w in up + down), default=None),
        "samples_logged_per_s": _median([w["samples_logged_per_s"] for w in up]),
        "late_polls": sum(w["late_polls"] for w in up + down) if up else None,
        "startup_to_ready_s": t.get("startup_to_ready_s"),
    }
    if "wire_115200_read_ms" in (t.get("baseline") or {}):
        out["wire_115200_read_ms"] = t["baseline"]["wire_115200_read_ms"]
        out["wire_115200_write_ms"] = t["baseline"]["wire_115200_write_ms"]
    return out


def _target(value: Any, limit: float | None, op: str = "<=", note: str = "") -> dict[str, Any]:
    met = None
    if value is not None and limit is not None:
        met = bool(value <= limit) if op == "<=" else bool(value >= limit)
    return {"value": value, "target": f"{op} {limit}", "met": met, "note": note}


def assemble(
    results: dict[str, Any], machine: dict[str, Any], *, mode: str, duration_s: float
) -> dict[str, Any]:
    """The one JSON object: headline figures (Modbus TCP), per transport, targets, details.
    Missing scenarios give None, never a made-up figure."""
    period_ms = 1000.0 / POLL_HZ
    by_t = {name: transport_figures(t) for name, t in (results.get("transports") or {}).items()}
    tcp = by_t.get("modbus-tcp", {})
    rtu = by_t.get("modbus-rtu", {})
    mr = results.get("max_rate") or {}
    cs = results.get("console_side") or {}
    su = results.get("startup") or {}
    disk = results.get("disk_slow") or {}
    disk_windows = disk.get("windows") or []
    disk_jitter = _median([w["jitter_ms"]["p99"] for w in disk_windows])
    # the record channel draining a backlog (tests/bench/record_backlog.py)
    rb = results.get("record_backlog") or {}
    rb_jitter = _median([w["jitter_ms"]["p99"] for w in rb.get("steady") or []])
    rb_reaction = _get(rb, "reaction", "reaction_ms", "p99")
    scaling = results.get("scaling") or []
    rate_points = mr.get("points") or []

    def per_unit(w: dict[str, Any]) -> float:
        # CPU % of a core per console x probe x Hz
        return round(w["cpu_pct_of_core"] / (w["consoles"] * 8 * w["poll_hz"]) * 1000, 4)

    scale_rows = [
        {
            "consoles": w["consoles"],
            "poll_hz": w["poll_hz"],
            "cpu_pct_of_core": w["cpu_pct_of_core"],
            "cpu_pct_per_console": w["cpu_pct_per_console"],
            "cpu_milli_pct_per_console_probe_hz": per_unit(w),
            "rss_mb": w["rss_mb"],
            "jitter_ms_p99": w["jitter_ms"].get("p99"),
            "late_polls": w["late_polls"],
        }
        for w in scaling
    ]
    rate_rows = [
        {
            "poll_hz": w["poll_hz"],
            "sustained": w["sustained"],
            "cpu_pct_of_core": w["cpu_pct_of_core"],
            "cpu_milli_pct_per_console_probe_hz": per_unit(w),
            "late_polls": w["late_polls"],
            "polls": w["polls"],
            "expected_polls": w["expected_polls"],
            "jitter_ms_p99": w["jitter_ms"].get("p99"),
            "samples_logged_per_s": w["samples_logged_per_s"],
        }
        for w in rate_points
    ]
    units = [r["cpu_milli_pct_per_console_probe_hz"] for r in scale_rows]
    linear = None if len(units) < 2 else bool(units[-1] <= 1.2 * units[0])
    rtt = tcp.get("baseline_rtt_ms_p50")
    p99 = tcp.get("reaction_ms_p99")
    steps = (results.get("micro") or {}).get("steps") or {}
    hot_us = (
        round(sum(steps[s]["best_us"] for s in HOT_STEPS), 1)
        if all(s in steps for s in HOT_STEPS)
        else None
    )
    cpu = tcp.get("cpu_pct_of_core")
    cpu_us_per_poll = None if cpu is None else round(cpu / 100 * 1e6 / POLL_HZ, 1)
    ratios = {
        "reaction_p99_minus_period_over_rtt": None
        if p99 is None or not rtt
        else round((p99 - period_ms) / rtt, 2),
        "reaction_p50_over_half_period": None
        if tcp.get("reaction_ms_p50") is None
        else round(tcp["reaction_ms_p50"] / (period_ms / 2), 2),
        "jitter_p99_over_rtt": None
        if tcp.get("jitter_ms_p99") is None or not rtt
        else round(tcp["jitter_ms_p99"] / rtt, 2),
        # the daemon's whole CPU per poll (every thread, asyncio, MQTT, SQLite) in units
        # of this machine's hot cost of the poll path's own steps
        "cpu_per_poll_over_hot_steps": None
        if cpu_us_per_poll is None or not hot_us
        else round(cpu_us_per_poll / hot_us, 1),
    }
    rtu_tx = rtu.get("wire_115200_read_ms")
    rtu_p99 = rtu.get("reaction_ms_p99")
    rtu_physical = (
        None
        if rtu_p99 is None or rtu_tx is None
        else round(rtu_p99 + rtu_tx + rtu.get("wire_115200_write_ms", 0.0), 2)
    )
    restart = _get(su, "restart_s", "median")
    st = results.get("storage") or {}
    bytes_per_poll = _get(st, "compact", "bytes_per_poll")
    targets = {
        "reaction_ms_p99_tcp": _target(
            p99, period_ms + 5, note="poll period + 5 ms, from the console's crossing"
        ),
        "reaction_ms_p99_rtu_with_wire_time": _target(
            rtu_physical,
            None if rtu_tx is None else period_ms + 2 * rtu_tx,
            note="pty p99 + 115200-baud wire time of the read and the close write; "
            "limit: poll period + 2 snapshot-read transactions",
        ),
        "jitter_ms_p99": _target(tcp.get("jitter_ms_p99"), 2.0),
        "jitter_ms_p99_broker_down": _target(tcp.get("jitter_ms_p99_broker_down"), 2.0),
        "jitter_ms_p99_disk_slow": _target(
            disk_jitter, 2.0, note=f"every fsync +{disk.get('fsync_ms')} ms (LD_PRELOAD)"
        ),
        "jitter_ms_p99_record_backlog": _target(
            rb_jitter, 2.0, note="the record channel draining a backlog at its rate"
        ),
        "reaction_ms_p99_record_backlog": _target(
            rb_reaction, period_ms + 5, note="the record channel draining a backlog"
        ),
        "cpu_pct_of_core": _target(tcp.get("cpu_pct_of_core"), 3.0),
        "rss_mb": _target(tcp.get("rss_mb"), 80.0),
        "cpu_linear_in_consoles": {
            "value": units,
            "target": "per console-probe-Hz cost at the most consoles <= 1.2 x at one",
            "met": linear,
        },
        "max_poll_hz": _target(mr.get("max_poll_hz"), 200.0, ">="),
        "startup_to_ready_s": _target(restart, 1.5, note="median restart, existing database"),
        "startup_to_ready_first_s": _target(su.get("first_start_s"), 1.5, note="new database"),
        "bytes_per_stored_poll": _target(
            bytes_per_poll,
            650.0,
            note="8 probes at 20 Hz, after a WAL checkpoint (tests.bench.storage)",
        ),
    }
    return {
        "transport": "modbus-tcp",
        "poll_period_ms": period_ms,
        "reaction_ms_p50": tcp.get("reaction_ms_p50"),
        "reaction_ms_p99": p99,
        "reaction_ms_max": tcp.get("reaction_ms_max"),
        "reaction_from_injection_ms_p99": tcp.get("reaction_from_injection_ms_p99"),
        "baseline_rtt_ms_p50": rtt,
        "jitter_ms_p99": tcp.get("jitter_ms_p99"),
        "jitter_ms_p99_broker_down": tcp.get("jitter_ms_p99_broker_down"),
        "jitter_ms_p99_disk_slow": disk_jitter,
        "record_backlog": None
        if not rb
        else {
            "jitter_ms_p99": rb_jitter,
            "reaction_ms_p99": rb_reaction,
            "cpu_pct_of_core": _median([w["cpu_pct_of_core"] for w in rb.get("steady") or []]),
            **(rb.get("record") or {}),
        },
        "disk_slow": None
        if not disk_windows
        else {
            "fsync_ms": disk.get("fsync_ms"),
            "writer_mean_batch_ms": disk.get("writer_mean_batch_ms"),
            "writer_healthy": disk.get("writer_healthy"),
            "cpu_pct_of_core": _median([w["cpu_pct_of_core"] for w in disk_windows]),
            "samples_dropped": max(w["samples_dropped"] for w in disk_windows),
            "late_polls": sum(w["late_polls"] for w in disk_windows),
        },
        "cpu_pct_of_core": tcp.get("cpu_pct_of_core"),
        "cpu_us_per_poll": cpu_us_per_poll,
        "poll_path_hot_us": hot_us,
        "rss_mb": tcp.get("rss_mb"),
        "max_poll_hz": mr.get("max_poll_hz"),
        "samples_logged_per_s": mr.get("samples_logged_per_s"),
        "samples_logged_per_s_at_20hz": tcp.get("samples_logged_per_s"),
        "startup_to_ready_s": restart,
        "startup_to_ready_first_s": su.get("first_start_s"),
        "bytes_per_stored_poll": bytes_per_poll,
        "bytes_per_stored_poll_before": _get(st, "rows", "bytes_per_poll"),
        "storage_thread_ms_per_s": _get(st, "compact", "storage_thread_ms_per_s"),
        "storage_thread_ms_per_s_before": _get(st, "rows", "storage_thread_ms_per_s"),
        "storage_capacity_polls_per_s": _get(st, "compact", "storage_capacity_polls_per_s"),
        "console_reaction_ms_p50": _get(cs, "injection_to_console_limit_ms", "p50"),
        "console_reaction_ms_p99": _get(cs, "injection_to_console_limit_ms", "p99"),
        "console_reaction_ms_max": _get(cs, "injection_to_console_limit_ms", "max"),
        "by_transport": by_t,
        "ratios": ratios,
        "scaling": scale_rows,
        "rates": rate_rows,
        "targets": targets,
        "machine": machine,
        "mode": mode,
        "duration_s": round(duration_s, 1),
        "errors": results.get("errors", {}),
        "details": results,
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.bench.run", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="about 2-3 minutes")
    ap.add_argument("--out", default="bench-results.json", help="where the JSON goes")
    ap.add_argument(
        "--only",
        default="transports,disk,console,record,rate,scaling,startup,micro,storage",
        help="comma-separated scenarios to run (default: all)",
    )
    ap.add_argument("--transports", default=",".join(TRANSPORTS))
    args = ap.parse_args(argv)
    plan = _plan(args)
    only = set(args.only.split(","))
    machine = describe()
    t0 = time.monotonic()
    results: dict[str, Any] = {"plan": plan}

    def say(msg: str) -> None:
        print(f"[bench {time.monotonic() - t0:6.1f} s] {msg}", file=sys.stderr, flush=True)

    def part(name: str, key: str, fn: Any, *args: Any, **kw: Any) -> Any:
        """Run one scenario; a failure is recorded and the others still run."""
        try:
            return fn(*args, **kw)
        except Exception as exc:  # reported in the JSON, never hidden
            say(f"{name} FAILED: {exc!r}")
            results.setdefault("errors", {})[key] = f"{type(exc).__name__}: {exc}"
            return None

    with tempfile.TemporaryDirectory(prefix="cryod-bench-") as tmp:
        root = Path(tmp)
        if "transports" in only:
            results["transports"] = {}
            for t in args.transports.split(","):
                say(f"{t}: reaction ({plan['trials']} trials), jitter, CPU, broker down, baseline")
                res = part(
                    t,
                    f"transport:{t}",
                    scenarios.transport_suite,
                    root,
                    t,
                    trials=plan["trials"],
                    window_s=plan["window_s"],
                    repeats=plan["repeats"],
                    rtt_n=plan["rtt_n"],
                )
                if res is not None:
                    results["transports"][t] = res
        if "disk" in only:
            say("steady freeze over Modbus TCP with a slow disk (every fsync +100 ms)")
            results["disk_slow"] = part(
                "slow disk",
                "disk",
                scenarios.disk_slow,
                root,
                window_s=plan["window_s"],
                repeats=plan["repeats"],
            )
        if "console" in only:
            say(f"console-side limit reaction ({plan['console_trials']} trials)")
            results["console_side"] = part(
                "console side",
                "console",
                scenarios.console_side,
                root,
                trials=plan["console_trials"],
            )
        if "record" in only:
            say(f"record channel draining {plan['record_batches']} batches: reaction, jitter")
            with scenarios.workdir(root, "record") as wd:
                results["record_backlog"] = part(
                    "record backlog",
                    "record",
                    record_backlog.backlog_suite,
                    wd,
                    trials=plan["record_trials"],
                    window_s=plan["window_s"],
                    repeats=plan["repeats"],
                    batches=plan["record_batches"],
                )
        if "rate" in only:
            say(f"max poll rate over Modbus TCP: {plan['rates']}")
            results["max_rate"] = part(
                "max rate", "rate", scenarios.max_rate, root, plan["rates"], plan["rate_window_s"]
            )
        if "scaling" in only:
            say(f"CPU with {plan['scaling']} consoles")
            results["scaling"] = part(
                "scaling",
                "scaling",
                scenarios.scaling,
                root,
                plan["scaling"],
                plan["scale_window_s"],
            )
        if "startup" in only:
            say("start-up to READY")
            results["startup"] = part(
                "startup", "startup", scenarios.startup, root, plan["startup_repeats"]
            )
        if "micro" in only:
            say("poll path per step, hot (tests.bench.micro)")
            results["micro"] = part(
                "micro", "micro", scenarios.poll_path_steps, plan["micro_repeats"]
            )
        if "storage" in only:
            say(f"bytes per stored poll, rows against compact ({plan['storage_s']} s of polls)")
            results["storage"] = part("storage", "storage", storage.run, seconds=plan["storage_s"])
    out = assemble(
        results,
        machine,
        mode="quick" if args.quick else "full",
        duration_s=time.monotonic() - t0,
    )
    text = json.dumps(out, separators=(",", ":"))
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    say(f"wrote {args.out}")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
