"""Research export: JSON (schema ``cryod.export/2``, see export_schema.json) and CSV.

The export is the one place the pseudonymous patient reference leaves the
database: researchers need it to link a procedure to follow-up data. The CSV
is the JSON flattened to one row per cycle (a procedure with no cycles still
gets one row with empty cycle columns); ``docs/export-schema.md`` is its data
dictionary, and ``CSV_COLUMNS`` is checked against it by the tests.

``cryod.export/2`` carries what proves it (docs/integrity.md): the node, the
chain head it was produced at, every exported row's salt, chain digest and
chain entry (``proof``), and the digest of the list of exported rows. An
export made by the running daemon is **sealed**: one ``export`` chain entry
commits to that list and is anchored at once, and the export carries the
entry. ``verify_export`` re-hashes every row from the export's own fields.

Every exported row (procedure, cycle, alarm) holds each column of its table:
``PLACES`` says where a column sits when not under its own name.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from cryod import __version__
from cryod.integrity import (
    ENTRY_ENCODING,
    ROW_ENCODING,
    EncodingError,
    Head,
    Kind,
    TableSpec,
    column_hints,
    entry_hash,
    row_digest,
    rows_digest,
    salt_from_hex,
)
from cryod.research.record import ProcedureDetails, Selection

from . import chain
from .audit import current_head
from .chained import RESEARCH, key_text, stored_value
from .db import engine_for
from .models import AdverseEvent, format_utc, utcnow
from .queries import Db, NotFound
from .record_check import AnchorSource

SCHEMA_ID = "cryod.export/2"
PREVIOUS_SCHEMAS = ("cryod.export/1",)

#: column -> its path in the exported object when not its own name; None: the
#: id of the procedure the row is nested in
PLACES: dict[str, dict[str, tuple[str, ...] | None]] = {
    "procedures": {"id": ("procedure_id",)},
    "cycles": {
        "id": ("cycle_id",),
        "procedure_id": None,
        "time_below_m20_s": ("time_below_c", "-20"),
        "time_below_m40_s": ("time_below_c", "-40"),
    },
    "alarms": {"id": ("alarm_id",), "procedure_id": None},
    "procedure_study": {"procedure_id": None},
    "pain_assessments": {"id": ("assessment_id",), "procedure_id": None},
    "adverse_events": {"id": ("ae_id",), "procedure_id": None},
}
#: (table, name in the procedure, order) of each list of rows nested in a procedure
CHILDREN = (
    ("cycles", "cycles", "started_at"),
    ("alarms", "alarms", "raised_at"),
    ("pain_assessments", "pain_assessments", "assessed_at"),
    ("adverse_events", "adverse_event_rows", "id"),
)
#: (table, name) of the row nested as one object (null: none), keyed by procedure_id
SINGLE_CHILDREN = (("procedure_study", "study"),)

#: the study sections' fields as CSV columns (``sel_``, ``proc_``), from the models
SELECTION_FIELDS = tuple(Selection.model_fields)
DETAIL_FIELDS = tuple(ProcedureDetails.model_fields)

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
    "study_profile_id",
    "study_profile_version",
    "study_profile_hash",
    "consent_confirmed",
    "consent_form_version",
    *(f"sel_{name}" for name in SELECTION_FIELDS),
    *(f"proc_{name}" for name in DETAIL_FIELDS),
    "baseline_pain_score",
    "baseline_pain_scale",
    "baseline_pain_recall_period",
    "baseline_pain_assessed_at",
    "ae_rows",
    "ae_rows_summary",
    "gas",
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
    "probe_freeze_s",
    "probe_gas_used_est_l",
)
CSV_COLUMNS: tuple[str, ...] = PROCEDURE_COLUMNS + CYCLE_COLUMNS


class ExportVersionError(ValueError):
    """An export file this cryod cannot verify (an older schema, or not an export)."""


def load_schema() -> dict[str, Any]:
    """The JSON Schema of the export (shipped in the package)."""
    text = resources.files(__package__).joinpath("export_schema.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


# ---- building --------------------------------------------------------------------------
def _path(table: str, column: str) -> tuple[str, ...] | None:
    return PLACES.get(table, {}).get(column, (column,))


def _put(obj: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        obj = obj.setdefault(part, {})
    obj[path[-1]] = value


def _exported(kind: Kind, value: Any) -> Any:
    if kind is Kind.BOOL and isinstance(value, int):
        return bool(value)
    return value


@dataclass
class _Proofs:
    """The chain's latest word on every row, and the salts (read in one pass)."""

    claims: dict[tuple[str, str], tuple[str, int, dict[str, str] | None]]
    salts: dict[tuple[str, str], str]

    @classmethod
    def read(cls, conn: Connection) -> _Proofs:
        claims: dict[tuple[str, str], tuple[str, int, dict[str, str] | None]] = {}
        for seq, payload in conn.exec_driver_sql(
            "SELECT seq, payload FROM audit WHERE kind = 'row' ORDER BY seq"
        ):
            p = json.loads(payload)
            hints = p.get("columns")
            claims[(p["table"], key_text(p["key"]))] = (
                str(p["digest"]),
                int(seq),
                hints if isinstance(hints, dict) else None,
            )
        salts = {
            (str(t), str(k)): str(s)
            for t, k, s in conn.exec_driver_sql("SELECT tbl, row_key, salt FROM row_salts")
        }
        return cls(claims, salts)

    def proof(self, spec: TableSpec, values: Mapping[str, Any]) -> dict[str, Any]:
        key = key_text({k: values[k] for k in spec.key})
        digest, seq, hints = self.claims.get((spec.name, key), (None, None, None))
        return {
            "salt": self.salts.get((spec.name, key)),
            "digest": digest,
            "seq": seq,
            "columns": hints,
        }


