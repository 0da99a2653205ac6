"""The record channel's shell: the chain, out to the broker, in order, at a bounded rate.

A task of its own on the daemon's loop. The poll loop never waits for it: the
writer's ``on_head`` only moves ``head`` and sets an event. Entries are read
from the store and encoded in a worker thread (``source``, ``message``), handed
to the broker in chain order (QoS 1, never retained, at most ``window``
unacknowledged) and counted delivered on PUBACK (``cursor``); the delivered-up-to
cursor is written to its file after the acknowledgements (``cursor_file``).
On a dropped connection everything not acknowledged is sent again, in order,
after a back-off (``drivers/backoff.py``, the one rule).

A message the privacy check refuses is never sent and the channel stops at
it (``status()["blocked"]``, an error in the journal, retried every
``blocked_retry_s``): sending the entries after it would leave a gap anyway,
and a silent skip would hide it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from cryod.drivers.backoff import Backoff, BackoffPolicy
from cryod.integrity import Head, format_time

from ..telemetry.config import MqttConfig
from ..telemetry.publisher import PublishOnlyClient, publish_only_client
from . import cursor as core
from .cursor_file import CursorFileError, SavedCursor, load_cursor, save_cursor
from .message import RecordEncoder, RecordPrivacyError, record_document, record_topic
from .source import content_of, head_seq, profile_of, read_entries

__all__ = ["RecordChannel"]

log = logging.getLogger("cryod.record_channel")

ClientFactory = Callable[..., PublishOnlyClient]


@dataclass(frozen=True, slots=True)
class _Loaded:
    seq: int
    hash: str | None
    body: bytes | None  # None: not sendable (refused or missing); ``problem`` says why
    problem: str | None = None
    heavy: bool = True  # carries a sample batch (costs a whole token)


class RecordChannel:
    """The room's record channel. Create it inside the running loop; ``start()``."""

    def __init__(
        self,
        mqtt: MqttConfig,
        *,
        client_id: str,
        site: str,
        node: str,
        engine: Engine,
        cursor_path: Path,
        limits: core.Limits,
        check_pseudonym: Callable[[str], object],
        placeholder: str,
        publish_timeout_s: float = 10.0,
        persist_interval_s: float = 0.5,
        blocked_retry_s: float = 60.0,
        utc: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        client_factory: ClientFactory = publish_only_client,
    ) -> None:
        asyncio.get_running_loop()
        self._mqtt = mqtt
        self._client_id = client_id
        self.site, self.node = site, node
        self.topic = record_topic(site, node)
        self._engine = engine
        self._cursor_path = cursor_path
        self._limits = limits
        self._encoder = RecordEncoder(check_pseudonym, placeholder)
        self._publish_timeout_s = publish_timeout_s
        self._persist_interval_s = persist_interval_s
        self._blocked_retry_s = blocked_retry_s
        self._utc = utc
        self._mono = monotonic
        self._client_factory = client_factory
        self._state: core.ChannelState | None = None
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._hashes: dict[int, str] = {}  # live seqs loaded, for the cursor file
        self._persisted = 0
        self._next_persist_s = 0.0
        self._blocked: tuple[int, str] | None = None
        self._blocked_until_s = 0.0
        self._held_s = 0.0
        self._pending_head = 0  # a head offered before the state was loaded
        self._status: dict[str, Any] = {
            "broker": mqtt.broker,
            "client_id": client_id,
            "topic": self.topic,
            "state": "idle",
            "connected": False,
            "connections": 0,
            "published": 0,
            "resent": 0,
            "last_error": None,
            "cursor_file": str(cursor_path),
        }

    # ----- the daemon side: none of these block -----

    def offer_head(self, head: Head) -> None:
        """A new chain head after a COMMIT (the writer's ``on_head``)."""
        if self._state is not None:
            self._state = core.new_head(self._state, head.seq)
        self._pending_head = max(head.seq, self._pending_head)
        self._wake.set()

    def check_resend(self, first: int, last: int | None) -> str | None:
        """Why ``first..last`` cannot be resent (None: it can), without queueing it."""
        if self._state is None:
            return "the record channel is starting; try again"
        _state, result = core.resend(self._state, first, last)
        return result.reason if isinstance(result, core.ResendRefused) else None

    async def resend(self, first: int, last: int | None) -> dict[str, Any]:
        """Queue entries ``first..last`` (``last`` None: up to the head) to be published
        again: the operator's command, recorded by the caller first. Raises ValueError
        with the reason if refused."""
        await self._ready.wait()
        assert self._state is not None
        self._state, result = core.resend(self._state, first, last)
        if isinstance(result, core.ResendRefused):
            raise ValueError(result.reason)
        self._wake.set()
        log.info("record resend queued: entries %d..%d", result.first, result.last)
        return {
            "first": result.first,
            "last": result.last,
            "queued": result.last - result.first + 1,
        }

    def status(self) -> dict[str, Any]:
        s = dict(self._status)
        st = self._state
        s.update(
            delivered_seq=None if st is None else st.delivered,
            head_seq=None if st is None else st.head,
            backlog=None if st is None else st.backlog,
            resend_pending=None if st is None else st.resend_pending,
            blocked=None
            if self._blocked is None
            else {"seq": self._blocked[0], "reason": self._blocked[1]},
        )
        return s

    # ----- lifecycle -----

    def start(self) -> asyncio.Task[None]:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="record-channel")
        return self._task

    async def close(self, timeout_s: float = 5.0) -> None:
        """Stop sending; the cursor is saved as far as the broker acknowledged."""
        self._closing.set()
        self._wake.set()
        task = self._task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout_s)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        with contextlib.suppress(Exception):
            await self._persist(force=True)

    async def run(self) -> None:
        while not self._ready.is_set():
            try:
                await self._load_state()
            except Exception as exc:  # noqa: BLE001 - the store unreadable: say so, retry
                self._note_error(exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), 5.0)
                if self._closing.is_set():
                    self._status["state"] = "closed"
                    return
        cfg = self._mqtt
        backoff = Backoff(
            policy=BackoffPolicy(first_s=cfg.reconnect_min_s, max_s=cfg.reconnect_max_s)
        )
        try:
            while not self._closing.is_set():
                self._status["state"] = "connecting"
                self._held_s = 0.0
                try:
                    await self._connect_once()
                except Exception as exc:  # noqa: BLE001 - the channel never dies; it retries
                    self._note_error(exc)
                assert self._state is not None
                self._state = core.disconnected(self._state)
                if self._closing.is_set():
                    break
                if self._held_s >= 10.0:
                    backoff.succeeded()
                delay_s = backoff.failed()
                self._status["state"] = "backoff"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), delay_s)
        finally:
            self._status["state"] = "closed"
            self._status["connected"] = False

    # ----- internals -----

    def _read_head(self) -> int:
        with self._engine.connect() as conn:
            return head_seq(conn)

    def _hash_at(self, seq: int) -> str | None:
        with self._engine.connect() as conn:
            found = read_entries(conn, seq, seq)
        return found[0].hash if found else None

    async def _load_state(self) -> None:
        try:
            saved = await asyncio.to_thread(load_cursor, self._cursor_path, self.node)
        except CursorFileError as exc:
            log.error("record cursor not usable, starting from entry 1: %s", exc)
            saved = None
        head = await asyncio.to_thread(self._read_head)
        head = max(head, self._pending_head)
        delivered = 0 if saved is None else saved.delivered_seq
        if delivered > head:
            log.error(
                "record cursor %d is beyond the chain's end %d (a restored database?): "
                "going on from the end",
                delivered,
                head,
            )
            delivered = head
        elif saved is not None and delivered > 0 and saved.delivered_hash is not None:
            found = await asyncio.to_thread(self._hash_at, delivered)
            if found != saved.delivered_hash:
                log.error(
                    "record cursor: entry %d has another hash than the one delivered "
                    "(the chain was rewritten); the collector will report a fork",
                    delivered,
                )
        self._persisted = delivered
        self._state = core.ChannelState.start(
            delivered, head, now_s=self._mono(), limits=self._limits
        )
        self._ready.set()

    def _note_error(self, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if text != self._status["last_error"]:
            log.warning("record channel: %s", text)
        self._status["last_error"] = text

    async def _connect_once(self) -> None:
        client = self._client_factory(self._mqtt, client_id=self._client_id, logger=__name__)
        async with client:
            t0 = self._mono()
            self._status.update(state="connected", connected=True)
            self._status["connections"] += 1
            try:
                await self._session(client)
            finally:
                self._status["connected"] = False
                self._held_s = self._mono() - t0

    async def _session(self, client: PublishOnlyClient) -> None:
        failed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        tasks: set[asyncio.Task[None]] = set()
        watch = asyncio.create_task(client.wait_disconnected(), name="record-watch")

        def done(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            if task.cancelled():
                return
            exc = task.exception()
            if exc is not None and not failed.done():
                failed.set_result(exc)
            self._wake.set()

        try:
            while not self._closing.is_set():
                self._wake.clear()
                if failed.done():
                    raise failed.result()
                if watch.done():
                    watch.result()
                    raise ConnectionError("broker connection lost")
                await self._persist()
                assert self._state is not None
                now = self._mono()
                if self._blocked is not None and now < self._blocked_until_s:
                    plan = core.Plan(wait_s=self._blocked_until_s - now)
                else:
                    self._state, plan = core.plan(self._state, self._limits, now)
                if plan.seqs:
                    loaded = await asyncio.to_thread(self._load, plan.seqs)
                    light = sum(1 for item in loaded.values() if not item.heavy)
                    self._state = core.refund(self._state, self._limits, light)
                    self._hand_over(client, plan, loaded, tasks, done)
                    continue
                wait_s = plan.wait_s
                if self._state.delivered > self._persisted:
                    due = max(0.0, self._next_persist_s - self._mono())
                    wait_s = due if wait_s is None else min(wait_s, due)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait_s):
                        await self._wake.wait()
            if tasks and not failed.done():  # closing: let what is in flight be acknowledged
                await asyncio.wait(set(tasks), timeout=min(2.0, self._publish_timeout_s))
        finally:
            watch.cancel()
            for t in list(tasks):
                t.cancel()
            await asyncio.gather(watch, *tasks, return_exceptions=True)

    def _hand_over(
        self,
        client: PublishOnlyClient,
        plan: core.Plan,
        loaded: dict[int, _Loaded],
        tasks: set[asyncio.Task[None]],
        done: Callable[[asyncio.Task[None]], None],
    ) -> None:
        """Start one publish per message, in order (each hands its message to the
        client before the next starts); stop at one that cannot be sent."""
        assert self._state is not None
        for i, (seq, is_resend) in enumerate(zip(plan.seqs, plan.resend, strict=True)):
            item = loaded[seq]
            if item.body is None:
                self._stop_at(seq, item.problem or "not sendable", plan, i)
                return
            if not is_resend and item.hash is not None:
                self._hashes[seq] = item.hash
            task = asyncio.create_task(
                self._publish_one(client, seq, is_resend, item.body), name=f"record-{seq}"
            )
            tasks.add(task)
            task.add_done_callback(done)
        if self._blocked is not None:
            log.warning("record channel: entry %d can be sent now", self._blocked[0])
            self._blocked = None

    def _stop_at(self, seq: int, problem: str, plan: core.Plan, i: int) -> None:
        """Entry ``seq`` cannot be sent: take it and what followed out of the plan."""
        assert self._state is not None
        rest = tuple(zip(plan.seqs[i:], plan.resend[i:], strict=True))
        self._state = core.withdrawn(self._state, rest)
        if self._blocked is None or self._blocked[0] != seq:
            log.error("record channel stopped at entry %d: %s", seq, problem)
        self._blocked = (seq, problem)
        self._blocked_until_s = self._mono() + self._blocked_retry_s

    async def _publish_one(
        self, client: PublishOnlyClient, seq: int, is_resend: bool, body: bytes
    ) -> None:
        await client.publish(self.topic, body, 1, False, timeout_s=self._publish_timeout_s)
        assert self._state is not None
        self._state = core.acked(self._state, seq, is_resend=is_resend)
        self._status["resent" if is_resend else "published"] += 1

    def _load(self, seqs: Sequence[int]) -> dict[int, _Loaded]:
        """Read and encode the messages for ``seqs`` (worker thread)."""
        out: dict[int, _Loaded] = {}
        sent_at = format_time(dt.datetime.fromtimestamp(self._utc(), dt.UTC))
        with self._engine.connect() as conn:
            for first, last in _runs(seqs):
                entries = {e.seq: e for e in read_entries(conn, first, last)}
                for seq in range(first, last + 1):
                    entry = entries.get(seq)
                    if entry is None:
                        out[seq] = _Loaded(seq, None, None, "no such entry in the chain")
                        continue
                    try:
                        rows, block, withheld = content_of(conn, entry)
                        doc = record_document(
                            site=self.site,
                            node=self.node,
                            entry=entry,
                            rows=rows,
                            block=block,
                            profile=profile_of(conn, entry),
                            withheld=withheld,
                            sent_at=sent_at,
                        )
                        body = self._encoder.encode(doc)
                        out[seq] = _Loaded(seq, entry.hash, body, heavy=block is not None)
                    except RecordPrivacyError as exc:
                        out[seq] = _Loaded(seq, entry.hash, None, f"privacy: {exc}")
                    except (ValueError, KeyError, TypeError) as exc:
                        out[seq] = _Loaded(seq, entry.hash, None, f"cannot encode: {exc}")
        return out

    async def _persist(self, *, force: bool = False) -> None:
        st = self._state
        if st is None or st.delivered <= self._persisted:
            return
        now = self._mono()
        if not force and now < self._next_persist_s:
            return
        delivered = st.delivered
        digest = self._hashes.get(delivered)
        if digest is None:
            digest = await asyncio.to_thread(self._hash_at, delivered)
        saved = SavedCursor(
            node=self.node,
            delivered_seq=delivered,
            delivered_hash=digest,
            at=format_time(dt.datetime.fromtimestamp(self._utc(), dt.UTC)),
        )
        try:
            await asyncio.to_thread(save_cursor, self._cursor_path, saved)
        except OSError as exc:
            log.error("record cursor not saved: %s", exc)
            self._next_persist_s = now + 5.0
            return
        self._persisted = delivered
        self._next_persist_s = now + self._persist_interval_s
        for s in [s for s in self._hashes if s <= delivered]:
            del self._hashes[s]


def _runs(seqs: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted contiguous runs of ``seqs``."""
    out: list[tuple[int, int]] = []
    for s in sorted(set(seqs)):
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out
