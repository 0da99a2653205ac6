"""The pure checks: rows against their latest entry, batches, and a chain against its
anchors (rewritten, truncated, forked, restored)."""

from __future__ import annotations

from cryod import integrity as I
from cryod.integrity import AnchorHead, Head, Restore

SPEC = I.TableSpec("cycles", ("id",), (("id", I.Kind.INT), ("min_tip_c", I.Kind.REAL)))
SALT = bytes(range(16))


def claim(rid: int, values: dict[str, object], seq: int, op: str = "insert") -> I.RowClaim:
    typed = SPEC.typed(values)
    return I.RowClaim(
        "cycles",
        (("id", rid),),
        op,
        I.row_digest(SALT, SPEC.encode(values)),
        seq,
        "2026-03-01T09:00:00.000000Z",
        I.column_hints(SALT, typed),
    )


def test_rows_edited_deleted_inserted_and_redacted_are_told_apart() -> None:
    claims = {
        ("cycles", (("id", 1),)): claim(1, {"id": 1, "min_tip_c": -60.0}, 3),
        ("cycles", (("id", 2),)): claim(2, {"id": 2, "min_tip_c": -61.0}, 4),
        ("cycles", (("id", 4),)): claim(4, {"id": 4, "min_tip_c": -62.0}, 6, "redact"),
    }
    rows = [
        ("cycles", {"id": 1, "min_tip_c": -59.0}, SALT),  # edited
        ("cycles", {"id": 3, "min_tip_c": -1.0}, SALT),  # never seen
    ]
    report = I.check_rows([SPEC], claims, rows)
    got = {(f.key, f.problem, f.columns) for f in report.findings}
    assert got == {
        ("id=1", "edited", ("min_tip_c",)),
        ("id=2", "deleted", ()),
        ("id=3", "inserted", ()),
    }
    assert [r.key for r in report.redactions] == ["id=4"]


def _chain(n: int, tag: str = "") -> dict[int, str]:
    return {s: f"{tag}{s:064d}"[-64:] for s in range(1, n + 1)}


def heads(chain: dict[int, str], *seqs: int) -> list[AnchorHead]:
    return [AnchorHead(s, chain[s], "n", i) for i, s in enumerate(seqs, 1)]


def test_anchors_agree_and_the_tail_after_the_newest_is_named() -> None:
    c = _chain(10)
    r = I.check_anchors("file", c, Head(10, c[10]), heads(c, 2, 5, 8))
    assert r.ok
    assert r.agreeing == 3
    assert r.unanchored_tail == (9, 10)


def test_rewritten_chain_is_named_from_after_the_last_agreeing_anchor() -> None:
    good, forged = _chain(10), _chain(10)
    forged.update({s: f"{s:063d}x" for s in range(6, 11)})
    r = I.check_anchors("log", forged, Head(10, forged[10]), heads(good, 3, 5, 7, 9))
    assert [(p.problem, p.seq) for p in r.problems] == [("rewritten", 6)]


def test_truncated_tail_is_named() -> None:
    c = _chain(10)
    short = {s: h for s, h in c.items() if s <= 6}
    r = I.check_anchors("mqtt", short, Head(6, c[6]), heads(c, 4, 9))
    assert [(p.problem, p.seq) for p in r.problems] == [("truncated", 7)]


def test_two_histories_anchored_is_a_fork_unless_a_restore_was_recorded() -> None:
    old, new = _chain(8), _chain(8)
    new.update({s: f"{s:063d}y" for s in range(6, 9)})
    anchored = [*heads(old, 5, 7), AnchorHead(7, new[7], "n", 3)]
    r = I.check_anchors("file", new, Head(8, new[8]), anchored)
    assert [(p.problem, p.seq) for p in r.problems] == [("forked", 7)]
    restore = Restore(6, "2026-03-01T10:00:00.000000Z", Head(5, old[5]), Head(7, old[7]))
    r = I.check_anchors("file", new, Head(8, new[8]), anchored, [restore])
    assert r.ok
    assert r.explained_by_restore == 1


def test_parse_heads_reads_the_journal_the_anchor_file_and_mqtt() -> None:
    h = "ab" * 32
    lines = [
        f'<6>{{"event": "audit_head", "seq": 3, "hash": "{h}", "node": "n"}}',
        f'{{"anchor": "cryod.anchor/1", "node": "n", "seq": 4, "hash": "{h}"}}',
        f'cryod/v1/s/n/audit/head {{"schema": "cryod.mqtt/1", "seq": 99, "chain_seq": 5,'
        f' "chain_hash": "{h}", "node": "n"}}',
        f'{{"anchor": "cryod.anchor/1", "node": "other", "seq": 6, "hash": "{h}"}}',
        '{"event": "started"}',
        "garbage",
    ]
    assert [a.seq for a in I.parse_heads(lines, "n")] == [3, 4, 5]
