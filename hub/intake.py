"""The ingest shell's transaction: a batch of record messages in, decisions committed.

For each message of a batch, in arrival order: ``parse_topic`` and
``parse_message`` (refused bytes are ``ingest.malformed``), the room's view,
``ingest.decide`` with the receive time and the study profiles, then the
decision applied; after an accept, every held message the chain now reaches
is decided again (``RoomView.releasable``). All of it is **one transaction**,
and the caller acknowledges the batch to the broker only after ``process``
returned, i.e. after the COMMIT: a crash before it means redelivery, and a
redelivered message is a ``Duplicate``.

Rooms' views are read once per batch (``room_views``, three queries) and kept
up to date in memory as the batch is decided, so later messages of the same
room see the entries accepted before them. Accepted entries with their rows
and sample blocks are written at the end in bulk (``store.bulk``: COPY on
PostgreSQL, executemany on SQLite); held and quarantined messages, gap
records and releases go through the ORM as they happen (they are rare).

A batch that fails as a whole (one message PostgreSQL cannot store, e.g. a
NUL character in a JSON string; any unexpected error) is retried one message
per transaction; a message that fails on its own is quarantined
(``malformed``, "the database refused it: ..." or "could not be processed:
...") instead of retried forever: a poison message never stops ingest.
A database that cannot be reached raises (``OperationalError``): nothing was
committed, nothing is acknowledged, the caller retries.

``redecide_profile_holds``: messages held for a study profile the collector
did not know are decided again (after the profiles were reloaded).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import DataError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from cryod.integrity import Head

from .ingest import (
    Accept,
    AcceptedEntry,
    Decision,
    HashLookup,
    Hold,
    Quarantine,
    RoomView,
    decide,
    malformed,
)
from .messages import MessageError, RecordMessage, parse_message, parse_topic
from .store import bulk, received
from .store.db import writer
from .store.models import Gap, Held

__all__ = ["Incoming", "Intake", "Outcome", "summarize"]

Clock = Callable[[], dt.datetime]
_log = logging.getLogger("cryohub.ingest")


@dataclass(frozen=True, slots=True)
class Incoming:
    """One message as the subscriber delivered it."""

    topic: str
    payload: bytes
    received_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Outcome:
    """A decision taken and committed; ``at`` is the entry's time for an accept."""

    decision: Decision
    topic: str | None
    at: dt.datetime | None = None


class _Stored:
    """seq -> hash of what is stored, with this batch's accepts (not yet written) first."""

    def __init__(self, base: HashLookup, pending: dict[int, str]) -> None:
        self._base = base
        self._pending = pending

    def get(self, seq: int, /) -> str | None:
        found = self._pending.get(seq)
        return found if found is not None else self._base.get(seq)


@dataclass
class _Batch:
    views: dict[str, RoomView]
    pending: dict[str, dict[int, str]] = field(default_factory=dict)
    accepted: list[AcceptedEntry] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)


