"""``verify``: the whole record against its chain, and the chain against its anchors.

Reads a database (read-only) and hands the reading to the pure checks of
``cryod.integrity``. Three questions, answered apart:

1. **chain**: is the chain consistent on its own (no entry edited, deleted,
   inserted or reordered without recomputing the rest)?
2. **tables**: does every research row, as it stands, match the latest chain
   entry for it, and every sample batch its entry (no row edited, deleted or
   inserted)?
3. **anchors**: does the chain agree with each record of its head kept
   outside the database (a journal export, an anchor file, heads collected
   from MQTT, ``--head``)? Rewritten, cut-off and forked histories show here.

Redactions, restores and baselines are listed apart: they are recorded acts,
not tampering. ``VerifyExit`` holds the documented exit codes.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from cryod.integrity import (
    AnchorHead,
    AnchorProblem,
    AnchorReport,
    ChainCheck,
    Entry,
    Head,
    Restore,
    RowsReport,
    SampleRedaction,
    SamplesReport,
    TableSpec,
    batch_claims,
    check_anchors,
    check_chain,
    check_rows,
    check_samples,
    id_ranges,
    parse_heads,
    restores,
    row_claims,
    salt_from_hex,
    sample_redactions,
)
from cryod.integrity.canonical import EncodingError
from cryod.integrity.samples import SAMPLE_COLUMNS_V1

from .audit import read_entries
from .chained import RESEARCH, Registry, key_text, stored_value
from .db import DbSpec, engine_for
from .samples import read_polls

POLL_CHUNK = 5000  # polls read at a time by verify

__all__ = [
    "AnchorSource",
    "RecordReport",
    "SchemaChange",
    "VerifyExit",
    "anchor_source",
    "check_record",
    "rows_as_stored",
]


class VerifyExit(enum.IntEnum):
    """``cryoctl verify`` exit codes (docs/integrity.md). With several failures, the
    first in this order: chain, tables, anchors, export."""

    OK = 0
    CHAIN = 1  # the chain is not consistent on its own
    BAD_INPUT = 2  # a bad command line (a malformed --head)
    UNREACHABLE = 3  # no daemon at the socket (live verify)
    TABLES = 4  # a research row or a sample batch does not match the chain
    ANCHORS = 5  # the chain disagrees with an anchor
    EXPORT = 6  # an export does not match what it carries (verify --export)
    BAD_FILE = 7  # a file named on the command line cannot be used (--db, --log, ...)


@dataclass(frozen=True, slots=True)
class AnchorSource:
    """One place heads were kept, already read: a name for messages and its heads."""

    name: str
    heads: tuple[AnchorHead, ...]


def anchor_source(path: str | Path, node: str | None = None) -> AnchorSource:
    """Heads from a file (journal export, daemon log, anchor file, MQTT capture).
    Raises OSError if it cannot be read."""
    p = Path(path)
    with p.open(encoding="utf-8", errors="replace") as fh:
        return AnchorSource(str(p), tuple(parse_heads(fh, node)))


@dataclass(frozen=True, slots=True)
class SchemaChange:
    """A migration added columns to a research table and covered its rows again
    (daemon/store/schema_change.py); rows it found not matching were left as found."""

    seq: int
    at: str
    revision: str
    table: str
    added: tuple[str, ...]
    rows_covered: int
    not_covered: tuple[str, ...]  # keys ("id=12") of rows that did not match before it

    @classmethod
    def from_entry(cls, e: Entry) -> SchemaChange:
        p = e.payload if isinstance(e.payload, dict) else {}
        found = p.get("not_covered")
        missed: list[Any] = found if isinstance(found, list) else []
        return cls(
            seq=e.seq,
            at=e.at,
            revision=str(p.get("revision")),
            table=str(p.get("table")),
            added=tuple(str(c) for c in p.get("added") or ()),
            rows_covered=int(p.get("rows_covered") or 0),
            not_covered=tuple(str(m.get("key")) for m in missed if isinstance(m, dict)),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "revision": self.revision,
            "table": self.table,
            "added": list(self.added),
            "rows_covered": self.rows_covered,
            "not_covered": list(self.not_covered),
        }

    def line(self) -> str:
        added = ", ".join(f"{self.table}.{c}" for c in self.added)
        missed = (
            f"; not covered again, as they did not match the chain before it: "
            f"{self.table} {'; '.join(self.not_covered)}"
            if self.not_covered
            else ""
        )
        return (
            f"  schema: revision {self.revision} added {added} at entry {self.seq} "
            f"({self.at[:10]}); {self.rows_covered} rows covered again{missed}"
        )


@dataclass
class RecordReport:
    node: str | None
    chain: ChainCheck
    rows: RowsReport
    samples: SamplesReport
    anchors: list[AnchorReport] = field(default_factory=list)
    restores: list[Restore] = field(default_factory=list)
    sample_redactions: list[SampleRedaction] = field(default_factory=list)
    baseline_at: str | None = None  # when migration 0004 baselined the record
    #: columns added to a research table by a migration (``schema_change`` entries)
    schema_changes: list[SchemaChange] = field(default_factory=list)

    @property
    def tables_ok(self) -> bool:
        return self.rows.ok and self.samples.ok

    @property
    def anchors_ok(self) -> bool:
        return all(a.ok for a in self.anchors)

    @property
    def exit_code(self) -> VerifyExit:
        if not self.chain.ok:
            return VerifyExit.CHAIN
        if not self.tables_ok:
            return VerifyExit.TABLES
        if not self.anchors_ok:
            return VerifyExit.ANCHORS
        return VerifyExit.OK

    @property
    def ok(self) -> bool:
        return self.exit_code is VerifyExit.OK

    def as_dict(self) -> dict[str, Any]:
        head = self.chain.head
        return {
            "ok": self.ok,
            "exit_code": int(self.exit_code),
            "node": self.node,
            "head": None if head is None else {"seq": head.seq, "hash": head.hash},
            "chain": {
                "ok": self.chain.ok,
                "entries": self.chain.entries,
                "legacy_entries": self.chain.legacy_entries,
                "first_bad_seq": self.chain.first_bad_seq,
                "reason": self.chain.reason,
            },
            "tables": {
                "ok": self.tables_ok,
                "rows_verified": self.rows.verified,
                "rows_baselined": {t: n for t, (n, _) in self.rows.baselined.items()},
                "baseline_at": self.baseline_at,
                "samples": {
                    "batches": self.samples.batches,
                    "batches_ok": self.samples.batches_ok,
                    "rows_verified": self.samples.rows_ok,
                    "rows_baselined": self.samples.baselined_rows,
                    "batches_redacted": self.samples.batches_redacted,
                    "batches_converted": self.samples.batches_converted,
                    "batches_retained": self.samples.batches_retained,
                },
                "findings": [f.as_dict() for f in self.rows.findings + self.samples.findings],
            },
            "anchors": [a.as_dict() for a in self.anchors],
            "redactions": [r.as_dict() for r in self.rows.redactions],
            "sample_redactions": [r.as_dict() for r in self.sample_redactions],
            "schema_changes": [c.as_dict() for c in self.schema_changes],
            "restores": [
                {
                    "seq": r.seq,
                    "at": r.at,
                    "restored": {"seq": r.restored.seq, "hash": r.restored.hash},
                    "abandoned": {"seq": r.abandoned.seq, "hash": r.abandoned.hash},
                }
                for r in self.restores
            ],
        }

    def lines(self) -> list[str]:
        """The human-readable report, one line per fact."""
        out: list[str] = []
        c = self.chain
        head = "empty" if c.head is None else f"head {c.head.seq}:{c.head.hash[:16]}"
        if c.ok:
            legacy = (
                f", {c.legacy_entries} written before integrity (v1)" if c.legacy_entries else ""
            )
            out.append(f"chain: ok ({c.entries} entries{legacy}; node {self.node}; {head})")
        else:
            out.append(f"chain: BROKEN at entry {c.first_bad_seq}: {c.reason}")
        findings = self.rows.findings + self.samples.findings
        if findings:
            out.append(f"tables: {len(findings)} problem(s) against the chain")
            out.extend(f"  {f.line()}" for f in findings)
        else:
            counts = ", ".join(f"{t} {n}" for t, n in self.rows.verified.items())
            s = self.samples
            out.append(
                f"tables: ok (rows: {counts}; samples: {s.rows_ok} in {s.batches_ok} batches)"
            )
        baselined = {t: n for t, (n, _) in self.rows.baselined.items() if n}
        if baselined or self.samples.baselined_rows:
            what = ", ".join(f"{t} {n}" for t, n in baselined.items())
            if self.samples.baselined_rows:
                what += f"{', ' if what else ''}samples {self.samples.baselined_rows}"
            out.append(
                f"  baselined on {(self.baseline_at or '?')[:10]} (content as it stood then, "
                f"not proof of origin): {what}"
            )
        out.extend(c.line() for c in self.schema_changes)
        for r in self.rows.redactions:
            when = r.at[:10]
            out.append(
                f"  redacted: {r.table} {r.key} at entry {r.seq} ({when}) by {r.by}: {r.reason}"
            )
        for sr in self.sample_redactions:
            out.append(
                f"  redacted: {sr.rows} samples of procedure {sr.procedure_id} at entry {sr.seq} "
                f"by {sr.by}: {sr.reason}"
                + (f" ({self.samples.batches_redacted} batches no longer verifiable)")
            )
        if self.samples.batches_converted:
            out.append(
                f"  converted: {self.samples.batches_converted} sample batches of the old form "
                "moved to the compact tables by cryod migrate (checked before; samples_converted)"
            )
        if self.samples.batches_retained:
            out.append(
                f"  retention: {self.samples.batches_retained} sample batches outside procedures "
                "removed by the retention rule (samples_retention)"
            )
        for rs in self.restores:
            out.append(
                f"  restore: at entry {rs.seq} ({rs.at[:19]}Z) the database was rolled back to "
                f"entry {rs.restored.seq}; entries {rs.restored.seq + 1}..{rs.abandoned.seq} "
                "of the anchored history were abandoned"
            )
        if not self.anchors:
            out.append(
                "anchors: none given (a chain recomputed after an edit passes the checks above; "
                "give --log, --anchors or --head)"
            )
        for a in self.anchors:
            if a.heads == 0:
                out.append(f"anchors {a.source}: no heads of node {self.node} found")
                continue
            if a.ok:
                tail = ""
                if a.unanchored_tail is not None:
                    lo, hi = a.unanchored_tail
                    tail = f"; entries {lo}..{hi} after its newest head are not anchored by it"
                restored = (
                    f"; {a.explained_by_restore} of an abandoned history (restore)"
                    if a.explained_by_restore
                    else ""
                )
                out.append(f"anchors {a.source}: ok ({a.agreeing} heads agree{restored}{tail})")
            else:
                out.append(f"anchors {a.source}: DISAGREE")
                out.extend(f"  {p.problem} from entry {p.seq}: {p.detail}" for p in a.problems)
        return out


# ---- reading ----------------------------------------------------------------------------
def rows_as_stored(
    conn: Connection, specs: Sequence[TableSpec]
) -> Iterator[tuple[str, Mapping[str, Any], bytes | None]]:
    """``(table, {column: value}, salt)`` of every row of the tables ``specs`` describe,
    read with exactly those columns (what ``check_rows`` compares)."""
    salts: dict[tuple[str, str], bytes | None] = {}
    for tbl, row_key, salt in conn.exec_driver_sql("SELECT tbl, row_key, salt FROM row_salts"):
        try:
            salts[(str(tbl), str(row_key))] = salt_from_hex(str(salt))
        except EncodingError:
            salts[(str(tbl), str(row_key))] = None
    for spec in specs:
        cols = ", ".join(f'"{c}"' for c in spec.column_names)
        query = f'SELECT {cols} FROM "{spec.name}"'  # noqa: S608 - registry names
        for raw in conn.exec_driver_sql(query):
            values = {
                c: stored_value(kind, v) for (c, kind), v in zip(spec.columns, raw, strict=True)
            }
            key = key_text({k: values[k] for k in spec.key})
            yield spec.name, values, salts.get((spec.name, key))


def _samples(conn: Connection) -> Iterator[tuple[Any, ...]]:
    """The old table's rows (before revision 0006, or not yet converted)."""
    cols = ", ".join(c for c, _ in SAMPLE_COLUMNS_V1)
    for row in conn.exec_driver_sql(f"SELECT {cols} FROM samples ORDER BY id"):  # noqa: S608
        yield tuple(row)


