"""A figure that could not be computed is NULL with its reason, from the cycle
close record to the export, the audit trail and the report (never 0).

``cycles.figures_note`` (migration ``0005``) carries the reason
``daemon/figures.py`` gives (``CycleFigures.figures_note``).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import sqlite3
from pathlib import Path

import jsonschema
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from cryod.daemon.figures import FigureTracker
from cryod.daemon.report.content import cycle_rows
from cryod.daemon.report.data import load_report_data
from cryod.daemon.store import export, migrate, records, recovery
from cryod.daemon.store.models import Cycle, Outcome
from tests.core.helpers import snap

from .conftest import cycle_open, procedure_meta
from .legacy import downgrade
from .test_migrate import revision

ALL_GAPS = (
    "every interval between usable tip readings was longer than the 7.5 s gap rule: "
    "times below -20/-40 °C not computed"
)


def _figures_all_gaps() -> tuple[float | None, float | None, str | None]:
    """What the figures say for a freeze read every 7.6 s under a 7.5 s rule."""
    tracker = FigureTracker.start(phase="freeze", start_mono_s=0.0, max_gap_s=7.5)
    for i in range(5):
        s = snap(7.6 * i, {1: -100.0})
        tracker = tracker.update(s.probe(1), s)
    f = tracker.figures()
    return f.below_m20_s, f.below_m40_s, f.figures_note


def _closed_cycle(engine: Engine) -> int:
    below_m20_s, below_m40_s, note = _figures_all_gaps()
    assert (below_m20_s, below_m40_s, note) == (None, None, ALL_GAPS)
    with Session(engine) as s, s.begin():
        pid = records.open_procedure(s, procedure_meta())
        cid = records.open_cycle(s, cycle_open(pid))
        records.close_cycle(
            s,
            records.CycleClose(
                cycle_id=cid,
                outcome=Outcome.COMPLETED,
                ended_at=dt.datetime.now(dt.UTC),
                ended_mono=None,
                min_tip_c=-100.0,
                time_below_m20_s=below_m20_s,
                time_below_m40_s=below_m40_s,
                figures_note=note,
            ),
        )
    return pid


def test_the_reason_reaches_the_row_the_audit_trail_and_the_export(
    engine: Engine, db_path: Path
) -> None:
    pid = _closed_cycle(engine)
    con = sqlite3.connect(db_path)
    try:
        row = con.execute(
            "SELECT time_below_m20_s, time_below_m40_s, figures_note FROM cycles"
        ).fetchone()
        payload = json.loads(
            con.execute("SELECT payload FROM audit WHERE kind = 'cycle_closed'").fetchone()[0]
        )
    finally:
        con.close()
    assert row == (None, None, ALL_GAPS)
    assert payload["time_below_c"] == {"-20": None, "-40": None}
    assert payload["figures_note"] == ALL_GAPS

    data = export.export_json(db_path, pid)
    jsonschema.validate(data, export.load_schema(), cls=jsonschema.Draft202012Validator)
    (cycle,) = data["procedures"][0]["cycles"]
    assert cycle["time_below_c"] == {"-20": None, "-40": None}
    assert cycle["figures_note"] == ALL_GAPS
    (csv_row,) = csv.DictReader(io.StringIO(export.export_csv(db_path, pid), newline=""))
    assert (csv_row["time_below_m20_s"], csv_row["time_below_m40_s"]) == ("", "")
    assert csv_row["figures_note"] == ALL_GAPS


def test_the_report_shows_no_figure_and_the_reason(engine: Engine, db_path: Path) -> None:
    pid = _closed_cycle(engine)
    (row,) = cycle_rows(load_report_data(db_path, pid))
    below_m20, below_m40 = row[11], row[12]
    assert below_m20 == below_m40 == "—"
    assert row[-1] == f"completed; figures: {ALL_GAPS}"


def test_an_interrupted_cycle_says_which_figures_it_lacks(engine: Engine) -> None:
    with Session(engine) as s, s.begin():
        pid = records.open_procedure(s, procedure_meta())
        records.open_cycle(s, cycle_open(pid))
    (done,) = recovery.recover(engine).interrupted
    with Session(engine) as s:
        cycle = s.get(Cycle, done.cycle_id)
        assert cycle is not None
        summary = records.cycle_summary(cycle)
    assert summary["time_below_c"] == {"-20": None, "-40": None}
    assert summary["figures_note"] == recovery.INTERRUPTED_FIGURES_NOTE


def test_migration_adds_the_column_and_takes_it_away(tmp_path: Path) -> None:
    db = tmp_path / "cryod.db"
    migrate.upgrade(db, "0004")
    migrate.upgrade(db, "head")
    con = sqlite3.connect(db)
    try:
        columns = [r[1] for r in con.execute("PRAGMA table_info(cycles)")]
    finally:
        con.close()
    assert "figures_note" in columns
    downgrade(db, "0004")
    assert revision(db) == "0004"
    con = sqlite3.connect(db)
    try:
        columns = [r[1] for r in con.execute("PRAGMA table_info(cycles)")]
    finally:
        con.close()
    assert "figures_note" not in columns
