"""A database as a cryod before revision 0004 left it: rows written with plain
SQL as that cryod wrote them, and v1 audit entries (no node, canonical-JSON
hashes). Shared by the migration tests."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from cryod.daemon.store import migrate
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
