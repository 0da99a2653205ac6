"""The writer and the chain: every commit reports its head with what made it, and a
chain moved by someone else between two commits is noticed."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from cryod.daemon.store import records
from cryod.daemon.store.chain import ChainedSession, append
from cryod.daemon.store.writer import SampleRow, Writer
from cryod.integrity import Head

from .conftest import procedure_meta


async def test_heads_are_reported_with_what_made_them(engine: Engine) -> None:
    seen: list[tuple[int, str]] = []
    w = Writer(engine, on_head=lambda h, label: seen.append((h.seq, label)))
    await w.start()
    try:
        await records.ProcedureLog(w).open_procedure(procedure_meta())
        w.submit_samples([SampleRow("c1", 1.0, 1.0, 1, "tip_c", -3.0, "valid")] * 3)
        await w.flush()
    finally:
        await w.aclose()
    assert [label for _, label in seen] == ["procedure_open", "samples"]
    assert seen[1][0] == seen[0][0] + 1


async def test_entries_appended_by_someone_else_are_noticed(engine: Engine, db_path: Path) -> None:
    foreign: list[tuple[Head | None, Head | None]] = []
    w = Writer(engine, on_foreign_head=lambda e, f: foreign.append((e, f)))
    await w.start()
    try:
        log = records.ProcedureLog(w)
        await log.record_event("state", {"state": "idle"})
        assert foreign == []
        mine = w.audit_head
        with ChainedSession(engine) as s, s.begin():  # a second writer on the same file
            theirs = append(s.connection(), "state", {"state": "forged"})
        await log.record_event("state", {"state": "idle"})
    finally:
        await w.aclose()
    assert foreign == [(mine, theirs)]
