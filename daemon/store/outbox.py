"""Alarm and cycle events waiting for MQTT delivery (issue 6: at-least-once, in order).

``add`` runs inside the transaction that records the event, so an event is in
the outbox exactly when its row is in the log. The publisher reads
``pending`` in id order, publishes, then calls ``mark_delivered``; the id is
the de-duplication key subscribers see. Payloads never carry a patient
reference: the procedure is identified by its id only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from .models import OutboxItemRow, OutboxKind, Procedure, utcnow
from .writer import Writer

FORBIDDEN_KEYS = frozenset({"patient_ref"})


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    kind: OutboxKind
    payload: dict[str, Any]


def _check_payload(value: Any, path: str = "payload") -> None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            if key in FORBIDDEN_KEYS:
                raise ValueError(f"{path}.{key}: patient references never go to MQTT")
            _check_payload(inner, f"{path}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, inner in enumerate(value):
            _check_payload(inner, f"{path}[{i}]")


def add(session: Session, kind: OutboxKind | str, payload: Mapping[str, Any]) -> int:
    """Queue an event in the caller's transaction; returns its id."""
    _check_payload(payload)
    result = session.execute(
        insert(OutboxItemRow)
        .values(kind=OutboxKind(kind).value, payload=dict(payload), created_at=utcnow())
        .returning(OutboxItemRow.id)
    )
    return int(result.scalar_one())


def pending(session: Session, limit: int = 100, console: str | None = None) -> list[OutboxItem]:
    """Undelivered events in id order; with ``console``, only that console's (each
    console's publisher delivers on its own topics)."""
    if limit < 1:
        raise ValueError("limit must be >= 1")
    rows = session.execute(
        select(OutboxItemRow.id, OutboxItemRow.kind, OutboxItemRow.payload)
        .where(OutboxItemRow.delivered_at.is_(None))
        .order_by(OutboxItemRow.id)
        .limit(limit if console is None else limit * 20)
    ).all()
    items = [OutboxItem(int(r[0]), OutboxKind(r[1]), dict(r[2])) for r in rows]
    if console is None:
        return items
    owners: dict[int, str | None] = {}

    def owner(item: OutboxItem) -> str | None:
        if "console" in item.payload:
            return str(item.payload["console"])
        pid = item.payload.get("procedure_id")
        if pid is None:
            return None
        if pid not in owners:
            owners[pid] = session.scalar(select(Procedure.console).where(Procedure.id == pid))
        return owners[pid]

    return [i for i in items if owner(i) == console][:limit]


def mark_delivered(session: Session, ids: Iterable[int]) -> int:
    """Mark events delivered; returns how many were newly marked."""
    wanted = sorted({int(i) for i in ids})
    if not wanted:
        return 0
    result = session.execute(
        update(OutboxItemRow)
        .where(OutboxItemRow.id.in_(wanted), OutboxItemRow.delivered_at.is_(None))
        .values(delivered_at=utcnow())
    )
    return int(getattr(result, "rowcount", 0) or 0)


class Outbox:
    """The outbox from asyncio; every call goes through the writer's thread."""

    def __init__(self, writer: Writer, console: str | None = None) -> None:
        self.writer = writer
        self.console = console

    async def add(self, kind: OutboxKind | str, payload: Mapping[str, Any]) -> int:
        return await self.writer.commit_now(lambda s: add(s, kind, payload), label="outbox_add")

    async def pending(self, limit: int = 100) -> list[OutboxItem]:
        console = self.console
        return await self.writer.commit_now(
            lambda s: pending(s, limit, console), label="outbox_pending"
        )

    async def mark_delivered(self, ids: Iterable[int]) -> None:
        wanted = list(ids)
        await self.writer.commit_now(lambda s: mark_delivered(s, wanted), label="outbox_delivered")
