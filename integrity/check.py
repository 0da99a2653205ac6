"""Pure verification: the tables as they stand against the chain's latest word on
each row, sample batches against their entries, and the chain against anchors.

The caller reads (the store from SQLite, a collector from PostgreSQL); these
functions only compare. Chain entries that cover data:

- ``kind = "row"``: ``{"table", "key": {column: value}, "op", "digest",
  "encoding", "columns"?, "by"?, "reason"?}`` with ``op`` one of ``insert``,
  ``update``, ``baseline`` (recorded by a migration: the row's content then,
  not its origin), ``schema`` (a migration added a column to the table: the
  row, found to match its previous entry, covered again with the new column
  set; it keeps the previous entry's origin) and ``redact`` (content and salt
  erased, digest kept).
- ``kind = "samples"``: ``{"table": "samples", "first", "last", "rows",
  "digest", "encoding", "op"}`` (``op`` ``insert`` or ``baseline``).
- ``kind = "restore"``: ``{"restored": {"seq", "hash"}, "abandoned": {"seq",
  "hash"}}``, written when the daemon finds its database behind its anchors.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .canonical import EncodingError
from .chain import Entry, Head
from .digests import batch_digest, column_hints, row_digest
from .samples import POLL_COLUMNS_V2, SAMPLES_V1, encode_sample_batch
from .tables import TableSpec

__all__ = [
    "AnchorHead",
    "AnchorProblem",
    "AnchorReport",
    "BatchClaim",
    "Finding",
    "Redaction",
    "Restore",
    "RowClaim",
    "RowsReport",
    "SampleRedaction",
    "SamplesReport",
    "batch_claims",
    "check_anchors",
    "check_rows",
    "check_samples",
    "id_ranges",
    "parse_heads",
    "restores",
    "row_claims",
    "sample_redactions",
]

RowId = tuple[str, tuple[tuple[str, Any], ...]]
ROW_OPS = frozenset({"insert", "update", "baseline", "schema", "redact"})


def row_id(table: str, key: Mapping[str, Any]) -> RowId:
    return table, tuple(sorted(key.items()))


def key_text(rid: RowId) -> str:
    return ", ".join(f"{k}={v}" for k, v in rid[1])


# ---- claims: what the chain says ------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RowClaim:
    table: str
    key: tuple[tuple[str, Any], ...]
    op: str
    digest: str
    seq: int
    at: str
    hints: Mapping[str, str] | None = None
    by: str | None = None
    reason: str | None = None
    #: how the chain first vouched for the content: the op and time of this entry, or
    #: for a ``schema`` entry those of the entry it follows (a baselined row stays
    #: "baselined on DATE" after a column is added)
    origin: str = ""
    origin_at: str = ""

    def __post_init__(self) -> None:
        if not self.origin:
            object.__setattr__(self, "origin", self.op)
        if not self.origin_at:
            object.__setattr__(self, "origin_at", self.at)


def _is_key(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(v, (int, str)) and not isinstance(v, bool) for v in value.values())
    )


def row_claims(entries: Iterable[Entry]) -> dict[RowId, RowClaim]:
    """The latest ``row`` entry for every row (later entries win)."""
    out: dict[RowId, RowClaim] = {}
    for e in entries:
        if e.kind != "row" or not isinstance(e.payload, dict):
            continue
        p = e.payload
        table, key, op, digest = p.get("table"), p.get("key"), p.get("op"), p.get("digest")
        if not (isinstance(table, str) and isinstance(key, dict) and _is_key(key)):
            continue
        if op not in ROW_OPS or not isinstance(digest, str):
            continue
        hints = p.get("columns")
        rid = row_id(table, key)
        origin, origin_at = str(op), e.at
        before = out.get(rid)
        if op == "schema" and before is not None:
            origin, origin_at = before.origin, before.origin_at
        out[rid] = RowClaim(
            table=table,
            key=rid[1],
            op=str(op),
            digest=digest,
            seq=e.seq,
            at=e.at,
            hints=hints if isinstance(hints, dict) else None,
            by=p.get("by") if isinstance(p.get("by"), str) else None,
            reason=p.get("reason") if isinstance(p.get("reason"), str) else None,
            origin=origin,
            origin_at=origin_at,
        )
    return out


@dataclass(frozen=True, slots=True)
class BatchClaim:
    seq: int
    at: str
    first: int
    last: int
    rows: int
    digest: str
    encoding: str
    op: str
    table: str = "samples"  # "samples" (cryod.samples/1) or "sample_polls" (/2)


def batch_claims(entries: Iterable[Entry]) -> list[BatchClaim]:
    out = []
    for e in entries:
        if e.kind != "samples" or not isinstance(e.payload, dict):
            continue
        p = e.payload
        first, last, rows = p.get("first"), p.get("last"), p.get("rows")
        if not (isinstance(first, int) and isinstance(last, int) and isinstance(rows, int)):
            continue
        if any(isinstance(x, bool) for x in (first, last, rows)):
            continue
        out.append(
            BatchClaim(
                seq=e.seq,
                at=e.at,
                first=first,
                last=last,
                rows=rows,
                digest=str(p.get("digest")),
                encoding=str(p.get("encoding", SAMPLES_V1)),
                op=str(p.get("op", "insert")),
                table=str(p.get("table", "samples")),
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class Restore:
    """A restore or rollback the daemon recorded (the entry at ``seq``)."""

    seq: int
    at: str
    restored: Head
    abandoned: Head

    def explains(self, seq: int) -> bool:
        """An anchor of the abandoned history (after the restored head, up to the
        abandoned one) disagrees with the chain by design."""
        return self.restored.seq < seq <= self.abandoned.seq


def _head(value: Any) -> Head | None:
    if (
        isinstance(value, dict)
        and isinstance(value.get("seq"), int)
        and isinstance(value.get("hash"), str)
    ):
        return Head(int(value["seq"]), str(value["hash"]))
    return None


def restores(entries: Iterable[Entry]) -> list[Restore]:
    out = []
    for e in entries:
        if e.kind != "restore" or not isinstance(e.payload, dict):
            continue
        restored, abandoned = _head(e.payload.get("restored")), _head(e.payload.get("abandoned"))
        if restored is not None and abandoned is not None:
            out.append(Restore(e.seq, e.at, restored, abandoned))
    return out


# ---- rows -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Finding:
    check: str  # "rows" or "samples"
    problem: str  # edited | deleted | inserted
    table: str
    key: str  # "id=12", or the sample ids "id 1..500"
    detail: str
    columns: tuple[str, ...] = ()
    seq: int | None = None  # the chain entry that last covered it

    def as_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "problem": self.problem,
            "table": self.table,
            "key": self.key,
            "columns": list(self.columns),
            "seq": self.seq,
            "detail": self.detail,
        }

    def line(self) -> str:
        cols = f" column {', '.join(self.columns)}" if self.columns else ""
        return f"{self.table} {self.key}{cols}: {self.problem}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Redaction:
    table: str
    key: str
    seq: int
    at: str
    by: str | None
    reason: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "key": self.key,
            "seq": self.seq,
            "at": self.at,
            "by": self.by,
            "reason": self.reason,
        }


@dataclass
class RowsReport:
    findings: list[Finding] = field(default_factory=list)
    verified: dict[str, int] = field(default_factory=dict)  # table -> rows that match
    baselined: dict[str, tuple[int, str]] = field(default_factory=dict)  # (rows, earliest at)
    redactions: list[Redaction] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


def _compare(
    spec: TableSpec, claim: RowClaim, values: Mapping[str, Any], salt: bytes | None
) -> tuple[str | None, str, tuple[str, ...]]:
    """(problem or None, detail, columns) for one row present in its table."""
    if claim.op == "redact":
        return "inserted", f"redacted at entry {claim.seq}, yet the row is present", ()
    if salt is None:
        return "edited", f"its salt is missing (last covered by entry {claim.seq})", ()
    typed = spec.typed(values)
    try:
        digest = row_digest(salt, spec.encode(values))
    except EncodingError as exc:
        col = (exc.column,) if exc.column else ()
        return "edited", f"{exc.reason} (last covered by entry {claim.seq})", col
    if digest == claim.digest:
        return None, "", ()
    cols: tuple[str, ...] = ()
    if claim.hints is not None:
        now = column_hints(salt, typed)
        cols = tuple(
            c for c in spec.column_names if c in claim.hints and now.get(c) != claim.hints[c]
        )
        # a column the entry did not know (added to the table later) is named only when
        # it holds a value: null is what the column was added with
        cols += tuple(
            c for c in spec.column_names if c not in claim.hints and values.get(c) is not None
        )
    return "edited", f"differs from entry {claim.seq} ({claim.op}, {claim.at})", cols


def check_rows(
    specs: Sequence[TableSpec],
    claims: Mapping[RowId, RowClaim],
    rows: Iterable[tuple[str, Mapping[str, Any], bytes | None]],
) -> RowsReport:
    """Every row as it stands (``(table, {column: value}, salt)``) against the
    latest chain entry for it; then every row the chain has and the table has not."""
    by_name = {s.name: s for s in specs}
    report = RowsReport(verified={s.name: 0 for s in specs})
    seen: set[RowId] = set()
    for table, values, salt in rows:
        spec = by_name[table]
        rid = row_id(table, spec.key_map(spec.key_of(values)))
        seen.add(rid)
        claim = claims.get(rid)
        key = key_text(rid)
        if claim is None:
            report.findings.append(
                Finding("rows", "inserted", table, key, "a row the chain never saw")
            )
            continue

        problem, detail, columns = _compare(spec, claim, values, salt)
        if problem is not None:
            report.findings.append(Finding("rows", problem, table, key, detail, columns, claim.seq))
            continue
        report.verified[table] = report.verified.get(table, 0) + 1
        if claim.origin == "baseline":
            n, first = report.baselined.get(table, (0, claim.origin_at))
            report.baselined[table] = (n + 1, min(first, claim.origin_at))
    for rid, claim in claims.items():
        if claim.table not in by_name:
            continue
        if claim.op == "redact":
            report.redactions.append(
                Redaction(claim.table, key_text(rid), claim.seq, claim.at, claim.by, claim.reason)
            )
        elif rid not in seen:
            report.findings.append(
                Finding(
                    "rows",
                    "deleted",
                    claim.table,
                    key_text(rid),
                    f"the chain has it (entry {claim.seq}, {claim.op}), the table does not",
                    seq=claim.seq,
                )
            )
    report.findings.sort(key=lambda f: (f.table, f.key))
    return report


# ---- samples ----------------------------------------------------------------------------
@dataclass
class SamplesReport:
    findings: list[Finding] = field(default_factory=list)
    batches: int = 0
    batches_ok: int = 0
    rows_ok: int = 0
    baselined_rows: int = 0
    baselined_at: str | None = None
    batches_redacted: int = 0  # overlap a redaction: their digest can no longer match
    batches_converted: int = 0  # cryod.samples/1 batches converted to /2 (samples_converted)
    batches_retained: int = 0  # removed whole by the retention rule (samples_retention)

    def merge(self, other: SamplesReport) -> SamplesReport:
        """Both reports as one (the old table's and the compact tables')."""
        at = [a for a in (self.baselined_at, other.baselined_at) if a is not None]
        return SamplesReport(
            findings=self.findings + other.findings,
            batches=self.batches + other.batches,
            batches_ok=self.batches_ok + other.batches_ok,
            rows_ok=self.rows_ok + other.rows_ok,
            baselined_rows=self.baselined_rows + other.baselined_rows,
            baselined_at=min(at) if at else None,
            batches_redacted=self.batches_redacted + other.batches_redacted,
            batches_converted=self.batches_converted + other.batches_converted,
            batches_retained=self.batches_retained + other.batches_retained,
        )

    @property
    def ok(self) -> bool:
        return not self.findings


def _probes_of(row: Sequence[Any]) -> list[Any]:
    """A v1 row's probe, or a v2 poll's probes (console level 0 included)."""
    if len(row) == len(POLL_COLUMNS_V2):
        nested = row[14] if isinstance(row[14], (list, tuple)) else ()
        return [0, *(p[0] for p in nested if isinstance(p, (list, tuple)) and p)]
    return [row[5]]


def _describe(rows: Sequence[Sequence[Any]]) -> str:
    """Console(s), probes and time range of sample rows (SAMPLE_COLUMNS_V1 order) or
    polls (POLL_COLUMNS_V2 order)."""
    if not rows:
        return "no rows left"
    consoles = sorted({str(r[2]) for r in rows})
    probes = sorted({p for r in rows for p in _probes_of(r) if isinstance(p, int)})
    times = [r[3] for r in rows if isinstance(r[3], (int, float))]
    span = f", t_utc {min(times):.3f}..{max(times):.3f}" if times else ""
    return f"console {','.join(consoles)}, probes {probes}{span}"


@dataclass(frozen=True, slots=True)
class SampleRedaction:
    """Samples of a redacted procedure, erased (``kind = "samples_redacted"``)."""

    seq: int
    at: str
    procedure_id: int | None
    ranges: tuple[tuple[int, int], ...]
    rows: int
    by: str | None
    reason: str | None
    table: str = "samples"  # whose ids ``ranges`` are: "samples" or "sample_polls"

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "seq": self.seq,
            "at": self.at,
            "procedure_id": self.procedure_id,
            "ranges": [list(r) for r in self.ranges],
            "rows": self.rows,
            "by": self.by,
            "reason": self.reason,
        }


def sample_redactions(entries: Iterable[Entry]) -> list[SampleRedaction]:
    out = []
    for e in entries:
        if e.kind != "samples_redacted" or not isinstance(e.payload, dict):
            continue
        p = e.payload
        ranges = tuple(
            (int(r[0]), int(r[1]))
            for r in p.get("ranges") or ()
            if isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) for x in r)
        )
        pid, rows = p.get("procedure_id"), p.get("rows")
        by, why = p.get("by"), p.get("reason")
        out.append(
            SampleRedaction(
                seq=e.seq,
                at=e.at,
                procedure_id=pid if isinstance(pid, int) else None,
                ranges=ranges,
                rows=rows if isinstance(rows, int) else 0,
                by=by if isinstance(by, str) else None,
                reason=why if isinstance(why, str) else None,
                table=str(p.get("table", "samples")),
            )
        )
    return out


def id_ranges(entries: Iterable[Entry], kind: str, table: str) -> list[tuple[int, int]]:
    """The id ranges entries of ``kind`` (``samples_converted``: the old rows,
    ``samples_retention``: the polls) say they removed from ``table``."""
    out: list[tuple[int, int]] = []
    for e in entries:
        if e.kind != kind or not isinstance(e.payload, dict):
            continue
        if e.payload.get("table", "samples") != table:
            continue
        for r in e.payload.get("ranges") or ():
            if (
                isinstance(r, list)
                and len(r) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) for x in r)
            ):
                out.append((r[0], r[1]))
    return out


def check_samples(
    claims: Sequence[BatchClaim],
    rows: Iterable[Sequence[Any]],
    redacted: Sequence[SampleRedaction] = (),
    *,
    converted: Sequence[tuple[int, int]] = (),
    retained: Sequence[tuple[int, int]] = (),
) -> SamplesReport:
    """Re-hash every batch from the rows as they stand (ascending id, in the
    columns of the batch's encoding); rows no batch covers are reported too.
    A batch that held samples of a redacted procedure cannot match its digest
    any more: it is counted apart, not reported. So is a batch removed whole by
    a conversion (``converted``: ranges of old ids a ``samples_converted``
    entry names) or by the retention rule (``retained``); one of those with rows
    left is checked as any other. ``claims``, ``rows`` and the ranges are of one
    table."""
    report = SamplesReport(batches=len(claims))
    erased = [r for red in redacted for r in red.ranges]
    ordered = sorted(claims, key=lambda c: (c.first, c.seq))
    for a, b in itertools.pairwise(ordered):
        if b.first <= a.last:
            report.findings.append(
                Finding(
                    "samples",
                    "inserted",
                    "samples",
                    f"id {b.first}..{a.last}",
                    f"entries {a.seq} and {b.seq} both claim these ids",
                    seq=b.seq,
                )
            )
    i = 0
    buf: list[Sequence[Any]] = []
    stray: list[Sequence[Any]] = []

    def flush_stray() -> None:
        if stray:
            report.findings.append(
                Finding(
                    "samples",
                    "inserted",
                    "samples",
                    f"id {stray[0][0]}..{stray[-1][0]}",
                    f"{len(stray)} sample(s) no chain entry covers ({_describe(stray)})",
                )
            )
            stray.clear()

    def close(claim: BatchClaim) -> None:
        if any(a <= claim.last and claim.first <= b for a, b in erased):
            report.batches_redacted += 1
            return
        if not buf and any(a <= claim.first and claim.last <= b for a, b in converted):
            report.batches_converted += 1
            return
        if not buf and any(a <= claim.first and claim.last <= b for a, b in retained):
            report.batches_retained += 1
            return
        where = f"entry {claim.seq}, {claim.at}"
        key = f"id {claim.first}..{claim.last}"
        try:
            digest = batch_digest(encode_sample_batch(buf, claim.encoding))
        except EncodingError as exc:
            col = (exc.column,) if exc.column else ()
            report.findings.append(
                Finding("samples", "edited", "samples", key, f"{exc.reason} ({where})", col)
            )
            return
        if len(buf) < claim.rows:
            problem, what = "deleted", f"{claim.rows - len(buf)} of {claim.rows} rows missing"
        elif len(buf) > claim.rows:
            problem, what = "inserted", f"{len(buf) - claim.rows} rows more than {claim.rows}"
        elif digest != claim.digest:
            problem, what = "edited", "rows edited or time-shifted"
        else:
            report.batches_ok += 1
            report.rows_ok += len(buf)
            if claim.op == "baseline":
                report.baselined_rows += len(buf)
                if report.baselined_at is None or claim.at < report.baselined_at:
                    report.baselined_at = claim.at
            return
        report.findings.append(
            Finding(
                "samples",
                problem,
                "samples",
                key,
                f"{what} ({_describe(buf)}; {where})",
                seq=claim.seq,
            )
        )

    for row in rows:
        rid = row[0]
        while i < len(ordered) and isinstance(rid, int) and rid > ordered[i].last:
            close(ordered[i])
            buf = []
            i += 1
        if i < len(ordered) and isinstance(rid, int) and rid >= ordered[i].first:
            flush_stray()
            buf.append(row)
        else:
            stray.append(row)
    flush_stray()
    while i < len(ordered):
        close(ordered[i])
        buf = []
        i += 1
    return report


# ---- anchors ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AnchorHead:
    """A head kept outside the database: by the journal, an anchor file or MQTT."""

    seq: int
    hash: str
    node: str | None = None
    line: int = 0  # where in its source (1-based), for messages and order


def parse_heads(lines: Iterable[str], node: str | None = None) -> list[AnchorHead]:
    """Heads in a journal export, an anchor file or a capture of MQTT messages.

    A line counts if it holds a JSON object (after any prefix: a journald
    ``<6>``, an MQTT topic) that is a journal ``audit_head`` event
    (``seq``/``hash``), an anchor-file line (``anchor``, ``seq``/``hash``) or
    an MQTT head (``chain_seq``/``chain_hash``). With ``node``, heads naming
    another node are left out (a shared file may hold several nodes).
    """
    out: list[AnchorHead] = []
    for n, raw in enumerate(lines, 1):
        start = raw.find("{")
        if start < 0:
            continue
        try:
            obj = json.loads(raw[start:])
        except ValueError:
            continue
        if not isinstance(obj, dict):
            continue
        if "chain_seq" in obj:
            seq, digest = obj.get("chain_seq"), obj.get("chain_hash")
        elif obj.get("event") == "audit_head" or "anchor" in obj:
            seq, digest = obj.get("seq"), obj.get("hash")
        else:
            continue
        if not (isinstance(seq, int) and not isinstance(seq, bool) and isinstance(digest, str)):
            continue
        who = obj.get("node")
        who = who if isinstance(who, str) else None
        if node is not None and who is not None and who != node:
            continue
        out.append(AnchorHead(seq, digest, who, n))
    return out


@dataclass(frozen=True, slots=True)
class AnchorProblem:
    problem: str  # rewritten | truncated | forked
    seq: int  # the first entry concerned
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"problem": self.problem, "seq": self.seq, "detail": self.detail}


@dataclass
class AnchorReport:
    source: str
    heads: int = 0  # heads of this node in the source
    agreeing: int = 0
    newest_agreeing: int | None = None
    problems: list[AnchorProblem] = field(default_factory=list)
    explained_by_restore: int = 0  # anchors of an abandoned (restored-over) history
    unanchored_tail: tuple[int, int] | None = None  # entries after the newest agreeing head

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad_seq(self) -> int | None:
        return min((p.seq for p in self.problems), default=None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "ok": self.ok,
            "heads": self.heads,
            "agreeing": self.agreeing,
            "newest_agreeing_seq": self.newest_agreeing,
            "explained_by_restore": self.explained_by_restore,
            "unanchored_tail": None if self.unanchored_tail is None else list(self.unanchored_tail),
            "problems": [p.as_dict() for p in self.problems],
        }


def check_anchors(
    source: str,
    chain: Mapping[int, str],
    head: Head | None,
    anchors: Sequence[AnchorHead],
    restored: Sequence[Restore] = (),
) -> AnchorReport:
    """The chain (``seq -> hash``, up to ``head``) against one source of anchors.

    - an anchored head the chain holds with another hash: entries were
      **rewritten** and the chain recomputed (named from just after the newest
      anchor that still agrees);
    - the source holding two hashes for one seq: two histories were anchored,
      the chain was **forked** (an old copy restored and written on) - unless
      the chain records that restore;
    - an anchored head beyond the chain's end: the tail was **truncated**.
    """
    report = AnchorReport(source=source, heads=len(anchors))
    last = 0 if head is None else head.seq
    by_seq: dict[int, list[AnchorHead]] = {}
    for a in anchors:
        hashes = by_seq.setdefault(a.seq, [])
        if all(h.hash != a.hash for h in hashes):
            hashes.append(a)
    agreeing: list[int] = []
    disagree: list[tuple[int, AnchorHead]] = []
    for seq in sorted(by_seq):
        versions = by_seq[seq]
        mine = chain.get(seq)
        for a in versions:
            if mine is not None and a.hash == mine:
                agreeing.append(seq)
            elif any(r.explains(seq) for r in restored):
                report.explained_by_restore += 1
            else:
                disagree.append((seq, a))
        if len(versions) > 1 and not any(r.explains(seq) for r in restored):
            report.problems.append(
                AnchorProblem(
                    "forked",
                    seq,
                    f"{source} anchored entry {seq} with {len(versions)} different hashes "
                    "(lines " + ", ".join(str(a.line) for a in versions) + "): "
                    "two histories were written (an old copy restored and written on?)",
                )
            )
    report.agreeing = len(agreeing)
    report.newest_agreeing = max(agreeing, default=None)
    for seq, a in disagree:
        if any(p.seq == seq and p.problem == "forked" for p in report.problems):
            continue
        below = [s for s in agreeing if s < seq]
        good = max(below, default=0)
        if seq > last:
            report.problems.append(
                AnchorProblem(
                    "truncated",
                    last + 1,
                    f"{source} anchored entry {seq} (line {a.line}) but the chain ends at "
                    f"{last}: entries {last + 1}..{seq} were cut off",
                )
            )
        else:
            report.problems.append(
                AnchorProblem(
                    "rewritten",
                    good + 1,
                    f"entry {seq} differs from the head {source} anchored (line {a.line}); "
                    f"entries {good + 1}..{seq} were rewritten and the chain recomputed"
                    + (f" (entry {good} still agrees)" if good else ""),
                )
            )
    # one problem per kind and first seq is enough to read
    uniq: dict[tuple[str, int], AnchorProblem] = {}
    for p in report.problems:
        uniq.setdefault((p.problem, p.seq), p)
    report.problems = sorted(uniq.values(), key=lambda p: (p.seq, p.problem))
    newest = report.newest_agreeing or 0
    if report.ok and newest < last:
        report.unanchored_tail = (newest + 1, last)
    return report
