"""Databases as older cryods left them, for the migration tests: before revision
0004 (rows written with plain SQL as that cryod wrote them, and v1 audit entries:
no node, canonical-JSON hashes), and at 0004 (every row under the chain with the
columns of 0004)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from cryod.daemon.store import migrate
from cryod.daemon.store.db import make_engine
from cryod.integrity import GENESIS_HASH, legacy_entry_hash

AT = "2026-02-01T09:00:00.000000Z"


def legacy_append(con: sqlite3.Connection, kind: str, payload: dict[str, Any]) -> None:
    row = con.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (1, GENESIS_HASH) if row is None else (row[0] + 1, row[1])
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = legacy_entry_hash(seq, AT, kind, json.loads(text), prev)
    con.execute(
        "INSERT INTO audit (seq, at, kind, payload, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?)",
        (seq, AT, kind, text, prev, digest),
    )


def make_old_db(path: Path, revision: str = "0001") -> None:
    """Revision ``revision`` (0001: before the outbox) with a procedure, an open
    cycle, one sample and their v1 audit entries."""
    migrate.upgrade(path, revision)
    con = sqlite3.connect(path)
    try:
        con.execute(
            "INSERT INTO procedures (id, uuid, console, opened_at, patient_ref, indication,"
            " site, side, imaging, anaesthesia, operator, study_id, software_version,"
            " host_only_limits, adverse_events) VALUES (1, '00000000-0000-4000-8000-000000000001',"
            " 'c1', ?, 'MN-0042', 'mortons_neuroma', 'third intermetatarsal space', 'left',"
            " 'ultrasound', 'local', 'op-a', 'NCT00000001', '0.9.0', 0, 'null')",
            (AT,),
        )
        legacy_append(con, "procedure_opened", {"procedure_id": 1, "console": "c1"})
        con.execute(
            "INSERT INTO cycles (id, procedure_id, probe, phase, step_index, protocol, planned_s,"
            " target_tip_c, started_at, started_mono, supply_start_kpa, host_only_limits)"
            " VALUES (1, 1, 1, 'freeze', 0, 'classic-2x90', 90.0, -60.0, ?, 100.0, 25000.0, 0)",
            (AT,),
        )
        legacy_append(con, "cycle_opened", {"cycle_id": 1, "procedure_id": 1, "probe": 1})
        con.execute(
            "INSERT INTO samples (procedure_id, console, t_utc, t_mono, probe, channel, value,"
            " validity) VALUES (1, 'c1', 1.0, 1.0, 1, 'tip_c', -30.0, 'valid')"
        )
        con.commit()
    finally:
        con.close()


def downgrade(path: Path, revision: str) -> None:
    """Take the database at ``path`` down to ``revision`` with the real migrations."""
    from alembic import command

    eng = make_engine(path)
    try:
        with eng.begin() as conn:
            cfg = migrate.alembic_config(path)
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, revision)
    finally:
        eng.dispose()


def migration_module(name: str) -> Any:
    """A migration module, for the tables it spells out as they were."""
    import importlib.util

    path = migrate.MIGRATIONS_DIR / "versions" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"m_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_0004_db(path: Path, *, node: str, cycles: int) -> None:
    """A database as a cryod at revision 0004 left it: a procedure and ``cycles``
    closed cycles, each covered as that cryod covered it (an ``insert`` entry when
    opened, an ``update`` entry when closed, with the columns of 0004)."""
    from cryod.daemon.store import chain
    from cryod.daemon.store.chained import RESEARCH

    cycles_0004 = migration_module("0004_integrity").RESEARCH_0004[1]
    assert cycles_0004.name == "cycles"
    migrate.upgrade(path, "0004", node=node)
    con = sqlite3.connect(path)
    try:
        con.execute(
            "INSERT INTO procedures (id, uuid, console, opened_at, patient_ref, indication,"
            " site, side, imaging, anaesthesia, operator, study_id, software_version,"
            " host_only_limits, adverse_events) VALUES (1, '00000000-0000-4000-8000-000000000002',"
            " 'c1', ?, 'MN-0042', 'mortons_neuroma', 'third intermetatarsal space', 'left',"
            " 'ultrasound', 'local', 'op-a', 'NCT00000001', '0.9.0', 0, 'null')",
            (AT,),
        )
        chain.cover_row(con, RESEARCH.by_name["procedures"], {"id": 1}, "insert")
        for cid in range(1, cycles + 1):
            con.execute(
                "INSERT INTO cycles (id, procedure_id, probe, phase, step_index, protocol,"
                " planned_s, target_tip_c, started_at, started_mono, supply_start_kpa,"
                " host_only_limits) VALUES (?, 1, 1, 'freeze', ?, 'classic-2x90', 90.0, -60.0,"
                " ?, ?, 25000.0, 0)",
                (cid, cid - 1, AT, 100.0 * cid),
            )
            chain.cover_row(con, cycles_0004, {"id": cid}, "insert")
            con.execute(
                "UPDATE cycles SET ended_at = ?, ended_mono = ?, duration_s = 90.0,"
                " outcome = 'completed', min_tip_c = ?, time_below_m20_s = 80.5 WHERE id = ?",
                (AT, 100.0 * cid + 90.0, -70.0 - cid, cid),
            )
            chain.cover_row(con, cycles_0004, {"id": cid}, "update")
        con.commit()
    finally:
        con.close()