def _rows(
    conn: Connection, spec: TableSpec, where: str, params: Sequence[Any], order: str
) -> list[dict[str, Any]]:
    cols = ", ".join(f'"{c}"' for c in spec.column_names)
    query = f'SELECT {cols} FROM "{spec.name}" WHERE {where} ORDER BY {order}'  # noqa: S608
    return [
        {c: stored_value(k, v) for (c, k), v in zip(spec.columns, raw, strict=True)}
        for raw in conn.exec_driver_sql(query, tuple(params))
    ]


def _entity(spec: TableSpec, values: Mapping[str, Any], proofs: _Proofs) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column, kind in spec.columns:
        path = _path(spec.name, column)
        if path is not None:
            _put(out, path, _exported(kind, values[column]))
    out["proof"] = proofs.proof(spec, values)
    return out


def _procedures(conn: Connection, procedure_id: int | None) -> list[dict[str, Any]]:
    proofs = _Proofs.read(conn)
    spec = RESEARCH.by_name["procedures"]
    where, params = ("1 = 1", ()) if procedure_id is None else ("id = ?", (procedure_id,))
    out = []
    for values in _rows(conn, spec, where, params, "id"):
        entry = _entity(spec, values, proofs)
        for table, name, order in CHILDREN:
            child = RESEARCH.by_name[table]
            rows = _rows(conn, child, "procedure_id = ?", (values["id"],), f"{order}, id")
            entry[name] = [_entity(child, r, proofs) for r in rows]
        for table, name in SINGLE_CHILDREN:
            child = RESEARCH.by_name[table]
            rows = _rows(conn, child, "procedure_id = ?", (values["id"],), "procedure_id")
            entry[name] = _entity(child, rows[0], proofs) if rows else None
        entry["gas"] = _gas(entry)
        entry["probe_totals"] = probe_totals(entry["cycles"])
        out.append(entry)
    if procedure_id is not None and not out:
        raise NotFound(f"procedure {procedure_id} does not exist")
    return out


def _gas(procedure: Mapping[str, Any]) -> dict[str, Any]:
    """The cryogen: from the procedure details of its study (filled from the console's
    profile at open); null with the reason when it was not recorded."""
    study = procedure.get("study")
    gas = None if study is None else (study.get("details") or {}).get("gas")
    if gas is not None:
        return {"value": gas, "note": None}
    why = "opened without a study profile" if study is None else "not in the procedure details"
    return {"value": None, "note": f"not recorded ({why})"}


