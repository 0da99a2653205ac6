"""The one storage writer: every database write of the daemon goes through it.

One asyncio task owns the order of writes; the SQLite work runs in one
dedicated worker thread, so a slow, locked or full disk never blocks the
event loop (and so never the poll loop or the supervisor).

- ``submit_sample`` never blocks: samples (``SampleRow``, one per value) wait
  in a bounded buffer and are written in batches (``batch_max`` values or every
  ``batch_interval_s``) in one transaction, in the compact form of
  ``samples.py`` (a row per poll, one per probe, state channels as changes, the
  batch's first poll of each console full). When the buffer is full the sample
  is dropped and counted; samples are the only thing ever dropped. The writer task sleeps until work
  is due: an op, a full batch, closing, or the batch timer (armed by a batch's
  first sample), so a poll's samples cost an append, not a wake-up (waking it
  per poll cost ~2 ms of loop CPU per second at 20 Hz).
- ``await commit_now(op)`` is for records that must be durable before the
  daemon acts (cycle open/close, alarms, procedures, operator actions, audit):
  samples submitted before it are flushed first, then ``op(session)`` runs in
  its own transaction, and the call returns after the COMMIT.
- Every commit extends the chain in the same transaction (docs/integrity.md):
  an op's research rows through ``ChainedSession``, a sample batch with one
  ``samples`` entry over its canonical polls (``cryod.samples/2``).
  ``on_audit_head(head)`` gets each new head after its COMMIT,
  ``on_head(head, label)`` with what made it (the op's label, or
  ``"samples"``), and ``on_foreign_head(expected, found)`` says that the chain
  moved under the writer: someone else appended entries.
- Storage failures (disk full, read-only, locked, I/O) never kill the task:
  they make ``status().healthy`` false (the service stops feeding the systemd
  watchdog and raises a high-priority alarm via ``on_error``) and
  ``commit_now`` raises ``StoreError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain
from typing import Any, Generic, TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from cryod.integrity import SAMPLES_V2

from .audit import AuditHead
from .chain import ChainedSession, cover_batch, read_head
from .db import immediate_transaction
from .errors import StoreError, classify
from .samples import (
    MAX_POLL_ID,
    ConnectionRunner,
    SampleRow,
    StoredPoll,
    insert_polls,
    known_rows,
    pack_polls,
    poll_groups,
)

__all__ = ["SampleRow", "Writer", "WriterClosed", "WriterStatus"]

T = TypeVar("T")


@dataclass(slots=True)
class _Op(Generic[T]):
    fn: Callable[[Session], T]
    future: asyncio.Future[T]
    label: str


@dataclass(frozen=True, slots=True)
class WriterStatus:
    healthy: bool
    reason: str  # "ok" or why not
    last_error: StoreError | None
    last_commit_age_s: float | None  # since the last successful COMMIT
    busy_for_s: float  # how long the current database call has been running (0 if idle)
    queued_samples: int  # accepted, not yet handed to the database (incl. the open batch)
    samples_written: int
    samples_dropped_full: int  # buffer full
    samples_dropped_error: int  # batch lost to a storage failure
    samples_dropped_invalid: int  # rows the database refused (e.g. unknown procedure)
    batches: int
    commits: int
    sample_rows_per_s: float | None  # rows per second of database time, over all batches
    audit_head: AuditHead | None


@dataclass
class _Counters:
    written: int = 0
    dropped_full: int = 0
    dropped_error: int = 0
    dropped_invalid: int = 0
    batches: int = 0
    commits: int = 0
    batch_time_s: float = 0.0


class WriterClosed(StoreError):
    def __init__(self) -> None:
        super().__init__("closed", "the storage writer is closed")


class Writer:
    """Batched async writer on one engine (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        *,
        queue_max: int = 20_000,
        batch_max: int = 2000,
        batch_interval_s: float = 1.0,
        stall_s: float = 5.0,
        on_error: Callable[[StoreError], None] | None = None,
        on_audit_head: Callable[[AuditHead], None] | None = None,
        on_head: Callable[[AuditHead, str], None] | None = None,
        on_foreign_head: Callable[[AuditHead | None, AuditHead | None], None] | None = None,
    ) -> None:
        if queue_max < 1 or batch_max < 1 or batch_interval_s <= 0 or stall_s <= 0:
            raise ValueError("queue_max, batch_max, batch_interval_s and stall_s must be > 0")
        self.engine = engine
        # write transactions take the lock at BEGIN (see db.py); read-only engines cannot
        self._tx_engine = engine.execution_options(sqlite_begin="IMMEDIATE")
        self.queue_max = queue_max
        self.batch_max = batch_max
        self.batch_interval_s = batch_interval_s
        self.stall_s = stall_s
        self._on_error = on_error
        self._on_audit_head = on_audit_head
        self._on_head = on_head
        self._on_foreign_head = on_foreign_head
        # samples are queued as chunks (one poll's rows), in order with the ops
        self._items: deque[list[SampleRow] | _Op[Any]] = deque()
        self._queued_samples = 0  # accepted, not yet handed to the worker
        self._queued_ops = 0
        self._batch_started: float | None = None  # monotonic; the oldest queued sample's batch
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None  # the task sleeps on it
        self._timer: asyncio.TimerHandle | None = None  # wakes it when the batch is due
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._counters = _Counters()
        self._last_error: StoreError | None = None
        self._last_commit_mono: float | None = None
        self._busy_since: float | None = None
        self._audit_head: AuditHead | None = None

    # -- lifecycle -------------------------------------------------------
    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("writer already started")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cryod-store")
        self._loop = asyncio.get_running_loop()
        # the chain's head as found: each commit checks nobody else moved it since
        self._audit_head = await self._in_worker(self._read_head)
        self._task = asyncio.create_task(self._run(), name="cryod-store-writer")

    async def aclose(self) -> None:
        """Write everything queued, then stop the task and the worker thread."""
        if self._task is None:
            return
        self._closing = True
        self._wakeup()
        try:
            await asyncio.shield(self._task)
        finally:
            if self._executor is not None:
                executor, self._executor = self._executor, None
                # idle after the task ended: joining the thread is immediate; if a
                # call is still in flight (task cancelled) let it finish on its own
                executor.shutdown(wait=self._busy_since is None)

    async def __aenter__(self) -> Writer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- producers -------------------------------------------------------
    def submit_sample(self, sample: SampleRow) -> bool:
        """Queue one sample; never blocks. False (and counted) when dropped."""
        if self._closing or self._queued_samples >= self.queue_max:
            self._counters.dropped_full += 1
            return False
        self._queue([sample])
        return True

    def submit_samples(self, samples: Iterable[SampleRow]) -> int:
        """Queue several samples; returns how many were accepted (the same rows
        ``submit_sample`` one by one would accept, in one step: once per poll)."""
        rows = list(samples)  # ours: the caller may reuse its list
        room = 0 if self._closing else max(0, self.queue_max - self._queued_samples)
        if len(rows) > room:
            self._counters.dropped_full += len(rows) - room
            del rows[room:]
        if rows:
            self._queue(rows)
        return len(rows)

    def _queue(self, rows: list[SampleRow]) -> None:
        """Append accepted rows; wake the task only if this makes a batch due."""
        self._items.append(rows)
        before = self._queued_samples
        self._queued_samples = before + len(rows)
        if before == 0:
            self._batch_started = time.monotonic()
            if self._waiter is not None and self._timer is None and self._loop is not None:
                # the task sleeps with nothing to time: wake it when this batch is due
                self._timer = self._loop.call_later(self.batch_interval_s, self._wakeup)
        if before < self.batch_max <= self._queued_samples:
            self._wakeup()

    async def commit_now(self, op: Callable[[Session], T], *, label: str = "op") -> T:
        """Run ``op(session)`` in its own transaction after the samples queued before it.

        Returns ``op``'s result once the COMMIT has returned. Raises
        ``StoreError`` on a storage failure and ``op``'s own exception (after a
        rollback) if it raises. Cancelling the caller does not cancel a write
        already handed to the worker thread.
        """
        if self._closing or self._task is None:
            raise WriterClosed()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._items.append(_Op(op, future, label))
        self._queued_ops += 1
        self._wakeup()
        return await future

    async def flush(self) -> None:
        """Return when every sample queued so far is committed (or lost to an error)."""
        await self.commit_now(lambda _s: None, label="flush")

    # -- status ----------------------------------------------------------
    @property
    def audit_head(self) -> AuditHead | None:
        return self._audit_head

    def status(self) -> WriterStatus:
        now = time.monotonic()
        busy_for = 0.0 if self._busy_since is None else now - self._busy_since
        c = self._counters
        if self._task is None:
            healthy, reason = False, "writer not started"
        elif self._task.done():
            healthy, reason = False, "writer task ended"
        elif self._last_error is not None:
            healthy, reason = False, f"last write failed: {self._last_error}"
        elif busy_for > self.stall_s:
            healthy, reason = False, f"a database write has been running for {busy_for:.1f} s"
        else:
            healthy, reason = True, "ok"
        return WriterStatus(
            healthy=healthy,
            reason=reason,
            last_error=self._last_error,
            last_commit_age_s=None
            if self._last_commit_mono is None
            else now - self._last_commit_mono,
            busy_for_s=busy_for,
            queued_samples=self._queued_samples,
            samples_written=c.written,
            samples_dropped_full=c.dropped_full,
            samples_dropped_error=c.dropped_error,
            samples_dropped_invalid=c.dropped_invalid,
            batches=c.batches,
            commits=c.commits,
            sample_rows_per_s=(c.written / c.batch_time_s) if c.batch_time_s > 0 else None,
            audit_head=self._audit_head,
        )

    @property
    def healthy(self) -> bool:
        return self.status().healthy

    # -- the task ----------------------------------------------------------
    async def _run(self) -> None:
        try:
            while True:
                head = self._items[0] if self._items else None
                if isinstance(head, _Op):
                    self._items.popleft()
                    self._queued_ops -= 1
                    await self._run_op(head)
                elif head is not None and self._batch_due():
                    chunks, n = self._take_batch()
                    await self._write_samples(chunks, n)
                elif head is None and self._closing:
                    return
                else:
                    await self._sleep()
        except asyncio.CancelledError:
            self._fail_pending(WriterClosed())
            raise
        except BaseException as exc:  # never die silently: record it and fail waiters
            self._record_error(StoreError("other", f"writer task failed: {exc!r}"))
            self._fail_pending(self._last_error or WriterClosed())
            raise
        finally:
            self._closing = True
            self._fail_pending(WriterClosed())

    def _batch_due(self) -> bool:
        """Queued samples are written now: an op waits behind them (record
        before acting), the batch is full, the writer closes, or time is up."""
        return (
            self._queued_ops > 0
            or self._queued_samples >= self.batch_max
            or self._closing
            or self._batch_started is None  # (never with rows queued) write, never stall
            or time.monotonic() - self._batch_started >= self.batch_interval_s
        )

    def _take_batch(self) -> tuple[list[list[SampleRow]], int]:
        """Up to ``batch_max`` queued rows from the head, stopping at an op."""
        chunks: list[list[SampleRow]] = []
        n = 0
        items = self._items
        while items and n < self.batch_max:
            head = items[0]
            if isinstance(head, _Op):
                break
            room = self.batch_max - n
            if len(head) > room:  # split a chunk: the rest stays first in line
                chunks.append(head[:room])
                items[0] = head[room:]
                n += room
                break
            items.popleft()
            chunks.append(head)
            n += len(head)
        self._queued_samples -= n
        # what is left starts the next batch now, as if just submitted
        self._batch_started = time.monotonic() if self._queued_samples else None
        return chunks, n

    async def _sleep(self) -> None:
        """Until ``_wakeup``: a producer made a batch due, or the batch timer fired."""
        assert self._loop is not None
        waiter = self._loop.create_future()
        self._waiter = waiter
        if self._batch_started is not None:
            delay_s = self._batch_started + self.batch_interval_s - time.monotonic()
            self._timer = self._loop.call_later(max(0.0, delay_s), self._wakeup)
        try:
            await waiter
        finally:
            self._waiter = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _wakeup(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail_pending(self, exc: StoreError) -> None:
        while self._items:
            item = self._items.popleft()
            if isinstance(item, _Op):
                self._queued_ops -= 1
                if not item.future.done():
                    item.future.set_exception(exc)
            else:
                self._queued_samples -= len(item)
                self._counters.dropped_error += len(item)
        self._batch_started = None

    async def _in_worker(self, fn: Callable[[], T]) -> T:
        assert self._executor is not None
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        self._busy_since = time.monotonic()
        try:
            return await loop.run_in_executor(self._executor, ctx.run, fn)
        finally:
            self._busy_since = None

    def _read_head(self) -> AuditHead | None:
        with self.engine.connect() as conn:
            found = read_head(conn)
        return None if found is None else found[0]

    async def _write_samples(self, chunks: list[list[SampleRow]], n: int) -> None:
        info: dict[str, Any] = {"expect_head": self._audit_head}
        try:
            elapsed, invalid = await self._in_worker(lambda: self._insert_samples(chunks, info))
        except Exception as exc:  # noqa: BLE001 - classified and reported below
            err = classify(exc)
            self._counters.dropped_error += n
            self._record_error(err)
            return
        self._new_head(info, "samples")
        c = self._counters
        c.written += n - invalid
        c.dropped_invalid += invalid
        c.batches += 1
        c.commits += 1
        c.batch_time_s += elapsed
        self._record_success()

    def _insert_samples(
        self, chunks: list[list[SampleRow]], info: dict[str, Any]
    ) -> tuple[float, int]:
        """Worker thread: one transaction with the batch's chain entry
        (``cryod.samples/2``); a refused poll is retried alone, not the batch. Returns
        (elapsed, rows not stored: an unknown channel or a poll the database refused)."""
        t0 = time.perf_counter()
        rows, invalid = known_rows(chain.from_iterable(chunks))
        if not rows:
            return time.perf_counter() - t0, invalid
        try:
            with immediate_transaction(self.engine) as dbapi:
                (before,) = dbapi.execute(MAX_POLL_ID).fetchone()
                polls = pack_polls(rows, (before or 0) + 1)
                insert_polls(dbapi, polls)
                cover_batch(
                    dbapi,
                    polls[0].id,
                    polls[-1].id,
                    polls,
                    len(polls),
                    info=info,
                    table="sample_polls",
                    encoding=SAMPLES_V2,
                )
            return time.perf_counter() - t0, invalid
        except Exception as exc:
            if classify(exc).kind != "integrity":
                raise
        kept: list[StoredPoll] = []
        with self._tx_engine.begin() as conn:
            runner = ConnectionRunner(conn)
            (before,) = conn.exec_driver_sql(MAX_POLL_ID).one()
            next_id = (before or 0) + 1
            state: dict[str, Any] = {}
            for poll_rows in poll_groups(rows):
                trial = dict(state)
                (poll,) = pack_polls(poll_rows, next_id, trial)
                try:
                    with conn.begin_nested():
                        insert_polls(runner, [poll])
                except Exception as exc:
                    if classify(exc).kind != "integrity":
                        raise
                    invalid += len(poll_rows)
                    continue
                state = trial
                kept.append(poll)
                next_id += 1
            if kept:
                cover_batch(
                    conn,
                    kept[0].id,
                    kept[-1].id,
                    kept,
                    len(kept),
                    info=info,
                    table="sample_polls",
                    encoding=SAMPLES_V2,
                )
        return time.perf_counter() - t0, invalid

    def _run_in_session(self, fn: Callable[[Session], T], info: dict[str, Any]) -> tuple[T, bool]:
        """Worker thread: (result, whether the transaction wrote); the new head, if
        any, is left in ``info``."""
        with ChainedSession(self._tx_engine, expire_on_commit=False, info=info) as session:
            with session.begin():
                raw = session.connection().connection.dbapi_connection
                before = getattr(raw, "total_changes", 0)
                result = fn(session)
                wrote = getattr(raw, "total_changes", 0) != before
            info.update(session.info)  # the Session copied it: take its findings back
            return result, wrote

    def _new_head(self, info: dict[str, Any], label: str) -> None:
        """After a COMMIT: report the chain's new head (and foreign entries before it)."""
        foreign = info.get("foreign")
        if foreign is not None and self._on_foreign_head is not None:
            with contextlib.suppress(Exception):
                self._on_foreign_head(*foreign)
        head = info.get("audit_head")
        if not isinstance(head, AuditHead):
            return
        self._audit_head = head
        # a broken callback must not stop writes
        if self._on_audit_head is not None:
            with contextlib.suppress(Exception):
                self._on_audit_head(head)
        if self._on_head is not None:
            with contextlib.suppress(Exception):
                self._on_head(head, label)

    async def _run_op(self, op: _Op[Any]) -> None:
        info: dict[str, Any] = {"expect_head": self._audit_head}
        try:
            result, wrote = await self._in_worker(lambda: self._run_in_session(op.fn, info))
        except Exception as exc:  # noqa: BLE001 - handed to the waiting caller
            err = classify(exc)
            if err.storage_failure:
                self._record_error(err)
                out: BaseException = err
            elif err.kind == "other" and not _is_db_error(exc):
                out = exc  # the op's own error (validation, ...), not a storage failure
            else:
                out = err
            if not op.future.done():
                op.future.set_exception(out)
            return
        self._counters.commits += 1
        if wrote:  # a read-only transaction proves nothing about the disk
            self._record_success()
        self._new_head(info, op.label)
        if not op.future.done():
            op.future.set_result(result)

    def _record_success(self) -> None:
        self._last_commit_mono = time.monotonic()
        self._last_error = None

    def _record_error(self, err: StoreError) -> None:
        changed = self._last_error is None or self._last_error.kind != err.kind
        self._last_error = err
        if changed and self._on_error is not None:
            # a broken callback must not stop writes
            with contextlib.suppress(Exception):
                self._on_error(err)


def _is_db_error(exc: BaseException) -> bool:
    from sqlalchemy import exc as sa_exc

    return isinstance(exc, sa_exc.SQLAlchemyError)
