"""Anchors: the chain's head leaves the database after each commit, off the poll path.

A chain proves its entries were not edited *without recomputing the rest*;
its head kept outside the database catches the recomputation, a cut-off tail
and a forked history (docs/integrity.md). Three routes, each one a place a
database-level attacker does not control together with the others:

- **journal**: one ``audit_head`` log line (the journal keeps it);
- **file**: one JSON line appended to ``[anchors] file`` (opened with
  ``O_APPEND`` and fsynced; meant for another filesystem or a write-once
  share);
- **mqtt**: the retained ``cryod/v1/{site}/{node}/audit/head`` message.

Cadence (``Cadence``, pure): at most once per ``interval_s`` (1 s), and at
once after each procedure, cycle, alarm, adverse-event or export commit. The
writer hands every new head over with ``offer`` (never blocks); the ``run``
task sends. A route with a head it could not anchor for ``alarm_after_s``
reports the condition (``on_condition``), which the daemon raises as the
medium-priority ``anchor_failed`` alarm; nothing here ever stops a freeze.

``start_check`` compares a database with its anchor file before the daemon
writes to it: a database behind its anchors is a restore (or rollback),
recorded as such; one that disagrees with them is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryod.integrity import AnchorHead, Head, parse_heads

from .logging import get_logger

__all__ = [
    "ANCHOR_FORMAT",
    "URGENT_LABELS",
    "AnchorFile",
    "Anchoring",
    "Cadence",
    "StartCheck",
    "start_check",
]

log = get_logger("cryod.anchors")

ANCHOR_FORMAT = "cryod.anchor/1"
#: writer op labels whose head is anchored at once (records.ProcedureLog labels)
URGENT_LABELS = frozenset(
    {
        "procedure_open",
        "close",
        "cycle_open",
        "valve_open",
        "cycle_close",
        "alarm",
        "ack",
        "clear",
        "adverse_event",
        "export",
    }
)


class Cadence:
    """When a head is due: at most one per ``interval_s``, an urgent one at once.
    Pure: the caller passes monotonic time."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.pending: Head | None = None
        self.urgent = False
        self.last_sent_s = float("-inf")

    def offer(self, head: Head, urgent: bool) -> None:
        if self.pending is None or head.seq >= self.pending.seq:
            self.pending = head
        self.urgent = self.urgent or urgent

    def due_in(self, now_s: float) -> float | None:
        """Seconds until the pending head is due (0: now), None if nothing is pending."""
        if self.pending is None:
            return None
        if self.urgent:
            return 0.0
        return max(0.0, self.last_sent_s + self.interval_s - now_s)

    def take(self, now_s: float) -> Head | None:
        head, self.pending, self.urgent = self.pending, None, False
        if head is not None:
            self.last_sent_s = now_s
        return head


def anchor_line(node: str, head: Head, at: dt.datetime) -> str:
    """One anchor-file line (``parse_heads`` reads it back)."""
    return json.dumps(
        {
            "anchor": ANCHOR_FORMAT,
            "node": node,
            "seq": head.seq,
            "hash": head.hash,
            "at": at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        },
        sort_keys=True,
        separators=(",", ":"),
    )


class AnchorFile:
    """The append-only anchor file: each line written with O_APPEND, then fsynced."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, line: str) -> None:
        """Blocking (run it in a thread); raises OSError."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            data = (line + "\n").encode("utf-8")
            if os.write(fd, data) != len(data):
                raise OSError(f"short write to {self.path}")
            os.fsync(fd)
        finally:
            os.close(fd)

    def newest_first(self, node: str, block: int = 65536) -> Iterator[AnchorHead]:
        """This node's heads, newest line first, reading the file from its end (a year
        of anchors is gigabytes; a start only needs its tail)."""
        try:
            fh = self.path.open("rb")
        except FileNotFoundError:
            return
        with fh:
            fh.seek(0, os.SEEK_END)
            pos = fh.tell()
            rest = b""
            while pos > 0:
                step = min(block, pos)
                pos -= step
                fh.seek(pos)
                chunk = fh.read(step) + rest
                lines = chunk.split(b"\n")
                rest = lines[0]
                for raw in reversed(lines[1:]):
                    yield from _heads(raw, node)
            yield from _heads(rest, node)


def _heads(raw: bytes, node: str) -> Iterator[AnchorHead]:
    yield from parse_heads([raw.decode("utf-8", "replace")], node)


# ---- start: the database against its anchor file -------------------------------------------
@dataclass(frozen=True, slots=True)
class StartCheck:
    """What the anchor file says about a database about to be opened.

    ``state``: ``none`` (no anchors yet), ``consistent`` (the database continues its
    newest anchored head), ``unanchored`` (it holds entries written after that head,
    while cryod was stopped), ``restore`` (it is an earlier anchored state: a backup
    restored or a rollback), ``mismatch`` (it disagrees with an anchored head)."""

    state: str
    newest: Head | None = None  # the newest anchored head
    agreed: Head | None = None  # the newest anchored head the database holds
    db_head: Head | None = None
    detail: str = ""