def probe_totals(cycles: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per probe: the total freeze time and the estimated gas of its freeze cycles. A
    total is null, with the reason, when a cycle's figure is missing (never a sum that
    silently leaves one out)."""
    out = []
    for probe in sorted({c["probe"] for c in cycles}):
        freezes = [c for c in cycles if c["probe"] == probe and c["phase"] == "freeze"]
        notes = []
        no_time = [c["cycle_id"] for c in freezes if c.get("duration_s") is None]
        no_gas = [c["cycle_id"] for c in freezes if c.get("gas_used_est_l") is None]
        if no_time:
            notes.append(f"freeze_s: no duration for cycle {', '.join(map(str, no_time))}")
        if no_gas:
            notes.append(f"gas_used_est_l: not estimated for cycle {', '.join(map(str, no_gas))}")
        out.append(
            {
                "probe": probe,
                "freeze_cycles": len(freezes),
                "freeze_s": None if no_time else sum(c["duration_s"] for c in freezes),
                "gas_used_est_l": None if no_gas else sum(c["gas_used_est_l"] for c in freezes),
                "note": "; ".join(notes) or None,
            }
        )
    return out


def _row_refs(procedures: Sequence[Mapping[str, Any]]) -> list[tuple[str, dict[str, Any], str]]:
    """(table, key, digest) of every exported row (what the rows digest covers)."""
    refs = []
    for p in procedures:
        for table, obj in _rows_of(p):
            spec = RESEARCH.by_name[table]
            values = _values(spec, obj, p)
            key = {k: values[k] for k in spec.key}
            digest = obj.get("proof", {}).get("digest")
            refs.append((table, key, str(digest)))
    return refs


def _rows_of(p: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(table, exported row) of a procedure and every row nested in it."""
    rows: list[tuple[str, Mapping[str, Any]]] = [("procedures", p)]
    rows += [(t, c) for t, name, _ in CHILDREN for c in p.get(name) or []]
    rows += [(t, p[name]) for t, name in SINGLE_CHILDREN if p.get(name) is not None]
    return rows


def _export(conn: Connection, procedure_id: int | None) -> dict[str, Any]:
    procedures = _procedures(conn, procedure_id)
    head = current_head(conn)
    return {
        "schema": SCHEMA_ID,
        "exported_at": format_utc(utcnow()),
        "software_version": __version__,
        "node": chain.chain_node(conn),
        "chain": {
            "encoding": {"row": ROW_ENCODING, "entry": ENTRY_ENCODING},
            "head": None if head is None else {"seq": head.seq, "hash": head.hash},
            "rows_digest": rows_digest(_row_refs(procedures)),
            "seal": None,
        },
        "procedures": procedures,
    }


def export_json(db: Db, procedure_id: int | None = None) -> dict[str, Any]:
    """Every procedure (or one) with its cycles and alarms, unsealed (read-only)."""
    engine, owned = engine_for(db)
    try:
        with engine.connect() as conn:
            return _export(conn, procedure_id)
    finally:
        if owned:
            engine.dispose()


def export_sealed(session: Session, procedure_id: int | None = None) -> dict[str, Any]:
    """The export, sealed by an ``export`` chain entry in this (writer) transaction."""
    conn = session.connection()
    data = _export(conn, procedure_id)
    payload = {
        "schema": SCHEMA_ID,
        "procedure_id": procedure_id,
        "rows": len(_row_refs(data["procedures"])),
        "rows_digest": data["chain"]["rows_digest"],
    }
    head = chain.append(conn, "export", payload, info=session.info)
    row = conn.exec_driver_sql(
        "SELECT seq, at, node, kind, payload, prev_hash, hash FROM audit WHERE seq = ?",
        (head.seq,),
    ).one()
    data["chain"]["head"] = {"seq": head.seq, "hash": head.hash}
    data["chain"]["seal"] = {
        "seq": row[0],
        "at": row[1],
        "node": row[2],
        "kind": row[3],
        "payload": json.loads(row[4]),
        "prev_hash": row[5],
        "hash": row[6],
    }
    return data


