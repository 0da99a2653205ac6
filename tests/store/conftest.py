"""Fixtures for the procedure-log tests: a migrated database and a running writer."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from cryod.daemon.store import migrate, records
from cryod.daemon.store.audit import AuditHead
from cryod.daemon.store.db import make_engine
from cryod.daemon.store.models import Phase
from cryod.daemon.store.writer import Writer


def procedure_meta(**overrides: Any) -> records.ProcedureOpen:
    fields: dict[str, Any] = {
        "console": "c1",
        "patient_ref": "MN-0042",
        "indication": "mortons_neuroma",
        "site": "third intermetatarsal space",
        "side": "left",
        "imaging": "ultrasound",
        "anaesthesia": "local",
        "operator": "op-a",
        "study_id": "NCT00000001",
        "probe_model": "CP-17G",
        "probe_lot": "L2026-07",
        "console_model": "CRYOSIM-8",
        "console_serial": "SIM0001",
        "console_firmware": "sim-1.0",
    }
    fields.update(overrides)
    return records.ProcedureOpen(**fields)


def cycle_open(procedure_id: int, probe: int = 1, phase: Phase = Phase.FREEZE) -> records.CycleOpen:
    return records.CycleOpen(
        procedure_id=procedure_id,
        probe=probe,
        phase=phase,
        step_index=0,
        started_at=dt.datetime.now(dt.UTC),
        started_mono=time.monotonic(),
        protocol="classic-2x90",
        planned_s=90.0,
        target_tip_c=-60.0,
        supply_start_kpa=25000.0,
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "cryod.db"
    migrate.upgrade_on_start(path)
    return path


@pytest.fixture
def engine(db_path: Path) -> Iterator[Engine]:
    eng = make_engine(db_path)
    yield eng
    eng.dispose()


@pytest.fixture
def heads() -> list[AuditHead]:
    """Every chain head the writer reported (what the service writes to its log)."""
    return []


@pytest.fixture
async def writer(engine: Engine, heads: list[AuditHead]) -> AsyncIterator[Writer]:
    w = Writer(engine, queue_max=200_000, on_audit_head=heads.append)
    await w.start()
    yield w
    await w.aclose()


def sample_rows(db: Path | Engine) -> list[tuple[Any, ...]]:
    """Every stored sample as ``SampleRow`` tuples (console, t_utc, t_mono, probe,
    channel, value, validity, procedure_id), in the order written, read back from
    the compact tables through a connection of its own."""
    from cryod.daemon.store.samples import read_rows

    engine = db if isinstance(db, Engine) else make_engine(db)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in read_rows(conn)]
    finally:
        if not isinstance(db, Engine):
            engine.dispose()
