"""Research export and offline queries: JSON validates against the shipped
schema, CSV columns match the data dictionary, everything works read-only
on a database file with no daemon."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import shutil
import sqlite3
import time
from pathlib import Path

import jsonschema
import pytest

from cryod.daemon.store import export, queries, records
from cryod.daemon.store.db import make_engine
from cryod.daemon.store.models import Outcome, Phase
from cryod.daemon.store.writer import Writer

from .conftest import cycle_open, procedure_meta

DOC = Path(__file__).resolve().parents[2] / "docs" / "export-schema.md"


async def fill(writer: Writer) -> tuple[int, int]:
    """One closed procedure with two freezes and a thaw, one open with none."""
    log = records.ProcedureLog(writer)
    pid = await log.open_procedure(procedure_meta())
    for _step, (probe, phase, outcome, min_c) in enumerate(
        [
            (1, Phase.FREEZE, Outcome.COMPLETED, -78.5),
            (1, Phase.THAW, Outcome.COMPLETED, None),
            (1, Phase.FREEZE, Outcome.STOPPED, -61.0),
        ]
    ):
        cid = await log.open_cycle(cycle_open(pid, probe=probe, phase=phase))
        await log.close_cycle(
            records.CycleClose(
                cid,
                outcome,
                dt.datetime.now(dt.UTC),
                time.monotonic(),
                reason=None,
                min_tip_c=min_c,
                time_below_m20_s=50.5 if min_c else None,
                time_below_m40_s=40.0 if min_c else None,
            )
        )
    aid = await log.raise_alarm(
        console="c1", code="supply_low", priority="high", message="Supply low", procedure_id=pid
    )
    await log.ack_alarm(aid, by="op-a")
    await log.raise_alarm(
        console="c1",
        code="skin_cold",
        priority="medium",
        message="Skin 30 C",
        procedure_id=pid,
        probe=1,
    )
    await log.record_action(who="op-a", action="stop", args={}, accepted=True, procedure_id=pid)
    await log.close_procedure(
        records.ProcedureClose(
            procedure_id=pid,
            closed_by="op-a",
            notes='said "fine", left, walking',
            adverse_events=[{"code": "pain"}, {"code": "other", "text": "chilblain-type lesion"}],
        )
    )
    pid2 = await log.open_procedure(
        procedure_meta(patient_ref="SN-0007", indication="stump_neuroma", imaging="ct")
    )
    return pid, pid2


def dictionary_columns() -> list[str]:
    text = DOC.read_text("utf-8")
    section = text.split("## CSV data dictionary", 1)[1]
    return re.findall(r"^\| `([a-z0-9_]+)` \|", section, flags=re.MULTILINE)


async def test_json_export_validates_against_schema(writer: Writer, db_path: Path) -> None:
    _pid, pid2 = await fill(writer)
    data = export.export_json(db_path)
    jsonschema.Draft202012Validator.check_schema(export.load_schema())
    jsonschema.validate(data, export.load_schema(), cls=jsonschema.Draft202012Validator)
    assert data["schema"] == "cryod.export/2"
    assert data["chain"]["seal"] is None  # offline: unsealed
    p1, p2 = data["procedures"]
    assert [c["phase"] for c in p1["cycles"]] == ["freeze", "thaw", "freeze"]
    assert p1["cycles"][0]["time_below_c"] == {"-20": 50.5, "-40": 40.0}
    assert p1["cycles"][0]["min_tip_c"] == -78.5
    assert [a["code"] for a in p1["alarms"]] == ["supply_low", "skin_cold"]
    assert p1["alarms"][0]["acked_at"] is not None
    assert p1["alarms"][1]["acked_at"] is None
    assert p1["patient_ref"] == "MN-0042"  # linkage: the one place it leaves the database
    assert p2["adverse_events"] is None
    assert p2["cycles"] == []
    one = export.export_json(db_path, pid2)
    jsonschema.validate(one, export.load_schema())
    assert [p["procedure_id"] for p in one["procedures"]] == [pid2]
    with pytest.raises(queries.NotFound):
        export.export_json(db_path, 99)


async def test_schema_rejects_a_broken_export(writer: Writer, db_path: Path) -> None:
    await fill(writer)
    data = export.export_json(db_path)
    data["procedures"][0]["cycles"][0]["outcome"] = "finished"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, export.load_schema())


def test_csv_columns_match_the_data_dictionary() -> None:
    assert dictionary_columns() == list(export.CSV_COLUMNS)


async def test_csv_is_the_json_flattened(writer: Writer, db_path: Path) -> None:
    await fill(writer)
    text = export.export_csv(db_path)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    assert reader.fieldnames == dictionary_columns()
    rows = list(reader)
    assert len(rows) == 4  # three cycles + one row for the procedure with none
    first = rows[0]
    assert (first["phase"], first["outcome"], first["min_tip_c"]) == (
        "freeze",
        "completed",
        "-78.5",
    )
    assert (first["time_below_m20_s"], first["time_below_m40_s"]) == ("50.5", "40.0")
    assert (first["ae_pain"], first["ae_infection"], first["ae_other"]) == ("1", "0", "1")
    assert first["ae_text"] == "other: chilblain-type lesion"
    assert (first["alarms_high"], first["alarms_total"]) == ("1", "2")
    assert first["notes"] == 'said "fine", left, walking'  # quoting survives
    last = rows[-1]
    assert (
        last["patient_ref"],
        last["cycle_id"],
        last["adverse_events_recorded"],
        last["ae_pain"],
    ) == ("SN-0007", "", "0", "")
    durations = [float(r["duration_s"]) for r in rows[:3]]
    assert all(d >= 0 for d in durations)


async def test_queries_offline_on_a_copy(writer: Writer, db_path: Path, tmp_path: Path) -> None:
    pid, pid2 = await fill(writer)
    await writer.flush()
    # live database, daemon's writer still running: readers work alongside
    assert [p.id for p in queries.list_procedures(db_path)] == [pid, pid2]
    copy_dir = tmp_path / "copy"
    copy_dir.mkdir()
    src = sqlite3.connect(db_path)
    dst = sqlite3.connect(copy_dir / "copy.db")
    src.backup(dst)
    src.close()
    dst.close()
    summaries = queries.list_procedures(copy_dir / "copy.db")
    assert [(s.id, s.cycles, s.alarms, s.closed_at is not None) for s in summaries] == [
        (pid, 3, 2, True),
        (pid2, 0, 0, False),
    ]
    detail = queries.show_procedure(copy_dir / "copy.db", pid)
    assert detail.metadata["indication"] == "mortons_neuroma"
    assert len(detail.cycles) == 3
    assert len(detail.alarms) == 2
    assert [a["action"] for a in detail.actions] == ["stop"]
    with pytest.raises(queries.NotFound):
        queries.show_procedure(copy_dir / "copy.db", 42)
    # opened read-only: nothing was written next to the copy except WAL bookkeeping
    con = sqlite3.connect(copy_dir / "copy.db")
    try:
        assert con.execute(
            "SELECT count(*) FROM audit WHERE kind = 'database_created'"
        ).fetchone() == (1,)
    finally:
        con.close()


def test_offline_on_a_read_only_copy_without_wal_files(db_path: Path, tmp_path: Path) -> None:
    """A WAL database copied to read-only media (no -shm, directory not writable)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    shutil.copy(db_path, ro / "cryod.db")
    (ro / "cryod.db").chmod(0o444)
    ro.chmod(0o555)
    try:
        assert queries.list_procedures(ro / "cryod.db") == []
        assert export.export_json(ro / "cryod.db")["procedures"] == []
    finally:
        ro.chmod(0o755)


def test_immutable_fallback_reads_without_creating_files(db_path: Path, tmp_path: Path) -> None:
    """The fallback open_readonly uses when WAL files cannot be created (root bypasses chmod)."""
    shutil.copy(db_path, tmp_path / "media.db")
    eng = make_engine(tmp_path / "media.db", readonly=True, immutable=True)
    try:
        assert queries.list_procedures(eng) == []
    finally:
        eng.dispose()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("media")) == ["media.db"]