def start_check(
    anchors: AnchorFile, node: str, db_head: Head | None, hash_at: Callable[[int], str | None]
) -> StartCheck:
    """Walk the anchor file from its end to the newest head the database holds.

    ``hash_at(seq)`` reads the database's entry ``seq`` (None if it has none)."""
    newest: Head | None = None
    for a in anchors.newest_first(node):
        head = Head(a.seq, a.hash)
        if newest is None:
            newest = head
        if db_head is None or a.seq > db_head.seq:
            continue
        mine = hash_at(a.seq)
        if mine != a.hash:
            return StartCheck(
                "mismatch",
                newest,
                None,
                db_head,
                f"entry {a.seq} of the database is not the one anchored in {anchors.path} "
                f"(line from the end): rewritten, or another database",
            )
        if newest.seq > db_head.seq:
            return StartCheck(
                "restore",
                newest,
                head,
                db_head,
                f"the database ends at entry {db_head.seq}, its anchors at {newest.seq}: "
                "restored from a backup or rolled back",
            )
        state = "consistent" if db_head.seq == a.seq else "unanchored"
        detail = (
            ""
            if state == "consistent"
            else f"entries {a.seq + 1}..{db_head.seq} were written while cryod was stopped"
        )
        return StartCheck(state, newest, head, db_head, detail)
    if newest is None:
        return StartCheck("none", db_head=db_head)
    return StartCheck(
        "mismatch",
        newest,
        None,
        db_head,
        f"none of the heads in {anchors.path} is in the database (another database?)",
    )


# ---- the running routes --------------------------------------------------------------------
class HeadPublisher(Protocol):
    """What the MQTT route needs of the telemetry publisher."""

    def offer_audit_head(self, topic: str, body: dict[str, Any]) -> None: ...

    def status(self) -> Any: ...  # .audit_head_seq, .connected


@dataclass
class _Route:
    name: str
    unanchored: Head | None = None  # a head this route has not anchored yet
    since_s: float | None = None  # since when it has had one
    error: str | None = None
    sent: int = 0

    def ok(self) -> None:
        self.unanchored, self.since_s, self.error = None, None, None
        self.sent += 1

    def failed(self, head: Head, now_s: float, error: str) -> None:
        self.unanchored = head
        self.since_s = now_s if self.since_s is None else self.since_s
        self.error = error


class Anchoring:
    """The routes, the cadence and the failure condition (see the module doc)."""

    def __init__(
        self,
        *,
        node: str,
        interval_s: float = 1.0,
        alarm_after_s: float = 30.0,
        anchor_file: Path | None = None,
        mqtt: tuple[HeadPublisher, str] | None = None,
        on_condition: Callable[[bool, str], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node = node
        self.cadence = Cadence(interval_s)
        self.alarm_after_s = alarm_after_s
        self.file = None if anchor_file is None else AnchorFile(anchor_file)
        self.mqtt = mqtt
        self._on_condition = on_condition
        self._mono = monotonic
        self.routes = {"journal": _Route("journal")}
        if self.file is not None:
            self.routes["file"] = _Route("file")
        if mqtt is not None:
            self.routes["mqtt"] = _Route("mqtt")
        self.last: Head | None = None  # the newest head sent through the routes
        self.condition: str | None = None  # the failing routes, while the alarm stands
        self._wake = asyncio.Event()

    def attach_mqtt(self, publisher: HeadPublisher, topic: str) -> None:
        """Add the MQTT route once the publisher exists (the daemon makes it with the
        consoles)."""
        self.mqtt = (publisher, topic)
        self.routes.setdefault("mqtt", _Route("mqtt"))

    def offer(self, head: Head, label: str) -> None:
        """A new head after a COMMIT (the writer's ``on_head``). Never blocks."""
        self.cadence.offer(head, label in URGENT_LABELS)
        self._wake.set()

    async def run(self) -> None:
        while True:
            now = self._mono()
            wait = self.cadence.due_in(now)
            if wait is None or wait > 0:
                # wake for the next due head, or each second to retry and to watch the routes
                # (asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that
                # lands as the event is set, and the task would outlive the daemon's stop)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0 if wait is None else min(wait, 1.0)):
                        await self._wake.wait()
                self._wake.clear()
            await self.step()

    async def step(self) -> None:
        """Send a due head through every route, retry a failed one, update the condition."""
        now = self._mono()
        due = self.cadence.due_in(now)
        head = self.cadence.take(now) if due == 0.0 else None
        if head is not None:
            self.last = head
            log.info("audit_head", node=self.node, seq=head.seq, hash=head.hash)
            self.routes["journal"].ok()
        self._mqtt(head, now)  # never blocks: before the file, which a stop may interrupt
        await self._file(head, now)
        self._update_condition(now)

    async def flush(self, timeout_s: float = 2.0) -> None:
        """Anchor the newest head now (at shutdown), waiting a little for the broker."""
        self.cadence.urgent = self.cadence.pending is not None
        await self.step()
        deadline = self._mono() + timeout_s
        route = self.routes.get("mqtt")
        while route is not None and route.unanchored is not None and self._mono() < deadline:
            await asyncio.sleep(0.05)
            self._mqtt(None, self._mono())

    async def _file(self, head: Head | None, now_s: float) -> None:
        route = self.routes.get("file")
        if self.file is None or route is None:
            return
        target = head or route.unanchored
        if target is None:
            return
        line = anchor_line(self.node, target, dt.datetime.now(dt.UTC))
        try:
            await asyncio.to_thread(self.file.append, line)
        except OSError as exc:
            if route.error is None:
                log.error("anchor_file_failed", path=str(self.file.path), error=str(exc))
            route.failed(target, now_s, f"{self.file.path}: {exc}")
            return
        if route.error is not None:
            log.warning("anchor_file_ok", path=str(self.file.path))
        route.ok()

    def _mqtt(self, head: Head | None, now_s: float) -> None:
        route = self.routes.get("mqtt")
        if self.mqtt is None or route is None:
            return
        publisher, topic = self.mqtt
        if head is not None:
            from .telemetry.payloads import audit_head_body

            body = audit_head_body(
                t_utc_s=time.time(), node=self.node, seq=head.seq, digest=head.hash
            )
            publisher.offer_audit_head(topic, body)
            if route.unanchored is None:
                route.since_s = now_s
            route.unanchored = head
        if route.unanchored is None:
            return
        acked = publisher.status().audit_head_seq
        if acked is not None and acked >= route.unanchored.seq:
            route.ok()
        else:
            route.error = "not acknowledged by the broker"

    def _update_condition(self, now_s: float) -> None:
        failing = [
            f"{r.name} ({r.error})"
            for r in self.routes.values()
            if r.since_s is not None
            and r.unanchored is not None
            and now_s - r.since_s >= self.alarm_after_s
        ]
        condition = ("anchor route failing: " + "; ".join(failing)) if failing else None
        if (condition is None) != (self.condition is None):
            self.condition = condition
            if self._on_condition is not None:
                self._on_condition(condition is not None, condition or "")

    def status(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "last": None if self.last is None else {"seq": self.last.seq, "hash": self.last.hash},
            "routes": {
                r.name: {
                    "anchored": r.sent,
                    "unanchored_seq": None if r.unanchored is None else r.unanchored.seq,
                    "error": r.error,
                }
                for r in self.routes.values()
            },
            "failing": self.condition,
        }


# ---- placement: are the anchors anywhere an attacker on this host does not reach? ---------
#: filesystem types whose data lives on another host
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ceph",
        "glusterfs",
        "fuse.glusterfs",
        "fuse.sshfs",
        "fuse.rclone",
        "fuse.davfs2",
        "davfs",
        "9p",
        "afs",
        "lustre",
    }
)
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "ip6-localhost"})