class Intake:
    def __init__(
        self,
        engine: Engine,
        profiles: Callable[[], Mapping[tuple[str, str], str]],
        *,
        clock: Clock | None = None,
    ) -> None:
        self.engine = engine
        self._profiles = profiles
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        # one writer at a time: a batch and the profile re-decision must not both
        # extend the same room's chain (the loser would see a primary key clash)
        self._lock = threading.Lock()

    # ---- the batch ------------------------------------------------------------------------
    def process(self, batch: Sequence[Incoming]) -> list[Outcome]:
        """Decide and commit a batch; the outcomes, in order, once committed.

        ``OperationalError`` (the database cannot be reached) propagates: nothing
        was committed. Any other failure is one message's: the batch is retried
        one message per transaction, and a message that fails on its own is
        quarantined (a poison message must not stop ingest, nor be retried forever).
        """
        if not batch:
            return []
        with self._lock:
            return self._process(batch)

    def _process(self, batch: Sequence[Incoming]) -> list[Outcome]:
        try:
            return self._transaction(batch)
        except OperationalError:
            raise
        except Exception as exc:  # noqa: BLE001 - one message's problem, found below
            if len(batch) == 1:
                return self._refused(batch[0], exc)
        out: list[Outcome] = []
        for one in batch:
            try:
                out.extend(self._transaction([one]))
            except OperationalError:
                raise
            except Exception as exc:  # noqa: BLE001
                out.extend(self._refused(one, exc))
        return out

    def _transaction(self, batch: Sequence[Incoming]) -> list[Outcome]:
        with Session(writer(self.engine)) as s, s.begin():
            parsed = [_parse(one) for one in batch]
            nodes = [p.node for p in parsed if isinstance(p, RecordMessage)]
            state = _Batch(views=received.room_views(s, nodes))
            profiles = self._profiles()
            for one, msg in zip(batch, parsed, strict=True):
                if isinstance(msg, Quarantine):
                    received.save(s, msg, topic=one.topic)
                    state.outcomes.append(Outcome(msg, one.topic))
                    continue
                self._decide(s, state, msg, one.topic, one.received_at, profiles)
            bulk.write_accepted(s, state.accepted)
        return state.outcomes

    def _refused(self, one: Incoming, exc: Exception) -> list[Outcome]:
        """A message that cannot be stored: quarantined, named by the kind of failure only
        (a database's message may quote the payload)."""
        if isinstance(exc, (DataError, IntegrityError, ProgrammingError)):
            detail = (
                "the database refused it (e.g. a NUL character in a JSON string on "
                f"PostgreSQL): {type(getattr(exc, 'orig', exc)).__name__}"
            )
        else:
            detail = f"could not be processed: {type(exc).__name__}"
        _log.error("message on %s not processable (%s): quarantined", one.topic, detail)
        with Session(writer(self.engine)) as s, s.begin():
            try:
                msg = parse_message(one.payload)
                node, seq, digest = msg.node, msg.seq, msg.entry.hash
            except Exception:  # noqa: BLE001 - whatever failed, the raw bytes are kept
                node, seq, digest = None, None, None
            d = Quarantine(
                "malformed",
                detail,
                one.payload,
                one.received_at,
                node,
                seq,
                digest,
            )
            received.save(s, d, topic=one.topic)
        return [Outcome(d, one.topic)]

    def _decide(
        self,
        s: Session,
        state: _Batch,
        msg: RecordMessage,
        topic: str | None,
        received_at: dt.datetime,
        profiles: Mapping[tuple[str, str], str],
    ) -> None:
        while True:
            view = state.views.get(msg.node)
            topic_parsed = None if topic is None else parse_topic(topic)
            d = decide(msg, view, received_at=received_at, profiles=profiles, topic=topic_parsed)
            self._apply(s, state, d, view, topic)
            state.outcomes.append(Outcome(d, topic, msg.at if isinstance(d, Accept) else None))
            if not isinstance(d, Accept):
                return
            view = state.views[msg.node]
            nxt = view.releasable()
            if nxt is None:
                return
            raw = received.held_message(s, msg.node, nxt)
            if raw is None:  # pragma: no cover - the view and the table disagree
                return
            msg = parse_message(raw)
            topic = None  # a released message was checked against its topic when held

    def _apply(
        self, s: Session, state: _Batch, d: Decision, view: RoomView | None, topic: str | None
    ) -> None:
        if isinstance(d, Accept):
            assert view is not None
            e = d.entry
            if view.held:  # gaps are open only while something is held
                held = s.get(Held, (e.node, e.seq))
                if held is not None:
                    s.delete(held)
                s.execute(
                    update(Gap)
                    .where(Gap.node == e.node, Gap.closed_at.is_(None), Gap.last_seq == e.seq)
                    .values(closed_at=e.received_at)
                )
            pending = state.pending.setdefault(e.node, {})
            pending[e.seq] = e.hash
            state.accepted.append(e)
            held_now = {k: v for k, v in view.held.items() if k != e.seq}
            state.views[e.node] = replace(
                view,
                head=Head(e.seq, e.hash),
                stored=_Stored(view.stored, pending),
                held=held_now,
            )
        elif isinstance(d, Hold):
            assert view is not None
            received.save(s, d)
            m = d.message
            state.views[m.node] = replace(view, held={**view.held, m.seq: m.entry.hash})
        elif isinstance(d, Quarantine):
            received.save(s, d, topic=topic)
        # Duplicate and Ignore write nothing

    # ---- held for a profile -----------------------------------------------------------------
    def redecide_profile_holds(self) -> list[Outcome]:
        """Decide again every message held for a study profile (after a profile was added)."""
        with self._lock:
            return self._redecide()

    def _redecide(self) -> list[Outcome]:
        with Session(self.engine) as s:
            waiting = s.execute(
                select(Held.node, Held.seq, Held.received_at)
                .where(Held.reason == "profile")
                .order_by(Held.node, Held.seq)
            ).all()
        out: list[Outcome] = []
        for node, seq, received_at in waiting:
            try:
                out.extend(self._redecide_one(node, seq, received_at))
            except OperationalError:
                raise
            except Exception as exc:  # noqa: BLE001 - it stays held; the others go on
                _log.error("held %s seq %d not decided again: %s", node, seq, type(exc).__name__)
        return out

    def _redecide_one(self, node: str, seq: int, received_at: dt.datetime) -> list[Outcome]:
        with Session(writer(self.engine)) as s, s.begin():
            raw = received.held_message(s, node, seq)
            if raw is None:
                return []
            state = _Batch(views=received.room_views(s, [node]))
            view = state.views.get(node)
            if view is None or view.expected != seq:
                return []
            self._decide(s, state, parse_message(raw), None, received_at, self._profiles())
            bulk.write_accepted(s, state.accepted)
        return [o for o in state.outcomes if not isinstance(o.decision, Hold)]


def _parse(one: Incoming) -> RecordMessage | Quarantine:
    try:
        parse_topic(one.topic)
        return parse_message(one.payload)
    except MessageError as exc:
        return malformed(one.payload, str(exc), one.received_at)


def summarize(outcomes: Iterable[Outcome]) -> dict[str, int]:
    """Counts per action (accept, duplicate, hold, quarantine, ignore)."""
    out = {"accept": 0, "duplicate": 0, "hold": 0, "quarantine": 0, "ignore": 0}
    for o in outcomes:
        out[o.decision.action] += 1
    return out
