"""One recorded run in both sample models: written by revision 0005's writer (a row per
value) and converted by ``cryod migrate``, and written by today's writer (compact). The
report's data, the JSON/CSV export and the crash recovery give the same content; the
converted record verifies; a conversion stopped halfway goes on where it stopped; the
daemon refuses a database with rows left to convert."""

from __future__ import annotations

import asyncio
import csv
import io
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cryod.daemon.cli import EXIT_DATABASE, main
from cryod.daemon.report.data import load_report_data
from cryod.daemon.store import convert, migrate, records, recovery
from cryod.daemon.store.chain import ChainedSession
from cryod.daemon.store.db import make_engine
from cryod.daemon.store.export import export_csv, export_json
from cryod.daemon.store.models import Outcome, Phase, utc_from_epoch
from cryod.daemon.store.record_check import check_record
from cryod.daemon.store.samples import SampleRow
from tests.bench.storage import polls, write_compact, write_rows_v1

from .conftest import procedure_meta, sample_rows

SECONDS = 30.0
PER_BATCH = 20  # polls per batch (a second at 20 Hz)


EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "cryod.example.toml"


def config_for(db: Path, tmp: Path) -> Path:
    """The example config with this database and node (and a socket in ``tmp``)."""
    text = EXAMPLE.read_text("utf-8")
    text = text.replace('"/var/lib/cryod/cryod.db"', f'"{db}"')
    text = text.replace('"/run/cryod/control.sock"', f'"{tmp / "control.sock"}"')
    text = text.replace('"procedure-room-1-ws"', '"ws-test"')
    path = tmp / "cryod.toml"
    path.write_text(text, "utf-8")
    return path


def recorded_run() -> list[list[SampleRow]]:
    return list(polls(SECONDS, 8, 20.0))


def _research_rows(db: Path, run: list[list[SampleRow]]) -> list[list[SampleRow]]:
    """A procedure with a closed freeze on probes 1-7 and an open one on probe 8 (the
    crash), under the chain; the run's rows carry the procedure."""
    t0 = run[0][0].t_utc
    engine = make_engine(db)
    try:
        with ChainedSession(engine) as s, s.begin():
            pid = records.open_procedure(s, procedure_meta(), at=utc_from_epoch(t0 - 1.0))
        for probe in range(1, 9):
            with ChainedSession(engine) as s, s.begin():
                cid = records.open_cycle(
                    s,
                    records.CycleOpen(
                        procedure_id=pid,
                        probe=probe,
                        phase=Phase.FREEZE,
                        step_index=0,
                        started_at=utc_from_epoch(t0 + 3.0),
                        started_mono=5003.0,
                        planned_s=10.0,
                    ),
                )
            if probe < 8:
                with ChainedSession(engine) as s, s.begin():
                    records.close_cycle(
                        s,
                        records.CycleClose(
                            cycle_id=cid,
                            outcome=Outcome.COMPLETED,
                            ended_at=utc_from_epoch(t0 + 18.0),
                            ended_mono=5018.0,
                            min_tip_c=-70.0,
                        ),
                    )
    finally:
        engine.dispose()
    return [[r._replace(procedure_id=pid) for r in rows] for rows in run]


def write_old(db: Path, run: list[list[SampleRow]]) -> None:
    """A database as cryod 0005 left it."""
    migrate.upgrade(db, "0005", node="ws-test")
    write_rows_v1(db, _research_rows(db, run), PER_BATCH)


def write_new(db: Path, run: list[list[SampleRow]]) -> None:
    migrate.upgrade_on_start(db, node="ws-test")
    asyncio.run(write_compact(db, _research_rows(db, run), PER_BATCH))


def report_content(db: Path) -> dict[str, Any]:
    data = load_report_data(db, 1)
    return {
        "tip": {p: (s.t_s, s.value, s.validity) for p, s in data.tip.items()},
        "supply": (data.supply.t_s, data.supply.value, data.supply.validity),
        "cylinder": (data.cylinder.t_s, data.cylinder.value, data.cylinder.validity),
        "time_scale": data.time_scale,
        "unplotted": data.unplotted_probes,
        "cycles": data.cycles,
    }


