"""The procedure report, rendered from a log built through the store's record API.

The database holds a realistic procedure: two probes frozen to about -140 C
for 150 s, then a passive thaw with a plateau at 0 C, 2 Hz samples with a few
stale readings, the per-cycle figures computed from those samples, and one
high-priority alarm.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from cryod.daemon import report
from cryod.daemon.store import migrate, records
from cryod.daemon.store.db import make_engine
from cryod.daemon.store.models import Cycle, Outcome, Phase
from cryod.daemon.store.samples import SampleRow, insert_rows

T0 = dt.datetime(2026, 3, 2, 10, 0, 0, tzinfo=dt.UTC)
FREEZE_S = 150.0
THAW_S = 150.0
START_S = 20.0  # the first freeze starts 20 s after the procedure opens
DT_S = 0.5
TARGET_C = -100.0
INJECTION = '<script>alert("x")</script><img src="http://evil.example/x.png">'


def tip_c(probe: int, u: float) -> float:
    """Freeze towards -140 C (probe 2 a little warmer), then thaw with a 0 C plateau."""
    floor = -140.0 if probe == 1 else -128.0
    if u < FREEZE_S:
        return floor + (33.0 - floor) * math.exp(-u / 18.0)
    end = floor + (33.0 - floor) * math.exp(-FREEZE_S / 18.0)
    w = u - FREEZE_S
    reach0 = 22.0 * math.log((10.0 - end) / 10.0)  # where the first leg crosses 0 C
    if w < reach0:
        return 10.0 - (10.0 - end) * math.exp(-w / 22.0)
    if w < reach0 + 25.0:
        return 0.0  # latent heat: the ice ball melts at 0 C
    return 30.0 * (1.0 - math.exp(-(w - reach0 - 25.0) / 30.0))


def stale(probe: int, u: float) -> bool:
    return probe == 2 and 60.0 <= u < 63.0


def figures(probe: int, lo: float, hi: float) -> dict[str, float | None]:
    """Per-cycle figures from the samples the way the daemon computes them (sampled)."""
    ts = [lo + i * DT_S for i in range(int((hi - lo) / DT_S) + 1)]
    usable = [(t, tip_c(probe, t)) for t in ts if not stale(probe, t)]
    below20 = sum(DT_S for _, v in usable if v < -20.0)
    below40 = sum(DT_S for _, v in usable if v < -40.0)
    to_target = next((t - lo for t, v in usable if v <= TARGET_C), None)
    to_zero = next((t - lo for t, v in usable if v >= 0.0), None)
    return {
        "min_tip_c": round(min(v for _, v in usable), 2),
        "time_below_m20_s": below20,
        "time_below_m40_s": below40,
        "time_to_target_s": to_target,
        "thaw_to_0_s": to_zero,
    }


def meta(**overrides: Any) -> records.ProcedureOpen:
    fields: dict[str, Any] = {
        "console": "demo",
        "patient_ref": "MN-0042",
        "indication": "mortons_neuroma",
        "site": "third intermetatarsal space",
        "side": "left",
        "imaging": "ultrasound",
        "anaesthesia": "local",
        "operator": "dr-a",
        "study_id": "NCT09876543",
        "probe_model": "CP-17G",
        "probe_lot": "L2026-07",
        "console_model": "CRYOSIM-8",
        "console_serial": "SIM0001",
        "console_firmware": "sim-1.0",
    }
    fields.update(overrides)
    return records.ProcedureOpen(**fields)


def at(s: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=s)


def build_procedure(
    session: Session, *, notes: str | None, scale: float = 1.0, **overrides: Any
) -> int:
    """The procedure; ``scale``: the engine clock (``t_mono``, cycle durations) ran
    that many times faster than the wall clock, as on a simulated console. Probe 3
    reports a tip temperature throughout but has no cycle."""
    pid = records.open_procedure(session, meta(**overrides), at=T0)
    phases = ((Phase.FREEZE, 0.0, FREEZE_S), (Phase.THAW, FREEZE_S, FREEZE_S + THAW_S))
    for step, (phase, lo, hi) in enumerate(phases):
        ids = {}
        for probe in (1, 2):
            ids[probe] = records.open_cycle(
                session,
                records.CycleOpen(
                    procedure_id=pid,
                    probe=probe,
                    phase=phase,
                    step_index=step,
                    started_at=at(START_S + lo),
                    started_mono=1000.0 + scale * lo,
                    protocol="mortons-neuroma",
                    planned_s=hi - lo,
                    target_tip_c=TARGET_C if phase is Phase.FREEZE else None,
                    supply_start_kpa=27000.0,
                ),
            )
        for probe in (1, 2):
            fig = figures(probe, lo, hi)
            if phase is Phase.FREEZE:
                fig["thaw_to_0_s"] = None
            else:
                fig.update(time_to_target_s=None, time_below_m20_s=None, time_below_m40_s=None)
            records.close_cycle(
                session,
                records.CycleClose(
                    cycle_id=ids[probe],
                    outcome=Outcome.COMPLETED,
                    ended_at=at(START_S + hi),
                    ended_mono=1000.0 + scale * hi,
                    supply_end_kpa=25500.0,
                    **fig,
                ),
            )
    alarm = records.raise_alarm(
        session,
        console="demo",
        code="TIP_TOO_COLD",
        priority="high",
        probe=1,
        message="probe 1 tip below the protocol's floor",
        procedure_id=pid,
        at=at(START_S + 120.0),
    )
    records.ack_alarm(session, alarm, by="dr-a", at=at(START_S + 125.0))
    records.record_action(
        session,
        who="dr-a",
        action="start",
        args={"protocol": "mortons-neuroma"},
        accepted=True,
        console="demo",
        procedure_id=pid,
        at=at(START_S - 1.0),
    )
    rows = []
    n = int((FREEZE_S + THAW_S + 2 * START_S) / DT_S)
    for i in range(n):
        s = i * DT_S
        u = s - START_S
        freezing = 0.0 <= u < FREEZE_S
        t_utc = at(s).timestamp()
        supply = 25500.0 + 300.0 * math.sin(s / 7.0) if freezing else 27000.0
        rows.append(
            SampleRow(
                procedure_id=pid,
                console="demo",
                t_utc=t_utc,
                t_mono=1000.0 + scale * u,
                probe=0,
                channel="supply_kpa",
                value=supply,
                validity="valid",
            )
        )
        rows.append(
            SampleRow(
                procedure_id=pid,
                console="demo",
                t_utc=t_utc,
                t_mono=1000.0 + scale * u,
                probe=0,
                channel="cylinder_kpa",
                value=38000.0 - 4.0 * s,
                validity="valid",
            )
        )
        rows.append(
            SampleRow(
                procedure_id=pid,
                console="demo",
                t_utc=t_utc,
                t_mono=1000.0 + scale * u,
                probe=3,
                channel="tip_c",
                value=37.0,
                validity="valid",
            )
        )
        for probe in (1, 2):
            bad = stale(probe, u)
            value = None if bad else (tip_c(probe, u) if u >= 0 else 33.0)
            rows.append(
                SampleRow(
                    procedure_id=pid,
                    console="demo",
                    t_utc=t_utc,
                    t_mono=1000.0 + scale * u,
                    probe=probe,
                    channel="tip_c",
                    value=value,
                    validity="stale" if bad else "valid",
                )
            )
    insert_rows(session.connection(), rows)
    records.close_procedure(
        session,
        records.ProcedureClose(procedure_id=pid, closed_by="dr-a", notes=notes, adverse_events=[]),
        at=at(FREEZE_S + THAW_S + 2 * START_S),
    )
    return pid


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int]:
    path = tmp_path_factory.mktemp("report") / "cryod.db"
    migrate.upgrade_on_start(path)
    engine = make_engine(path)
    try:
        with Session(engine) as session, session.begin():
            pid = build_procedure(session, notes=f"uneventful {INJECTION}")
            host_only = build_procedure(
                session, notes=None, host_only_limits=True, study_id="ISRCTN12345678"
            )
    finally:
        engine.dispose()
    return path, pid, host_only


@pytest.fixture(scope="module")
def html_text(db: tuple[Path, int, int], tmp_path_factory: pytest.TempPathFactory) -> str:
    path, pid, _ = db
    out = report.write_report(path, pid, tmp_path_factory.mktemp("html") / "report.html")
    return out.read_text("utf-8")


class _Tables(HTMLParser):
    """Every <table class=...>: rows of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: list[list[str]] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._table = self.tables.setdefault(dict(attrs).get("class") or "", [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self._table[-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


# ---- PNG -----------------------------------------------------------------------------
def test_png_is_not_blank_and_has_the_expected_size(
    db: tuple[Path, int, int], tmp_path: Path
) -> None:
    from PIL import Image

    path, pid, _ = db
    out = report.write_report(path, pid, tmp_path / "report.png")
    with Image.open(out) as img:
        assert img.format == "PNG"
        assert img.size == report.figure_size_px(2, header=True) == (1100, 900)
        grey = np.asarray(img.convert("L"), dtype=float)
    variance = float(grey.var())
    dark = float((grey < 80).mean())
    assert variance > 300.0, f"image looks blank (variance {variance:.1f})"
    assert dark > 0.005, f"too little ink: lines and text missing ({dark:.4f})"


def test_figure_has_a_panel_per_probe_plus_pressure(db: tuple[Path, int, int]) -> None:
    path, pid, _ = db
    data = report.load_report_data(path, pid)
    fig = report.render_figure(data)
    axes = fig.get_axes()
    assert len(axes) == 3
    labels = [ax.get_ylabel() for ax in axes]
    assert labels[0].startswith("probe 1")
    assert labels[1].startswith("probe 2")
    assert labels[2] == "pressure (kPa)"
    # freeze and thaw shaded on each probe panel, and the two lethal-ice lines
    for ax in axes[:2]:
        assert len(ax.patches) == 2
        ys = sorted(line.get_ydata()[0] for line in ax.get_lines() if line.get_linestyle() == "-.")
        assert ys == [-40.0, -20.0]
    # the stale readings of probe 2 are gaps, never numbers
    tip2 = data.tip[2]
    assert sum(v is None for v in tip2.value) == 6
    assert min(v for v in data.tip[1].value if v is not None) == pytest.approx(-140.0, abs=1.0)


def test_a_probe_without_a_cycle_is_not_plotted(db: tuple[Path, int, int], html_text: str) -> None:
    path, pid, _ = db
    data = report.load_report_data(path, pid)
    assert data.probes == [1, 2]
    assert data.unplotted_probes == (3,)
    assert sorted(data.tip) == [1, 2]
    parser = _Tables()
    parser.feed(html_text)
    channels = [row[0] for row in parser.tables[""][1:]]  # the data-quality table
    assert channels == ["probe 1 tip_c", "probe 2 tip_c", "supply_kpa", "cylinder_kpa"]
    assert "Probe 3 had no cycle in this procedure" in html_text


# ---- the console's clock -------------------------------------------------------------
def test_time_scale_from_clocks() -> None:
    wall = [i * 0.05 for i in range(200)]
    assert report.time_scale_from_clocks(wall, [1000.0 + t for t in wall]) == 1.0
    # monotonic and wall clocks drift apart by far less than 1 %: still real time
    assert report.time_scale_from_clocks(wall, [1000.0 + 1.004 * t for t in wall]) == 1.0
    assert report.time_scale_from_clocks(wall, [7.0 + 5.0 * t for t in wall]) == 5.0
    # a daemon restart starts the engine clock again; the wall clock steps back once
    mono = [1e4 + 2.5 * t if t < 5.0 else 3.0 + 2.5 * t for t in wall]
    stepped = [t if t < 7.0 else t - 3600.0 for t in wall]
    assert report.time_scale_from_clocks(stepped, mono) == 2.5
    # a figure that cannot be measured is None, never a guess
    assert report.time_scale_from_clocks([], []) is None
    assert report.time_scale_from_clocks([0.0, 0.05], [0.0, 0.5]) is None


@pytest.fixture(scope="module")
def sim_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """The same procedure, run at simulated time x5."""
    path = tmp_path_factory.mktemp("sim") / "cryod.db"
    migrate.upgrade_on_start(path)
    engine = make_engine(path)
    try:
        with Session(engine) as session, session.begin():
            pid = build_procedure(session, notes=None, scale=5.0)
    finally:
        engine.dispose()
    return path, pid


def test_simulated_time_is_said_in_every_format(sim_db: tuple[Path, int], tmp_path: Path) -> None:
    path, pid = sim_db
    data = report.load_report_data(path, pid)
    assert data.time_scale.factor == 5.0
    assert data.time_scale.simulated
    html = report.render_html(data)
    assert "Simulated time ×5: this procedure ran on a simulated console" in html
    parser = _Tables()
    parser.feed(html)
    meta_rows = {r[0]: r[1] for r in parser.tables["meta"]}
    assert meta_rows["Console time"] == (
        "simulated time ×5 (measured from the samples' wall and engine clocks)"
    )
    assert "are simulated seconds (simulated time ×5)" in html
    # durations on the simulated clock, start times on the wall clock
    header, *rows = parser.tables["cycles"]
    freeze1 = rows[0]
    assert freeze1[header.index("Duration s")] == "750.0"
    assert freeze1[header.index("Start")] == "+0:20"
    axes = report.render_figure(data).get_axes()
    assert axes[-1].get_xlabel() == (
        "wall-clock time since procedure opened (s)  ·  simulated time ×5"
    )
    assert axes[0].get_title(loc="right") == "simulated time ×5"
    pdf = report.write_report(path, pid, tmp_path / "r.pdf").read_bytes()
    assert pdf.startswith(b"%PDF")


def test_real_time_is_said_and_nothing_warns(db: tuple[Path, int, int], html_text: str) -> None:
    path, pid, _ = db
    data = report.load_report_data(path, pid)
    assert data.time_scale.factor == 1.0
    assert not data.time_scale.simulated
    parser = _Tables()
    parser.feed(html_text)
    meta_rows = {r[0]: r[1] for r in parser.tables["meta"]}
    assert meta_rows["Console time"].startswith("real time")
    assert "Simulated time" not in html_text
    axes = report.render_figure(data).get_axes()
    assert axes[-1].get_xlabel() == "time since procedure opened (s)"
    assert axes[0].get_title(loc="right") == ""


def test_an_unknown_speed_is_said_not_guessed(tmp_path: Path) -> None:
    path = tmp_path / "nosamples.db"
    migrate.upgrade_on_start(path)
    engine = make_engine(path)
    try:
        with Session(engine) as session, session.begin():
            pid = records.open_procedure(session, meta(), at=T0)
    finally:
        engine.dispose()
    data = report.load_report_data(path, pid)
    assert data.time_scale.factor is None
    assert "speed, which is not known for this procedure" in report.render_html(data)


# ---- HTML ----------------------------------------------------------------------------
def test_html_states_research_use_and_study_id(html_text: str) -> None:
    assert report.RESEARCH_USE in html_text
    assert "IPG747" in html_text
    assert "HTG652" in html_text
    assert 'class="study">Study identifier: NCT09876543' in html_text
    assert report.HOST_ONLY_TEXT not in html_text
    assert report.NO_STUDY_TEXT not in html_text


def test_html_cycle_table_has_the_figures_from_the_log(
    db: tuple[Path, int, int], html_text: str
) -> None:
    path, pid, _ = db
    parser = _Tables()
    parser.feed(html_text)
    header, *rows = parser.tables["cycles"]
    assert header[:3] == ["#", "Probe", "Phase"]
    col = {name: i for i, name in enumerate(header)}
    engine = make_engine(path)
    try:
        with Session(engine) as session:
            cycles = session.scalars(
                select(Cycle).where(Cycle.procedure_id == pid).order_by(Cycle.started_at, Cycle.id)
            ).all()
            assert len(rows) == len(cycles) == 4
            for row, c in zip(rows, cycles, strict=True):
                assert row[col["#"]] == str(c.id)
                assert row[col["Probe"]] == str(c.probe)
                assert row[col["Phase"]] == c.phase
                assert row[col["Duration s"]] == _fmt(c.duration_s)
                assert row[col["Min tip °C"]] == _fmt(c.min_tip_c)
                assert row[col["To target s"]] == _fmt(c.time_to_target_s)
                assert row[col["< -20 °C s"]] == _fmt(c.time_below_m20_s)
                assert row[col["< -40 °C s"]] == _fmt(c.time_below_m40_s)
                assert row[col["Thaw to 0 °C s"]] == _fmt(c.thaw_to_0_s)
                assert row[col["Outcome"]] == "completed"
    finally:
        engine.dispose()
    # and the numbers are the physics of this procedure, not placeholders
    freeze1 = rows[0]
    assert freeze1[col["Start"]] == "+0:20"
    assert float(freeze1[col["Duration s"]]) == 150.0
    assert -141.0 < float(freeze1[col["Min tip °C"]]) < -139.0
    thaw1 = next(r for r in rows if r[col["Probe"]] == "1" and r[col["Phase"]] == "thaw")
    assert 40.0 < float(thaw1[col["Thaw to 0 °C s"]]) < 90.0


def test_html_alarm_and_metadata(html_text: str) -> None:
    parser = _Tables()
    parser.feed(html_text)
    header, alarm = parser.tables["alarms"]
    assert alarm[header.index("Code")] == "TIP_TOO_COLD"
    assert alarm[header.index("Priority")] == "high"
    assert alarm[header.index("Raised")] == "+2:20"
    assert alarm[header.index("Acked")] == "10:02:25 by dr-a"
    meta_rows = dict(tuple(r) for r in parser.tables["meta"])
    assert meta_rows["Patient reference (pseudonym)"] == "MN-0042"
    assert meta_rows["Probe model, lot"] == "CP-17G, lot L2026-07"
    assert meta_rows["Adverse events"] == "none"
    assert meta_rows["Opened"] == "2026-03-02 10:00:00 UTC"
    assert meta_rows["Audit chain"].startswith("intact")


class _Refs(HTMLParser):
    """Every tag name and attribute the browser would act on (text is not markup)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str]] = []
        self.style = ""
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend((k, v or "") for k, v in attrs)
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.style += data


def test_html_is_self_contained(html_text: str, db: tuple[Path, int, int], tmp_path: Path) -> None:
    refs = _Refs()
    refs.feed(html_text)
    srcs = [v for k, v in refs.attrs if k == "src"]
    assert srcs, "the figure must be embedded"
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not [v for k, v in refs.attrs if k in ("href", "action", "srcset", "data")]
    assert not {"script", "link", "iframe", "object"} & set(refs.tags)
    assert "url(" not in refs.style
    assert "@import" not in refs.style
    # a report whose notes hold no URL has no URL at all
    path, _, host_only = db
    clean = report.write_report(path, host_only, tmp_path / "clean.html").read_text("utf-8")
    assert "http://" not in clean
    assert "https://" not in clean


def test_html_escapes_text_from_the_log(html_text: str) -> None:
    assert INJECTION not in html_text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html_text
    parser = _Tables()
    parser.feed(html_text)
    notes = dict(tuple(r) for r in parser.tables["meta"])["Notes"]
    assert notes == f"uneventful {INJECTION}"  # shown to the reader as text, intact


def test_html_says_when_limits_were_host_only(db: tuple[Path, int, int], tmp_path: Path) -> None:
    path, _, host_only = db
    text = report.write_report(path, host_only, tmp_path / "r.HTML").read_text("utf-8")
    assert report.HOST_ONLY_TEXT in text
    assert "ISRCTN12345678" in text


# ---- PDF -----------------------------------------------------------------------------
def test_pdf_has_tables_and_plot_pages(db: tuple[Path, int, int], tmp_path: Path) -> None:
    path, pid, _ = db
    out = report.write_report(path, pid, tmp_path / "report.pdf")
    data = out.read_bytes()
    assert data.startswith(b"%PDF")
    pages = re.findall(rb"/Type\s*/Page\b(?!s)", data)
    assert len(pages) >= 2
    assert b"Research use only" in data  # document metadata (Subject)


# ---- errors -------------------------------------------------------------------------
def test_unknown_procedure_is_a_clear_error(db: tuple[Path, int, int], tmp_path: Path) -> None:
    path, _, _ = db
    with pytest.raises(LookupError, match="procedure 999 does not exist"):
        report.write_report(path, 999, tmp_path / "r.html")
    assert not list(tmp_path.iterdir())


def test_unknown_extension_and_missing_database(tmp_path: Path) -> None:
    with pytest.raises(report.ReportError, match=r"\.html, \.pdf or \.png"):
        report.write_report(tmp_path / "x.db", 1, tmp_path / "r.docx")
    with pytest.raises(report.ReportError, match="does not exist"):
        report.write_report(tmp_path / "missing.db", 1, tmp_path / "r.png")


def test_missing_matplotlib_names_the_extra(
    db: tuple[Path, int, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, pid, _ = db
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import now fails
    with pytest.raises(report.ReportDependencyError, match=r"pip install 'cryod\[report\]'"):
        report.write_report(path, pid, tmp_path / "r.png")


def test_an_open_procedure_without_data_still_reports(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "empty.db"
    migrate.upgrade_on_start(path)
    engine = make_engine(path)
    try:
        with Session(engine) as session, session.begin():
            pid = records.open_procedure(session, meta(study_id=None), at=T0)
    finally:
        engine.dispose()
    text = report.write_report(path, pid, tmp_path / "r.html").read_text("utf-8")
    assert "still open" in text
    assert "Study identifier: —" in text
    assert report.NO_STUDY_TEXT in text
    assert report.RESEARCH_USE in text
    png = report.write_report(path, pid, tmp_path / "r.png")
    with Image.open(png) as img:
        assert img.size == report.figure_size_px(0, header=True)


def test_importing_the_report_does_not_load_matplotlib() -> None:
    import subprocess

    code = (
        "import sys, cryod.daemon.report, cryod.daemon.watch; sys.exit('matplotlib' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_matplotlib_is_imported_by_one_module_only() -> None:
    """matplotlib stays behind ``daemon/report/plot.py``: no other module of ours imports it."""
    import ast

    import cryod

    repo = (Path(cryod.__file__).parent / "daemon").resolve().parent
    importers = set()
    for folder in ("daemon", "drivers", "simulators"):
        for path in (repo / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                if any(n.split(".")[0] == "matplotlib" for n in names):
                    importers.add(path.relative_to(repo).as_posix())
    assert importers == {"daemon/report/plot.py"}