def _polls(conn: Connection) -> Iterator[tuple[Any, ...]]:
    """The compact tables' polls (revision 0006), ascending id, a chunk at a time."""
    if not conn.exec_driver_sql(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sample_polls'"
    ).first():
        return
    last = 0
    while True:
        chunk = read_polls(conn, "id > ? AND id <= ?", (last, last + POLL_CHUNK))
        if not chunk:
            more = conn.exec_driver_sql(
                "SELECT min(id) FROM sample_polls WHERE id > ?", (last,)
            ).scalar()
            if more is None:
                return
            last = int(more) - 1
            continue
        yield from chunk
        last = chunk[-1].id


def _own_findings(entries: Sequence[Entry]) -> AnchorReport:
    """What the daemon itself recorded about its chain: entries appended by something
    else while it ran (``chain_foreign``), a database that disagreed with its anchor
    file at start (``anchor_mismatch``)."""
    report = AnchorReport(source="cryod's own record")
    for e in entries:
        p = e.payload if isinstance(e.payload, dict) else {}
        if e.kind == "chain_foreign":
            exp, found = p.get("expected") or {}, p.get("found") or {}
            first = int(exp.get("seq", 0)) + 1
            last = found.get("seq", "?")
            report.problems.append(
                AnchorProblem(
                    "foreign",
                    first,
                    f"entries {first}..{last} were appended by something other than cryod "
                    f"while it ran (noticed at entry {e.seq})",
                )
            )
        elif e.kind == "anchor_mismatch":
            report.problems.append(
                AnchorProblem(
                    "mismatch",
                    e.seq,
                    f"at start (entry {e.seq}) the database disagreed with its anchor file: "
                    f"{p.get('detail')}",
                )
            )
    return report


