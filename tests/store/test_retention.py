"""Retention: samples outside procedures older than the configured time go, whole
batches at a time, under a ``samples_retention`` chain entry; a procedure's samples
stay; verify counts the removed batches as retention, not as deleted."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine

from cryod.daemon.config import ConfigError, load_config
from cryod.daemon.store import records
from cryod.daemon.store.chain import ChainedSession
from cryod.daemon.store.record_check import check_record
from cryod.daemon.store.retention import RetentionStep, retention_step, saved_cursor
from cryod.daemon.store.samples import SampleRow
from cryod.daemon.store.writer import Writer

from .conftest import procedure_meta, sample_rows
from .test_convert import EXAMPLE, config_for

HOUR_S = 3600.0
ROWS_PER_POLL = 3
POLLS_PER_BATCH = 10


def poll(t_utc: float, pid: int | None, i: int) -> list[SampleRow]:
    return [
        SampleRow("c1", t_utc, 100.0 + i, 0, "supply_kpa", 25000.0 + i, "valid", pid),
        SampleRow("c1", t_utc, 100.0 + i, 0, "master_open", float(pid is not None), "valid", pid),
        SampleRow("c1", t_utc, 100.0 + i, 1, "tip_c", -40.0 - i, "valid", pid),
    ]


async def _fill(engine: Engine, now: float) -> tuple[int, list[SampleRow]]:
    """3 old idle batches, 2 old batches of a procedure, 1 old idle batch, 2 recent
    idle batches (a batch is 10 polls)."""
    written: list[SampleRow] = []
    async with Writer(
        engine, batch_max=ROWS_PER_POLL * POLLS_PER_BATCH, batch_interval_s=3600.0
    ) as w:
        pid = await w.commit_now(lambda s: records.open_procedure(s, procedure_meta()))
        plan = [(30.0, None)] * 3 + [(29.0, pid)] * 2 + [(28.0, None)] + [(0.01, None)] * 2
        i = 0
        for age_h, p in plan:
            for _ in range(POLLS_PER_BATCH):
                rows = poll(now - age_h * HOUR_S + i * 0.05, p, i)
                w.submit_samples(rows)
                written += rows
                i += 1
            await w.flush()
        assert w.status().batches == len(plan)
    return pid, written


def _step(engine: Engine, now: float, cursor: int, max_batches: int = 50) -> RetentionStep:
    with ChainedSession(engine) as s, s.begin():
        return retention_step(s, now_utc=now, keep_h=24.0, cursor=cursor, max_batches=max_batches)


async def test_old_samples_outside_procedures_go_and_verify_says_retention(
    engine: Engine, db_path: Path
) -> None:
    now = time.time()
    pid, written = await _fill(engine, now)
    first = _step(engine, now, 0, max_batches=2)  # small steps
    assert first.polls == 2 * POLLS_PER_BATCH
    rest = _step(engine, now, first.cursor)
    assert rest.polls == 2 * POLLS_PER_BATCH  # the third old idle batch and the 28 h one
    again = _step(engine, now, rest.cursor)
    assert (again.polls, again.cursor) == (0, rest.cursor)  # the recent ones stay
    with ChainedSession(engine) as s, s.begin():
        assert saved_cursor(s) == rest.cursor

    kept = sample_rows(engine)
    expected = [tuple(r) for r in written[3 * 10 * 3 : 5 * 10 * 3] + written[6 * 10 * 3 :]]
    assert kept == expected  # the procedure's polls and the recent ones, exactly
    assert all(r[7] == pid for r in kept[: 2 * 10 * 3])

    report = check_record(db_path)
    assert report.ok, report.lines()
    assert report.samples.batches_retained == 4
    assert report.samples.findings == []
    assert any("retention: 4 sample batches" in line for line in report.lines())


async def test_the_guard_lets_only_old_samples_outside_procedures_go(
    engine: Engine, db_path: Path
) -> None:
    now = time.time()
    await _fill(engine, now)
    _step(engine, now, 0, max_batches=1)  # a samples_retention entry is the latest
    con = sqlite3.connect(db_path)
    try:
        for q in (
            "DELETE FROM sample_polls WHERE procedure_id IS NOT NULL",
            f"DELETE FROM sample_polls WHERE t_utc > {now - HOUR_S}",
        ):
            with pytest.raises(sqlite3.IntegrityError, match="never deleted"):
                con.execute(q)
    finally:
        con.close()


def test_the_retention_time_is_validated(tmp_path: Path) -> None:
    config = config_for(tmp_path / "cryod.db", tmp_path)
    assert load_config(config).cfg.daemon.sample_retention_h == 24.0  # the default
    text = config.read_text("utf-8").replace("[daemon]\n", "[daemon]\nsample_retention_h = 0\n")
    config.write_text(text, "utf-8")
    with pytest.raises(ConfigError) as exc:
        load_config(config)
    assert any("sample_retention_h" in p and str(config) in p for p in exc.value.problems)
    assert EXAMPLE.is_file()
