"""Retention: samples logged outside a procedure are removed after ``sample_retention_h``.

An idle daemon still logs every poll (the console's state between procedures is
part of the record while it is fresh); kept forever that is most of the
database. Samples of a procedure are never removed automatically (only a
redaction removes them).

``retention_step`` removes a few whole sample batches (chain entries over
``sample_polls``) whose polls all belong to no procedure and are older than the
cut, in the caller's transaction, with one ``samples_retention`` entry first:
``{"table": "sample_polls", "ranges": [[first, last]...], "polls": n,
"before_utc": cut, "keep_h": h, "cursor": seq}``. The 0006 guard lets a poll go
only right after such an entry, and only if it has no procedure and is older
than ``before_utc``; ``verify`` counts those batches apart (``batches_retained``),
not as deleted. A batch that holds a procedure's poll is kept whole.

The service runs one step every ``INTERVAL_S`` through the writer (off the poll
path, in the storage thread); ``cursor`` (the last samples entry looked at) comes
back in each step's result and in the entry, so a restart goes on from there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from . import chain

__all__ = ["INTERVAL_S", "MAX_BATCHES", "RetentionStep", "retention_step", "saved_cursor"]

INTERVAL_S = 5.0  # between steps
MAX_BATCHES = 50  # batches removed at most per step (a batch is a second of polls)
SCAN_ENTRIES = 500  # chain entries looked at per step


@dataclass(frozen=True, slots=True)
class RetentionStep:
    cursor: int  # the last samples entry looked at: the next step starts after it
    polls: int  # polls removed
    ranges: tuple[tuple[int, int], ...]


def saved_cursor(session: Session) -> int:
    """Where the last ``samples_retention`` entry left off (0: from the start)."""
    row = (
        session.connection()
        .exec_driver_sql(
            "SELECT payload FROM audit WHERE kind = 'samples_retention' ORDER BY seq DESC LIMIT 1"
        )
        .first()
    )
    if row is None:
        return 0
    cursor = json.loads(row[0]).get("cursor")
    return cursor if isinstance(cursor, int) and not isinstance(cursor, bool) else 0


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a == out[-1][1] + 1:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def retention_step(
    session: Session,
    *,
    now_utc: float,
    keep_h: float,
    cursor: int,
    max_batches: int = MAX_BATCHES,
) -> RetentionStep:
    """Remove up to ``max_batches`` batches of samples outside procedures older than
    ``keep_h`` hours before ``now_utc`` (epoch s), from the entry after ``cursor``."""
    conn = session.connection()
    cut = now_utc - keep_h * 3600.0
    chosen: list[tuple[int, int]] = []
    polls = 0
    for seq, payload in conn.exec_driver_sql(
        "SELECT seq, payload FROM audit WHERE kind = 'samples' AND seq > ? ORDER BY seq LIMIT ?",
        (cursor, SCAN_ENTRIES),
    ).all():
        p: dict[str, Any] = json.loads(payload)
        first, last = p.get("first"), p.get("last")
        if (
            p.get("table") != "sample_polls"
            or not isinstance(first, int)
            or not isinstance(last, int)
        ):
            cursor = seq
            continue
        n, in_procedure, newest = conn.exec_driver_sql(
            "SELECT count(*), count(procedure_id), max(t_utc) FROM sample_polls"
            " WHERE id BETWEEN ? AND ?",
            (first, last),
        ).one()
        if n and not in_procedure and newest >= cut:
            break  # not old enough yet; the batches after it are newer
        cursor = seq
        if n == 0 or in_procedure or n != p.get("rows"):
            continue  # gone already, a procedure's (kept whole), or not whole
        chosen.append((first, last))
        polls += n
        if len(chosen) >= max_batches:
            break
    if not chosen:
        return RetentionStep(cursor, 0, ())
    ranges = _merge(chosen)
    chain.append(
        conn,
        "samples_retention",
        {
            "table": "sample_polls",
            "ranges": [list(r) for r in ranges],
            "polls": polls,
            "before_utc": cut,
            "keep_h": keep_h,
            "cursor": cursor,
        },
        info=session.info,
    )
    for a, b in ranges:
        for child in ("sample_probes", "sample_states"):
            chain.execute(
                conn,
                f"DELETE FROM {child} WHERE poll_id BETWEEN ? AND ?",  # noqa: S608 - ours
                (a, b),
            )
        chain.execute(conn, "DELETE FROM sample_polls WHERE id BETWEEN ? AND ?", (a, b))
    return RetentionStep(cursor, polls, tuple(ranges))
