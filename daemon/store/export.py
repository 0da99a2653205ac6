"""Research export: JSON (schema ``cryod.export/1``, see export_schema.json) and CSV.

The export is the one place the pseudonymous patient reference leaves the
database: researchers need it to link a procedure to follow-up data. The CSV
is the JSON flattened to one row per cycle (a procedure with no cycles still
gets one row with empty cycle columns); ``docs/export-schema.md`` is its data
dictionary, and ``CSV_COLUMNS`` is checked against it by the tests.
"""

from __future__ import annotations

import csv
import io
import json
from importlib import resources
from typing import Any

from sqlalchemy.orm import Session

from cryod import __version__

from .db import engine_for
from .models import AdverseEvent, format_utc, utcnow
from .queries import Db, NotFound, load_procedure, procedure_ids

SCHEMA_ID = "cryod.export/1"

PROCEDURE_COLUMNS = (
    "procedure_id",
    "procedure_uuid",
    "patient_ref",
    "study_id",
    "console",
    "console_model",
    "console_serial",
    "console_firmware",
    "software_version",
    "opened_at",
    "closed_at",
    "indication",
    "indication_other",
    "site",
    "side",
    "imaging",
    "anaesthesia",
    "operator",
    "probe_model",
    "probe_lot",
    "procedure_host_only_limits",
    "closed_by",
    "notes",
    "adverse_events_recorded",
    *(f"ae_{code.value}" for code in AdverseEvent),
    "ae_text",
    "alarms_high",
    "alarms_total",
)
CYCLE_COLUMNS = (
    "cycle_id",
    "probe",
    "phase",
    "step_index",
    "protocol",
    "planned_s",
    "target_tip_c",
    "started_at",
    "ended_at",
    "duration_s",
    "outcome",
    "outcome_reason",
    "min_tip_c",
    "time_to_target_s",
    "time_below_m20_s",
    "time_below_m40_s",
    "thaw_to_0_s",
    "supply_start_kpa",
    "supply_end_kpa",
    "gas_used_est_l",
    "cycle_host_only_limits",
    "figures_note",
)
CSV_COLUMNS: tuple[str, ...] = PROCEDURE_COLUMNS + CYCLE_COLUMNS


def load_schema() -> dict[str, Any]:
    """The JSON Schema of the export (shipped in the package)."""
    text = resources.files(__package__).joinpath("export_schema.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def _procedure_entry(session: Session, procedure_id: int) -> dict[str, Any]:
    detail = load_procedure(session, procedure_id, actions=False)
    entry = dict(detail.metadata)
    entry["cycles"] = [{k: v for k, v in c.items() if k != "procedure_id"} for c in detail.cycles]
    entry["alarms"] = detail.alarms
    return entry


def export_json(db: Db, procedure_id: int | None = None) -> dict[str, Any]:
    """Every procedure (or one) with metadata, cycles and alarms."""
    engine, owned = engine_for(db)
    try:
        with Session(engine) as session:
            ids = procedure_ids(session) if procedure_id is None else [procedure_id]
            if procedure_id is not None and procedure_id not in procedure_ids(session):
                raise NotFound(f"procedure {procedure_id} does not exist")
            procedures = [_procedure_entry(session, pid) for pid in ids]
    finally:
        if owned:
            engine.dispose()
    return {
        "schema": SCHEMA_ID,
        "exported_at": format_utc(utcnow()),
        "software_version": __version__,
        "procedures": procedures,
    }


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def csv_rows(export: dict[str, Any]) -> list[dict[str, str]]:
    """The JSON export flattened: one row per cycle, procedure columns repeated."""
    rows: list[dict[str, str]] = []
    for p in export["procedures"]:
        events = p["adverse_events"]
        codes = {e["code"] for e in events or []}
        base: dict[str, Any] = {
            "procedure_id": p["procedure_id"],
            "procedure_uuid": p["uuid"],
            "procedure_host_only_limits": p["host_only_limits"],
            "adverse_events_recorded": events is not None,
            "ae_text": "; ".join(
                f"{e['code']}: {e['text']}" for e in events or [] if e.get("text")
            ),
            "alarms_high": sum(1 for a in p["alarms"] if a["priority"] == "high"),
            "alarms_total": len(p["alarms"]),
        }
        for name in PROCEDURE_COLUMNS:
            if name in base:
                continue
            if name.startswith("ae_"):
                base[name] = None if events is None else (name[3:] in codes)
            else:
                base[name] = p[name]
        cycles = p["cycles"] or [None]
        for c in cycles:
            row = dict(base)
            for name in CYCLE_COLUMNS:
                if c is None:
                    row[name] = None
                elif name == "cycle_host_only_limits":
                    row[name] = c["host_only_limits"]
                elif name == "time_below_m20_s":
                    row[name] = c["time_below_c"]["-20"]
                elif name == "time_below_m40_s":
                    row[name] = c["time_below_c"]["-40"]
                else:
                    row[name] = c[name]
            rows.append({k: _cell(row[k]) for k in CSV_COLUMNS})
    return rows


def export_csv(db: Db, procedure_id: int | None = None) -> str:
    """CSV text (RFC 4180, header row, UTF-8) of the same data as ``export_json``."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(CSV_COLUMNS), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(csv_rows(export_json(db, procedure_id)))
    return out.getvalue()