# ---- CSV ------------------------------------------------------------------------------
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
        base.update(_study_columns(p))
        for name in PROCEDURE_COLUMNS:
            if name in base:
                continue
            if name.startswith("ae_"):
                base[name] = None if events is None else (name[3:] in codes)
            else:
                base[name] = p[name]
        totals = {t["probe"]: t for t in p.get("probe_totals") or []}
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
                elif name == "probe_freeze_s":
                    row[name] = totals.get(c["probe"], {}).get("freeze_s")
                elif name == "probe_gas_used_est_l":
                    row[name] = totals.get(c["probe"], {}).get("gas_used_est_l")
                else:
                    row[name] = c[name]
            rows.append({k: _cell(row[k]) for k in CSV_COLUMNS})
    return rows


def _listed(value: Any) -> Any:
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    if isinstance(value, dict):  # the eligibility checklist: all confirmed?
        items = value.get("items") or {}
        return bool(items) and all(items.values())
    return value


def _study_columns(p: Mapping[str, Any]) -> dict[str, Any]:
    """The study's columns of a procedure's CSV rows (empty without a study)."""
    study = p.get("study")
    out: dict[str, Any] = {"gas": (p.get("gas") or {}).get("value")}
    rows = p.get("adverse_event_rows") or []
    out["ae_rows"] = len(rows)
    out["ae_rows_summary"] = "; ".join(
        f"{r['ae_id']}: {r['category']}/{r['subcategory']}"
        + ("" if r["ctcae_grade"] is None else f" grade {r['ctcae_grade']}")
        for r in rows
    )
    pains = [a for a in p.get("pain_assessments") or [] if a["time_point"] == _baseline(study)]
    pain = pains[0] if pains else None
    out["baseline_pain_score"] = None if pain is None else pain["score"]
    out["baseline_pain_scale"] = None if pain is None else pain["scale"]
    out["baseline_pain_recall_period"] = None if pain is None else pain["recall_period"]
    out["baseline_pain_assessed_at"] = None if pain is None else pain["assessed_at"]
    s = study or {}
    out["study_profile_id"] = s.get("profile_id")
    out["study_profile_version"] = s.get("profile_version")
    out["study_profile_hash"] = s.get("profile_hash")
    out["consent_confirmed"] = s.get("consent_confirmed")
    out["consent_form_version"] = s.get("consent_form_version")
    selection, details = s.get("selection") or {}, s.get("details") or {}
    for name in SELECTION_FIELDS:
        out[f"sel_{name}"] = _listed(selection.get(name))
    for name in DETAIL_FIELDS:
        out[f"proc_{name}"] = _listed(details.get(name))
    return out


def _baseline(study: Mapping[str, Any] | None) -> str | None:
    if study is None:
        return None
    try:
        return str(json.loads(study["profile"])["follow_up"]["baseline"])
    except (KeyError, TypeError, ValueError):
        return None


def export_csv(db: Db, procedure_id: int | None = None) -> str:
    """CSV text (RFC 4180, header row, UTF-8) of the same data as ``export_json``."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(CSV_COLUMNS), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(csv_rows(export_json(db, procedure_id)))
    return out.getvalue()


# ---- verifying --------------------------------------------------------------------------
class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


def _get(obj: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    cur: Any = obj
    for part in path:
        if not isinstance(cur, Mapping) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def _values(spec: TableSpec, obj: Mapping[str, Any], parent: Mapping[str, Any]) -> dict[str, Any]:
    """The row's columns, read back from where the export keeps them."""
    out = {}
    for column, _kind in spec.columns:
        path = _path(spec.name, column)
        out[column] = _get(parent, ("procedure_id",)) if path is None else _get(obj, path)
    return out


@dataclass
class ExportFinding:
    table: str
    key: str
    problem: str
    columns: tuple[str, ...] = ()

    def line(self) -> str:
        cols = f" column {', '.join(self.columns)}" if self.columns else ""
        return f"{self.table} {self.key}{cols}: {self.problem}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "key": self.key,
            "columns": list(self.columns),
            "problem": self.problem,
        }