#: what differs between two databases holding the same content: the procedure's random
#: uuid and each row's proof (salted digest, chain seq)
NOT_CONTENT = ("proof", "uuid", "procedure_uuid")


def export_content(db: Path) -> tuple[Any, list[dict[str, str]]]:
    """The JSON and CSV exports without what names the chain or the database."""

    def strip(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if k not in NOT_CONTENT}
        if isinstance(obj, list):
            return [strip(v) for v in obj]
        return obj

    table = csv.DictReader(io.StringIO(export_csv(db, 1)))
    return strip(export_json(db, 1)["procedures"]), [strip(row) for row in table]


def recovered(db: Path, tmp: Path) -> list[Any]:
    copy = tmp / f"recovered-{db.name}"
    shutil.copy(db, copy)
    engine = make_engine(copy)
    try:
        rec = recovery.recover(engine)
        with engine.connect() as conn:
            cycles = conn.exec_driver_sql(
                "SELECT id, probe, outcome, ended_at, ended_mono, min_tip_c FROM cycles ORDER BY id"
            ).all()
    finally:
        engine.dispose()
    return [[(c.cycle_id, c.probe, c.from_samples) for c in rec.interrupted], list(cycles)]


@pytest.fixture(scope="module")
def dbs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    run = recorded_run()
    old, new = root / "old.db", root / "new.db"
    write_old(old, run)
    write_new(new, run)
    return {"old": old, "new": new}


def test_one_run_reads_the_same_from_both_models_and_after_conversion(
    dbs: dict[str, Path], tmp_path: Path
) -> None:
    old = tmp_path / "old.db"
    shutil.copy(dbs["old"], old)
    # before: the old model, at revision 0005, read by today's code after the upgrade
    migrate.upgrade_on_start(old, node="ws-test")
    before = (report_content(old), export_content(old), recovered(old, tmp_path))
    assert check_record(old).ok
    rows_before = convert.pending_rows(old)
    assert rows_before == 600 * 66

    done = convert.convert(old)
    assert (done.rows_done, done.rows_total) == (rows_before, rows_before)
    assert convert.pending_rows(old) == 0
    after = (report_content(old), export_content(old), recovered(old, tmp_path))
    new = dbs["new"]
    compact = (report_content(new), export_content(new), recovered(new, tmp_path))
    assert after == before
    assert compact == before
    # the values themselves, not only what the report reads: every row as written
    assert sample_rows(old) == sample_rows(dbs["new"])
    assert len(before[0]["tip"][1][0]) == 600  # the plotted series are there at all
    assert len(before[1][1]) == 8  # a CSV line per cycle
    assert before[2][0] == [(8, 8, True)]  # the open cycle, closed from its samples

    report = check_record(old)
    assert report.ok, report.lines()
    assert report.samples.batches_converted == 30
    assert any("converted: 30 sample batches" in line for line in report.lines())