def filesystem_of(path: Path, mountinfo: str | None = None) -> tuple[str, str]:
    """(mount point, filesystem type) that holds (or would hold) ``path``, from
    /proc/self/mountinfo; ("?", "?") if unknown."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text(encoding="utf-8")
        except OSError:
            return "?", "?"
    target = path.resolve()  # as far as it exists; the rest is taken as written
    best = ("?", "?")
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        mount = fields[4].replace("\\040", " ")
        fstype = fields[fields.index("-") + 1]
        inside = target == Path(mount) or Path(mount) in target.parents
        if inside and len(mount) >= len(best[0].replace("?", "")):
            best = (mount, fstype)
    return best


def placement_warnings(
    database: Path,
    anchor_file: Path | None,
    mqtt_host: str | None,
    *,
    mountinfo: str | None = None,
) -> list[str]:
    """``cryod check-config`` warnings about where the anchors are. ``mqtt_host`` is
    the broker's host (``unix:`` for a socket), None when no MQTT anchor."""
    warnings: list[str] = []
    off_host: list[str] = []
    if anchor_file is not None:
        mount, fstype = filesystem_of(anchor_file, mountinfo)
        if fstype in NETWORK_FILESYSTEMS:
            off_host.append(f"anchor file on {fstype} ({mount})")
        else:
            db_mount, _ = filesystem_of(database, mountinfo)
            if mount == db_mount and mount != "?":
                warnings.append(
                    f"anchors.file {anchor_file} is on the database's own filesystem ({mount}): "
                    "put it on another filesystem or a write-once share (docs/integrity.md)"
                )
    if mqtt_host is not None and not (
        mqtt_host.startswith("unix:")
        or mqtt_host in LOCAL_HOSTS
        or mqtt_host.startswith("127.")
        or mqtt_host == os.uname().nodename
    ):
        off_host.append(f"MQTT broker {mqtt_host}")
    if not off_host:
        routes = ["the journal"]
        if anchor_file is not None:
            routes.append(f"anchors.file {anchor_file}")
        if mqtt_host is not None:
            routes.append(f"the MQTT broker at {mqtt_host}")
        warnings.append(
            "every anchor of the record is on this host ("
            + ", ".join(routes)
            + "): someone with root here can rewrite the record and its anchors together; "
            "put anchors.file on another host's share or use a broker on another host "
            "(docs/integrity.md, threat model)"
        )
    return warnings