def check_record(
    db: DbSpec,
    anchors: Sequence[AnchorSource] = (),
    *,
    registry: Registry = RESEARCH,
) -> RecordReport:
    """Every check on one database (a path is opened read-only)."""
    engine, owned = engine_for(db)
    try:
        with engine.connect() as conn:
            entries = read_entries(conn)
            return _check(conn, entries, anchors, registry)
    finally:
        if owned:
            engine.dispose()


def _check(
    conn: Connection,
    entries: list[Entry],
    anchors: Sequence[AnchorSource],
    registry: Registry,
) -> RecordReport:
    chain = check_chain(entries)
    node = chain.node
    rows = check_rows(registry.specs, row_claims(entries), rows_as_stored(conn, registry.specs))
    redacted = sample_redactions(entries)
    claims = batch_claims(entries)
    old = check_samples(
        [c for c in claims if c.table == "samples"],
        _samples(conn),
        [r for r in redacted if r.table == "samples"],
        converted=id_ranges(entries, "samples_converted", "samples"),
    )
    compact = check_samples(
        [c for c in claims if c.table == "sample_polls"],
        _polls(conn),
        [r for r in redacted if r.table == "sample_polls"],
        retained=id_ranges(entries, "samples_retention", "sample_polls"),
    )
    samples = old.merge(compact)
    restored = restores(entries)
    hashes = {e.seq: e.hash for e in entries}
    last = Head(entries[-1].seq, entries[-1].hash) if entries else None
    reports = []
    for source in anchors:
        mine = [h for h in source.heads if h.node is None or h.node == node]
        reports.append(check_anchors(source.name, hashes, last, mine, restored))
    own = _own_findings(entries)
    if own.problems:
        reports.append(own)
    baseline_at = next((e.at for e in entries if e.kind == "baseline"), None)
    return RecordReport(
        node=node,
        chain=chain,
        rows=rows,
        samples=samples,
        anchors=reports,
        restores=restored,
        sample_redactions=redacted,
        baseline_at=baseline_at,
        schema_changes=[SchemaChange.from_entry(e) for e in entries if e.kind == "schema_change"],
    )