def test_a_conversion_stopped_halfway_goes_on_and_the_daemon_waits_for_it(
    dbs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "half.db"
    shutil.copy(dbs["old"], db)
    migrate.upgrade_on_start(db, node="ws-test")
    total = convert.pending_rows(db)
    first = convert.convert(db, chunk_rows=5000, max_chunks=2)
    assert first.chunks == 2
    assert 0 < first.rows_done < total
    assert convert.pending_rows(db) == total - first.rows_done
    assert check_record(db).ok  # half-converted, it still verifies
    with pytest.raises(convert.StoreError, match="cryod migrate"):
        convert.refuse_unconverted(db)

    # cryod migrate: the rest, with progress; a second run has nothing left
    config = config_for(db, tmp_path)
    assert main(["migrate", "--config", str(config)]) == 0
    out = capsys.readouterr()
    assert f"{total - first.rows_done}/{total - first.rows_done} samples converted" in out.err
    assert convert.pending_rows(db) == 0
    convert.refuse_unconverted(db)  # nothing left: no refusal
    assert main(["migrate", "--config", str(config), "--quiet"]) == 0
    assert "already in the compact form" in capsys.readouterr().out
    assert sample_rows(db) == sample_rows(dbs["new"])
    assert check_record(db).ok


def test_a_conversion_killed_inside_a_chunk_leaves_that_chunk_as_it_was(
    dbs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "killed.db"
    shutil.copy(dbs["old"], db)
    migrate.upgrade_on_start(db, node="ws-test")
    total = convert.pending_rows(db)
    real = convert.chain.append
    calls = {"n": 0}

    def dies_on_the_third_chunk(*args: Any, **kwargs: Any) -> Any:
        if args[1] == "samples_converted":
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt  # as a kill between the chunk's writes
        return real(*args, **kwargs)

    monkeypatch.setattr(convert.chain, "append", dies_on_the_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        convert.convert(db, chunk_rows=5000)
    monkeypatch.undo()
    left = convert.pending_rows(db)
    assert 0 < left < total
    assert check_record(db).ok
    convert.convert(db)
    assert convert.pending_rows(db) == 0
    assert sample_rows(db) == sample_rows(dbs["new"])
    assert check_record(db).ok


def test_a_tampered_batch_is_not_converted(dbs: dict[str, Path], tmp_path: Path) -> None:
    db = tmp_path / "tampered.db"
    shutil.copy(dbs["old"], db)
    migrate.upgrade_on_start(db, node="ws-test")
    con = sqlite3.connect(db)
    con.execute("DROP TRIGGER samples_no_update")
    con.execute("UPDATE samples SET value = value - 10 WHERE id = 20000")
    con.commit()
    con.close()
    total = convert.pending_rows(db)
    with pytest.raises(convert.ConvertError, match="do not match chain entry"):
        convert.convert(db, chunk_rows=100)
    assert 0 < convert.pending_rows(db) < total  # the chunks before it were converted
    assert not check_record(db).ok  # and verify still sees the edit


def test_not_enough_free_space_stops_before_anything(
    dbs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "full.db"
    shutil.copy(dbs["old"], db)
    migrate.upgrade_on_start(db, node="ws-test")
    total = convert.pending_rows(db)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(convert.shutil, "disk_usage", lambda _p: usage._replace(free=1024 * 1024))
    with pytest.raises(convert.ConvertError, match="MiB free"):
        convert.convert(db)
    assert convert.pending_rows(db) == total


def test_the_daemon_refuses_a_database_with_rows_to_convert(
    dbs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "old.db"
    shutil.copy(dbs["old"], db)
    config = config_for(db, tmp_path)
    assert main(["run", "--config", str(config)]) == EXIT_DATABASE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "cryod migrate" in err[0]
    assert convert.pending_rows(db) == 600 * 66  # upgraded to 0006, nothing converted


KILLED_CHILD = """
import sys
from cryod.daemon.store import convert
convert.convert(sys.argv[1], chunk_rows=2000, progress=lambda p: print(p.chunks, flush=True))
"""


def test_a_conversion_killed_with_sigkill_resumes(dbs: dict[str, Path], tmp_path: Path) -> None:
    db = tmp_path / "kill9.db"
    shutil.copy(dbs["old"], db)
    migrate.upgrade_on_start(db, node="ws-test")
    total = convert.pending_rows(db)
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_CHILD, str(db)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    for line in child.stdout:  # a few chunks committed, the next one under way
        if line.strip() == "3":
            break
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    left = convert.pending_rows(db)
    assert 0 < left <= total - 3 * 2000
    assert recovery.integrity_check(db) == []
    assert check_record(db).ok
    convert.convert(db)
    assert convert.pending_rows(db) == 0
    assert sample_rows(db) == sample_rows(dbs["new"])
    assert check_record(db).ok