@dataclass
class ExportReport:
    path: str
    rows: int = 0
    rows_ok: int = 0
    sealed: bool = False
    head: Head | None = None
    node: str | None = None
    findings: list[ExportFinding] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # about the export as a whole
    notes: list[str] = field(default_factory=list)  # what it cannot prove

    @property
    def ok(self) -> bool:
        return not self.findings and not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "ok": self.ok,
            "node": self.node,
            "head": None if self.head is None else {"seq": self.head.seq, "hash": self.head.hash},
            "sealed": self.sealed,
            "rows": self.rows,
            "rows_ok": self.rows_ok,
            "findings": [f.as_dict() for f in self.findings],
            "problems": self.problems,
            "notes": self.notes,
        }

    def lines(self) -> list[str]:
        state = "sealed" if self.sealed else "unsealed"
        head = "" if self.head is None else f", head {self.head.seq}:{self.head.hash[:16]}"
        if self.ok:
            out = [
                f"export {self.path}: ok ({self.rows} rows re-hash to their digests; "
                f"{state}; node {self.node}{head})"
            ]
        else:
            out = [f"export {self.path}: DOES NOT MATCH ({state}; node {self.node}{head})"]
        out += [f"  {f.line()}" for f in self.findings]
        out += [f"  {p}" for p in self.problems]
        out += [f"  note: {n}" for n in self.notes]
        return out


def _check_row(
    report: ExportReport, spec: TableSpec, obj: Mapping[str, Any], parent: Mapping[str, Any]
) -> tuple[str, dict[str, Any], str] | None:
    values = _values(spec, obj, parent)
    key_map = {k: values[k] for k in spec.key}
    key = ", ".join(f"{k}={v}" for k, v in key_map.items())
    report.rows += 1
    missing = tuple(c for c, v in values.items() if v is _MISSING)
    if missing:
        report.findings.append(ExportFinding(spec.name, key, "fields missing", missing))
        return None
    proof = obj.get("proof")
    if not isinstance(proof, Mapping) or not isinstance(proof.get("digest"), str):
        report.findings.append(ExportFinding(spec.name, key, "no proof (salt and digest)"))
        return None
    digest = str(proof["digest"])
    ref = (spec.name, key_map, digest)
    try:
        salt = salt_from_hex(str(proof.get("salt")))
    except EncodingError:
        report.findings.append(ExportFinding(spec.name, key, "its salt is missing or malformed"))
        return ref
    try:
        mine = row_digest(salt, spec.encode(values))
    except EncodingError as exc:
        bad = (exc.column,) if exc.column else ()
        report.findings.append(ExportFinding(spec.name, key, f"edited: {exc.reason}", bad))
        return ref
    if mine != digest:
        hints = proof.get("columns")
        cols: tuple[str, ...] = ()
        if isinstance(hints, Mapping):
            now = column_hints(salt, spec.typed(values))
            cols = tuple(c for c in spec.column_names if hints.get(c) != now[c])
        report.findings.append(
            ExportFinding(spec.name, key, "edited: does not re-hash to its digest", cols)
        )
        return ref
    report.rows_ok += 1
    return ref


