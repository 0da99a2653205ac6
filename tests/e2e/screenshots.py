"""Regenerate the README's images from a real run: ``python -m tests.e2e.screenshots``.

Starts cryosim and cryod (speed 10), runs the Morton's neuroma example on two
probes, records the live view as SVG while it freezes, then writes the report
of the finished procedure as PNG.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from rich.console import Console

from cryod.daemon.report import write_report
from cryod.daemon.watch import Trends, render_status

from .harness import DEMO_PROCEDURE, sim_and_daemon

OUT = Path(__file__).resolve().parents[2] / "docs" / "img"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, sim_and_daemon(Path(tmp), speed=10.0) as (_s, d):
        pid = d.call("procedure_open", DEMO_PROCEDURE)["procedure_id"]
        d.call("run", {"protocol": "morton-neuroma-cazzato2016", "probes": [1, 2]})
        trends = Trends()
        deadline = time.monotonic() + 8
        status = d.call("status")
        while time.monotonic() < deadline:
            status = d.call("status")
            trends.add_status(status)
            time.sleep(0.25)
        console = Console(record=True, width=100, force_terminal=True, color_system="truecolor")
        console.print(render_status(status, trends))
        console.save_svg(str(OUT / "watch-example.svg"), title="cryoctl watch")
        d.wait_state({"complete", "fault", "stopped", "aborted"}, timeout=120)
        d.call("procedure_close", {"notes": "screenshot run"})
        write_report(Path(tmp) / "cryod.db", pid, OUT / "report-example.png")
    print(f"wrote {OUT / 'watch-example.svg'} and {OUT / 'report-example.png'}")


if __name__ == "__main__":
    main()
