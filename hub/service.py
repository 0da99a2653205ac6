"""``cryohub run``: the ingest service (the systemd unit's ``ExecStart``).

Wires the subscriber (``subscriber``, the one aiomqtt module) to the ingest
transaction (``intake``): every batch the broker delivers is decided and
committed in a worker thread (the event loop keeps the MQTT connection
alive meanwhile), and acknowledged after the COMMIT. Around it:

- **systemd**: ``READY=1`` once the database is at its head and the broker
  was tried (connected, or retried in the background: a broker down at boot
  does not fail the start); ``WATCHDOG=1`` every half ``WatchdogSec`` while no
  batch has been in the database for longer than the watchdog allows (a hung
  database gets the process restarted; a database that refuses connections
  is retried with a growing delay and reported in ``STATUS=``, never
  acknowledged around); ``STATUS=`` with the counts.
- **study profiles**: ``[studies] profiles_dir`` is re-read when its files
  change (checked every few seconds, or at once on SIGHUP); messages held for
  a profile are then decided again. A directory that no longer loads is
  logged and the profiles already loaded are kept.
- **the log** names node, seq and reason of every held and quarantined
  message, the repair command for each gap (``cryoctl record resend --from A
  --to B`` at the room), and clock skew flags, once per room and batch; never
  a payload, a row or a sample (they may hold pseudonymous references).
- ``--stats-file``: counters and the record-to-committed latency (entry time
  to COMMIT) as JSON, rewritten every 2 s and at exit (the benchmark reads it).

SIGTERM or SIGINT stops it (exit 0); a batch being committed then is
acknowledged by the next run as duplicates.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import datetime as dt
import json
import logging
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from .config import ConfigError, LoadedConfig, load_config
from .ingest import Accept, Hold, Quarantine
from .intake import Incoming, Intake, Outcome
from .notify import Notifier, watchdog_interval_s
from .subscriber import BrokerSettings, Subscriber

__all__ = ["IngestService", "LatencyStats", "broker_settings"]

_log = logging.getLogger("cryohub.ingest")

#: latency buckets (s): 1 ms steps to 1 s, then 10 ms steps to 10 s, then 1 s steps to 10 min
_BOUNDS = (
    [i / 1000 for i in range(1, 1001)]
    + [1 + i / 100 for i in range(1, 901)]
    + [10.0 + i for i in range(1, 591)]
)


class LatencyStats:
    """A fixed histogram: percentiles to within a bucket, constant memory."""

    def __init__(self) -> None:
        self.counts = [0] * (len(_BOUNDS) + 1)
        self.n = 0
        self.max_s = 0.0

    def add(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(_BOUNDS, max(seconds, 0.0))] += 1
        self.n += 1
        self.max_s = max(self.max_s, seconds)

    def percentile(self, p: float) -> float | None:
        if self.n == 0:
            return None
        rank = p / 100 * self.n
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= rank and c:
                return _BOUNDS[i] if i < len(_BOUNDS) else self.max_s
        return self.max_s


def broker_settings(loaded: LoadedConfig) -> BrokerSettings:
    b = loaded.cfg.broker
    if b is None:
        raise ConfigError([f"{loaded.path}: broker: cryohub run needs a [broker] section"])
    return BrokerSettings(
        host=b.host,
        port=b.port,
        client_id=b.client_id,
        session_expiry_s=b.session_expiry_s,
        username=b.username,
        password_file=b.password_file,
        ca_file=None if b.tls is None else b.tls.ca_file,
        cert_file=None if b.tls is None else b.tls.cert_file,
        key_file=None if b.tls is None else b.tls.key_file,
        receive_maximum=b.receive_maximum,
    )


def _profiles_signature(folder: Path | None) -> tuple[tuple[str, int, int], ...]:
    if folder is None or not folder.is_dir():
        return ()
    out = []
    for f in sorted(folder.glob("*.toml")):
        with contextlib.suppress(OSError):
            st = f.stat()
            out.append((f.name, st.st_mtime_ns, st.st_size))
    return tuple(out)


class IngestService:
    def __init__(
        self,
        loaded: LoadedConfig,
        engine: Engine,
        *,
        stats_file: Path | None = None,
        notifier: Notifier | None = None,
        profile_check_s: float = 3.0,
    ) -> None:
        self.loaded = loaded
        self.engine = engine
        self.stats_file = stats_file
        self.notifier = notifier or Notifier()
        self.profile_check_s = profile_check_s
        self._book = loaded.profile_book()
        self._profiles_sig = _profiles_signature(loaded.cfg.studies.profiles_dir)
        self.intake = Intake(engine, lambda: self._book)
        self.subscriber = Subscriber(
            broker_settings(loaded),
            max_batch=broker_settings(loaded).receive_maximum,
            on_state=self._broker_state,
        )
        self.counts = {"accept": 0, "duplicate": 0, "hold": 0, "quarantine": 0, "ignore": 0}
        self.batches = 0
        self.latency = LatencyStats()  # entry time -> COMMIT
        self.receive_latency = LatencyStats()  # receipt -> COMMIT
        self.busy_since: float | None = None
        self.db_state = "ok"
        self.broker_state = "connecting"
        self.ready = False
        self._reload = asyncio.Event()
        self._started = time.monotonic()

    # ---- state -----------------------------------------------------------------------
    def _broker_state(self, state: str) -> None:
        """READY=1 after the first connection attempt, whatever its outcome: the
        database is at its head by then, and a broker that is down at boot must
        not fail the unit's start (the subscriber keeps retrying; STATUS= says so)."""
        self.broker_state = state
        if state == "connected":
            _log.info("broker: connected, subscribed to %s", self.subscriber.settings.topic)
        else:
            _log.warning("broker: %s", state)
        if not self.ready:
            self.ready = True
            self.notifier.ready(self.status_line())
        else:
            self.notifier.status(self.status_line())

    def status_line(self) -> str:
        c = self.counts
        return (
            f"accepted {c['accept']}, duplicates {c['duplicate']}, held {c['hold']}, "
            f"quarantined {c['quarantine']}; broker {self.broker_state}; database {self.db_state}"
        )

    def healthy(self, allowance_s: float) -> bool:
        return self.busy_since is None or time.monotonic() - self.busy_since < allowance_s

    # ---- a batch ---------------------------------------------------------------------
    async def handle(self, batch: Sequence[Incoming]) -> None:
        delay_s = 0.5
        while True:
            self.busy_since = time.monotonic()
            try:
                outcomes = await asyncio.to_thread(self.intake.process, batch)
            except OperationalError as exc:
                self.db_state = f"unreachable ({_first_line(exc)}), retrying"
                _log.error("database: %s; batch of %d not acknowledged", self.db_state, len(batch))
                self.notifier.status(self.status_line())
            else:
                break
            finally:
                self.busy_since = None
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 10.0)
        if self.db_state != "ok":
            self.db_state = "ok"
            _log.info("database: reachable again")
        committed = dt.datetime.now(dt.UTC)
        self.batches += 1
        for one in batch:
            self.receive_latency.add((committed - one.received_at).total_seconds())
        self._account(outcomes, committed)

    def _account(self, outcomes: Sequence[Outcome], committed: dt.datetime) -> None:
        skewed: dict[str, tuple[int, str]] = {}
        for o in outcomes:
            d = o.decision
            self.counts[d.action] += 1
            if isinstance(d, Accept):
                if o.at is not None:
                    self.latency.add((committed - o.at).total_seconds())
                if d.entry.skew.flagged:
                    n, _ = skewed.get(d.entry.node, (0, ""))
                    skewed[d.entry.node] = (n + 1, d.entry.skew.detail)
            elif isinstance(d, Hold):
                m = d.message
                repair = "; ".join(d.repair)
                _log.warning(
                    "held: node %s seq %d (%s): %s%s",
                    m.node,
                    m.seq,
                    d.reason,
                    d.detail,
                    f"; repair at the room: {repair}" if repair else "",
                )
            elif isinstance(d, Quarantine):
                _log.warning(
                    "quarantined: node %s seq %s (%s): %s",
                    d.node or "-",
                    "-" if d.seq is None else d.seq,
                    d.reason,
                    d.detail,
                )
        for node, (n, detail) in skewed.items():
            _log.warning("clock skew: node %s, %d entr(ies) flagged: %s", node, n, detail)

    # ---- study profiles ------------------------------------------------------------------
    async def _watch_profiles(self) -> None:
        await self._redecide()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reload.wait(), self.profile_check_s)
            forced = self._reload.is_set()
            self._reload.clear()
            sig = _profiles_signature(self.loaded.cfg.studies.profiles_dir)
            if sig == self._profiles_sig and not forced:
                continue
            self._profiles_sig = sig
            try:
                fresh = await asyncio.to_thread(load_config, self.loaded.path)
            except ConfigError as exc:
                for line in exc.problems:
                    _log.error("profiles not reloaded: %s", line)
                continue
            self._book = fresh.profile_book()
            _log.info("study profiles reloaded: %d", len(self._book))
            await self._redecide()

    async def _redecide(self) -> None:
        try:
            outcomes = await asyncio.to_thread(self.intake.redecide_profile_holds)
        except OperationalError as exc:
            _log.error("held messages not decided again: database %s", _first_line(exc))
            return
        except Exception as exc:  # noqa: BLE001 - ingest goes on; the next change retries
            _log.error("held messages not decided again: %s", type(exc).__name__)
            return
        if outcomes:
            _log.info("decided again after the profiles changed: %d", len(outcomes))
            self._account(outcomes, dt.datetime.now(dt.UTC))

    # ---- periodic ---------------------------------------------------------------------------
    async def _watchdog(self) -> None:
        interval = watchdog_interval_s()
        if interval is None or not self.notifier.enabled:
            await asyncio.get_running_loop().create_future()  # no watchdog: wait to be cancelled
            return
        while True:
            if self.healthy(allowance_s=interval * 1.8):
                self.notifier.watchdog()
            else:
                _log.error("ingest stalled in the database: withholding WATCHDOG=1")
            await asyncio.sleep(interval)

    async def _stats(self) -> None:
        while True:
            self.write_stats()
            self.notifier.status(self.status_line())
            await asyncio.sleep(2.0)

    def stats(self) -> dict[str, Any]:
        def pct(h: LatencyStats) -> dict[str, Any]:
            return {
                "n": h.n,
                "p50_s": h.percentile(50),
                "p99_s": h.percentile(99),
                "max_s": h.max_s if h.n else None,
            }

        return {
            "counts": dict(self.counts),
            "batches": self.batches,
            "record_to_committed": pct(self.latency),
            "received_to_committed": pct(self.receive_latency),
            "broker": self.broker_state,
            "connections": self.subscriber.connections,
            "database": self.db_state,
            "uptime_s": round(time.monotonic() - self._started, 1),
            "pid": os.getpid(),
        }

    def write_stats(self) -> None:
        if self.stats_file is None:
            return
        tmp = self.stats_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.stats()), encoding="utf-8")
        tmp.replace(self.stats_file)

    # ---- the whole -------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload.set)
        tasks: list[asyncio.Task[Any]] = [
            asyncio.create_task(self.subscriber.run(self.handle), name="subscriber"),
            asyncio.create_task(self._watch_profiles(), name="profiles"),
            asyncio.create_task(self._watchdog(), name="watchdog"),
            asyncio.create_task(self._stats(), name="stats"),
        ]
        stopper: asyncio.Task[Any] = asyncio.create_task(stop.wait(), name="stop")
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        self.notifier.stopping()
        for t in tasks:
            t.cancel()
        stopper.cancel()
        await asyncio.gather(*tasks, stopper, return_exceptions=True)
        self.write_stats()
        _log.info("stopped: %s", self.status_line())
        for t in done:
            if t is not stopper and not t.cancelled() and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
            if t is not stopper:  # pragma: no cover - every task runs until cancelled
                _log.error("task %s ended on its own", t.get_name())
                return 1
        return 0


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).strip().splitlines() or ["?"])[0]
