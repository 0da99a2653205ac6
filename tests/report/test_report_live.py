"""The report of a procedure run by a real cryod on cryosim at simulated speed,
written by ``cryoctl report --db`` as a user would.

One ad-hoc freeze on probe 2 of an 8-probe console at speed 10: the report
plots probe 2 only, names the unused probes, and says the time is simulated
×10, measured from the samples the daemon recorded (the procedure row does not
record the speed).
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cryod.daemon import report

from ..e2e.harness import DEMO_PROCEDURE, sim_and_daemon

SPEED = 10.0
FREEZE_S = 20.0  # simulated seconds: 2 s of wall clock at SPEED
PROBE = 2

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int]:
    """(database, procedure id, number of probes of the console)."""
    wd = tmp_path_factory.mktemp("live")
    with sim_and_daemon(wd, speed=SPEED) as (_sim, d):
        n_probes = len(d.status()["snapshot"]["probes"])
        pid = d.call("procedure_open", DEMO_PROCEDURE)["procedure_id"]
        d.call("freeze", {"probe": PROBE, "seconds": FREEZE_S})
        deadline = time.monotonic() + 90
        while True:
            cycles = d.call("show", {"id": pid})["cycles"]
            if cycles and all(c["outcome"] is not None for c in cycles):
                break
            assert time.monotonic() < deadline, cycles
            time.sleep(0.2)
        d.call("procedure_close", {"notes": "report test"})
    return wd / "cryod.db", pid, n_probes


def _cryoctl_report(db: Path, pid: int, out: Path) -> None:
    cmd = [sys.executable, "-m", "cryod.daemon.ctl", "report", str(pid)]
    r = subprocess.run(
        [*cmd, "--db", str(db), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out)


def test_the_report_says_the_time_was_simulated(run: tuple[Path, int, int], tmp_path: Path) -> None:
    db, pid, _ = run
    data = report.load_report_data(db, pid)
    assert data.time_scale.factor == SPEED
    assert data.time_scale.basis.startswith("measured")
    # the cycle's duration is simulated seconds, its UTC times are wall clock: both kept
    (freeze,) = [c for c in data.cycles if c["phase"] == "freeze"]
    assert freeze["duration_s"] == pytest.approx(FREEZE_S, abs=1.0)
    wall_s = (
        dt.datetime.fromisoformat(freeze["ended_at"])
        - dt.datetime.fromisoformat(freeze["started_at"])
    ).total_seconds()
    assert wall_s < freeze["duration_s"] / 5

    out = tmp_path / "live.html"
    _cryoctl_report(db, pid, out)
    html = out.read_text("utf-8")
    assert "Simulated time ×10: this procedure ran on a simulated console" in html
    assert "<th>Console time</th><td>simulated time ×10 (measured from" in html
    assert "are simulated seconds (simulated time ×10)" in html
    fig = report.render_figure(data)
    assert fig.get_axes()[-1].get_xlabel().endswith("simulated time ×10")


def test_only_the_probe_that_froze_is_plotted(run: tuple[Path, int, int], tmp_path: Path) -> None:
    db, pid, n_probes = run
    assert n_probes > PROBE
    data = report.load_report_data(db, pid)
    assert data.probes == [PROBE]
    assert data.unplotted_probes == tuple(p for p in range(1, n_probes + 1) if p != PROBE)
    assert list(data.tip) == [PROBE]
    labels = [ax.get_ylabel() for ax in report.render_figure(data).get_axes()]
    assert labels == [f"probe {PROBE}\ntip (°C)", "pressure (kPa)"]

    from PIL import Image

    out = tmp_path / "live.png"
    _cryoctl_report(db, pid, out)
    with Image.open(out) as img:
        assert img.size == report.figure_size_px(1, header=True)