def _check_seal(report: ExportReport, doc: Mapping[str, Any], rows_digest_now: str) -> None:
    ch = doc.get("chain") or {}
    seal = ch.get("seal")
    if seal is None:
        report.notes.append(
            "unsealed (exported offline): its rows re-hash to the digests it carries, but only "
            "a sealed export (made by the running daemon) or --db ties them to the chain"
        )
        return
    report.sealed = True
    try:
        h = entry_hash(
            int(seal["seq"]),
            str(seal["at"]),
            str(seal["node"]),
            str(seal["kind"]),
            seal["payload"],
            str(seal["prev_hash"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        report.problems.append(f"the seal is malformed: {exc}")
        return
    if h != seal.get("hash"):
        report.problems.append("the seal entry does not hash to its hash (seal edited)")
    if (seal.get("payload") or {}).get("rows_digest") != rows_digest_now:
        report.problems.append(
            "the rows (or their digests) differ from the ones the seal committed to"
        )
    if report.head is None or (report.head.seq, report.head.hash) != (seal.get("seq"), h):
        report.problems.append("the export's head is not its seal entry")
    if seal.get("node") != report.node:
        report.problems.append("the seal names another node than the export")


def verify_export(
    doc: Any,
    *,
    path: str = "export",
    anchors: Sequence[AnchorSource] = (),
    db: Db | None = None,
) -> ExportReport:
    """Re-hash every exported row from the export's own fields; check the rows digest,
    the seal, the head against each anchor source and, with ``db``, against the
    database's chain. Raises ExportVersionError for a file this cryod cannot verify."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("schema"), str):
        raise ExportVersionError('not a cryod export (no "schema")')
    if doc["schema"] in PREVIOUS_SCHEMAS:
        raise ExportVersionError(
            f"{doc['schema']} carries no proofs; the export format is now {SCHEMA_ID} "
            "(re-export with this cryod)"
        )
    if doc["schema"] != SCHEMA_ID:
        raise ExportVersionError(
            f"unknown export schema {doc['schema']!r} (this cryod: {SCHEMA_ID})"
        )
    report = ExportReport(path=path, node=doc.get("node"))
    ch = doc.get("chain") or {}
    head = ch.get("head")
    if isinstance(head, Mapping) and isinstance(head.get("seq"), int):
        report.head = Head(int(head["seq"]), str(head.get("hash")))
    refs = []
    for p in doc.get("procedures") or []:
        if not isinstance(p, Mapping):
            report.problems.append("a procedure is not an object")
            continue
        for table, obj in _rows_of(p):
            ref = _check_row(report, RESEARCH.by_name[table], obj, p)
            refs += [ref] if ref else []
    now = rows_digest(refs)
    if now != ch.get("rows_digest"):
        report.problems.append(
            "the list of rows differs from the one the export was made with "
            "(a row added, removed, or a digest changed)"
        )
    _check_seal(report, doc, now)
    if report.head is not None:
        for source in anchors:
            _check_head_anchored(report, source)
    if db is not None:
        _check_against_db(report, refs, db)
    return report


def _check_head_anchored(report: ExportReport, source: AnchorSource) -> None:
    assert report.head is not None
    heads = [h for h in source.heads if h.node is None or h.node == report.node]
    if not heads:
        report.notes.append(f"{source.name}: no heads of node {report.node}")
        return
    same_seq = [h for h in heads if h.seq == report.head.seq]
    if any(h.hash != report.head.hash for h in same_seq):
        report.problems.append(
            f"{source.name} anchored entry {report.head.seq} with another hash: "
            "the export's head is not the chain's"
        )
    elif not same_seq:
        around = any(h.seq < report.head.seq for h in heads) and any(
            h.seq > report.head.seq for h in heads
        )
        if around and report.sealed:
            report.problems.append(
                f"{source.name} holds heads before and after entry {report.head.seq} but not "
                "the export's seal, which the daemon anchors at once"
            )
        else:
            report.notes.append(f"{source.name}: the export's head is not among its heads")


def _check_against_db(
    report: ExportReport,
    refs: Sequence[tuple[str, Mapping[str, Any], str]],
    db: Db,
) -> None:
    """Each exported digest is one the database's chain gave that row at or before the
    export's head, and the head is the database's entry."""
    head = report.head
    given: dict[tuple[str, str], list[tuple[int, str]]] = {}
    engine, owned = engine_for(db)
    try:
        with engine.connect() as conn:
            node = chain.chain_node(conn)
            for seq, payload in conn.exec_driver_sql(
                "SELECT seq, payload FROM audit WHERE kind = 'row' ORDER BY seq"
            ):
                p = json.loads(payload)
                given.setdefault((p["table"], key_text(p["key"])), []).append(
                    (int(seq), str(p["digest"]))
                )
            stored = (
                None
                if head is None
                else conn.exec_driver_sql(
                    "SELECT hash FROM audit WHERE seq = ?", (head.seq,)
                ).scalar()
            )
    finally:
        if owned:
            engine.dispose()
    if node != report.node:
        report.problems.append(f"the database's chain is node {node}, the export's {report.node}")
    if head is not None and stored != head.hash:
        report.problems.append(f"the database's entry {head.seq} is not the export's head")
    limit = head.seq if head is not None else None
    for table, key, digest in refs:
        history = given.get((table, key_text(key)), [])
        if not any(d == digest and (limit is None or s <= limit) for s, d in history):
            what = ", ".join(f"{k}={v}" for k, v in key.items())
            report.findings.append(
                ExportFinding(table, what, "its digest was never the chain's for that row")
            )
